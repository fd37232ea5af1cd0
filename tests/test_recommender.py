"""The serving scorer on small hand-made matrices."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from kgrec.recommender import HistoryEntry, ModelArtifacts, Recommender


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
            components={"links": links},
            weights={"links": 1.0},
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
