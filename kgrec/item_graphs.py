"""Item–item graphs the served model blends, built from a :class:`TrainingGraph` with scipy.sparse.

Which of them a model uses, and with what weight, is :mod:`kgrec.signals`' registry.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from kgrec.training_graph import TrainingGraph

# reverse transitions count half: "bought b after a" says something, less, about a after b
REVERSE_TRANSITION_WEIGHT = 0.5


def row_normalised(matrix: sp.spmatrix) -> sp.csr_matrix:
    """Divide each row by (its sum + 1): the +1 damps items with very few links."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    return (sp.diags(1.0 / (sums + 1.0)) @ matrix).tocsr().astype(np.float32)


def interaction_matrix(graph: TrainingGraph) -> sp.csr_matrix:
    """Binary users × items matrix."""
    matrix = sp.csr_matrix(
        (np.ones(graph.inter_user.size, dtype=np.float32), (graph.inter_user, graph.inter_item)),
        shape=(graph.n_users, graph.n_items),
    )
    matrix.data[:] = 1.0
    return matrix


def popularity(graph: TrainingGraph) -> np.ndarray:
    """Interactions per item."""
    return np.bincount(graph.inter_item, minlength=graph.n_items).astype(np.float32)


def cooccurrence_cosine(graph: TrainingGraph) -> sp.csr_matrix:
    """Item-kNN similarity: co-occurrence counts over sqrt(pop_i · pop_j), no self-loops."""
    ratings = interaction_matrix(graph)
    counts = (ratings.T @ ratings).tocsr()
    counts.setdiag(0)
    counts.eliminate_zeros()
    norm = 1.0 / (np.sqrt(popularity(graph)) + 1e-9)
    return (sp.diags(norm) @ counts @ sp.diags(norm)).tocsr().astype(np.float32)


# Seed of the tie-break between interactions with the same order key (same ts or seq).
TIE_SEED = 7


def history_order(graph: TrainingGraph, seed: int = TIE_SEED) -> np.ndarray:
    """Interaction rows by user, then order key; equal keys in a random order fixed by ``seed``.

    Same-time interactions have no order. Item-index order would be one that
    order-aware signals could learn and exploit, so ties are shuffled instead,
    reproducibly (the pull sorts rows, so the same graph gives the same order).
    """
    tie = np.random.default_rng(seed).permutation(graph.inter_user.size)
    return np.lexsort((tie, graph.inter_order, graph.inter_user))


def histories(graph: TrainingGraph) -> list[np.ndarray]:
    """Each user's items, oldest first (same-time ties in a seeded random order: :func:`history_order`)."""
    order = history_order(graph)
    users = graph.inter_user[order]
    items = graph.inter_item[order]
    bounds = np.searchsorted(users, np.arange(graph.n_users + 1))
    return [items[bounds[u] : bounds[u + 1]] for u in range(graph.n_users)]


def forward_transitions(graph: TrainingGraph) -> sp.csr_matrix:
    """Counts of item → the user's next item (same-time ties in :func:`history_order`'s order)."""
    sources: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for items in histories(graph):
        if items.size > 1:
            sources.append(items[:-1])
            targets.append(items[1:])
    src = np.concatenate(sources) if sources else np.zeros(0, dtype=np.int64)
    dst = np.concatenate(targets) if targets else np.zeros(0, dtype=np.int64)
    return sp.csr_matrix(
        (np.ones(src.size, dtype=np.float32), (src, dst)), shape=(graph.n_items, graph.n_items)
    )


def transitions(graph: TrainingGraph) -> sp.csr_matrix:
    """Sequential item → next item counts (plus half the reverse), row-normalised."""
    forward = forward_transitions(graph)
    return row_normalised(forward + REVERSE_TRANSITION_WEIGHT * forward.T)


def successors(graph: TrainingGraph) -> sp.csr_matrix:
    """Sequential item → next item counts only (no reverse), row-normalised: what follows an item."""
    return row_normalised(forward_transitions(graph))


def knowledge_links(graph: TrainingGraph, relation: str, directed: bool) -> sp.csr_matrix:
    """also_bought / also_viewed / bought_together links, binary, row-normalised."""
    edges = graph.knowledge.get(relation, np.zeros((0, 2), dtype=np.int64))
    matrix = sp.csr_matrix(
        (np.ones(len(edges), dtype=np.float32), (edges[:, 0], edges[:, 1])),
        shape=(graph.n_items, graph.n_items),
    )
    if not directed:
        matrix = matrix + matrix.T
    matrix.data[:] = 1.0
    return row_normalised(matrix)


def same_brand(graph: TrainingGraph) -> sp.csr_matrix:
    """Items of the same brand, row-normalised."""
    has = np.flatnonzero(graph.item_brand >= 0)
    incidence = sp.csr_matrix(
        (np.ones(has.size, dtype=np.float32), (has, graph.item_brand[has])),
        shape=(graph.n_items, max(len(graph.brand_ids), 1)),
    )
    shared = (incidence @ incidence.T).tocsr()
    shared.setdiag(0)
    shared.eliminate_zeros()
    return row_normalised(shared)
