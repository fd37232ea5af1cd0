"""The evaluation's baselines on tiny data: EASE's closed form, validation-only choices, early
stopping, SASRec learning order, and the markov / co-purchase scorers through the Recommender."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
import scipy.sparse as sp

from kgrec.ease import ease_neighbours, ease_weights, head_items
from kgrec.item_graphs import interaction_matrix
from kgrec.recommender import Recommender
from kgrec.training_graph import TrainingGraph
from workers.training import baselines
from workers.training.config import TrainConfig
from workers.training.ease import fit_ease, tune_ease_signal
from workers.training.metrics import confidence, per_user_metrics
from workers.training.pipeline import user_histories
from workers.training.sasrec import SasRecConfig, train_sasrec
from workers.training.validation import ValidationSet, early_stopping, validation_set


def graph_of(
    sequences: list[list[int]], n_items: int, knowledge: dict[str, np.ndarray] | None = None
) -> TrainingGraph:
    """A training graph whose user u interacted with ``sequences[u]`` in that order."""
    users = np.array([u for u, items in enumerate(sequences) for _ in items], dtype=np.int64)
    items = np.array([i for seq in sequences for i in seq], dtype=np.int64)
    order = np.array([k for seq in sequences for k in range(len(seq))], dtype=np.int64)
    return TrainingGraph(
        user_ids=[f"u{u:04d}" for u in range(len(sequences))],
        item_ids=[f"i{i:04d}" for i in range(n_items)],
        inter_user=users,
        inter_item=items,
        inter_weight=np.ones(items.size, dtype=np.float32),
        inter_order=order,
        knowledge=knowledge or {},
    )


# --- EASE ------------------------------------------------------------------------------------


def test_ease_matches_the_closed_form_computed_by_hand() -> None:
    rows = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 0]], dtype=np.float64)
    lam = 2.0
    gram = rows.T @ rows + lam * np.eye(4)
    inverse = np.linalg.inv(gram)
    expected = np.eye(4) - inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(expected, 0.0)

    weights = ease_weights(sp.csr_matrix(rows), lam)

    assert weights.dtype == np.float32
    assert np.allclose(weights, expected, atol=1e-5)
    assert np.all(np.diag(weights) == 0.0)


def test_ease_inverts_a_larger_matrix_in_place_like_numpy() -> None:
    rng = np.random.default_rng(3)
    rows = (rng.random((300, 2_100)) < 0.02).astype(np.float32)  # above one LAPACK block of rows
    lam = 5.0
    inverse = np.linalg.inv(rows.T.astype(np.float64) @ rows + lam * np.eye(2_100))
    expected = np.eye(2_100) - inverse / np.diag(inverse)[None, :]
    np.fill_diagonal(expected, 0.0)
    assert np.allclose(ease_weights(sp.csr_matrix(rows), lam), expected, atol=1e-4)


def test_ease_refuses_a_non_positive_lambda() -> None:
    with pytest.raises(ValueError, match="λ must be positive, got 0"):
        ease_weights(sp.csr_matrix(np.eye(3)), 0.0)


def test_ease_lambda_is_the_validation_best_and_fitted_without_the_validation_items() -> None:
    rng = np.random.default_rng(5)
    sequences = [list(rng.choice(40, size=rng.integers(4, 9), replace=False)) for _ in range(150)]
    graph = graph_of(sequences, 40)
    validation = validation_set(graph, seed=1)
    held_out = set(zip(validation.users.tolist(), validation.items.tolist(), strict=True))
    remaining = set(
        zip(validation.graph.inter_user.tolist(), validation.graph.inter_item.tolist(), strict=True)
    )
    assert held_out and not held_out & remaining

    lambdas = (0.1, 1.0, 10.0, 100.0, 1_000.0)
    fit = fit_ease(graph, validation, lambdas=lambdas)

    # Recomputed here from the validation graph alone: the choice is the best of the walked grid.
    fit_matrix = interaction_matrix(validation.graph)
    by_hand = {}
    for lam in fit.validation:
        weights = ease_weights(fit_matrix, lam)
        by_hand[lam] = validation.ndcg(lambda users, w=weights: fit_matrix[users] @ w)
    assert by_hand == pytest.approx(fit.validation)
    assert fit.lam == max(by_hand, key=by_hand.get)
    # ...and the model returned is refitted on the whole training graph with that λ.
    assert np.allclose(fit.weights, ease_weights(interaction_matrix(graph), fit.lam))


def test_the_ease_signal_keeps_each_head_items_top_weights_and_nothing_else() -> None:
    rng = np.random.default_rng(8)
    sequences = [list(rng.choice(30, size=rng.integers(3, 8), replace=False)) for _ in range(120)]
    graph = graph_of(sequences, 30)
    lam, max_items, top_k = 4.0, 20, 3
    head = head_items(graph, max_items)
    counts = np.bincount(graph.inter_item, minlength=30)
    assert head.size == max_items and counts[head].min() >= np.delete(counts, head).max()

    signal = ease_neighbours(graph, lam, max_items, top_k)

    dense = ease_weights(interaction_matrix(graph)[:, head], lam)  # EASE on the head items alone
    expected = np.zeros((30, 30), dtype=np.float32)
    for row, item in enumerate(head):
        best = np.argsort(-dense[row], kind="stable")[:top_k]
        best = best[dense[row, best] > 0]
        expected[item, head[best]] = dense[row, best]
    assert signal.shape == (30, 30) and signal.dtype == np.float32
    assert np.allclose(signal.toarray(), expected)
    assert np.diff(signal.indptr).max() <= top_k
    outside = np.setdiff1d(np.arange(30), head)
    assert signal[outside].nnz == 0 and signal[:, outside].nnz == 0


def signal_ndcg_by_lambda(
    validation: ValidationSet, lambdas: Iterable[float], max_items: int, top_k: int
) -> dict[float, float]:
    """Each λ's validation NDCG@10 of the ``ease`` signal over ``max_items`` head items, by hand."""
    fit_matrix = interaction_matrix(validation.graph)
    scores = {}
    for lam in lambdas:
        signal = ease_neighbours(validation.graph, lam, max_items, top_k)
        scores[lam] = validation.ndcg(lambda users, s=signal: (fit_matrix[users] @ s).toarray())
    return scores


