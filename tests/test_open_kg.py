"""The open knowledge graph: any relation, any entity, from a bulk import or from events.

Triples of any valid relation name become typed knowledge edges (one type per relation, by
``relationship_type``, with the exact name in ``relation``); each end is an item when the data
set or the graph knows one with that id, and an Entity otherwise. Hostile names are refused per
row with the reason, never reach Cypher text, and the import stays idempotent. The training pull
reads the edges back generically into ``kg_triples``.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from graph_schema.allow_list import Label
from graph_schema.relation_names import RelationNameError, relationship_type
from graph_schema.statements.events import ingest_events_statement
from graph_schema.statements.knowledge import link_knowledge
from kgrec.catalogue import validate_items, write_items
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.datasets.records import write_csv_rows
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway, GraphQueryError, open_gateway
from kgrec.importer import import_dataset
from kgrec.maintenance import clear_graph
from kgrec.migrations import discover, migrate
from kgrec_cli.kg import relation_counts
from tests.cypher_lint import lint
from workers.training.subgraph import pull

NOW = 1_704_100_000_000  # after the music fixture's times (2024-01-01): kgrec import refuses rows ahead of its clock
RULE = "must be 1 to 128 characters of letters, digits, '.', '_', '-', '/' and ':'"

# Names a relation must never smuggle into Cypher text, each refused with its own row's reason.
HOSTILE = [
    'made"by',
    "made'by",
    "made`by",
    "made{by}",
    "made by",
    "]->(x) DETACH DELETE x //",
    "r" * 129,
    "",
]


@pytest.fixture
def music(tmp_path: Path) -> Path:
    """A small shop with knowledge of every shape: item–entity, entity–entity, entity–item, item–item."""
    folder = tmp_path / "music"
    folder.mkdir()
    write_csv_rows(
        folder / "interactions.csv",
        ["user_id", "item_id", "ts"],
        [["u1", "i1", "1704067200"], ["u1", "i2", "1704067300"], ["u2", "i3", "1704067400"]],
    )
    write_csv_rows(
        folder / "items.csv",
        ["item_id", "brand", "categories", "title", "price"],
        [["i1", "", "", "Abbey Road", ""], ["i2", "", "", "Kind of Blue", ""]],
    )
    valid = [
        ["i1", "origin", "UK"],  # item -> entity
        ["UK", "rdf:type", "country"],  # entity -> entity
        ["i1", "film.film.genre", "m.rock"],  # a Freebase-style name
        ["m.jazz", "genre_of", "i2"],  # entity -> item
        ["i2", "similar_to", "i3"],  # item -> item, a relation kgrec never heard of
        ["i1", "similar_to", "old1"],  # old1 is an Item already in the graph
        ["i3", "also_bought", "x9"],  # co-purchase: x9 becomes an unlisted item...
        ["i3", "made_in", "x9"],  # ...so it is an item for every relation
        ["i2", "also_bought", "i1"],
        ["i1", "produced_by", "Apple Records"],  # still a brand
        ["i2", "belongs_to", "Jazz"],  # still a category
        ["i1", "origin", "UK"],  # a repeated triple is one edge
        ["i1", "ORIGIN", "UK"],  # same type, another name: its own edge
    ]
    hostile = [["i1", name, "UK"] for name in HOSTILE]
    write_csv_rows(folder / "kg_triples.csv", ["head", "relation", "tail"], valid + hostile)
    write_csv_rows(
        folder / "entities.csv",
        ["entity_id", "kind", "name"],
        [
            ["UK", "country", "United Kingdom"],
            ["m.jazz", "genre", "Jazz"],
            ["m.rock", "genre", ""],
            ["lonely", "artist", "Nobody links me"],  # listed, linked by no triple: still an entity
            ["i1", "album", "Abbey Road"],  # an item: names no entity
            ["bad", "two words", "x"],  # kind breaks the rule
        ],
    )
    return folder


# (head, head label, type, relation, tail, tail label) of every knowledge edge the music shop makes
EXPECTED_EDGES = sorted(
    [
        ("i1", "Item", "ORIGIN", "origin", "UK", "Entity"),
        ("i1", "Item", "ORIGIN", "ORIGIN", "UK", "Entity"),
        ("UK", "Entity", "RDF_TYPE", "rdf:type", "country", "Entity"),
        ("i1", "Item", "FILM_FILM_GENRE", "film.film.genre", "m.rock", "Entity"),
        ("m.jazz", "Entity", "GENRE_OF", "genre_of", "i2", "Item"),
        ("i2", "Item", "SIMILAR_TO", "similar_to", "i3", "Item"),
        ("i1", "Item", "SIMILAR_TO", "similar_to", "old1", "Item"),
        ("i3", "Item", "ALSO_BOUGHT", "also_bought", "x9", "Item"),
        ("i3", "Item", "MADE_IN", "made_in", "x9", "Item"),
        ("i2", "Item", "ALSO_BOUGHT", "also_bought", "i1", "Item"),
    ]
)


def knowledge_edges(gw: GraphGateway) -> list[tuple[str, ...]]:
    rows = gw.run_query(
        "MATCH (a)-[k]->(b) WHERE k.relation IS NOT NULL "
        "RETURN a.id AS a, labels(a) AS al, type(k) AS t, k.relation AS r, b.id AS b, labels(b) AS bl",
        {},
    )
    return sorted((r["a"], r["al"][0], r["t"], r["r"], r["b"], r["bl"][0]) for r in rows)


def graph_dump(gw: GraphGateway) -> tuple[list[Any], list[Any]]:
    """Every node (labels, properties) and relationship (ends, type, properties), sorted; the import's
    record without the wall-clock time it finished."""
    nodes = gw.run_query("MATCH (n) RETURN labels(n) AS l, properties(n) AS p", {})
    for row in nodes:
        row["p"].pop("finished_at", None)
    rels = gw.run_query(
        "MATCH (a)-[r]->(b) RETURN a.id AS a, labels(a) AS al, type(r) AS t, properties(r) AS p, "
        "b.id AS b, labels(b) AS bl",
        {},
    )
    key = lambda row: json.dumps(row, sort_keys=True, default=str)  # noqa: E731
    return sorted(map(key, nodes)), sorted(map(key, rels))


def import_music(gw: GraphGateway, folder: Path, settings: Settings) -> Any:
    return import_dataset(gw, open_dataset(str(folder), settings.datasets_dir), settings, now_ms=NOW)


@pytest.fixture
def music_graph(gateway: GraphGateway, music: Path, settings: Settings) -> tuple[GraphGateway, Any]:
    gateway.run_query("CREATE (:Item {id: 'old1', listed: false, created_at: 1})", {})
    return gateway, import_music(gateway, music, settings)


def test_any_relation_links_items_and_entities(music_graph: tuple[GraphGateway, Any]) -> None:
    gw, _ = music_graph
    assert knowledge_edges(gw) == EXPECTED_EDGES
    brand = gw.run_query(
        "MATCH (:Item {id: 'i1'})-[r:MADE_BY]->(b:Brand) RETURN b.id AS b, r.relation AS r", {}
    )
    assert brand == [{"b": "Apple Records", "r": None}]
    category = gw.run_query("MATCH (:Item {id: 'i2'})-[:IN_CATEGORY]->(c:Category) RETURN c.id AS c", {})
    assert category == [{"c": "Jazz"}]
    # Ends that are no item are entities; items never get an Entity twin.
    entities = gw.run_query("MATCH (e:Entity) RETURN e.id AS id ORDER BY id", {})
    assert [r["id"] for r in entities] == ["UK", "country", "lonely", "m.jazz", "m.rock"]
    x9 = gw.run_query("MATCH (i:Item {id: 'x9'}) RETURN i.listed AS listed", {})
    assert x9 == [{"listed": False}]


def test_entities_csv_sets_kinds_and_names(music_graph: tuple[GraphGateway, Any]) -> None:
    gw, report = music_graph
    rows = gw.run_query("MATCH (e:Entity) RETURN e.id AS id, e.kind AS kind, e.name AS name ORDER BY id", {})
    assert [(r["id"], r["kind"], r["name"]) for r in rows] == [
        ("UK", "country", "United Kingdom"),
        ("country", None, None),
        ("lonely", "artist", "Nobody links me"),
        ("m.jazz", "genre", "Jazz"),
        ("m.rock", "genre", None),
    ]
    problems = {(Path(p.file).name, p.line): p.reason for p in report.problems}
    assert problems[("entities.csv", 7)] == (
        "kind 'two words' must be 1 to 64 characters of letters, digits, '_' and '-'"
    )


def test_hostile_relation_names_are_refused_per_row(music_graph: tuple[GraphGateway, Any]) -> None:
    gw, report = music_graph
    first_hostile_line = 2 + 13  # header, then the 13 valid rows
    reasons = {p.line: p.reason for p in report.problems if Path(p.file).name == "kg_triples.csv"}
    assert reasons == {
        first_hostile_line + k: f"relation {name[:140]!r} {RULE}" for k, name in enumerate(HOSTILE)
    }
    types = {r["t"] for r in gw.run_query("MATCH ()-[k]->() RETURN DISTINCT type(k) AS t", {})}
    expected = {"ORIGIN", "RDF_TYPE", "FILM_FILM_GENRE", "GENRE_OF", "SIMILAR_TO", "ALSO_BOUGHT"}
    assert types == expected | {"MADE_IN", "MADE_BY", "IN_CATEGORY", "INTERACTED", "INTERESTED_IN"}
    assert gw.run_query("MATCH (i:Item {id: 'i1'}) RETURN i.title AS t", {}) == [{"t": "Abbey Road"}]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_name_never_renders(name: str) -> None:
    with pytest.raises(RelationNameError, match="relation"):
        link_knowledge(name, Label.ITEM, Label.ENTITY)
    with pytest.raises(RelationNameError, match="relation"):
        ingest_events_statement([(name, Label.ENTITY)])


def test_importing_twice_leaves_the_graph_identical(
    music_graph: tuple[GraphGateway, Any], music: Path, settings: Settings
) -> None:
    gw, first = music_graph
    before = graph_dump(gw)
    second = import_music(gw, music, settings)
    assert graph_dump(gw) == before
    assert second.relationships == first.relationships
    assert second.relationships_created == 0
    assert first.rows_by_step["entities"] == second.rows_by_step["entities"] == 5
    assert first.rows_by_step["entity_rdf_type_entity"] == 1


def test_pull_reads_every_knowledge_edge_into_kg_triples(
    music_graph: tuple[GraphGateway, Any], settings: Settings
) -> None:
    gw, _ = music_graph
    # pulled after the import: the graph stamps the interactions it receives with its own clock
    graph = pull(gw, int(time.time() * 1000), settings.half_life_ms)
    assert graph.item_ids == ["i1", "i2", "i3"]  # listed items; old1 and x9 are unlisted
    assert graph.entity_ids == ["UK", "country", "lonely", "m.jazz", "m.rock"]
    assert graph.entity_kinds == ["country", None, "artist", "genre", "genre"]
    nodes = graph.item_ids + graph.entity_ids
    decoded = sorted((nodes[h], graph.relation_names[r], nodes[t]) for h, r, t in graph.kg_triples.tolist())
    # Edges to unlisted items are left out; brands and categories are not in kg_triples.
    assert decoded == sorted(
        [
            ("i1", "origin", "UK"),
            ("i1", "ORIGIN", "UK"),
            ("UK", "rdf:type", "country"),
            ("i1", "film.film.genre", "m.rock"),
            ("m.jazz", "genre_of", "i2"),
            ("i2", "similar_to", "i3"),
            ("i2", "also_bought", "i1"),
        ]
    )
    assert graph.relation_names == sorted(
        ["ORIGIN", "also_bought", "film.film.genre", "genre_of", "origin", "rdf:type", "similar_to"]
    )
    assert graph.kg_triples.dtype == np.int64
    assert graph.kg_triples.tolist() == sorted(graph.kg_triples.tolist())
    assert graph.knowledge["also_bought"].tolist() == [[1, 0]]
    assert graph.knowledge["also_viewed"].shape == graph.knowledge["bought_together"].shape == (0, 2)
    again = pull(gw, int(time.time() * 1000), settings.half_life_ms)
    assert np.array_equal(again.kg_triples, graph.kg_triples)
    assert graph.counts()["kg_triples"] == 7 and graph.counts()["entities"] == 5


def test_kg_relations_counts_every_relation(music: Path, settings: Settings, graph_server: object) -> None:
    graph_name = f"kgcli_{uuid.uuid4().hex[:10]}" if settings.embedded else None
    with open_gateway(settings, graph_name=graph_name) as gw:
        clear_graph(gw)
        migrate(gw)
        import_music(gw, music, settings)
        expected = [
            {"relation": "ORIGIN", "type": "ORIGIN", "triples": 1},
            {"relation": "also_bought", "type": "ALSO_BOUGHT", "triples": 2},
            {"relation": "belongs_to", "type": "IN_CATEGORY", "triples": 1},
            {"relation": "film.film.genre", "type": "FILM_FILM_GENRE", "triples": 1},
            {"relation": "genre_of", "type": "GENRE_OF", "triples": 1},
            {"relation": "made_in", "type": "MADE_IN", "triples": 1},
            {"relation": "origin", "type": "ORIGIN", "triples": 1},
            {"relation": "produced_by", "type": "MADE_BY", "triples": 1},
            {"relation": "rdf:type", "type": "RDF_TYPE", "triples": 1},
            {"relation": "similar_to", "type": "SIMILAR_TO", "triples": 2},
        ]
        assert relation_counts(gw) == expected
        if settings.embedded:
            from kgrec_cli.main import main

            env = {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_GRAPH": graph_name}
            done = CliRunner().invoke(main, ["kg", "relations", "--json"], env=env)
            assert done.exit_code == 0, done.output
            assert json.loads(done.output) == expected
            table = CliRunner().invoke(main, ["kg", "relations"], env=env)
            assert "film.film.genre" in table.output and "10 relation(s), 12 triple(s)" in table.output
        clear_graph(gw)


# --- events -----------------------------------------------------------------------------------


def events_with(attributes: Any, **item: Any) -> list[dict[str, Any]]:
    now = int(time.time() * 1000)
    return [
        {
            "event_id": f"e-{uuid.uuid4().hex[:8]}",
            "user_id": "u1",
            "item_id": "i1",
            "type": "purchase",
            "ts": now,
            "item": {"attributes": attributes, **item},
        }
    ]


def test_event_attributes_become_knowledge_edges_in_the_same_write(
    gateway: GraphGateway, settings: Settings
) -> None:
    gateway.run_query("CREATE (:Item {id: 'i7', listed: true})", {})
    raw = events_with(
        {
            "origin": ["UK"],
            "film.film.genre": ["m.rock", "m.rock"],
            "similar_to": ["i7", "i1"],  # an item of the graph, and the event's own item
            "also_bought": ["x9"],  # co-purchase values are items (unlisted when new)
            "produced_by": ["Apple Records"],  # a brand, as in kg_triples.csv
        },
    )
    events, problems = validate_batch(raw, max_skew_s=60)
    assert problems == []
    first = ingest(gateway, events, settings)
    assert (first.applied, first.duplicates) == (1, 0)
    assert knowledge_edges(gateway) == sorted(
        [
            ("i1", "Item", "ORIGIN", "origin", "UK", "Entity"),
            ("i1", "Item", "FILM_FILM_GENRE", "film.film.genre", "m.rock", "Entity"),
            ("i1", "Item", "SIMILAR_TO", "similar_to", "i7", "Item"),
            ("i1", "Item", "SIMILAR_TO", "similar_to", "i1", "Item"),
            ("i1", "Item", "ALSO_BOUGHT", "also_bought", "x9", "Item"),
        ]
    )
    brands = gateway.run_query(
        "MATCH (:Item {id: 'i1'})-[:MADE_BY]->(b:Brand) RETURN b.id AS b ORDER BY b", {}
    )
    assert [r["b"] for r in brands] == ["Apple Records"]
    assert gateway.run_query("MATCH (i:Item {id: 'x9'}) RETURN i.listed AS l", {}) == [{"l": False}]
    before = graph_dump(gateway)
    again = ingest(gateway, events, settings)  # a retry of the same events changes nothing
    assert (again.applied, again.duplicates) == (0, 1)
    assert graph_dump(gateway) == before
    # An item has one brand: a later event's brand does not add a second (the catalogue replaces it).
    for later in (events_with(None, brand="EMI"), events_with({"produced_by": ["Parlophone"]})):
        ingest(gateway, validate_batch(later, max_skew_s=60)[0], settings)
    brands = gateway.run_query("MATCH (:Item {id: 'i1'})-[:MADE_BY]->(b:Brand) RETURN b.id AS b", {})
    assert brands == [{"b": "Apple Records"}]
    # A new item named by two events of one batch gets the first one's brand.
    two = [{**e, "item_id": "i2"} for e in events_with(None, brand="A") + events_with(None, brand="B")]
    ingest(gateway, validate_batch(two, max_skew_s=60)[0], settings)
    brands = gateway.run_query("MATCH (:Item {id: 'i2'})-[:MADE_BY]->(b:Brand) RETURN b.id AS b", {})
    assert brands == [{"b": "A"}]
    # New events with the same attributes MERGE onto the same edges.
    ingest(gateway, validate_batch(events_with({"origin": ["UK"]}), max_skew_s=60)[0], settings)
    assert len([e for e in knowledge_edges(gateway) if e[2] == "ORIGIN"]) == 1


@pytest.mark.parametrize(
    ("attributes", "field", "reason"),
    [
        ({"made by": ["x"]}, "item.attributes.made by", f"relation 'made by' {RULE}"),
        (
            {"]->(x) DETACH DELETE x //": ["x"]},
            "item.attributes.]->(x) DETACH DELETE x //",
            f"relation ']->(x) DETACH DELETE x //' {RULE}",
        ),
        ({"r" * 129: ["x"]}, "item.attributes." + "r" * 129, f"relation {'r' * 129!r} {RULE}"),
        ({"": ["x"]}, "item.attributes", f"relation '' {RULE}"),
        ({"origin": [""]}, "item.attributes.origin", "value '' is empty"),
        ({"origin": ["a\nb"]}, "item.attributes.origin", "value 'a\\nb' must not contain control characters"),
        ({"origin": "UK"}, "item.attributes.origin", "must be a list of value ids, not str"),
        ({"origin": []}, "item.attributes.origin", "must list 1 to 32 value ids (got 0)"),
        (
            {"origin": [f"v{i}" for i in range(33)]},
            "item.attributes.origin",
            "must list 1 to 32 value ids (got 33)",
        ),
        ({f"r{i}": ["x"] for i in range(33)}, "item.attributes", "at most 32 relations (got 33)"),
        (["origin"], "item.attributes", "must be an object of relation: [value ids], not list"),
    ],
)
def test_bad_event_attributes_are_refused_naming_field_and_value(
    attributes: Any, field: str, reason: str
) -> None:
    events, problems = validate_batch(events_with(attributes), max_skew_s=60)
    assert events == []
    assert [(p.index, p.field, p.reason) for p in problems] == [(0, field, reason)]


def test_bounds_at_the_limit_are_accepted() -> None:
    attributes = {f"r{i}": [f"v{k}" for k in range(32)] for i in range(32)}
    events, problems = validate_batch(events_with(attributes), max_skew_s=60)
    assert problems == [] and len(events[0].item.attributes) == 32


def test_a_batch_bounds_its_distinct_attribute_relations() -> None:
    """One write stage per relationship type: 256 distinct relations per batch, not 257."""
    batch = [
        {**events_with({f"r{k}.{i}": ["x"] for i in range(32)})[0], "event_id": f"e{k}"} for k in range(8)
    ]
    events, problems = validate_batch(batch, max_skew_s=60)
    assert problems == [] and len(events) == 8
    extra = {**events_with({"one.more": ["x"]})[0], "event_id": "e9"}
    events, problems = validate_batch([*batch, extra], max_skew_s=60)
    assert events == []
    assert [(p.index, p.field, p.reason) for p in problems] == [
        (-1, "events", "at most 256 distinct item attribute relations per batch (got 257)")
    ]


def test_openapi_documents_item_attributes(settings: Settings) -> None:
    from app import create_app
    from app.openapi import openapi_document

    document = openapi_document(create_app(settings))
    schemas = document["components"]["schemas"]
    item = next(s for name, s in schemas.items() if name.startswith("ItemInfo"))
    attributes = next(b for b in item["properties"]["attributes"]["anyOf"] if b.get("type") == "object")
    assert attributes["maxProperties"] == 32 and attributes["additionalProperties"] is False
    (values,) = attributes["patternProperties"].values()
    assert (values["minItems"], values["maxItems"]) == (1, 32)
    assert list(attributes["patternProperties"]) == ["^[A-Za-z0-9._/:-]{1,128}$"]


# --- statements, lint and migration ------------------------------------------------------------------


def test_lint_knows_only_the_rendered_examples_types() -> None:
    """A rendered statement passes the lint; one whose type the lint was not told about fails."""
    declared = link_knowledge("film.film.genre", Label.ITEM, Label.ENTITY)
    undeclared = link_knowledge("never.declared", Label.ITEM, Label.ENTITY)
    results = lint(
        [{"name": s.name, "cypher": s.cypher, "params": dict(s.params)} for s in (declared, undeclared)]
    )
    assert results[declared.name] == []
    assert any("NEVER_DECLARED" in d["message"] for d in results[undeclared.name])


def test_statements_are_cached_per_type() -> None:
    assert link_knowledge("film.genre", Label.ITEM, Label.ENTITY) is link_knowledge(
        "film_genre", Label.ITEM, Label.ENTITY
    )
    assert "FILM_GENRE" in link_knowledge("film.genre", Label.ITEM, Label.ENTITY).cypher
    with pytest.raises(ValueError, match="Item and Entity"):
        link_knowledge("origin", Label.BRAND, Label.ENTITY)


def rerun_migration(gateway: GraphGateway, name: str, times: int = 1) -> None:
    """Run migration ``name``'s statements again (the fixture applied every migration once)."""
    (migration,) = [m for m in discover(gateway.engine) if m.name == name]
    for _ in range(times):
        for statement in migration.statements():
            gateway.run_ddl(statement)


