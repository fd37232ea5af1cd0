"""``kgrec migrate``: applies in order, records each file, is idempotent, refuses changed files."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from app import create_app
from app.openapi import openapi_document
from graph_schema.statements.migrations import APPLIED_MIGRATIONS
from graph_schema.statements.models import FOLDED_ITEMS
from kgrec.config import Settings
from kgrec.gateway import GraphGateway, GraphQueryError
from kgrec.migrations import (
    PENDING_RECHECK_S,
    PROPERTY_KEYS_ID,
    STEPS,
    MigrationError,
    discover,
    mark_folded_versions,
    merge_twin_entities,
    migrate,
    migrations_dir,
    pending,
)
from tests.conftest import ON_NEO4J
from tests.openapi_check import undocumented


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
            "shared/0013_twin_entities_merged",
            f"{engine}/0014_erasures",
            f"{engine}/0015_folded_embeddings",
        ]
        assert all(m.checksum.startswith("sha256:") for m in found)


def test_applied_migrations_are_recorded(gateway: GraphGateway) -> None:
    # the fixture has migrated this graph already
    rows = gateway.read(APPLIED_MIGRATIONS)
    # the files, then the record that this code's property keys are registered (version "keys")
    assert [r["id"] for r in rows] == [m.id for m in discover(gateway.engine)] + [PROPERTY_KEYS_ID]
    for row, migration in zip(rows, discover(gateway.engine), strict=False):
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


def test_every_step_has_its_migration_file() -> None:
    assert set(STEPS) <= {m.id for engine in ("falkordb", "neo4j") for m in discover(engine)}


def _edges(gateway: GraphGateway) -> list[tuple[str, str, str, dict[str, object]]]:
    rows = gateway.run_query(
        "MATCH (a)-[r]->(b) RETURN labels(a)[0] + ':' + a.id AS a, type(r) AS t,"
        " labels(b)[0] + ':' + b.id AS b, properties(r) AS p",
        {},
    )
    return sorted((r["a"], r["t"], r["b"], r["p"]) for r in rows)


def test_an_entity_with_an_items_id_is_merged_into_the_item(gateway: GraphGateway) -> None:
    """A graph written before "one id, one node" kept both nodes; migration 0013 leaves the Item,
    with the Entity's edges (each once), whatever their types and directions."""
    gateway.run_query(
        "CREATE (e:Entity {id: 'twin', kind: 'genre'}), (i:Item {id: 'twin', title: 'Twin'}),"
        "       (f:Entity {id: 'twin2'}), (:Item {id: 'twin2'}),"
        "       (g:Entity {id: 'genre'}), (h:Item {id: 'head'}), (u:User {id: 'u1'})"
        " CREATE (e)-[:FILM_FILM_GENRE {relation: 'film.film.genre'}]->(g),"
        "        (i)-[:FILM_FILM_GENRE {relation: 'film.film.genre'}]->(g),"
        "        (h)-[:SIMILAR_TO {relation: 'similar_to'}]->(e),"
        "        (e)-[:RDF_TYPE {relation: 'rdf:type'}]->(e),"
        "        (e)-[:ORIGIN {relation: 'origin'}]->(f),"
        "        (f)-[:ORIGIN {relation: 'origin'}]->(i),"
        "        (u)-[:INTERACTED {weight: 1.0}]->(i)",
        {},
    )
    gateway.run_query("MATCH (m:Migration {id: 'shared/0013_twin_entities_merged'}) DELETE m", {})
    assert [m.id for m in migrate(gateway)] == ["shared/0013_twin_entities_merged"]
    labelled = gateway.run_query("MATCH (n) WHERE n.id IN ['twin', 'twin2'] RETURN labels(n)[0] AS l", {})
    assert sorted(r["l"] for r in labelled) == ["Item", "Item"]
    item = gateway.run_query("MATCH (i:Item {id: 'twin'}) RETURN properties(i) AS p", {})[0]["p"]
    assert item == {"id": "twin", "title": "Twin"}
    assert _edges(gateway) == [
        ("Item:head", "SIMILAR_TO", "Item:twin", {"relation": "similar_to"}),
        ("Item:twin", "FILM_FILM_GENRE", "Entity:genre", {"relation": "film.film.genre"}),
        ("Item:twin", "ORIGIN", "Item:twin2", {"relation": "origin"}),
        ("Item:twin", "RDF_TYPE", "Item:twin", {"relation": "rdf:type"}),
        ("Item:twin2", "ORIGIN", "Item:twin", {"relation": "origin"}),
        ("User:u1", "INTERACTED", "Item:twin", {"weight": 1.0}),
    ]
    # Idempotent: nothing is left to merge.
    assert merge_twin_entities(gateway, twins=1, edges=1) == 0
    assert _edges(gateway)[-1] == ("User:u1", "INTERACTED", "Item:twin", {"weight": 1.0})


