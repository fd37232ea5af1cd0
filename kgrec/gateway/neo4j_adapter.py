"""Neo4j 5 adapter: the official driver, one Driver per process, managed transactions."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import neo4j
from neo4j import GraphDatabase, ManagedTransaction
from neo4j.exceptions import (
    ConstraintError,
    Neo4jError,
    ServiceUnavailable,
    SessionExpired,
    TransientError,
)
from neo4j.graph import Node, Path, Relationship

from graph_schema.catalogue import Statement
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


class Neo4jGateway(GraphGateway):
    """Gateway over one Neo4j 5 database."""

    engine = "neo4j"

    def __init__(self, uri: str, user: str, password: str, database: str) -> None:
        self._driver = GraphDatabase.driver(uri, auth=(user, password))
        self._database = database
        # Every session of this process shares the bookmarks, so on a cluster a read follows the
        # writes before it (a revision counter and the items it stamped, a migration just applied).
        self._bookmarks = GraphDatabase.bookmark_manager()

    def _session(self) -> neo4j.Session:
        return self._driver.session(database=self._database, bookmark_manager=self._bookmarks)

    def _guard(self, action: Any) -> Any:
        try:
            return action()
        except (ServiceUnavailable, SessionExpired, TransientError) as exc:
            raise base.GraphUnavailable(f"Neo4j unavailable: {exc}") from exc
        except ConstraintError as exc:
            raise base.GraphConflict(str(exc)) from exc
        except Neo4jError as exc:
            raise base.GraphQueryError(str(exc)) from exc
        except OverflowError as exc:  # the driver packs no integer outside 64 bits
            raise base.GraphQueryError(f"a parameter cannot be sent to Neo4j: {exc}") from exc

    def _read(self, statement: Statement, params: Mapping[str, Any]) -> list[Row]:
        def work(tx: ManagedTransaction) -> list[Row]:
            return _records(tx.run(statement.cypher, dict(params)))

        def run() -> list[Row]:
            with self._session() as session:
                return session.execute_read(work)

        return self._guard(run)

    def _read_many(self, reads: list[tuple[Statement, dict[str, Any]]]) -> list[list[Row]]:
        def work(tx: ManagedTransaction) -> list[list[Row]]:
            return [_records(tx.run(statement.cypher, params)) for statement, params in reads]

        def run() -> list[list[Row]]:
            with self._session() as session:
                return session.execute_read(work)

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
                return session.execute_write(work)

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
