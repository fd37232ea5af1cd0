"""Every write statement of the catalogue changes the graph as its name and docstring say.

Each case builds a small graph by hand where the statement touches at least one
row (an existing node to update, a pair to link, an edge to prune), runs the
statement, and checks the nodes, relationships and properties it changed, and
those it must leave alone. ``EFFECTS`` maps each write statement to its case;
a write statement added to ``graph_schema.statements`` without one fails
:func:`test_every_write_statement_has_an_effect_case`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from graph_schema import allow_list
from graph_schema.behaviours import COUNTER_PROPERTIES
from graph_schema.catalogue import Statement, all_statements
from graph_schema.statements.catalogue import UPSERT_CATALOGUE_ITEMS_WITH_ATTRIBUTES
from graph_schema.statements.events import (
    INGEST_EVENTS_WITH_ATTRIBUTES,
    INGEST_LANGUAGE_EVENTS_WITH_ATTRIBUTES,
)
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.gateway import GraphConflict, GraphGateway, GraphQueryError
from kgrec.maintenance import clear_graph
from tests.conftest import migrated_graph

STATEMENTS = {s.name: s for s in all_statements()}
NOW = 1_700_000_000_000  # the examples' "now"
# The ABOUT writers' node as a statement taking its lock makes it when no writer ever began.
ABOUT_MADE = {"id": "about", "created_at": NOW, "revision": 0, "running": 0, "busy_until": 0, "updated_at": 0}

Case = Callable[[GraphGateway, Statement], None]
EFFECTS: dict[str, Case] = {}


def effect(*names: str) -> Callable[[Case], Case]:
    """Register ``case`` as the effect test of the write statements ``names``."""

    def register(case: Case) -> Case:
        for name in names:
            assert name not in EFFECTS, name
            EFFECTS[name] = case
        return case

    return register


def query(gw: GraphGateway, cypher: str, **params: Any) -> list[dict[str, Any]]:
    """Run fixture-building or checking Cypher (not from the catalogue)."""
    return gw.run_query(cypher, params)


def node(gw: GraphGateway, label: str, node_id: str) -> dict[str, Any] | None:
    """The properties of the one ``label`` node with ``node_id``, or None."""
    rows = query(gw, f"MATCH (n:{label} {{id: $id}}) RETURN properties(n) AS p", id=node_id)
    assert len(rows) <= 1
    return rows[0]["p"] if rows else None


def rels(gw: GraphGateway, pattern: str, **params: Any) -> list[dict[str, Any]]:
    """The properties of every relationship ``r`` that ``pattern`` matches."""
    return [row["p"] for row in query(gw, f"MATCH {pattern} RETURN properties(r) AS p", **params)]


def count(gw: GraphGateway, pattern: str, **params: Any) -> int:
    """How many matches ``pattern`` has."""
    return int(query(gw, f"MATCH {pattern} RETURN count(*) AS n", **params)[0]["n"])


# --- bulk import ----------------------------------------------------------------------------------


@effect("upsert_items")
def _upsert_items(gw: GraphGateway, st: Statement) -> None:
    query(
        gw,
        "CREATE (:Item {id: 'B0001', created_at: 1, listed: false, title: 'Old', price: 3.0}),"
        "       (:Item {id: 'B0003', created_at: 2, listed: false, title: 'Kept', price: 4.0,"
        "               description: 'Kept text'})",
    )
    rows = [
        *st.params["rows"],
        {"id": "B0003", "title": None, "price": None, "description": None},
        {"id": "B0004", "title": "New"},
    ]
    gw.write(st, {**st.params, "rows": [{"price": None, **r} for r in rows]})
    assert node(gw, "Item", "B0001") == {
        "id": "B0001",
        "created_at": 1,
        "listed": True,
        "title": "Lipstick",
        "description": "A matte red lipstick.",
        "price": 9.5,
    }
    # A missing title, description or price keeps the stored one.
    assert node(gw, "Item", "B0003") == {
        "id": "B0003",
        "created_at": 2,
        "listed": True,
        "title": "Kept",
        "price": 4.0,
        "description": "Kept text",
    }
    assert node(gw, "Item", "B0004") == {"id": "B0004", "created_at": NOW, "listed": True, "title": "New"}
    # no model knows these items: nothing stamped, no catalogue revision
    assert node(gw, "Revision", "catalogue") is None
    clear_graph(gw)
    query(
        gw,
        "CREATE (:Item {id: 'k', price: 3.0}), (:Item {id: 's', price: 4.0}), (:Item {id: 'u', price: 5.0})",
    )
    _stamps(
        gw,
        st,
        [{"id": "k", "price": 6.0}, {"id": "s", "price": 4.0}, {"id": "u", "price": 7.0}, {"id": "n"}],
        known=["k", "s"],
        stamped=["k"],
    )
    assert [node(gw, "Item", i)["price"] for i in "ksu"] == [6.0, 4.0, 7.0]  # type: ignore[index]
    clear_graph(gw)
    _items_absorb_entities(gw, st)


def catalogue_revision(gw: GraphGateway) -> int | None:
    """The catalogue revision (None: the graph has none yet)."""
    rows = query(gw, "MATCH (r:Revision {id: 'catalogue'}) RETURN r.revision AS v")
    return rows[0]["v"] if rows else None


def _stamps(
    gw: GraphGateway, st: Statement, rows: list[dict[str, Any]], known: list[str], stamped: list[str]
) -> None:
    """An import statement that writes item facts stamps the items in ``stamped`` (of the items a
    model knows, ``known``: each gets an EMBEDDING from a ModelVersion) with one new catalogue
    revision and its batch's time ``$at``, and no other item; written again, it changes nothing
    and bumps nothing."""
    query(
        gw,
        "CREATE (:Revision {id: 'catalogue', revision: 4, created_at: 1, updated_at: 2}), "
        "(m:ModelVersion {id: 'v1'}) WITH m UNWIND $ids AS id MATCH (i:Item {id: id}) "
        "CREATE (m)-[:EMBEDDING]->(i)",
        ids=known,
    )
    before = {r["id"]: r["p"] for r in query(gw, "MATCH (i:Item) RETURN i.id AS id, properties(i) AS p")}
    params = {**st.params, "rows": rows}
    gw.write(st, {**params, "at": NOW + 5})
    assert node(gw, "Revision", "catalogue") == {
        "id": "catalogue",
        "revision": 5,
        "created_at": 1,
        "updated_at": NOW + 5,
    }
    after = {r["id"]: r["p"] for r in query(gw, "MATCH (i:Item) RETURN i.id AS id, properties(i) AS p")}
    for item_id, props in after.items():
        stamp = (props.get("revision"), props.get("updated_at"))
        assert stamp == ((5, NOW + 5) if item_id in stamped else (None, None)), item_id
    gw.write(st, {**params, "at": NOW + 9})  # nothing changes: no bump, no stamp
    assert catalogue_revision(gw) == 5
    again = {r["id"]: r["p"] for r in query(gw, "MATCH (i:Item) RETURN i.id AS id, properties(i) AS p")}
    assert again == after and set(before) <= set(after)


def _entity_becomes_item(gw: GraphGateway, st: Statement, params: dict[str, Any], entity_id: str) -> None:
    """One id names one node: ``st`` turns the Entity ``entity_id`` (linked both ways) into the Item
    its ``params`` write, edges and all, and leaves an Entity alone whose id an Item holds already."""
    query(
        gw,
        "CREATE (e:Entity {id: $id, kind: 'genre', name: 'Was entity', created_at: 1}),"
        "       (h:Item {id: 'head'}), (t:Entity {id: 'tail'})"
        " CREATE (h)-[:SIMILAR_TO {relation: 'similar_to', created_at: 3}]->(e),"
        "        (e)-[:RDF_TYPE {relation: 'rdf:type'}]->(t)",
        id=entity_id,
    )
    gw.write(st, params)
    gw.write(st, params)  # idempotent
    assert node(gw, "Entity", entity_id) is None
    item = node(gw, "Item", entity_id)
    assert item is not None and item["created_at"] == 1 and "kind" not in item and "name" not in item
    edges = query(
        gw,
        "MATCH (a)-[r]->(b) WHERE r.relation IS NOT NULL AND $id IN [a.id, b.id] "
        "RETURN labels(a)[0] + ':' + a.id AS a, type(r) AS t, properties(r) AS p, labels(b)[0] + ':' + b.id AS b",
        id=entity_id,
    )
    assert sorted(
        (e["a"], e["t"], e["b"]) for e in edges if e["a"] in ("Item:head", f"Item:{entity_id}")
    ) == [
        ("Item:head", "SIMILAR_TO", f"Item:{entity_id}"),
        (f"Item:{entity_id}", "RDF_TYPE", "Entity:tail"),
    ]
    assert {"relation": "similar_to", "created_at": 3} in [e["p"] for e in edges]
    with pytest.raises(GraphQueryError):  # the unique constraint holds the relabelled node too
        query(gw, "CREATE (:Item {id: $id})", id=entity_id)


def _items_absorb_entities(gw: GraphGateway, st: Statement) -> None:
    """The id-to-node rule every item upsert follows (run on an emptied graph after its other effects)."""
    clear_graph(gw)

    def params(item_id: str) -> dict[str, Any]:
        if st.name == "upsert_items":
            return {**st.params, "rows": [{"id": item_id, "title": "X", "description": None, "price": None}]}
        if st.name == "upsert_unlisted_items":
            return {**st.params, "ids": [item_id]}
        empty = {
            "category_links": [],
            "replaced_brands": [],
            "replaced_categories": [],
            "replaced_attributes": [],
        }
        item = {"id": item_id, "props": {}, "brands": [], "categories": []}
        return {**st.params, **empty, "items": [item]}

    _entity_becomes_item(gw, st, params("x"), "x")
    assert node(gw, "Item", "x")["listed"] is (st.name != "upsert_unlisted_items")  # type: ignore[index]
    # an Entity whose id an Item holds already is left alone (nothing to relabel it into)
    query(gw, "CREATE (:Entity {id: 'both'}), (:Item {id: 'both'})")
    gw.write(st, params("both"))
    assert count(gw, "(:Entity {id: 'both'})") == 1 and count(gw, "(:Item {id: 'both'})") == 1


@effect("upsert_unlisted_items")
def _upsert_unlisted_items(gw: GraphGateway, st: Statement) -> None:
    query(gw, "CREATE (:Item {id: 'B0001', created_at: 1, listed: true})")
    gw.write(st, {**st.params, "ids": ["B0001", "B0002"]})
    assert node(gw, "Item", "B0001") == {"id": "B0001", "created_at": 1, "listed": True}  # untouched
    assert node(gw, "Item", "B0002") == {"id": "B0002", "created_at": NOW, "listed": False}
    _items_absorb_entities(gw, st)


@effect("upsert_brands", "upsert_categorys")
def _upsert_named_nodes(gw: GraphGateway, st: Statement) -> None:
    label = {"upsert_brands": "Brand", "upsert_categorys": "Category"}[st.name]
    query(gw, f"CREATE (:{label} {{id: 'L&#39;Oreal', name: 'old name', created_at: 1}})")
    query(gw, "CREATE (:Item {id: 'Olay'})")  # same id, other label: not this statement's node
    gw.write(st, {**st.params, "rows": [*st.params["rows"], {"id": "Olay", "name": "Olay"}]})
    assert node(gw, label, "L&#39;Oreal") == {"id": "L&#39;Oreal", "name": "L'Oreal", "created_at": 1}
    assert node(gw, label, "Olay") == {"id": "Olay", "name": "Olay", "created_at": NOW}
    assert node(gw, "Item", "Olay") == {"id": "Olay"}


# Each link statement by name: source label, relationship type, target label and the row keys.
# Spelled out (not derived from the allow-list) so that a new link statement needs its own line.
LINKS: dict[str, tuple[str, str, str, str, str]] = {
    "link_item_in_category_category": ("Item", "IN_CATEGORY", "Category", "item_id", "category_id"),
    "link_category_subcategory_of_category": (
        "Category",
        "SUBCATEGORY_OF",
        "Category",
        "child_id",
        "parent_id",
    ),
}


@effect(*LINKS)
def _link(gw: GraphGateway, st: Statement) -> None:
    source, rel, target, source_key, target_key = LINKS[st.name]
    query(gw, f"CREATE (:{source} {{id: 'a'}}), (:{target} {{id: 'b'}}), (:User {{id: 'b'}})")
    rows = [{source_key: "a", target_key: "b"}, {source_key: "a", target_key: "missing"}]
    # (category links: first as a batch whose links above were all stored already, which locks
    # and checks no tree; the check itself below)
    params = {**st.params, "tree_ids": [], "tree_links": []} if "tree_ids" in st.params else st.params
    first = gw.write(st, {**params, "rows": rows})
    again = gw.write(st, {**params, "rows": rows})  # idempotent: MERGE finds the link
    assert (first.relationships_created, again.relationships_created) == (1, 0)
    assert count(gw, f"(:{source} {{id: 'a'}})-[:{rel}]->(:{target} {{id: 'b'}})") == 1
    assert count(gw, "()-[r]->()") == 1  # nothing to the User 'b', nothing backwards
    assert count(gw, "(n)") == 3  # no node created for 'missing', no revision: no model knows an item
    if rel == "SUBCATEGORY_OF":
        # a link that would close a loop (b under a, a under itself) is not written
        query(gw, "CREATE (:Category {id: 'c'})")
        loops = [{source_key: "b", target_key: "a"}, {source_key: "a", target_key: "a"}]
        closing = gw.write(st, {**params, "rows": [*loops, {source_key: "c", target_key: "a"}]})
        assert closing.relationships_created == 1
        assert count(gw, "(:Category)-[:SUBCATEGORY_OF]->(:Category {id: 'a'})") == 1  # c's only
        # An import's batch checks the tree again as the API's writes do: a link stored above its
        # ids since its importer read them (a -> b) refuses it whole; the links it read, and the
        # import's own (written by its earlier batches), do not.
        query(gw, "CREATE (:Category {id: 'd'})")
        batch = {**st.params, "rows": [{source_key: "d", target_key: "c"}]}
        _refused_when_the_tree_moved(gw, st, {**batch, "tree_ids": ["c", "d"], "tree_links": []}, "c")
        read = [["a", "b"], ["c", "a"], ["d", "c"]]  # a -> b, c -> a read; d -> c the import's own
        assert gw.write(st, {**batch, "tree_ids": ["c", "d"], "tree_links": read}).relationships_created == 1
        assert node(gw, "Revision", "category_tree") == {"id": "category_tree"}  # the lock, none left
        _new_link_stamps_an_item_under_it(gw, st)
    else:
        # a category an item a model knows did not have yet stamps it
        clear_graph(gw)
        query(
            gw,
            "CREATE (k:Item {id: 'k'})-[:IN_CATEGORY]->(c:Category {id: 'c'}), (:Category {id: 'd'}), "
            "(s:Item {id: 's'})-[:IN_CATEGORY]->(c), (:Item {id: 'u'})",
        )
        pairs = [("k", "c"), ("k", "d"), ("s", "c"), ("u", "d")]
        rows = [{"item_id": i, "category_id": c} for i, c in pairs]
        _stamps(gw, st, rows, known=["k", "s"], stamped=["k"])
        assert count(gw, "(:Item)-[:IN_CATEGORY]->()") == 4


def _new_link_stamps_an_item_under_it(gw: GraphGateway, st: Statement) -> None:
    """On a graph with a model version, a new category link stamps one item under its child (the
    least id): serving reads the link with that item's categories; a link already held stamps
    nothing (without a model version nothing is stamped: _link)."""
    clear_graph(gw)
    query(
        gw,
        "CREATE (c:Category {id: 'c'}), (p:Category {id: 'p'}), (q:Category {id: 'q'}), "
        "(o:Category {id: 'o'}), (h:Category {id: 'h'}), (h)-[:SUBCATEGORY_OF]->(p), "
        "(:Item {id: 'k2'})-[:IN_CATEGORY]->(c), (:Item {id: 'k1'})-[:IN_CATEGORY]->(c), "
        "(:Item {id: 'u'})-[:IN_CATEGORY]->(o), (:Item {id: 'kh'})-[:IN_CATEGORY]->(h)",
    )
    links = [("c", "p"), ("c", "q"), ("o", "p"), ("h", "p")]
    rows = [{"child_id": c, "parent_id": p} for c, p in links]
    _stamps(gw, st, rows, known=["k1", "k2", "kh"], stamped=["k1", "u"])
    assert count(gw, "(:Category)-[:SUBCATEGORY_OF]->(:Category)") == 4


@effect("link_item_made_by_brand")
def _link_item_brand(gw: GraphGateway, st: Statement) -> None:
    query(
        gw, "CREATE (:Item {id: 'a'})-[:MADE_BY]->(:Brand {id: 'old'}), (:Brand {id: 'b'}), (:User {id: 'b'})"
    )
    query(gw, "CREATE (:Item {id: 'c'})-[:IN_CATEGORY]->(:Category {id: 'cat'})")
    rows = [{"item_id": "a", "brand_id": "b"}, {"item_id": "a", "brand_id": "missing"}]
    first = gw.write(st, {**st.params, "rows": rows})
    again = gw.write(st, {**st.params, "rows": rows})  # idempotent: MERGE finds the link
    assert (first.relationships_created, again.relationships_created) == (1, 0)
    # the brand replaces the earlier one (an item has one brand); the Brand node stays
    assert [r["id"] for r in query(gw, "MATCH (:Item {id: 'a'})-[:MADE_BY]->(b) RETURN b.id AS id")] == ["b"]
    assert count(gw, "(:Brand {id: 'old'})") == 1
    assert count(gw, "(:Item {id: 'c'})-[:IN_CATEGORY]->()") == 1  # other links untouched
    assert count(gw, "()-[r]->()") == 2  # nothing to the User 'b', nothing backwards
    assert count(gw, "(n)") == 6  # no node created for 'missing'
    # a new brand of an item a model knows stamps it; the brand it has, or an unknown item, does not
    clear_graph(gw)
    query(
        gw,
        "CREATE (:Item {id: 'k'})-[:MADE_BY]->(:Brand {id: 'old'}), (s:Item {id: 's'})-[:MADE_BY]->(b:Brand {id: 'b'}), "
        "(:Item {id: 'n'})-[:MADE_BY]->(b), (n2:Item {id: 'n2'}), (u:Item {id: 'u'})",
    )
    pairs = [("k", "b"), ("s", "b"), ("n2", "b"), ("u", "b")]
    _stamps(
        gw, st, [{"item_id": i, "brand_id": b} for i, b in pairs], known=["k", "s", "n2"], stamped=["k", "n2"]
    )
    assert count(gw, "(:Item)-[:MADE_BY]->(:Brand {id: 'b'})") == 5


# Each knowledge link statement rendered in the catalogue: relation, head label, type, tail label.
KNOWLEDGE_LINKS: dict[str, tuple[str, str, str, str]] = {
    "link_knowledge_item_film_film_genre_entity": ("film.film.genre", "Item", "FILM_FILM_GENRE", "Entity"),
    "link_knowledge_entity_rdf_type_entity": ("rdf:type", "Entity", "RDF_TYPE", "Entity"),
    "link_knowledge_entity_origin_item": ("origin", "Entity", "ORIGIN", "Item"),
    "link_knowledge_item_similar_to_item": ("similar_to", "Item", "SIMILAR_TO", "Item"),
    "link_knowledge_item_also_bought_item": ("also_bought", "Item", "ALSO_BOUGHT", "Item"),
    "link_knowledge_item_also_viewed_item": ("also_viewed", "Item", "ALSO_VIEWED", "Item"),
    "link_knowledge_item_bought_together_item": ("bought_together", "Item", "BOUGHT_TOGETHER", "Item"),
    # another name reaching a co-purchase type gets the prefixed one
    "link_knowledge_item_kg_also_bought_entity": ("also-bought", "Item", "KG_ALSO_BOUGHT", "Entity"),
    "link_knowledge_item_kg_also_viewed_item": ("Also_Viewed", "Item", "KG_ALSO_VIEWED", "Item"),
    "link_knowledge_item_kg_bought_together_item": ("bought-together", "Item", "KG_BOUGHT_TOGETHER", "Item"),
}


@effect(*KNOWLEDGE_LINKS)
def _link_knowledge(gw: GraphGateway, st: Statement) -> None:
    relation, head, rel_type, tail = KNOWLEDGE_LINKS[st.name]
    other = "Entity" if tail == "Item" else "Item"
    query(gw, f"CREATE (:{head} {{id: 'a'}}), (:{tail} {{id: 'b'}}), (:{other} {{id: 'b'}})")
    # Another name with the same type (upper-cased) is another edge, told apart by its relation.
    rows = [
        {"head": "a", "relation": relation, "tail": "b"},
        {"head": "a", "relation": relation.upper(), "tail": "b"},
        {"head": "a", "relation": relation, "tail": "missing"},
    ]
    first = gw.write(st, {"rows": rows})
    again = gw.write(st, {"rows": rows})  # idempotent: MERGE finds both edges
    assert (first.relationships_created, again.relationships_created) == (2, 0)
    edges = query(
        gw,
        f"MATCH (:{head} {{id: 'a'}})-[r]->(:{tail} {{id: 'b'}}) RETURN type(r) AS t, properties(r) AS p",
    )
    assert sorted((e["t"], e["p"]["relation"]) for e in edges) == sorted(
        [(rel_type, relation), (rel_type, relation.upper())]
    )
    assert all(e["p"] == {"relation": e["p"]["relation"]} for e in edges)  # nothing else on the edge
    # nothing to the other label's 'b', nothing backwards (listed, not counted: FalkorDB's count of
    # ()-[r]->() counts two edges of one type between the same nodes once)
    assert len(query(gw, "MATCH ()-[r]->() RETURN r.relation AS relation")) == 2
    assert count(gw, "(n)") == 3  # no node created for 'missing'


@effect("upsert_entities")
def _upsert_entities(gw: GraphGateway, st: Statement) -> None:
    query(
        gw,
        "CREATE (:Entity {id: 'm.0jzc', kind: 'style', name: 'Old', created_at: 1}),"
        "       (:Entity {id: 'kept', kind: 'artist', name: 'Kept', created_at: 2}),"
        "       (:Item {id: 'Q5'})",
    )
    rows = [
        *st.params["rows"],
        {"id": "kept", "kind": None, "name": None},
        {"id": "Q5", "kind": "person", "name": None},
    ]
    first = gw.write(st, {**st.params, "rows": rows})
    gw.write(st, {**st.params, "rows": rows})
    assert first.nodes_created == 0
    assert node(gw, "Entity", "m.0jzc") == {"id": "m.0jzc", "kind": "genre", "name": "Jazz", "created_at": 1}
    # A missing kind or name keeps the stored one.
    assert node(gw, "Entity", "kept") == {"id": "kept", "kind": "artist", "name": "Kept", "created_at": 2}
    # One id names one node: Q5 is an Item, so no Entity is written for it.
    assert node(gw, "Entity", "Q5") is None
    assert node(gw, "Item", "Q5") == {"id": "Q5"}
    assert count(gw, "(n)") == 3
    again = gw.write(st, {**st.params, "rows": [{"id": "new", "kind": None, "name": "New"}]})
    assert again.nodes_created == 1 and node(gw, "Entity", "new") == {
        "id": "new",
        "name": "New",
        "created_at": NOW,
    }


@effect("move_twin_edges_out_rdf_type", "move_twin_edges_in_rdf_type")
def _move_twin_edges(gw: GraphGateway, st: Statement) -> None:
    outgoing = st.name.startswith("move_twin_edges_out")

    def edge(a: str, b: str, props: str = "", *, forward: bool = outgoing, var: str = "r") -> str:
        """``a`` to ``b`` in the statement's direction (``forward``), an RDF_TYPE edge."""
        rel = f"[{var}:RDF_TYPE {props}]"
        return f"({a})-{rel}->({b})" if forward else f"({a})<-{rel}-({b})"

    # The twin m.0jzc (an Entity and an Item) has three edges in the statement's direction: one the
    # Item has already (kept once, gaining only what it lacks), a new one, and one of another
    # relation name to the same end. Its edge of the other direction, and another twin, stay put.
    query(
        gw,
        "CREATE (e:Entity {id: 'm.0jzc'}), (i:Item {id: 'm.0jzc'}), (g:Entity {id: 'genre'}),"
        "       (o:Item {id: 'other'}), (x:Entity {id: 'x'}), (:Item {id: 'x'})"
        f" CREATE {edge('e', 'g', '{relation: $r, since: 1, extra: 1}', var='')},"
        f"        {edge('i', 'g', '{relation: $r, since: 2}', var='')},"
        f"        {edge('e', 'o', '{relation: $r}', var='')},"
        f"        {edge('e', 'g', '{relation: $other}', var='')},"
        f"        {edge('x', 'o', '{relation: $r}', var='')},"
        f"        {edge('e', 'o', '{relation: $r}', forward=not outgoing, var='')}",
        r="rdf:type",
        other="RDF_TYPE",
    )
    batches = [gw.write(st, {"ids": ["m.0jzc"], "limit": 2}).rows for _ in range(3)]
    assert batches == [[{"moved": 2}], [{"moved": 1}], [{"moved": 0}]]  # two, the last, nothing left
    moved = query(
        gw,
        f"MATCH {edge('i:Item {id: $id}', 'b')} RETURN b.id AS b, properties(r) AS p",
        id="m.0jzc",
    )
    assert sorted((m["b"], m["p"]["relation"], m["p"]) for m in moved) == [
        ("genre", "RDF_TYPE", {"relation": "RDF_TYPE"}),
        ("genre", "rdf:type", {"relation": "rdf:type", "since": 2, "extra": 1}),
        ("other", "rdf:type", {"relation": "rdf:type"}),
    ]
    assert count(gw, edge("e:Entity {id: 'm.0jzc'}", "")) == 0
    assert count(gw, edge("e:Entity {id: 'm.0jzc'}", "", forward=not outgoing)) == 1
    assert count(gw, edge("x:Entity {id: 'x'}", "")) == 1
    assert count(gw, "(n)") == 6  # nothing created, nothing deleted


