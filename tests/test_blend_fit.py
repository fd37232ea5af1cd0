"""The blend is fitted on the validation hold-out only: test items never reach it."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from kgrec.item_graphs import cooccurrence_cosine
from kgrec.recommender import EMBEDDING, ModelArtifacts
from kgrec.signals import TOPIC_INTERESTS
from kgrec.training_graph import TrainingGraph
from workers.training import blend_fit
from workers.training.blend_fit import EVIDENCE_P, GRID, _Features, _ndcg, _ndcg_varying, fit_blend
from workers.training.holdout import hold_out_latest
from workers.training.pipeline import user_histories

N_USERS, N_ITEMS, LENGTH = 400, 60, 6


def toy() -> tuple[TrainingGraph, dict[int, int]]:
    """Random histories; each user's validation item is their latest one (< 50), their test item
    (not in the graph, as after the evaluation's split) one of items 50..59."""
    rng = np.random.default_rng(0)
    train = []
    test = {}
    for u in range(N_USERS):
        test[u] = int(rng.integers(50, N_ITEMS))
        earlier = rng.choice(np.setdiff1d(np.arange(N_ITEMS), [test[u]]), LENGTH - 2, replace=False)
        latest = rng.choice(np.setdiff1d(np.arange(50), earlier))
        train.append(np.r_[earlier, latest])
    users = np.repeat(np.arange(N_USERS), LENGTH - 1)
    graph = TrainingGraph(
        user_ids=[f"u{u}" for u in range(N_USERS)],
        item_ids=[f"i{i}" for i in range(N_ITEMS)],
        inter_user=users,
        inter_item=np.concatenate(train),
        inter_weight=np.ones(users.size),
        inter_order=np.tile(np.arange(LENGTH - 1), N_USERS),
    )
    return graph, test


def pointing(fit: TrainingGraph, destination: dict[int, int]) -> sp.csr_matrix:
    """An item–item signal from each user's fit items to ``destination[user]``."""
    rows, cols = [], []
    for u, i in zip(fit.inter_user, fit.inter_item, strict=True):
        rows.append(int(i))
        cols.append(destination[int(u)])
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(N_ITEMS, N_ITEMS))
    return matrix.multiply(1.0 / np.maximum(matrix.sum(axis=1), 1.0)).tocsr().astype(np.float32)


def artifacts(fit: TrainingGraph, components: dict[str, sp.csr_matrix]) -> ModelArtifacts:
    rng = np.random.default_rng(1)
    return ModelArtifacts(
        version="toy",
        item_ids=fit.item_ids,
        item_embeddings=rng.normal(size=(N_ITEMS, 8)).astype(np.float32),
        components=components,
        weights={name: 0.0 for name in components},
        recency_decay=1.0,
        popularity=np.bincount(fit.inter_item, minlength=N_ITEMS).astype(np.float32),
    )


def fit_with(components: dict[str, sp.csr_matrix]) -> tuple[object, TrainingGraph]:
    graph, _test = toy()
    fit, validation = hold_out_latest(graph)
    model = artifacts(fit, components(fit, validation) if callable(components) else components)
    names = [*model.components, EMBEDDING]
    return fit_blend(model, names, user_histories(fit), validation, decays=(0.5, 1.0)), fit


def base(fit: TrainingGraph, _validation: dict[int, int]) -> dict[str, sp.csr_matrix]:
    return {"cooccurrence": cooccurrence_cosine(fit)}


def test_a_signal_that_points_at_test_items_gets_weight_zero_and_changes_nothing() -> None:
    _graph, test = toy()

    def with_test_signal(fit: TrainingGraph, validation: dict[int, int]) -> dict[str, sp.csr_matrix]:
        return {**base(fit, validation), "same_brand": pointing(fit, test)}

    planted, _ = fit_with(with_test_signal)
    clean, _ = fit_with(base)
    assert planted.weights["same_brand"] == 0.0
    assert {k: v for k, v in planted.weights.items() if k != "same_brand"} == clean.weights
    assert planted.recency_decay == clean.recency_decay
    assert planted.ndcg <= clean.ndcg + 1e-9
    # a perfect test-item oracle: ranked by it alone, the validation items fare worst
    assert planted.single["same_brand"] < planted.single["cooccurrence"]


