"""Explanation paths: score, describe and package the meta-paths the graph returns.

A path's score combines three things, so that strong, specific, recent
evidence comes first:

    score = prior(kind, relation, specificity) × strength + 0.25 × max(0, cos(hub, target))

- ``strength``: how strong the path's first edge (the user's own interaction
  or interest) is now, ``1 − exp(−decayed weight / 5)``: a purchase made
  today (weight 5) gives 0.63, several give nearly 1, and evidence that
  decayed away gives nearly 0. It depends on nothing but the edge, so a path
  scores the same whichever other items are explained with it;
- ``prior``: bought_together 1.0, also_bought 0.8, also_viewed 0.5 (×0.8 when
  the co-purchase link points from the target to the user's item), same brand
  0.5, co-users 0.4 × min(1, support / 3), an interest 0.4 (brand) or 0.3
  (category) × specificity, where specificity = 1 − sqrt(share of items under
  it), so "Beauty", which holds every item, explains nothing;
- the cosine between the model's embeddings of the user's item and the target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from graph_schema.path_query import path_cypher
from kgrec.decay import decayed
from kgrec.recommender import Recommender

_CO_PURCHASE_PRIOR = {"BOUGHT_TOGETHER": 1.0, "ALSO_BOUGHT": 0.8, "ALSO_VIEWED": 0.5}
_OTHER_RELATION_PRIOR = 0.5  # a knowledge relation added to the allow-list without its own prior
_REVERSED = 0.8
_SAME_BRAND_PRIOR = 0.5
_CO_USER_PRIOR = 0.4
_INTEREST_PRIOR = {"Brand": 0.4, "Category": 0.3}
_EMBEDDING_WEIGHT = 0.25
_REFERENCE_WEIGHT = 5.0  # one purchase today, with the default behaviour weights


def _name(node: Mapping[str, Any]) -> str:
    return str(node["name"] or node["id"])


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


def sentence(
    kind: str, nodes: Sequence[Mapping[str, Any]], rels: Sequence[Mapping[str, Any]], support: int
) -> str:
    """One human-readable sentence for a path."""
    target = _name(nodes[-1])
    if kind == "co_purchase":
        hub, verb, link, direction = _name(nodes[1]), rels[0]["verb"], rels[1]["type"], rels[1]["direction"]
        if link == "BOUGHT_TOGETHER":
            return f"{target} is often bought together with {hub}, which you {verb}."
        action = "viewed" if link == "ALSO_VIEWED" else "bought"
        if direction == "out":
            return f"You {verb} {hub}; customers who {action} it also {action} {target}."
        return f"Customers who {action} {target} also {action} {hub}, which you {verb}."
    if kind == "same_brand":
        return f"{target} is made by {_name(nodes[2])}, like {_name(nodes[1])}, which you {rels[0]['verb']}."
    if kind == "interest":
        what = "brand" if nodes[1]["label"] == "Brand" else "category"
        return f"You are interested in the {what} {_name(nodes[1])}, and {target} belongs to it."
    if kind == "co_user":
        others = "customer" if support == 1 else "customers"
        return (
            f"{support} other {others} who also {rels[1]['verb']} {_name(nodes[1])} "
            f"(which you {rels[0]['verb']}) {rels[2]['verb']} {target}."
        )
    raise ValueError(f"unknown path kind {kind!r}")


class PathScorer:
    """Scores and packages explanation rows for one user."""

    def __init__(self, model: Recommender, now_ms: float, half_life_ms: float) -> None:
        self.model = model
        self.now_ms = now_ms
        self.half_life_ms = half_life_ms

    def _specificity(self, label: str, node_id: str) -> float:
        facts = self.model.facts
        if facts.n_items == 0:
            return 0.5
        mask = facts.brand_mask(node_id) if label == "Brand" else facts.category_mask(node_id)
        return 1.0 - math.sqrt(float(mask.sum()) / facts.n_items)

    def _cosine(self, a: str, b: str) -> float:
        index = self.model.item_index
        if a not in index or b not in index:
            return 0.0
        return float(np.dot(self.model.embeddings[index[a]], self.model.embeddings[index[b]]))

    def _prior(
        self, kind: str, nodes: Sequence[Mapping[str, Any]], rels: Sequence[Mapping[str, Any]], support: int
    ) -> float:
        if kind == "co_purchase":
            prior = _CO_PURCHASE_PRIOR.get(rels[1]["type"], _OTHER_RELATION_PRIOR)
            return prior if rels[1]["direction"] == "out" else prior * _REVERSED
        if kind == "same_brand":
            return _SAME_BRAND_PRIOR
        if kind == "co_user":
            return _CO_USER_PRIOR * min(1.0, support / 3)
        label = nodes[1]["label"]
        return _INTEREST_PRIOR[label] * self._specificity(label, str(nodes[1]["id"]))

    def paths(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        """Every path, best first, grouped by target item id."""
        grouped: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            kind, nodes, rels, support = row["kind"], row["nodes"], row["rels"], int(row["support"])
            first = decayed(rels[0]["weight"], rels[0]["weight_ts"], self.now_ms, self.half_life_ms)
            relative = 1.0 - math.exp(-first / _REFERENCE_WEIGHT)
            cosine = (
                self._cosine(str(nodes[1]["id"]), str(nodes[-1]["id"]))
                if nodes[1]["label"] == "Item"
                else 0.0
            )
            score = self._prior(kind, nodes, rels, support) * relative + _EMBEDDING_WEIGHT * max(cosine, 0.0)
            grouped.setdefault(row["target_id"], []).append(
                {
                    "kind": kind,
                    "score": round(score, 6),
                    "sentence": sentence(kind, nodes, rels, support),
                    "nodes": [{"label": n["label"], "id": n["id"], "name": n["name"]} for n in nodes],
                    "relationships": [
                        {
                            "type": r["type"],
                            "direction": r["direction"],
                            "weight": None
                            if r["weight"] is None
                            else round(
                                decayed(r["weight"], r["weight_ts"], self.now_ms, self.half_life_ms), 6
                            ),
                        }
                        for r in rels
                    ],
                    "support": support,
                    "cypher": path_cypher(nodes, rels),
                }
            )
        for paths in grouped.values():
            paths.sort(key=lambda p: (-p["score"], p["cypher"]))
        return grouped
