"""``kgrec migrate``: apply versioned Cypher files and record each one in the graph.

A migration that Cypher cannot write as fixed text (moving edges of whatever types a graph holds
takes one rendered statement per type) has a step in :data:`STEPS`, run before its file's
statements. Steps are idempotent and batched like the files' statements, so a migration cut off
part way simply runs again.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from graph_schema.allow_list import PROPERTY_KEYS
from graph_schema.statements.knowledge import (
    DELETE_MERGED_TWINS,
    TWIN_EDGE_TYPES,
    TWIN_ENTITIES,
    move_twin_edges,
)
from graph_schema.statements.migrations import APPLIED_MIGRATIONS, RECORD_MIGRATION, REGISTER_PROPERTY_KEYS
from graph_schema.statements.models import MARK_FOLDED_VERSIONS
from kgrec.config import Settings
from kgrec.gateway import GraphGateway

_FILE_RE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.cypher$")
SHARED_SCOPE = "shared"


def migrations_dir(settings: Settings | None = None) -> Path:
    """The migrations folder of ``settings`` (default: read from the environment)."""
    return (settings or Settings.from_env()).migrations_dir


class MigrationError(RuntimeError):
    """A migration file is malformed, or an applied one has changed."""


@dataclass(frozen=True)
class Migration:
    """One versioned migration file."""

    version: str
    name: str
    scope: str
    path: Path
    checksum: str

    @property
    def id(self) -> str:
        """Stable id recorded on the Migration node, e.g. ``falkordb/0001_constraints``."""
        return f"{self.scope}/{self.version}_{self.name}"

    def statements(self) -> list[str]:
        """The file's statements: `;`-terminated, with `//` comment lines removed."""
        lines = [line for line in self.path.read_text().splitlines() if not line.strip().startswith("//")]
        return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def discover(engine: str, root: Path | None = None) -> list[Migration]:
    """Shared and engine-specific migrations, in (version, scope) order."""
    root = root or migrations_dir()
    found: list[Migration] = []
    for scope in (SHARED_SCOPE, engine):
        folder = root / scope
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.cypher")):
            match = _FILE_RE.fullmatch(path.name)
            if match is None:
                raise MigrationError(f"{path}: name must look like 0001_some_name.cypher")
            found.append(
                Migration(
                    version=match["version"],
                    name=match["name"],
                    scope=scope,
                    path=path,
                    checksum="sha256:" + hashlib.sha256(path.read_bytes()).hexdigest(),
                )
            )
    return sorted(found, key=lambda m: (m.version, m.scope != SHARED_SCOPE, m.scope))


# The allow-listed property keys this code names, as one record id per key set: `kgrec migrate`
# records it once it has registered them (REGISTER_PROPERTY_KEYS), and readiness names it until
# then, since a key a statement is the first to name can be stored under another key's id.
PROPERTY_KEYS_DIGEST = hashlib.sha256("\n".join(sorted(PROPERTY_KEYS)).encode()).hexdigest()
PROPERTY_KEYS_ID = f"keys/{PROPERTY_KEYS_DIGEST[:16]}_property_keys"


def pending(
    gateway: GraphGateway, root: Path | None = None, available: list[Migration] | None = None
) -> list[Migration]:
    """Migrations not yet applied (of ``available``: the files :func:`discover` finds, read again
    unless given); raises MigrationError if an applied file has changed."""
    return _pending(_applied(gateway), discover(gateway.engine, root) if available is None else available)


def pending_ids(gateway: GraphGateway, available: list[Migration]) -> list[str]:
    """The ids of the ``available`` migrations not yet applied, and :data:`PROPERTY_KEYS_ID` while
    this code's property keys are not registered (one read); raises as :func:`pending` does."""
    applied = _applied(gateway)
    ids = [m.id for m in _pending(applied, available)]
    return ids if PROPERTY_KEYS_ID in applied else [*ids, PROPERTY_KEYS_ID]


def _applied(gateway: GraphGateway) -> dict[str, str]:
    return {row["id"]: row["checksum"] for row in gateway.read(APPLIED_MIGRATIONS)}


def _pending(applied: dict[str, str], available: list[Migration]) -> list[Migration]:
    changed = [m.id for m in available if m.id in applied and applied[m.id] != m.checksum]
    if changed:
        raise MigrationError(
            "applied migration files have changed: "
            + ", ".join(changed)
            + " (restore them and add a new migration instead)"
        )
    return [m for m in available if m.id not in applied]


PENDING_RECHECK_S = 2.0  # how soon a serving process sees `kgrec migrate` done