def test_the_ease_signal_lambda_is_chosen_on_validation_scoring_the_signal_as_served() -> None:
    rng = np.random.default_rng(9)
    sequences = [list(rng.choice(40, size=rng.integers(4, 9), replace=False)) for _ in range(150)]
    graph = graph_of(sequences, 40)
    validation = validation_set(graph, seed=1)
    lambdas = (0.1, 1.0, 10.0, 100.0, 1_000.0)

    fit = tune_ease_signal(validation, lambdas=lambdas, max_items=30, top_k=5)

    by_hand = signal_ndcg_by_lambda(validation, fit.validation, max_items=30, top_k=5)
    assert by_hand == pytest.approx(fit.validation)
    assert fit.lam == max(by_hand, key=by_hand.get)
    # the blend is fitted with the signal of the validation graph (no validation item in it)
    assert abs(fit.fit_matrix - ease_neighbours(validation.graph, fit.lam, 30, 5)).nnz == 0


def test_the_ease_signal_walk_is_bounded_to_the_head_and_the_blend_gets_the_served_signal() -> None:
    rng = np.random.default_rng(4)
    # skewed popularity, so the 12-item head differs from the 30 items the signal covers
    popular = np.arange(1.0, 41.0) ** -0.8
    sequences = [
        list(rng.choice(40, size=rng.integers(4, 9), replace=False, p=popular / popular.sum()))
        for _ in range(150)
    ]
    validation = validation_set(graph_of(sequences, 40), seed=1)
    lambdas = (0.1, 1.0, 10.0, 100.0, 1_000.0)

    fit = tune_ease_signal(validation, lambdas=lambdas, max_items=30, top_k=5, walk_max_items=12)

    on_the_head = signal_ndcg_by_lambda(validation, fit.validation, max_items=12, top_k=5)
    assert on_the_head == pytest.approx(fit.validation)
    assert fit.lam == max(on_the_head, key=on_the_head.get)
    # the blend still gets the signal as served: all 30 head items at the chosen λ
    served = ease_neighbours(validation.graph, fit.lam, 30, 5)
    assert abs(fit.fit_matrix - served).nnz == 0
    assert len(np.unique(served.nonzero()[0])) > 12


def test_dense_ranking_never_lists_a_seen_item_even_with_fewer_items_than_k() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7, 0.3], [0.5, 0.4, 0.3, 0.2, 0.1]], dtype=np.float32)
    seen = [np.array([1, 3]), np.array([0, 1, 2, 3])]
    ranked = baselines.rank_dense(lambda users: scores[users], seen, 2, k=20)
    assert [row.tolist() for row in ranked] == [[2, 4, 0], [4]]  # as the Recommender ranks them
    per_user = per_user_metrics([[f"i{i}" for i in row] for row in ranked], [{"i3"}, {"i4"}], (20,))
    assert per_user["recall@20"].tolist() == [0.0, 1.0]


