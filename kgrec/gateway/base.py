"""The graph gateway: one small interface over Neo4j 5 and the embedded FalkorDB.

Code above the gateway runs named statements from the ``graph_schema``
catalogue and never learns which engine is underneath.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

from graph_schema.catalogue import Statement
from kgrec import erasure

Row = dict[str, Any]
DEFAULT_BATCH_SIZE = 5_000
MAX_CONFLICT_RETRIES = 5  # tries of a checked write that concurrent writers keep outdating

T = TypeVar("T")
log = logging.getLogger(__name__)


class GraphUnavailable(RuntimeError):
    """The graph server cannot be reached right now (callers answer 503 / retry)."""


class GraphTimeout(GraphUnavailable):
    """The graph server did not answer a call in time. Unlike a refused connection, a write may
    still be applied once the server goes on; every write is idempotent, so resending it is safe."""


class GraphQueryError(RuntimeError):
    """The graph server refused a statement."""


class GraphConflict(GraphQueryError):
    """A write violated a uniqueness constraint and was rolled back as a whole."""


def retry_on_conflict(attempt: Callable[[int], T], what: str, tries: int = MAX_CONFLICT_RETRIES) -> T:
    """``attempt(k)`` for k = 0, 1, ... until one returns without a :class:`GraphConflict`.

    Each attempt checks what it writes and then writes it; a conflict means another writer
    outdated the check before the write committed (the write was rolled back whole), so the next
    attempt checks again. After ``tries`` conflicts, a GraphConflict naming ``what`` kept conflicting.
    Anything else an attempt raises (a refusal its check found) ends the tries at once.
    """
    for k in range(tries):
        try:
            return attempt(k)
        except GraphConflict:
            log.info("%s: write %d of %d conflicted with a concurrent writer", what, k + 1, tries)
    raise GraphConflict(f"{what} kept conflicting with concurrent writers after {tries} tries")


@dataclass
class WriteSummary:
    """What one write statement changed, plus any rows it returned."""

    nodes_created: int = 0
    nodes_deleted: int = 0
    relationships_created: int = 0
    relationships_deleted: int = 0
    properties_set: int = 0
    rows: list[Row] = field(default_factory=list)

    def add(self, other: WriteSummary) -> None:
        """Accumulate another summary's counters into this one (rows are not kept)."""
        self.nodes_created += other.nodes_created
        self.nodes_deleted += other.nodes_deleted
        self.relationships_created += other.relationships_created
        self.relationships_deleted += other.relationships_deleted
        self.properties_set += other.properties_set


def batched(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Split ``rows`` into lists of at most ``size`` items."""
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


class GraphGateway(ABC):
    """Run catalogue statements against one graph."""

    engine: str = ""

    @abstractmethod
    def _read(self, statement: Statement, params: Mapping[str, Any]) -> list[Row]: ...

    @abstractmethod
    def _write(self, statement: Statement, params: Mapping[str, Any]) -> WriteSummary: ...

    @abstractmethod
    def run_ddl(self, text: str) -> None:
        """Run one schema statement from a migration file (index, constraint)."""

    @abstractmethod
    def run_query(self, text: str, params: Mapping[str, Any]) -> list[Row]:
        """Run a user's own query (``kgrec cypher``), like cypher-shell does."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def verify_reachable(self, timeout_s: float) -> None:  # noqa: B027 - optional hook
        """Raise :class:`GraphUnavailable` in one line unless the server answers within about
        ``timeout_s``, before a command's first call (a no-op where that call fails fast anyway:
        the embedded server, started or found running for the command)."""

    def after_bulk_load(self) -> None:  # noqa: B027 - optional hook, most engines need nothing
        """Let the engine compact its logs after a bulk load (a no-op unless it needs one)."""

    def rewrite_log(self) -> str:
        """Rewrite the engine's append-only file from the graph as it is now (after an erasure);
        one of :data:`kgrec.erasure.LOG_STATUSES`. Engines without one (Neo4j) answer ``no_aof``."""
        return erasure.NO_AOF

    def guard_snapshots(self) -> dict[str, int]:
        """Hold off the engine's snapshots while it could not read one back; the labels at fault.

        Only the embedded FalkorDB needs this (:data:`kgrec.embedded.UNLOADABLE_LABEL_COUNTS`);
        other engines have nothing to hold and return ``{}``.
        """
        return {}

    def read(self, statement: Statement, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Run a read statement and return its rows as dicts."""
        params = dict(params or {})
        if statement.mode != "read":
            raise ValueError(f"{statement.name} is a write statement")
        statement.check_params(params)
        return self._read(statement, params)

    def read_many(self, reads: Sequence[tuple[Statement, Mapping[str, Any]]]) -> list[list[Row]]:
        """Run several read statements in one round trip where the engine allows it (FalkorDB's
        pipeline; Neo4j runs them in one read transaction, one after another); rows per read.

        A request that needs two independent reads (a user's history and topic interests)
        waits for the graph once instead of twice.
        """
        checked = []
        for statement, params in reads:
            params = dict(params)
            if statement.mode != "read":
                raise ValueError(f"{statement.name} is a write statement")
            statement.check_params(params)
            checked.append((statement, params))
        return self._read_many(checked)

    def _read_many(self, reads: list[tuple[Statement, dict[str, Any]]]) -> list[list[Row]]:
        return [self._read(statement, params) for statement, params in reads]

    def write(self, statement: Statement, params: Mapping[str, Any] | None = None) -> WriteSummary:
        """Run a write statement atomically (one statement, one transaction)."""
        params = dict(params or {})
        if statement.mode != "write":
            raise ValueError(f"{statement.name} is a read statement")
        statement.check_params(params)
        return self._write(statement, params)

    def write_batches(
        self,
        statement: Statement,
        rows: Iterable[Any],
        *,
        param: str = "rows",
        batch_size: int = DEFAULT_BATCH_SIZE,
        extra: Mapping[str, Any] | None = None,
        on_batch: Callable[[int], None] | None = None,
        clock: str | None = None,
    ) -> WriteSummary:
        """Write ``rows`` in UNWIND batches of ``batch_size``; each batch is one atomic write.

        ``clock``: a parameter set to each batch's own time (epoch ms), for a statement that stamps
        what it changes with when it was written.
        """
        total = WriteSummary()
        for chunk in batched(rows, batch_size):
            timed = {clock: int(time.time() * 1000)} if clock else {}
            total.add(self.write(statement, {param: chunk, **(extra or {}), **timed}))
            if on_batch is not None:
                on_batch(len(chunk))
        return total

    def __enter__(self) -> GraphGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def node_dict(labels: Iterable[str], properties: Mapping[str, Any]) -> Row:
    """The engine-neutral form of a node in query results."""
    return {"labels": sorted(labels), "properties": dict(properties)}


def relationship_dict(rel_type: str, properties: Mapping[str, Any]) -> Row:
    """The engine-neutral form of a relationship in query results."""
    return {"type": rel_type, "properties": dict(properties)}
