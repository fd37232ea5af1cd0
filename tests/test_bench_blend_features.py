"""bench/blend_features.py: the blends it compares, and the served form of the popularity-damped one."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from bench.blend_features import (
    EMBEDDING_TAIL,
    METRICS,
    blend_features,
    comparisons,
    damping,
    paired,
    served,
    tail_feature,
)
from kgrec.recommender import EMBEDDING, HistoryEntry, ModelArtifacts, Recommender
from kgrec.signals import COOCCURRENCE
from workers.training import blend_fit

N_ITEMS = 40


def artifacts(context: bool) -> ModelArtifacts:
    rng = np.random.default_rng(3)
    links = sp.random(N_ITEMS, N_ITEMS, density=0.2, random_state=4, format="csr", dtype=np.float32)
    return ModelArtifacts(
        version="toy",
        item_ids=[f"i{k}" for k in range(N_ITEMS)],
        item_embeddings=rng.normal(size=(N_ITEMS, 8)).astype(np.float32),
        components={COOCCURRENCE: links},
        weights={COOCCURRENCE: 0.0},
        recency_decay=1.0,
        popularity=rng.integers(0, 200, N_ITEMS).astype(np.float32),
        item_context_embeddings=rng.normal(size=(N_ITEMS, 8)).astype(np.float32) if context else None,
    )


@pytest.mark.parametrize("context", [True, False])
def test_served_blend_scores_what_the_fit_weighed(context: bool) -> None:
    """w·embedding + w_tail·(damped embedding) + the signals, as the fit's features sum them."""
    model = artifacts(context)
    weights = {COOCCURRENCE: 0.7, EMBEDDING: 0.3, EMBEDDING_TAIL: 2.0}
    recommender = Recommender(served(model, weights, 0.8))
    histories = [
        [HistoryEntry(f"i{k}", 1.0, order=n) for n, k in enumerate(row)] for row in ([1, 5, 9], [2, 30])
    ]
    profiles = recommender.profiles(histories)
    last = recommender.profiles(histories, last_only=True)
    with tail_feature():
        expected = sum(
            weight * blend_fit._dense(profiles, last, model, name) for name, weight in weights.items()
        )
    expected += recommender.prior
    np.testing.assert_allclose(recommender.score(profiles, last), expected, rtol=1e-5, atol=1e-5)


def test_damping_falls_with_popularity() -> None:
    g = damping(np.array([0.0, 3.0, 99.0], dtype=np.float32))
    np.testing.assert_allclose(g, [1.0, 0.5, 0.1], rtol=1e-6)


def test_blends_add_or_leave_out_one_feature() -> None:
    names = [COOCCURRENCE, "ease", EMBEDDING]
    assert blend_features(names, "served") == names
    assert blend_features(names, "+popularity-damped") == [*names, EMBEDDING_TAIL]
    assert blend_features(names, "-ease") == [COOCCURRENCE, EMBEDDING]
    with pytest.raises(ValueError, match="'-transitions'"):
        blend_features(names, "-transitions")


def test_each_blend_is_paired_with_the_first_and_each_variant_with_the_first() -> None:
    assert comparisons(["knowledge", "no-knowledge"], ["served", "+popularity-damped"]) == [
        ("knowledge, +popularity-damped", "knowledge, served"),
        ("no-knowledge, +popularity-damped", "no-knowledge, served"),
        ("knowledge, served", "no-knowledge, served"),
        ("knowledge, +popularity-damped", "no-knowledge, +popularity-damped"),
    ]
    assert comparisons(["knowledge"], ["served"]) == []


def test_a_paired_comparison_is_over_the_same_users() -> None:
    rng = np.random.default_rng(0)
    base = {metric: rng.random(300) for metric in METRICS}
    better = {metric: values + 0.05 for metric, values in base.items()}
    result = paired({"a": better, "b": base}, "a", "b")
    for metric in METRICS:
        assert result[metric]["diff"] == pytest.approx(0.05)
        assert result[metric]["ci"][0] == pytest.approx(0.05) and result[metric]["p"] == 0.0
