"""One training job: pull → train and tune → write back → switch → garbage-collect.

Shared by ``kgrec train --sync`` and the Celery ``train`` task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kgrec.config import Settings
from kgrec.gateway import GraphGateway
from kgrec.model_store import artifact_name, models_dir
from workers.training.item_fold_in import FoldInBasis, basis_path, unit_rows
from workers.training.kg_lightgcn import TrainConfig
from workers.training.pipeline import train_model
from workers.training.publish import collect_garbage, write_back
from workers.training.subgraph import pull

KEEP_VERSIONS = 3

Progress = Callable[[str, float], None]


def run_training(
    gateway: GraphGateway,
    settings: Settings,
    config: TrainConfig,
    *,
    device: str,
    version: str,
    progress: Progress | None = None,
    keep: int = KEEP_VERSIONS,
) -> dict[str, Any]:
    """Train a new model version from the live graph and make it active; returns a summary."""
    report = progress or (lambda _stage, _fraction: None)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    report("pull", 0.0)
    graph = pull(gateway, int(time.time() * 1000), settings.half_life_ms)
    if graph.inter_user.size == 0:
        raise ValueError("the graph holds no interactions to train on (import data or post events first)")
    timings["pull_s"] = time.perf_counter() - started

    started = time.perf_counter()
    result = train_model(
        graph,
        config,
        device=device,
        text_cache_dir=Path(settings.data_dir) / "text-embeddings",
        version=version,
        on_progress=lambda stage, fraction: report(stage, 0.05 + 0.75 * fraction),
    )
    timings["train_and_tune_s"] = time.perf_counter() - started

    started = time.perf_counter()
    folder = models_dir(settings.data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    FoldInBasis(
        item_embeddings=result.artifacts.item_embeddings,
        text_vectors=result.text_vectors,
        brand_ids=graph.brand_ids,
        brand_vectors=unit_rows(result.embeddings.brands),
        category_ids=graph.category_ids,
        category_vectors=unit_rows(result.embeddings.categories),
    ).save(basis_path(folder, artifact_name(version)))
    write_back(gateway, result, graph, folder, on_progress=lambda f: report("write-back", 0.8 + 0.18 * f))
    timings["write_back_s"] = time.perf_counter() - started
    removed = collect_garbage(gateway, folder, keep)
    report("done", 1.0)
    return {
        "version": version,
        "counts": result.counts,
        "validation": result.validation,
        "weights": result.artifacts.weights,
        "recency_decay": result.artifacts.recency_decay,
        "timings": {**timings, **result.timings},
        "seconds_per_epoch": result.embeddings.seconds_per_epoch,
        "removed_versions": removed,
    }
