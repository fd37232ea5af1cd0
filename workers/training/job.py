"""One training job: pull → train and tune → write back → switch → garbage-collect.

Every training starts at :func:`start_training` (``kgrec train --sync``, the
Celery ``train`` task, ``kgrec up --train``, the benchmarks), which names the
version; :func:`run_training` does the work under a given name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kgrec.config import Settings
from kgrec.gateway import GraphGateway
from kgrec.model_store import artifact_name, models_dir
from workers.training.config import TrainConfig
from workers.training.item_fold_in import FoldInBasis, basis_path, unit_rows
from workers.training.kg_model import resolve_device
from workers.training.pipeline import train_model
from workers.training.publish import collect_garbage, write_back
from workers.training.subgraph import pull

KEEP_VERSIONS = 3

Progress = Callable[[str, float], None]


def version_name(job_id: str | None = None) -> str:
    """The name of a new model version; the one naming scheme.

    - ``job-<job id>`` for a queued job (the Celery task id): a redelivered task
      trains under the same name and rewrites that version rather than adding one;
    - ``v<epoch milliseconds>`` for a training run in the caller's own process.
    """
    return f"job-{job_id}" if job_id else f"v{int(time.time() * 1000)}"


def start_training(
    gateway: GraphGateway,
    settings: Settings,
    config: TrainConfig,
    *,
    device: str = "auto",
    job_id: str | None = None,
    progress: Progress | None = None,
    keep: int = KEEP_VERSIONS,
) -> dict[str, Any]:
    """Train a new version named by :func:`version_name` and make it active; returns a summary.

    ``device`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``job_id`` is the id of
    the queued job this training runs for, if any.
    """
    return run_training(
        gateway,
        settings,
        config,
        device=resolve_device(device),
        version=version_name(job_id),
        progress=progress,
        keep=keep,
    )


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
    """Train version ``version`` from the live graph and make it active; returns a summary.

    Commands and tasks call :func:`start_training`, which names the version; tests
    call this directly to train under a fixed name.
    """
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
    write_back(
        gateway,
        result,
        graph,
        folder,
        on_progress=lambda f: report("write-back", 0.8 + 0.18 * f),
        embedding_batch=settings.embedding_batch,
    )
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
