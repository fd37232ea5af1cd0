"""Audiences for marketing: who is into a brand, category, topic or item right now.

An audience is one target (exactly one of ``brand``, ``category``, ``topic``, ``item``)
and optional thresholds. Users are ranked by their decayed interest weight in the
target at one instant; a cursor carries that instant, so every page of one audience
ranks the same way and new events arriving between pages neither repeat nor skip a
user that was already ranked. Flagged bots are never part of an audience.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from graph_schema.statements.audiences import AUDIENCE_PAGE, AUDIENCE_SIZE, AUDIENCE_TARGETS
from kgrec.config import Settings
from kgrec.decay import shown_weight
from kgrec.errors import ArgumentProblem
from kgrec.gateway import GraphGateway
from kgrec.limits import MAX_EPOCH_MS

DAY_MS = 86_400_000
EXPORT_PAGE = 5_000  # members an export reads per statement, at least
# Ranks are computed, so no index starts a page at its cursor: every page walks the target's whole
# list of edges. With a fixed page an export of A members would cost A² / EXPORT_PAGE edge reads;
# beyond this many pages the page grows instead: linear time, and A / EXPORT_MAX_PAGES members in
# memory at a time.
EXPORT_MAX_PAGES = 20
CSV_COLUMNS = ("user_id", "weight", "events", "last_ts")


class AudienceError(ArgumentProblem):
    """An audience request that cannot be answered (no target, several, or a foreign cursor)."""


@dataclass(frozen=True)
class Audience:
    """The conditions of one audience (the target kind is one of AUDIENCE_TARGETS)."""

    kind: str
    target: str
    min_weight: float = 0.0
    active_within_days: int | None = None

    @classmethod
    def from_conditions(
        cls, conditions: dict[str, Any], min_weight: float = 0.0, active_within_days: int | None = None
    ) -> Audience:
        """Build from ``{brand|category|topic|item: id}``; exactly one target must be given."""
        given = {kind: value for kind in AUDIENCE_TARGETS if (value := conditions.get(kind))}
        if len(given) != 1:
            named = ", ".join(AUDIENCE_TARGETS)
            field = next(iter(given), "brand")
            got = f"{len(given)}: {', '.join(given)}" if given else "0"
            raise AudienceError(field, given.get(field), f"give exactly one of {named} (got {got})")
        ((kind, target),) = given.items()
        return cls(kind, target, float(min_weight), active_within_days)

    def fingerprint(self) -> str:
        """A short digest of the conditions, so a cursor cannot be replayed on another audience."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def _encode_cursor(audience: Audience, now: int, rank: int, user_id: str, size: int) -> str:
    # Compact UTF-8 (not \u escapes): a 256-character id of quotes or CJK still fits the query's bound
    # (MAX_AUDIENCE_CURSOR); surrogatepass keeps a lone surrogate in an id stored before the id rule
    # refused them (2026-12-06).
    raw = json.dumps(
        {"a": audience.fingerprint(), "now": now, "rank": rank, "id": user_id, "size": size},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(raw.encode("utf-8", "surrogatepass")).decode().rstrip("=")


def _decode_cursor(audience: Audience, cursor: str) -> tuple[int, int, str, int | None]:
    """``(now, rank, user id, size)``; size None in a cursor from before cursors kept it."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("utf-8", "surrogatepass")
        raw = json.loads(text)
        state = (int(raw["now"]), int(raw["rank"]), str(raw["id"]))
        size = None if raw.get("size") is None else int(raw["size"])
        fingerprint = raw["a"]
    except (ValueError, TypeError, KeyError, OverflowError) as exc:  # OverflowError: int(Infinity)
        raise AudienceError("cursor", cursor, "not a cursor this service returned") from exc
    if fingerprint != audience.fingerprint():
        raise AudienceError("cursor", cursor, "the cursor belongs to an audience with other conditions")
    in_range = 0 <= state[0] <= MAX_EPOCH_MS and -(2**63) <= state[1] < 2**63
    if not in_range or (size is not None and not 0 <= size < 2**63):
        raise AudienceError("cursor", cursor, "not a cursor this service returned")
    return (*state, size)


def _parameters(audience: Audience, settings: Settings, now: int) -> dict[str, Any]:
    days = audience.active_within_days
    return {
        "target": audience.target,
        "now": now,
        "half_life_ms": settings.half_life_ms,
        "min_weight": audience.min_weight,
        "active_since": now - days * DAY_MS if days is not None else None,
    }


def _page_rows(
    gateway: GraphGateway,
    audience: Audience,
    parameters: dict[str, Any],
    after: tuple[int, str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    after_rank, after_id = after if after else (None, None)
    return gateway.read(
        AUDIENCE_PAGE[audience.kind],
        {**parameters, "after_rank": after_rank, "after_id": after_id, "limit": limit},
    )


def _size(gateway: GraphGateway, audience: Audience, parameters: dict[str, Any]) -> int:
    # an empty embedded graph answers no row at all
    rows = gateway.read(AUDIENCE_SIZE[audience.kind], parameters)
    return int(rows[0]["size"]) if rows else 0


def _member(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": row["user_id"],
        "weight": shown_weight(row["weight"]),
        "events": int(row["events"] or 0),
        "last_ts": row["last_ts"],
    }


def audience_page(
    gateway: GraphGateway, settings: Settings, audience: Audience, *, limit: int, cursor: str | None = None
) -> dict[str, Any]:
    """One page of the audience, strongest first, with its size and the cursor of the next page.

    The size is counted for the first page only (no ``cursor``): the cursor carries it on, so a
    later page reads the target's edges once, not twice, and answers the first page's count.
    """
    size: int | None = None
    if cursor:
        now, rank, user_id, size = _decode_cursor(audience, cursor)
        after: tuple[int, str] | None = (rank, user_id)
    else:
        now, after = int(time.time() * 1000), None
    parameters = _parameters(audience, settings, now)
    rows = _page_rows(gateway, audience, parameters, after, limit)
    if size is None:
        size = _size(gateway, audience, parameters)
    last = rows[-1] if len(rows) == limit else None
    following = _encode_cursor(audience, now, int(last["rank"]), last["user_id"], size) if last else None
    return {
        audience.kind: audience.target,
        "min_weight": audience.min_weight,
        "active_within_days": audience.active_within_days,
        "as_of": now,
        "size": size,
        "users": [_member(row) for row in rows],
        "next_cursor": following,
    }


def export_page_size(size: int, smallest: int = EXPORT_PAGE, max_pages: int = EXPORT_MAX_PAGES) -> int:
    """Members per page of an export of ``size``: ``smallest``, or more, so it takes ``max_pages`` at most."""
    return max(smallest, -(-size // max_pages))


def iter_audience(
    gateway: GraphGateway, settings: Settings, audience: Audience, page: int | None = None
) -> Iterator[dict[str, Any]]:
    """Every member of the audience, strongest first, read in keyset pages.

    The page is ``page`` members, or by default :func:`export_page_size` of the audience's size.
    The size and the first page are read before this returns, not when the first member is asked
    for: a graph that is down at the start raises here, while an HTTP answer can still be a 503.
    """
    parameters = _parameters(audience, settings, int(time.time() * 1000))
    if page is None:
        page = export_page_size(_size(gateway, audience, parameters))
    first = _page_rows(gateway, audience, parameters, None, page)
    return _members(gateway, audience, parameters, first, page)


def _members(
    gateway: GraphGateway,
    audience: Audience,
    parameters: dict[str, Any],
    rows: list[dict[str, Any]],
    page: int,
) -> Iterator[dict[str, Any]]:
    while True:
        for row in rows:
            yield _member(row)
        if len(rows) < page:
            return
        after = (int(rows[-1]["rank"]), rows[-1]["user_id"])
        rows = _page_rows(gateway, audience, parameters, after, page)
