"""Baselines for ``kgrec evaluate``, trained on the same pulled graph as the served model.

BPR-MF and LightGCN are trained to convergence: on the validation graph (each
user's latest training interaction held out, :mod:`workers.training.validation`)
they are scored every :attr:`Stopping.every` epochs on validation NDCG@10 and
stop after :attr:`Stopping.patience` evaluations without a new best, or at the
epoch cap. The test users' vectors then include their latest training item:
LightGCN propagates the best epoch's embedding table over the whole training
graph; BPR-MF is trained again, same seed, for the best epoch count on it
(:func:`fit_early_stopped`).
EASE lives in :mod:`workers.training.ease`, SASRec in :mod:`workers.training.sasrec`.

``markov`` (transitions alone) and ``copurchase`` (the co-purchase knowledge
links alone) are scored through :class:`kgrec.recommender.Recommender`, with
the recency decay (and, for co-purchase, which relations) chosen on validation.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch_geometric.nn.models import LightGCN

from graph_schema.allow_list import KNOWLEDGE_RELATIONS
from kgrec.item_graphs import popularity
from kgrec.recommender import ModelArtifacts
from kgrec.signals import SIGNALS_BY_NAME, signal
from kgrec.training_graph import TrainingGraph
from workers.training.config import TrainConfig
from workers.training.holdout import hold_out_latest
from workers.training.kg_model import seed_everything
from workers.training.pipeline import tune, user_histories
from workers.training.validation import EarlyStop, ValidationSet, early_stopping


@dataclass(frozen=True)
class Stopping:
    """Early-stopping schedule of one baseline: evaluate every ``every`` epochs, up to ``max_epochs``."""

    every: int
    patience: int
    max_epochs: int


# Epoch caps documented in the README. Measured on Amazon Beauty: BPR-MF's validation NDCG@10 still
# rises at 300 epochs (0.0138 at 20, 0.0213 at 300); LightGCN peaks near 50 epochs (0.0362).
BPRMF_STOPPING = Stopping(every=20, patience=3, max_epochs=1_000)
LIGHTGCN_STOPPING = Stopping(every=10, patience=3, max_epochs=300)
BPRMF_BATCH, BPRMF_LR = 8_192, 0.005
LIGHTGCN_BATCH, LIGHTGCN_LR = 16_384, 0.01


def rank_dense(
    scores_for: Callable[[np.ndarray], np.ndarray],
    seen: Sequence[np.ndarray],
    n_users: int,
    k: int,
    batch: int = 2_048,
) -> list[np.ndarray]:
    """Top-k item indices per user from a function (user index array) -> dense scores.

    A user's ``seen`` items are never ranked, as in :meth:`kgrec.recommender.Recommender.rank`:
    a user with fewer than ``k`` other items gets just those.
    """
    ranked: list[np.ndarray] = []
    for start in range(0, n_users, batch):
        users = np.arange(start, min(start + batch, n_users))
        scores = np.array(scores_for(users), dtype=np.float32, copy=True)
        for row, user in enumerate(users):
            scores[row, seen[user]] = -np.inf
        k = min(k, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        finite = np.isfinite(np.take_along_axis(values, order, axis=1))
        ranked.extend(
            row[keep] for row, keep in zip(np.take_along_axis(top, order, axis=1), finite, strict=True)
        )
    return ranked


def _seconds_since(started: float, device: str) -> float:
    """Seconds since ``started``, once the device has finished its queued work (CUDA runs ahead)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def _interaction_tensors(graph: TrainingGraph, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(graph.inter_user).to(device), torch.from_numpy(graph.inter_item).to(device)


class BprMf:
    """Matrix factorisation with BPR loss and uniform negatives, one epoch per :meth:`epoch`.

    L2 on the batch's rows (weight ``config.l2``), Adam. (Lazy, sparse Adam was tried: it
    plateaued at half the validation NDCG.)
    """

    def __init__(
        self, graph: TrainingGraph, config: TrainConfig, device: str = "cpu", batch_size: int | None = None
    ) -> None:
        """Initialise factors for ``graph``'s users and items (seeded)."""
        seed_everything(config.seed)
        self.graph, self.config, self.device = graph, config, device
        self.batch_size = batch_size or config.batch_size
        self.users_t, self.items_t = _interaction_tensors(graph, device)
        self.user_factors = nn.Embedding(graph.n_users, config.dim).to(device)
        self.item_factors = nn.Embedding(graph.n_items, config.dim).to(device)
        for table in (self.user_factors, self.item_factors):
            nn.init.normal_(table.weight, std=0.1)
        self.optimiser = torch.optim.Adam(
            [*self.user_factors.parameters(), *self.item_factors.parameters()], lr=config.lr
        )
        self.generator = torch.Generator(device=device).manual_seed(config.seed)

    def epoch(self) -> float:
        """One pass over the interactions; returns its seconds."""
        started = time.perf_counter()
        n = self.users_t.numel()
        order = torch.randperm(n, generator=self.generator, device=self.device)
        for start in range(0, n, self.batch_size):
            batch = order[start : start + self.batch_size]
            negatives = torch.randint(
                0, self.graph.n_items, (batch.numel(),), generator=self.generator, device=self.device
            )
            u = self.user_factors(self.users_t[batch])
            pos, neg = self.item_factors(self.items_t[batch]), self.item_factors(negatives)
            loss = -nn.functional.logsigmoid((u * pos).sum(-1) - (u * neg).sum(-1)).mean()
            reg = (u.pow(2).sum() + pos.pow(2).sum() + neg.pow(2).sum()) / batch.numel()
            self.optimiser.zero_grad()
            (loss + self.config.l2 * reg).backward()
            self.optimiser.step()
        return _seconds_since(started, self.device)

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(user factors, item factors) as float32 arrays."""
        return (
            self.user_factors.weight.detach().cpu().numpy().copy(),
            self.item_factors.weight.detach().cpu().numpy().copy(),
        )


def lightgcn_adjacency(graph: TrainingGraph) -> torch.Tensor:
    """Normalised user–item bipartite adjacency (CSR), as PyG's LightGCN example builds it."""
    n = graph.n_users + graph.n_items
    rows = np.concatenate([graph.inter_user, graph.n_users + graph.inter_item])
    cols = np.concatenate([graph.n_users + graph.inter_item, graph.inter_user])
    matrix = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n, n))
    matrix.data[:] = 1.0
    inv_sqrt = 1.0 / np.sqrt(np.maximum(np.asarray(matrix.sum(axis=1)).ravel(), 1.0))
    normalised = (sp.diags(inv_sqrt) @ matrix @ sp.diags(inv_sqrt)).tocsr()
    with warnings.catch_warnings():  # torch's "sparse CSR is beta" notices, once per build
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(normalised.indptr.astype(np.int64)),
            torch.from_numpy(normalised.indices.astype(np.int64)),
            torch.from_numpy(normalised.data.astype(np.float32)),
            size=(n, n),
        )


