"""Attribution: which impression a click, add-to-cart or purchase came from.

The rule (README, "Impressions and attribution"):

1. Only ``click``, ``cart`` and ``purchase`` events are attributed, and only to an
   impression that showed the event's item to the event's user (an impression
   recorded without a user, such as anonymous similar items, takes the event's user).
2. An event with a ``recommendation_id`` goes to that impression, if it is still
   kept and it showed the item to that user.
3. Otherwise (no id, or one that does not qualify) it goes to the user's latest
   impression that showed the item and was recorded within the attribution window
   before the event's ``ts`` (``KGREC_ATTRIBUTION_WINDOW_HOURS``, default 24; up to
   ``KGREC_MAX_CLOCK_SKEW_S`` after it, for client clocks running behind).
4. An event is attributed at most once: the first attribution of its event id
   wins and later deliveries of the same id change nothing. Within one batch,
   events that are exact duplicates (same content, different ids) count once,
   as ingestion counts them. An event whose id the graph recorded with other content
   (``IngestResult.reused_ids``) was not applied and is not attributed; a resend of the
   recorded content is, if its claim is still owed.
5. An event of a user erased after it (the impression store's erasure record, with the graph
   tombstone's margin, :func:`kgrec.erasure.tombstone_margin_ms`) is never attributed, even when
   it was before the erasure: the erasure deleted that attribution, and a resent batch or a claim
   made just after the erasure would otherwise store the user's id again.

Storage, in the impression store's Redis (so it survives restarts with the same
fsync as the impressions): ``SET kgrec:<graph>:attribution:<event id> <entry id> NX``
claims the event; only when that claim succeeds, the event is added to the
impression's hash ``kgrec:<graph>:attributed:<entry id>``. Both are one Lua
script, so a crash leaves either both or neither, and both expire with the
impression (retention).

The API finds the impressions (:func:`find_attribution`, reads of the impression store, and
the revenue from the model's prices) *before* it commits the event batch, so that an
impression store or graph that cannot answer is a 503 with nothing written; it claims them
(:func:`claim_attribution`) after the commit and before it answers, so an acknowledged batch
is attributed. A batch that was never acknowledged is resent by its client, is a duplicate for
the graph, and is attributed then. A claim that fails after the commit (the impression store
died in between) is therefore not acknowledged either: a 503 (:class:`AttributionUnclaimed`)
that says the events were written and asks for the same batch again, which attributes it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kgrec.erasure import tombstone_margin_ms, user_hash
from kgrec.events.validation import Event
from kgrec.impressions import (
    BY_USER,
    PER_USER_SUMS,
    USER_RECENT,
    Impression,
    ImpressionStore,
    ImpressionsUnavailable,
)

ATTRIBUTED_TYPES = ("click", "cart", "purchase")
NEWEST_FIRST = 3  # a user's newest impressions read first when attributing by window

# KEYS: claim, attributed hash, experiment variant counters | '', the store's erasures
# ARGV: entry id, event id, event JSON, ttl (ms), event type, revenue, user hash, event ts (ms),
#       tombstone margin (ms), the impression's user ('' for an anonymous one), retention (ms): each
#       per-user hash written expires that long after its last write (they hold user ids), the
#       per-user hashes' infix after the variant's counters key (kgrec.impressions.BY_USER)
# The impression's hash also flags its first click, cart and purchase and sums its revenue (fields
# prefixed with \x01), so the experiment counts impressions with an outcome and each one's revenue,
# in its variant's totals and in the impression user's (the per-user hashes beside them, with their
# sums over users: kgrec.impressions.PER_USER_SUMS).
# An event of a user erased after it (as the graph's tombstone check reads it) is not claimed (-1):
# the erasure deleted its attribution and claim, and a resend (a duplicate for the graph) or a
# claim that raced the erasure would write the user's id back and count the event again.
_CLAIM = (
    PER_USER_SUMS
    + """