def test_the_fit_recovers_a_planted_useful_signal() -> None:
    def with_useful_signal(fit: TrainingGraph, validation: dict[int, int]) -> dict[str, sp.csr_matrix]:
        return {**base(fit, validation), "also_viewed": pointing(fit, validation)}

    useful, _ = fit_with(with_useful_signal)
    clean, _ = fit_with(base)
    assert useful.weights["also_viewed"] > 0.0
    assert useful.ndcg > clean.ndcg + 0.05


def test_the_fit_is_deterministic() -> None:
    first, _ = fit_with(base)
    second, _ = fit_with(base)
    assert first == second


def noise(seed: int) -> sp.csr_matrix:
    """A random item–item signal: it knows nothing about anyone's next item."""
    rng = np.random.default_rng(seed)
    return sp.random(N_ITEMS, N_ITEMS, density=0.05, random_state=rng, format="csr", dtype=np.float32)


def test_a_signal_that_needs_evidence_is_dropped_for_a_gain_within_noise() -> None:
    # The ascent alone takes this noise: under a name that needs no evidence it gets a weight ...
    plain, _ = fit_with(lambda fit, v: {**base(fit, v), "same_brand": noise(0)})
    assert plain.weights["same_brand"] > 0.0
    # ... as topic interests it must beat the blend refitted without it, user by user, and does not.
    gated, _ = fit_with(lambda fit, v: {**base(fit, v), TOPIC_INTERESTS: noise(0)})
    clean, _ = fit_with(base)
    assert gated.weights[TOPIC_INTERESTS] == 0.0
    assert gated.evidence[TOPIC_INTERESTS] >= EVIDENCE_P
    assert {k: v for k, v in gated.weights.items() if k != TOPIC_INTERESTS} == clean.weights
    assert gated.ndcg == clean.ndcg


def test_a_signal_that_needs_evidence_stays_when_it_helps() -> None:
    useful, _ = fit_with(lambda fit, v: {**base(fit, v), TOPIC_INTERESTS: pointing(fit, v)})
    assert useful.weights[TOPIC_INTERESTS] > 0.0
    assert useful.evidence[TOPIC_INTERESTS] < EVIDENCE_P


def test_fitting_users_in_chunks_changes_nothing(monkeypatch) -> None:
    """The fit scores its users in chunks bounded in bytes; a chunk of 7 users gives what one does."""
    from workers.training import blend_fit

    graph, _test = toy()
    fit, validation = hold_out_latest(graph)
    model = artifacts(fit, base(fit, validation))
    names = [*model.components, EMBEDDING]
    whole = fit_blend(model, names, user_histories(fit), validation, decays=(0.5, 1.0))
    monkeypatch.setattr(blend_fit, "CHUNK_BYTES", 7 * 4 * N_ITEMS * len(names))
    assert blend_fit.chunk_rows(N_ITEMS, len(names)) == 7
    chunked = fit_blend(model, names, user_histories(fit), validation, decays=(0.5, 1.0))
    assert chunked.weights == whole.weights
    assert chunked.recency_decay == whole.recency_decay
    assert chunked.ndcg == whole.ndcg


def test_the_ascent_scores_every_trial_as_the_blend_itself_does(monkeypatch) -> None:
    """The ascent scores all grid values of one feature at once: each must equal that blend's NDCG@10."""
    rng = np.random.default_rng(5)
    users, width, n_features = 300, 40, 4
    scaled = rng.gamma(0.5, 1.0, (users, width, n_features)) * (rng.random((users, width, n_features)) < 0.5)
    scaled[:, 30:] = 0.0  # past each user's list
    prior = np.where(np.arange(width) < 30, 0.0, -np.inf)
    target = np.where(rng.random(users) < 0.8, rng.integers(1, 30, users), -1)
    tied = np.flatnonzero(target > 0)[::2]
    scaled[tied, 0] = scaled[tied, target[tied]]  # a candidate that ties with the target: it counts against
    features = _Features(
        scaled.astype(np.float32), prior.astype(np.float32), target, np.ones(n_features, np.float32)
    )
    weights = np.array([1.0, 0.3, 0.0, 2.0])
    values = [0.0, *GRID]
    for f in range(n_features):
        expected = []
        for value in values:
            trial = weights.copy()
            trial[f] = value
            expected.append(_ndcg(features, trial))
        monkeypatch.setattr(blend_fit, "_TRIAL_ELEMENTS", 7 * users * width)  # several chunks of trials
        assert np.allclose(_ndcg_varying(features, weights, f, values), expected, rtol=0, atol=1e-12)
        monkeypatch.undo()
