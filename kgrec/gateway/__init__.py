"""Open the configured graph: Neo4j 5 when NEO4J_URI is set, the embedded FalkorDB otherwise."""

from __future__ import annotations

from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.gateway.base import (
    MAX_CONFLICT_RETRIES,
    GraphConflict,
    GraphGateway,
    GraphQueryError,
    GraphTimeout,
    GraphUnavailable,
    WriteSummary,
    batched,
    retry_on_conflict,
)


def open_gateway(
    settings: Settings, graph_name: str | None = None, *, timeout_s: float | None = None
) -> GraphGateway:
    """The gateway for ``settings``; ``graph_name`` selects another graph (e.g. a scratch one).

    On Neo4j, ``graph_name`` is a database name and must already exist. ``timeout_s`` bounds how
    long one call waits for the server (:class:`GraphTimeout` after it); None keeps the engine's
    batch default.
    """
    if not settings.embedded:
        from kgrec.gateway.neo4j_adapter import Neo4jGateway

        return Neo4jGateway(
            settings.neo4j_uri or "",
            settings.neo4j_user,
            settings.neo4j_password,
            graph_name or settings.neo4j_database,
            timeout_s=timeout_s,
        )
    from kgrec.gateway.falkordb_adapter import FalkorDBGateway

    server = EmbeddedServer(settings.data_dir, settings.aof_fsync, settings.graph_threads)
    return FalkorDBGateway(server, graph_name or settings.graph_name, timeout_s=timeout_s)


__all__ = [
    "MAX_CONFLICT_RETRIES",
    "GraphConflict",
    "GraphGateway",
    "GraphQueryError",
    "GraphTimeout",
    "GraphUnavailable",
    "WriteSummary",
    "batched",
    "open_gateway",
    "retry_on_conflict",
]
