"""Write a validated batch of events into the interest graph, atomically and idempotently.

1. Drop events whose ids the graph has already seen, and exact repeats of an id in the batch
   (validation refuses an id repeated with other content, :func:`kgrec.events.validation.validate_each`),
   and events dated at or before their user's erasure, or within its margin after it
   (:func:`kgrec.erasure.tombstone_margin_ms`: a client clock ahead of the server's; the
   ``(:Erasure)`` tombstone; counted as ``erased``, their ids not recorded).
2. Of the rest, apply only one of several events with the same content (exact
   duplicates under different ids), but record every id, so that a later retry
   of any of them is recognised.
3. Aggregate per user, item and user–item pair (the statement aggregates the
   pairs per interest target as :func:`kgrec.interests.interest_rows` does).
4. Write everything with one statement that also creates an ``Event`` node per
   id. If another writer stored one of those ids in the meantime, the unique
   constraint rolls the whole statement back and we start again from 1; so does the
   statement when another writer stored category links above the batch's paths since they
   were checked (two batches each adding half of a loop): checked again, the path that would
   close the loop is refused (:data:`graph_schema.statements.knowledge.TREE_UNCHANGED`).

Language events ride in the same statement: a tag adds to ``(:Item)-[:TAGGED {count}]->(:Tag)``
(a tag on an item neither the batch nor the graph has refuses the batch, :class:`EventsRefused`),
a review keeps its text on the INTERACTED edge, and the text of reviews, tags and searches is
embedded before the write, in one batch, and matched to the active version's topics
(:mod:`kgrec.topics`): the user's topic interests are merged with the same decay as brand and
category interests; the same embeddings, summed per user with the interest decay, update the
user's text vector (``User.text_vector``, what a newcomer's search ranks by,
:mod:`kgrec.search_cold_start`). A batch without text reads and embeds nothing more than before.

Item attributes (``item.attributes``) are written by the same statement, rendered
for the relation types the batch uses: each value is an item when the batch or
the graph has an item with that id (one read for the whole batch), else an
entity; the co-purchase relations always point at items, as in an import.
"""

from __future__ import annotations

import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from graph_schema.allow_list import ATTRIBUTE_RELATIONS, BEHAVIOURS, KNOWLEDGE_RELATIONS, Label, Rel
from graph_schema.catalogue import Statement
from graph_schema.relation_names import relationship_type
from graph_schema.statements.events import (
    SEEN_EVENTS,
    attribute_link_keys,
    ingest_events_statement,
)
from graph_schema.statements.knowledge import KNOWN_ITEMS
from graph_schema.statements.privacy import ERASURES
from kgrec.category_tree import NOTHING_TO_CHECK, PathCheck, check_paths, path_links
from kgrec.config import Settings
from kgrec.decay import decayed_sum
from kgrec.erasure import erased_after, tombstone_margin_ms, user_hash
from kgrec.events.validation import Event, FieldError, visible_words
from kgrec.gateway import GraphGateway, retry_on_conflict
from kgrec.topics import ACTIVE, LanguageRows, language_rows

MINUTE_MS = 60_000


class EventsRefused(ValueError):
    """Events valid on their own that the graph refuses (a tag on an unknown item); nothing was written."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__(f"{len(errors)} event(s) refused")
        self.errors = list(errors)


# Invisible characters that mark no break between words, only where a word may be hyphenated (soft
# hyphen) or must not be broken (word joiners): "co\u00adop" is the word "coop", not "co op".
_NO_BREAK_MARKS = str.maketrans("", "", "\u00ad\u2060\ufeff")


def normalised_tag(tag: str) -> str:
    """A tag's node id: lower case, without soft hyphens and word joiners, words split at any other
    invisible characters (white space, zero-width spaces, controls:
    :func:`kgrec.events.validation.visible_words`) joined by single spaces, in Unicode NFC, so a tag
    typed composed or decomposed ("Café") is one Tag node."""
    return " ".join(visible_words(unicodedata.normalize("NFC", tag.lower().translate(_NO_BREAK_MARKS))))


def _on_items(event: Event) -> bool:
    # A behaviour on an item: an INTERACTED pair (tags and searches are language only).
    return event.type in BEHAVIOURS


@dataclass(frozen=True)
class IngestResult:
    """How many events of a batch were applied, how many were duplicates, and how many were left
    out as their user was erased after them."""

    received: int
    applied: int
    duplicates: int
    erased: int = 0
    erased_ids: frozenset[str] = frozenset()  # the ids of those: nothing may act on them
    # Duplicates whose id was recorded with other content (another event under a used id): not
    # applied, so nothing may act on them. A resend of the same content is not among them: its
    # attribution may still be owed (a crash between the graph's write and the claims).
    reused_ids: frozenset[str] = frozenset()

    def counts(self) -> dict[str, int]:
        """The answer's counts: received, applied, duplicates, erased."""
        return {
            name: value for name, value in asdict(self).items() if name not in ("erased_ids", "reused_ids")
        }

    @property
    def unapplied_ids(self) -> frozenset[str]:
        """The ids of the events this batch neither applied nor resent as recorded: erased or reused."""
        return self.erased_ids | self.reused_ids