@effect("delete_merged_twins")
def _delete_merged_twins(gw: GraphGateway, st: Statement) -> None:
    query(
        gw,
        "CREATE (:Entity {id: 'm.0jzc'}), (:Item {id: 'm.0jzc'}), (:Entity {id: 'alone'}),"
        "       (linked:Entity {id: 'linked'}), (:Item {id: 'linked'})"
        " CREATE (linked)-[:RDF_TYPE {relation: 'rdf:type'}]->(:Entity {id: 'kind'})",
    )
    ids = ["m.0jzc", "alone", "linked", "missing"]
    assert gw.write(st, {"ids": ids}).rows == [{"deleted": 1}]
    # An Entity without an Item twin, or one that still has edges, is kept.
    assert node(gw, "Entity", "m.0jzc") is None and node(gw, "Item", "m.0jzc") == {"id": "m.0jzc"}
    assert node(gw, "Entity", "alone") is not None and node(gw, "Entity", "linked") is not None
    assert gw.write(st, {"ids": ids}).rows == [{"deleted": 0}]


@effect("start_import", "finish_import")
def _import_record(gw: GraphGateway, st: Statement) -> None:
    query(gw, "CREATE (:Revision {id: 'catalogue', revision: 3})")
    start = STATEMENTS["start_import"]
    gw.write(start, start.params)
    record = {
        "id": "import",
        "created_at": NOW,
        "dataset": "amazon-beauty-kg",
        "started_at": NOW,
        "first_starts": start.params["first_starts"],
    }
    assert node(gw, "Revision", "import") == record
    finish = STATEMENTS["finish_import"]
    assert gw.write(finish, {"started": NOW + 1, "now": NOW + 9}).rows == []  # another import's start
    assert gw.write(finish, finish.params).rows == [{"finished_at": NOW + 60_000}]
    assert node(gw, "Revision", "import") == {**record, "finished_at": NOW + 60_000}
    # a new start owns the record: unfinished again, with its own data set and start; it removes
    # the first_started_at a record kept before 2026-12-07 has (first_starts holds it)
    query(gw, "MATCH (r:Revision {id: 'import'}) SET r.first_started_at = 7")
    starts = '{"amazon-beauty-kg": 1, "shop": 2}'
    gw.write(start, {"dataset": "shop", "now": NOW + 5, "first_starts": starts})
    assert node(gw, "Revision", "import") == {
        **record,
        "dataset": "shop",
        "started_at": NOW + 5,
        "first_starts": starts,
    }
    assert node(gw, "Revision", "catalogue") == {"id": "catalogue", "revision": 3}
    assert count(gw, "(n)") == 2


@effect("upsert_users")
def _upsert_users(gw: GraphGateway, st: Statement) -> None:
    (known,) = st.params["ids"]
    query(gw, "CREATE (:User {id: $id, created_at: 1, flagged_bot: true})", id=known)
    gw.write(st, {**st.params, "ids": [known, "new-user"]})
    assert node(gw, "User", known) == {"id": known, "created_at": 1, "flagged_bot": True}
    assert node(gw, "User", "new-user") == {"id": "new-user", "created_at": NOW, "flagged_bot": False}


@effect("flag_bots")
def _flag_bots(gw: GraphGateway, st: Statement) -> None:
    (bot,) = st.params["ids"]
    query(
        gw,
        "CREATE (:User {id: $bot, flagged_bot: false}), (:User {id: 'human', flagged_bot: false}),"
        "       (:User {id: 'flagged', flagged_bot: true, flagged_at: 5}), (:User {id: 'old-bot', flagged_bot: true})",
        bot=bot,
    )
    gw.write(st, {"ids": [bot, "missing", "flagged", "old-bot"], "at": NOW})
    # stamped with the batch's time when the flag first turns true (an erasure compares it with a pull)
    assert node(gw, "User", bot) == {"id": bot, "flagged_bot": True, "flagged_at": NOW}
    assert node(gw, "User", "human") == {"id": "human", "flagged_bot": False}
    assert node(gw, "User", "missing") is None  # flags known users only
    # a user already flagged keeps their time, or none (flagged before it was recorded: before every pull)
    assert node(gw, "User", "flagged") == {"id": "flagged", "flagged_bot": True, "flagged_at": 5}
    assert node(gw, "User", "old-bot") == {"id": "old-bot", "flagged_bot": True}
    gw.write(st, {"ids": [bot], "at": NOW + 1})  # the import run again
    assert node(gw, "User", bot) == {"id": bot, "flagged_bot": True, "flagged_at": NOW}


@effect("set_interactions")
def _set_interactions(gw: GraphGateway, st: Statement) -> None:
    (row,) = st.params["rows"]
    query(
        gw,
        "CREATE (u:User {id: $u})-[:INTERACTED {weight: 1.0, weight_ts: 5, rating: 3.0}]->(:Item {id: $i})",
        u=row["user_id"],
        i=row["item_id"],
    )
    gw.write(st, st.params)
    (edge,) = rels(
        gw, "(:User {id: $u})-[r:INTERACTED]->(:Item {id: $i})", u=row["user_id"], i=row["item_id"]
    )
    # Set to the aggregated values (a null rating removes the stored one).
    assert {
        k: edge.get(k) for k in ("n_purchase", "weight", "weight_ts", "first_ts", "last_ts", "last_seq")
    } == {
        "n_purchase": 1,
        "weight": 5.0,
        "weight_ts": NOW,
        "first_ts": NOW,
        "last_ts": NOW,
        "last_seq": 0,
    }
    assert edge.get("rating") is None and "received_at" not in edge  # a stored pair keeps its own
    # a new pair is stamped with its batch's time, when the graph received it, and keeps it
    query(gw, "CREATE (:Item {id: 'B-new'})")
    for at in (NOW + 7, NOW + 9):
        gw.write(st, {"rows": [{**row, "item_id": "B-new"}], "at": at})
    (new,) = rels(gw, "(:User {id: $u})-[r:INTERACTED]->(:Item {id: 'B-new'})", u=row["user_id"])
    assert new["received_at"] == NOW + 7


@effect("set_brand_interests", "set_category_interests")
def _set_interests(gw: GraphGateway, st: Statement) -> None:
    label = {"set_brand_interests": "Brand", "set_category_interests": "Category"}[st.name]
    other = "Category" if label == "Brand" else "Brand"
    (row,) = st.params["rows"]
    query(
        gw,
        f"CREATE (u:User {{id: $u}})-[:INTERESTED_IN {{weight: 1.0, weight_ts: 1, count: 9}}]->(:{label} {{id: $t}}),"
        f"       (:{other} {{id: $t}})",
        u=row["user_id"],
        t=row["target_id"],
    )
    gw.write(st, st.params)
    (edge,) = rels(gw, f"(:User)-[r:INTERESTED_IN]->(:{label} {{id: $t}})", t=row["target_id"])
    assert edge == {"weight": 5.0, "weight_ts": NOW, "count": 1, "first_ts": NOW, "last_ts": NOW}
    assert count(gw, f"(:User)-[:INTERESTED_IN]->(:{other})") == 0


