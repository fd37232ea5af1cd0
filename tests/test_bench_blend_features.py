"""bench/blend_features.py: the blends it compares, and the served form of the popularity-damped one."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import bench.blend_features as bench_module
from bench.blend_features import (
    EMBEDDING_TAIL,
    METRICS,
    blend_features,
    comparisons,
    damping,
    out_of_fold,
    paired,
    served,
    tail_feature,
)
from kgrec.recommender import EMBEDDING, HistoryEntry, ModelArtifacts, Recommender
from kgrec.signals import COOCCURRENCE, SHARED_ENTITIES, TOPIC_INTERESTS
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


def test_a_paired_difference_is_the_reference_minus_the_other() -> None:
    rng = np.random.default_rng(0)
    base = {metric: rng.random(300) for metric in METRICS}
    better = {metric: values + 0.05 for metric, values in base.items()}
    result = paired({"a": better, "b": base}, "a", "b")
    for metric in METRICS:
        assert result[metric]["diff"] == pytest.approx(0.05)
        assert result[metric]["ci"][0] == pytest.approx(0.05) and result[metric]["p"] == 0.0


def test_out_of_fold_scores_each_user_by_the_other_folds_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even users' history item links to their target; odd users' targets sit below 80 more
    popular items. Each user's out-of-fold Recall@20 lands at their own position, and every user
    is scored once, by the fold they were not fitted on."""
    n_items, n_users = 100, 20
    targets = {u: 80 + u for u in range(n_users)}
    links = sp.csr_matrix(
        (np.ones(n_users // 2, dtype=np.float32), (np.arange(0, n_users, 2), np.arange(80, 80 + n_users, 2))),
        shape=(n_items, n_items),
    )
    model = ModelArtifacts(
        version="toy",
        item_ids=[f"i{k}" for k in range(n_items)],
        item_embeddings=np.zeros((n_items, 4), dtype=np.float32),
        components={COOCCURRENCE: links},
        weights={COOCCURRENCE: 0.0},
        recency_decay=1.0,
        popularity=np.r_[np.arange(80, 0, -1), np.zeros(20)].astype(np.float32),
    )
    histories = [[HistoryEntry(f"i{u}", 1.0, order=0)] for u in range(n_users)]
    fitted: list[set[int]] = []
    scored: list[set[int]] = []
    fit_blend, recommender = blend_fit.fit_blend, bench_module.Recommender

    def spy_fit(artifacts, names, all_histories, fold_targets, **kwargs):  # type: ignore[no-untyped-def]
        fitted.append(set(fold_targets))
        return fit_blend(artifacts, names, all_histories, fold_targets, **kwargs)

    class SpyRecommender(recommender):  # type: ignore[misc,valid-type]
        def recommend(self, part, k, exclude=None, allowed=None):  # type: ignore[no-untyped-def]
            scored.append({int(history[0].item_id[1:]) for history in part})
            return super().recommend(part, k, exclude, allowed)

    monkeypatch.setattr(blend_fit, "fit_blend", spy_fit)
    monkeypatch.setattr(bench_module, "Recommender", SpyRecommender)
    per_user, fits = out_of_fold(model, [COOCCURRENCE], histories, targets, (1.0,), seed=5)
    np.testing.assert_array_equal(per_user["recall@20"], np.arange(n_users) % 2 == 0)
    assert len(fits) == 2 and fitted[0].isdisjoint(fitted[1]) and fitted[0] | fitted[1] == set(targets)
    assert scored == [fitted[1], fitted[0]]


def test_a_fit_procedure_patches_the_fit_only_while_it_runs() -> None:
    """``fit@50`` counts a target behind 30 candidates; ``served`` and the end of the block do not."""
    behind_30 = np.array([30])
    assert blend_fit._gain_at(behind_30)[0] == 0.0
    with bench_module.fit_procedure("served"):
        assert blend_fit._gain_at(behind_30)[0] == 0.0
    with bench_module.fit_procedure("fit@50"):
        assert blend_fit._gain_at(behind_30)[0] == pytest.approx(1 / np.log2(32))
    assert blend_fit._gain_at(behind_30)[0] == 0.0
    with pytest.raises(RuntimeError), bench_module.fit_procedure("fit@50"):
        raise RuntimeError("a fit that fails")
    assert blend_fit.CUTOFF == 10
    # the ascent's trials score as the blend itself does at the patched cutoff
    features = planted(second_helps=True)
    with bench_module.fit_procedure("fit@50"):
        trials = blend_fit._ndcg_varying(features, np.array([1.0, 0.0]), 1, [0.0, 0.5, 2.0])
        alone = [blend_fit._ndcg(features, np.array([1.0, w])) for w in (0.0, 0.5, 2.0)]
        np.testing.assert_allclose(trials, alone)
    assert alone[0] > blend_fit._ndcg(features, np.array([1.0, 0.0]))  # NDCG@50 counts more targets
    fit_at_decay = blend_fit._fit_at_decay
    with bench_module.fit_procedure("bagged"):
        assert blend_fit._fit_at_decay is not fit_at_decay
    assert blend_fit._fit_at_decay is fit_at_decay
    assert blend_features(["ease"], "fit@50") == blend_features(["ease"], "bagged") == ["ease"]


def test_bagged_weights_are_the_rescaled_mean_of_ascents_on_bootstrap_resamples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each resample's ascent (here: weight 1 on feature 0, and on feature 1 the share of resampled
    users whose target is candidate 0) is made to sum to 1, and the mean is rescaled to a largest
    weight of 1; the same resamples at every call."""
    n_users = 50
    rng = np.random.default_rng(1)
    features = blend_fit._Features(
        scaled=rng.random((n_users, 4, 2)).astype(np.float32),
        prior=np.zeros((n_users, 4), dtype=np.float32),
        target=np.arange(n_users) % 3 - 1,  # -1: not a candidate
        scale=np.ones(2, dtype=np.float32),
    )
    resamples: list[np.ndarray] = []

    def ascend(sample, names, anchor, held=frozenset()):  # type: ignore[no-untyped-def]
        resamples.append(sample.target)
        return np.array([1.0, float(np.mean(sample.target == 0))]), 0.0

    monkeypatch.setattr(blend_fit, "_ascend", ascend)
    weights = bench_module.bagged_weights(features, ["a", "b"], frozenset())
    assert len(resamples) == bench_module.BAGS
    assert all(sample.size == n_users and set(sample) <= set(features.target) for sample in resamples)
    assert any(not np.array_equal(np.sort(sample), np.sort(features.target)) for sample in resamples)
    mean = np.mean([[1.0, s] / (1.0 + s) for s in (np.mean(t == 0) for t in resamples)], axis=0)
    np.testing.assert_allclose(weights, mean / mean.max())
    again = bench_module.bagged_weights(features, ["a", "b"], frozenset())
    first, second = resamples[: bench_module.BAGS], resamples[bench_module.BAGS :]
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    np.testing.assert_array_equal(weights, again)


def planted(second_helps: bool, noise_features: int = 1) -> blend_fit._Features:
    """300 users, 20 candidates: feature 0 lifts each user's target; feature 1 lifts it too, by
    independent noise (``second_helps``), or is noise alone; ``noise_features`` - 1 more features
    of noise alone follow."""
    n_users, width = 300, 20
    rng = np.random.default_rng(4)
    target = rng.integers(0, width, n_users)
    hit = (np.arange(width)[None, :] == target[:, None]).astype(np.float32)
    first = rng.random((n_users, width)) + 0.6 * hit
    second = rng.random((n_users, width)) + (0.6 * hit if second_helps else 0.0)
    more = [rng.random((n_users, width)) for _ in range(noise_features - 1)]
    return blend_fit._Features(
        scaled=np.stack([first, second, *more], axis=2).astype(np.float32),
        prior=np.zeros((n_users, width), dtype=np.float32),
        target=target,
        scale=np.ones(2 + len(more), dtype=np.float32),
    )


@pytest.mark.parametrize("second_helps", [True, False])
def test_the_bagged_blend_keeps_a_signal_that_needs_evidence_only_on_a_paired_gain(
    second_helps: bool,
) -> None:
    names = [COOCCURRENCE, TOPIC_INTERESTS]
    features = planted(second_helps)
    weights, score, evidence = bench_module.bagged_fit_at_decay(features, names, {})
    assert score == blend_fit._ndcg(features, weights)
    if second_helps:
        assert weights[1] > 0.0 and evidence[TOPIC_INTERESTS] < blend_fit.EVIDENCE_P
        np.testing.assert_array_equal(weights, bench_module.bagged_weights(features, names, frozenset()))
    else:
        # the resampled ascents gave the noise a weight; the paired test on the users themselves drops it
        assert bench_module.bagged_weights(features, names, frozenset())[1] > 0.0
        assert evidence[TOPIC_INTERESTS] >= blend_fit.EVIDENCE_P
        np.testing.assert_array_equal(weights, bench_module.bagged_weights(features, names, frozenset({1})))
        assert weights[1] == 0.0


def test_a_second_signal_that_needs_evidence_is_refitted_with_the_first_still_held() -> None:
    """Two noise signals that must earn their place: each is dropped, and the second's refit keeps
    the first at 0, as fit_blend's rule does."""
    names = [COOCCURRENCE, TOPIC_INTERESTS, SHARED_ENTITIES]
    features = planted(second_helps=False, noise_features=2)
    weights, _, evidence = bench_module.bagged_fit_at_decay(features, names, {})
    assert set(evidence) == {TOPIC_INTERESTS, SHARED_ENTITIES}
    assert all(p >= blend_fit.EVIDENCE_P for p in evidence.values())
    np.testing.assert_array_equal(weights, bench_module.bagged_weights(features, names, frozenset({1, 2})))
    assert weights[1] == weights[2] == 0.0