def _first_per_id(events: Sequence[Event]) -> list[Event]:
    return list({e.event_id: e for e in reversed(events)}.values())[::-1]


def _first_per_content(events: Sequence[Event]) -> list[Event]:
    return list({e.content_key(): e for e in reversed(events)}.values())[::-1]


def _category_path(categories: Sequence[str]) -> list[dict[str, str]]:
    return [{"child_id": c, "parent_id": p} for c, p in path_links(categories)]


def attribute_values(events: Sequence[Event]) -> set[str]:
    """Every value id the events' item attributes name."""
    return {
        value
        for event in events
        if event.item is not None and event.item.attributes
        for values in event.item.attributes.values()
        for value in values
    }


def attribute_params(events: Sequence[Event], known_items: set[str]) -> dict[str, Any]:
    """The statement parameters of the events' item attributes (none when they have none).

    ``known_items``: ids that are items (in the batch or the graph); other values are entities.
    """
    triples = [
        (event.item_id, relation, value)
        for event in events
        if event.item is not None and event.item.attributes
        for relation, values in event.item.attributes.items()
        if relation not in ATTRIBUTE_RELATIONS  # brands and categories: build_params
        for value in values
    ]
    # A co-purchase value becomes an item, so it is one for every relation (one label per id).
    items = known_items | {value for _, relation, value in triples if relation in KNOWLEDGE_RELATIONS}
    edges = {triple: Label.ITEM if triple[2] in items else Label.ENTITY for triple in triples}
    if not edges:
        return {}
    keys = attribute_link_keys((relation, label) for (_, relation, _), label in edges.items())
    rows: dict[tuple[str, Label], list[dict[str, str]]] = {key: [] for key in keys}
    for (head, relation, tail), label in edges.items():
        rows[(relationship_type(relation), label)].append({"head": head, "relation": relation, "tail": tail})
    params: dict[str, Any] = {
        "attribute_entities": sorted({t for (_, _, t), label in edges.items() if label is Label.ENTITY}),
        # MERGE leaves an existing item as it is; a new one is created unlisted, as an import does
        "attribute_items": sorted({t for (_, _, t), label in edges.items() if label is Label.ITEM}),
        **{f"attributes_{n}": rows[key] for n, key in enumerate(keys)},
    }
    return params