def test_twins_are_merged_in_batches(gateway: GraphGateway) -> None:
    gateway.run_query(
        "UNWIND range(1, 5) AS n CREATE (e:Entity {id: 't' + toString(n)}), (:Item {id: 't' + toString(n)})"
        " WITH e UNWIND range(1, 3) AS m MERGE (x:Entity {id: 'v' + toString(m)})"
        " CREATE (e)-[:RDF_TYPE {relation: 'rdf:type'}]->(x)",
        {},
    )
    assert merge_twin_entities(gateway, twins=2, edges=2) == 5
    assert gateway.run_query("MATCH (e:Entity) RETURN e.id AS id ORDER BY id", {}) == [
        {"id": f"v{m}"} for m in (1, 2, 3)
    ]
    moved = gateway.run_query("MATCH (:Item)-[r:RDF_TYPE]->(:Entity) RETURN r.relation AS r", {})
    assert len(moved) == 15


def test_items_folded_in_before_the_index_are_found_through_it(gateway: GraphGateway) -> None:
    """A fold-in before 2026-12-07 set only ``folded_at``; migration 0015 gives its edges the
    version's id, which FOLDED_ITEMS reads through the index, and leaves trained embeddings alone."""
    gateway.run_query(
        "CREATE (m:ModelVersion {id: 'v-old'}), (n:ModelVersion {id: 'v-other'}),"
        "       (m)-[:EMBEDDING {vector: [1.0], folded_at: 5}]->(:Item {id: 'folded'}),"
        "       (m)-[:EMBEDDING {vector: [2.0]}]->(t:Item {id: 'trained'}),"
        "       (n)-[:EMBEDDING {vector: [3.0], folded_at: 6}]->(t)",
        {},
    )
    assert gateway.read(FOLDED_ITEMS, {"version": "v-old"}) == []  # not yet migrated
    migration = f"{gateway.engine}/0015_folded_embeddings"
    gateway.run_query("MATCH (m:Migration {id: $id}) DELETE m", {"id": migration})
    assert [m.id for m in migrate(gateway)] == [migration]
    assert [(r["id"], r["vector"]) for r in gateway.read(FOLDED_ITEMS, {"version": "v-old"})] == [
        ("folded", [1.0])
    ]
    assert [(r["id"], r["vector"]) for r in gateway.read(FOLDED_ITEMS, {"version": "v-other"})] == [
        ("trained", [3.0])
    ]
    marks = gateway.run_query(
        "MATCH (m:ModelVersion)-[e:EMBEDDING]->(i:Item) RETURN m.id AS m, i.id AS i, e.folded_version AS f",
        {},
    )
    assert sorted((r["m"], r["i"], r["f"]) for r in marks) == [
        ("v-old", "folded", "v-old"),
        ("v-old", "trained", None),
        ("v-other", "trained", "v-other"),
    ]


def test_folded_edges_are_marked_in_batches_before_the_migrations_own_set(gateway: GraphGateway) -> None:
    """Migration 0015's step marks the edges ``edges`` at a time (its file's one SET over all of them
    held the server), all of them however many batches that takes, and again finds nothing."""
    migration = f"{gateway.engine}/0015_folded_embeddings"
    assert STEPS[migration] is mark_folded_versions
    gateway.run_query(
        "CREATE (m:ModelVersion {id: 'v-a'}), (n:ModelVersion {id: 'v-b'})"
        " WITH m, n UNWIND range(1, 23) AS k"
        " CREATE (i:Item {id: 'i' + toString(k)}),"
        "        (m)-[:EMBEDDING {vector: [1.0], folded_at: k}]->(i),"
        "        (n)-[:EMBEDDING {vector: [2.0]}]->(i)",
        {},
    )
    gateway.run_query(
        "MATCH (n:ModelVersion {id: 'v-b'}), (i:Item) WHERE i.id IN ['i1', 'i2']"
        " CREATE (n)-[:EMBEDDING {vector: [3.0], folded_at: 1}]->(:Item {id: 'x' + i.id})",
        {},
    )
    assert mark_folded_versions(gateway, edges=10) == 25  # three batches
    marks = gateway.run_query(
        "MATCH (m:ModelVersion)-[e:EMBEDDING]->(:Item) RETURN m.id AS m, e.folded_at IS NOT NULL AS folded,"
        " e.folded_version AS f",
        {},
    )
    assert sorted((r["m"], r["folded"], r["f"]) for r in marks) == sorted(
        [("v-a", True, "v-a")] * 23 + [("v-b", False, None)] * 23 + [("v-b", True, "v-b")] * 2
    )
    assert mark_folded_versions(gateway, edges=10) == 0  # idempotent
    assert [r["id"] for r in gateway.read(FOLDED_ITEMS, {"version": "v-b"})] == ["xi1", "xi2"]


