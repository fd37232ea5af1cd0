"""Periodic upkeep of the interest graph: prune faded edges and expired idempotency keys."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from graph_schema.statements.admin import DELETE_NODES_BATCH
from graph_schema.statements.events import (
    PRUNE_FADED_EDGES,
    PRUNE_FADED_EDGES_OF_USERS,
    PRUNE_OLD_EVENTS,
    PRUNE_USER_PAGE,
)
from kgrec.config import Settings
from kgrec.decay import DAY_MS
from kgrec.gateway import GraphGateway

PRUNE_BATCH = 10_000  # deletions one prune statement may make
PRUNE_USERS = 1_000  # users whose edges one statement of a prune by batches reads
PRUNE_PAGE = 10_000  # user ids one read of a prune by batches returns (and the prune holds)


@dataclass(frozen=True)
class PruneResult:
    """How many edges and Event nodes a prune removed."""

    edges: int
    events: int


def user_batches(gateway: GraphGateway, users: int, page: int = PRUNE_PAGE) -> Iterator[list[str]]:
    """Every user id once, in id order, in consecutive batches of at most ``users``.

    Read in pages of ``page`` ids after the last one read (:data:`~graph_schema.statements.events.
    PRUNE_USER_PAGE`), so at most one page is held, however many users the graph has. Each page is
    a scan of the users (a keyset range on the indexed id skips users on FalkorDB), so a page is
    larger than a batch: fewer scans. A user created during the prune is met if its id sorts after
    the page being read; one deleted is simply not found by its batch.
    """
    after = ""
    while True:
        ids = [row["id"] for row in gateway.read(PRUNE_USER_PAGE, {"after": after, "limit": page})]
        for start in range(0, len(ids), users):
            yield ids[start : start + users]
        if len(ids) < page:
            return
        after = ids[-1]


def prune(
    gateway: GraphGateway,
    settings: Settings,
    now_ms: int | None = None,
    *,
    users: int = PRUNE_USERS,
    limit: int = PRUNE_BATCH,
    page: int = PRUNE_PAGE,
) -> PruneResult:
    """Delete edges whose decayed weight fell below the threshold, and Event ids past retention.

    Works in bounded batches, each one atomic, so it never holds the graph for long: first one
    pass over every edge, deleting at most ``limit``; if that many had faded, the rest user
    batch by user batch, a statement reading the edges of at most ``users`` users (a batch
    that reaches the limit runs again for its users), so that a kept edge is read by the first pass
    and by its batch's statements, not by one statement per 10,000 deletions over the whole graph.
    The user ids are read ``page`` at a time (:func:`user_batches`), so memory does not grow with
    the number of users.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    decay = {"now": now_ms, "half_life_ms": settings.half_life_ms, "threshold": settings.prune_weight_below}
    edges = gateway.write(PRUNE_FADED_EDGES, {**decay, "limit": limit}).relationships_deleted
    if edges >= limit:
        for ids in user_batches(gateway, users, page):
            while True:
                summary = gateway.write(PRUNE_FADED_EDGES_OF_USERS, {**decay, "ids": ids, "limit": limit})
                edges += summary.relationships_deleted
                if summary.relationships_deleted < limit:
                    break
    events = 0
    before = now_ms - int(settings.event_retention_days * DAY_MS)
    while True:
        summary = gateway.write(PRUNE_OLD_EVENTS, {"before": before, "limit": limit})
        events += summary.nodes_deleted
        if summary.nodes_deleted < limit:
            break
    return PruneResult(edges=edges, events=events)


def clear_graph(gateway: GraphGateway) -> None:
    """Delete every node of the graph in bounded batches (scratch graphs, tests)."""
    while gateway.write(DELETE_NODES_BATCH, {"limit": PRUNE_BATCH}).nodes_deleted:
        pass