def test_validation_ties_count_against_the_held_out_item() -> None:
    # Every user's held-out item ties with other items; a tie must never rank it first.
    sequences = [[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]]
    validation = validation_set(graph_of(sequences, 30), seed=1)
    assert validation.users.size == 4

    assert validation.ndcg(lambda users: np.zeros((users.size, 30))) == 0.0

    def tied_with_one(users: np.ndarray) -> np.ndarray:
        scores = np.zeros((users.size, 30))
        scores[np.arange(users.size), validation.items[np.searchsorted(validation.users, users)]] = 1.0
        scores[:, 29] = 1.0  # never anyone's held-out item
        return scores

    assert validation.ndcg(tied_with_one) == pytest.approx(1 / np.log2(3))


# --- early stopping --------------------------------------------------------------------------


def test_early_stopping_stops_after_patience_and_returns_the_best_epoch() -> None:
    curve = [0.10, 0.20, 0.35, 0.30, 0.34, 0.33, 0.50, 0.60]  # validation after each epoch
    state = {"epoch": 0}

    def step() -> None:
        state["epoch"] += 1

    stop = early_stopping(
        step, lambda: curve[state["epoch"] - 1], lambda: dict(state), max_epochs=8, every=1, patience=3
    )

    assert stop.best_epoch == 3 and stop.best_score == 0.35
    assert stop.best == {"epoch": 3}  # the snapshot taken at the best epoch, not the last
    assert stop.epochs_run == 6  # three evaluations without a new best, so 0.50 is never reached
    assert [e for e, _ in stop.scores] == [1, 2, 3, 4, 5, 6]


def test_early_stopping_evaluates_every_n_epochs_and_at_the_cap() -> None:
    ran: list[int] = []
    stop = early_stopping(
        lambda: ran.append(1), lambda: float(len(ran)), lambda: len(ran), max_epochs=7, every=3, patience=2
    )
    assert [e for e, _ in stop.scores] == [3, 6, 7]
    assert stop.best_epoch == 7 and stop.epochs_run == 7 and stop.best == 7


def test_bprmf_early_stopping_reports_a_best_epoch_within_its_run() -> None:
    rng = np.random.default_rng(2)
    sequences = [list(rng.choice(30, size=6, replace=False)) for _ in range(60)]
    graph = graph_of(sequences, 30)
    fit = baselines.fit_early_stopped(
        lambda g: baselines.BprMf(g, TrainConfig(dim=8, seed=3), "cpu", 64),
        graph,
        validation_set(graph, seed=3),
        baselines.Stopping(every=2, patience=2, max_epochs=12),
    )
    assert 1 <= fit.stop.best_epoch <= fit.stop.epochs_run <= 12
    assert fit.stop.best_score == max(score for _, score in fit.stop.scores)
    assert fit.users.shape == (60, 8) and fit.items.shape == (30, 8)


# --- SASRec ----------------------------------------------------------------------------------

# 300 users in batches of 64: 5 batches an epoch, so checks every 2 epochs and a cap of 30 epochs.
# Dropout 0.9 drowns the signal: the choice on validation must keep 0.1.
TOY = SasRecConfig(
    max_len=8, dim=32, dropouts=(0.9, 0.1), lr=5e-3, batch_size=64, check_steps=10, patience=3, max_steps=150
)


def test_sasrec_checks_every_so_many_steps_whatever_an_epoch_holds() -> None:
    config = SasRecConfig()
    assert config.schedule(175) == (2, 200)  # Amazon Beauty: as it was
    assert config.schedule(8) == (44, 4_400)  # MovieLens-100k: 352 steps between checks
    assert config.schedule(552) == (1, 64)  # KGAT amazon-book
    assert TOY.schedule(5) == (2, 30)


