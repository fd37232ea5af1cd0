"""The training graph: users, items and their links as arrays over dense indices.

``workers.training.subgraph.pull`` reads it from the graph; training, the model
signals (:mod:`kgrec.signals`) and the evaluation's baselines read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kgrec.item_facts import ItemFacts


@dataclass
class TrainingGraph:
    """Everything training needs, as arrays over dense user/item indices."""

    user_ids: list[str]
    item_ids: list[str]
    # one row per INTERACTED edge
    inter_user: np.ndarray
    inter_item: np.ndarray
    inter_weight: np.ndarray  # decayed to the pull time
    inter_order: np.ndarray  # position key within the user's history (larger = more recent)
    brand_ids: list[str] = field(default_factory=list)
    item_brand: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # -1: none
    category_ids: list[str] = field(default_factory=list)
    item_category_pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    knowledge: dict[str, np.ndarray] = field(default_factory=dict)  # relation -> (n, 2) head, tail
    # The open knowledge graph, every relation (the item–item ones above included, brands and
    # categories not): nodes are items [0, n_items) then entities [n_items, n_items + n_entities).
    entity_ids: list[str] = field(default_factory=list)
    entity_kinds: list[str | None] = field(default_factory=list)  # parallel to entity_ids
    relation_names: list[str] = field(default_factory=list)  # the exact names (relation property)
    kg_triples: np.ndarray = field(
        default_factory=lambda: np.zeros((0, 3), dtype=np.int64)
    )  # head, rel, tail
    item_text: list[str] = field(default_factory=list)
    # Each item's description ("" when none): topic text only, never the training text above
    item_description: list[str] = field(default_factory=list)
    facts: ItemFacts | None = None  # brand, categories (with the tree) and price, for serving filters
    # Each item's topic (index, -1: none) and ABOUT score, set by training once topics are mined
    # (kgrec.topic_signal.with_topics); None: no topics.
    item_topic: np.ndarray | None = None
    item_topic_score: np.ndarray | None = None
    # When the graph was pulled (epoch ms; None: not pulled from a graph): a trained version's
    # data_until, from which the first incremental update after it reads what changed.
    pulled_at: int | None = None

    @property
    def n_users(self) -> int:
        """Number of users."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Number of items."""
        return len(self.item_ids)

    @property
    def n_entities(self) -> int:
        """Number of knowledge-graph entities that are not items (brands and categories excluded)."""
        return len(self.entity_ids)

    def counts(self) -> dict[str, int]:
        """Sizes, recorded on the model version."""
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": int(self.inter_user.size),
            "brands": len(self.brand_ids),
            "categories": len(self.category_ids),
            "entities": len(self.entity_ids),
            "relations": len(self.relation_names),
            "kg_triples": int(self.kg_triples.shape[0]),
            **{f"{rel}_edges": int(edges.shape[0]) for rel, edges in self.knowledge.items()},
        }
