"""Pull the training subgraph from the graph, in pages, into index arrays.

Users and items get dense indices (sorted by id, so a pull is deterministic).
Interaction weights are decayed to ``now_ms``; the order of a user's history
comes from ``last_ts`` when the data has times and ``last_seq`` otherwise.

Knowledge edges are read generically (every edge with a ``relation``), out of
each page of items and of entities, into ``kg_triples`` over one node space:
items, then entities, both sorted by id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from graph_schema.allow_list import KNOWLEDGE_RELATIONS, Label
from graph_schema.catalogue import Statement
from graph_schema.statements.training import (
    CATEGORY_NAMES,
    CATEGORY_TREE,
    INTERACTIONS_RECEIVED_BY,
    ITEM_FACTS,
    KNOWLEDGE_OF_ENTITIES,
    KNOWLEDGE_OF_ITEMS,
    TRAINING_ENTITY_IDS,
    TRAINING_ITEM_IDS,
    TRAINING_USER_IDS,
)
from kgrec.collector import cycle_collection_paused
from kgrec.decay import decayed_array
from kgrec.gateway import GraphGateway, batched
from kgrec.item_facts import ItemFacts, links_in_id_order
from kgrec.training_graph import TrainingGraph

PAGE = 5_000  # ids per UNWIND read


def item_text(
    title: str | None, brands: Sequence[str], categories: Sequence[str], names: Mapping[str, str]
) -> str:
    """The text an item is embedded from: title | brands | category names, in the order given."""
    return " | ".join(
        part
        for part in (title or "", ", ".join(brands), ", ".join(names.get(c, c) for c in categories))
        if part
    )


def read_item_facts(gateway: GraphGateway, item_ids: Sequence[str]) -> list[dict]:
    """ITEM_FACTS rows for ``item_ids``, each item's brands and categories in id order."""
    return [links_in_id_order(row) for row in gateway.read(ITEM_FACTS, {"ids": list(item_ids)})]


def all_rows(gateway: GraphGateway, statement: Statement) -> list[dict]:
    """Every row of an id statement (such as ``TRAINING_USER_IDS``), sorted by ``id``.

    One label scan; sorting here rather than in Cypher keeps the engine's order out of training.
    """
    return sorted(gateway.read(statement), key=lambda row: row["id"])


def all_ids(gateway: GraphGateway, statement: Statement) -> list[str]:
    """Every ``id`` an id statement returns, sorted."""
    return [row["id"] for row in all_rows(gateway, statement)]


@dataclass
class OpenKnowledge:
    """The open knowledge graph over the items and entities of a pull."""

    entity_ids: list[str]
    entity_kinds: list[str | None]
    relation_names: list[str]
    kg_triples: np.ndarray  # (n, 3): head node, relation index, tail node
    knowledge: dict[str, np.ndarray]  # co-purchase relation -> (n, 2) head item, tail item


def open_knowledge(
    item_index: Mapping[str, int], entity_kinds: Mapping[str, str | None], edges: Sequence[Mapping]
) -> OpenKnowledge:
    """Index knowledge edges (rows of KNOWLEDGE_OF_ITEMS / _ENTITIES, with ``head_label`` added).

    Edges with an end outside the pull (an unlisted item, a brand) are left out.
    """
    entity_ids = sorted(entity_kinds)
    n_items = len(item_index)
    node = {
        Label.ITEM.value: item_index,
        Label.ENTITY.value: {e: n_items + k for k, e in enumerate(entity_ids)},
    }
    kept: list[tuple[int, str, int]] = []
    for edge in edges:
        head = node[edge["head_label"]].get(edge["head"])
        tail_label = next((x for x in edge["tail_labels"] if x in node), None)
        tail = node[tail_label].get(edge["tail"]) if tail_label else None
        if head is not None and tail is not None:
            kept.append((head, edge["relation"], tail))
    relation_names = sorted({relation for _, relation, _ in kept})
    relation_index = {r: k for k, r in enumerate(relation_names)}
    triples = np.array([(h, relation_index[r], t) for h, r, t in kept], dtype=np.int64).reshape(-1, 3)
    # np.unique sorts the rows: the engine's edge order never reaches training
    triples = np.unique(triples, axis=0) if triples.size else triples
    item_item = triples[(triples[:, 0] < n_items) & (triples[:, 2] < n_items)]
    knowledge = {
        name: item_item[item_item[:, 1] == relation_index.get(name, -1)][:, [0, 2]]
        for name in KNOWLEDGE_RELATIONS
    }
    return OpenKnowledge(
        entity_ids=entity_ids,
        entity_kinds=[entity_kinds[e] for e in entity_ids],
        relation_names=relation_names,
        kg_triples=triples,
        knowledge=knowledge,
    )


def pull(
    gateway: GraphGateway,
    now_ms: int,
    half_life_ms: float,
    progress: Callable[[str, int], None] | None = None,
) -> TrainingGraph:
    """Read users (minus flagged bots), their interactions, and the items' brands, categories and links.

    ``now_ms`` is the pull's time (the version's ``data_until``): interactions the graph received
    after it (while the pull reads its batches) are left out, as an erasure expects.
    """
    with cycle_collection_paused():
        return _pull(gateway, now_ms, half_life_ms, progress)