# --- events ---------------------------------------------------------------------------------------


def _refused_when_the_tree_moved(gw: GraphGateway, st: Statement, params: dict[str, Any], below: str) -> None:
    """A write of category paths whose writer read fewer links above their ids than the graph holds
    now (another writer's, which may close a loop with this write's) is refused whole: a
    GraphConflict, nothing written. ``below``: a category with a stored link above it."""
    graph = "MATCH (n) OPTIONAL MATCH (n)-[r]->() RETURN count(DISTINCT n) AS nodes, count(r) AS edges"
    before, revision = query(gw, graph), _revision(gw)
    with pytest.raises(GraphConflict):
        gw.write(st, {**params, "tree_ids": [below], "tree_links": []})
    assert query(gw, graph) == before and _revision(gw) == revision


@effect(
    "ingest_events",
    INGEST_EVENTS_WITH_ATTRIBUTES.name,
    "ingest_language_events",
    INGEST_LANGUAGE_EVENTS_WITH_ATTRIBUTES.name,
)
def _ingest_events(gw: GraphGateway, st: Statement) -> None:
    # Stored: u1 (119 events this minute, no bot flag yet) with a purchase of i1 and a view of i3,
    # both stamped one half-life ago, and an interest in Acme (which makes i1 and i3); i1 is in Face,
    # and Hair is under Face. The batch: u1 buys and views i1 again (i1 also goes into Beauty) and
    # rates i3 (an event one half-life old; i3 gets a price); a new user u2 rates a new item i2
    # (HairCo, Hair). i4's facts come again unchanged. The catalogue is at revision 4.
    minute = 28_333_333
    then = NOW - int(st.params["half_life_ms"])
    query(
        gw,
        """
        CREATE (u1:User {id: 'u1', created_at: 1, rate_minute: $minute, rate_count: 119}),
               (i1:Item {id: 'i1', created_at: 2, listed: false, title: 'Old title'}),
               (i3:Item {id: 'i3', created_at: 2, listed: true, title: 'Third'}),
               (i4:Item {id: 'i4', created_at: 2, listed: true, price: 3.0, revision: 2, updated_at: 9}),
               (:Revision {id: 'catalogue', revision: 4, created_at: 1, updated_at: 9}),
               (acme:Brand {id: 'Acme', name: 'Acme Inc', created_at: 4}),
               (face:Category {id: 'Face', name: 'Face care', created_at: 3}),
               (hair:Category {id: 'Hair', name: 'Hair care', created_at: 5})
        CREATE (i1)-[:MADE_BY]->(acme), (i3)-[:MADE_BY]->(acme), (i1)-[:IN_CATEGORY]->(face),
               (i4)-[:MADE_BY]->(acme), (i4)-[:IN_CATEGORY]->(face),
               (hair)-[:SUBCATEGORY_OF]->(face),
               (u1)-[:INTERACTED {weight: 5.0, weight_ts: $then, first_ts: 10, last_ts: $then,
                                  n_purchase: 2, n_view: 2, rating: 3.0, rating_ts: $later}]->(i1),
               (u1)-[:INTERACTED {weight: 1.0, weight_ts: $then, first_ts: 20, last_ts: $then,
                                  n_view: 1, rating: 2.0, rating_ts: $now}]->(i3),
               (u1)-[:INTERESTED_IN {weight: 2.0, weight_ts: $then, count: 3, first_ts: 10,
                                     last_ts: $then}]->(acme),
               (u1)-[:INTERESTED_IN {weight: 2.0, weight_ts: $then, count: 1, first_ts: 10,
                                     last_ts: $then}]->(:Topic {id: 'topic-1', name: 'lip care'}),
               (i3)-[:TAGGED {count: 2}]->(:Tag {id: 'matte', created_at: 1})
        """,
        minute=minute,
        then=then,
        now=NOW,
        later=NOW + 10,
    )

    def pair(user: str, item: str, counts: dict[str, int], weight: float, rating: float, ts: int) -> dict:
        return {
            "user_id": user,
            "item_id": item,
            "counts": counts,
            "events": sum(counts.values()),
            "weight": weight,
            "ref_ts": ts,
            "first_ts": ts - 5 if item == "i1" else ts,
            "rating": rating,
            "rating_ts": NOW,
        }

    pairs = [
        # The batch's rating of i1 is older than the stored one (kept); of i3, as new (replaces it).
        pair("u1", "i1", {"n_purchase": 1, "n_view": 1}, 6.0, 5.0, NOW),
        pair("u1", "i3", {"n_rating": 1}, 4.0, 4.5, then),
        pair("u2", "i2", {"n_rating": 1}, 4.0, 4.0, NOW)
        | {"review_text": "Smells of pine", "review_ts": NOW},
        pair("u3", "i2", {"n_rating": 1}, 4.0, 1.0, NOW),
        pair("u4", "i3", {"n_rating": 1}, 4.0, 1.0, then),
    ]
    params = {
        **st.params,
        "erasure_margin_ms": 0,  # the tombstones' times as they are (the margin: test_events_ingest.py)
        # Tombstones that committed after the ingester read them: u1 was erased before this batch's
        # events and came back (written); u3 at its event's time (not created, nor anything of it
        # written); u4, recreated meanwhile by a later batch, before its newest event here but after
        # the pair's (the user row passes, the pair, text vector and topic interest do not).
        "users": [
            {
                "id": "u1",
                "erasure_id": "e-u1",
                "last_ts": NOW,
                "minute": minute,
                "minute_count": 1,
                "burst": 1,
                "minutes": [{"minute": minute, "count": 1}],
            },
            {
                "id": "u2",
                "erasure_id": "e-u2",
                "last_ts": NOW,
                "minute": minute,
                "minute_count": 1,
                "burst": 120,
                "minutes": [{"minute": minute, "count": 1}],
            },
            {
                "id": "u3",
                "erasure_id": "e-u3",
                "last_ts": NOW,
                "minute": minute,
                "minute_count": 1,
                "burst": 1,
                "minutes": [{"minute": minute, "count": 1}],
            },
            {
                "id": "u4",
                "erasure_id": "e-u4",
                "last_ts": NOW,
                "minute": minute,
                "minute_count": 1,
                "burst": 1,
                "minutes": [{"minute": minute, "count": 1}],
            },
        ],
        "items": [
            {"id": "i1", "title": None, "price": None, "brands": ["Acme"], "categories": ["Beauty", "Face"]},
            {"id": "i2", "title": "New", "price": 2.5, "brands": ["HairCo"], "categories": ["Hair"]},
            {"id": "i3", "title": None, "price": 1.5, "brands": [], "categories": []},
            # another brand is ignored (the item has one), the price and category are the stored ones
            {"id": "i4", "title": None, "price": 3.0, "brands": ["Zed"], "categories": ["Face"]},
        ],
        "category_links": [
            {"child_id": "Face", "parent_id": "Beauty"},
            {"child_id": "Hair", "parent_id": "Face"},
            # would close a loop with the stored Hair -> Face (a concurrent writer's path): not written
            {"child_id": "Face", "parent_id": "Hair"},
        ],
        # Grouped by user, as the ingester sends them: the tombstone is read once per user.
        "user_pairs": [
            {"erasure_id": f"e-{user}", "pairs": [p for p in pairs if p["user_id"] == user]}
            for user in ("u1", "u2", "u3", "u4")
        ],
    }
    query(
        gw,
        "CREATE (:Erasure {id: 'e-u1', erased_at: $t}), (:Erasure {id: 'e-u3', erased_at: $now}),"
        "       (:Erasure {id: 'e-u4', erased_at: $t + 1}), (:User {id: 'u4', created_at: 7})",
        t=then - 1,
        now=NOW,
    )
    language = "tags" in st.params  # the language stages: tags and topic interests from text
    if language:
        params |= {
            # Tags: a new one from two users (their counts summed, each user's share kept on
            # USED_TAG) and one more of a stored one; u4's (erased after it) is skipped, and so is
            # an unknown topic.
            "tags": [
                {"user_id": u, "erasure_id": f"e-{u}", "item_id": i, "tag": t, "count": n, "first_ts": ts}
                for u, i, t, n, ts in (
                    ("u1", "i1", "space opera", 1, NOW),
                    ("u2", "i1", "space opera", 1, NOW),
                    ("u1", "i3", "matte", 1, NOW),
                    ("u4", "i3", "matte", 5, then),
                )
            ],
            # u4's (erased after its text) are skipped.
            "topic_interests": [
                {"user_id": u, "topic_id": t, "weight": 3.0, "ref_ts": NOW, "events": n, "first_ts": ts}
                | {"erasure_id": f"e-{u}"}
                for u, t, n, ts in (
                    ("u1", "topic-1", 2, NOW),
                    ("u2", "topic-gone", 1, NOW),
                    ("u4", "topic-1", 1, then),
                )
            ],
            # Text vectors: u1's stored one is one half-life older (worth half); u2 has none yet;
            # an unknown user is skipped, and so is u4's.
            "text_vectors": [
                {
                    "user_id": "u4",
                    "erasure_id": "e-u4",
                    "first_ts": then,
                    "ref_ts": then,
                    "vector": [1.0, 0.0],
                },
                {"user_id": "u1", "erasure_id": "e-u1", "first_ts": NOW, "ref_ts": NOW, "vector": [0.6, 0.8]},
                {
                    "user_id": "u2",
                    "erasure_id": "e-u2",
                    "first_ts": then,
                    "ref_ts": then,
                    "vector": [0.0, 2.0],
                },
                {
                    "user_id": "nobody",
                    "erasure_id": "e-nobody",
                    "first_ts": NOW,
                    "ref_ts": NOW,
                    "vector": [1.0, 0.0],
                },
            ],
        }
        query(gw, "MATCH (u:User {id: 'u1'}) SET u.text_vector = [1.0, 0.0], u.text_vector_ts = $t", t=then)
    with_attributes = "_with_" in st.name
    if with_attributes:
        # i1 already has the genre edge (MERGE keeps one); film_film_genre renders to the same type
        # and is its own edge; i9 is a new, unlisted item; i2 (an item of the batch) stays listed.
        query(
            gw,
            "MATCH (i1:Item {id: 'i1'}) CREATE (i1)-[:FILM_FILM_GENRE {relation: 'film.film.genre'}]->"
            "(:Entity {id: 'm.0jzc', kind: 'genre', name: 'Jazz', created_at: 1})",
        )
        params |= {
            "attribute_entities": ["Q5", "m.0jzc"],
            "attribute_items": ["i2", "i9"],
            "attributes_0": [
                {"head": "i1", "relation": "film.film.genre", "tail": "m.0jzc"},
                {"head": "i2", "relation": "film_film_genre", "tail": "m.0jzc"},
            ],
            "attributes_1": [{"head": "i2", "relation": "rdf:type", "tail": "Q5"}],
            "attributes_2": [
                {"head": "i1", "relation": "similar_to", "tail": "i2"},
                {"head": "i2", "relation": "similar_to", "tail": "i9"},
            ],
        }
    _refused_when_the_tree_moved(gw, st, params, "Hair")  # Hair -> Face is stored
    done = gw.write(st, params)
    # the lock a writer of new links takes, on Neo4j, before it reads the tree again; no lock stays
    assert node(gw, "Revision", "category_tree") == {"id": "category_tree"}
    # one row per topic interest written, or per brand and category interest without language
    assert done.rows == [{"done": 1 if language else 5}]
    tagged = query(
        gw, "MATCH (i:Item)-[r:TAGGED]->(g:Tag) RETURN i.id AS i, g.id AS g, r.count AS n, g.created_at AS c"
    )
    assert sorted((t["i"], t["g"], t["n"], t["c"]) for t in tagged) == (
        [("i1", "space opera", 2, NOW), ("i3", "matte", 3, 1)] if language else [("i3", "matte", 2, 1)]
    )
    used = query(
        gw, "MATCH (u:User)-[r:USED_TAG]->(g:Tag) RETURN u.id AS u, r.item_id AS i, g.id AS g, r.count AS n"
    )
    assert sorted((t["u"], t["i"], t["g"], t["n"]) for t in used) == (
        [("u1", "i1", "space opera", 1), ("u1", "i3", "matte", 1), ("u2", "i1", "space opera", 1)]
        if language
        else []
    )
    if with_attributes:
        assert node(gw, "Entity", "m.0jzc") == {
            "id": "m.0jzc",
            "kind": "genre",
            "name": "Jazz",
            "created_at": 1,
        }
        assert node(gw, "Entity", "Q5") == {"id": "Q5", "created_at": NOW}
        assert node(gw, "Item", "i9") == {"id": "i9", "created_at": NOW, "listed": False}
        knowledge = query(
            gw,
            "MATCH (a)-[r]->(b) WHERE r.relation IS NOT NULL "
            "RETURN a.id AS a, type(r) AS t, r.relation AS r, b.id AS b, labels(b) AS l",
        )
        assert sorted((k["a"], k["t"], k["r"], k["b"], k["l"][0]) for k in knowledge) == [
            ("i1", "FILM_FILM_GENRE", "film.film.genre", "m.0jzc", "Entity"),
            ("i1", "SIMILAR_TO", "similar_to", "i2", "Item"),
            ("i2", "FILM_FILM_GENRE", "film_film_genre", "m.0jzc", "Entity"),
            ("i2", "RDF_TYPE", "rdf:type", "Q5", "Entity"),
            ("i2", "SIMILAR_TO", "similar_to", "i9", "Item"),
        ]
    assert node(gw, "Event", "evt-1") == {"id": "evt-1", "content_hash": "c0ffee", "received_at": NOW}
    # 120 events in the minute, or in a burst, is the limit, not over it.
    texts = (
        (
            {"text_vector": pytest.approx([1.1, 0.8]), "text_vector_ts": NOW},
            {"text_vector": pytest.approx([0.0, 2.0]), "text_vector_ts": then},
        )
        if language
        else ({}, {})
    )
    assert node(gw, "User", "u1") == {
        "id": "u1",
        "created_at": 1,
        "flagged_bot": False,
        "rate_minute": minute,
        "rate_count": 120,
        **texts[0],
    }
    assert node(gw, "User", "u2") == {
        "id": "u2",
        "created_at": NOW,
        "flagged_bot": False,
        "rate_minute": minute,
        "rate_count": 1,
        **texts[1],
    }
    assert node(gw, "User", "nobody") is None
    assert node(gw, "User", "u3") is None and count(gw, "(:Item {id: 'i2'})<-[:INTERACTED]-()") == 1
    # u4's user row passes (a newer event), but nothing dated before its erasure is written
    assert node(gw, "User", "u4") == {
        "id": "u4",
        "created_at": 7,
        "flagged_bot": False,
        "rate_minute": minute,
        "rate_count": 1,
    }
    assert count(gw, "(:User {id: 'u4'})-[]->()") == 0
    # The items whose price, brand or categories changed are stamped with one new revision.
    stamped = {"revision": 5, "updated_at": NOW}
    assert node(gw, "Item", "i1") == {
        "id": "i1",
        "created_at": 2,
        "listed": True,
        "title": "Old title",
        **stamped,
    }
    assert node(gw, "Item", "i2") == {
        "id": "i2",
        "created_at": NOW,
        "listed": True,
        "title": "New",
        "price": 2.5,
        **stamped,
    }
    assert node(gw, "Item", "i3") == {
        "id": "i3",
        "created_at": 2,
        "listed": True,
        "title": "Third",
        "price": 1.5,
        **stamped,
    }
    assert node(gw, "Item", "i4") == {
        "id": "i4",
        "created_at": 2,
        "listed": True,
        "price": 3.0,
        "revision": 2,
        "updated_at": 9,
    }
    assert node(gw, "Revision", "catalogue") == {
        "id": "catalogue",
        "revision": 5,
        "created_at": 1,
        "updated_at": NOW,
    }
    # Brands and categories are created once, named after their id; existing ones keep their names.
    assert node(gw, "Brand", "Acme") == {"id": "Acme", "name": "Acme Inc", "created_at": 4}
    assert node(gw, "Brand", "HairCo") == {"id": "HairCo", "name": "HairCo", "created_at": NOW}
    assert node(gw, "Category", "Beauty") == {"id": "Beauty", "name": "Beauty", "created_at": NOW}
    assert node(gw, "Category", "Hair") == {"id": "Hair", "name": "Hair care", "created_at": 5}
    links = query(
        gw, "MATCH (a)-[r:MADE_BY|IN_CATEGORY|SUBCATEGORY_OF]->(b) RETURN a.id AS a, type(r) AS r, b.id AS b"
    )
    assert sorted((row["a"], row["r"], row["b"]) for row in links) == [
        ("Face", "SUBCATEGORY_OF", "Beauty"),
        ("Hair", "SUBCATEGORY_OF", "Face"),
        ("i1", "IN_CATEGORY", "Beauty"),
        ("i1", "IN_CATEGORY", "Face"),
        ("i1", "MADE_BY", "Acme"),
        ("i2", "IN_CATEGORY", "Hair"),
        ("i2", "MADE_BY", "HairCo"),
        ("i3", "MADE_BY", "Acme"),
        ("i4", "IN_CATEGORY", "Face"),
        ("i4", "MADE_BY", "Acme"),
    ]
    zero = {c: 0 for c in COUNTER_PROPERTIES}  # every counter is set
    interactions = {
        (row["u"], row["i"]): row["p"]
        for row in query(
            gw, "MATCH (u:User)-[r:INTERACTED]->(i:Item) RETURN u.id AS u, i.id AS i, properties(r) AS p"
        )
    }
    # A stored weight one half-life old counts half (5.0 -> 2.5) next to the batch's new weight;
    # i3's stored view and the batch's rating are both one half-life old (1.0 + 4.0, stamped then).
    assert interactions == {
        ("u1", "i1"): {
            "weight": 8.5,
            "weight_ts": NOW,
            "first_ts": 10,
            "last_ts": NOW,
            "rating": 3.0,
            "rating_ts": NOW + 10,
            **zero,
            "n_purchase": 3,
            "n_view": 3,
        },
        ("u1", "i3"): {
            "weight": 5.0,
            "weight_ts": then,
            "first_ts": 20,
            "last_ts": then,
            "rating": 4.5,
            "rating_ts": NOW,
            **zero,
            "n_view": 1,
            "n_rating": 1,
        },
        ("u2", "i2"): {
            "received_at": NOW,  # a new pair: when the graph received it (stored ones keep none)
            "weight": 4.0,
            "weight_ts": NOW,
            "first_ts": NOW,
            "last_ts": NOW,
            "rating": 4.0,
            "rating_ts": NOW,
            "review_text": "Smells of pine",
            "review_ts": NOW,
            **zero,
            "n_rating": 1,
        },
    }
    interests = {
        (row["u"], row["t"]): row["p"]
        for row in query(
            gw, "MATCH (u:User)-[r:INTERESTED_IN]->(t) RETURN u.id AS u, t.id AS t, properties(r) AS p"
        )
    }
    # Acme, stamped at the batch's latest event (now): the stored 2.0 is worth 1.0, i1's 6.0 counts
    # in full and i3's 4.0 (one half-life old) 2.0; 3 stored events plus the batch's 2 + 1.
    assert interests == {
        ("u1", "Acme"): {"weight": 9.0, "weight_ts": NOW, "count": 6, "first_ts": 10, "last_ts": NOW},
        ("u1", "Beauty"): {"weight": 6.0, "weight_ts": NOW, "count": 2, "first_ts": NOW - 5, "last_ts": NOW},
        ("u1", "Face"): {"weight": 6.0, "weight_ts": NOW, "count": 2, "first_ts": NOW - 5, "last_ts": NOW},
        ("u2", "Hair"): {"weight": 4.0, "weight_ts": NOW, "count": 1, "first_ts": NOW, "last_ts": NOW},
        ("u2", "HairCo"): {"weight": 4.0, "weight_ts": NOW, "count": 1, "first_ts": NOW, "last_ts": NOW},
        # the stored 2.0 one half-life old is worth 1.0, plus the batch's 3.0 (decayed like brands)
        ("u1", "topic-1"): (
            {"weight": 4.0, "weight_ts": NOW, "count": 3, "first_ts": 10, "last_ts": NOW}
            if language
            else {"weight": 2.0, "weight_ts": then, "count": 1, "first_ts": 10, "last_ts": then}
        ),
    }
    _events_flag_bots(gw, st, minute)
    _events_absorb_entities(gw, st)


