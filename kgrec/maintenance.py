"""Periodic upkeep of the interest graph: prune faded edges and expired idempotency keys."""

from __future__ import annotations

import time
from dataclasses import dataclass

from graph_schema.statements.admin import DELETE_NODES_BATCH
from graph_schema.statements.events import PRUNE_FADED_EDGES, PRUNE_OLD_EVENTS
from kgrec.config import Settings
from kgrec.decay import DAY_MS
from kgrec.gateway import GraphGateway

PRUNE_BATCH = 10_000


@dataclass(frozen=True)
class PruneResult:
    """How many edges and Event nodes a prune removed."""

    edges: int
    events: int


def prune(gateway: GraphGateway, settings: Settings, now_ms: int | None = None) -> PruneResult:
    """Delete edges whose decayed weight fell below the threshold, and Event ids past retention.

    Works in bounded batches, each one atomic, so it never holds the graph for long.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    edges = events = 0
    while True:
        summary = gateway.write(
            PRUNE_FADED_EDGES,
            {
                "now": now_ms,
                "half_life_ms": settings.half_life_ms,
                "threshold": settings.prune_weight_below,
                "limit": PRUNE_BATCH,
            },
        )
        edges += summary.relationships_deleted
        if summary.relationships_deleted < PRUNE_BATCH:
            break
    before = now_ms - int(settings.event_retention_days * DAY_MS)
    while True:
        summary = gateway.write(PRUNE_OLD_EVENTS, {"before": before, "limit": PRUNE_BATCH})
        events += summary.nodes_deleted
        if summary.nodes_deleted < PRUNE_BATCH:
            break
    return PruneResult(edges=edges, events=events)


def clear_graph(gateway: GraphGateway) -> None:
    """Delete every node of the graph in bounded batches (scratch graphs, tests)."""
    while gateway.write(DELETE_NODES_BATCH, {"limit": PRUNE_BATCH}).nodes_deleted:
        pass