class PendingMigrations:
    """The ids of the migrations a serving process's graph still lacks, for its readiness probe:
    read at most every ``recheck_s`` while some are pending, and never again once none is
    (migrations only ever get applied).
    """

    def __init__(self, root: Path, recheck_s: float = PENDING_RECHECK_S) -> None:
        self.root = root
        self.recheck_s = recheck_s
        self._lock = threading.Lock()
        self._ids: list[str] | None = None  # None: not read yet
        self._read_at = 0.0
        # The migration files ship with this process's code: read once, not at every re-check.
        self._files: list[Migration] | None = None

    def ids(self, gateway: GraphGateway) -> list[str]:
        """The pending migrations' ids (:func:`pending`; its errors, a graph's included, pass)."""
        with self._lock:
            held = self._ids
            if held is not None and (not held or time.monotonic() - self._read_at < self.recheck_s):
                return list(held)
        if self._files is None:
            self._files = discover(gateway.engine, self.root)
        ids = pending_ids(gateway, self._files)
        with self._lock:
            self._ids, self._read_at = ids, time.monotonic()
        return list(ids)


def merge_twin_entities(gateway: GraphGateway, *, twins: int = 1000, edges: int = 10_000) -> int:
    """Merge each Entity that has an Item's id into that Item; returns how many were merged.

    Graphs written before "one id, one node" (README) may hold both. The Entity's edges move onto
    the Item (an edge the Item has already, by direction, type, ``relation`` and other end, is kept
    once), then the Entity is deleted: ``twins`` Entities at a time, ``edges`` edges per statement.
    """
    merged = 0
    while ids := [row["id"] for row in gateway.read(TWIN_ENTITIES, {"limit": twins})]:
        moving = True
        while moving:  # a moved edge may still end at a twin of the batch (a loop, Entity to Entity)
            moving = False
            for row in gateway.read(TWIN_EDGE_TYPES, {"ids": ids}):
                statement = move_twin_edges(row["type"], outgoing=row["outgoing"])
                while gateway.write(statement, {"ids": ids, "limit": edges}).rows[0]["moved"]:
                    moving = True
        deleted = gateway.write(DELETE_MERGED_TWINS, {"ids": ids}).rows[0]["deleted"]
        if not deleted:
            raise MigrationError(f"the entities {', '.join(ids[:5])} kept edges that could not be moved")
        merged += deleted
    return merged


def mark_folded_versions(gateway: GraphGateway, *, edges: int = 10_000) -> int:
    """Give each EMBEDDING edge folded in before 2026-12-07 (``folded_at``, no ``folded_version``)
    its version's id, ``edges`` edges per statement; returns how many were marked.

    Migration 0015's own SET does the same in one statement over all of them, which held every
    other client of the server back on a graph of many folded items: after this it finds none left.
    """
    marked = 0
    while done := int(gateway.write(MARK_FOLDED_VERSIONS, {"limit": edges}).rows[0]["marked"]):
        marked += done
    return marked


# Keyed by migration id; each runs before the statements of its file.
STEPS: dict[str, Callable[[GraphGateway], object]] = {
    f"{SHARED_SCOPE}/0013_twin_entities_merged": merge_twin_entities,
    **{f"{engine}/0015_folded_embeddings": mark_folded_versions for engine in ("falkordb", "neo4j")},
}


def migrate(gateway: GraphGateway, root: Path | None = None) -> list[Migration]:
    """Register every allow-listed property key (and record that this key set is, for readiness:
    :data:`PROPERTY_KEYS_ID`), then apply every pending migration in order; returns the ones
    applied (idempotent)."""
    # Every time, not once: a key added to the allow-list later is registered by the next migrate.
    gateway.write(REGISTER_PROPERTY_KEYS, {})
    gateway.write(
        RECORD_MIGRATION,
        {
            "id": PROPERTY_KEYS_ID,
            "version": "keys",
            "name": "property_keys",
            "scope": "keys",
            "checksum": f"sha256:{PROPERTY_KEYS_DIGEST}",
            "applied_at": int(time.time() * 1000),
        },
    )
    todo = pending(gateway, root)
    for migration in todo:
        step = STEPS.get(migration.id)
        if step is not None:
            step(gateway)
        for statement in migration.statements():
            gateway.run_ddl(statement)
        gateway.write(
            RECORD_MIGRATION,
            {
                "id": migration.id,
                "version": migration.version,
                "name": migration.name,
                "scope": migration.scope,
                "checksum": migration.checksum,
                "applied_at": int(time.time() * 1000),
            },
        )
    return todo
