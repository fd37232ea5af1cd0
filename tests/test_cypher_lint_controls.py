"""The Neo4j lint catches what it is there for, and checks every explanation path's Browser Cypher.

Each negative control is a statement with one mistake beside the same statement without it: the
mistake must be an error, and the corrected statement must pass (so the error is about the mistake).
"""

from __future__ import annotations

from typing import Any

import pytest

from graph_schema.allow_list import Label, Rel
from graph_schema.path_query import path_cypher
from kgrec.explanations import read_co_user_paths, read_paths
from kgrec.gateway import GraphGateway
from tests.cypher_lint import lint

ROWS = {"rows": [{"id": "u1", "user_id": "u1", "extra": {"name": "Ann"}}]}
BAD_ROWS = {"rows": [{"id": "u1", "user_id": "u1", "extra": {"nickname": "Ann"}}]}

# name: (statement with the mistake, the same statement corrected, the name the error must cite, params)
CONTROLS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "label in CREATE": ("CREATE (:Usr {id: 'u1'})", "CREATE (:User {id: 'u1'})", "Usr", {}),
    "property in CREATE": ("CREATE (:User {idd: 'u1'})", "CREATE (:User {id: 'u1'})", "idd", {}),
    "relationship type in CREATE": (
        "MATCH (u:User {id: 'u1'}) CREATE (u)-[:INTERACTD]->(:Item {id: 'i1'})",
        "MATCH (u:User {id: 'u1'}) CREATE (u)-[:INTERACTED]->(:Item {id: 'i1'})",
        "INTERACTD",
        {},
    ),
    "label in MERGE": ("MERGE (:Itm {id: 'i1'})", "MERGE (:Item {id: 'i1'})", "Itm", {}),
    "property in MERGE": ("MERGE (:Item {sku: 'i1'})", "MERGE (:Item {id: 'i1'})", "sku", {}),
    "relationship type in MERGE": (
        "MATCH (i:Item {id: 'i1'}) MERGE (i)-[:MADE_BY_]->(:Brand {id: 'b1'})",
        "MATCH (i:Item {id: 'i1'}) MERGE (i)-[:MADE_BY]->(:Brand {id: 'b1'})",
        "MADE_BY_",
        {},
    ),
    "property in ON CREATE SET": (
        "MERGE (u:User {id: 'u1'}) ON CREATE SET u.craeted_at = 1",
        "MERGE (u:User {id: 'u1'}) ON CREATE SET u.created_at = 1",
        "craeted_at",
        {},
    ),
    "property in SET": (
        "MATCH (u:User {id: 'u1'}) SET u.flagged = true",
        "MATCH (u:User {id: 'u1'}) SET u.flagged_bot = true",
        "flagged",
        {},
    ),
    "label in SET": (
        "MATCH (u:User {id: 'u1'}) SET u:Bot",
        "MATCH (u:User {id: 'u1'}) SET u:User",
        "Bot",
        {},
    ),
    "property in a SET map": (
        "MATCH (u:User {id: 'u1'}) SET u += {nickname: 'Ann'}",
        "MATCH (u:User {id: 'u1'}) SET u += {name: 'Ann'}",
        "nickname",
        {},
    ),
    "property in a SET map from the parameters": (
        "UNWIND $rows AS r MATCH (u:User {id: r.id}) SET u += r.extra",
        "UNWIND $rows AS r MATCH (u:User {id: r.id}) SET u += r.extra",
        "nickname",
        BAD_ROWS,  # the corrected statement runs with ROWS
    ),
    "unknown function": (
        "MATCH (u:User) RETURN frobnicate(u.id) AS x",
        "MATCH (u:User) RETURN toUpper(u.id) AS x",
        "frobnicate",
        {},
    ),
    "unknown procedure": ("CALL db.frobnicate()", "CALL db.labels()", "db.frobnicate", {}),
    "FalkorDB-only function toJSON": (
        "MATCH (u:User) RETURN toJSON(u) AS x",
        "MATCH (u:User) RETURN properties(u) AS x",
        "toJSON",
        {},
    ),
    "FalkorDB-only function vecf32": (
        "MATCH (u:User) RETURN vecf32([1.0, 2.0]) AS x",
        "MATCH (u:User) RETURN [1.0, 2.0] AS x",
        "vecf32",
        {},
    ),
    "FalkorDB-only procedure": (
        "CALL db.idx.fulltext.queryNodes('Item', 'lipstick') YIELD node RETURN node",
        "CALL db.index.fulltext.queryNodes('Item', 'lipstick') YIELD node RETURN node",
        "db.idx.fulltext.queryNodes",
        {},
    ),
    "row field read as a graph property": (
        "UNWIND $rows AS r MATCH (u:User {id: r.user_id}) RETURN u.user_id AS id",
        "UNWIND $rows AS r MATCH (u:User {id: r.user_id}) RETURN u.id AS id",
        "user_id",
        ROWS,
    ),
    "row field in no parameter map": (
        "UNWIND $rows AS r MATCH (u:User {id: r.userid}) RETURN u.id AS id",
        "UNWIND $rows AS r MATCH (u:User {id: r.user_id}) RETURN u.id AS id",
        "userid",
        ROWS,
    ),
}