class _SymmetricProduct(torch.autograd.Function):
    """``A @ x`` for a symmetric sparse ``A``: the gradient is ``A @ grad`` too, with no transpose.

    torch's CSR backward transposes ``A`` on every call, which made it 5× slower than the forward.
    """

    @staticmethod
    def forward(ctx: object, adjacency: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.adjacency = adjacency  # type: ignore[attr-defined]
        return adjacency @ x

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple[None, torch.Tensor]:  # type: ignore[override]
        return None, ctx.adjacency @ grad  # type: ignore[attr-defined]


class StockLightGcn:
    """PyG's stock LightGCN on the user–item graph, BPR loss, one epoch per :meth:`epoch`.

    ``fast`` propagates PyG's embedding table with PyG's layer weights through
    :class:`_SymmetricProduct` (the same sums as ``LightGCN.get_embedding``, a faster
    backward); ``bench/train.py`` times the untouched PyG path (``fast=False``).
    """

    def __init__(
        self,
        graph: TrainingGraph,
        config: TrainConfig,
        device: str = "cpu",
        batch_size: int | None = None,
        fast: bool = True,
    ) -> None:
        """Build the adjacency and the model for ``graph`` (seeded)."""
        seed_everything(config.seed)
        self.graph, self.config, self.device, self.fast = graph, config, device, fast
        self.batch_size = batch_size or config.batch_size
        self.adjacency = lightgcn_adjacency(graph).to(device)
        self.model = LightGCN(graph.n_users + graph.n_items, config.dim, config.layers, normalize=False).to(
            device
        )
        self.optimiser = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.users_t, self.items_t = _interaction_tensors(graph, device)
        self.generator = torch.Generator(device=device).manual_seed(config.seed)

    def epoch(self) -> float:
        """One pass over the interactions; returns its seconds."""
        started = time.perf_counter()
        graph, n_users = self.graph, self.graph.n_users
        n = self.users_t.numel()
        order = torch.randperm(n, generator=self.generator, device=self.device)
        for start in range(0, n, self.batch_size):
            batch = order[start : start + self.batch_size]
            negatives = torch.randint(
                0, graph.n_items, (batch.numel(),), generator=self.generator, device=self.device
            )
            embeddings = self.propagate()
            users, items = self.users_t[batch], self.items_t[batch]
            u, pos, neg = embeddings[users], embeddings[n_users + items], embeddings[n_users + negatives]
            pos_rank, neg_rank = (u * pos).sum(-1), (u * neg).sum(-1)
            node_ids = torch.cat([users, n_users + items, n_users + negatives])
            loss = self.model.recommendation_loss(
                pos_rank, neg_rank, node_id=node_ids, lambda_reg=self.config.l2
            )
            self.optimiser.zero_grad()
            loss.backward()
            self.optimiser.step()
        return _seconds_since(started, self.device)

    def propagate(self, adjacency: torch.Tensor | None = None) -> torch.Tensor:
        """Every node's final embedding: the layer-weighted sum of its propagated embeddings."""
        adjacency = self.adjacency if adjacency is None else adjacency
        if not self.fast:
            return self.model.get_embedding(adjacency)
        x = self.model.embedding.weight
        out = x * self.model.alpha[0]
        for layer in range(self.model.num_layers):
            x = _SymmetricProduct.apply(adjacency, x)
            out = out + x * self.model.alpha[layer + 1]
        return out

    def embeddings(self, graph: TrainingGraph | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(user, item) propagated embeddings as float32 arrays, over ``graph``'s interactions if given.

        LightGCN's propagation has no parameters, so the learnt table can be propagated over a
        graph with more interactions (the whole training graph after early stopping on less).
        """
        adjacency = None if graph is None else lightgcn_adjacency(graph).to(self.device)
        with torch.no_grad():
            final = self.propagate(adjacency).cpu().numpy()
        return final[: self.graph.n_users], final[self.graph.n_users :]


def train_lightgcn(
    graph: TrainingGraph, config: TrainConfig, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Stock LightGCN for ``config.epochs`` epochs on ``device``: (users, items, seconds per epoch)."""
    trainer = StockLightGcn(graph, config, device, fast=False)
    seconds = [trainer.epoch() for _ in range(config.epochs)]
    users, items = trainer.embeddings()
    return users, items, seconds


@dataclass
class FactorFit:
    """A factor model at its validation-best epoch, for the whole training graph's users."""

    users: np.ndarray
    items: np.ndarray
    stop: EarlyStop[object]
    seconds_per_epoch: float


def fit_early_stopped(
    make: Callable[[TrainingGraph], BprMf | StockLightGcn],
    graph: TrainingGraph,
    validation: ValidationSet,
    stopping: Stopping,
) -> FactorFit:
    """Early-stop ``make(validation graph)`` on validation NDCG@10, then bring in the held-out items.

    LightGCN's propagation has no parameters: the best epoch's embedding table is
    propagated over the whole training graph, so each user's vector includes their
    latest item. BPR-MF's user factors can only learn it: it is trained again, same
    seed, for the best epoch count on the whole training graph.
    """
    trainer = make(validation.graph)
    seconds: list[float] = []

    def score() -> float:
        users, items = trainer.embeddings()
        return validation.ndcg(lambda idx: users[idx] @ items.T)

    def snapshot() -> object:
        if isinstance(trainer, StockLightGcn):
            return trainer.model.embedding.weight.detach().clone()
        return None

    stop = early_stopping(
        lambda: seconds.append(trainer.epoch()),
        score,
        snapshot,
        max_epochs=stopping.max_epochs,
        every=stopping.every,
        patience=stopping.patience,
    )
    if isinstance(trainer, StockLightGcn):
        with torch.no_grad():
            trainer.model.embedding.weight.copy_(stop.best)  # type: ignore[arg-type]
        users, items = trainer.embeddings(graph)
    else:
        final = make(graph)
        for _ in range(max(stop.best_epoch, 1)):
            seconds.append(final.epoch())
        users, items = final.embeddings()
    return FactorFit(users, items, stop, float(np.mean(seconds)))


def fit_bprmf(graph: TrainingGraph, validation: ValidationSet, config: TrainConfig, device: str) -> FactorFit:
    """BPR-MF trained to convergence (see :func:`fit_early_stopped`)."""
    config = replace(config, lr=BPRMF_LR)
    return fit_early_stopped(
        lambda g: BprMf(g, config, device, BPRMF_BATCH), graph, validation, BPRMF_STOPPING
    )


def fit_lightgcn(
    graph: TrainingGraph, validation: ValidationSet, config: TrainConfig, device: str
) -> FactorFit:
    """Stock LightGCN trained to convergence (see :func:`fit_early_stopped`)."""
    config = replace(config, lr=LIGHTGCN_LR)
    return fit_early_stopped(
        lambda g: StockLightGcn(g, config, device, LIGHTGCN_BATCH), graph, validation, LIGHTGCN_STOPPING
    )


# --- signals alone, through the Recommender -------------------------------------------------

MARKOV_SIGNAL = "transitions"


def signal_artifacts(graph: TrainingGraph, names: Sequence[str], version: str) -> ModelArtifacts:
    """A model of the named :mod:`kgrec.signals` alone (weight 1 each, no embedding term)."""
    return ModelArtifacts(
        version=version,
        item_ids=graph.item_ids,
        item_embeddings=np.zeros((graph.n_items, 1), dtype=np.float32),
        components={name: signal(name).build(graph) for name in names},
        weights=dict.fromkeys(names, 1.0),
        recency_decay=1.0,
        popularity=popularity(graph),
    )


def copurchase_signals() -> list[str]:
    """The undirected co-purchase knowledge signals (also_bought, also_viewed, bought_together)."""
    return [name for name in KNOWLEDGE_RELATIONS if name in SIGNALS_BY_NAME]


def has_copurchase(graph: TrainingGraph) -> bool:
    """Whether ``graph`` holds any co-purchase link between its items."""
    return any(graph.knowledge.get(name, np.zeros((0, 2))).shape[0] for name in copurchase_signals())


def tuned_signal_model(
    graph: TrainingGraph,
    names: Sequence[str],
    version: str,
    seed: int,
    blends: Sequence[dict[str, float]] = (),
) -> tuple[ModelArtifacts, dict[str, float]]:
    """The signals ``names`` through the Recommender, with the recency decay (and blend) chosen on validation.

    The choice is made on :func:`hold_out_latest`'s graph, exactly as kgrec's blend is;
    returns the artifacts on the whole ``graph`` and the validation metrics of the choice.
    """
    fit, targets = hold_out_latest(graph)
    fit_model = signal_artifacts(fit, names, version)
    weights, decay, metrics = tune(
        fit_model,
        user_histories(fit),
        targets,
        graph.item_ids,
        seed=seed,
        candidates=list(blends) or [dict(fit_model.weights)],
    )
    return replace(signal_artifacts(graph, names, version), weights=weights, recency_decay=decay), metrics


def copurchase_blends(names: Sequence[str]) -> list[dict[str, float]]:
    """Blends tried for the co-purchase baseline: all relations equally, and each alone."""
    alone = [{other: float(other == name) for other in names} for name in names]
    return [dict.fromkeys(names, 1.0), *alone]
