"""``kgrec import``: load a data set into the graph with batched, idempotent UNWIND writes.

The data set is first aggregated in memory (one row per node and per
relationship, interactions summed per user–item pair with decayed weights),
then written with MERGE + SET, so running the import twice leaves the graph
exactly as it was.

The batches that change an item's price, brand or categories stamp the items a
model version knows with a new catalogue revision, as a catalogue write does (a
new category link: an item under it), so serving lays the change over its model
within a second (:mod:`graph_schema.statements.dataset_import`); a batch that
changes nothing moves no revision.

Knowledge triples of any relation are written as typed edges (see
:mod:`graph_schema.statements.knowledge`). Each end of a triple is an item when
the data set lists it (items.csv or interactions) or the graph already holds an
Item node with its id (looked up in batches before writing), and an Entity
otherwise; ``produced_by`` and ``belongs_to`` still make brands and categories,
and the co-purchase relations still make item–item edges whose unknown ends
become unlisted items.
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from graph_schema.allow_list import ATTRIBUTE_RELATIONS, KNOWLEDGE_RELATIONS, Label, Rel
from graph_schema.catalogue import Statement
from graph_schema.statements import dataset_import as q
from graph_schema.statements.knowledge import KNOWN_ITEMS, UPSERT_ENTITIES, link_knowledge
from graph_schema.statements.privacy import ALL_ERASURES
from kgrec.category_tree import check_paths, cycle_problems, infer_parents
from kgrec.collector import cycle_collection_paused
from kgrec.config import Settings
from kgrec.datasets import Dataset, RowProblem, recorded_source
from kgrec.datasets.records import EntityRecord, Problems
from kgrec.decay import decayed_sum
from kgrec.erasure import user_hash
from kgrec.events.ingest import MINUTE_MS
from kgrec.events.validation import ValidationClock
from kgrec.gateway import GraphGateway, WriteSummary, retry_on_conflict
from kgrec.interests import PairEvidence, interest_rows

# (step name, rows in step) -> callback(rows just written)
ProgressFactory = Callable[[str, int], Callable[[int], None]]


log = logging.getLogger(__name__)


@dataclass
class _PairAggregate:
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    first_ts: int | None = None
    last_ts: int | None = None
    last_seq: int | None = None
    rating: float | None = None
    rating_key: tuple[int, int] = (-1, -1)
    # decay-weighted events: (type weight, ts or None)
    events: list[tuple[float, int | None]] = field(default_factory=list)


@dataclass
class PreparedImport:
    """A data set aggregated into the rows each catalogue statement takes."""

    items: list[dict[str, Any]]
    unlisted_items: list[str]
    brands: list[dict[str, Any]]
    item_brands: list[dict[str, Any]]
    categories: list[dict[str, Any]]
    category_parents: list[dict[str, Any]]
    item_categories: list[dict[str, Any]]
    knowledge: dict[str, list[dict[str, Any]]]  # co-purchase relation -> {head, relation, tail}
    # every other relation: (head, relation, tail), each end resolved to an item or an entity in load()
    open_triples: list[tuple[str, str, str]]
    entities: dict[str, dict[str, Any]]  # entities.csv: id -> {id, kind, name}
    users: list[str]
    bots: list[str]
    interactions: list[dict[str, Any]]
    brand_interests: list[dict[str, Any]]
    category_interests: list[dict[str, Any]]
    problems: list[RowProblem]
    # produced_by / belongs_to heads this data set does not list: head -> each triple's place and text
    outside_heads: dict[str, list[tuple[str, int, str]]] = field(default_factory=dict)
    # interactions of erased users dated at or before their erasure (or undated), left out
    erased_interactions: int = 0
    # triples erased users stated (MovieLens tags), by the same rule: left out
    erased_triples: int = 0


@dataclass
class ImportReport:
    """What an import wrote, how long it took, and which rows it skipped."""

    dataset: str
    nodes: int
    relationships: int
    relationships_created: int
    seconds: float
    rows_by_step: dict[str, int]
    problems: list[RowProblem]
    erased_interactions: int = 0  # of erased users, dated at or before their erasure: left out
    erased_triples: int = 0  # stated by erased users (MovieLens tags), by the same rule: left out

    @property
    def relationships_per_second(self) -> float:
        """Relationships written (merged) per second of loading."""
        return self.relationships / self.seconds if self.seconds else 0.0


_ITEM_FACTS = ("title", "description", "price")  # written by UPSERT_ITEMS (None: keep the stored value)


def prepare(
    dataset: Dataset,
    settings: Settings,
    now_ms: int,
    erasures: Mapping[str, int] | None = None,
    untimed_ms: int | None = None,
) -> PreparedImport:
    """Read and aggregate the whole data set (no graph access).

    ``untimed_ms``: the stamp of pairs whose events have no time (default ``now_ms``);
    :func:`import_dataset` gives the first import's start, so that a run again re-stamps nothing.

    ``erasures``: erased users' tombstones (:func:`kgrec.erasure.user_hash` → erasure time, ms);
    their interactions and the triples they stated (MovieLens tags) dated at or before it, or not
    dated, are left out (:class:`ErasureCheck`), and so is an entity that only such triples name.
    A loader with a
    ``clock`` gets ``now_ms`` and ``KGREC_MAX_CLOCK_SKEW_S``: a row dated further ahead is refused.
    """
    if hasattr(dataset, "clock"):  # a loader that reads times refuses those ahead of the import's
        dataset.clock = ValidationClock(now_ms, settings.max_clock_skew_s * 1000)
    with cycle_collection_paused():
        return _aggregate(dataset, settings, now_ms if untimed_ms is None else untimed_ms, erasures or {})


class ErasureCheck:
    """Which of a data set's user records an import leaves out: those of an erased user dated at
    or before the erasure, or not dated (no margin: a data set's times are the shop's records, not
    a device's clock); what the user did after it is a new history. Each user's tombstone is looked
    up once (in the tombstones :func:`import_dataset` read before it writes)."""

    def __init__(self, erasures: Mapping[str, int]) -> None:
        self._erasures = erasures
        self._erased_at: dict[str, int | None] = {}  # per user id of the data set: its erasure's time

    def left_out(self, user_id: str, ts: int | None) -> bool:
        """Whether a record of ``user_id`` dated ``ts`` (None: undated) is left out."""
        if not self._erasures:
            return False
        if user_id not in self._erased_at:
            self._erased_at[user_id] = self._erasures.get(user_hash(user_id))
        erased = self._erased_at[user_id]
        return erased is not None and (ts is None or ts <= erased)


def _named_by_kept(
    ends: set[str],
    open_triples: Mapping[tuple[str, str, str], None],
    knowledge: Mapping[str, Mapping[tuple[str, str], None]],
    item_brand: Mapping[str, str],
    item_cats: Mapping[str, list[str]],
) -> set[str]:
    """Which of ``ends`` (the few ends of left-out triples) a kept triple or item attribute names:
    a scan of what is kept, made only when something was left out, rather than a set of every
    kept end held through every import."""
    if not ends:
        return set()
    named = {end for head, _, tail in open_triples for end in (head, tail) if end in ends}
    named |= {end for pairs in knowledge.values() for pair in pairs for end in pair if end in ends}
    named |= {end for item, brand in item_brand.items() for end in (item, brand) if end in ends}
    named |= {end for item, cats in item_cats.items() for end in (item, *cats) if end in ends}
    return named


def _aggregate(
    dataset: Dataset, settings: Settings, untimed_ms: int, erasures: Mapping[str, int]
) -> PreparedImport:
    weights = settings.behaviour_weights
    erased = ErasureCheck(erasures)
    item_meta: dict[str, dict[str, Any]] = {}
    item_brand: dict[str, str] = {}
    item_cats: dict[str, list[str]] = defaultdict(list)

    def add_categories(item_id: str, categories: Iterable[str]) -> None:
        known = item_cats[item_id]
        known.extend(c for c in categories if c not in known)

    for record in dataset.items():
        item_meta[record.item_id] = {
            "id": record.item_id,
            "title": record.title,
            "description": record.description,
            "price": record.price,
        }
        if record.brand:
            item_brand[record.item_id] = record.brand
        add_categories(record.item_id, record.categories)

    # dicts as insertion-ordered sets: duplicates collapse, file order is kept
    knowledge: dict[str, dict[tuple[str, str], None]] = {name: {} for name in KNOWLEDGE_RELATIONS}
    open_triples: dict[tuple[str, str, str], None] = {}
    attribute_heads: dict[str, list[tuple[str, int, str]]] = defaultdict(list)
    erased_triples = 0
    erased_ends: set[str] = set()  # the ends of triples left out
    for triple in dataset.triples():
        if triple.user_id is not None and erased.left_out(triple.user_id, triple.ts):
            erased_triples += 1
            erased_ends.update((triple.head, triple.tail))
            continue
        rel = ATTRIBUTE_RELATIONS.get(triple.relation)
        if rel is not None:
            file, line = triple.source or ("kg_triples", 0)
            attribute_heads[triple.head].append((file, line, f"{triple.relation} {triple.tail!r}"))
        if rel is Rel.MADE_BY:
            brand = item_brand.setdefault(triple.head, triple.tail)
            if brand != triple.tail:
                file, line = triple.source or ("kg_triples", 0)
                dataset.problems.add(
                    file,
                    line,
                    f"produced_by {triple.tail!r}: item {triple.head!r} already has brand {brand!r} "
                    "(an item has one brand)",
                )
        elif rel is Rel.IN_CATEGORY:
            add_categories(triple.head, [triple.tail])
        elif triple.relation in knowledge:
            knowledge[triple.relation][(triple.head, triple.tail)] = None
        else:
            open_triples[(triple.head, triple.relation, triple.tail)] = None

    entities: dict[str, dict[str, Any]] = {}
    # Loaders written before entities.csv existed have no entities(); they name no entities.
    for entity in getattr(dataset, "entities", lambda: ())():
        merge_entity(entities, entity, dataset.problems)
    # An entity that only left-out triples name (a MovieLens tag only erased users gave) would be
    # written on its own, named by the erased user's words: it is left out with them.
    for entity_id in erased_ends - _named_by_kept(
        erased_ends, open_triples, knowledge, item_brand, item_cats
    ):
        entities.pop(entity_id, None)

    pairs: dict[tuple[str, str], _PairAggregate] = {}
    per_user_minute: Counter[tuple[str, int]] = Counter()
    left_out = 0
    for event in dataset.interactions():
        if erased.left_out(event.user_id, event.ts):
            left_out += 1
            continue
        agg = pairs.get((event.user_id, event.item_id))
        if agg is None:
            agg = pairs[(event.user_id, event.item_id)] = _PairAggregate()
        agg.counts[f"n_{event.type}"] += 1
        agg.events.append((weights[event.type], event.ts))
        if event.ts is not None:
            per_user_minute[(event.user_id, event.ts // MINUTE_MS)] += 1
            agg.first_ts = event.ts if agg.first_ts is None else min(agg.first_ts, event.ts)
            agg.last_ts = event.ts if agg.last_ts is None else max(agg.last_ts, event.ts)
        if event.seq is not None:
            agg.last_seq = event.seq if agg.last_seq is None else max(agg.last_seq, event.seq)
        if event.type == "rating" and event.value is not None:
            key = (-1 if event.ts is None else event.ts, -1 if event.seq is None else event.seq)
            if key >= agg.rating_key:
                agg.rating, agg.rating_key = event.value, key
        if event.item_id not in item_meta:
            item_meta[event.item_id] = {"id": event.item_id, **dict.fromkeys(_ITEM_FACTS)}

    listed = set(item_meta)
    unlisted = list(
        dict.fromkeys(i for edges in knowledge.values() for edge in edges for i in edge if i not in listed)
    )
    local = listed.union(unlisted)
    brand_ids = sorted(set(item_brand.values()))
    category_ids = sorted({c for cats in item_cats.values() for c in cats})
    parents = infer_parents({i: c for i, c in item_cats.items() if c})

    interactions: list[dict[str, Any]] = []
    evidence: list[PairEvidence] = []
    for (user_id, item_id), agg in pairs.items():
        weight, weight_ts = decayed_sum(agg.events, settings.half_life_ms, untimed_ms)
        row = {
            "user_id": user_id,
            "item_id": item_id,
            "counts": dict(agg.counts),
            "first_ts": agg.first_ts,
            "last_ts": agg.last_ts,
            "last_seq": agg.last_seq,
            "rating": agg.rating,
            # when the kept rating was given: a later rating event older than it does not replace it
            "rating_ts": agg.rating_key[0] if agg.rating is not None and agg.rating_key[0] >= 0 else None,
            "weight": weight,
            "weight_ts": weight_ts,
        }
        interactions.append(row)
        evidence.append(
            PairEvidence(
                user_id, item_id, weight, weight_ts, sum(agg.counts.values()), agg.first_ts, agg.last_ts
            )
        )

    return PreparedImport(
        items=list(item_meta.values()),
        unlisted_items=unlisted,
        brands=[{"id": b, "name": html.unescape(b)} for b in brand_ids],
        item_brands=[{"item_id": i, "brand_id": b} for i, b in sorted(item_brand.items())],
        categories=[{"id": c, "name": html.unescape(c)} for c in category_ids],
        category_parents=[{"child_id": c, "parent_id": p} for c, p in sorted(parents.items())],
        item_categories=[
            {"item_id": i, "category_id": c} for i, cats in sorted(item_cats.items()) for c in cats
        ],
        knowledge={
            name: [{"head": h, "relation": name, "tail": t} for h, t in edges]
            for name, edges in knowledge.items()
        },
        open_triples=list(open_triples),
        entities=entities,
        users=list(dict.fromkeys(u for u, _ in pairs)),
        bots=sorted({u for (u, _), n in per_user_minute.items() if n > settings.bot_events_per_minute})
        if dataset.flags_bots
        else [],
        interactions=interactions,
        brand_interests=interest_rows(
            evidence, {i: [b] for i, b in item_brand.items()}, settings.half_life_ms
        ),
        category_interests=interest_rows(evidence, item_cats, settings.half_life_ms),
        problems=list(dataset.problems.rows),
        outside_heads={h: place for h, place in attribute_heads.items() if h not in local},
        erased_interactions=left_out,
        erased_triples=erased_triples,
    )


def merge_entity(entities: dict[str, dict[str, Any]], entity: EntityRecord, problems: Problems) -> None:
    """Add ``entity`` to ``entities`` (id -> {id, kind, name}), merged with an earlier row of its id.

    An empty kind or name leaves the earlier value alone, and fills an earlier empty one. A row
    giving another non-empty kind or name than an earlier row is a conflict: it is skipped as a
    whole and reported, and the earlier values stay.
    """
    stored = entities.get(entity.entity_id)
    if stored is None:
        entities[entity.entity_id] = {"id": entity.entity_id, "kind": entity.kind, "name": entity.name}
        return
    given = {"kind": entity.kind, "name": entity.name}
    conflicts = [
        f"{column} {value!r} (an earlier row gives {stored[column]!r})"
        for column, value in given.items()
        if value is not None and stored[column] is not None and value != stored[column]
    ]
    if conflicts:
        file, line = entity.source or ("entities", 0)
        reason = f"entity {entity.entity_id!r}: {' and '.join(conflicts)}; the earlier row is kept"
        problems.add(file, line, reason)
        return
    for column, value in given.items():
        if value is not None:
            stored[column] = value


def drop_headless_attributes(
    gateway: GraphGateway, prepared: PreparedImport, batch_size: int = 10_000
) -> PreparedImport:
    """Skip (and report) each ``produced_by`` / ``belongs_to`` triple whose head is no item.

    A head the data set does not list may still be an Item the graph holds (from an
    earlier import or the catalogue API); only heads found in neither are dropped,
    so no brand or category is written without an item to hang it on.
    """
    if not prepared.outside_heads:
        return prepared
    missing = set(prepared.outside_heads) - known_items(gateway, prepared.outside_heads, batch_size)
    if not missing:
        return prepared
    item_brands = [row for row in prepared.item_brands if row["item_id"] not in missing]
    item_categories = [row for row in prepared.item_categories if row["item_id"] not in missing]
    brand_ids = {row["brand_id"] for row in item_brands}
    category_ids = {row["category_id"] for row in item_categories}
    reported = {(problem.file, problem.line) for problem in prepared.problems}
    problems = sorted(
        (
            RowProblem(file, line, f"{triple}: {head!r} is no item of this data set or the graph")
            for head in missing
            for file, line, triple in prepared.outside_heads[head]
            if (file, line) not in reported  # a row is reported once, for its first reason
        ),
        key=lambda problem: (problem.file, problem.line),
    )
    return replace(
        prepared,
        brands=[row for row in prepared.brands if row["id"] in brand_ids],
        item_brands=item_brands,
        categories=[row for row in prepared.categories if row["id"] in category_ids],
        # the tree inferred with them, less the links of categories no item is in any more
        category_parents=[
            row
            for row in prepared.category_parents
            if row["child_id"] in category_ids and row["parent_id"] in category_ids
        ],
        item_categories=item_categories,
        problems=prepared.problems + problems,
        outside_heads={},
    )


def _skipped_link(reason: str) -> RowProblem:
    """The report's problem for an inferred category link that would close a loop, so is skipped:
    the field it was inferred from and the link (the reason names both categories)."""
    return RowProblem("items.csv", 0, f"categories: the inferred category link {reason}; the link is skipped")


def drop_looping_links(gateway: GraphGateway, prepared: PreparedImport) -> PreparedImport:
    """Skip (and report) each inferred category link that would close a loop with the stored tree.

    The inferred tree has no loop of its own; an earlier import, the catalogue API or events
    may have stored the reverse of one of its links (one read, as for the API's paths).
    """
    links = prepared.category_parents
    paths = [(k, (row["parent_id"], row["child_id"])) for k, row in enumerate(links)]
    looping = dict(cycle_problems(gateway, paths))
    if not looping:
        return prepared
    return replace(
        prepared,
        category_parents=[row for k, row in enumerate(links) if k not in looping],
        problems=prepared.problems + [_skipped_link(reason) for _, reason in sorted(looping.items())],
    )


def link_category_parents(
    gateway: GraphGateway,
    links: list[dict[str, Any]],
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[WriteSummary, list[RowProblem]]:
    """Write the inferred category links (``child_id``, ``parent_id``) as the API writes paths;
    returns what was written and a problem for each link skipped.

    The links above their ids are read (:func:`kgrec.category_tree.check_paths`) and each batch
    checks under the tree's lock that those links, and the import's own, are still all there is
    (``TREE_UNCHANGED``): another writer's link stored since could close a loop with the import's.
    Such a batch is refused whole (a GraphConflict); the links are then checked again (those
    written are stored now) and a link that would now close a loop is skipped and reported.
    """

    def attempt(_: int) -> tuple[WriteSummary, list[RowProblem]]:
        check = check_paths(
            gateway, [(k, (row["parent_id"], row["child_id"])) for k, row in enumerate(links)]
        )
        looping = {k for k, _ in check.problems}
        kept = [row for k, row in enumerate(links) if k not in looping]
        own = {(row["child_id"], row["parent_id"]) for row in kept} if check.tree_ids else set()
        tree = {
            "tree_ids": check.tree_ids,
            "tree_links": [list(link) for link in sorted({tuple(link) for link in check.tree_links} | own)],
        }
        written = gateway.write_batches(
            q.LINK_CATEGORY_PARENTS, kept, batch_size=batch_size, extra=tree, on_batch=on_batch, clock="at"
        )
        return written, [_skipped_link(reason) for _, reason in check.problems]

    return retry_on_conflict(attempt, "category links")


@dataclass
class KnowledgeRows:
    """Entities and knowledge edges ready to write, with every triple end resolved."""

    entities: list[dict[str, Any]]
    # one (statement, rows {head, relation, tail}) per relationship type and pair of end labels
    links: list[tuple[Statement, list[dict[str, Any]]]]


def known_items(gateway: GraphGateway, ids: Iterable[str], batch_size: int = 10_000) -> set[str]:
    """Which of ``ids`` are Item nodes in the graph (one UNWIND read per batch)."""
    todo = sorted(set(ids))
    found: set[str] = set()
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        found.update(row["id"] for row in gateway.read(KNOWN_ITEMS, {"ids": batch}))
    return found


def resolve_knowledge(
    gateway: GraphGateway, prepared: PreparedImport, batch_size: int = 10_000
) -> KnowledgeRows:
    """Decide, for each triple end, item or entity, and group the edges by statement."""
    local_items = {row["id"] for row in prepared.items} | set(prepared.unlisted_items)
    ends = {end for head, _, tail in prepared.open_triples for end in (head, tail)}
    ends.update(prepared.entities)
    items = local_items | known_items(gateway, ends - local_items, batch_size)

    statements: dict[str, Statement] = {}
    links: dict[str, dict[tuple[str, str, str], None]] = defaultdict(dict)

    def add(statement: Statement, head: str, relation: str, tail: str) -> None:
        statements[statement.name] = statement
        links[statement.name][(head, relation, tail)] = None

    for name, rows in prepared.knowledge.items():
        for row in rows:
            add(link_knowledge(name, Label.ITEM, Label.ITEM), row["head"], name, row["tail"])
    entity_ids: dict[str, None] = {}
    for head, relation, tail in prepared.open_triples:
        head_label = Label.ITEM if head in items else Label.ENTITY
        tail_label = Label.ITEM if tail in items else Label.ENTITY
        for end, label in ((head, head_label), (tail, tail_label)):
            if label is Label.ENTITY:
                entity_ids[end] = None
        add(link_knowledge(relation, head_label, tail_label), head, relation, tail)
    # entities.csv rows for ids that are items name nothing: items have their own titles
    entity_ids.update((e, None) for e in prepared.entities if e not in items)
    return KnowledgeRows(
        entities=[prepared.entities.get(e, {"id": e, "kind": None, "name": None}) for e in entity_ids],
        links=[
            (statements[name], [{"head": h, "relation": r, "tail": t} for h, r, t in links[name]])
            for name in sorted(links)
        ],
    )


def load(
    gateway: GraphGateway,
    prepared: PreparedImport,
    now_ms: int,
    progress: ProgressFactory | None = None,
    batch_size: int = 10_000,
) -> tuple[dict[str, int], int, int, int, list[RowProblem]]:
    """Write a prepared import; returns (rows per step, nodes, relationships, created, and a problem
    for each inferred category link skipped because another writer's links would make it close a
    loop now)."""
    knowledge = resolve_knowledge(gateway, prepared, batch_size)
    # (step, statement, rows, parameter name, needs $now, writes relationships); the steps that
    # write item facts, and the interactions, also take each batch's time (q.BATCH_TIMED)
    steps: list[tuple[str, Statement, list[Any], str, bool, bool]] = [
        ("items", q.UPSERT_ITEMS, prepared.items, "rows", True, False),
        ("unlisted items", q.UPSERT_UNLISTED_ITEMS, prepared.unlisted_items, "ids", True, False),
        ("brands", q.UPSERT_BRANDS, prepared.brands, "rows", True, False),
        ("categories", q.UPSERT_CATEGORIES, prepared.categories, "rows", True, False),
        ("entities", UPSERT_ENTITIES, knowledge.entities, "rows", True, False),
        ("users", q.UPSERT_USERS, prepared.users, "ids", True, False),
        ("item → brand", q.LINK_ITEM_BRANDS, prepared.item_brands, "rows", False, True),
        ("category → parent", q.LINK_CATEGORY_PARENTS, prepared.category_parents, "rows", False, True),
        ("item → category", q.LINK_ITEM_CATEGORIES, prepared.item_categories, "rows", False, True),
        *(
            (statement.name.removeprefix("link_knowledge_"), statement, rows, "rows", False, True)
            for statement, rows in knowledge.links
        ),
        ("user → item", q.SET_INTERACTIONS, prepared.interactions, "rows", False, True),
        ("user → brand", q.SET_BRAND_INTERESTS, prepared.brand_interests, "rows", False, True),
        ("user → category", q.SET_CATEGORY_INTERESTS, prepared.category_interests, "rows", False, True),
    ]
    rows_by_step: dict[str, int] = {}
    nodes = relationships = created = 0
    skipped: list[RowProblem] = []
    for name, statement, rows, param, needs_now, is_rel in steps:
        on_batch = progress(name, len(rows)) if progress else None
        written = len(rows)
        if statement is q.LINK_CATEGORY_PARENTS:
            summary, skipped = link_category_parents(gateway, rows, batch_size, on_batch)
            written -= len(skipped)
        else:
            summary = gateway.write_batches(
                statement,
                rows,
                param=param,
                batch_size=batch_size,
                extra={"now": now_ms} if needs_now else None,
                on_batch=on_batch,
                clock="at" if statement in q.BATCH_TIMED else None,
            )
        rows_by_step[name] = written
        if is_rel:
            relationships += written
            created += summary.relationships_created
        else:
            nodes += written
    # a property of users written above, neither a node nor a relationship of its own
    gateway.write_batches(q.FLAG_BOTS, prepared.bots, param="ids", batch_size=batch_size, clock="at")
    rows_by_step["bots"] = len(prepared.bots)
    return rows_by_step, nodes, relationships, created, skipped


def import_dataset(
    gateway: GraphGateway,
    dataset: Dataset,
    settings: Settings,
    progress: ProgressFactory | None = None,
    now_ms: int | None = None,
    source: str | None = None,
) -> ImportReport:
    """Aggregate ``dataset`` and write it to the graph; returns an :class:`ImportReport`.

    The graph records the import (``(:Revision {id: 'import'})``: data set, ``started_at``,
    ``finished_at``), finished only once every step is written and the AOF rewritten; see
    :func:`import_state`. Interactions without a time are stamped with the start of the first
    import of this data set (:func:`first_starts`), so running it again changes nothing, even after
    other data sets were imported in between.
    ``source`` is what the record names (default the data set's name; commands pass
    :func:`kgrec.datasets.import_source`, which ``kgrec up --import`` accepts).
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    source = source or dataset.name
    erasures = {row["id"]: int(row["erased_at"]) for row in gateway.read(ALL_ERASURES)}
    known = first_starts(import_state(gateway), settings.datasets_dir)
    first = known.get(source, now_ms)
    prepared = drop_looping_links(
        gateway, drop_headless_attributes(gateway, prepare(dataset, settings, now_ms, erasures, first))
    )
    starts = json.dumps({**known, source: first}, sort_keys=True)
    gateway.write(q.START_IMPORT, {"dataset": source, "now": now_ms, "first_starts": starts})
    started = time.perf_counter()
    rows_by_step, nodes, relationships, created, skipped = load(gateway, prepared, now_ms, progress)
    gateway.after_bulk_load()
    # last: a process killed before this leaves the record unfinished, and `kgrec up --import`
    # runs the import again (rewriting the AOF too) rather than serving a partial graph
    gateway.write(q.FINISH_IMPORT, {"started": now_ms, "now": int(time.time() * 1000)})
    return ImportReport(
        dataset=dataset.name,
        nodes=nodes,
        relationships=relationships,
        relationships_created=created,
        seconds=time.perf_counter() - started,
        rows_by_step=rows_by_step,
        problems=prepared.problems + skipped,
        erased_interactions=prepared.erased_interactions,
        erased_triples=prepared.erased_triples,
    )


@dataclass(frozen=True)
class ImportState:
    """The graph's record of its last bulk import."""

    dataset: str
    started_at: int
    finished_at: int | None
    # when the first import of ``dataset`` started, as a record kept before ``first_starts`` held
    # it says (None: any other record; an import's start removes it)
    first_started_at: int | None = None
    # when the first import of each data set imported into this graph started, by the name the
    # record gives it (empty: recorded before kgrec kept it)
    first_starts: Mapping[str, int] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Whether every step was written (False: the importing process died part way)."""
        return self.finished_at is not None


def import_state(gateway: GraphGateway) -> ImportState | None:
    """The last import the graph records, or None when it records none (never imported, or
    imported before kgrec kept the record)."""
    rows = gateway.read(q.IMPORT_STATE)
    if not rows:
        return None
    row = rows[0]
    first = row.get("first_started_at")
    return ImportState(
        str(row["dataset"]),
        int(row["started_at"]),
        row["finished_at"],
        None if first is None else int(first),
        _recorded_first_starts(row.get("first_starts")),
    )


def _recorded_first_starts(value: object) -> dict[str, int]:
    """The record's ``first_starts`` (data set → ms), or {} when it is missing or unreadable.

    A hand-edited value must not stop every ``kgrec up``: losing it only means a data set imported
    again re-stamps its timeless interactions with that import's start.
    """
    if not value:
        return {}
    try:
        every = json.loads(str(value))
        return {str(name): int(ms) for name, ms in every.items()}
    except (ValueError, TypeError, AttributeError):
        log.warning("the import record's first_starts is unreadable (%.80r); ignoring it", value)
        return {}


def first_starts(state: ImportState | None, data_dir: Path | None = None) -> dict[str, int]:
    """When the first import of each data set the graph has had started, by the name the record
    gives it (:func:`kgrec.datasets.import_source`): the stamp its interactions without a time
    get, so that importing it again, after any other, re-stamps nothing. A data set missing from
    it is new to the graph: its import stamps them with its own start.

    The record's ``first_starts``; a record kept before it existed counts its own data set's
    ``first_started_at`` (or, older still, ``started_at``: the stamp that import gave them), under
    the name :func:`kgrec.datasets.recorded_source` gives it today in ``data_dir`` (a record kept
    before built-in data sets were named by their name holds the folder's absolute path).
    """
    if state is None:
        return {}
    last = state.first_started_at if state.first_started_at is not None else state.started_at
    dataset = state.dataset if data_dir is None else recorded_source(state.dataset, data_dir)
    return {dataset: last, **state.first_starts}