def test_sasrec_learns_a_trivially_sequential_data_set() -> None:
    # Every user walks items k, k+1, k+2... (mod 20): the next item is fully determined by order.
    rng = np.random.default_rng(0)
    walks = []
    for _ in range(300):
        start, length = int(rng.integers(20)), int(rng.integers(5, 9))
        walks.append([(start + step) % 20 for step in range(length)])
    validation = validation_set(graph_of(walks, 20), seed=0)

    fit = train_sasrec(validation, TOY)

    assert fit.stop.best_score > 0.8, fit.stop.scores
    assert fit.config.dropout == 0.1 and set(fit.validation_by_dropout) == {0.1, 0.9}
    assert fit.validation_by_dropout[0.1] == round(fit.stop.best_score, 5) > fit.validation_by_dropout[0.9]
    assert fit.stop.best_epoch <= fit.stop.epochs_run <= fit.max_epochs == 30
    # A model that cannot read order scores far below that bar on the same hold-out.
    counts = np.bincount(validation.graph.inter_item, minlength=20).astype(np.float32)
    assert validation.ndcg(lambda users: np.tile(counts, (users.size, 1))) < 0.4
    # The test ranking reads the whole sequence: after 3, 4, 5 comes 6.
    assert int(np.argmax(fit.scores([np.array([3, 4, 5])])[0])) == 6


# --- signals alone, through the Recommender --------------------------------------------------


def _top(artifacts: baselines.ModelArtifacts, history_of: TrainingGraph, user: int) -> str:
    (first, _), *_ = Recommender(artifacts).recommend(
        [user_histories(history_of)[user]], 3, [[h.item_id for h in user_histories(history_of)[user]]]
    )[0]
    return first


def test_markov_recommends_what_follows_the_latest_item() -> None:
    # Many users go 0 -> 1 -> 2 -> 3 -> 4; item 9 is the most popular but never follows 2.
    sequences = [[0, 1, 2, 3, 4] for _ in range(30)] + [[9, 5, 6] for _ in range(60)] + [[7, 8, 9, 6]]
    sequences.append([5, 6, 2])  # the probe: latest item 2
    graph = graph_of(sequences, 10)
    artifacts, metrics = baselines.tuned_signal_model(graph, [baselines.MARKOV_SIGNAL], "markov", seed=1)
    assert set(artifacts.components) == {"transitions"}
    assert metrics["ndcg@10"] > 0
    assert _top(artifacts, graph, len(sequences) - 1) == "i0003"


def test_copurchase_uses_the_links_alone_and_knows_when_there_are_none() -> None:
    links = {
        "bought_together": np.array([[2, 3], [6, 7]], dtype=np.int64),
        "also_bought": np.zeros((0, 2), np.int64),
    }
    sequences = [[0, 1, 2, 3] for _ in range(20)] + [[4, 5, 6]]
    graph = graph_of(sequences, 8, knowledge=links)
    assert baselines.has_copurchase(graph)
    assert not baselines.has_copurchase(graph_of(sequences, 8))
    names = baselines.copurchase_signals()
    artifacts, metrics = baselines.tuned_signal_model(
        graph, names, "copurchase", 1, baselines.copurchase_blends(names)
    )
    assert set(artifacts.components) == {"also_bought", "also_viewed", "bought_together"}
    assert artifacts.weights["bought_together"] > 0  # validation (2 -> 3) chose the relation with links
    assert metrics["ndcg@10"] > 0.9
    # Nobody ever interacted with 7: only the link 6 - 7 puts it first, above the popular items.
    assert _top(artifacts, graph, len(sequences) - 1) == "i0007"


# --- confidence ------------------------------------------------------------------------------


def test_per_user_metrics_and_a_paired_comparison() -> None:
    ranked = [["a", "b"], ["c", "a"], ["b", "c"]]
    per_user = per_user_metrics(ranked, [{"a"}, {"a"}, {"a"}], (1, 2))
    assert per_user["ndcg@2"] == pytest.approx([1.0, 1 / np.log2(3), 0.0])
    assert per_user["recall@1"].tolist() == [1.0, 0.0, 0.0]

    rng = np.random.default_rng(0)
    better = {"ndcg@10": (rng.random(400) < 0.3).astype(float)}
    same = {"ndcg@10": better["ndcg@10"].copy()}
    worse = {"ndcg@10": better["ndcg@10"] * (rng.random(400) < 0.5)}
    intervals, paired = confidence(
        {"kgrec": better, "same": same, "worse": worse}, ["ndcg@10"], reference="kgrec", seed=1
    )
    low, high = intervals["kgrec"]["ndcg@10"]
    assert low < better["ndcg@10"].mean() < high
    assert paired["same"]["ndcg@10"]["p"] == 1.0 and paired["same"]["ndcg@10"]["diff"] == 0.0
    assert paired["worse"]["ndcg@10"]["p"] < 1e-6 and paired["worse"]["ndcg@10"]["ci"][0] > 0