local erased = redis.call('ZSCORE', KEYS[4], ARGV[7])
if erased and tonumber(ARGV[8]) <= tonumber(erased) + tonumber(ARGV[9]) then
  return -1
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[4]) then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
local first = redis.call('HSETNX', KEYS[2], '\1' .. ARGV[5], '1')
local revenue = tonumber(ARGV[6])
local after = 0
if revenue ~= 0 then
  after = tonumber(redis.call('HINCRBYFLOAT', KEYS[2], '\1revenue', ARGV[6]))
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
if KEYS[3] ~= '' then
  local by_user, user = KEYS[3] .. ARGV[12], ARGV[10]
  if first == 1 then
    redis.call('HINCRBY', KEYS[3], ARGV[5], 1)
    if user ~= '' then
      add_total(by_user .. ARGV[5], by_user .. 'impressions', user, 1, '1', 'HINCRBY')
    end
  end
  if revenue ~= 0 then
    local before = after - revenue
    redis.call('HINCRBYFLOAT', KEYS[3], 'revenue', ARGV[6])
    redis.call('HINCRBYFLOAT', KEYS[3], 'revenue_sq', string.format('%.17g', after * after - before * before))
    if user ~= '' then
      add_total(by_user .. 'revenue', by_user .. 'impressions', user, revenue, ARGV[6], 'HINCRBYFLOAT')
    end
  end
  if user ~= '' and (first == 1 or revenue ~= 0) then
    touch_all(by_user, ARGV[11])
  end
end
return 1
"""
)


@dataclass(frozen=True)
class Match:
    """An event and the impression it is attributed to."""

    event: Event
    impression: Impression
    position: int
    by: str  # "id" or "window"

    def as_dict(self, at_ms: int) -> dict[str, Any]:
        """The stored JSON form of the attributed event."""
        return {
            "event_id": self.event.event_id,
            "type": self.event.type,
            "user_id": self.event.user_id,
            "item_id": self.event.item_id,
            "ts": self.event.ts,
            "value": self.event.value,
            "position": self.position,
            "by": self.by,
            "attributed_at": at_ms,
        }


@dataclass(frozen=True)
class AttributionResult:
    """What one batch's attribution did."""

    attributed: int  # events newly attributed by this call
    already: int  # events that had been attributed before (a resent batch)
    erased: int = 0  # events left unclaimed: their user was erased after them


def _match(event: Event, impression: Impression | None, by: str) -> Match | None:
    """The match if ``impression`` showed the event's item to the event's user."""
    if impression is None or impression.user_id not in (None, event.user_id):
        return None
    shown_at = impression.position_of(event.item_id or "")
    return None if shown_at is None else Match(event, impression, event.position or shown_at, by)


def attributable(events: Sequence[Event]) -> list[Event]:
    """The events attribution looks at: clicks, carts and purchases, one per exact duplicate."""
    kept = {e.content_key(): e for e in reversed(events) if e.type in ATTRIBUTED_TYPES and e.item_id}
    return list(kept.values())[::-1]


def match_events(store: ImpressionStore, events: Sequence[Event], *, max_skew_ms: float) -> list[Match]:
    """Find each event's impression (a handful of round trips for the whole batch).

    Impressions recorded on this host a moment ago are shipped first (``store.settle()``).
    """
    candidates = attributable(events)
    if not candidates:
        return []
    store.settle()
    named = store.by_ids(e.recommendation_id for e in candidates if e.recommendation_id)
    matches: list[Match] = []
    pending: list[Event] = []
    for event in candidates:
        impression = named.get(event.recommendation_id) if event.recommendation_id else None
        match = _match(event, impression, "id")
        if match is not None:
            matches.append(match)
        else:
            pending.append(event)
    if not pending:
        return matches
    recent = store.recent_entry_ids(e.user_id for e in pending)
    window = store.window_ms

    def shipped_at(entry_id: str) -> int:
        # An entry id is its shipping time, never before the impression was recorded.
        return int(entry_id.partition("-")[0])

    def may_be_in_window(entry_id: str, event: Event) -> bool:
        return shipped_at(entry_id) >= event.ts - window

    def in_window(impression: Impression, event: Event) -> bool:
        return event.ts - window <= impression.created_at <= event.ts + max_skew_ms

    # Most events come from one of the user's newest impressions: read those first, the rest if needed.
    shown: dict[str, Impression] = {}
    for depth in (NEWEST_FIRST, USER_RECENT):
        needed = {
            entry
            for e in pending
            for entry in recent.get(e.user_id, [])[:depth]
            if entry not in shown and may_be_in_window(entry, e)
        }
        shown.update(store.entries(needed))
        unmatched = []
        for event in pending:
            entries = recent.get(event.user_id, [])
            kept = (shown.get(e) for e in entries[:depth])
            # Newest first by when they were recorded (a dead process's journal is shipped late).
            newest_first = sorted(
                (i for i in kept if i is not None and in_window(i, event)), key=lambda i: -i.created_at
            )
            match = next(filter(None, (_match(event, i, "window") for i in newest_first)), None)
            unread = entries[depth : depth + 1]
            if match is not None and unread and match.impression.created_at < shipped_at(unread[0]):
                match = None  # an entry not read yet may have been recorded later: read them all
            if match is not None:
                matches.append(match)
            else:
                unmatched.append(event)
        pending = unmatched
    return matches


