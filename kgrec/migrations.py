"""``kgrec migrate``: apply versioned Cypher files and record each one in the graph."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

from graph_schema.statements.migrations import APPLIED_MIGRATIONS, RECORD_MIGRATION
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


def pending(gateway: GraphGateway, root: Path | None = None) -> list[Migration]:
    """Migrations not yet applied; raises MigrationError if an applied file has changed."""
    applied = {row["id"]: row["checksum"] for row in gateway.read(APPLIED_MIGRATIONS)}
    available = discover(gateway.engine, root)
    changed = [m.id for m in available if m.id in applied and applied[m.id] != m.checksum]
    if changed:
        raise MigrationError(
            "applied migration files have changed: "
            + ", ".join(changed)
            + " (restore them and add a new migration instead)"
        )
    return [m for m in available if m.id not in applied]


def migrate(gateway: GraphGateway, root: Path | None = None) -> list[Migration]:
    """Apply every pending migration in order; returns the ones applied (idempotent)."""
    todo = pending(gateway, root)
    for migration in todo:
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
