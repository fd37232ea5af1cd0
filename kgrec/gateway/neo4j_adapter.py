"""Neo4j 5 adapter: the official driver, one Driver per process, managed transactions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import neo4j
from neo4j import GraphDatabase, ManagedTransaction, unit_of_work
from neo4j.exceptions import (
    AuthError,
    ConnectionPoolError,
    ConstraintError,
    DriverError,
    IncompleteCommit,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)
from neo4j.graph import Node, Path, Relationship

from graph_schema.catalogue import Statement
from graph_schema.statements.admin import PING
from kgrec.gateway import base
from kgrec.gateway.base import GraphGateway, Row, WriteSummary, node_dict, relationship_dict


def _plain(value: Any) -> Any:
    if isinstance(value, Node):
        return node_dict(value.labels, {k: _plain(v) for k, v in value.items()})
    if isinstance(value, Relationship):
        return relationship_dict(value.type, {k: _plain(v) for k, v in value.items()})
    if isinstance(value, Path):
        return {
            "nodes": [_plain(n) for n in value.nodes],
            "relationships": [_plain(r) for r in value.relationships],
        }
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _records(result: neo4j.Result) -> list[Row]:
    return [{k: _plain(v) for k, v in record.items()} for record in result]


def _translated(exc: Exception, timeout_s: float | None) -> Exception:
    """The gateway's error for a driver error."""
    if "TransactionTimedOut" in (getattr(exc, "code", None) or ""):  # a Client- or TransientError, by version
        within = "its own limit" if timeout_s is None else f"{timeout_s:g} s"
        return base.GraphTimeout(f"the graph server did not finish within {within}")
    if isinstance(exc, IncompleteCommit):  # the connection went during the commit, which may have landed
        return base.GraphTimeout(f"the graph server's answer to a commit was lost: {exc}")
    if isinstance(exc, (ServiceUnavailable, SessionExpired, TransientError, ConnectionPoolError)):
        return base.GraphUnavailable(f"Neo4j unavailable: {exc}")
    if isinstance(exc, ConstraintError):
        return base.GraphConflict(str(exc))
    if isinstance(exc, OverflowError):  # the driver packs no integer outside 64 bits
        return base.GraphQueryError(f"a parameter cannot be sent to Neo4j: {exc}")
    return base.GraphQueryError(str(exc))


class Neo4jGateway(GraphGateway):
    """Gateway over one Neo4j 5 database."""

    engine = "neo4j"

    def __init__(
        self, uri: str, user: str, password: str, database: str, timeout_s: float | None = None
    ) -> None:
        # With a bound (serving): half of it to get a connection (connecting included) and half for a
        # managed transaction's retries to start in, so a server that does not answer is reported in
        # about the bound; the server times each transaction out at the bound. Without one, the
        # driver's defaults (60 s to get a connection, retries for 30 s) and the server's own limit.
        bounded: dict[str, float] = {}
        if timeout_s is not None:
            half = timeout_s / 2
            bounded = {"connection_acquisition_timeout": half, "max_transaction_retry_time": half}
        self._driver = GraphDatabase.driver(uri, auth=(user, password), **bounded)
        self._uri = uri
        self._user = user
        self._database = database
        self.timeout_s = timeout_s
        # Every session of this process shares the bookmarks, so on a cluster a read follows the
        # writes before it (a revision counter and the items it stamped, a migration just applied).
        self._bookmarks = GraphDatabase.bookmark_manager()

    def verify_reachable(self, timeout_s: float) -> None:
        """Raise :class:`~kgrec.gateway.base.GraphUnavailable` in one line unless Neo4j answers a
        query on this gateway's database within about ``timeout_s``.

        For a command, before its first call: with the driver's defaults an unreachable server took
        about a minute of retries (each one logged) before the first query failed. Only this probe's
        session is bounded (getting a connection, connecting included, and no retries); the
        connection it opens stays in the driver's pool for the calls after it. It asks the database
        itself (the driver's own check asks the user's home database, which a user granted only
        ``NEO4J_DATABASE`` may not reach).
        """
        probe = self._driver.session(
            database=self._database,
            bookmark_manager=self._bookmarks,
            connection_acquisition_timeout=timeout_s,
            max_transaction_retry_time=0,
        )
        try:
            with probe as session:
                session.run(PING.cypher).consume()
        except AuthError as exc:
            raise base.GraphUnavailable(
                f"Neo4j at {self._uri} refused NEO4J_USER {self._user!r}: {exc.message}"
            ) from None
        except (DriverError, Neo4jError, OSError) as exc:
            reason = " ".join(str(exc).split())  # the driver's reasons span lines
            raise base.GraphUnavailable(f"Neo4j at {self._uri} is not reachable: {reason}") from None

    def _session(self) -> neo4j.Session:
        return self._driver.session(database=self._database, bookmark_manager=self._bookmarks)

    def _bounded(self, work: Any) -> Any:
        """The transaction function ``work``, with this gateway's timeout for the server to enforce."""
        return work if self.timeout_s is None else unit_of_work(timeout=self.timeout_s)(work)

    def _guard(self, action: Any) -> Any:
        try:
            return action()
        except (Neo4jError, ServiceUnavailable, SessionExpired, ConnectionPoolError, OverflowError) as exc:
            raise _translated(exc, self.timeout_s) from exc

    def _read(self, statement: Statement, params: Mapping[str, Any]) -> list[Row]:
        def work(tx: ManagedTransaction) -> list[Row]:
            return _records(tx.run(statement.cypher, dict(params)))

        def run() -> list[Row]:
            with self._session() as session:
                return session.execute_read(self._bounded(work))

        return self._guard(run)

    def _read_many(self, reads: list[tuple[Statement, dict[str, Any]]]) -> list[list[Row]]:
        def work(tx: ManagedTransaction) -> list[list[Row]]:
            return [_records(tx.run(statement.cypher, params)) for statement, params in reads]

        def run() -> list[list[Row]]:
            with self._session() as session:
                return session.execute_read(self._bounded(work))

        return self._guard(run)

    def _write(self, statement: Statement, params: Mapping[str, Any]) -> WriteSummary:
        def work(tx: ManagedTransaction) -> WriteSummary:
            result = tx.run(statement.cypher, dict(params))
            rows = _records(result)
            counters = result.consume().counters
            return WriteSummary(
                nodes_created=counters.nodes_created,
                nodes_deleted=counters.nodes_deleted,
                relationships_created=counters.relationships_created,
                relationships_deleted=counters.relationships_deleted,
                properties_set=counters.properties_set,
                rows=rows,
            )

        def run() -> WriteSummary:
            with self._session() as session:
                return session.execute_write(self._bounded(work))

        return self._guard(run)

    def run_ddl(self, text: str) -> None:
        # Schema statements cannot run inside a managed transaction function.
        def run() -> None:
            with self._session() as session:
                session.run(text).consume()

        self._guard(run)

    def run_query(self, text: str, params: Mapping[str, Any]) -> list[Row]:
        def run() -> list[Row]:
            with self._session() as session:
                return _records(session.run(text, dict(params)))

        return self._guard(run)

    def close(self) -> None:
        self._driver.close()
