"""Celery tasks. Each is idempotent, so a redelivery after a worker crash is harmless."""

from __future__ import annotations

from celery import shared_task

from app.graph import graph, settings
from kgrec.maintenance import prune


@shared_task(name="workers.tasks.prune_graph", acks_late=True)
def prune_graph() -> dict[str, int]:
    """Prune faded interest edges and expired event ids (scheduled by beat)."""
    result = prune(graph(), settings())
    return {"edges": result.edges, "events": result.events}
