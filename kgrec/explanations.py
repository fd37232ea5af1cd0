"""Explanation paths: score, describe and package the meta-paths the graph returns.

A path's score combines three things, so that strong, specific, recent
evidence comes first:

    score = prior(kind, relation, specificity) × strength + 0.25 × max(0, cos(hub, target))

- ``strength``: how strong the path's first edge (the user's own interaction
  or interest) is now, ``1 − exp(−decayed weight / 5)``: a purchase made
  today (weight 5) gives 0.63, several give nearly 1, and evidence that
  decayed away gives nearly 0. It depends on nothing but the edge, so a path
  scores the same whichever other items are explained with it;
- ``prior``: bought_together 1.0, also_bought 0.8, also_viewed 0.5, any other
  item–item relation (a ``related_item`` path) 0.5, each ×0.8 when the link
  points from the target to the user's item; same brand 0.5; a shared
  attribute (both items link to one entity by the same relation)
  0.5 × specificity; co-users 0.4 × min(1, support / 3); an interest 0.4
  (brand) or 0.3 (category or topic) × specificity; a reviewed item's topic
  (``reviewed_topic``) 0.3 × the topic's specificity (0.5: topics are not among
  the item facts). Specificity = 1 − sqrt(share of items under it): the
  share of the model's items in the brand or category (as the catalogue's current
  item facts for the model have them), or, for an entity,
  the items its relation links to it (counted by the graph read; a popular
  entity's count is remembered, :class:`EntityCounts`) over the model's items.
  So "Beauty", which holds every item, and a genre that every film has,
  explain nothing;
- the cosine between the model's embeddings of the user's item and the target.

Sentences come from :mod:`kgrec.relation_sentences`: one template per relation
(a file the operator can extend), and a default built from the relation's name.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from graph_schema.allow_list import ATTRIBUTE_RELATIONS, KNOWLEDGE_RELATIONS
from graph_schema.path_query import path_cypher
from graph_schema.statements.explanations import EXPLANATION_CO_USERS, EXPLANATION_PATHS
from kgrec.decay import decayed, shown_weight
from kgrec.gateway import GraphGateway
from kgrec.item_facts import ItemFacts
from kgrec.recommender import HistoryEntry, Recommender
from kgrec.relation_sentences import RelationSentences, load_sentences

log = logging.getLogger(__name__)

_CO_PURCHASE_PRIOR = {"BOUGHT_TOGETHER": 1.0, "ALSO_BOUGHT": 0.8, "ALSO_VIEWED": 0.5}
_OTHER_RELATION_PRIOR = 0.5  # any other item–item relation
_REVERSED = 0.8
_SAME_BRAND_PRIOR = 0.5
_SHARED_ATTRIBUTE_PRIOR = 0.5  # × the entity's specificity
_CO_USER_PRIOR = 0.4
_INTEREST_PRIOR = {"Brand": 0.4, "Category": 0.3, "Topic": 0.3}
_TOPIC_SPECIFICITY = 0.5
_EMBEDDING_WEIGHT = 0.25
_REFERENCE_WEIGHT = 5.0  # one purchase today, with the default behaviour weights


# Relation names of the relationship types written before edges carried their relation.
_RELATION_OF_TYPE = {rel.value: name for name, rel in {**KNOWLEDGE_RELATIONS, **ATTRIBUTE_RELATIONS}.items()}

_DEFAULT_SENTENCES: RelationSentences | None = None


def default_sentences() -> RelationSentences:
    """The bundled sentence templates (loaded once)."""
    global _DEFAULT_SENTENCES
    if _DEFAULT_SENTENCES is None:
        _DEFAULT_SENTENCES = load_sentences()
    return _DEFAULT_SENTENCES


def _name(node: Mapping[str, Any]) -> str:
    return str(node["name"] or node["id"])


def _relation(rel: Mapping[str, Any]) -> str:
    """A knowledge edge's relation name (from its type for edges written without one)."""
    return str(rel.get("relation") or _RELATION_OF_TYPE.get(rel["type"], rel["type"]))