def test_migration_names_existing_co_purchase_edges(gateway: GraphGateway) -> None:
    gateway.run_query(
        "CREATE (a:Item {id: 'a'})-[:ALSO_BOUGHT]->(b:Item {id: 'b'}), (a)-[:ALSO_VIEWED]->(b), "
        "(b)-[:BOUGHT_TOGETHER]->(a), (a)-[:ALSO_BOUGHT {relation: 'kept'}]->(b)",
        {},
    )
    rerun_migration(gateway, "knowledge_relation")  # applied once by the fixture already: idempotent
    assert knowledge_edges(gateway) == sorted(
        [
            ("a", "Item", "ALSO_BOUGHT", "also_bought", "b", "Item"),
            ("a", "Item", "ALSO_BOUGHT", "kept", "b", "Item"),
            ("a", "Item", "ALSO_VIEWED", "also_viewed", "b", "Item"),
            ("b", "Item", "BOUGHT_TOGETHER", "bought_together", "a", "Item"),
        ]
    )


@pytest.mark.parametrize(
    ("name", "rel_type"),
    [
        ("film.film.genre", "FILM_FILM_GENRE"),
        ("rdf:type", "RDF_TYPE"),
        ("also_bought", "ALSO_BOUGHT"),
        ("bought_together", "BOUGHT_TOGETHER"),
        # a co-purchase type belongs to its own relation: explanations read it as co-purchase
        ("also-bought", "KG_ALSO_BOUGHT"),
        ("Also_Bought", "KG_ALSO_BOUGHT"),
        ("also_viewed_", "KG_ALSO_VIEWED"),
        ("BOUGHT-TOGETHER", "KG_BOUGHT_TOGETHER"),
        ("interacted", "KG_INTERACTED"),
        ("made_by", "KG_MADE_BY"),
        ("9lives", "KG_9LIVES"),
        ("...", "KG"),
    ],
)
def test_the_relationship_type_rule(name: str, rel_type: str) -> None:
    assert relationship_type(name) == rel_type