def build_params(
    events: Sequence[Event],
    settings: Settings,
    now_ms: int,
    recorded: Sequence[Event] | None = None,
    known_items: set[str] | None = None,
    topic_interests: Sequence[dict[str, Any]] = (),
    text_vectors: Sequence[dict[str, Any]] = (),
    tree: PathCheck = NOTHING_TO_CHECK,
) -> dict[str, Any]:
    """The parameters of the ingestion statement for new events (``recorded``: every event whose
    id to record, with its content's hash; default ``events``).

    ``known_items``: attribute values that are Item nodes in the graph (the batch's own items
    are added here); see :func:`statement_for`. ``topic_interests``: the rows of
    :func:`kgrec.topics.language_rows` for these events, ``text_vectors`` its user text vectors.
    ``tree``: the check of the batch's category paths, which the statement makes again.
    """
    half_life = settings.half_life_ms
    weights = settings.behaviour_weights

    per_user_minute: dict[str, Counter[int]] = defaultdict(Counter)
    items: dict[str, dict[str, Any]] = {}
    links: dict[tuple[str, str], dict[str, str]] = {}
    pairs: dict[tuple[str, str], list[Event]] = defaultdict(list)
    tags: Counter[tuple[str, str, str]] = Counter()  # (user, item, tag): who tagged is kept for erasure
    tag_first: dict[tuple[str, str, str], int] = {}
    span: dict[str, tuple[int, int]] = {}  # per user: the batch's first and last event time
    for event in events:
        # counted in the earlier of its minute and the server's: a future-dated event (up to the
        # clock skew allowed) would otherwise move the stored counter past the current minute, and
        # every later batch in the real current minute would go uncounted
        per_user_minute[event.user_id][min(event.ts, now_ms) // MINUTE_MS] += 1
        first, last = span.get(event.user_id, (event.ts, event.ts))
        span[event.user_id] = (min(first, event.ts), max(last, event.ts))
        if event.type == "tag" and event.item_id is not None and event.tag is not None:
            key = (event.user_id, event.item_id, normalised_tag(event.tag))
            tags[key] += 1
            tag_first[key] = min(tag_first.get(key, event.ts), event.ts)
        if not _on_items(event) or event.item_id is None:
            continue
        row = items.setdefault(
            event.item_id, {"id": event.item_id, "title": None, "price": None, "brands": [], "categories": []}
        )
        if event.item is not None:
            info = event.item
            row["title"] = info.title if info.title is not None else row["title"]
            row["price"] = info.price if info.price is not None else row["price"]
            # an item has one brand: the batch's first (the graph keeps one the item already has)
            if info.brand and not row["brands"]:
                row["brands"] = [info.brand]
            if info.categories:
                row["categories"] = list(info.categories)
                for link in _category_path(info.categories):
                    links[(link["child_id"], link["parent_id"])] = link
            # produced_by and belongs_to attributes name brands and categories, as kg_triples.csv does
            for relation, values in (info.attributes or {}).items():
                target = {Rel.MADE_BY: "brands", Rel.IN_CATEGORY: "categories"}.get(
                    ATTRIBUTE_RELATIONS.get(relation)
                )
                if target == "brands":
                    row[target] = row[target] or list(values)
                elif target is not None:
                    row[target] = list(dict.fromkeys([*row[target], *values]))
        pairs[(event.user_id, event.item_id)].append(event)

    # Each row that writes a user's data names their tombstone, for the statement to check again.
    erasure_ids = {user_id: user_hash(user_id) for user_id in span}
    users = []
    for user_id, minutes in per_user_minute.items():
        latest = max(minutes)
        users.append(
            {
                "id": user_id,
                "erasure_id": erasure_ids[user_id],
                "last_ts": span[user_id][1],
                "minute": latest,
                "minute_count": minutes[latest],
                "burst": max(minutes.values()),
                "minutes": [{"minute": m, "count": n} for m, n in sorted(minutes.items())],
            }
        )

    user_pairs: dict[str, list[dict[str, Any]]] = defaultdict(list)  # user -> their pair rows
    for (user_id, item_id), group in pairs.items():
        weight, ref = decayed_sum(((weights[e.type], e.ts) for e in group), half_life, now_ms)
        counts = Counter(f"n_{e.type}" for e in group)
        ratings = [e for e in group if e.type == "rating" and e.value is not None]
        latest_rating = max(ratings, key=lambda e: e.ts) if ratings else None
        reviews = [e for e in group if e.text is not None and e.text.strip()]
        latest_review = max(reviews, key=lambda e: e.ts) if reviews else None
        user_pairs[user_id].append(
            {
                "user_id": user_id,
                "item_id": item_id,
                "counts": dict(counts),
                "events": len(group),
                "weight": weight,
                "ref_ts": ref,
                "first_ts": min(e.ts for e in group),
                "rating": latest_rating.value if latest_rating else None,
                "rating_ts": latest_rating.ts if latest_rating else None,
                "review_text": latest_review.text if latest_review else None,
                "review_ts": latest_review.ts if latest_review else None,
            }
        )
    attributes = attribute_params(events, set(known_items or ()) | set(items))
    params = {
        "now": now_ms,
        "half_life_ms": half_life,
        "bot_limit": settings.bot_events_per_minute,
        "erasure_margin_ms": tombstone_margin_ms(settings.max_clock_skew_s * 1000),
        "event_rows": [
            {"id": e.event_id, "content_hash": e.content_hash()}
            for e in (events if recorded is None else recorded)
        ],
        "users": users,
        "items": list(items.values()),
        "category_links": list(links.values()),
        **tree.params(),
        "user_pairs": [{"erasure_id": erasure_ids[u], "pairs": rows} for u, rows in user_pairs.items()],
        **attributes,
    }
    if tags or topic_interests or text_vectors:  # only then the statement has the language stages
        params["tags"] = [
            {
                "user_id": u,
                "erasure_id": erasure_ids[u],
                "item_id": i,
                "tag": t,
                "count": n,
                "first_ts": tag_first[(u, i, t)],
            }
            for (u, i, t), n in tags.items()
        ]
        params["topic_interests"] = [
            {**row, "erasure_id": erasure_ids[row["user_id"]]} for row in topic_interests
        ]
        params["text_vectors"] = [
            {**row, "erasure_id": erasure_ids[row["user_id"]], "first_ts": span[row["user_id"]][0]}
            for row in text_vectors
        ]
    return params


def attribute_links(params: Mapping[str, Any]) -> list[tuple[str, Label]]:
    """The (relation, value label) pairs of the attribute rows in ``params`` (of
    :func:`attribute_params`), which a statement that writes them is rendered for."""
    items = set(params.get("attribute_items", ()))
    return [
        (row["relation"], Label.ITEM if row["tail"] in items else Label.ENTITY)
        for name, rows in params.items()
        if name.startswith("attributes_")
        for row in rows
    ]


def statement_for(params: dict[str, Any]) -> Statement:
    """The ingestion statement that takes ``params`` (rendered for their attribute relations, with
    the language stages when they carry tags or topic interests)."""
    return ingest_events_statement(attribute_links(params), language="tags" in params)


@dataclass(frozen=True)
class PreparedBatch:
    """A batch ready to write: the statement's parameters and the outcome it will have."""

    params: dict[str, Any] | None  # None: every event was a duplicate
    result: IngestResult


def prepare(gateway: GraphGateway, events: Sequence[Event], settings: Settings, now_ms: int) -> PreparedBatch:
    """Drop duplicates (in the batch and already in the graph) and the events of erased users
    dated at or before their erasure (or within its margin after it), and aggregate the rest."""
    unique_ids = _first_per_id(events)
    users = {e.user_id: user_hash(e.user_id) for e in unique_ids}
    seen_rows, erasure_rows = gateway.read_many(
        [
            (SEEN_EVENTS, {"ids": [e.event_id for e in unique_ids]}),
            (ERASURES, {"ids": sorted(set(users.values()))}),
        ]
    )
    seen = {row["id"]: row["content_hash"] for row in seen_rows}
    erased_at = {row["id"]: row["erased_at"] for row in erasure_rows}
    # Not written and their ids not recorded: sent again, such an event is erased again. A client
    # clock ahead of the server's dates an event from before the erasure up to the margin after it.
    # A seen event (a resend) of a user erased since is erased too, not a duplicate: nothing may
    # act on it again, its attribution least of all (the erasure deleted it).
    margin = tombstone_margin_ms(settings.max_clock_skew_s * 1000)
    erased_ids = frozenset(
        e.event_id for e in unique_ids if erased_after(e.ts, erased_at.get(users[e.user_id]), margin)
    )
    # Recorded without a hash (before 2026-12-07): taken for a resend, as every seen id was then.
    # Only a seen id's content is hashed here; a fresh event's hash is taken once, where it is written.
    reused_ids = frozenset(
        e.event_id
        for e in unique_ids
        if (stored := seen.get(e.event_id)) is not None
        and stored != e.content_hash()
        and e.event_id not in erased_ids
    )
    fresh = [e for e in unique_ids if e.event_id not in seen and e.event_id not in erased_ids]
    erased = len(erased_ids)
    if not fresh:
        result = IngestResult(len(events), 0, len(events) - erased, erased, erased_ids, reused_ids)
        return PreparedBatch(None, result)
    applied = _first_per_content(fresh)
    _refuse_unknown_tagged_items(gateway, events, applied)
    tree = _refuse_category_loops(gateway, events, applied)
    values = attribute_values(applied)
    known = {row["id"] for row in gateway.read(KNOWN_ITEMS, {"ids": sorted(values)})} if values else set()
    text = _language_rows(gateway, applied, settings)
    params = build_params(
        applied,
        settings,
        now_ms,
        fresh,
        known,
        text.topic_interests,
        text.text_vectors,
        tree,
    )
    duplicates = len(events) - len(applied) - erased
    return PreparedBatch(
        params, IngestResult(len(events), len(applied), duplicates, erased, erased_ids, reused_ids)
    )


def refusals_read_the_graph(events: Sequence[Event]) -> bool:
    """Whether :func:`prepare` reads the graph to refuse some of ``events`` (tags need their item,
    category paths must not close a loop), so that a write still in flight can change its answer;
    its other reads cannot (an event id written twice is caught by the Event constraint).

    The same predicates as the checks themselves (:func:`_tagged_items`, :func:`_paths_to_check`),
    but over every event: the checks read only the events :func:`prepare` applies, which it knows
    only after reading the graph (seen ids, erasures). So this says True whenever a check reads the
    graph, and also for a batch whose tags or paths are all on duplicate or erased events (a safe
    over-approximation: such a batch waits for the previous write for nothing).
    """
    return bool(_tagged_items(events) or _paths_to_check(events))


def _tagged_items(events: Sequence[Event]) -> set[str]:
    """The items ``events`` tag: each must be in the graph or brought by the batch."""
    return {e.item_id for e in events if e.type == "tag" and e.item_id is not None}


def _paths_to_check(
    events: Sequence[Event], applied: Sequence[Event] | None = None
) -> list[tuple[int, Sequence[str]]]:
    """The item category paths of ``events`` with a link (more than one level), by index: each
    must not close a loop in the stored tree. ``applied``: only those of these events (the ones
    written), still indexed in ``events``."""
    written = None if applied is None else {id(event) for event in applied}
    return [
        (index, event.item.categories)
        for index, event in enumerate(events)
        if event.item is not None
        and len(event.item.categories) > 1
        and (written is None or id(event) in written)
    ]


def _refuse_unknown_tagged_items(
    gateway: GraphGateway, batch: Sequence[Event], applied: Sequence[Event]
) -> None:
    """Raise :class:`EventsRefused` for tags on items that neither the batch nor the graph has."""
    tagged = _tagged_items(applied)
    if not tagged:
        return
    # Every tagged item is asked, also those the batch brings: whether this reads the graph then
    # depends on the tags alone, as refusals_read_the_graph says (an event that brings an item
    # may still be left out, as erased or seen, once the graph has answered).
    known = {row["id"] for row in gateway.read(KNOWN_ITEMS, {"ids": sorted(tagged)})}
    unknown = tagged - {e.item_id for e in applied if _on_items(e)} - known
    if unknown:
        raise EventsRefused(
            [
                FieldError(index, "item_id", f"no item with id {event.item_id!r} to tag")
                for index, event in enumerate(batch)
                if event.type == "tag" and event.item_id in unknown
            ]
        )


def _refuse_category_loops(
    gateway: GraphGateway, batch: Sequence[Event], applied: Sequence[Event]
) -> PathCheck:
    """Raise :class:`EventsRefused` for the category paths of the ``applied`` events of ``batch``
    that would close a loop in the tree; the check, for the write to make again. Paths of duplicate
    or erased events are not written, so they neither refuse the batch nor make its write lock the
    tree."""
    check = check_paths(gateway, _paths_to_check(batch, applied))
    if check.problems:
        raise EventsRefused([FieldError(index, "item.category", reason) for index, reason in check.problems])
    return check


def _language_rows(gateway: GraphGateway, events: Sequence[Event], settings: Settings) -> LanguageRows:
    """Topic interests and text vectors from the events' text; no read, no embedding without text."""
    if not any(e.language is not None for e in events):
        return LanguageRows([], [])
    return language_rows(
        events,
        ACTIVE.get(gateway),
        settings.behaviour_weights,
        settings.half_life_ms,
        offline=settings.hf_hub_offline,
    )


def commit(
    gateway: GraphGateway, prepared: PreparedBatch, events: Sequence[Event], settings: Settings, now_ms: int
) -> IngestResult:
    """Write a prepared batch; if a concurrent writer took some of its ids first, or stored category
    links above its paths since they were checked, prepare (and check) again."""

    def attempt(k: int) -> IngestResult:
        batch = prepared if k == 0 else prepare(gateway, events, settings, now_ms)
        if batch.params is not None:
            gateway.write(statement_for(batch.params), batch.params)
        return batch.result

    return retry_on_conflict(attempt, "events")


def ingest(
    gateway: GraphGateway, events: Sequence[Event], settings: Settings, now_ms: int | None = None
) -> IngestResult:
    """Apply a validated batch atomically; re-sending the same events changes nothing."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return commit(gateway, prepare(gateway, events, settings, now_ms), events, settings, now_ms)