def _events_flag_bots(gw: GraphGateway, st: Statement, minute: int) -> None:
    """One event more in u1's minute (120 held) flags them, stamped with the batch's receive time
    (`flagged_at`, compared with a pull by an erasure) once: a later batch keeps the first time,
    and a user flagged before that time was recorded is left without one."""
    query(gw, "CREATE (:User {id: 'old-bot', flagged_bot: true})")
    empty = [name for name, value in st.params.items() if isinstance(value, list)]

    def batch(now: int, *users: str) -> None:
        rows = [
            {
                "id": user,
                "erasure_id": f"e-{user}",
                "last_ts": NOW,
                "minute": minute,
                "minute_count": 1,
                "burst": 1 if user == "u1" else 121,
                "minutes": [{"minute": minute, "count": 1}],
            }
            for user in users
        ]
        gw.write(st, {**st.params, **{name: [] for name in empty}, "now": now, "users": rows})

    batch(NOW + 20, "u1", "old-bot")
    flagged = "MATCH (u:User {id: $id}) RETURN u.flagged_bot AS bot, u.flagged_at AS at"
    assert query(gw, flagged, id="u1") == [{"bot": True, "at": NOW + 20}]
    assert query(gw, flagged, id="old-bot") == [{"bot": True, "at": None}]
    batch(NOW + 30, "u1")
    assert query(gw, flagged, id="u1") == [{"bot": True, "at": NOW + 20}]


def _events_absorb_entities(gw: GraphGateway, st: Statement) -> None:
    """One id, one node, in an event batch (on an emptied graph): an Entity with a batch item's id
    becomes that Item; with attributes, an Entity with an unlisted value's id becomes that unlisted
    Item, and a value sent as an entity that an Item holds by write time links to the Item."""
    clear_graph(gw)
    item = {"id": "x", "title": None, "price": None, "brands": [], "categories": []}
    params = {**st.params, "items": [item], "user_pairs": [], "category_links": [], "event_rows": []}
    if "_with_" not in st.name:
        _entity_becomes_item(gw, st, params, "x")
        assert node(gw, "Item", "x")["listed"] is True  # type: ignore[index]
        return
    query(gw, "CREATE (:Item {id: 'x'}), (:Item {id: 'late'})")
    params |= {
        "attribute_entities": ["late"],  # read as no item; a concurrent writer made it one since
        "attribute_items": ["v"],
        "attributes_0": [{"head": "x", "relation": "film.film.genre", "tail": "late"}],
        "attributes_1": [],
        "attributes_2": [{"head": "x", "relation": "similar_to", "tail": "v"}],
    }
    _entity_becomes_item(gw, st, params, "v")
    assert node(gw, "Item", "v")["listed"] is False  # type: ignore[index]
    assert node(gw, "Entity", "late") is None
    assert count(gw, "(:Item {id: 'x'})-[:FILM_FILM_GENRE]->(:Item {id: 'late'})") == 1


@effect("write_topics")
def _write_topics(gw: GraphGateway, st: Statement) -> None:
    # topic-1 exists (from an older version, renamed now); topic-2 is new; v1 gets both.
    query(
        gw,
        "CREATE (:ModelVersion {id: 'v1'}), (:ModelVersion {id: 'v0'})-[:HAS_TOPIC {size: 9}]->"
        "(:Topic {id: 'topic-1', name: 'old', keywords: ['old'], created_at: 1})",
    )
    # topic-1 absorbs topic-7 (retired at this retrain, its interests now count for topic-1)
    rows = [
        {"id": "topic-1", "name": "lip balm", "keywords": ["lip", "balm"], "centroid": [0.6, 0.8], "size": 3},
        {"id": "topic-2", "name": "hair dye", "keywords": ["hair"], "centroid": [1.0, 0.0], "size": 2},
    ]
    rows[0]["absorbs"] = ["topic-7"]
    assert gw.write(st, {**st.params, "rows": rows}).rows == [{"written": 2}]
    # the shared node keeps the active version's name (NAME_VERSION_TOPICS renames it on activation)
    assert node(gw, "Topic", "topic-1") == {
        "id": "topic-1",
        "name": "old",
        "keywords": ["old"],
        "created_at": 1,
    }
    assert node(gw, "Topic", "topic-2") == {
        "id": "topic-2",
        "name": "hair dye",
        "keywords": ["hair"],
        "created_at": NOW,
        "updated_at": NOW,
    }
    links = query(
        gw,
        "MATCH (m:ModelVersion)-[h:HAS_TOPIC]->(t:Topic) "
        "RETURN m.id AS m, t.id AS t, h.size AS n, h.name AS name, h.absorbs AS absorbs",
    )
    assert sorted((r["m"], r["t"], r["n"], r["name"], r["absorbs"]) for r in links) == [
        ("v0", "topic-1", 9, None, None),
        ("v1", "topic-1", 3, "lip balm", ["topic-7"]),
        ("v1", "topic-2", 2, "hair dye", None),
    ]
    # written again (a retried write-back) without the absorption: the edge is rewritten, not doubled
    assert gw.write(st, {**st.params, "rows": [*rows[1:], {**rows[0], "absorbs": None}]}).rows == [
        {"written": 2}
    ]
    assert count(gw, "(:ModelVersion {id: 'v1'})-[:HAS_TOPIC]->()") == 2
    assert (
        rels(gw, "(:ModelVersion {id: 'v1'})-[r:HAS_TOPIC]->(:Topic {id: 'topic-1'})")[0].get("absorbs")
        is None
    )


@effect("name_version_topics")
def _name_version_topics(gw: GraphGateway, st: Statement) -> None:
    # v2's own names go onto the shared nodes; a link written before names were kept leaves the node.
    query(
        gw,
        "CREATE (m:ModelVersion {id: $v}), (o:ModelVersion {id: 'v1'}), "
        "(a:Topic {id: 'topic-1', name: 'old', keywords: ['old']}), (b:Topic {id: 'topic-2', name: 'kept'}), "
        "(c:Topic {id: 'topic-3', name: 'other'}), "
        "(m)-[:HAS_TOPIC {name: 'lip balm', keywords: ['lip', 'balm']}]->(a), (m)-[:HAS_TOPIC {size: 1}]->(b), "
        "(o)-[:HAS_TOPIC {name: 'not v2'}]->(c)",
        v=st.params["version"],
    )
    assert gw.write(st, st.params).rows == [{"named": 2}]
    named = query(gw, "MATCH (t:Topic) RETURN t.id AS id, t.name AS name, t.keywords AS k ORDER BY id")
    assert [(r["id"], r["name"], r["k"]) for r in named] == [
        ("topic-1", "lip balm", ["lip", "balm"]),
        ("topic-2", "kept", None),
        ("topic-3", "other", None),
    ]
    assert gw.write(st, {**st.params, "version": "missing"}).rows == [{"named": 0}]


@effect("write_about")
def _write_about(gw: GraphGateway, st: Statement) -> None:
    # i1 already points at topic-1 (older version): the edge is updated, not doubled; i9 is unknown.
    query(
        gw,
        "CREATE (i1:Item {id: 'i1'})-[:ABOUT {score: 0.2, version: 'v0'}]->(:Topic {id: 'topic-1'}), "
        "(:Item {id: 'i2'})",
    )
    rows = [*st.params["rows"], {"item_id": "i2", "topic_id": "topic-1", "score": 0.5}]
    rows.append({"item_id": "i9", "topic_id": "topic-1", "score": 0.9})
    assert gw.write(st, {**st.params, "rows": rows}).rows == [{"written": 2}]
    about = query(gw, "MATCH (i:Item)-[a:ABOUT]->(t:Topic) RETURN i.id AS i, a.score AS s, a.version AS v")
    assert sorted((r["i"], r["s"], r["v"]) for r in about) == [("i1", 0.71, "v1"), ("i2", 0.5, "v1")]
    assert node(gw, "Item", "i9") is None


@effect("write_item_topic_vectors")
def _write_item_topic_vectors(gw: GraphGateway, st: Statement) -> None:
    # i1 gets its vector (a redelivered fold-in writes the same again); i9 is unknown: no node made.
    query(gw, "CREATE (:Item {id: 'i1', title: 'balm'}), (:Item {id: 'i2'})")
    rows = [*st.params["rows"], {"item_id": "i9", "vector": [1.0, 0.0]}]
    for _ in range(2):
        assert gw.write(st, {"rows": rows}).rows == [{"written": 1}]
    assert node(gw, "Item", "i1") == {"id": "i1", "title": "balm", "topic_vector": [0.6, 0.8]}
    assert node(gw, "Item", "i2") == {"id": "i2"}
    assert node(gw, "Item", "i9") is None


@effect("delete_stale_about")
def _delete_stale_about(gw: GraphGateway, st: Statement) -> None:
    # Two edges of v1 go, v2's stays; limit 1 deletes one per call.
    query(
        gw,
        "CREATE (t:Topic {id: 'topic-1'}), (:Item {id: 'i1'})-[:ABOUT {version: 'v1'}]->(t), "
        "(:Item {id: 'i2'})-[:ABOUT {version: 'v1'}]->(t), (:Item {id: 'i3'})-[:ABOUT {version: 'v2'}]->(t)",
    )
    assert gw.write(st, {**st.params, "limit": 1}).rows == [{"deleted": 1}]
    assert gw.write(st, st.params).rows == [{"deleted": 1}]
    assert gw.write(st, st.params).rows == [{"deleted": 0}]
    left = query(gw, "MATCH (i:Item)-[a:ABOUT]->(:Topic) RETURN i.id AS i")
    assert [r["i"] for r in left] == ["i3"]
    assert count(gw, "(:Topic)") == 1


@effect("delete_stale_item_about")
def _delete_stale_item_about(gw: GraphGateway, st: Statement) -> None:
    # i1's edge of v1 goes, its edge of v2 stays; i2's edge of v1 stays (not in $ids); i9 is unknown.
    query(
        gw,
        "CREATE (t:Topic {id: 'topic-1'}), (u:Topic {id: 'topic-2'}), (i1:Item {id: 'i1'}), "
        "(i1)-[:ABOUT {version: 'v1'}]->(t), (i1)-[:ABOUT {version: 'v2'}]->(u), "
        "(:Item {id: 'i2'})-[:ABOUT {version: 'v1'}]->(t)",
    )
    assert gw.write(st, {**st.params, "ids": ["i1", "i9"]}).rows == [{"deleted": 1}]
    assert gw.write(st, st.params).rows == [{"deleted": 0}]
    left = query(gw, "MATCH (i:Item)-[a:ABOUT]->(t:Topic) RETURN i.id AS i, t.id AS t, a.version AS v")
    assert sorted((r["i"], r["t"], r["v"]) for r in left) == [
        ("i1", "topic-2", "v2"),
        ("i2", "topic-1", "v1"),
    ]
    assert count(gw, "(:Item)") == 2 and count(gw, "(:Topic)") == 2


@effect("begin_about_write")
def _begin_about_write(gw: GraphGateway, st: Statement) -> None:
    # The first writer runs alone; a second one beside it does not; once both ended, the next runs
    # alone again; a writer that never ended (it died) stops counting once its lease ran out.
    assert gw.write(st, st.params).rows == [{"ticket": 1, "alone": True}]
    assert gw.write(st, st.params).rows == [{"ticket": 2, "alone": False}]
    query(gw, "MATCH (r:Revision {id: 'about'}) SET r.running = 0")
    assert gw.write(st, st.params).rows == [{"ticket": 3, "alone": True}]
    later = {**st.params, "now": st.params["now"] + st.params["lease_ms"] + 1}
    assert gw.write(st, later).rows == [{"ticket": 4, "alone": True}]
    revision = node(gw, "Revision", "about")
    assert revision is not None and (revision["running"], revision["revision"]) == (1, 4)
    assert revision["busy_until"] == later["now"] + st.params["lease_ms"]
    assert "write_lock" not in revision


@effect("mark_about_written")
def _mark_about_written(gw: GraphGateway, st: Statement) -> None:
    # v2 is marked as holding v1's file's edges (again: the same, not set again); v1 keeps its own
    # mark; the writers' end is stamped; no node made.
    query(
        gw,
        "CREATE (:ModelVersion {id: 'v2', active: false}), (:ModelVersion {id: 'v1', about_from: 'v0'}), "
        "(:Revision {id: 'about', revision: 1, running: 2, busy_until: 0, updated_at: 0})",
    )
    # the first end sets running and updated_at, and the mark; the second only the first two (each
    # also the write lock, taken before `revision` is read)
    ends = [{**st.params, "now": st.params["now"] + k} for k in range(2)]
    assert [gw.write(st, end).properties_set for end in ends] == [4, 3]
    assert node(gw, "ModelVersion", "v2") == {"id": "v2", "active": False, "about_from": "v1"}
    assert node(gw, "ModelVersion", "v1") == {"id": "v1", "about_from": "v0"}
    revision = node(gw, "Revision", "about")
    assert revision is not None and (revision["running"], revision["updated_at"]) == (0, ends[1]["now"])
    # a writer after which another started, or that failed, marks nothing; nor a missing version
    query(gw, "MATCH (m:ModelVersion {id: 'v2'}) REMOVE m.about_from")
    assert gw.write(st, {**st.params, "ticket": 0}).rows == [{"marked": False}]
    assert gw.write(st, {**st.params, "complete": False}).rows == [{"marked": False}]
    assert node(gw, "ModelVersion", "v2") == {"id": "v2", "active": False}
    assert gw.write(st, {**st.params, "version": "missing"}).rows == []
    assert count(gw, "(:ModelVersion)") == 2
    assert count(gw, "(r) WHERE r.write_lock IS NOT NULL") == 0