@pytest.fixture(scope="module")
def control_results() -> dict[str, list[dict[str, Any]]]:
    """Every control, with and without its mistake, in one run of the linter."""
    statements = []
    for name, (bad, good, _, params) in CONTROLS.items():
        statements.append({"name": f"bad: {name}", "cypher": bad, "params": params})
        statements.append({"name": f"good: {name}", "cypher": good, "params": ROWS if params else {}})
    return lint(statements)


@pytest.mark.parametrize("control", CONTROLS, ids=str)
def test_the_lint_reports_the_mistake_as_an_error(
    control_results: dict[str, list[dict[str, Any]]], control: str
) -> None:
    cited = CONTROLS[control][2]
    errors = [d["message"] for d in control_results[f"bad: {control}"] if d["severity"] == "error"]
    assert any(cited in message for message in errors), control_results[f"bad: {control}"]
    assert control_results[f"good: {control}"] == []


# Every shape the explanation reads return (graph_schema/statements/explanations.py): node labels, and
# (type, direction) per relationship.
_OUT, _IN = "out", "in"
_KNOWLEDGE = ("ALSO_BOUGHT", "ALSO_VIEWED", "BOUGHT_TOGETHER")
EXPLANATION_SHAPES = {
    *(
        (("User", "Item", "Item"), (("INTERACTED", _OUT), (link, direction)))
        for link in _KNOWLEDGE
        for direction in (_OUT, _IN)
    ),
    (("User", "Item", "Brand", "Item"), (("INTERACTED", _OUT), ("MADE_BY", _OUT), ("MADE_BY", _IN))),
    (("User", "Brand", "Item"), (("INTERESTED_IN", _OUT), ("MADE_BY", _IN))),
    (("User", "Category", "Item"), (("INTERESTED_IN", _OUT), ("IN_CATEGORY", _IN))),
    (("User", "Item", "User", "Item"), (("INTERACTED", _OUT), ("INTERACTED", _IN), ("INTERACTED", _OUT))),
    # related_item through a relation outside the co-purchase three, both directions
    (("User", "Item", "Item"), (("INTERACTED", _OUT), ("SIMILAR_TO", _OUT))),
    (("User", "Item", "Item"), (("INTERACTED", _OUT), ("SIMILAR_TO", _IN))),
    # shared_attribute through an entity
    (("User", "Item", "Entity", "Item"), (("INTERACTED", _OUT), ("RDF_TYPE", _OUT), ("RDF_TYPE", _IN))),
}

