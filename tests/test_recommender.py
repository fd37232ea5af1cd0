"""The serving scorer on small hand-made matrices."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from kgrec.explanations import co_purchase_pairs
from kgrec.recommender import HistoryEntry, ModelArtifacts, Recommender
from kgrec.signals import COOCCURRENCE


def tiny_model(decay: float = 0.5) -> Recommender:
    # items a, b, c, d: a -> b and c -> d are the only links
    links = sp.csr_matrix(
        np.array([[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=np.float32)
    )
    return Recommender(
        ModelArtifacts(
            version="tiny",
            item_ids=["a", "b", "c", "d"],
            item_embeddings=np.zeros((4, 2), dtype=np.float32),
            components={COOCCURRENCE: links},
            weights={COOCCURRENCE: 1.0},
            recency_decay=decay,
            popularity=np.array([1.0, 1.0, 1.0, 50.0], dtype=np.float32),
        )
    )


def test_recent_history_outweighs_old_history() -> None:
    model = tiny_model()
    history = [HistoryEntry("a", 1.0, order=2), HistoryEntry("c", 1.0, order=1)]  # a is the latest
    ranked = model.recommend([history], k=2, exclude=[["a", "c"]])[0]
    assert [item for item, _ in ranked] == ["b", "d"]


def test_years_old_history_is_not_lost_to_underflow() -> None:
    """Weights decayed over years (2^-300) still rank by the user's own items, not by popularity."""
    model = tiny_model()
    history = [HistoryEntry("a", 2.0**-300, order=2), HistoryEntry("c", 2.0**-320, order=1)]
    ranked = model.recommend([history], k=1, exclude=[["a", "c"]])[0]
    assert ranked[0][0] == "b"  # popularity alone would pick d


def test_unknown_user_gets_popularity() -> None:
    ranked = tiny_model().recommend([[]], k=2)[0]
    assert ranked[0][0] == "d"


def test_co_purchase_pairs_follow_the_models_directed_links() -> None:
    """Hub → target and target → hub pairs come from the registry's co-purchase signals only."""
    # a -ALSO_BOUGHT-> b, c -BOUGHT_TOGETHER-> a; co-occurrence (not a co-purchase signal) joins a and d
    also_bought = sp.csr_matrix(([1.0], ([0], [1])), shape=(4, 4), dtype=np.float32)
    together = sp.csr_matrix(([1.0], ([2], [0])), shape=(4, 4), dtype=np.float32)
    base = tiny_model()
    model = Recommender(
        ModelArtifacts(
            **{
                **base.artifacts.__dict__,
                "components": {
                    COOCCURRENCE: sp.csr_matrix(([1.0], ([0], [3])), shape=(4, 4), dtype=np.float32),
                    "also_bought_directed": also_bought,
                    "bought_together_directed": together,
                },
                "weights": {COOCCURRENCE: 1.0, "also_bought_directed": 0.0, "bought_together_directed": 0.0},
            }
        )
    )
    forward, backward = co_purchase_pairs(model, ["a"], ["b", "c", "d", "a", "unknown"])
    assert forward == [{"hub": "a", "target": "b"}]
    assert backward == [{"hub": "a", "target": "c"}]
    folded = model.with_items(
        ["e"], np.ones((1, 2), dtype=np.float32), model.facts.extended([None], [[]], [None])
    )
    assert co_purchase_pairs(folded, ["a", "e"], ["e", "b"]) == ([{"hub": "a", "target": "b"}], [])
