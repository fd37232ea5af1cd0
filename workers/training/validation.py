"""The validation hold-out the baselines tune on: the same one kgrec tunes on, and early stopping.

:func:`workers.training.holdout.hold_out_latest` removes each user's latest
training interaction (users with at least 3); baselines are fitted on the rest
and scored on those held-out items, over at most
:data:`~workers.training.holdout.MAX_TUNING_USERS` users drawn with the run's
seed, exactly as kgrec's blend is tuned. The test items are never in the graph
this sees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import scipy.sparse as sp

from kgrec.item_graphs import interaction_matrix
from kgrec.training_graph import TrainingGraph
from workers.training.holdout import (
    DEFAULT_GATE_MIN_USERS,
    MAX_TUNING_USERS,
    hold_out_latest,
    tuning_targets,
)

T = TypeVar("T")
VALIDATION_K = 10
_BATCH = 1_024


@dataclass
class ValidationSet:
    """Users, their held-out item, and the graph without those items."""

    graph: TrainingGraph  # the training graph minus each validation item
    users: np.ndarray  # user indices (shared with the training graph)
    items: np.ndarray  # each user's held-out item index
    seen: sp.csr_matrix = field(init=False)  # the users' remaining items, excluded from the ranking

    def __post_init__(self) -> None:
        self.seen = interaction_matrix(self.graph)

    def ndcg(self, scores_for: Callable[[np.ndarray], np.ndarray], k: int = VALIDATION_K) -> float:
        """Mean NDCG@k of the held-out items, ranking all items minus each user's remaining ones.

        ``scores_for(user indices)`` gives dense (users × items) scores. A target's
        rank counts every other item that scores as high or higher (:func:`pessimistic_ranks`).
        """
        total = 0.0
        for start in range(0, self.users.size, _BATCH):
            users = self.users[start : start + _BATCH]
            scores = np.array(scores_for(users), dtype=np.float32, copy=True)
            rows, cols = self.seen[users].nonzero()
            scores[rows, cols] = -np.inf
            rank = pessimistic_ranks(scores, self.items[start : start + _BATCH])
            total += float(np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0).sum())
        return total / max(self.users.size, 1)


def pessimistic_ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each row's target rank (0 = first): the other items scoring as high or higher.

    Ties count against the target, as in the blend fit: a model that scores many items equally
    (a sparse signal's zeros, or all of them) gains nothing from the scores it does not separate.
    A target the ranking excludes (``-inf``) gets a rank past any cut-off.
    """
    rows = np.arange(scores.shape[0])
    target = scores[rows, targets]
    rank = (scores >= target[:, None]).sum(axis=1) - 1
    return np.where(np.isfinite(target), rank, scores.shape[1])


def validation_set(
    graph: TrainingGraph,
    seed: int,
    max_users: int = MAX_TUNING_USERS,
    *,
    hold_gate_slice: bool = False,
    gate_min_users: int = DEFAULT_GATE_MIN_USERS,
) -> ValidationSet:
    """The hold-out of :func:`hold_out_latest`, on at most ``max_users`` users drawn with ``seed``
    (``hold_gate_slice``: only :func:`~workers.training.holdout.tuning_targets`' users, split for a
    gate that needs ``gate_min_users``)."""
    fit, targets = hold_out_latest(graph)
    targets = tuning_targets(graph, targets, hold_gate_slice, gate_min_users)
    users = np.array(sorted(targets), dtype=np.int64)
    if users.size > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    items = np.array([targets[int(u)] for u in users], dtype=np.int64)
    return ValidationSet(fit, users, items)


@dataclass
class EarlyStop(Generic[T]):
    """How an early-stopped run went."""

    best_epoch: int  # epochs trained when validation was best (0: never evaluated above -inf)
    best_score: float
    epochs_run: int
    scores: list[tuple[int, float]]  # (epoch, validation score) at every evaluation
    best: T | None  # the snapshot taken at the best epoch


def early_stopping(
    step: Callable[[], object],
    score: Callable[[], float],
    snapshot: Callable[[], T],
    *,
    max_epochs: int,
    every: int,
    patience: int,
) -> EarlyStop[T]:
    """Run ``step`` (one epoch) up to ``max_epochs`` times, scoring every ``every`` epochs.

    Stops after ``patience`` evaluations in a row without a better score than the best
    so far, and returns the snapshot taken at the best evaluation.
    """
    if max_epochs < 1 or every < 1 or patience < 1:
        raise ValueError(
            f"early stopping needs max_epochs, every, patience ≥ 1 ({max_epochs}, {every}, {patience})"
        )
    best_epoch, best_score, best, waited = 0, -np.inf, None, 0
    scores: list[tuple[int, float]] = []
    epoch = 0
    while epoch < max_epochs:
        step()
        epoch += 1
        if epoch % every and epoch != max_epochs:
            continue
        value = float(score())
        scores.append((epoch, value))
        if value > best_score:
            best_epoch, best_score, best, waited = epoch, value, snapshot(), 0
        else:
            waited += 1
            if waited >= patience:
                break
    return EarlyStop(best_epoch, float(best_score), epoch, scores, best)
