"""The last-item transitions signal: what follows the user's most recent item, apart from the profile."""

from __future__ import annotations

import numpy as np
import pytest

from kgrec.item_graphs import successors, transitions
from kgrec.recommender import EMBEDDING, HistoryEntry, ModelArtifacts, Recommender
from kgrec.signals import LAST_ITEM_TRANSITIONS, build_signals, last_item_names, signal
from kgrec.training_graph import TrainingGraph

ITEMS = ["a", "b", "c", "d", "e"]


def sequences() -> TrainingGraph:
    """u0: a → b → c; u1: a → b → d; u2: c → e (orders 1, 2, 3)."""
    users = [0, 0, 0, 1, 1, 1, 2, 2]
    items = [0, 1, 2, 0, 1, 3, 2, 4]
    order = [1, 2, 3, 1, 2, 3, 1, 2]
    return TrainingGraph(
        user_ids=["u0", "u1", "u2"],
        item_ids=ITEMS,
        inter_user=np.array(users),
        inter_item=np.array(items),
        inter_weight=np.ones(len(users)),
        inter_order=np.array(order),
    )


def test_successors_count_only_the_next_item_after_each_item() -> None:
    matrix = successors(sequences()).toarray()
    # a → b twice: 2 / (2 + 1); b → c and b → d once each: 1 / (2 + 1); c → e once: 1 / (1 + 1)
    expected = np.zeros((5, 5), dtype=np.float32)
    expected[0, 1] = 2 / 3
    expected[1, 2] = expected[1, 3] = 1 / 3
    expected[2, 4] = 1 / 2
    np.testing.assert_allclose(matrix, expected, rtol=1e-6)
    # unlike the transitions signal, nothing flows backwards (b → a)
    assert transitions(sequences())[1, 0] > 0 and matrix[1, 0] == 0


def model(weights: dict[str, float], decay: float = 0.5) -> Recommender:
    graph = sequences()
    components = build_signals(graph, use_knowledge=False)
    return Recommender(
        ModelArtifacts(
            version="v-last",
            item_ids=ITEMS,
            item_embeddings=np.zeros((5, 2), dtype=np.float32),
            components=components,
            weights={**dict.fromkeys(components, 0.0), EMBEDDING: 0.0, **weights},
            recency_decay=decay,
            popularity=np.ones(5, dtype=np.float32),
        )
    )


def test_the_last_item_signal_scores_from_the_most_recent_item_alone() -> None:
    assert LAST_ITEM_TRANSITIONS in last_item_names() and signal(LAST_ITEM_TRANSITIONS).uses_order
    assert LAST_ITEM_TRANSITIONS not in build_signals(sequences(), use_knowledge=False, use_order=False)
    # history: c (older), then a (most recent); listed out of order on purpose
    history = [[HistoryEntry("a", 1.0, 5), HistoryEntry("c", 1.0, 4)]]
    last = model({LAST_ITEM_TRANSITIONS: 1.0})
    scores = last.score(last.profiles(history), last.profiles(history, last_only=True))[0]
    # a's successor b scores; c's successor e does not (c is not the latest item)
    assert scores[1] == pytest.approx(2 / 3, abs=1e-5)
    assert scores[4] < 1e-5
    # the profile-wide transitions signal does reach e, through the older c
    profile = model({"transitions": 1.0})
    assert profile.score(profile.profiles(history))[0][4] > 1e-3
    ranked = last.recommend(history, 2, exclude=[["a", "c"]])
    assert ranked[0][0][0] == "b"


def test_a_model_weighing_a_last_item_signal_needs_the_last_item_profile() -> None:
    last = model({LAST_ITEM_TRANSITIONS: 1.0})
    history = [[HistoryEntry("b", 1.0, 1)]]
    with pytest.raises(ValueError, match="last-item"):
        last.score(last.profiles(history))
    # without a weight on it, nothing changes and no last-item profile is needed
    plain = model({"transitions": 1.0})
    assert plain.last_blend is None
    plain.score(plain.profiles(history))