def test_readiness_names_pending_migrations_until_migrate_has_run(
    broker_graph: tuple[dict[str, str], Settings, GraphGateway],
) -> None:
    """A serving process started before `kgrec migrate` would read folded items by a property the
    migration backfills, and miss them: /readyz says so, then sees the migration applied within
    the re-check interval, and, once none is pending, stops asking."""
    _, settings, gateway = broker_graph
    gateway.run_query("CREATE (:ModelVersion {id: 'v-ready', active: true})", {})
    migration = f"{gateway.engine}/0015_folded_embeddings"
    gateway.run_query("MATCH (m:Migration {id: $id}) DELETE m", {"id": migration})
    app = create_app(settings)
    client = app.test_client()
    document = openapi_document(app)

    ready = client.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.json["error"] == "migrations_pending" and migration in ready.json["detail"]
    assert "kgrec migrate" in ready.json["detail"] and int(ready.headers["Retry-After"]) > 0
    assert undocumented(document, "get", "/readyz", 503, ready.json) == []

    assert [m.id for m in migrate(gateway)] == [migration]
    migrated = time.monotonic()
    ready = client.get("/readyz")
    while ready.status_code != 200 and time.monotonic() - migrated < PENDING_RECHECK_S + 1:
        time.sleep(0.1)
        ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json["model_version"] == "v-ready"

    # Migrations are never unapplied: once none is pending, the probe no longer reads them.
    gateway.run_query("MATCH (m:Migration {id: $id}) DELETE m", {"id": migration})
    time.sleep(PENDING_RECHECK_S + 0.5)
    assert client.get("/readyz").status_code == 200
    migrate(gateway)


def test_readiness_names_an_applied_migration_whose_file_changed(
    broker_graph: tuple[dict[str, str], Settings, GraphGateway],
) -> None:
    """An applied migration whose file no longer matches its recorded checksum makes the probe a
    documented 503 naming it (it was an undocumented 500), without a Retry-After: waiting will not
    mend it."""
    _, settings, gateway = broker_graph
    migration = f"{gateway.engine}/0015_folded_embeddings"
    gateway.run_query("MATCH (m:Migration {id: $id}) SET m.checksum = 'sha256:other'", {"id": migration})
    try:
        app = create_app(settings)
        ready = app.test_client().get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json["error"] == "migrations_changed" and migration in ready.json["detail"]
        assert "Retry-After" not in ready.headers
        assert undocumented(openapi_document(app), "get", "/readyz", 503, ready.json) == []
    finally:
        checksum = next(m.checksum for m in discover(gateway.engine) if m.id == migration)
        gateway.run_query(
            "MATCH (m:Migration {id: $id}) SET m.checksum = $c", {"id": migration, "c": checksum}
        )


@pytest.mark.skipif(ON_NEO4J, reason="FalkorDB's key table")
def test_a_key_new_to_a_failed_statement_keeps_its_name(gateway: GraphGateway) -> None:
    """FalkorDB adds a key that a CREATE map is the first to name while planning, takes it back when
    the run fails, and keeps the id in the cached plan: the next new key got that id, and the
    plan's later runs stored their value under it. `migrate` registers every allow-listed key
    first, so none is new to any statement."""
    create = "CREATE (e:Event {id: $id, content_hash: $hash}) WITH e RETURN 10 / $d AS q"
    with pytest.raises(GraphQueryError):
        gateway.run_query(create, {"id": "e1", "hash": "h1", "d": 0})
    gateway.run_query("CREATE (p:Event) SET p.not_a_kgrec_key = true DELETE p", {})
    gateway.run_query(create, {"id": "e2", "hash": "h2", "d": 1})
    stored = gateway.run_query("MATCH (e:Event) RETURN properties(e) AS p", {})
    assert [row["p"] for row in stored] == [{"id": "e2", "content_hash": "h2"}]


def test_readiness_names_the_property_keys_until_migrate_has_registered_them(
    broker_graph: tuple[dict[str, str], Settings, GraphGateway],
) -> None:
    """A version that adds a property key without a migration file was ready before `kgrec migrate`
    registered it, and FalkorDB could then store a value under another key's id (REGISTER_PROPERTY_KEYS):
    /readyz names the key set until migrate has registered it."""
    _, settings, gateway = broker_graph
    gateway.run_query("MERGE (m:ModelVersion {id: 'v-ready'}) SET m.active = true", {})
    migrate(gateway)
    gateway.run_query("MATCH (m:Migration {id: $id}) DELETE m", {"id": PROPERTY_KEYS_ID})
    client = create_app(settings).test_client()

    ready = client.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.json["error"] == "migrations_pending" and PROPERTY_KEYS_ID in ready.json["detail"]

    assert migrate(gateway) == []  # no file was pending: only the keys
    migrated = time.monotonic()
    while (
        ready := client.get("/readyz")
    ).status_code != 200 and time.monotonic() - migrated < PENDING_RECHECK_S + 1:
        time.sleep(0.1)
    assert ready.status_code == 200, ready.text