def revenue(match: Match, price_of: Callable[[str], float | None] | None) -> float:
    """A purchase's revenue: its ``value`` when given, else the item's catalogue price if known."""
    if match.event.type != "purchase":
        return 0.0
    if match.event.value is not None:
        return float(match.event.value)
    price = price_of(match.event.item_id or "") if price_of is not None else None
    return float(price) if price is not None and math.isfinite(price) else 0.0


class AttributionUnclaimed(ImpressionsUnavailable):
    """A committed batch whose attribution could not be claimed: the impression store went away
    between the reads and the claims. Not an acknowledgement, so the client sends the batch again."""

    answer = (
        "the events were written, but the impression store went away before they were attributed: "
        "send the same batch again (the same event ids), which attributes them and counts nothing twice"
    )


@dataclass(frozen=True)
class FoundAttribution:
    """A batch's matches, each with its revenue: what :func:`claim_attribution` writes."""

    matches: list[Match]
    revenues: list[float]

    def without(self, event_ids: frozenset[str]) -> FoundAttribution:
        """These matches but those of ``event_ids`` (events the graph left out: their user was
        erased, or their id was recorded with other content)."""
        if not event_ids:
            return self
        kept = [
            (m, r)
            for m, r in zip(self.matches, self.revenues, strict=True)
            if m.event.event_id not in event_ids
        ]
        return FoundAttribution([m for m, _ in kept], [r for _, r in kept])


def find_attribution(
    store: ImpressionStore,
    events: Sequence[Event],
    *,
    max_skew_ms: float,
    price_of: Callable[[str], float | None] | None = None,
) -> FoundAttribution:
    """Each click, cart and purchase's impression and revenue; only reads (done before the commit)."""
    matches = match_events(store, events, max_skew_ms=max_skew_ms)
    return FoundAttribution(matches, [revenue(match, price_of) for match in matches])


def attribute(
    store: ImpressionStore,
    events: Sequence[Event],
    *,
    max_skew_ms: float,
    now_ms: int,
    price_of: Callable[[str], float | None] | None = None,
) -> AttributionResult:
    """Attribute a committed batch's clicks, carts and purchases; idempotent per event id."""
    found = find_attribution(store, events, max_skew_ms=max_skew_ms, price_of=price_of)
    return claim_attribution(store, found, now_ms=now_ms)


def claim_attribution(store: ImpressionStore, found: FoundAttribution, *, now_ms: int) -> AttributionResult:
    """Claim each found match for its impression (one pipeline); idempotent per event id.
    :class:`AttributionUnclaimed` when the impression store cannot take the claims."""
    matches = found.matches
    if not matches:
        return AttributionResult(0, 0)
    claim = store.client().register_script(_CLAIM)
    margin = tombstone_margin_ms(store.settings.max_clock_skew_s * 1000)

    def write(client: Any) -> list[int]:
        pipe = client.pipeline(transaction=False)
        for match, earned in zip(matches, found.revenues, strict=True):
            entry_id = match.impression.entry_id
            ttl = max(1, match.impression.created_at + store.retention_ms - now_ms)
            shown = match.impression
            counters = (
                store.experiment_key(shown.experiment, shown.variant)
                if shown.experiment and shown.variant
                else ""
            )
            claim(
                keys=[
                    store.claim_key(match.event.event_id),
                    store.attributed_key(entry_id),
                    counters,
                    store.erasures,
                ],
                args=[
                    entry_id,
                    match.event.event_id,
                    json.dumps(match.as_dict(now_ms)),
                    ttl,
                    match.event.type,
                    repr(earned),
                    user_hash(match.event.user_id),
                    match.event.ts,
                    margin,
                    shown.user_id or "",
                    store.retention_ms,
                    BY_USER,
                ],
                client=pipe,
            )
        return pipe.execute()

    try:
        claimed = store.run(write)
    except ImpressionsUnavailable as exc:
        raise AttributionUnclaimed(str(exc)) from exc
    outcomes = [int(c) for c in claimed]
    return AttributionResult(outcomes.count(1), outcomes.count(0), outcomes.count(-1))
