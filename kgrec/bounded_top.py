"""One user's exact top-k without computing the embedding term for every item.

A served score is ``graph + w · (q · e_i) + prior`` (:mod:`kgrec.recommender`):
``graph`` is the sparse row ``profile · S (+ last · S_last)``, ``q`` the user's
context vector and ``e_i`` item i's embedding. On a large catalogue the dense
product ``q · Eᵀ`` reads every embedding, and that memory traffic, not the
arithmetic, is what a request costs (64,160 items × 64 floats: 1.8 ms of a 4.8 ms
request on the 2-core VM). Cauchy–Schwarz bounds the term by
``|w| · ‖q‖ · ‖e_i‖``, which gives two proofs:

* an item the graph does not reach scores at most ``|w| · ‖q‖ · max ‖e‖ + max prior``;
* a reached item whose upper bound is below the k-th best lower bound cannot enter
  the top k, so its embedding need not be read.

When the k-th exact score beats the first bound, the answer is the one full
scoring gives (up to float rounding; equal scores in row order); otherwise, or when
the graph reaches fewer than k eligible items, :func:`bounded_top` returns None and
the caller scores every item. It pays only when the graph reaches a small part of the
catalogue (:data:`REACH_SHARE`): at 4,010 items a typical user reaches 90% of them, at
64,160 items 26%.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from kgrec.ranking import Ranking, best_k

# Float32 sums in a different order differ in the last bits: the bounds keep this
# relative margin so that rounding never decides a proof.
MARGIN = 1e-5
# Above this share of the catalogue reached by the graph, scoring every item costs less.
REACH_SHARE = 0.5


def bounded_top(
    graph: sp.csr_matrix,
    query: np.ndarray,
    weight: float,
    target: np.ndarray,
    norms: np.ndarray,
    prior: np.ndarray,
    maxima: tuple[float, float],
    k: int,
    allowed: np.ndarray | None = None,
    excluded: np.ndarray | None = None,
) -> Ranking | None:
    """The top ``k`` of one user, or None when the bound cannot prove it.

    ``graph``: the (1 × items) sparse graph scores; ``query``: the user's (dim,) context vector;
    ``target``/``norms``: item embeddings and their norms; ``prior``: per-item popularity prior;
    ``maxima``: ``(norms.max(), prior.max())``, fixed per model, so the caller keeps them;
    ``allowed``: boolean mask of servable items; ``excluded``: item rows never to return.
    """
    graph = graph.tocsr()
    if graph.nnz > REACH_SHARE * prior.size:
        return None
    rows = graph.indices.astype(np.int64, copy=False)
    lower = graph.data.astype(np.float32, copy=False) + prior[rows]
    keep = np.ones(rows.size, dtype=bool)
    if allowed is not None:
        keep &= allowed[rows]
    if excluded is not None and excluded.size:
        keep &= ~np.isin(rows, excluded)
    rows, lower = rows[keep], lower[keep]
    if k <= 0 or rows.size < k:
        return None
    reach = abs(weight) * float(np.linalg.norm(query))
    if reach > 0:
        slack = reach * norms[rows] * (1 + MARGIN)
        floor = np.partition(lower - slack, rows.size - k)[rows.size - k]  # k-th best lower bound
        reached = lower + slack >= floor
        rows, lower = rows[reached], lower[reached]
        exact = lower + np.float32(weight) * (target[rows] @ query)
    else:
        exact = lower
    top = best_k(exact, k, rows)
    unreached = reach * maxima[0] + maxima[1]
    kth = float(exact[top[-1]])
    if kth <= unreached + MARGIN * max(abs(kth), abs(unreached)):
        return None
    return Ranking(rows[top], exact[top].astype(np.float64))
