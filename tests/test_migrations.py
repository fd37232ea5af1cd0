"""``kgrec migrate``: applies in order, records each file, is idempotent, refuses changed files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from graph_schema.statements.migrations import APPLIED_MIGRATIONS
from kgrec.gateway import GraphGateway, GraphQueryError
from kgrec.migrations import MigrationError, discover, migrate, migrations_dir, pending
from tests.conftest import ON_NEO4J


def test_discover_orders_shared_and_engine_files() -> None:
    for engine in ("falkordb", "neo4j"):
        found = discover(engine)
        assert [m.id for m in found] == [
            f"{engine}/0001_constraints",
            "shared/0002_schema_info",
            f"{engine}/0003_events",
            f"{engine}/0004_model_versions",
            f"{engine}/0005_entities",
            "shared/0006_knowledge_relation",
            f"{engine}/0007_catalogue",
            f"{engine}/0009_topics",
            f"{engine}/0011_schedule",
            "shared/0012_co_purchase_types_owned",
        ]
        assert all(m.checksum.startswith("sha256:") for m in found)


def test_applied_migrations_are_recorded(gateway: GraphGateway) -> None:
    # the fixture has migrated this graph already
    rows = gateway.read(APPLIED_MIGRATIONS)
    assert [r["id"] for r in rows] == [m.id for m in discover(gateway.engine)]
    for row, migration in zip(rows, discover(gateway.engine), strict=True):
        assert row["checksum"] == migration.checksum
        assert row["version"] == migration.version
        assert isinstance(row["applied_at"], int) and row["applied_at"] > 1_600_000_000_000
    assert migrate(gateway) == []  # idempotent
    assert len(gateway.read(APPLIED_MIGRATIONS)) == len(rows)


def test_constraints_refuse_duplicate_ids(gateway: GraphGateway) -> None:
    gateway.run_query("CREATE (:User {id: 'dup'})", {})
    with pytest.raises(GraphQueryError):
        gateway.run_query("CREATE (:User {id: 'dup'})", {})


def test_changed_applied_file_is_refused(gateway: GraphGateway, tmp_path: Path) -> None:
    root = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), root)
    extra = root / "shared" / "0003_extra.cypher"
    extra.write_text("MERGE (s:SchemaInfo {id: 'extra'});\n")
    assert [m.id for m in migrate(gateway, root)] == ["shared/0003_extra"]

    extra.write_text("MERGE (s:SchemaInfo {id: 'extra-changed'});\n")
    newer = root / "shared" / "0004_newer.cypher"
    newer.write_text("MERGE (s:SchemaInfo {id: 'newer'});\n")
    with pytest.raises(MigrationError, match="shared/0003_extra"):
        migrate(gateway, root)
    with pytest.raises(MigrationError):
        pending(gateway, root)
    # nothing after the refusal was applied
    assert "shared/0004_newer" not in {r["id"] for r in gateway.read(APPLIED_MIGRATIONS)}


def test_badly_named_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "add-things.cypher").write_text("RETURN 1;")
    with pytest.raises(MigrationError, match="0001_some_name"):
        discover("neo4j" if ON_NEO4J else "falkordb", tmp_path)