# A graph on which one user has a path of every shape to the item "target".
_EVERY_PATH_KIND = """
CREATE (u:User {id: 'me'}), (other:User {id: 'other'}),
       (h:Item {id: 'hub', title: 'Hub'}), (t:Item {id: 'target', title: 'Target'}),
       (b:Brand {id: 'brand', name: 'Acme'}), (c:Category {id: 'lips', name: 'Lips'}),
       (u)-[:INTERACTED {weight: 1.0, weight_ts: 1, last_ts: 1, n_purchase: 1}]->(h),
       (other)-[:INTERACTED {weight: 1.0, weight_ts: 1, last_ts: 1, n_view: 1}]->(h),
       (other)-[:INTERACTED {weight: 1.0, weight_ts: 1, last_ts: 1, n_view: 1}]->(t),
       (e:Entity {id: 'm.0jzc', kind: 'genre', name: 'Jazz'}),
       (h)-[:ALSO_BOUGHT {relation: 'also_bought'}]->(t), (h)-[:ALSO_VIEWED {relation: 'also_viewed'}]->(t),
       (h)-[:BOUGHT_TOGETHER {relation: 'bought_together'}]->(t),
       (t)-[:ALSO_BOUGHT {relation: 'also_bought'}]->(h), (t)-[:ALSO_VIEWED {relation: 'also_viewed'}]->(h),
       (t)-[:BOUGHT_TOGETHER {relation: 'bought_together'}]->(h),
       (h)-[:SIMILAR_TO {relation: 'similar_to'}]->(t), (t)-[:SIMILAR_TO {relation: 'similar_to'}]->(h),
       (h)-[:RDF_TYPE {relation: 'rdf:type'}]->(e), (t)-[:RDF_TYPE {relation: 'rdf:type'}]->(e),
       (h)-[:MADE_BY]->(b), (t)-[:MADE_BY]->(b), (t)-[:IN_CATEGORY]->(c),
       (u)-[:INTERESTED_IN {weight: 1.0, weight_ts: 1}]->(b), (u)-[:INTERESTED_IN {weight: 0.5, weight_ts: 1}]->(c)
"""


def _shape(nodes: list[dict[str, Any]], rels: list[dict[str, Any]]) -> tuple[Any, ...]:
    return tuple(n["label"] for n in nodes), tuple((r["type"], r["direction"]) for r in rels)


def test_every_explanation_path_shape_renders_browser_cypher_that_passes_lint_and_finds_it(
    gateway: GraphGateway,
) -> None:
    """The shapes come from the explanation statements themselves, on a graph where every kind exists."""
    gateway.run_query(_EVERY_PATH_KIND, {})
    pair = {"hub": "hub", "target": "target"}
    rows = read_paths(
        gateway, "me", ["target"], hubs=30, now_ms=0, half_life_ms=1.0, forward=[pair], backward=[pair]
    )
    rows += read_co_user_paths(gateway, "me", ["target"], hubs=30)
    by_shape = {_shape(r["nodes"], r["rels"]): path_cypher(r["nodes"], r["rels"]) for r in rows}
    assert set(by_shape) == EXPLANATION_SHAPES
    for query in by_shape.values():
        assert len(gateway.run_query(query, {})) == 1, query
    results = lint([{"name": str(shape), "cypher": query, "params": {}} for shape, query in by_shape.items()])
    assert {name: d for name, d in results.items() if d} == {}


def test_every_label_type_and_direction_path_cypher_can_render_passes_lint() -> None:
    """One path through every allow-listed label and every relationship type in both directions."""
    hops = [(rel, direction) for rel in Rel for direction in (_OUT, _IN)]
    labels = list(Label)
    nodes = [{"label": labels[k % len(labels)].value, "id": f"n{k}"} for k in range(len(hops) + 1)]
    rels = [{"type": rel.value, "direction": direction} for rel, direction in hops]
    single_hops = [path_cypher(nodes[k : k + 2], rels[k : k + 1]) for k in range(2)]
    statements = [path_cypher(nodes, rels), *single_hops]
    results = lint([{"name": f"path{k}", "cypher": c, "params": {}} for k, c in enumerate(statements)])
    assert {name: d for name, d in results.items() if d} == {}
