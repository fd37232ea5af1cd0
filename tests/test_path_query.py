"""The Browser Cypher of an explanation path quotes hostile ids safely and finds exactly that path."""

from __future__ import annotations

import pytest

from graph_schema.path_query import cypher_string, path_cypher
from kgrec.gateway import GraphGateway
from tests.cypher_lint import lint

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
