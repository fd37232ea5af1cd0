"""Train a servable model from a pulled training graph.

1. Hold out each user's most recent interaction (users with at least 3) for validation.
2. Train KG-LightGCN on the rest (with item text features).
3. Choose the blend weights (around the defaults of :mod:`kgrec.signals`) and the
   recency decay that maximise validation NDCG@10, scoring through
   :class:`kgrec.recommender.Recommender` itself.
4. Rebuild the signals' item–item graphs on all interactions and package the artifacts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kgrec.item_graphs import popularity
from kgrec.recommender import HistoryEntry, ModelArtifacts, Recommender
from kgrec.signals import build_signals, candidate_weights
from kgrec.training_graph import TrainingGraph
from workers.training.config import TrainConfig
from workers.training.kg_lightgcn import TrainedEmbeddings, train_embeddings
from workers.training.metrics import ranking_metrics
from workers.training.text import TextEmbeddingCache

MIN_HISTORY_FOR_VALIDATION = 3
MAX_TUNING_USERS = 5_000
DECAYS = (0.5, 0.7, 1.0)


@dataclass
class TrainingResult:
    """A trained model and what we know about it."""

    artifacts: ModelArtifacts
    embeddings: TrainedEmbeddings
    validation: dict[str, float]
    counts: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)
    text_vectors: np.ndarray | None = None  # (n_items, 384) item text embeddings, when text was used


def subset(graph: TrainingGraph, keep: np.ndarray) -> TrainingGraph:
    """The same graph with only the interactions where ``keep`` is true."""
    return replace(
        graph,
        inter_user=graph.inter_user[keep],
        inter_item=graph.inter_item[keep],
        inter_weight=graph.inter_weight[keep],
        inter_order=graph.inter_order[keep],
    )


def hold_out_latest(graph: TrainingGraph) -> tuple[TrainingGraph, dict[int, int]]:
    """Remove each user's most recent interaction (if they have enough); returns (rest, user → item)."""
    order = np.lexsort((graph.inter_item, graph.inter_order, graph.inter_user))
    users = graph.inter_user[order]
    last = np.flatnonzero(np.r_[users[1:] != users[:-1], True])
    sizes = np.diff(np.r_[-1, last])
    chosen = order[last[sizes >= MIN_HISTORY_FOR_VALIDATION]]
    keep = np.ones(graph.inter_user.size, dtype=bool)
    keep[chosen] = False
    targets = {int(graph.inter_user[i]): int(graph.inter_item[i]) for i in chosen}
    return subset(graph, keep), targets


def user_histories(graph: TrainingGraph) -> list[list[HistoryEntry]]:
    """Every user's history as the Recommender takes it."""
    result: list[list[HistoryEntry]] = [[] for _ in range(graph.n_users)]
    for u, i, w, o in zip(
        graph.inter_user, graph.inter_item, graph.inter_weight, graph.inter_order, strict=True
    ):
        result[int(u)].append(HistoryEntry(graph.item_ids[int(i)], float(w), int(o)))
    return result


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def evaluate_recommender(
    recommender: Recommender,
    histories: Sequence[Sequence[HistoryEntry]],
    targets: Sequence[set[str]],
    ks: Sequence[int],
    batch: int = 2_000,
) -> dict[str, float]:
    """Recall/NDCG/Hit at each k, ranking all items and excluding each user's history."""
    ranked: list[list[str]] = []
    for start in range(0, len(histories), batch):
        part = histories[start : start + batch]
        exclude = [[h.item_id for h in history] for history in part]
        ranked.extend([i for i, _ in row] for row in recommender.recommend(part, max(ks), exclude))
    return ranking_metrics(ranked, targets, ks)


def tune(
    base: ModelArtifacts,
    histories: Sequence[Sequence[HistoryEntry]],
    targets: dict[int, int],
    item_ids: Sequence[str],
    *,
    candidates: Sequence[dict[str, float]],
    seed: int,
) -> tuple[dict[str, float], float, dict[str, float]]:
    """The (weights, decay) with the best validation NDCG@10, and its metrics."""
    users = sorted(targets)
    if len(users) > MAX_TUNING_USERS:
        users = sorted(np.random.default_rng(seed).choice(users, MAX_TUNING_USERS, replace=False).tolist())
    chosen_histories = [histories[u] for u in users]
    chosen_targets = [{item_ids[targets[u]]} for u in users]
    best: tuple[float, dict[str, float], float, dict[str, float]] | None = None
    for decay in DECAYS:
        for weights in candidates:
            recommender = Recommender(replace(base, weights=weights, recency_decay=decay))
            metrics = evaluate_recommender(recommender, chosen_histories, chosen_targets, (10,))
            if best is None or metrics["ndcg@10"] > best[0]:
                best = (metrics["ndcg@10"], weights, decay, metrics)
    assert best is not None
    return best[1], best[2], best[3]


def train_model(
    graph: TrainingGraph,
    config: TrainConfig,
    *,
    device: str = "cpu",
    text_cache_dir: Path | None = None,
    version: str = "",
    on_progress: Callable[[str, float], None] | None = None,
) -> TrainingResult:
    """Train, tune and package a model from ``graph`` (see the module docstring)."""
    timings: dict[str, float] = {}
    report = on_progress or (lambda _stage, _fraction: None)
    started = time.perf_counter()
    text = None
    if config.use_text and text_cache_dir is not None:
        text = TextEmbeddingCache(text_cache_dir, device).embed(graph.item_text)
    timings["text_s"] = time.perf_counter() - started
    report("text", 0.1)

    fit_graph, targets = hold_out_latest(graph)
    started = time.perf_counter()
    embeddings = train_embeddings(
        fit_graph,
        config,
        device,
        text,
        on_epoch=lambda epoch, _loss: report("train", 0.1 + 0.6 * (epoch + 1) / config.epochs),
    )
    timings["train_s"] = time.perf_counter() - started

    started = time.perf_counter()
    item_vectors = normalised(embeddings.items)
    fit_artifacts = ModelArtifacts(
        version=version,
        item_ids=graph.item_ids,
        item_embeddings=item_vectors,
        components=build_signals(fit_graph, config.use_knowledge),
        weights={},
        recency_decay=1.0,
        popularity=popularity(fit_graph),
    )
    weights, decay, validation = tune(
        fit_artifacts,
        user_histories(fit_graph),
        targets,
        graph.item_ids,
        candidates=candidate_weights(config.use_knowledge),
        seed=config.seed,
    )
    timings["tune_s"] = time.perf_counter() - started
    report("tune", 0.9)

    artifacts = ModelArtifacts(
        version=version,
        item_ids=graph.item_ids,
        item_embeddings=item_vectors,
        components=build_signals(graph, config.use_knowledge),
        weights=weights,
        recency_decay=decay,
        popularity=popularity(graph),
        parameters={**config.__dict__, "device": device},
        facts=graph.facts,
    )
    report("done", 1.0)
    return TrainingResult(artifacts, embeddings, validation, graph.counts(), timings, text)
