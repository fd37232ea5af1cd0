"""The Browser Cypher of an explanation path quotes hostile ids safely and finds exactly that path."""

from __future__ import annotations

import pytest

from graph_schema.path_query import cypher_string, path_cypher
from graph_schema.relation_names import RelationNameError, relationship_type
from kgrec.gateway import GraphGateway
from tests.cypher_lint import lint

# Valid relation names a data set may bring, awkward ones included.
RELATIONS = ["origin", "film.film.genre", "rdf:type", "http://schema.org/genre", "interacted", "2nd-edition"]

HOSTILE = [
    "x' }) DETACH DELETE n //",
    "back`tick`s",
    "$user_id",
    "quote\\' and backslash \\",
    'double " quote',
    "line\nbreak\ttab",
    "\\u0027 unicode escape lookalike",
    "emoji 😀 and ünïcödé",
]


def test_cypher_string_escapes_quotes_backslashes_and_controls() -> None:
    assert cypher_string("it's") == "'it\\'s'"
    assert cypher_string("a\\b") == "'a\\\\b'"
    assert cypher_string("a\nb\x01") == "'a\\nb\\u0001'"


def test_path_cypher_refuses_labels_and_types_outside_the_model() -> None:
    node = {"label": "User", "id": "u"}
    with pytest.raises(ValueError):
        path_cypher(
            [{"label": "User) DETACH DELETE (x", "id": "u"}, node],
            [{"type": "INTERACTED", "direction": "out"}],
        )
    with pytest.raises(ValueError):
        path_cypher([node, node], [{"type": "KNOWS]->() DELETE", "direction": "out"}])


def test_hostile_ids_find_exactly_their_path_and_change_nothing(gateway: GraphGateway) -> None:
    rows = [{"user": f"user {value}", "item": f"item {value}"} for value in HOSTILE]
    gateway.run_query(
        "UNWIND $rows AS r CREATE (:User {id: r.user})-[:INTERACTED {weight: 1.0}]->(:Item {id: r.item})",
        {"rows": rows},
    )
    before = gateway.run_query("MATCH (n) RETURN count(n) AS n", {})[0]["n"]
    queries = []
    for row in rows:
        query = path_cypher(
            [{"label": "User", "id": row["user"]}, {"label": "Item", "id": row["item"]}],
            [{"type": "INTERACTED", "direction": "out"}],
        )
        found = gateway.run_query(query + ", n0.id AS user, n1.id AS item", {})
        assert [(r["user"], r["item"]) for r in found] == [(row["user"], row["item"])], query
        queries.append(query)
    assert gateway.run_query("MATCH (n) RETURN count(n) AS n", {})[0]["n"] == before
    diagnostics = lint([{"name": f"q{k}", "cypher": q, "params": {}} for k, q in enumerate(queries)])
    assert {name: d for name, d in diagnostics.items() if d} == {}


def test_knowledge_edges_are_written_with_their_type_and_relation() -> None:
    nodes = [{"label": "Item", "id": "a"}, {"label": "Entity", "id": "e"}]
    query = path_cypher(
        nodes, [{"type": "FILM_FILM_GENRE", "relation": "film.film.genre", "direction": "out"}]
    )
    assert query == (
        "MATCH p = (n0:Item {id: 'a'})-[:FILM_FILM_GENRE {relation: 'film.film.genre'}]->"
        "(n1:Entity {id: 'e'}) RETURN p"
    )
    # An edge without a relation (kgrec's own types, co-purchase edges from before) keeps the plain form.
    plain = path_cypher(nodes[:1] * 2, [{"type": "ALSO_BOUGHT", "relation": None, "direction": "in"}])
    assert plain == "MATCH p = (n0:Item {id: 'a'})<-[:ALSO_BOUGHT]-(n1:Item {id: 'a'}) RETURN p"


def test_path_cypher_refuses_bad_relation_names_and_mismatched_types() -> None:
    nodes = [{"label": "Item", "id": "a"}, {"label": "Entity", "id": "e"}]
    for name in ["origin']->() DETACH DELETE n //", "a b", "", "x" * 129, "genre`"]:
        with pytest.raises(RelationNameError):
            path_cypher(nodes, [{"type": "ORIGIN", "relation": name, "direction": "out"}])
    with pytest.raises(ValueError, match="ORIGIN"):
        path_cypher(nodes, [{"type": "INTERACTED", "relation": "origin", "direction": "out"}])


def test_relation_paths_find_exactly_their_edge(gateway: GraphGateway) -> None:
    """Two relations of one type (and every awkward name) each find only their own edge."""
    rows = [
        {"item": f"item {k}", "entity": f"entity {k}", "relation": name}
        for k, name in enumerate([*RELATIONS, "film_film_genre"])
    ]
    for row in rows:
        rel_type = relationship_type(row["relation"])
        gateway.run_query(
            f"CREATE (:Item {{id: $item}})-[:{rel_type} {{relation: $relation}}]->(:Entity {{id: $entity}})",
            row,
        )
    # film.film.genre and film_film_genre share a type; link the first item by the second name too.
    gateway.run_query(
        "MATCH (i:Item {id: 'item 1'}), (e:Entity {id: 'entity 1'}) "
        "CREATE (i)-[:FILM_FILM_GENRE {relation: 'film_film_genre'}]->(e)",
        {},
    )
    for row in rows:
        nodes = [{"label": "Item", "id": row["item"]}, {"label": "Entity", "id": row["entity"]}]
        rels = [{"type": relationship_type(row["relation"]), "relation": row["relation"], "direction": "out"}]
        found = gateway.run_query(path_cypher(nodes, rels) + ", n0.id AS item", {})
        assert [r["item"] for r in found] == [row["item"]], row
    # The second relation on item 1's edge pair is found once, not as film.film.genre's.
    both = gateway.run_query(
        path_cypher(
            [{"label": "Item", "id": "item 1"}, {"label": "Entity", "id": "entity 1"}],
            [{"type": "FILM_FILM_GENRE", "relation": "film_film_genre", "direction": "out"}],
        ),
        {},
    )
    assert len(both) == 1
