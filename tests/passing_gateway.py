"""A gateway that passes every call on to a test's real graph, for tests that watch or order the
calls (which statements a step reads, when each thread writes) without standing in for the graph."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graph_schema.catalogue import Statement
from kgrec.gateway import GraphGateway
from kgrec.gateway.base import Row, WriteSummary


class PassingGateway(GraphGateway):
    """Every call goes to ``graph``; subclasses watch or hold some of them first."""

    def __init__(self, graph: GraphGateway) -> None:
        self.graph = graph
        self.engine = graph.engine

    def _read(self, statement: Statement, params: Mapping[str, Any]) -> list[Row]:
        return self.graph.read(statement, params)

    def _write(self, statement: Statement, params: Mapping[str, Any]) -> WriteSummary:
        return self.graph.write(statement, params)

    def run_ddl(self, text: str) -> None:
        self.graph.run_ddl(text)

    def run_query(self, text: str, params: Mapping[str, Any]) -> list[Row]:
        return self.graph.run_query(text, params)

    def close(self) -> None:
        """The test's graph stays open: its fixture closes it."""
