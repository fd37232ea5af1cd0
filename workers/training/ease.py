"""EASE (Steck, WWW 2019): a closed-form item–item model on the binary user × item matrix.

With ``G = XᵀX + λI`` and ``P = G⁻¹``, the weights are ``B = I − P · diag(1/diag(P))``
with a zero diagonal, and a user's scores are ``x_u B``. λ is chosen on the
validation hold-out (each user's latest training interaction, as kgrec tunes)
from a log grid walked upwards until validation NDCG@10 falls twice in a row;
the chosen λ is then refitted on the whole training graph.

Memory: one dense ``n × n`` float32 buffer per fit. On CPU, ``G`` is inverted in
place by LAPACK (Cholesky ``spotrf`` + ``spotri``) and turned into ``B`` in place,
so 12,101 items take 0.59 GB and 24,915 items 2.5 GB; on CUDA ``torch.linalg``
inverts it on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from scipy.linalg import lapack

from kgrec.item_graphs import interaction_matrix
from kgrec.training_graph import TrainingGraph
from workers.training.validation import ValidationSet

# Walked upwards; 2 consecutive falls of validation NDCG@10 end the walk.
LAMBDAS: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1_000.0, 3_000.0, 10_000.0, 30_000.0)
FALLS_TO_STOP = 2
_BLOCK = 2_048


def _symmetrise_from_lower(matrix: np.ndarray) -> None:
    """Copy the lower triangle onto the upper one, in place, a block of rows at a time."""
    n = matrix.shape[0]
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        block = matrix[start:stop, start:stop]
        block[np.triu_indices(stop - start, 1)] = block.T[np.triu_indices(stop - start, 1)]
        matrix[start:stop, stop:] = matrix[stop:, start:stop].T


def _inverse_in_place(gram: np.ndarray) -> np.ndarray:
    """``gram``⁻¹ for a symmetric positive-definite float32 C-ordered matrix, overwriting it."""
    # gram.T is the same (symmetric) matrix in Fortran order, so LAPACK works on it without a copy;
    # its lower triangle is gram's upper one.
    factor, info = lapack.spotrf(gram.T, lower=1, overwrite_a=1, clean=0)
    if info != 0:
        raise np.linalg.LinAlgError(
            f"EASE: Cholesky failed (info={info}); the Gram matrix is not positive definite"
        )
    inverse, info = lapack.spotri(factor, lower=1, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: inversion failed (info={info})")
    if not np.shares_memory(inverse, gram):  # LAPACK copied after all: keep the result anyway
        gram[...] = inverse.T
    # The Fortran view's lower triangle holds the inverse: that is gram's upper triangle.
    _symmetrise_from_lower(gram.T)
    return gram


def ease_weights(matrix: sp.csr_matrix, lam: float, device: str = "cpu") -> np.ndarray:
    """The EASE item × item weights ``B`` (float32, zero diagonal) for a binary user × item matrix."""
    if lam <= 0:
        raise ValueError(f"EASE λ must be positive, got {lam}")
    binary = sp.csr_matrix(matrix, dtype=np.float32)
    binary.data[:] = 1.0
    gram = np.ascontiguousarray((binary.T @ binary).toarray(), dtype=np.float32)
    gram[np.diag_indices_from(gram)] += np.float32(lam)
    if device.startswith("cuda"):
        on_device = torch.from_numpy(gram).to(device)
        del gram
        inverse = torch.linalg.inv(on_device)
        del on_device
        diagonal = torch.diagonal(inverse).clone()
        inverse.div_(-diagonal[None, :])
        inverse.fill_diagonal_(0.0)
        return inverse.cpu().numpy()
    inverse = _inverse_in_place(gram)
    diagonal = np.diagonal(inverse).copy()
    inverse /= -diagonal[None, :]
    np.fill_diagonal(inverse, 0.0)
    return inverse


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
    """Choose λ on ``validation`` (fitted on its graph only), then refit on ``graph``."""
    fit_matrix = interaction_matrix(validation.graph)
    scores: dict[float, float] = {}
    best_lam, best, falls = lambdas[0], -1.0, 0
    for lam in lambdas:
        weights = ease_weights(fit_matrix, lam, device)
        ndcg = validation.ndcg(lambda users, w=weights: np.asarray(fit_matrix[users] @ w))
        del weights
        scores[float(lam)] = ndcg
        if ndcg > best:
            best_lam, best, falls = float(lam), ndcg, 0
        else:
            falls += 1
            if falls >= FALLS_TO_STOP:
                break
    return EaseFit(ease_weights(interaction_matrix(graph), best_lam, device), best_lam, scores)
