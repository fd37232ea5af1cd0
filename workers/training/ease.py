"""EASE's λ, chosen on the validation hold-out: for the EASE baseline and for kgrec's ``ease`` signal.

The math is :mod:`kgrec.ease`. λ is chosen on the validation hold-out (each user's latest
training interaction, as kgrec tunes) from a log grid walked upwards until validation
NDCG@10 falls twice in a row; the chosen λ is then refitted on the whole training graph.
The baseline ranks with the dense weights; the signal with its bounded, sparse form
(:func:`kgrec.ease.ease_neighbours`), which is also what its walk scores.

The signal's walk fits at most :data:`WALK_MAX_ITEMS` items, the most popular ones. Every
fit costs items³, and the walk makes up to ten of them, so without this bound the walk grew
with catalogue size cubed and dominated training (282 s of 1,106 s on a 16,000-item shop).
With it the walk costs the same on any catalogue larger than the bound, and one more fit at
the chosen λ gives the blend the signal as it is served.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import scipy.sparse as sp

from kgrec.ease import SIGNAL_MAX_ITEMS, SIGNAL_TOP_K, ease_neighbours, ease_weights
from kgrec.item_graphs import interaction_matrix
from kgrec.training_graph import TrainingGraph
from workers.training.validation import ValidationSet

# Walked upwards; 2 consecutive falls of validation NDCG@10 end the walk.
LAMBDAS: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1_000.0, 3_000.0, 10_000.0, 30_000.0)
FALLS_TO_STOP = 2
# The signal's walk fits at most this many items (the most popular); 4,000 items take about
# a second per λ on 2 cores. On MovieLens (9,742 items), Amazon Beauty (12,101) and KGAT
# amazon-book (24,915) it chose the λ the unbounded walk chose (README: "The blend").
WALK_MAX_ITEMS = 4_000

T = TypeVar("T")


def walk_lambdas(
    fit: Callable[[float], T], ndcg: Callable[[T], float], lambdas: Sequence[float] = LAMBDAS
) -> tuple[float, T, dict[float, float]]:
    """Walk ``lambdas`` upwards; the best λ, its fit, and every λ's validation NDCG@10."""
    scores: dict[float, float] = {}
    best_lam, best_fit, best, falls = float(lambdas[0]), None, -1.0, 0
    for lam in lambdas:
        fitted = fit(float(lam))
        scores[float(lam)] = value = ndcg(fitted)
        if value > best:
            best_lam, best_fit, best, falls = float(lam), fitted, value, 0
        else:
            del fitted  # one fit held at a time besides the best
            falls += 1
            if falls >= FALLS_TO_STOP:
                break
    assert best_fit is not None
    return best_lam, best_fit, scores


@dataclass
class EaseFit:
    """EASE fitted on the whole training graph with the λ validation chose."""

    weights: np.ndarray  # (n_items, n_items)
    lam: float
    validation: dict[float, float] = field(default_factory=dict)  # λ -> validation NDCG@10

    def scores(self, matrix: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        """Dense scores of ``users`` (rows of ``matrix``, the users' training items)."""
        return np.asarray(matrix[users] @ self.weights, dtype=np.float32)


def fit_ease(
    graph: TrainingGraph,
    validation: ValidationSet,
    lambdas: Sequence[float] = LAMBDAS,
    device: str = "cpu",
) -> EaseFit:
    """The baseline: choose λ on ``validation`` (fitted on its graph only), then refit on ``graph``."""
    fit_matrix = interaction_matrix(validation.graph)
    best_lam, best_weights, scores = walk_lambdas(
        lambda lam: ease_weights(fit_matrix, lam, device),
        lambda w: validation.ndcg(lambda users: np.asarray(fit_matrix[users] @ w)),
        lambdas,
    )
    del best_weights
    return EaseFit(ease_weights(interaction_matrix(graph), best_lam, device), best_lam, scores)


@dataclass
class EaseSignalFit:
    """kgrec's ``ease`` signal at the λ validation chose."""

    lam: float
    fit_matrix: sp.csr_matrix  # the signal on the validation graph (what the blend is fitted with)
    validation: dict[float, float] = field(default_factory=dict)  # λ -> validation NDCG@10


def tune_ease_signal(
    validation: ValidationSet,
    lambdas: Sequence[float] = LAMBDAS,
    max_items: int = SIGNAL_MAX_ITEMS,
    top_k: int = SIGNAL_TOP_K,
    device: str = "cpu",
    walk_max_items: int = WALK_MAX_ITEMS,
) -> EaseSignalFit:
    """Choose the ``ease`` signal's λ on ``validation``, scoring the signal as it is served.

    The walk scores the signal bounded to the ``walk_max_items`` most popular items; when that
    is fewer than the signal covers, the chosen λ is refitted at ``max_items`` for the blend.
    """
    fit_matrix = interaction_matrix(validation.graph)
    walk_items = min(max_items, walk_max_items)
    best_lam, best, scores = walk_lambdas(
        lambda lam: ease_neighbours(validation.graph, lam, walk_items, top_k, device),
        lambda signal: validation.ndcg(lambda users: (fit_matrix[users] @ signal).toarray()),
        lambdas,
    )
    if walk_items < min(max_items, validation.graph.n_items):  # the walk covered fewer items
        del best
        best = ease_neighbours(validation.graph, best_lam, max_items, top_k, device)
    return EaseSignalFit(best_lam, best, scores)