@effect("claim_about_repair")
def _claim_about_repair(gw: GraphGateway, st: Statement) -> None:
    # No writer yet: claimed (the node made); then not while it runs, nor within the settle time
    # after a writer's end; a dead writer (lease run out) and an old end do not hold it back.
    # A refused claim changes nothing (the write lock it took is cleared).
    assert gw.write(st, st.params).rows == [{"claimed": True, "ticket": 1}]
    now, settle, lease = st.params["now"], st.params["settle_ms"], st.params["lease_ms"]
    claimed = node(gw, "Revision", "about")
    assert gw.write(st, {**st.params, "now": now + settle}).rows == [
        {"claimed": False, "ticket": 1}
    ]  # running
    revision = node(gw, "Revision", "about")
    assert revision == claimed and revision is not None
    assert (revision["running"], revision["revision"]) == (1, 1)
    assert revision["busy_until"] == now + lease and revision["updated_at"] == now
    query(gw, "MATCH (r:Revision {id: 'about'}) SET r.running = 0, r.updated_at = $t", t=now + 10)
    ended = node(gw, "Revision", "about")
    refused = gw.write(st, {**st.params, "now": now + 9 + settle}).rows  # ended just now
    assert refused == [{"claimed": False, "ticket": 1}] and node(gw, "Revision", "about") == ended
    assert gw.write(st, {**st.params, "now": now + 10 + settle}).rows == [{"claimed": True, "ticket": 2}]
    dead = {**st.params, "now": now + 10 + settle + lease + 1}
    assert gw.write(st, dead).rows == [{"claimed": True, "ticket": 3}]
    assert node(gw, "Revision", "about")["running"] == 1  # type: ignore[index]
    assert count(gw, "(:Revision)") == 1
    assert count(gw, "(r) WHERE r.write_lock IS NOT NULL") == 0


@effect("forget_about_written")
def _forget_about_written(gw: GraphGateway, st: Statement) -> None:
    # The marks naming v1 go (v2's stays, and an unmarked version is untouched); null: every mark.
    marked = [("a", "v1"), ("b", "v1"), ("c", "v2"), ("d", None)]
    rows = [{"id": i, "f": f} for i, f in marked]
    query(
        gw,
        "UNWIND $rows AS r CREATE (m:ModelVersion {id: r.id, active: false}) SET m.about_from = r.f",
        rows=rows,
    )
    assert gw.write(st, st.params).rows == [{"forgotten": 2}]
    marks = query(gw, "MATCH (m:ModelVersion) RETURN m.id AS id, m.about_from AS f ORDER BY id")
    assert [(r["id"], r["f"]) for r in marks] == [("a", None), ("b", None), ("c", "v2"), ("d", None)]
    assert node(gw, "ModelVersion", "d") == {"id": "d", "active": False}
    # no writer ever began: the writers' node is made, as BEGIN_ABOUT_WRITE makes it
    made = ABOUT_MADE
    assert node(gw, "Revision", "about") == made
    # the writers' lock is taken before the marks are read (the one property set: the removed mark
    # and the cleared lock are not counted); the writers' state is left as it is
    query(gw, "MATCH (r:Revision {id: 'about'}) SET r.revision = 3, r.running = 1")
    done = gw.write(st, {"files": None, "now": NOW + 1})
    assert done.rows == [{"forgotten": 1}] and done.properties_set == 1
    assert node(gw, "Revision", "about") == {**made, "revision": 3, "running": 1}
    assert query(gw, "MATCH (m:ModelVersion) WHERE m.about_from IS NOT NULL RETURN m.id AS id") == []
    # no mark left: nothing forgotten, the lock cleared all the same
    assert gw.write(st, st.params).rows == [{"forgotten": 0}]
    assert count(gw, "(:Revision)") == 1
    assert count(gw, "(r) WHERE r.write_lock IS NOT NULL") == 0


def _seed_faded_edges(gw: GraphGateway, st: Statement) -> None:
    # With the example threshold 0.01: 1.0 ten half-lives old is worth 1/1024 (faded),
    # 0.02 one half-life old is worth exactly 0.01 (kept), 0.0198 is worth 0.0099 (faded).
    half_life = int(st.params["half_life_ms"])
    query(
        gw,
        """
        CREATE (u:User {id: 'u'})
        CREATE (u)-[:INTERACTED {weight: 1.0, weight_ts: $old, n_view: 3}]->(:Item {id: 'faded-view'})
        CREATE (u)-[:INTERACTED {weight: 1.0, weight_ts: $old, n_purchase: 1}]->(:Item {id: 'faded-purchase'})
        CREATE (u)-[:INTERACTED {weight: 1.0, weight_ts: $old, n_rating: 1}]->(:Item {id: 'faded-rating'})
        CREATE (u)-[:INTERACTED {weight: 1.0, weight_ts: $now, n_view: 1}]->(:Item {id: 'fresh-view'})
        CREATE (u)-[:INTERACTED {weight: 0.02, weight_ts: $half, n_view: 1}]->(:Item {id: 'at-threshold'})
        CREATE (u)-[:INTERACTED {weight: 0.0198, weight_ts: $half, n_view: 1}]->(:Item {id: 'below-threshold'})
        CREATE (u)-[:INTERESTED_IN {weight: 1.0, weight_ts: $old}]->(:Brand {id: 'faded-brand'})
        CREATE (u)-[:INTERESTED_IN {weight: 1.0, weight_ts: $now}]->(:Category {id: 'fresh-category'})
        CREATE (:User {id: 'not-in-batch'})-[:INTERACTED {weight: 1.0, weight_ts: $old, n_view: 3}]->
               (:Item {id: 'faded-of-another'})
        """,
        old=NOW - 10 * half_life,
        now=NOW,
        half=NOW - half_life,
    )


def _faded_edges_left(gw: GraphGateway) -> tuple[list[str], int]:
    """What user 'u' keeps (every edge with history or weight, none faded), and 'not-in-batch''s faded view."""
    remaining = query(gw, "MATCH (:User {id: 'u'})-[]->(n) RETURN n.id AS id ORDER BY id")
    assert count(gw, "(n)") == 11  # edges only: every node stays
    assert [r["id"] for r in remaining] == [
        "at-threshold",
        "faded-purchase",
        "faded-rating",
        "fresh-category",
        "fresh-view",
    ]
    return [r["id"] for r in remaining], count(
        gw, "(:User {id: 'not-in-batch'})-[:INTERACTED]->(:Item {id: 'faded-of-another'})"
    )


@effect("prune_faded_edges")
def _prune_faded_edges(gw: GraphGateway, st: Statement) -> None:
    _seed_faded_edges(gw, st)
    first = gw.write(st, {**st.params, "limit": 1})
    rest = gw.write(st, st.params)
    assert (first.rows, first.relationships_deleted) == ([{"pruned": 1}], 1)
    assert (rest.rows, rest.relationships_deleted) == ([{"pruned": 3}], 3)  # every user's
    assert _faded_edges_left(gw)[1] == 0


@effect("prune_faded_edges_of_users")
def _prune_faded_edges_of_users(gw: GraphGateway, st: Statement) -> None:
    _seed_faded_edges(gw, st)
    # Only the users in $ids: 'not-in-batch' keeps its faded view.
    first = gw.write(st, {**st.params, "ids": ["u"], "limit": 1})
    rest = gw.write(st, {**st.params, "ids": ["u", "no-such-user"]})
    assert (first.rows, first.relationships_deleted) == ([{"pruned": 1}], 1)
    assert (rest.rows, rest.relationships_deleted) == ([{"pruned": 2}], 2)
    assert _faded_edges_left(gw)[1] == 1


@effect("prune_old_events")
def _prune_old_events(gw: GraphGateway, st: Statement) -> None:
    before = st.params["before"]
    query(
        gw,
        "CREATE (:Event {id: 'old', received_at: $a}), (:Event {id: 'boundary', received_at: $b}),"
        "       (:Event {id: 'new', received_at: $c})",
        a=before - 1,
        b=before,
        c=before + 1,
    )
    done = gw.write(st, st.params)
    assert (done.rows, done.nodes_deleted) == ([{"pruned": 1}], 1)
    assert [r["id"] for r in query(gw, "MATCH (e:Event) RETURN e.id AS id ORDER BY id")] == [
        "boundary",
        "new",
    ]


# --- migrations -----------------------------------------------------------------------------------


@effect("record_migration")
def _record_migration(gw: GraphGateway, st: Statement) -> None:
    first = gw.write(st, st.params)
    again = gw.write(st, {**st.params, "checksum": "sha256:changed", "applied_at": 1})
    # Recorded once; a second call reports the stored checksum (so `migrate` can refuse a changed file).
    assert first.rows == again.rows == [{"checksum": "sha256:0"}]
    assert node(gw, "Migration", "0001/neo4j") == {
        "id": "0001/neo4j",
        "version": "0001",
        "name": "constraints",
        "scope": "neo4j",
        "checksum": "sha256:0",
        "applied_at": NOW,
    }


@effect("register_property_keys")
def _register_property_keys(gw: GraphGateway, st: Statement) -> None:
    before = count(gw, "(n)")
    # Leaves no node behind, however often it runs (every `kgrec migrate` runs it).
    assert gw.write(st, st.params).rows == gw.write(st, st.params).rows == [{"registered": 1}]
    assert count(gw, "(n)") == before
    if gw.engine == "falkordb":
        registered = {row["propertyKey"] for row in query(gw, "CALL db.propertyKeys()")}
        assert set(allow_list.PROPERTY_KEYS) <= registered


# --- model versions -------------------------------------------------------------------------------


@effect("create_model_version")
def _create_model_version(gw: GraphGateway, st: Statement) -> None:
    assert gw.write(st, st.params).rows == [{"id": "v1700000000000", "claimed": True}]
    created = {
        "id": "v1700000000000",
        "created_at": NOW,
        "status": "writing",
        "active": False,
        "parameters": '{"dim": 64}',
        "counts": '{"users": 1}',
        "metrics": '{"ndcg@10": 0.07}',
        "artifact": "models/v1700000000000.npz",
        "data_until": 1699999990000,
        "owner": st.params["owner"],
    }
    assert node(gw, "ModelVersion", "v1700000000000") == created
    # A first run finished writing, and an erasure took a user's share off it; another version
    # has adjustments of its own.
    query(
        gw,
        "MATCH (m:ModelVersion) SET m.status = 'ready' "
        "CREATE (m)-[:POPULARITY_ADJUSTMENT {delta: -1}]->(:Item {id: 'i1'}), "
        "(:ModelVersion {id: 'other'})-[:POPULARITY_ADJUSTMENT {delta: -2}]->(:Item {id: 'i2'})",
    )
    gw.write(st, {**st.params, "now": 1, "metrics": "{}", "owner": "second"})
    # Written again (a redelivered job): the payload is replaced, the creation stamp is not; it is
    # `writing` again, owned by the new delivery, without the first run's adjustments (its artifact
    # is replaced too).
    created = {**created, "metrics": "{}", "owner": "second"}
    assert node(gw, "ModelVersion", "v1700000000000") == created
    assert count(gw, "(:ModelVersion {id: 'v1700000000000'})-[:POPULARITY_ADJUSTMENT]->()") == 0
    assert count(gw, "(:ModelVersion {id: 'other'})-[:POPULARITY_ADJUSTMENT {delta: -2}]->()") == 1
    assert count(gw, "(:Item)") == 2
    # Settled meanwhile (activated, or decided on by the gate) by a delivery that ran beside this
    # one: left as it is, and no row (the write-back stops before touching its artifact).
    for settled in ("m.activated_at = 5", "m.gate_decision = 'kept'"):
        query(gw, f"MATCH (m:ModelVersion {{id: 'v1700000000000'}}) SET m.status = 'ready', {settled}")
        before = node(gw, "ModelVersion", "v1700000000000")
        refused = gw.write(st, {**st.params, "metrics": "{}", "owner": "third"})
        assert refused.rows == [{"id": "v1700000000000", "claimed": False}]
        assert node(gw, "ModelVersion", "v1700000000000") == before  # its owner too
        query(
            gw,
            "MATCH (m:ModelVersion {id: 'v1700000000000'}) SET m.activated_at = null, m.gate_decision = null",
        )


EMBEDDED_LABELS = {
    "write_user_embeddings": "User",
    "write_item_embeddings": "Item",
    "write_brand_embeddings": "Brand",
    "write_category_embeddings": "Category",
}


@effect(*EMBEDDED_LABELS)
def _write_embeddings(gw: GraphGateway, st: Statement) -> None:
    label = EMBEDDED_LABELS[st.name]
    decoy = "Brand" if label == "Item" else "Item"
    query(
        gw,
        f"CREATE (:ModelVersion {{id: $v, owner: $o}}), (:ModelVersion {{id: 'v-other', owner: $o}}),"
        f"       (:{label} {{id: 'x'}}), (:{decoy} {{id: 'x'}})",
        v=st.params["version"],
        o=st.params["owner"],
    )
    assert gw.write(st, st.params).rows == [{"written": ["x"], "owned": 1}]
    gw.write(
        st, {**st.params, "rows": [{"id": "x", "vector": [0.3, 0.4]}, {"id": "missing", "vector": [1.0]}]}
    )
    pattern = f"(:ModelVersion {{id: $v}})-[r:EMBEDDING]->(:{label} {{id: 'x'}})"
    (edge,) = rels(gw, pattern, v=st.params["version"])
    assert edge["vector"] == pytest.approx([0.3, 0.4])  # replaced in place, one edge
    assert count(gw, "()-[r:EMBEDDING]->()") == 1
    assert count(gw, "(n)") == 4
    # A delivery another one took the version over from: nothing written, and it is told so.
    superseded = {**st.params, "owner": "superseded", "rows": [{"id": "x", "vector": [9.0, 9.0]}]}
    assert gw.write(st, superseded).rows == [{"written": [], "owned": 0}]
    (edge,) = rels(gw, pattern, v=st.params["version"])
    assert edge["vector"] == pytest.approx([0.3, 0.4])
    if label == "User":
        # A user erased at or after $since (the vectors' data was read then) gets none, even when
        # a user node of that id was made again since; one erased before it gets theirs.
        since = st.params["since"]
        query(
            gw,
            "CREATE (:User {id: 'again'}), (:Erasure {id: 'e-again', erased_at: $since}),"
            "       (:User {id: 'back'}), (:Erasure {id: 'e-back', erased_at: $since - 1})",
            since=since,
        )
        rows = [{"id": u, "erasure_id": f"e-{u}", "vector": [1.0, 0.0]} for u in ("again", "back")]
        written = gw.write(st, {**st.params, "rows": rows})
        assert written.rows[0]["written"] == ["back"]
        assert count(gw, "()-[r:EMBEDDING]->(:User {id: 'again'})") == 0
        assert count(gw, "()-[r:EMBEDDING]->(:User {id: 'back'})") == 1