def _pull(
    gateway: GraphGateway,
    now_ms: int,
    half_life_ms: float,
    progress: Callable[[str, int], None] | None,
) -> TrainingGraph:
    rows: list[dict] = []
    for ids in batched(all_ids(gateway, TRAINING_USER_IDS), PAGE):
        rows.extend(gateway.read(INTERACTIONS_RECEIVED_BY, {"ids": ids, "pulled_at": now_ms}))
        if progress:
            progress("interactions", len(rows))

    facts: dict[str, dict] = {}
    edges: list[dict] = []
    for ids in batched(all_ids(gateway, TRAINING_ITEM_IDS), PAGE):
        for row in read_item_facts(gateway, ids):
            facts[row["item_id"]] = row
        edges.extend({**e, "head_label": "Item"} for e in gateway.read(KNOWLEDGE_OF_ITEMS, {"ids": ids}))
        if progress:
            progress("items", len(facts))

    entity_kinds: dict[str, str | None] = {}
    for page in batched(all_rows(gateway, TRAINING_ENTITY_IDS), PAGE):
        entity_kinds.update((r["id"], r["kind"]) for r in page)
        ids = [r["id"] for r in page]
        edges.extend({**e, "head_label": "Entity"} for e in gateway.read(KNOWLEDGE_OF_ENTITIES, {"ids": ids}))
        if progress:
            progress("entities", len(entity_kinds))

    # The engine returns edges in its internal order, which changes after a reload:
    # sort so the same graph always yields the same arrays (and the same training run).
    rows.sort(key=lambda r: (r["user_id"], r["item_id"]))
    user_ids = sorted({r["user_id"] for r in rows})
    item_ids = sorted(set(facts) | {r["item_id"] for r in rows})
    user_index = {u: k for k, u in enumerate(user_ids)}
    item_index = {i: k for k, i in enumerate(item_ids)}

    weights = decayed_array(
        np.array([np.nan if r["weight"] is None else r["weight"] for r in rows], dtype=np.float64),
        np.array([np.nan if r["weight_ts"] is None else r["weight_ts"] for r in rows], dtype=np.float64),
        now_ms,
        half_life_ms,
    )
    order = np.array(
        [r["last_ts"] if r["last_ts"] is not None else (r["last_seq"] or 0) for r in rows], dtype=np.int64
    )

    names = {row["id"]: row["name"] for row in gateway.read(CATEGORY_NAMES)}
    brand_ids = sorted({b for f in facts.values() for b in f["brands"]})
    category_ids = sorted({c for f in facts.values() for c in f["categories"]})
    brand_index = {b: k for k, b in enumerate(brand_ids)}
    category_index = {c: k for k, c in enumerate(category_ids)}
    item_brand = np.full(len(item_ids), -1, dtype=np.int64)
    pairs: list[tuple[int, int]] = []
    texts: list[str] = []
    descriptions: list[str] = []
    for item_id in item_ids:
        k = item_index[item_id]
        fact = facts.get(item_id, {"title": None, "brands": [], "categories": []})
        if fact["brands"]:
            item_brand[k] = brand_index[fact["brands"][0]]
        pairs.extend((k, category_index[c]) for c in fact["categories"])
        texts.append(item_text(fact["title"], fact["brands"], fact["categories"], names))
        descriptions.append(fact.get("description") or "")
    item_category_pairs = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    facts = _item_facts(gateway, item_ids, facts, brand_ids, item_brand, category_ids, item_category_pairs)
    kg = open_knowledge(item_index, entity_kinds, edges)
    return TrainingGraph(
        user_ids=user_ids,
        item_ids=item_ids,
        inter_user=np.array([user_index[r["user_id"]] for r in rows], dtype=np.int64),
        inter_item=np.array([item_index[r["item_id"]] for r in rows], dtype=np.int64),
        inter_weight=weights,
        inter_order=order,
        brand_ids=brand_ids,
        item_brand=item_brand,
        category_ids=category_ids,
        item_category_pairs=item_category_pairs,
        knowledge=kg.knowledge,
        entity_ids=kg.entity_ids,
        entity_kinds=kg.entity_kinds,
        relation_names=kg.relation_names,
        kg_triples=kg.kg_triples,
        item_text=texts,
        item_description=descriptions,
        facts=facts,
        pulled_at=now_ms,
    )


def _item_facts(
    gateway: GraphGateway,
    item_ids: list[str],
    facts: dict[str, dict],
    brand_ids: list[str],
    item_brand: np.ndarray,
    category_ids: list[str],
    item_category_pairs: np.ndarray,
) -> ItemFacts:
    """The serving filters' view: the training graph's brands and categories, the whole tree, prices."""
    tree = sorted(gateway.read(CATEGORY_TREE), key=lambda r: (r["child"], r["parent"]))
    all_categories = list(category_ids)
    index = {c: k for k, c in enumerate(all_categories)}
    for row in tree:
        for category in (row["child"], row["parent"]):
            if category not in index:
                index[category] = len(all_categories)
                all_categories.append(category)
    prices = [facts.get(item_id, {}).get("price") for item_id in item_ids]
    return ItemFacts(
        brand_ids=list(brand_ids),
        item_brand=item_brand.copy(),
        category_ids=all_categories,
        item_category_pairs=item_category_pairs,
        category_parent_pairs=np.array(
            [(index[r["child"]], index[r["parent"]]) for r in tree], dtype=np.int64
        ).reshape(-1, 2),
        item_price=np.array([np.nan if p is None else float(p) for p in prices], dtype=np.float32),
    )
