"""KG-LightGCN: LightGCN propagation over users, items, brands and categories.

The graph joins user–item interactions with item → brand, item → category and
item ↔ item knowledge edges (also_bought, also_viewed, bought_together), so
items that share a brand, category or co-purchase neighbourhood pull together
even when few users connect them. Item nodes also get their text embedding
through a learnt projection, which is how brand-new items get an embedding.

Propagation uses PyG's ``LGConv`` over a precomputed, symmetrically normalised
CSR adjacency (``normalize=False``), as PyG's LightGCN example does on large
graphs; training is BPR with uniform negative sampling.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch_geometric.nn import LGConv

from kgrec.training_graph import TrainingGraph
from workers.training.config import TrainConfig


@dataclass(frozen=True)
class NodeLayout:
    """Where each node type starts in the joint node index."""

    users: int
    items: int
    brands: int
    categories: int

    @property
    def item_offset(self) -> int:
        """Index of the first item node."""
        return self.users

    @property
    def brand_offset(self) -> int:
        """Index of the first brand node."""
        return self.users + self.items

    @property
    def category_offset(self) -> int:
        """Index of the first category node."""
        return self.brand_offset + self.brands

    @property
    def total(self) -> int:
        """Number of nodes."""
        return self.category_offset + self.categories


def build_adjacency(graph: TrainingGraph, use_knowledge: bool) -> tuple[torch.Tensor, NodeLayout]:
    """Symmetric, degree-normalised adjacency of the joint graph as a torch CSR tensor."""
    layout = NodeLayout(graph.n_users, graph.n_items, len(graph.brand_ids), len(graph.category_ids))
    src = [graph.inter_user, layout.item_offset + graph.inter_item]
    dst = [layout.item_offset + graph.inter_item, graph.inter_user]
    if use_knowledge:
        has_brand = np.flatnonzero(graph.item_brand >= 0)
        pairs = [
            (layout.item_offset + has_brand, layout.brand_offset + graph.item_brand[has_brand]),
            (
                layout.item_offset + graph.item_category_pairs[:, 0],
                layout.category_offset + graph.item_category_pairs[:, 1],
            ),
            *(
                (layout.item_offset + edges[:, 0], layout.item_offset + edges[:, 1])
                for edges in graph.knowledge.values()
            ),
        ]
        for a, b in pairs:
            src += [a, b]
            dst += [b, a]
    rows, cols = np.concatenate(src), np.concatenate(dst)
    adjacency = sp.csr_matrix(
        (np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(layout.total, layout.total)
    )
    adjacency.data[:] = 1.0
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inv_sqrt = 1.0 / np.sqrt(np.maximum(degree, 1.0))
    normalised = (sp.diags(inv_sqrt) @ adjacency @ sp.diags(inv_sqrt)).tocsr()
    tensor = torch.sparse_csr_tensor(
        torch.from_numpy(normalised.indptr.astype(np.int64)),
        torch.from_numpy(normalised.indices.astype(np.int64)),
        torch.from_numpy(normalised.data.astype(np.float32)),
        size=(layout.total, layout.total),
    )
    return tensor, layout


class KnowledgeLightGCN(nn.Module):
    """Free node embeddings (+ projected item text) propagated with LGConv, layers averaged."""

    def __init__(self, layout: NodeLayout, dim: int, layers: int, text_dim: int | None) -> None:
        super().__init__()
        self.layout = layout
        self.embedding = nn.Embedding(layout.total, dim)
        nn.init.normal_(self.embedding.weight, std=0.1)
        self.text_projection = nn.Linear(text_dim, dim, bias=False) if text_dim else None
        if self.text_projection is not None:
            nn.init.normal_(self.text_projection.weight, std=0.01)
        self.convs = nn.ModuleList(LGConv(normalize=False) for _ in range(layers))

    def initial(self, text: torch.Tensor | None) -> torch.Tensor:
        """Layer-0 node features: free embeddings, plus projected text on item rows."""
        x = self.embedding.weight
        if self.text_projection is not None and text is not None:
            start = self.layout.item_offset
            projected = self.text_projection(text)
            x = torch.cat(
                [
                    x[:start],
                    x[start : start + projected.shape[0]] + projected,
                    x[start + projected.shape[0] :],
                ]
            )
        return x

    def forward(self, adjacency: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
        """Final node embeddings: the mean over layers 0..L."""
        x = self.initial(text)
        out = x / (len(self.convs) + 1)
        for conv in self.convs:
            x = conv(x, adjacency)
            out = out + x / (len(self.convs) + 1)
        return out


@dataclass
class TrainedEmbeddings:
    """Node embeddings after training, split by node type, plus timing."""

    users: np.ndarray
    items: np.ndarray
    brands: np.ndarray
    categories: np.ndarray
    seconds_per_epoch: list[float]
    losses: list[float]


def resolve_device(name: str) -> str:
    """``auto`` picks CUDA when a GPU is present, the CPU otherwise."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available")
    return name


def seed_everything(seed: int) -> None:
    """Make a run repeatable on CPU (and as far as cuDNN allows on GPU)."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(False)


def train_embeddings(
    graph: TrainingGraph,
    config: TrainConfig,
    device: str = "cpu",
    text: np.ndarray | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainedEmbeddings:
    """Train KG-LightGCN with BPR on the graph's interactions."""
    seed_everything(config.seed)
    adjacency, layout = build_adjacency(graph, config.use_knowledge)
    adjacency = adjacency.to(device)
    text_tensor = torch.from_numpy(text).to(device) if (config.use_text and text is not None) else None
    model = KnowledgeLightGCN(
        layout, config.dim, config.layers, text_tensor.shape[1] if text_tensor is not None else None
    ).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    users = torch.from_numpy(graph.inter_user).to(device)
    items = torch.from_numpy(graph.inter_item).to(device)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    seconds: list[float] = []
    losses: list[float] = []
    for epoch in range(config.epochs):
        started = time.perf_counter()
        order = torch.randperm(users.numel(), generator=generator).to(device)
        total = 0.0
        for start in range(0, users.numel(), config.batch_size):
            batch = order[start : start + config.batch_size]
            negatives = torch.randint(0, graph.n_items, (batch.numel(),), generator=generator).to(device)
            out = model(adjacency, text_tensor)
            u = out[users[batch]]
            pos = out[layout.item_offset + items[batch]]
            neg = out[layout.item_offset + negatives]
            loss = -nn.functional.logsigmoid((u * pos).sum(-1) - (u * neg).sum(-1)).mean()
            weights = model.embedding.weight
            reg = (
                weights[users[batch]].pow(2).sum()
                + weights[layout.item_offset + items[batch]].pow(2).sum()
                + weights[layout.item_offset + negatives].pow(2).sum()
            ) / batch.numel()
            optimiser.zero_grad()
            (loss + config.l2 * reg).backward()
            optimiser.step()
            total += float(loss.detach()) * batch.numel()
        seconds.append(time.perf_counter() - started)
        losses.append(total / max(users.numel(), 1))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    with torch.no_grad():
        final = model(adjacency, text_tensor).cpu().numpy()
    return TrainedEmbeddings(
        users=final[: layout.users],
        items=final[layout.item_offset : layout.brand_offset],
        brands=final[layout.brand_offset : layout.category_offset],
        categories=final[layout.category_offset :],
        seconds_per_epoch=seconds,
        losses=losses,
    )
