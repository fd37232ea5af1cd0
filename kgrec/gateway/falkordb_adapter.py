"""FalkorDB adapter: the embedded graph over its native (Redis) protocol, never Bolt.

Every FalkorDB query is atomic and writes are serialized, so each catalogue
write statement is one transaction. Connection details come from the embedded
server's ``server.json`` and are re-read after a connection failure, so a
restarted server (possibly on a new port) is picked up without a restart here.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import redis
from falkordb import FalkorDB
from falkordb.edge import Edge
from falkordb.graph import Graph
from falkordb.node import Node
from falkordb.path import Path as FalkorPath
from falkordb.query_result import QueryResult

from graph_schema.catalogue import Statement
from graph_schema.statements import admin
from kgrec import erasure
from kgrec.embedded import EmbeddedServer, ServerInfo, hold_snapshots, unloadable_labels
from kgrec.gateway.base import (
    GraphConflict,
    GraphGateway,
    GraphQueryError,
    GraphTimeout,
    GraphUnavailable,
    Row,
    WriteSummary,
    node_dict,
    relationship_dict,
)
from kgrec.server_refusals import cannot_write_now

_log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a call may wait for the server unless the gateway is opened with less (serving is):
# a batch of 10,000 rows behind other writers on a busy host takes seconds, never minutes.
BATCH_TIMEOUT_S = 300.0

# Errors that mean "schema object already there": migrations treat them as done.
_ALREADY_DONE = ("already indexed", "already exists")


def _plain(value: Any) -> Any:
    if isinstance(value, Node):
        return node_dict(value.labels or [], {k: _plain(v) for k, v in value.properties.items()})
    if isinstance(value, Edge):
        return relationship_dict(value.relation, {k: _plain(v) for k, v in value.properties.items()})
    if isinstance(value, FalkorPath):
        return {
            "nodes": [_plain(n) for n in value.nodes()],
            "relationships": [_plain(e) for e in value.edges()],
        }
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _rows(result: Any) -> list[Row]:
    names = [column[1] for column in result.header]
    return [dict(zip(names, map(_plain, record), strict=True)) for record in result.result_set]


class FalkorDBGateway(GraphGateway):
    """Gateway over one FalkorDB graph (a Redis key)."""

    engine = "falkordb"

    def __init__(self, server: EmbeddedServer, graph_name: str, timeout_s: float | None = None) -> None:
        self._server = server
        self._graph_name = graph_name
        self.timeout_s = BATCH_TIMEOUT_S if timeout_s is None else timeout_s
        self._lock = threading.Lock()
        self._client: FalkorDB | None = None
        self._graph: Graph | None = None

    def _connected_graph(self) -> Graph:
        graph = self._graph
        if graph is not None:
            return graph
        info = self._running_server()
        # Connecting asks the server (INFO), so not under the lock: on a stalled server each caller
        # then waits for its own connection only, not for every one queued before it.
        client = FalkorDB(
            host=info.host,
            port=info.port,
            password=info.password,
            socket_timeout=self.timeout_s,
            socket_connect_timeout=min(5.0, self.timeout_s),
        )
        with self._lock:
            if self._graph is None:
                self._client, self._graph = client, client.select_graph(self._graph_name)
                return self._graph
            graph = self._graph  # another thread connected meanwhile: use its client
        with contextlib.suppress(redis.RedisError):
            client.close()
        return graph

    def _running_server(self) -> ServerInfo:
        info = self._server.running()
        if info is None:
            raise GraphUnavailable("the embedded graph server is not running")
        return info

    def _forget(self, graph: Graph) -> None:
        """Drop a failed connection so the next call reconnects (re-reading the server's address).

        Not closed here: other threads may be in the middle of a call on the same client, and
        closing its pool under them raises a TypeError inside redis-py instead of the
        ConnectionError they will get by themselves; its sockets close when it is collected.
        """
        with self._lock:
            if self._graph is graph:  # not one another thread has already reconnected
                self._client = None
                self._graph = None

    def _call(self, action: Callable[[Graph], Any]) -> Any:
        graph: Graph | None = None
        try:
            graph = self._connected_graph()  # connecting talks to the server (INFO) too
            return action(graph)
        except (redis.ConnectionError, redis.TimeoutError) as exc:  # BusyLoadingError is a ConnectionError
            if graph is not None:
                self._forget(graph)  # a timed-out connection may still receive the late answer
            raise self._unanswered(exc) from exc
        except redis.ResponseError as exc:
            if "empty key" in str(exc):  # reading a graph that has no data yet
                return None
            if "unique constraint violation" in str(exc):
                raise GraphConflict(str(exc)) from exc
            if cannot_write_now(exc):
                raise GraphUnavailable(f"the graph server cannot write now: {exc}") from exc
            raise GraphQueryError(str(exc)) from exc

    def _unanswered(self, exc: redis.ConnectionError | redis.TimeoutError) -> GraphUnavailable:
        if isinstance(exc, redis.TimeoutError):
            return GraphTimeout(f"the graph server did not answer within {self.timeout_s:g} s")
        return GraphUnavailable(f"graph server unavailable: {exc}")

    def _admin(self, action: Callable[[redis.Redis], T]) -> T:
        """Run ``action`` on a plain client of the server (for commands the graph client has none
        for: the log rewrite, the snapshot guard's setting), each call one try of the gateway's
        bound, as its queries are: the serving bound in the API, where redis-py's own retries of a
        30 s wait held an erasure for minutes on a server that stalled."""
        client = self._running_server().one_try_client(self.timeout_s)
        try:
            return action(client)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise self._unanswered(exc) from exc
        finally:
            client.close()

    def _read(self, statement: Statement, params: Mapping[str, Any]) -> list[Row]:
        result = self._call(lambda g: g.ro_query(statement.cypher, dict(params)))
        return [] if result is None else _rows(result)

    def _read_many(self, reads: list[tuple[Statement, dict[str, Any]]]) -> list[list[Row]]:
        def pipelined(graph: Graph) -> list[Any]:
            pipe = graph.client.connection.pipeline(transaction=False)
            for statement, params in reads:
                # What Graph.ro_query sends, queued on one connection and sent together.
                query = graph._build_params_header(params) + statement.cypher
                pipe.execute_command("GRAPH.RO_QUERY", graph.name, query, "--compact")
            return [QueryResult(graph, response) for response in pipe.execute()]

        results = self._call(pipelined)
        if results is None:  # a graph with no data yet: each read answers for itself
            return super()._read_many(reads)
        return [_rows(result) for result in results]

    def _write(self, statement: Statement, params: Mapping[str, Any]) -> WriteSummary:
        result = self._call(lambda g: g.query(statement.cypher, dict(params)))
        return WriteSummary(
            nodes_created=int(result.nodes_created),
            nodes_deleted=int(result.nodes_deleted),
            relationships_created=int(result.relationships_created),
            relationships_deleted=int(result.relationships_deleted),
            properties_set=int(result.properties_set),
            rows=_rows(result),
        )

    def run_ddl(self, text: str) -> None:
        """Run an index statement, or ``GRAPH.CONSTRAINT CREATE ...`` (a command, not Cypher)."""
        words = text.split()
        try:
            if words[:2] == ["GRAPH.CONSTRAINT", "CREATE"]:
                self._create_constraint(words[2:])
            else:
                self._call(lambda g: g.query(text))
        except GraphQueryError as exc:
            if not any(marker in str(exc) for marker in _ALREADY_DONE):
                raise

    def _create_constraint(self, args: list[str]) -> None:
        # args: UNIQUE NODE <Label> PROPERTIES <n> <prop>...; constraints build asynchronously.
        self._call(lambda g: g.execute_command("GRAPH.CONSTRAINT", "CREATE", g.name, *args))
        label, props = args[2], args[5:]
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            constraints = self._call(lambda g: g.list_constraints()) or []
            status = next(
                (c["status"] for c in constraints if c["label"] == label and list(c["properties"]) == props),
                None,
            )
            if status == "OPERATIONAL":
                return
            if status == "FAILED":
                raise GraphQueryError(f"constraint on {label}{props} failed: duplicate values")
            time.sleep(0.05)
        raise GraphQueryError(f"constraint on {label}{props} was not built within 600 s")

    def run_query(self, text: str, params: Mapping[str, Any]) -> list[Row]:
        result = self._call(lambda g: g.query(text, dict(params)))
        return [] if result is None else _rows(result)

    def after_bulk_load(self) -> None:
        """Rewrite the AOF: replaying the un-rewritten log of a bulk load takes minutes.

        Not while the snapshot guard holds snapshots off: the rewrite writes one.
        """
        if not self.guard_snapshots():
            self._server.rewrite_aof()

    def rewrite_log(self) -> str:
        """Rewrite the AOF (graph, broker and job results) and wait; ``held`` while the snapshot
        guard holds rewrites off, as the rewrite writes a snapshot."""
        if self.guard_snapshots():
            return erasure.HELD
        return self._admin(lambda client: erasure.rewrite_log(client, self._server.log_path))

    def guard_snapshots(self) -> dict[str, int]:
        counts = {row["label"]: int(row["count"]) for row in self.read(admin.LABEL_COUNTS)}
        unloadable = unloadable_labels(counts)
        self._admin(lambda client: hold_snapshots(client, bool(unloadable)))
        if unloadable:
            _log.warning(
                "graph snapshots held off: FalkorDB 4.16.3 cannot load a snapshot taken while %s "
                "(README, Operations); the graph stays on disk as its statement log",
                ", ".join(f"{label} holds {count:,} nodes" for label, count in sorted(unloadable.items())),
            )
        return unloadable

    def close(self) -> None:
        with self._lock:
            client, self._client, self._graph = self._client, None, None
        if client is not None:
            with contextlib.suppress(redis.RedisError):
                client.close()
