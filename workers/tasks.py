"""Celery tasks. Each is idempotent, so a redelivery after a worker crash is harmless."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from app.graph import graph, settings
from kgrec.maintenance import prune
from workers.training.job import run_training
from workers.training.model import TrainConfig, resolve_device


@shared_task(name="workers.tasks.prune_graph", acks_late=True)
def prune_graph() -> dict[str, int]:
    """Prune faded interest edges and expired event ids (scheduled by beat)."""
    result = prune(graph(), settings())
    return {"edges": result.edges, "events": result.events}


@shared_task(bind=True, name="workers.tasks.train", acks_late=True, reject_on_worker_lost=True)
def train(
    self: Task, epochs: int = 8, seed: int = 7, device: str = "auto", use_knowledge: bool = True
) -> dict[str, Any]:
    """Train and activate a new model version; progress is readable at GET /v1/jobs/{id}.

    The version id is derived from the task id, so a redelivered task rewrites
    the same version rather than adding one.
    """

    def progress(stage: str, fraction: float) -> None:
        self.update_state(state="PROGRESS", meta={"stage": stage, "percent": round(100 * fraction, 1)})

    config = TrainConfig(epochs=epochs, seed=seed, use_knowledge=use_knowledge)
    return run_training(
        graph(),
        settings(),
        config,
        device=resolve_device(device),
        version=f"job-{self.request.id}",
        progress=progress,
    )