def test_a_long_refused_name_is_shown_cut_and_says_so() -> None:
    with pytest.raises(RelationNameError) as refused:
        relationship_type("r" * 199 + " ")
    assert f"relation {'r' * 140!r}… (200 characters) must be" in str(refused.value)


def test_migration_moves_other_names_off_the_co_purchase_types(gateway: GraphGateway) -> None:
    gateway.run_query(
        "CREATE (a:Item {id: 'a'})-[:ALSO_BOUGHT {relation: 'also_bought'}]->(b:Item {id: 'b'}), "
        "(a)-[:ALSO_BOUGHT {relation: 'also-bought', created_at: 7}]->(e:Entity {id: 'e'}), "
        "(a)-[:ALSO_VIEWED {relation: 'Also_Viewed'}]->(b), "
        "(b)-[:BOUGHT_TOGETHER {relation: 'bought_together'}]->(a)",
        {},
    )
    rerun_migration(gateway, "co_purchase_types_owned", times=2)  # idempotent
    assert knowledge_edges(gateway) == sorted(
        [
            ("a", "Item", "ALSO_BOUGHT", "also_bought", "b", "Item"),
            ("a", "Item", "KG_ALSO_BOUGHT", "also-bought", "e", "Entity"),
            ("a", "Item", "KG_ALSO_VIEWED", "Also_Viewed", "b", "Item"),
            ("b", "Item", "BOUGHT_TOGETHER", "bought_together", "a", "Item"),
        ]
    )
    moved = gateway.run_query("MATCH ()-[k:KG_ALSO_BOUGHT]->() RETURN k.created_at AS c", {})
    assert moved == [{"c": 7}]  # its properties came along