@effect("mark_model_version_ready")
def _mark_ready(gw: GraphGateway, st: Statement) -> None:
    query(
        gw,
        "CREATE (:ModelVersion {id: $id, status: 'writing', owner: $o}),"
        "       (:ModelVersion {id: 'v-other', status: 'writing', owner: $o})",
        id=st.params["id"],
        o=st.params["owner"],
    )
    query(
        gw,
        "MATCH (m:ModelVersion {id: $id}) CREATE (m)-[:POPULARITY_ADJUSTMENT {delta: -1}]->(:Item {id: 'B0002'})",
        id=st.params["id"],
    )
    erased = [{"item_id": "B0001", "count": 2}, {"item_id": "B0002", "count": 1}]
    # A delivery another one took the version over from: nothing changes, and it is told so.
    refused = gw.write(st, {**st.params, "erased": erased, "owner": "superseded"})
    assert refused.rows == [{"id": st.params["id"], "owned": False}]
    assert node(gw, "ModelVersion", st.params["id"]) == {
        "id": st.params["id"],
        "status": "writing",
        "owner": st.params["owner"],
    }
    assert count(gw, "()-[:POPULARITY_ADJUSTMENT {delta: -1}]->()") == 1
    assert count(gw, "()-[:POPULARITY_ADJUSTMENT]->()") == 1
    done = gw.write(st, {**st.params, "erased": erased})
    assert done.rows == [{"id": st.params["id"], "owned": True}]
    assert node(gw, "ModelVersion", st.params["id"]) == {
        "id": st.params["id"],
        "status": "ready",
        "adjusted_at": NOW,
        "owner": st.params["owner"],
    }
    assert node(gw, "ModelVersion", "v-other")["status"] == "writing"  # type: ignore[index]

    def deltas() -> dict[str, int]:
        rows = query(
            gw,
            "MATCH (:ModelVersion {id: $id})-[a:POPULARITY_ADJUSTMENT]->(i) RETURN i.id AS id, a.delta AS d",
            id=st.params["id"],
        )
        return {r["id"]: r["d"] for r in rows}

    # the erased users' share is taken off, added to an erasure's adjustment made meanwhile
    assert deltas() == {"B0001": -2, "B0002": -2}
    # once ready, marking it again (a redelivered job that found it ready) takes nothing off twice
    again = gw.write(st, {**st.params, "erased": erased, "now": NOW + 5})
    assert again.rows == [{"id": st.params["id"], "owned": True}] and deltas() == {"B0001": -2, "B0002": -2}
    assert node(gw, "ModelVersion", st.params["id"])["adjusted_at"] == NOW  # type: ignore[index]
    # the training's own adjustment in the millisecond of an erasure's: the stamp still moves
    query(
        gw,
        "CREATE (:ModelVersion {id: 'v-same-ms', status: 'writing', adjusted_at: $now, owner: $o})",
        now=NOW,
        o=st.params["owner"],
    )
    gw.write(st, {**st.params, "id": "v-same-ms", "erased": erased})
    assert node(gw, "ModelVersion", "v-same-ms")["adjusted_at"] == NOW + 1  # type: ignore[index]
    # nothing erased: no adjustment, no stamp
    gw.write(st, {**st.params, "id": "v-other", "erased": []})
    assert node(gw, "ModelVersion", "v-other") == {
        "id": "v-other",
        "status": "ready",
        "owner": st.params["owner"],
    }


@effect("clear_model_version_topics")
def _clear_version_topics(gw: GraphGateway, st: Statement) -> None:
    query(
        gw,
        "CREATE (m:ModelVersion {id: $id, status: 'ready', owner: $o}),"
        "       (o:ModelVersion {id: 'v-other', owner: $o}), (t:Topic {id: 'topic-1'}),"
        "       (m)-[:HAS_TOPIC {size: 3}]->(t), (m)-[:HAS_TOPIC {size: 4}]->(:Topic {id: 'topic-2'}),"
        "       (o)-[:HAS_TOPIC {size: 5}]->(t)",
        id=st.params["id"],
        o=st.params["owner"],
    )
    # A delivery another one took the version over from: nothing goes, and it is told so.
    refused = gw.write(st, {**st.params, "owner": "superseded"})
    assert refused.rows == [{"id": st.params["id"], "owned": False}]
    assert count(gw, "(:ModelVersion {id: $id})-[:HAS_TOPIC]->()", id=st.params["id"]) == 2
    done = gw.write(st, st.params)
    assert done.rows == [{"id": st.params["id"], "owned": True}]
    assert count(gw, "(:ModelVersion {id: $id})-[:HAS_TOPIC]->()", id=st.params["id"]) == 0
    # only the version's edges: the other version's topics, and the Topic nodes, stay
    assert rels(gw, "(:ModelVersion {id: 'v-other'})-[r:HAS_TOPIC]->(:Topic {id: 'topic-1'})") == [
        {"size": 5}
    ]
    assert count(gw, "(t:Topic)") == 2
    assert node(gw, "ModelVersion", st.params["id"]) == {
        "id": st.params["id"],
        "status": "ready",
        "owner": st.params["owner"],
    }
    assert gw.write(st, {**st.params, "id": "missing"}).rows == []


@effect("activate_model_version", "activate_owned_model_version")
def _activate(gw: GraphGateway, st: Statement) -> None:
    owner = st.params.get("owner", "any")
    query(
        gw,
        "CREATE (:ModelVersion {id: $id, status: 'ready', active: false, owner: $o}),"
        "       (:ModelVersion {id: 'v-previous', status: 'ready', active: true, activated_at: 5}),"
        "       (:ModelVersion {id: 'v-writing', status: 'writing', active: false, owner: $o})",
        id=st.params["id"],
        o=owner,
    )
    if "owner" in st.params:
        # The job's own switch, by a delivery another one took the version over from: nothing changes.
        before = query(gw, "MATCH (m:ModelVersion) RETURN properties(m) AS p ORDER BY m.id")
        assert gw.write(st, {**st.params, "owner": "superseded"}).rows == [{"activated": 0}]
        assert query(gw, "MATCH (m:ModelVersion) RETURN properties(m) AS p ORDER BY m.id") == before
    done = gw.write(st, st.params)
    assert done.rows == [{"activated": 1}]

    def state() -> dict[str, tuple[bool, int | None]]:
        rows = query(gw, "MATCH (m:ModelVersion) RETURN m.id AS id, m.active AS active, m.activated_at AS at")
        return {r["id"]: (r["active"], r["at"]) for r in rows}

    after = {st.params["id"]: (True, NOW), "v-previous": (False, 5), "v-writing": (False, None)}
    assert state() == after
    # A version still being written is never switched to: nothing changes.
    refused = gw.write(st, {**st.params, "id": "v-writing"})
    assert refused.rows == [{"activated": 0}]
    assert state() == after
    # the switch writes every version, so it takes the ABOUT writers' lock first (their node made
    # when no writer ever began, its state left as it is), and clears every lock it took
    made = ABOUT_MADE
    assert node(gw, "Revision", "about") == made
    query(gw, "MATCH (r:Revision {id: 'about'}) SET r.revision = 3, r.running = 1")
    assert gw.write(st, {**st.params, "now": NOW + 1}).rows == [{"activated": 1}]
    assert node(gw, "Revision", "about") == {**made, "revision": 3, "running": 1}
    assert count(gw, "(:Revision)") == 1
    assert count(gw, "(n) WHERE n.write_lock IS NOT NULL") == 0


@effect("record_gate_decision")
def _record_gate_decision(gw: GraphGateway, st: Statement) -> None:
    query(
        gw,
        "CREATE (:ModelVersion {id: $id, status: 'ready', active: false, owner: $o}),"
        "       (:ModelVersion {id: 'v-live', status: 'ready', active: true})",
        id=st.params["id"],
        o=st.params["owner"],
    )
    # A delivery another one took the version over from: nothing recorded, and it is told so.
    before = node(gw, "ModelVersion", st.params["id"])
    refused = gw.write(st, {**st.params, "owner": "superseded", "decision": "promoted"})
    assert refused.rows == [{"id": st.params["id"], "owned": False}]
    assert node(gw, "ModelVersion", st.params["id"]) == before
    done = gw.write(st, st.params)
    assert done.rows == [{"id": st.params["id"], "owned": True}]
    stored = node(gw, "ModelVersion", st.params["id"])
    assert stored is not None
    recorded = ("gate_decision", "gate_reason", "gate_metrics", "gate_at", "gate_taken", "gate_experiment")
    assert tuple(stored[key] for key in recorded) == (
        "kept",
        st.params["reason"],
        st.params["metrics"],
        NOW,
        False,
        "",
    )
    assert stored["active"] is False  # the decision never activates anything
    # a hook took the candidate for an experiment: recorded with the decision; recorded again (its
    # start failed), the decision replaces it
    taken = {**st.params, "decision": "promoted", "taken": True, "experiment": "exp-1a2b3c4d5e6f"}
    assert gw.write(st, taken).rows == [{"id": st.params["id"], "owned": True}]
    stored = node(gw, "ModelVersion", st.params["id"])
    assert stored is not None and (stored["gate_taken"], stored["gate_experiment"]) == (
        True,
        "exp-1a2b3c4d5e6f",
    )
    gw.write(st, {**taken, "experiment": ""})
    assert node(gw, "ModelVersion", st.params["id"])["gate_experiment"] == ""  # type: ignore[index]
    assert stored["active"] is False
    assert node(gw, "ModelVersion", "v-live") == {"id": "v-live", "status": "ready", "active": True}


@effect("claim_retrain")
def _claim_retrain(gw: GraphGateway, st: Statement) -> None:
    first = gw.write(st, st.params)  # no schedule yet: expected -1 claims it and creates the node
    assert first.rows == [{"claimed": 1}]
    assert node(gw, "Schedule", "retrain") == {
        "id": "retrain",
        "requested_at": NOW,
        "job_id": st.params["job_id"],
    }
    # A second check that read the same state loses: nothing changes.
    lost = gw.write(st, {**st.params, "now": NOW + 5, "job_id": "other"})
    assert lost.rows == [{"claimed": 0}]
    assert node(gw, "Schedule", "retrain") == {
        "id": "retrain",
        "requested_at": NOW,
        "job_id": st.params["job_id"],
    }
    # One that read the current state claims the next retraining.
    later = gw.write(st, {"expected": NOW, "now": NOW + 9, "job_id": "next"})
    assert later.rows == [{"claimed": 1}]
    assert node(gw, "Schedule", "retrain") == {"id": "retrain", "requested_at": NOW + 9, "job_id": "next"}
    assert count(gw, "(s:Schedule)") == 1


@effect("delete_model_version_embeddings")
def _delete_version_embeddings(gw: GraphGateway, st: Statement) -> None:
    query(
        gw,
        """
        CREATE (old:ModelVersion {id: $id, active: false}), (live:ModelVersion {id: 'v-live', active: true})
        CREATE (a:Item {id: 'a'}), (b:Item {id: 'b'}), (c:Item {id: 'c'})
        CREATE (old)-[:EMBEDDING {vector: [1.0]}]->(a), (old)-[:EMBEDDING {vector: [1.0]}]->(b),
               (old)-[:EMBEDDING {vector: [1.0]}]->(c), (old)-[:POPULARITY_ADJUSTMENT {delta: -1}]->(a),
               (live)-[:EMBEDDING {vector: [1.0]}]->(a), (live)-[:POPULARITY_ADJUSTMENT {delta: -1}]->(b)
        CREATE (t:Topic {id: 'topic-1'}), (old)-[:HAS_TOPIC {size: 3}]->(t), (live)-[:HAS_TOPIC {size: 3}]->(t)
        """,
        id=st.params["id"],
    )
    deleted = [gw.write(st, {**st.params, "limit": 3}).relationships_deleted for _ in range(3)]
    assert deleted == [3, 2, 0]  # bounded batches, until none is left (topic links too: Neo4j needs it)
    assert count(gw, "(:ModelVersion {id: $id})-[]->()", id=st.params["id"]) == 0
    assert count(gw, "(:ModelVersion {id: 'v-live'})-[]->()") == 3  # the active version keeps its own
    assert gw.write(st, {"id": "v-live", "limit": 10, "owner": ""}).relationships_deleted == 0
    assert count(gw, "(n)") == 6
    # a version claimed again since the collection read it (another owner) keeps its edges
    query(gw, "MATCH (m:ModelVersion {id: 'v-live'}) SET m.active = false, m.owner = 'new'")
    assert gw.write(st, {"id": "v-live", "limit": 10, "owner": ""}).relationships_deleted == 0
    assert gw.write(st, {"id": "v-live", "limit": 10, "owner": "new"}).relationships_deleted == 3


@effect("delete_model_version")
def _delete_version(gw: GraphGateway, st: Statement) -> None:
    query(
        gw,
        """
        CREATE (:ModelVersion {id: $id, active: false}),
               (:ModelVersion {id: 'v-live', active: true}),
               (:ModelVersion {id: 'v-unemptied', active: false})-[:EMBEDDING {vector: [1.0]}]->(:Item {id: 'a'}),
               (:ModelVersion {id: 'v-claimed', active: false, owner: 'new'})
        """,
        id=st.params["id"],
    )
    results = [gw.write(st, {"id": v, "owner": ""}).rows for v in (st.params["id"], "v-live", "v-unemptied")]
    assert results == [[{"deleted": 1}], [{"deleted": 0}], [{"deleted": 0}]]
    # claimed again since the collection read it: another owner, kept
    assert gw.write(st, {"id": "v-claimed", "owner": "old"}).rows == [{"deleted": 0}]
    remaining = query(gw, "MATCH (m:ModelVersion) RETURN m.id AS id ORDER BY id")
    assert [r["id"] for r in remaining] == ["v-claimed", "v-live", "v-unemptied"]
    assert gw.write(st, {"id": "v-claimed", "owner": "new"}).rows == [{"deleted": 1}]


@effect("write_folded_items")
def _write_folded_items(gw: GraphGateway, st: Statement) -> None:
    query(
        gw,
        "CREATE (m:ModelVersion {id: $v, active: true}), (:Item {id: 'y'}),"
        "       (m)-[:EMBEDDING {vector: [9.0, 9.0], folded_at: 1}]->(:Item {id: 'x'}),"  # folded in before: replaced
        "       (m)-[:EMBEDDING {vector: [7.0, 7.0]}]->(:Item {id: 't'})",  # trained: kept
        v=st.params["version"],
    )
    rows = [*st.params["rows"], {"id": "missing", "vector": [1.0, 0.0]}, {"id": "t", "vector": [1.0, 0.0]}]
    done = gw.write(st, {**st.params, "rows": rows})
    assert done.rows == [{"folded": 1}]
    (edge,) = rels(gw, "(:ModelVersion {id: $v})-[r:EMBEDDING]->(:Item {id: 'x'})", v=st.params["version"])
    assert edge["vector"] == pytest.approx([0.1, 0.2])
    assert edge["folded_at"] == NOW
    assert edge["folded_version"] == st.params["version"]  # what FOLDED_ITEMS seeks in the index
    assert node(gw, "ModelVersion", st.params["version"])["folded_at"] == NOW  # type: ignore[index]
    (trained,) = rels(gw, "(:ModelVersion {id: $v})-[r:EMBEDDING]->(:Item {id: 't'})", v=st.params["version"])
    assert trained == {"vector": [7.0, 7.0]}
    # a fold-in of trained items only writes nothing, and leaves the version's stamp alone
    assert gw.write(st, {**st.params, "rows": [{"id": "t", "vector": [1.0, 0.0]}], "now": NOW + 5}).rows == []
    assert node(gw, "ModelVersion", st.params["version"])["folded_at"] == NOW  # type: ignore[index]
    assert count(gw, "()-[r:EMBEDDING]->(:Item {id: 'y'})") == 0
    # a second fold-in in the same millisecond still moves the stamp serving processes compare
    gw.write(st, {**st.params, "rows": [{"id": "y", "vector": [0.3, 0.4]}]})
    assert node(gw, "ModelVersion", st.params["version"])["folded_at"] == NOW + 1  # type: ignore[index]
    gw.write(st, {**st.params, "now": NOW + 10})  # a later one: its own time
    assert node(gw, "ModelVersion", st.params["version"])["folded_at"] == NOW + 10  # type: ignore[index]


@effect("mark_folded_versions")
def _mark_folded_versions(gw: GraphGateway, st: Statement) -> None:
    query(
        gw,
        "CREATE (m:ModelVersion {id: 'v-old'}), (n:ModelVersion {id: 'v-new'})"
        " CREATE (m)-[:EMBEDDING {vector: [1.0], folded_at: 1}]->(:Item {id: 'a'}),"  # marked
        "        (m)-[:EMBEDDING {vector: [1.0], folded_at: 2}]->(:Item {id: 'b'}),"  # marked
        "        (m)-[:EMBEDDING {vector: [1.0], folded_at: 3}]->(:Item {id: 'c'}),"  # marked
        "        (m)-[:EMBEDDING {vector: [2.0]}]->(t:Item {id: 't'}),"  # trained: left alone
        "        (n)-[:EMBEDDING {vector: [3.0], folded_at: 4, folded_version: 'v-new'}]->(t)",  # marked already
    )
    assert gw.write(st, {"limit": 2}).rows == [{"marked": 2}]  # at most $limit a statement
    assert gw.write(st, {"limit": 2}).rows == [{"marked": 1}]
    assert gw.write(st, {"limit": 2}).rows == [{"marked": 0}]
    marks = query(
        gw,
        "MATCH (m:ModelVersion)-[e:EMBEDDING]->(i:Item) RETURN m.id AS m, i.id AS i, e.folded_version AS f",
    )
    assert sorted((r["m"], r["i"], r["f"]) for r in marks) == [
        ("v-new", "t", "v-new"),
        ("v-old", "a", "v-old"),
        ("v-old", "b", "v-old"),
        ("v-old", "c", "v-old"),
        ("v-old", "t", None),
    ]
    (trained,) = rels(gw, "(:ModelVersion {id: 'v-old'})-[r:EMBEDDING]->(:Item {id: 't'})")
    assert trained == {"vector": [2.0]}