def co_purchase_pairs(
    model: Recommender, hub_ids: Sequence[str], target_ids: Sequence[str]
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The (hub, target) pairs the model's co-purchase links join: hub → target, and target → hub.

    Sparse-matrix lookups in place of a graph search; the graph then confirms
    each pair (``EXPLANATION_PATHS``), so every path returned exists there.
    """
    index = model.item_index
    hubs = [index[h] for h in dict.fromkeys(hub_ids) if h in index]
    targets = [index[t] for t in dict.fromkeys(target_ids) if t in index]
    if not hubs or not targets:
        return [], []
    links, ids = model.co_purchase_links, model.artifacts.item_ids
    forward_block = links[hubs][:, targets].tocoo()
    backward_block = links[targets][:, hubs].tocoo()
    forward = [
        {"hub": ids[hubs[h]], "target": ids[targets[t]]}
        for h, t in zip(forward_block.row.tolist(), forward_block.col.tolist(), strict=True)
        if hubs[h] != targets[t]
    ]
    backward = [
        {"hub": ids[hubs[h]], "target": ids[targets[t]]}
        for t, h in zip(backward_block.row.tolist(), backward_block.col.tolist(), strict=True)
        if hubs[h] != targets[t]
    ]
    return forward, backward


def read_paths(
    gateway: GraphGateway,
    user_id: str,
    item_ids: Sequence[str],
    *,
    hubs: int,
    now_ms: float,
    half_life_ms: float,
    forward: Sequence[Mapping[str, str]] = (),
    backward: Sequence[Mapping[str, str]] = (),
    counted: Sequence[Sequence[str]] = (),
) -> list[dict[str, Any]]:
    """Every path row but co-users' from the user to the items: one statement for the batch.

    ``forward``/``backward`` are :func:`co_purchase_pairs`; ``counted`` the
    (entity, relation) pairs whose item counts are known; the user's strongest
    interests are chosen by their weights decayed to ``now_ms``.
    """
    batch = {
        "user_id": user_id,
        "item_ids": list(item_ids),
        "hubs": hubs,
        "now": int(now_ms),
        "half_life_ms": half_life_ms,
        "forward": list(forward),
        "backward": list(backward),
        "counted": [list(pair) for pair in counted],
    }
    return gateway.read(EXPLANATION_PATHS, batch)


def read_co_user_paths(
    gateway: GraphGateway, user_id: str, item_ids: Sequence[str], *, hubs: int
) -> list[dict[str, Any]]:
    """The co-user path rows from the user to each item, read together (``read_many``: one round
    trip on FalkorDB; on Neo4j one read transaction, a round trip per statement).

    ``EXPLANATION_CO_USERS`` once per item: its scan of the target's users stops
    at a LIMIT, which a batch cannot apply per item.
    """
    reads = [
        (EXPLANATION_CO_USERS, {"user_id": user_id, "item_id": item_id, "hubs": hubs})
        for item_id in dict.fromkeys(item_ids)
    ]
    return [row for rows in gateway.read_many(reads) for row in rows] if reads else []


def co_user_bounds(
    model: Recommender, hubs: Sequence[HistoryEntry], target_ids: Sequence[str], *, complete: bool
) -> dict[str, float]:
    """The most a co-user path to each target can score, from the user's hubs alone.

    A co-user path through hub ``h`` scores ``0.4 × min(1, support / 3) × strength(h)
    + 0.25 × max(0, cos(h, target))``; with the support term at its most, 1, the
    best of ``hubs`` bounds every such path. ``hubs`` must hold every item the
    graph read may use as a hub (its ``$hubs`` most recent), with weights decayed
    to a time no later than the scoring's: decay only lowers them. When that is
    not sure (``complete`` false: the history was cut where the hubs' recency ties),
    the bound is the largest any path can score.
    """
    ceiling = _CO_USER_PRIOR + _EMBEDDING_WEIGHT
    if not complete:
        return dict.fromkeys(target_ids, ceiling)
    if not hubs:
        return dict.fromkeys(target_ids, 0.0)
    index = model.item_index
    strength = _CO_USER_PRIOR * (
        1.0 - np.exp(-np.array([h.weight for h in hubs], dtype=np.float64) / _REFERENCE_WEIGHT)
    )
    hub_rows = np.array([index.get(h.item_id, -1) for h in hubs])
    hub_ids = np.array([h.item_id for h in hubs], dtype=object)
    known = hub_rows >= 0
    bounds: dict[str, float] = {}
    for target in dict.fromkeys(target_ids):
        cosine = np.zeros(len(hubs))
        if target in index and known.any():
            cosine[known] = model.embeddings[hub_rows[known]] @ model.embeddings[index[target]]
        scores = strength + _EMBEDDING_WEIGHT * np.maximum(cosine, 0.0)
        scores[hub_ids == target] = 0.0  # no path runs from the target to itself
        bounds[target] = float(scores.max())
    return bounds


def co_users_can_rank(paths: Sequence[Mapping[str, Any]], bound: float, places: int) -> bool:
    """Whether a co-user path scoring at most ``bound`` could reach the first ``places`` of ``paths``.

    ``paths`` are the other kinds' paths to one target, best first (served scores
    are rounded to 6 places, hence the margin).
    """
    return len(paths) < places or paths[places - 1]["score"] <= bound + 1e-6


def sentence(
    kind: str,
    nodes: Sequence[Mapping[str, Any]],
    rels: Sequence[Mapping[str, Any]],
    support: int,
    sentences: RelationSentences | None = None,
) -> str:
    """One human-readable sentence for a path (relation templates from ``sentences``, else bundled)."""
    templates = sentences or default_sentences()
    target = _name(nodes[-1])
    if kind in ("co_purchase", "related_item"):
        return templates.related_item(
            _relation(rels[1]), rels[1]["direction"], hub=_name(nodes[1]), target=target, verb=rels[0]["verb"]
        )
    if kind in ("shared_attribute", "same_brand"):
        return templates.shared_attribute(
            _relation(rels[1]),
            hub=_name(nodes[1]),
            target=target,
            verb=rels[0]["verb"],
            entity=_name(nodes[2]),
            kind=nodes[2].get("kind") or ("brand" if kind == "same_brand" else None),
        )
    if kind == "interest":
        if nodes[1]["label"] == "Topic":
            return f"You searched or wrote about {_name(nodes[1])}, and {target} is about it too."
        what = "brand" if nodes[1]["label"] == "Brand" else "category"
        return f"You are interested in the {what} {_name(nodes[1])}, and {target} belongs to it."
    if kind == "reviewed_topic":
        return (
            f"You reviewed {_name(nodes[1])}, which is about {_name(nodes[2])}, and {target} is about it too."
        )
    if kind == "co_user":
        # ``support`` counts customers with any interaction with both items: no one verb is true of all.
        who = "other customer who" if support == 1 else "other customers who"
        return (
            f"{support} {who} interacted with {_name(nodes[1])}, which you {rels[0]['verb']}, "
            f"also interacted with {target}."
        )
    raise ValueError(f"unknown path kind {kind!r}")


COUNT_CACHE_MIN = 100  # items: an entity with fewer is cheap to count on every request
COUNT_CACHE_SIZE = 2_000  # (entity, relation) pairs one process remembers (sent with each read)


class EntityCounts:
    """How many items each popular (entity, relation) links, remembered per active model version.

    Counting an entity's items walks every one of them, so the explanation read
    counts only the pairs it is not given (``$counted``). Counts under
    ``minimum`` are not remembered (they are cheap), the memory holds at most
    ``size`` pairs, and all are forgotten when the active model version changes:
    a remembered count is at most one model version old. The key is the
    *active* version, whichever version serves the request: a count is the
    graph's, not a model's, so an experiment's variants share one memory
    instead of emptying it each time the served version alternates.
    """

    def __init__(self, minimum: int = COUNT_CACHE_MIN, size: int = COUNT_CACHE_SIZE) -> None:
        self.minimum = minimum
        self.size = size
        self._lock = threading.Lock()
        self._version: str | None = None
        self._counts: dict[tuple[str, str], int] = {}

    def known(self, version: str) -> dict[tuple[str, str], int]:
        """A snapshot of the counts remembered under active ``version`` (forgetting another's)."""
        with self._lock:
            if version != self._version:
                self._version, self._counts = version, {}
            return dict(self._counts)

    def remember(self, version: str, entity_id: str, relation: str, count: int) -> None:
        """Keep ``count`` if it is large enough, room is left and ``version`` is still current."""
        if count < self.minimum:
            return
        with self._lock:
            if version == self._version and len(self._counts) < self.size:
                self._counts[(entity_id, relation)] = count


class PathScorer:
    """Scores and packages explanation rows for one user."""

    def __init__(
        self,
        model: Recommender,
        now_ms: float,
        half_life_ms: float,
        sentences: RelationSentences | None = None,
        counts: EntityCounts | None = None,
        known: Mapping[tuple[str, str], int] | None = None,
        facts: ItemFacts | None = None,
        active_version: str | None = None,
    ) -> None:
        """``counts`` remembers the entity counts the read returns, under ``active_version`` (by
        default ``model``'s); ``known`` holds those it skipped; ``facts`` are the item facts brand
        and category specificity is counted in: the catalogue's current ones for ``model``
        (:meth:`kgrec.catalogue.CatalogueSnapshot.facts`), by default the model's own."""
        self.model = model
        self.facts = model.facts if facts is None else facts
        self.now_ms = now_ms
        self.half_life_ms = half_life_ms
        self.sentences = sentences or default_sentences()
        self.counts = counts
        self.known = known or {}
        self.active_version = active_version or model.artifacts.version

    def _specificity(self, label: str, node_id: str) -> float:
        facts = self.facts
        # Topic memberships are not among the model's item facts: a topic counts as middling specific.
        if facts.n_items == 0 or label == "Topic":
            return _TOPIC_SPECIFICITY
        rows = facts.brand_rows(node_id) if label == "Brand" else facts.category_rows(node_id)
        return 1.0 - math.sqrt(len(rows) / facts.n_items)

    def _linked(self, entity: Mapping[str, Any], relation: str) -> int | None:
        """How many items ``relation`` links to the entity: from the read, else remembered."""
        linked = entity.get("linked")
        if linked is None:
            return self.known.get((str(entity["id"]), relation))
        if self.counts is not None:
            self.counts.remember(self.active_version, str(entity["id"]), relation, int(linked))
        return int(linked)

    def _entity_specificity(self, linked: int | None) -> float:
        # ``linked`` counts graph items, which may include items the model has not seen yet.
        n_items = self.model.n_items
        if n_items == 0 or linked is None:
            return 0.5
        return 1.0 - math.sqrt(min(1.0, float(linked) / n_items))

    def _cosine(self, a: str, b: str) -> float:
        index = self.model.item_index
        if a not in index or b not in index:
            return 0.0
        return float(np.dot(self.model.embeddings[index[a]], self.model.embeddings[index[b]]))

    def _prior(
        self, kind: str, nodes: Sequence[Mapping[str, Any]], rels: Sequence[Mapping[str, Any]], support: int
    ) -> float:
        if kind in ("co_purchase", "related_item"):
            prior = _CO_PURCHASE_PRIOR.get(rels[1]["type"], _OTHER_RELATION_PRIOR)
            return prior if rels[1]["direction"] == "out" else prior * _REVERSED
        if kind == "same_brand":
            return _SAME_BRAND_PRIOR
        if kind == "shared_attribute":
            linked = self._linked(nodes[2], _relation(rels[1]))
            return _SHARED_ATTRIBUTE_PRIOR * self._entity_specificity(linked)
        if kind == "co_user":
            return _CO_USER_PRIOR * min(1.0, support / 3)
        if kind == "reviewed_topic":
            return _INTEREST_PRIOR["Topic"] * _TOPIC_SPECIFICITY
        label = nodes[1]["label"]
        return _INTEREST_PRIOR[label] * self._specificity(label, str(nodes[1]["id"]))

    def _score(self, row: Mapping[str, Any]) -> float:
        kind, nodes, rels = row["kind"], row["nodes"], row["rels"]
        first = decayed(rels[0]["weight"], rels[0]["weight_ts"], self.now_ms, self.half_life_ms)
        relative = 1.0 - math.exp(-first / _REFERENCE_WEIGHT)
        cosine = (
            self._cosine(str(nodes[1]["id"]), str(nodes[-1]["id"])) if nodes[1]["label"] == "Item" else 0.0
        )
        prior = self._prior(kind, nodes, rels, int(row["support"]))
        return round(prior * relative + _EMBEDDING_WEIGHT * max(cosine, 0.0), 6)

    def _path(self, row: Mapping[str, Any], score: float) -> dict[str, Any]:
        kind, nodes, rels, support = row["kind"], row["nodes"], row["rels"], int(row["support"])
        return {
            "kind": kind,
            "score": score,
            "sentence": sentence(kind, nodes, rels, support, self.sentences),
            "nodes": [_served_node(n) for n in nodes],
            "relationships": [
                {
                    "type": r["type"],
                    **({"relation": r["relation"]} if r.get("relation") is not None else {}),
                    "direction": r["direction"],
                    "weight": None
                    if r["weight"] is None
                    else shown_weight(decayed(r["weight"], r["weight_ts"], self.now_ms, self.half_life_ms)),
                }
                for r in rels
            ],
            "support": support,
            "cypher": path_cypher(nodes, rels),
        }

    def paths(
        self,
        rows: Sequence[Mapping[str, Any]],
        into: dict[str, list[dict[str, Any]]] | None = None,
        places: int | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """The paths, best first, grouped by target item id (merged into ``into``'s paths when given).

        With ``places``, only each target's first ``places`` paths are kept, and only
        those (and any tied with the last) are described: a sentence and a Browser
        query cost far more than a score, and a user's item often has dozens of
        paths. Ties are ordered by the Browser query, so the kept paths are the
        first ``places`` of the whole list. A row the graph returns but no
        Browser query can describe (a label or relation outside the model,
        written around the importer) is left out.
        """
        grouped: dict[str, list[dict[str, Any]]] = {} if into is None else into
        scored: dict[str, list[tuple[float, Mapping[str, Any]]]] = {}
        for row in rows:
            scored.setdefault(row["target_id"], []).append((self._score(row), row))
        for target, candidates in scored.items():
            paths = grouped.setdefault(target, [])
            candidates.sort(key=lambda c: -c[0])
            for score, row in candidates:
                if places is not None and score < _last_place(paths, places):
                    break  # the rest score lower than the places already filled
                try:
                    paths.append(self._path(row, score))
                except ValueError as error:
                    log.warning("explanation path left out (%s): %s", row.get("kind"), error)
            paths.sort(key=lambda p: (-p["score"], p["cypher"]))
            del paths[places if places is not None else len(paths) :]
        return grouped


def _last_place(paths: Sequence[Mapping[str, Any]], places: int) -> float:
    """The score of the ``places``-th best path (minus infinity while fewer are there)."""
    if len(paths) < places:
        return -math.inf
    return sorted((p["score"] for p in paths), reverse=True)[places - 1]


def _served_node(node: Mapping[str, Any]) -> dict[str, Any]:
    if node.get("anonymous"):
        return {"label": node["label"], "id": None, "name": None, "anonymous": True}
    served = {"label": node["label"], "id": node["id"], "name": node["name"]}
    if node["label"] == "Entity":
        served["kind"] = node.get("kind")
    return served
