"""EASE (Steck, WWW 2019): closed-form item–item weights, as a baseline and as a model signal.

With ``G = XᵀX + λI`` and ``P = G⁻¹`` for the binary user × item matrix ``X``, the weights
are ``B = I − P · diag(1/diag(P))`` with a zero diagonal, and a user's scores are ``x_u B``.

Memory: one dense ``n × n`` float32 buffer per fit. On CPU, ``G`` is inverted in place by
LAPACK (Cholesky ``spotrf`` + ``spotri``) and turned into ``B`` in place, so 12,101 items take
0.59 GB and 24,915 items 2.5 GB; on CUDA ``torch.linalg`` inverts it on the device.

As a served signal (:func:`ease_neighbours`, the ``ease`` entry of :mod:`kgrec.signals`), the
fit is bounded: it covers the :data:`SIGNAL_MAX_ITEMS` most popular items (the inversion costs
items³, so a larger catalogue costs the same as that many items), and each row keeps its
:data:`SIGNAL_TOP_K` largest weights, so the served matrix stays sparse. λ is chosen on the
validation hold-out (:mod:`workers.training.ease`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from kgrec.item_graphs import interaction_matrix, popularity
from kgrec.training_graph import TrainingGraph

SIGNAL_MAX_ITEMS = 25_000  # 2.5 GB of float32 while fitting; about a minute per λ on 2 cores
SIGNAL_TOP_K = 200  # weights kept per row of the served signal
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
    binary = sp.csr_matrix(matrix, dtype=np.float32)
    binary.data[:] = 1.0
    return weights_from_gram(binary.T @ binary, lam, device)


def weights_from_gram(gram_matrix: sp.spmatrix, lam: float, device: str = "cpu") -> np.ndarray:
    """EASE's weights ``B`` from a sparse Gram matrix ``XᵀX`` of any ``X`` (rows beyond users' included)."""
    if lam <= 0:
        raise ValueError(f"EASE λ must be positive, got {lam}")
    gram = np.ascontiguousarray(gram_matrix.toarray(), dtype=np.float32)  # inverted in place
    gram[np.diag_indices_from(gram)] += np.float32(lam)
    if device.startswith("cuda"):
        import torch  # only where a GPU fits it: the API imports this module without torch

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


def head_items(graph: TrainingGraph, max_items: int = SIGNAL_MAX_ITEMS) -> np.ndarray:
    """The indices of the ``max_items`` most popular items (ties: lower index), sorted."""
    counts = popularity(graph)
    if graph.n_items <= max_items:
        return np.arange(graph.n_items)
    order = np.lexsort((np.arange(graph.n_items), -counts))
    return np.sort(order[:max_items])


def top_k_rows(weights: np.ndarray, top_k: int) -> sp.csr_matrix:
    """Each row's ``top_k`` largest positive entries of a dense matrix, as CSR (float32)."""
    n_rows, n_cols = weights.shape
    k = min(top_k, n_cols)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    values: list[np.ndarray] = []
    for start in range(0, n_rows, _BLOCK):
        block = weights[start : start + _BLOCK]
        top = (
            np.argpartition(-block, k - 1, axis=1)[:, :k]
            if k < n_cols
            else np.tile(np.arange(n_cols), (len(block), 1))
        )
        picked = np.take_along_axis(block, top, axis=1)
        keep = picked > 0
        rows.append(np.nonzero(keep)[0] + start)
        cols.append(top[keep])
        values.append(picked[keep])
    return sp.csr_matrix(
        (np.concatenate(values).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_rows, n_cols),
    )


def ease_neighbours(
    graph: TrainingGraph,
    lam: float,
    max_items: int = SIGNAL_MAX_ITEMS,
    top_k: int = SIGNAL_TOP_K,
    device: str = "cpu",
) -> sp.csr_matrix:
    """The served EASE signal: (n_items × n_items) CSR, each head item's ``top_k`` positive weights.

    ``device``: where the inversion runs (``cuda``/``cuda:N`` on a GPU worker); the result is on the CPU.
    """
    head = head_items(graph, max_items)
    weights = ease_weights(interaction_matrix(graph)[:, head], lam, device)
    local = top_k_rows(weights, top_k).tocoo()
    del weights
    return sp.csr_matrix(
        (local.data, (head[local.row], head[local.col])), shape=(graph.n_items, graph.n_items)
    )