# --- incremental versions (graph_schema/statements/incremental.py) ----------------------------------


@effect("create_child_version")
def _create_child_version(gw: GraphGateway, st: Statement) -> None:
    query(gw, "CREATE (:ModelVersion {id: $p, status: 'ready', active: true})", p=st.params["parent"])
    assert gw.write(st, st.params).rows == [{"id": st.params["id"], "claimed": True}]
    child = node(gw, "ModelVersion", st.params["id"])
    assert child is not None
    assert (child["parent"], child["data_until"], child["status"], child["active"], child["created_at"]) == (
        st.params["parent"],
        st.params["data_until"],
        "writing",
        False,
        NOW,
    )
    assert child["artifact"] == st.params["artifact"] and child["parameters"] == st.params["parameters"]
    assert child["owner"] == st.params["owner"]
    assert node(gw, "ModelVersion", st.params["parent"])["active"] is True  # type: ignore[index]
    # written again (its merge run again): `writing` afresh, its own adjustments gone, not the parent's
    query(
        gw,
        "MATCH (m:ModelVersion {id: $c}), (p:ModelVersion {id: $p}) SET m.status = 'ready' "
        "CREATE (m)-[:POPULARITY_ADJUSTMENT {delta: -1}]->(:Item {id: 'adjusted'}), "
        "       (p)-[:POPULARITY_ADJUSTMENT {delta: -2}]->(:Item {id: 'adjusted-parent'})",
        c=st.params["id"],
        p=st.params["parent"],
    )
    again = gw.write(st, {**st.params, "now": NOW + 1, "owner": "second"})
    assert again.rows == [{"id": st.params["id"], "claimed": True}]
    child = node(gw, "ModelVersion", st.params["id"])
    assert child is not None and (child["status"], child["created_at"], child["owner"]) == (
        "writing",
        NOW,
        "second",
    )
    deltas = query(
        gw, "MATCH (m:ModelVersion)-[a:POPULARITY_ADJUSTMENT]->() RETURN m.id AS id, a.delta AS delta"
    )
    assert deltas == [{"id": st.params["parent"], "delta": -2}]
    # Settled meanwhile (activated by a run of the merge beside this one): left as it is, its
    # adjustments too, and no row (the merge stops before touching its artifact).
    query(
        gw,
        "MATCH (m:ModelVersion {id: $c}) SET m.status = 'ready', m.activated_at = 5, m.active = true "
        "CREATE (m)-[:POPULARITY_ADJUSTMENT {delta: -1}]->(:Item {id: 'adjusted-settled'})",
        c=st.params["id"],
    )
    before = node(gw, "ModelVersion", st.params["id"])
    refused = gw.write(st, {**st.params, "metrics": "{}", "owner": "third"})
    assert refused.rows == [{"id": st.params["id"], "claimed": False}]
    assert node(gw, "ModelVersion", st.params["id"]) == before
    assert count(gw, "(:ModelVersion {id: $c})-[:POPULARITY_ADJUSTMENT]->()", c=st.params["id"]) == 1
    # no such parent: nothing is created
    assert gw.write(st, {**st.params, "id": "orphan", "parent": "gone"}).rows == []
    assert node(gw, "ModelVersion", "orphan") is None


@effect("copy_user_embeddings", "copy_item_embeddings", "copy_brand_embeddings", "copy_category_embeddings")
def _copy_embeddings(gw: GraphGateway, st: Statement) -> None:
    label = st.name.split("_")[1].capitalize()
    query(
        gw,
        f"CREATE (p:ModelVersion {{id: $p}}), (m:ModelVersion {{id: $c, owner: $o}}),"
        f"       (p)-[:EMBEDDING {{vector: [1.0, 2.0], folded_at: 5}}]->(:{label} {{id: 'x'}}),"
        f"       (p)-[:EMBEDDING {{vector: [3.0]}}]->(:{label} {{id: 'y'}})",
        p=st.params["parent"],
        c=st.params["id"],
        o=st.params["owner"],
    )
    # A run of the merge another one took the child over from: nothing is copied, and it is told so.
    assert gw.write(st, {**st.params, "owner": "superseded"}).rows == [{"copied": 0, "owned": 0}]
    assert count(gw, "(:ModelVersion {id: $c})-[:EMBEDDING]->()", c=st.params["id"]) == 0
    assert gw.write(st, st.params).rows == [{"copied": 1, "owned": 1}]
    assert gw.write(st, st.params).rows == [{"copied": 1, "owned": 1}]  # again: the same one relationship
    (edge,) = rels(gw, f"(:ModelVersion {{id: $c}})-[r:EMBEDDING]->(:{label} {{id: 'x'}})", c=st.params["id"])
    # a folded row is the child's folded row (FOLDED_ITEMS finds it by the child's id)
    assert edge == {"vector": [1.0, 2.0], "folded_at": 5, "folded_version": st.params["id"]}
    assert (
        count(gw, f"(:ModelVersion {{id: $c}})-[:EMBEDDING]->(:{label} {{id: 'y'}})", c=st.params["id"]) == 0
    )
    assert count(gw, "(:ModelVersion {id: $p})-[:EMBEDDING]->()", p=st.params["parent"]) == 2
    # nothing to copy (no such node): still owned
    assert gw.write(st, {**st.params, "ids": ["missing"]}).rows == [{"copied": 0, "owned": 1}]
    # a trained row stays a trained row
    assert gw.write(st, {**st.params, "ids": ["y"]}).rows == [{"copied": 1, "owned": 1}]
    (edge,) = rels(gw, f"(:ModelVersion {{id: $c}})-[r:EMBEDDING]->(:{label} {{id: 'y'}})", c=st.params["id"])
    assert edge == {"vector": [3.0]}


@effect("copy_version_topics")
def _copy_version_topics(gw: GraphGateway, st: Statement) -> None:
    topics = (
        "(p)-[:HAS_TOPIC {centroid: [0.6, 0.8], size: 3, absorbs: ['topic-7']}]->(:Topic {id: 'topic-1'}), "
        "(:Topic {id: 'other'})"
    )
    query(
        gw,
        f"CREATE (p:ModelVersion {{id: $p}}), (:ModelVersion {{id: $c, owner: $o}}), {topics}",
        p=st.params["parent"],
        c=st.params["id"],
        o=st.params["owner"],
    )
    # A run of the merge another one took the child over from: nothing is copied, and it is told so.
    assert gw.write(st, {**st.params, "owner": "superseded"}).rows == [{"copied": 0, "owned": 0}]
    assert count(gw, "(:ModelVersion {id: $c})-[:HAS_TOPIC]->()", c=st.params["id"]) == 0
    assert gw.write(st, st.params).rows == [{"copied": 1, "owned": 1}]
    (edge,) = rels(gw, "(:ModelVersion {id: $c})-[r:HAS_TOPIC]->(:Topic {id: 'topic-1'})", c=st.params["id"])
    assert edge == {"centroid": [0.6, 0.8], "size": 3, "absorbs": ["topic-7"]}
    assert count(gw, "(:ModelVersion)-[:HAS_TOPIC]->(:Topic {id: 'other'})") == 0
    # a parent without topics: nothing to copy, still owned
    assert gw.write(st, {**st.params, "parent": "no-topics"}).rows == [{"copied": 0, "owned": 1}]


@effect("activate_child_version")
def _activate_child_version(gw: GraphGateway, st: Statement) -> None:
    parent, child = st.params["parent"], st.params["id"]
    query(
        gw,
        "CREATE (:ModelVersion {id: $c, status: 'ready', active: false, parent: $p, owner: $o}),"
        "       (:ModelVersion {id: $p, status: 'ready', active: true, activated_at: 5, about_from: 'root'}),"
        "       (:ModelVersion {id: 'other-child', status: 'ready', active: false, parent: 'v-other', owner: $o})",
        c=child,
        p=parent,
        o=st.params["owner"],
    )
    # another version's child is never switched to
    assert gw.write(st, {**st.params, "id": "other-child"}).rows == [{"activated": 0, "owned": 0}]
    # nor by a run of the merge another one took the child over from (it is told so)
    before = query(gw, "MATCH (m:ModelVersion) RETURN properties(m) AS p ORDER BY m.id")
    assert gw.write(st, {**st.params, "owner": "superseded"}).rows == [{"activated": 0, "owned": 0}]
    assert query(gw, "MATCH (m:ModelVersion) RETURN properties(m) AS p ORDER BY m.id") == before

    def state() -> dict[str, tuple[bool, int | None]]:
        rows = query(gw, "MATCH (m:ModelVersion) RETURN m.id AS id, m.active AS active, m.activated_at AS at")
        return {r["id"]: (r["active"], r["at"]) for r in rows}

    assert gw.write(st, st.params).rows == [{"activated": 1, "owned": 1}]
    after = {child: (True, NOW), parent: (False, 5), "other-child": (False, None)}
    assert state() == after
    # the child holds the parent's file's edges as the parent did: the parent's mark is carried
    marks = query(gw, "MATCH (m:ModelVersion) RETURN m.id AS id, m.about_from AS f ORDER BY id")
    assert {r["id"]: r["f"] for r in marks} == {child: "root", parent: "root", "other-child": None}
    # the parent is no longer active (a retraining replaced it): a second child is not switched to
    query(
        gw,
        "CREATE (:ModelVersion {id: 'late', status: 'ready', active: false, parent: $p, owner: $o})",
        p=parent,
        o=st.params["owner"],
    )
    assert gw.write(st, {**st.params, "id": "late"}).rows == [{"activated": 0, "owned": 1}]
    assert state() == {**after, "late": (False, None)}
    assert "about_from" not in node(gw, "ModelVersion", "late")  # type: ignore[operator]  # not switched to
    # the parent's mark is read under the ABOUT writers' lock: their node is made when none was
    # (no writer ever began) and its state is left as it is
    assert node(gw, "Revision", "about") == ABOUT_MADE
    assert count(gw, "(m) WHERE m.write_lock IS NOT NULL") == 0  # the locks are cleared


# --- privacy and maintenance ----------------------------------------------------------------------


@effect("erase_user")
def _erase_user(gw: GraphGateway, st: Statement) -> None:
    # The active version (created at 1000) was trained on the interactions first seen up to 1000,
    # not on the one first seen at 2000; an older version also holds an embedding of the user
    # (who has no bot flag: not a bot). A bot flagged before the flag's time was recorded (taken as
    # flagged before every pull), and a user the version has no embedding of, were left out of the
    # counts, so erasing them adjusts none.
    query(
        gw,
        """
        CREATE (m:ModelVersion {id: 'v', active: true, created_at: 1000}),
               (old:ModelVersion {id: 'v-old', active: false, created_at: 3000, data_until: 950}),
               (u:User {id: $uid}), (other:User {id: 'other'}),
               (bot:User {id: 'bot', flagged_bot: true}), (unseen:User {id: 'unseen', flagged_bot: false}),
               (adjusted:Item {id: 'adjusted'}), (trained:Item {id: 'trained'}), (later:Item {id: 'later'}),
               (b:Brand {id: 'acme'})
        CREATE (m)-[:EMBEDDING {vector: [1.0]}]->(u), (old)-[:EMBEDDING {vector: [1.0]}]->(u),
               (u)-[:INTERACTED {first_ts: 900}]->(adjusted), (u)-[:INTERACTED {first_ts: 1000}]->(trained),
               (u)-[:INTERACTED {first_ts: 2000}]->(later), (u)-[:INTERESTED_IN {weight: 1.0}]->(b),
               (other)-[:INTERACTED {first_ts: 900}]->(trained),
               (m)-[:POPULARITY_ADJUSTMENT {delta: -2}]->(adjusted),
               (m)-[:EMBEDDING {vector: [1.0]}]->(bot), (bot)-[:INTERACTED {first_ts: 900}]->(trained),
               (unseen)-[:INTERACTED {first_ts: 900}]->(trained)
        """,
        uid=st.params["user_id"],
    )
    done = gw.write(st, st.params)
    assert done.rows == [{"interactions": 3, "interests": 1, "embeddings": 2, "popularity_adjusted": 2}]
    assert (done.nodes_deleted, done.relationships_deleted) == (1, 6)
    assert node(gw, "User", st.params["user_id"]) is None
    # the tombstone: the hash the caller gives, never the id
    # ... marked with the erasure's time until its caller has rewritten the log (ERASURE_CLEANED_UP)
    tombstone = {"id": st.params["erasure_id"], "erased_at": NOW, "cleanup_owed": NOW}
    assert node(gw, "Erasure", st.params["erasure_id"]) == tombstone
    assert count(gw, "(g:Erasure {id: $uid})", uid=st.params["user_id"]) == 0

    def adjustments(version: str = "v") -> dict[str, int]:
        pattern = "(:ModelVersion {id: $v})-[a:POPULARITY_ADJUSTMENT]->(i)"
        rows = query(gw, f"MATCH {pattern} RETURN i.id AS id, a.delta AS delta", v=version)
        return {r["id"]: r["delta"] for r in rows}

    assert adjustments() == {"adjusted": -3, "trained": -1}
    assert node(gw, "ModelVersion", "v")["adjusted_at"] == NOW  # type: ignore[index]
    # every version trained on the user loses their share (a rollback serves it), each as its data
    # was read: 'v-old' pulled its graph at 950, before 'trained' (1000), though written at 3000
    assert adjustments("v-old") == {"adjusted": -1}
    assert node(gw, "ModelVersion", "v-old")["adjusted_at"] == NOW  # type: ignore[index]
    assert count(gw, "(:User {id: 'other'})-[:INTERACTED]->(:Item {id: 'trained'})") == 1
    bot = gw.write(st, {"user_id": "bot", "erasure_id": "e-bot", "now": NOW + 1})
    assert bot.rows == [{"interactions": 1, "interests": 0, "embeddings": 1, "popularity_adjusted": 0}]
    unseen = gw.write(st, {"user_id": "unseen", "erasure_id": "e-unseen", "now": NOW + 2})
    assert unseen.rows == [{"interactions": 1, "interests": 0, "embeddings": 0, "popularity_adjusted": 0}]
    assert adjustments() == {"adjusted": -3, "trained": -1}
    assert node(gw, "ModelVersion", "v")["adjusted_at"] == NOW  # type: ignore[index]
    # another erasure that adjusts the version in the same millisecond (another API worker's)
    # still moves the stamp serving processes compare
    query(
        gw,
        "MATCH (m:ModelVersion {id: 'v'}) CREATE (m)-[:EMBEDDING {vector: [1.0]}]->(:User {id: 'same-ms'})",
    )
    query(
        gw,
        "MATCH (u:User {id: 'same-ms'}), (i:Item {id: 'trained'}) CREATE (u)-[:INTERACTED {first_ts: 900}]->(i)",
    )
    gw.write(st, {"user_id": "same-ms", "erasure_id": "e-same-ms", "now": NOW})
    assert adjustments()["trained"] == -2 and node(gw, "ModelVersion", "v")["adjusted_at"] == NOW + 1  # type: ignore[index]
    # A full version counted what the graph had received by its pull (received_at), whatever the
    # events' times: a late event dated before it ('later', received at 1500) was never read, one a
    # client clock dated after it ('trained', 1100, received at 990) was. An incremental child
    # ('v-child', its data_until an event time) counted by the first event's time, as it read them.
    query(
        gw,
        """
        MATCH (m:ModelVersion {id: 'v'}), (later:Item {id: 'later'}), (trained:Item {id: 'trained'})
        CREATE (c:ModelVersion {id: 'v-child', active: false, created_at: 5000, parent: 'v', data_until: 1000}),
               (r:User {id: 'received'}), (m)-[:EMBEDDING {vector: [1.0]}]->(r),
               (c)-[:EMBEDDING {vector: [1.0]}]->(r),
               (r)-[:INTERACTED {first_ts: 900, received_at: 1500}]->(later),
               (r)-[:INTERACTED {first_ts: 1100, received_at: 990}]->(trained)
        """,
    )
    gw.write(st, {"user_id": "received", "erasure_id": "e-received", "now": NOW})
    assert adjustments() == {"adjusted": -3, "trained": -3}
    assert adjustments("v-child") == {"later": -1}
    # A user flagged as a bot after a version read the graph was counted by it, and loses their
    # share as any user: 'late-bot', flagged at 1001, after every pull ('v' at 1000, no data_until:
    # its created_at; 'v-old' at 950). 'early-bot', flagged at 980, was left out of 'v''s pull but
    # counted by 'v-old''s. A child takes off whenever the flag's time is known (it carries its
    # parent's counts, which had them); 'bot', flagged before that time was recorded, none (above).
    query(
        gw,
        """
        MATCH (m:ModelVersion {id: 'v'}), (old:ModelVersion {id: 'v-old'}), (c:ModelVersion {id: 'v-child'}),
              (i:Item {id: 'adjusted'})
        UNWIND [['late-bot', 1001], ['early-bot', 980]] AS b
        CREATE (u:User {id: b[0], flagged_bot: true, flagged_at: b[1]}),
               (m)-[:EMBEDDING {vector: [1.0]}]->(u), (old)-[:EMBEDDING {vector: [1.0]}]->(u),
               (c)-[:EMBEDDING {vector: [1.0]}]->(u), (u)-[:INTERACTED {first_ts: 900, received_at: 900}]->(i)
        """,
    )
    late = gw.write(st, {"user_id": "late-bot", "erasure_id": "e-late-bot", "now": NOW})
    assert late.rows == [{"interactions": 1, "interests": 0, "embeddings": 3, "popularity_adjusted": 1}]
    assert adjustments() == {"adjusted": -4, "trained": -3}
    assert adjustments("v-old") == {"adjusted": -2}
    assert adjustments("v-child") == {"later": -1, "adjusted": -1}
    early = gw.write(st, {"user_id": "early-bot", "erasure_id": "e-early-bot", "now": NOW})
    assert early.rows == [{"interactions": 1, "interests": 0, "embeddings": 3, "popularity_adjusted": 0}]
    assert adjustments() == {"adjusted": -4, "trained": -3}
    assert adjustments("v-old") == {"adjusted": -3}
    assert adjustments("v-child") == {"later": -1, "adjusted": -2}
    # The user came back and is erased again: the tombstone keeps the later time, never an earlier one.
    query(gw, "CREATE (:User {id: $uid})", uid=st.params["user_id"])
    gw.write(st, {**st.params, "now": NOW + 3})
    query(gw, "CREATE (:User {id: $uid})", uid=st.params["user_id"])
    gw.write(st, {**st.params, "now": NOW - 3})
    assert node(gw, "Erasure", st.params["erasure_id"])["erased_at"] == NOW + 3  # type: ignore[index]
    # A user the graph has not seen yet (their first events on their way): nothing to delete, and
    # no row (the API's 404), but the tombstone is left.
    assert gw.write(st, {"user_id": "not-yet", "erasure_id": "e-not-yet", "now": NOW}).rows == []
    assert node(gw, "Erasure", "e-not-yet") == {"id": "e-not-yet", "erased_at": NOW}  # nothing owed
    # Tags: the user's share of each item's count comes off (USED_TAG); an edge at zero goes, and a
    # Tag left with no edge; a tag another user also gave, or one written before the user link
    # (no USED_TAG: 'legacy'), stays.
    query(
        gw,
        """
        MATCH (a:Item {id: 'adjusted'}), (t:Item {id: 'trained'}), (o:User {id: 'other'})
        CREATE (u:User {id: 'tagger'}),
               (own:Tag {id: 'alice smith home address'}), (shared:Tag {id: 'space opera'}),
               (legacy:Tag {id: 'legacy'}),
               (a)-[:TAGGED {count: 2}]->(own), (u)-[:USED_TAG {item_id: 'adjusted', count: 2}]->(own),
               (t)-[:TAGGED {count: 3}]->(shared), (u)-[:USED_TAG {item_id: 'trained', count: 1}]->(shared),
               (o)-[:USED_TAG {item_id: 'trained', count: 2}]->(shared),
               (a)-[:TAGGED {count: 1}]->(shared), (u)-[:USED_TAG {item_id: 'adjusted', count: 1}]->(shared),
               (a)-[:TAGGED {count: 4}]->(legacy)
        """,
    )
    gw.write(st, {"user_id": "tagger", "erasure_id": "e-tagger", "now": NOW})
    tagged = query(gw, "MATCH (i:Item)-[r:TAGGED]->(g:Tag) RETURN i.id AS i, g.id AS g, r.count AS n")
    assert sorted((t["i"], t["g"], t["n"]) for t in tagged) == [
        ("adjusted", "legacy", 4),
        ("trained", "space opera", 2),
    ]
    assert count(gw, "(:Tag {id: 'alice smith home address'})") == 0
    assert count(gw, "(:User {id: 'other'})-[:USED_TAG {count: 2}]->(:Tag {id: 'space opera'})") == 1
    query(gw, "MATCH (g:Tag) DETACH DELETE g")
    assert count(gw, "(n)") == 8 + 9 + 1  # items, brand, versions, the other user, 9 tombstones stay
    # and the ABOUT writers' node, whose lock the erasure takes before the versions' (made when no
    # writer ever began), released
    assert node(gw, "Revision", "about") == ABOUT_MADE