def test_entity_ids_are_unique(gateway: GraphGateway) -> None:
    gateway.run_query("CREATE (:Entity {id: 'UK'})", {})
    with pytest.raises(GraphQueryError):
        gateway.run_query("CREATE (:Entity {id: 'UK'})", {})


HOSTILE_IDS = [
    "x' }) DETACH DELETE n //",
    '"}) MATCH (n) SET n.id = "pwned" //',
    "{id: $item_id}",
    "`Entity`",
]


def test_hostile_ids_are_stored_verbatim_as_entities(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    write_csv_rows(tmp_path / "interactions.csv", ["user_id", "item_id"], [["u1", "i1"]])
    write_csv_rows(
        tmp_path / "kg_triples.csv", ["head", "relation", "tail"], [["i1", "origin", v] for v in HOSTILE_IDS]
    )
    write_csv_rows(
        tmp_path / "entities.csv", ["entity_id", "kind", "name"], [[v, "x", v] for v in HOSTILE_IDS]
    )
    import_dataset(gateway, open_dataset(str(tmp_path), settings.datasets_dir), settings, now_ms=NOW)
    events, problems = validate_batch(events_with({"material": HOSTILE_IDS}), max_skew_s=60)
    assert problems == []
    ingest(gateway, events, settings)
    rows = gateway.run_query(
        "MATCH (:Item {id: 'i1'})-[k]->(e:Entity) RETURN k.relation AS r, e.id AS id, e.name AS name", {}
    )
    assert sorted((r["r"], r["id"]) for r in rows) == sorted(
        [("origin", v) for v in HOSTILE_IDS] + [("material", v) for v in HOSTILE_IDS]
    )
    assert all(r["id"] == r["name"] for r in rows)
    labels = gateway.run_query("MATCH (n) RETURN labels(n)[0] AS label, count(*) AS n ORDER BY label", {})
    assert {r["label"]: r["n"] for r in labels if r["label"] not in ("Migration", "SchemaInfo")} == {
        "Entity": len(HOSTILE_IDS),
        "Event": 1,
        "Item": 1,
        "Revision": 1,  # the import's record
        "User": 1,
    }


def test_an_id_that_becomes_an_item_absorbs_its_entity_on_import(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    """One id names one node: an Entity made from a triple end turns into the Item when a later
    import lists that id, so importing the triples again adds no second edge."""
    first, second = tmp_path / "first", tmp_path / "second"
    for folder in (first, second):
        folder.mkdir()
    write_csv_rows(first / "interactions.csv", ["user_id", "item_id", "ts"], [["u1", "i000", "1704067200"]])
    write_csv_rows(first / "kg_triples.csv", ["head", "relation", "tail"], [["i000", "ALSO_BOUGHT", "i002"]])
    write_csv_rows(second / "interactions.csv", ["user_id", "item_id", "ts"], [["u2", "i002", "1704067300"]])
    write_csv_rows(
        second / "items.csv",
        ["item_id", "brand", "categories", "title", "price"],
        [["i002", "", "", "Two", ""]],
    )
    import_music(gateway, first, settings)
    assert ("i000", "Item", "KG_ALSO_BOUGHT", "ALSO_BOUGHT", "i002", "Entity") in knowledge_edges(gateway)
    import_music(gateway, second, settings)
    import_music(gateway, first, settings)
    assert gateway.run_query("MATCH (n {id: 'i002'}) RETURN labels(n) AS l, n.title AS t", {}) == [
        {"l": ["Item"], "t": "Two"}
    ]
    assert knowledge_edges(gateway) == [("i000", "Item", "KG_ALSO_BOUGHT", "ALSO_BOUGHT", "i002", "Item")]


def test_an_id_that_becomes_an_item_absorbs_its_entity_through_the_api(
    gateway: GraphGateway, settings: Settings
) -> None:
    """An event attribute makes an Entity of an unknown value; the catalogue then writes an item with
    that id; the same attribute again links the one Item, once."""
    attribute = events_with({"similar_to": ["ev_item2"]})
    ingest(gateway, validate_batch(attribute, max_skew_s=60)[0], settings)
    assert ("i1", "Item", "SIMILAR_TO", "similar_to", "ev_item2", "Entity") in knowledge_edges(gateway)
    items, problems = validate_items([{"item_id": "ev_item2", "title": "Two"}])
    assert problems == []
    write_items(gateway, items)
    ingest(gateway, validate_batch(events_with({"similar_to": ["ev_item2"]}), max_skew_s=60)[0], settings)
    assert gateway.run_query("MATCH (n {id: 'ev_item2'}) RETURN labels(n) AS l, n.listed AS listed", {}) == [
        {"l": ["Item"], "listed": True}
    ]
    assert knowledge_edges(gateway) == [("i1", "Item", "SIMILAR_TO", "similar_to", "ev_item2", "Item")]
    # and an event on an item whose id is an Entity turns that Entity into the item
    ingest(gateway, validate_batch(events_with({"origin": ["UK"]}), max_skew_s=60)[0], settings)
    ingest(gateway, validate_batch([{**events_with(None)[0], "item_id": "UK"}], max_skew_s=60)[0], settings)
    assert gateway.run_query("MATCH (n {id: 'UK'}) RETURN labels(n) AS l", {}) == [{"l": ["Item"]}]
    assert ("i1", "Item", "ORIGIN", "origin", "UK", "Item") in knowledge_edges(gateway)


def test_rows_of_one_entity_are_merged_and_a_conflict_is_reported(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    """The first entities.csv row won silently: ``g1,,`` then ``g1,genre,Jazz`` left g1 bare."""
    write_csv_rows(tmp_path / "interactions.csv", ["user_id", "item_id"], [["u1", "i1"]])
    rows = ["g1,,", "g1,genre,Jazz", "g2,genre,", "g2,,Rock", "g2,mood,Calm"]
    (tmp_path / "entities.csv").write_text("\n".join(["entity_id,kind,name", *rows]) + "\n")
    report = import_music(gateway, tmp_path, settings)
    assert [(Path(p.file).name, p.line, p.reason) for p in report.problems] == [
        (
            "entities.csv",
            6,
            "entity 'g2': kind 'mood' (an earlier row gives 'genre') and name 'Calm' (an earlier row gives "
            "'Rock'); the earlier row is kept",
        )
    ]
    rows = gateway.run_query(
        "MATCH (e:Entity) RETURN e.id AS id, e.kind AS kind, e.name AS name ORDER BY id", {}
    )
    assert rows == [
        {"id": "g1", "kind": "genre", "name": "Jazz"},
        {"id": "g2", "kind": "genre", "name": "Rock"},
    ]
