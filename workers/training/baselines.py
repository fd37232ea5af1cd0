"""Baselines for ``kgrec evaluate``, trained on the same pulled graph as the served model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch_geometric.nn.models import LightGCN

from kgrec.training_graph import TrainingGraph
from workers.training.config import TrainConfig
from workers.training.kg_lightgcn import seed_everything


def rank_dense(
    scores_for: callable,  # type: ignore[valid-type]
    seen: Sequence[np.ndarray],
    n_users: int,
    k: int,
    batch: int = 2_048,
) -> list[np.ndarray]:
    """Top-k item indices per user from a function (user index array) -> dense scores."""
    ranked: list[np.ndarray] = []
    for start in range(0, n_users, batch):
        users = np.arange(start, min(start + batch, n_users))
        scores = np.asarray(scores_for(users), dtype=np.float32)
        for row, user in enumerate(users):
            scores[row, seen[user]] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        ranked.extend(np.take_along_axis(top, order, axis=1))
    return ranked


def _interaction_tensors(graph: TrainingGraph) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(graph.inter_user), torch.from_numpy(graph.inter_item)


def train_bprmf(graph: TrainingGraph, config: TrainConfig, epochs: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Matrix factorisation with BPR loss; returns (user, item) factors."""
    seed_everything(config.seed)
    users_t, items_t = _interaction_tensors(graph)
    user_factors = nn.Embedding(graph.n_users, config.dim)
    item_factors = nn.Embedding(graph.n_items, config.dim)
    for table in (user_factors, item_factors):
        nn.init.normal_(table.weight, std=0.1)
    optimiser = torch.optim.Adam([*user_factors.parameters(), *item_factors.parameters()], lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(epochs):
        order = torch.randperm(users_t.numel(), generator=generator)
        for start in range(0, users_t.numel(), config.batch_size):
            batch = order[start : start + config.batch_size]
            negatives = torch.randint(0, graph.n_items, (batch.numel(),), generator=generator)
            u = user_factors(users_t[batch])
            pos, neg = item_factors(items_t[batch]), item_factors(negatives)
            loss = -nn.functional.logsigmoid((u * pos).sum(-1) - (u * neg).sum(-1)).mean()
            reg = (u.pow(2).sum() + pos.pow(2).sum() + neg.pow(2).sum()) / batch.numel()
            optimiser.zero_grad()
            (loss + config.l2 * reg).backward()
            optimiser.step()
    return user_factors.weight.detach().numpy(), item_factors.weight.detach().numpy()


def lightgcn_adjacency(graph: TrainingGraph) -> torch.Tensor:
    """Normalised user–item bipartite adjacency (CSR), as PyG's LightGCN example builds it."""
    n = graph.n_users + graph.n_items
    rows = np.concatenate([graph.inter_user, graph.n_users + graph.inter_item])
    cols = np.concatenate([graph.n_users + graph.inter_item, graph.inter_user])
    matrix = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n, n))
    matrix.data[:] = 1.0
    inv_sqrt = 1.0 / np.sqrt(np.maximum(np.asarray(matrix.sum(axis=1)).ravel(), 1.0))
    normalised = (sp.diags(inv_sqrt) @ matrix @ sp.diags(inv_sqrt)).tocsr()
    return torch.sparse_csr_tensor(
        torch.from_numpy(normalised.indptr.astype(np.int64)),
        torch.from_numpy(normalised.indices.astype(np.int64)),
        torch.from_numpy(normalised.data.astype(np.float32)),
        size=(n, n),
    )


def train_lightgcn(graph: TrainingGraph, config: TrainConfig) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """PyG's stock LightGCN on the user–item graph; returns (users, items, seconds per epoch)."""
    import time

    seed_everything(config.seed)
    adjacency = lightgcn_adjacency(graph)
    model = LightGCN(graph.n_users + graph.n_items, config.dim, config.layers, normalize=False)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    users_t, items_t = _interaction_tensors(graph)
    generator = torch.Generator().manual_seed(config.seed)
    seconds = []
    for _ in range(config.epochs):
        started = time.perf_counter()
        order = torch.randperm(users_t.numel(), generator=generator)
        for start in range(0, users_t.numel(), config.batch_size):
            batch = order[start : start + config.batch_size]
            negatives = torch.randint(0, graph.n_items, (batch.numel(),), generator=generator)
            embeddings = model.get_embedding(adjacency)
            u = embeddings[users_t[batch]]
            pos = embeddings[graph.n_users + items_t[batch]]
            neg = embeddings[graph.n_users + negatives]
            pos_rank, neg_rank = (u * pos).sum(-1), (u * neg).sum(-1)
            node_ids = torch.cat([users_t[batch], graph.n_users + items_t[batch], graph.n_users + negatives])
            loss = model.recommendation_loss(pos_rank, neg_rank, node_id=node_ids, lambda_reg=config.l2)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        seconds.append(time.perf_counter() - started)
    with torch.no_grad():
        final = model.get_embedding(adjacency).numpy()
    return final[: graph.n_users], final[graph.n_users :], seconds
