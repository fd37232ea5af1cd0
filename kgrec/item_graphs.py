"""Item–item graphs the served model blends, built from a :class:`TrainingGraph` with scipy.sparse.

Which of them a model uses, and with what weight, is :mod:`kgrec.signals`' registry.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from kgrec.ties import interaction_ties
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


def history_order(graph: TrainingGraph) -> np.ndarray:
    """Interaction rows by user, then order key; equal keys by :mod:`kgrec.ties`' rule (larger = later).

    The served profile breaks ties with the same rule, so training and serving see
    one history in one order.
    """
    tie = interaction_ties(graph)
    return np.lexsort((tie, graph.inter_order, graph.inter_user))


def histories(graph: TrainingGraph) -> list[np.ndarray]:
    """Each user's items, oldest first (same-time ties as :func:`history_order` orders them)."""
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


# An entity linked to more items than this is left out of shared_entities: it tells items apart
# little (its IDF is low) and would make the product dense (its items² pairs).
SHARED_ENTITY_MAX_ITEMS = 1_000
SHARED_ENTITY_TOP_K = 100  # neighbours kept per item
_SHARED_ENTITY_BLOCK = 1_024  # items per block of the product, which bounds its memory


def item_entity_incidence(graph: TrainingGraph) -> sp.csr_matrix:
    """Binary items × (entities, then categories): every knowledge entity an item links to.

    Entities come from the open knowledge graph's triples in either direction (item → entity and
    entity → item); item–item triples (co-purchase links) and brands (``same_brand``) are not here.
    """
    n = graph.n_items
    triples = graph.kg_triples
    head, tail = triples[:, 0], triples[:, 2]
    forward = (head < n) & (tail >= n)
    backward = (tail < n) & (head >= n)
    items = np.concatenate([head[forward], tail[backward], graph.item_category_pairs[:, 0]])
    columns = np.concatenate(
        [tail[forward] - n, head[backward] - n, graph.item_category_pairs[:, 1] + graph.n_entities]
    )
    incidence = sp.csr_matrix(
        (np.ones(items.size, dtype=np.float32), (items, columns)),
        shape=(n, graph.n_entities + len(graph.category_ids)),
    )
    incidence.data[:] = 1.0  # an item listed twice with one entity still shares it once
    return incidence


def top_k_per_row(matrix: sp.csr_matrix, top_k: int, preference: np.ndarray | None = None) -> sp.csr_matrix:
    """Each row's ``top_k`` largest entries of a CSR matrix.

    Ties go to the column with the larger ``preference`` (per column), then to the lower column.
    """
    coo = matrix.tocoo()
    prefer = np.zeros(coo.col.size) if preference is None else -np.asarray(preference)[coo.col]
    order = np.lexsort((coo.col, prefer, -coo.data, coo.row))
    row = coo.row[order]
    starts = np.searchsorted(row, row, side="left")
    keep = order[np.arange(row.size) - starts < top_k]
    return sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=matrix.shape)


def shared_entities(
    graph: TrainingGraph, max_items: int = SHARED_ENTITY_MAX_ITEMS, top_k: int = SHARED_ENTITY_TOP_K
) -> sp.csr_matrix:
    """Items that share knowledge entities or categories: IDF-weighted cosine, top-k, row-normalised.

    Any relation counts (an item's colour, material, artist, tag, genre or category), so a shop's
    own attributes reach the blend without a signal of their own; entities shared by few items
    weigh more (IDF ``log(n_items / degree)``), and the entities of more than ``max_items`` items
    are left out. Items with the same entities tie; the ``top_k`` kept are then the most
    interacted-with (a genre's neighbours are its popular items, not its lowest ids).
    """
    incidence = item_entity_incidence(graph)
    interactions = popularity(graph)
    degree = np.asarray(incidence.sum(axis=0)).ravel()
    useful = (degree >= 2) & (degree <= max_items)
    idf = np.where(useful, np.log(graph.n_items / np.maximum(degree, 1.0)), 0.0).astype(np.float32)
    weighted = (incidence @ sp.diags(idf)).tocsr()
    norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
    unit = (sp.diags(1.0 / np.maximum(norms, 1e-12)) @ weighted).tocsr().astype(np.float32)
    blocks = []
    for start in range(0, graph.n_items, _SHARED_ENTITY_BLOCK):
        block = (unit[start : start + _SHARED_ENTITY_BLOCK] @ unit.T).tocsr()
        block.setdiag(0.0, k=start)  # the block's rows are items start.., so the self-pairs are offset
        block.eliminate_zeros()
        blocks.append(top_k_per_row(block, top_k, interactions))
    shared = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, graph.n_items))
    return row_normalised(shared)