@effect("erasure_cleaned_up")
def _erasure_cleaned_up(gw: GraphGateway, st: Statement) -> None:
    query(gw, "CREATE (:Erasure {id: $id, erased_at: 7, cleanup_owed: 7})", id=st.params["erasure_id"])
    # an earlier erasure's cleanup does not clear the mark a later erasure of the user set
    assert gw.write(st, {**st.params, "owed": 5}).rows == [{"cleared": 0}]
    assert node(gw, "Erasure", st.params["erasure_id"]) == {
        "id": st.params["erasure_id"],
        "erased_at": 7,
        "cleanup_owed": 7,
    }
    assert gw.write(st, {**st.params, "owed": 7}).rows == [{"cleared": 1}]
    assert node(gw, "Erasure", st.params["erasure_id"]) == {"id": st.params["erasure_id"], "erased_at": 7}
    assert gw.write(st, {**st.params, "owed": 7}).rows == [{"cleared": 0}]  # a resend: nothing


@effect("delete_nodes_batch")
def _delete_nodes_batch(gw: GraphGateway, st: Statement) -> None:
    query(
        gw, "UNWIND range(1, 5) AS k CREATE (:Item {id: toString(k)})-[:MADE_BY]->(:Brand {id: toString(k)})"
    )
    first = gw.write(st, {"limit": 4})
    rest = gw.write(st, st.params)
    assert (first.nodes_deleted, rest.nodes_deleted) == (4, 6)
    assert count(gw, "(n)") == 0
    assert count(gw, "()-[r]->()") == 0


# --- the catalogue API ----------------------------------------------------------------------------


def _revision(gw: GraphGateway) -> int | None:
    rows = query(gw, "MATCH (r:Revision {id: 'catalogue'}) RETURN r.revision AS v")
    return rows[0]["v"] if rows else None


@effect("upsert_catalogue_items", UPSERT_CATALOGUE_ITEMS_WITH_ATTRIBUTES.name)
def _upsert_catalogue_items(gw: GraphGateway, st: Statement) -> None:
    # Stored: B0001 (made by Old, in Old cat, material wool and silk, also_bought B0009, stock 7,
    # a history edge) and an untouched item B0005; the revision counter at 4.
    query(
        gw,
        """
        CREATE (i:Item {id: 'B0001', created_at: 1, listed: false, title: 'Old', stock: 7, price: 1.0,
                        description: 'Old text'}),
               (:Item {id: 'B0005', created_at: 1, title: 'Other'}),
               (:Item {id: 'B0006', created_at: 1, title: 'Six', description: 'Gone'}),
               (o:Item {id: 'B0009', created_at: 1}),
               (u:User {id: 'u1'}), (b:Brand {id: 'Old'}), (c:Category {id: 'Old cat'}),
               (w:Entity {id: 'wool'}), (s:Entity {id: 'silk'}), (:Revision {id: 'catalogue', revision: 4})
        CREATE (i)-[:MADE_BY]->(b), (i)-[:IN_CATEGORY]->(c), (u)-[:INTERACTED {weight: 1.0}]->(i),
               (i)-[:MATERIAL {relation: 'material'}]->(w), (i)-[:MATERIAL {relation: 'material'}]->(s),
               (i)-[:ALSO_BOUGHT {relation: 'also_bought'}]->(o)
        """,
    )
    params = dict(st.params)
    params["items"] = [
        {**params["items"][0], "props": {**params["items"][0]["props"], "stock": None}},
        {"id": "B0002", "props": {"title": "New"}, "brands": [], "categories": []},
        {"id": "B0006", "props": {"description": None}, "brands": [], "categories": []},
    ]
    params["replaced_attributes"] = [{"id": "B0001", "relation": "material", "keep": ["silk"]}]
    if st.name != "upsert_catalogue_items":
        params["attribute_items"] = ["B0007"]
        params["attributes_0"] = [{"head": "B0001", "relation": "film.film.genre", "tail": "cotton"}]
        params["attributes_1"] = [{"head": "B0001", "relation": "similar_to", "tail": "B0007"}]
    summary = gw.write(st, params)
    assert summary.rows[0]["revision"] == 5 == _revision(gw)
    item = node(gw, "Item", "B0001")
    assert item is not None
    assert {k: item.get(k) for k in ("title", "price", "currency", "available", "stock", "listed")} == {
        "title": "Lipstick",
        "price": 9.5,
        "currency": "EUR",
        "available": True,
        "stock": None,  # a given null removes the property
        "listed": True,
    }
    assert (item["revision"], item["created_at"], item["updated_at"]) == (5, 1, NOW)
    new = node(gw, "Item", "B0002")
    assert new is not None and (new["title"], new["listed_at"], new["revision"]) == ("New", NOW, 5)
    assert node(gw, "Item", "B0005") == {"id": "B0005", "created_at": 1, "title": "Other"}
    assert item["description"] == "A matte red lipstick with shea butter." and "description" not in new
    six = node(gw, "Item", "B0006")  # a given null removes the description, a field left out is kept
    assert six is not None and "description" not in six and six["title"] == "Six"
    # the brand and categories are replaced; history and other relations stay
    brands = query(gw, "MATCH (:Item {id: 'B0001'})-[:MADE_BY]->(b) RETURN b.id AS id")
    assert [r["id"] for r in brands] == ["Acme"]
    cats = query(gw, "MATCH (:Item {id: 'B0001'})-[:IN_CATEGORY]->(c) RETURN c.id AS id ORDER BY id")
    assert [r["id"] for r in cats] == ["Beauty", "Lips"]
    assert count(gw, "(:Category {id: 'Lips'})-[:SUBCATEGORY_OF]->(:Category {id: 'Beauty'})") == 1
    assert count(gw, "(:User {id: 'u1'})-[:INTERACTED]->(:Item {id: 'B0001'})") == 1
    assert count(gw, "(:Item {id: 'B0001'})-[:ALSO_BOUGHT]->(:Item {id: 'B0009'})") == 1
    materials = query(gw, "MATCH (:Item {id: 'B0001'})-[k:MATERIAL]->(t) RETURN t.id AS id")
    assert [r["id"] for r in materials] == ["silk"]  # wool was not kept
    if st.name != "upsert_catalogue_items":
        genre = query(
            gw, "MATCH (:Item {id: 'B0001'})-[k:FILM_FILM_GENRE]->(t:Entity) RETURN k.relation AS r"
        )
        similar = query(gw, "MATCH (:Item {id: 'B0001'})-[k:SIMILAR_TO]->(t:Item) RETURN t.listed AS listed")
        assert genre == [{"r": "film.film.genre"}] and similar == [{"listed": False}]
    assert node(gw, "Revision", "category_tree") == {"id": "category_tree"}  # the lock, none left
    _refused_when_the_tree_moved(gw, st, params, "Lips")  # Lips -> Beauty is stored now
    # the same write again changes nothing but the revision (its writer found every link stored)
    again = gw.write(st, {**params, "tree_ids": [], "tree_links": []})
    assert again.rows[0]["revision"] == 6
    assert count(gw, "(:Item {id: 'B0001'})-[]->()") == len(brands) + len(cats) + 2 + (
        2 if st.name != "upsert_catalogue_items" else 0
    )
    _items_absorb_entities(gw, st)


@effect("delist_item")
def _delist_item(gw: GraphGateway, st: Statement) -> None:
    query(
        gw,
        "CREATE (i:Item {id: 'B0001', created_at: 1, listed: true}), (u:User {id: 'u1'}),"
        "       (:Item {id: 'B0002', created_at: 1}) CREATE (u)-[:INTERACTED {weight: 1.0}]->(i)",
    )
    first = gw.write(st, st.params)
    assert first.rows == [{"id": "B0001", "delisted_at": NOW, "revision": 1}]
    later = gw.write(st, {**st.params, "now": NOW + 5})
    assert later.rows == [{"id": "B0001", "delisted_at": NOW, "revision": 2}]  # the first time stays
    item = node(gw, "Item", "B0001")
    assert item is not None and (item["listed"], item["revision"], item["updated_at"]) == (True, 2, NOW + 5)
    assert count(gw, "(:User)-[:INTERACTED]->(:Item {id: 'B0001'})") == 1
    assert node(gw, "Item", "B0002") == {"id": "B0002", "created_at": 1}
    assert gw.write(st, {**st.params, "item_id": "missing"}).rows == []
    assert _revision(gw) == 2 and node(gw, "Item", "missing") is None


@effect("upsert_rule")
def _upsert_rule(gw: GraphGateway, st: Statement) -> None:
    query(gw, "CREATE (:Rule {id: 'other', action: 'block', target_kind: 'brand', target: 'X'})")
    first = gw.write(st, st.params)
    assert first.rows == [{"id": "r1", "created_at": NOW, "revision": 1}]
    rule = node(gw, "Rule", "r1")
    assert rule is not None
    stored = {k: v for k, v in st.params["rule"].items() if v is not None}
    assert rule == {**stored, "id": "r1", "created_at": NOW, "updated_at": NOW}
    # the same id again replaces the rule (a null removes a property) and bumps the revision
    changed = {**st.params["rule"], "action": "boost", "position": None, "factor": 2.0}
    again = gw.write(st, {**st.params, "now": NOW + 1, "rule": changed})
    assert again.rows == [{"id": "r1", "created_at": NOW, "revision": 2}]
    rule = node(gw, "Rule", "r1")
    assert rule is not None and (rule["action"], rule["factor"], "position" in rule) == ("boost", 2.0, False)
    assert count(gw, "(:Rule)") == 2 and _revision_of(gw, "rules") == 2
    assert node(gw, "Rule", "other") == {
        "id": "other",
        "action": "block",
        "target_kind": "brand",
        "target": "X",
    }


@effect("delete_rule")
def _delete_rule(gw: GraphGateway, st: Statement) -> None:
    query(gw, "CREATE (:Rule {id: 'r1', action: 'block'}), (:Rule {id: 'r2', action: 'block'})")
    assert gw.write(st, st.params).rows == [{"revision": 1}]
    assert node(gw, "Rule", "r1") is None and node(gw, "Rule", "r2") is not None
    assert gw.write(st, st.params).rows == []  # gone: nothing to delete, no revision bump
    assert _revision_of(gw, "rules") == 1


def _revision_of(gw: GraphGateway, name: str) -> int | None:
    rows = query(gw, "MATCH (r:Revision {id: $id}) RETURN r.revision AS v", id=name)
    return rows[0]["v"] if rows else None


# --- the cases ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_graph(settings: Settings, graph_server: EmbeddedServer | None) -> Iterator[GraphGateway]:
    """One migrated graph for the module; each case empties it first."""
    with migrated_graph(settings, "effects") as gw:
        yield gw


@pytest.fixture
def graph(shared_graph: GraphGateway) -> GraphGateway:
    """The module's graph, empty."""
    clear_graph(shared_graph)
    return shared_graph


def test_every_write_statement_has_an_effect_case() -> None:
    writes = {name for name, s in STATEMENTS.items() if s.mode == "write"}
    assert sorted(writes - set(EFFECTS)) == [], "write statements without an effect case"
    assert sorted(set(EFFECTS) - writes) == [], "effect cases for statements that are gone"


@pytest.mark.parametrize("name", sorted(EFFECTS))
def test_write_statement_effect(graph: GraphGateway, name: str) -> None:
    EFFECTS[name](graph, STATEMENTS[name])
