"""The open knowledge graph: entities, and knowledge edges of any relation.

A knowledge edge ``head -relation-> tail`` joins two items, an item and an
:class:`~graph_schema.allow_list.Label` ``Entity``, or two entities. Its
relationship type is rendered from the relation name by
:func:`graph_schema.relation_names.relationship_type` (the only way a name
reaches Cypher text), and the edge carries the exact name as ``relation``, so
two names that render to one type stay two edges. The rendered statements are
cached per (type, head label, tail label); the examples below are rendered at
import time so the catalogue lint checks the form every rendered statement takes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

from graph_schema.allow_list import Label
from graph_schema.catalogue import Statement, known_ids, read, write
from graph_schema.relation_names import relationship_type

# The labels a knowledge edge may join (brands and categories have their own fixed types).
KNOWLEDGE_LABELS = (Label.ITEM, Label.ENTITY)


def absorb_entities(ids: str) -> str:
    """The stage that turns each Entity with an id of the Cypher list ``ids`` into an unlisted Item.

    One id names one node: a write that makes an id an Item runs this stage first, so the
    Item's own MERGE then finds the former Entity, its edges all kept (its ``kind`` and
    ``name`` go; ``listed`` is false until the write lists it). An id some Item holds already
    is left alone. Relabelling keeps edges of any type, which Cypher could not move without
    naming each type. ``ids`` is fixed text of the statement (a parameter or a list
    comprehension over one), never data.
    """
    return f"""
    UNWIND {ids} AS absorbed_id
    MATCH (ae:Entity {{id: absorbed_id}})
    OPTIONAL MATCH (held:Item {{id: absorbed_id}})
    WITH ae, held WHERE held IS NULL
    REMOVE ae:Entity, ae.kind, ae.name
    SET ae:Item, ae.listed = false
"""


# --- twins: an Entity and an Item with one id, from graphs written before absorb_entities -----------
# Migration 0013 (kgrec.migrations.merge_twin_entities) merges each such Entity into its Item: it
# moves the Entity's edges, one rendered statement per type and direction (Cypher names a type in
# the text, and the types are the data's), then deletes the Entity once it has none left.

TWIN_ENTITIES = read(
    "twin_entities",
    """
    MATCH (e:Entity)
    MATCH (:Item {id: e.id})
    RETURN e.id AS id
    LIMIT $limit
    """,
    limit=1000,
)

# The types of the edges of some twin Entities, and whether each leaves the Entity or enters it
# (a loop on an Entity does both).
TWIN_EDGE_TYPES = read(
    "twin_edge_types",
    """
    UNWIND $ids AS twin_id
    MATCH (e:Entity {id: twin_id})-[k]-()
    RETURN DISTINCT type(k) AS type, startNode(k) = e AS outgoing
    """,
    ids=["m.0jzc"],
)

_TYPE = re.compile(r"[A-Z][A-Z0-9_]*")


@lru_cache(maxsize=1024)
def _move_twin_edges(rel_type: str, outgoing: bool) -> Statement:
    start, end = ("-", "->") if outgoing else ("<-", "-")
    return write(
        f"move_twin_edges_{'out' if outgoing else 'in'}_{rel_type.lower()}",
        f"""
        UNWIND $ids AS twin_id
        MATCH (:Entity {{id: twin_id}}){start}[k:{rel_type}]{end}(other)
        WITH twin_id, k, other LIMIT $limit
        MATCH (i:Item {{id: twin_id}})
        MERGE (i){start}[n:{rel_type} {{relation: k.relation}}]{end}(other)
        WITH k, n, properties(n) AS held
        SET n += properties(k)
        SET n += held
        DELETE k
        RETURN count(*) AS moved
        """,
        ids=["m.0jzc"],
        limit=10_000,
    )


def move_twin_edges(rel_type: str, *, outgoing: bool) -> Statement:
    """The statement that moves up to ``$limit`` ``rel_type`` edges of the twin Entities ``$ids`` onto
    their Items, leaving (``outgoing``) or entering them, and returns how many it moved.

    An edge the Item has already (same direction, type, ``relation`` and other end) is kept, not
    doubled: it takes the moved edge's other properties where it has none of its own. ``rel_type``
    is read from the graph: anything but upper-case letters, digits and ``_`` (the types
    :func:`~graph_schema.relation_names.relationship_type` gives) is refused with a ValueError.
    """
    if not _TYPE.fullmatch(rel_type):
        raise ValueError(f"relationship type {rel_type!r} is not one kgrec writes (A-Z, 0-9 and _)")
    return _move_twin_edges(rel_type, outgoing)


DELETE_MERGED_TWINS = write(
    "delete_merged_twins",
    """
    UNWIND $ids AS twin_id
    MATCH (e:Entity {id: twin_id})
    MATCH (:Item {id: twin_id})
    OPTIONAL MATCH (e)-[left]-()
    WITH e, count(left) AS edges
    WHERE edges = 0
    DELETE e
    RETURN count(*) AS deleted
    """,
    ids=["m.0jzc"],
)


# An entity row whose id is an Item writes nothing: one id names one node (absorb_entities).
UPSERT_ENTITIES = write(
    "upsert_entities",
    """
    UNWIND $rows AS r
    OPTIONAL MATCH (held:Item {id: r.id})
    WITH r, held WHERE held IS NULL
    MERGE (e:Entity {id: r.id})
    ON CREATE SET e.created_at = $now
    SET e.kind = coalesce(r.kind, e.kind), e.name = coalesce(r.name, e.name)
    """,
    rows=[{"id": "m.0jzc", "kind": "genre", "name": "Jazz"}],
    now=1700000000000,
)

# Which of some ids are Item nodes already (the importer resolves triple ends in batches).
KNOWN_ITEMS = known_ids("known_items", Label.ITEM.value, "B0001")


@lru_cache(maxsize=4096)
def _link(rel_type: str, head: Label, tail: Label) -> Statement:
    # rel_type comes from relationship_type(); the labels from the fixed allow-list.
    return write(
        f"link_knowledge_{head.value.lower()}_{rel_type.lower()}_{tail.value.lower()}",
        f"""
        UNWIND $rows AS r
        MATCH (a:{head.value} {{id: r.head}})
        MATCH (b:{tail.value} {{id: r.tail}})
        MERGE (a)-[k:{rel_type} {{relation: r.relation}}]->(b)
        """,
        rows=[{"head": "B0001", "relation": "film.film.genre", "tail": "m.0jzc"}],
    )


def link_knowledge(relation: str, head: Label, tail: Label) -> Statement:
    """The statement that MERGEs ``relation`` edges from ``head`` nodes to ``tail`` nodes.

    Its ``$rows`` are ``{head, relation, tail}`` maps; every row's ``relation``
    must render to the same type as ``relation``. Raises
    :class:`~graph_schema.relation_names.RelationNameError` for a name that breaks the rule.
    """
    if head not in KNOWLEDGE_LABELS or tail not in KNOWLEDGE_LABELS:
        raise ValueError(f"knowledge edges join Item and Entity nodes, not {head} and {tail}")
    return _link(relationship_type(relation), head, tail)


# Rendered examples, hostile-but-valid names included: the lint checks them, with their types declared.
EXAMPLE_RELATIONS: tuple[tuple[str, Label, Label], ...] = (
    ("film.film.genre", Label.ITEM, Label.ENTITY),
    ("rdf:type", Label.ENTITY, Label.ENTITY),
    ("origin", Label.ENTITY, Label.ITEM),
    ("similar_to", Label.ITEM, Label.ITEM),
    # other names reaching a co-purchase type get the prefixed one (and migration 0012 moves old edges)
    ("also-bought", Label.ITEM, Label.ENTITY),
    ("Also_Viewed", Label.ITEM, Label.ITEM),
    ("bought-together", Label.ITEM, Label.ITEM),
)
EXAMPLE_LINKS: dict[str, Statement] = {
    s.name: s for s in (link_knowledge(name, head, tail) for name, head, tail in EXAMPLE_RELATIONS)
}

# Rendered twin moves (both directions of an example type) for the lint and the effect tests.
EXAMPLE_TWIN_MOVES: dict[str, Statement] = {
    s.name: s for s in (move_twin_edges("RDF_TYPE", outgoing=outgoing) for outgoing in (True, False))
}

# Every knowledge relation with its type and edge count, and the brand and category links
# (typed by the allow-list, without a relation property) that produced_by/belongs_to write.
RELATION_COUNTS = read(
    "relation_counts",
    """
    MATCH ()-[k]->()
    WHERE k.relation IS NOT NULL OR type(k) IN $attribute_types
    RETURN k.relation AS relation, type(k) AS type, count(*) AS triples
    ORDER BY type, relation
    """,
    attribute_types=["MADE_BY", "IN_CATEGORY"],
)


def example_relationship_types() -> list[str]:
    """The relationship types the rendered examples use (declared to the lint)."""
    return sorted({relationship_type(name) for name, _, _ in EXAMPLE_RELATIONS})


# The attribute stages an atomic write (an event batch, a catalogue batch) appends: the values
# that are not items become Entity nodes, unknown values unlisted items, and each (item,
# relation, value) a typed knowledge edge, one stage and one $attributes_<n> parameter per
# (type, value label) pair the batch uses. One id names one node: a value that is an Item at write
# time (a concurrent writer's, read as unknown) gets no Entity, and its edges go to the Item.
ATTRIBUTE_NODES = (
    """
    WITH count(*) AS stage
    UNWIND $attribute_entities AS entity_id
    OPTIONAL MATCH (held:Item {id: entity_id})
    WITH entity_id, held WHERE held IS NULL
    MERGE (en:Entity {id: entity_id})
    ON CREATE SET en.created_at = $now
    WITH count(*) AS stage
"""
    + absorb_entities("$attribute_items")
    + """
    WITH count(*) AS stage
    UNWIND $attribute_items AS value_id
    MERGE (vi:Item {id: value_id})
    ON CREATE SET vi.created_at = $now, vi.listed = false
"""
)


def _value_end(n: int, label: Label) -> str:
    """Bind ``t<n>`` to the value's node: an Entity value resolves to the Item with its id when one
    holds it at write time (one id, one node), else to the Entity."""
    if label is Label.ITEM:
        return f"MATCH (t{n}:Item {{id: a{n}.tail}})"
    return (
        f"OPTIONAL MATCH (ti{n}:Item {{id: a{n}.tail}})\n"
        f"    OPTIONAL MATCH (te{n}:Entity {{id: a{n}.tail}})\n"
        f"    WITH a{n}, h{n}, coalesce(ti{n}, te{n}) AS t{n} WHERE t{n} IS NOT NULL"
    )


def attribute_link_stages(links: tuple[tuple[str, Label], ...]) -> tuple[list[str], str]:
    """The edge stages for ``links`` ((relationship type, value label) pairs), and a name for them.

    Each type must come from :func:`relationship_type` and each label from the allow-list.
    """
    stages = [
        f"""
    WITH count(*) AS stage
    UNWIND $attributes_{n} AS a{n}
    MATCH (h{n}:Item {{id: a{n}.head}})
    {_value_end(n, label)}
    MERGE (h{n})-[:{rel_type} {{relation: a{n}.relation}}]->(t{n})
"""
        for n, (rel_type, label) in enumerate(links)
    ]
    return stages, "_".join(f"{rel_type}_{label.value}".lower() for rel_type, label in links)


# An item's brand and category links (``it`` the item row, ``i`` its node, ``brands`` the brand ids
# to link), then the category path links of the batch: the same stages for events that carry item
# facts and for the catalogue API, which differ only in which brands they link and in what they
# carry between the two stages (ITEM_FACT_LINKS: nothing).
ITEM_FACTS = """
    FOREACH (brand_id IN brands |
        MERGE (b:Brand {id: brand_id})
        ON CREATE SET b.name = brand_id, b.created_at = $now
        MERGE (i)-[:MADE_BY]->(b))
    FOREACH (category_id IN it.categories |
        MERGE (c:Category {id: category_id})
        ON CREATE SET c.name = category_id, c.created_at = $now
        MERGE (i)-[:IN_CATEGORY]->(c))
"""
# A link that would close a loop is not written. Writers refuse such paths before they write
# (kgrec.category_tree), and the API's writes check again that no other writer's link came between
# (TREE_UNCHANGED, which refuses the whole write); this keeps the tree free of loops for writers
# that only skip the link. (FalkorDB does not show a statement the links its own earlier rows
# wrote; the writers' check covers a batch's own.)
CATEGORY_PATH_LINKS = """
    UNWIND $category_links AS link
    MATCH (child:Category {id: link.child_id})
    MATCH (parent:Category {id: link.parent_id})
    WHERE NOT (parent)-[:SUBCATEGORY_OF*0..]->(child)
    MERGE (child)-[:SUBCATEGORY_OF]->(parent)
"""
# The first stage of a write of category paths that add links (an event batch, a catalogue batch, an
# import batch): its writer checked the paths against the links stored above their ids ($tree_ids)
# as it read them ($tree_links, [child, parent] pairs; kgrec.category_tree.check_paths). A link
# another writer stored there since could close a loop with this write's links, which neither check
# saw (two writers each adding half of one): the write then creates a second lock node, which the
# Revision constraint refuses, so the statement rolls back whole, a GraphConflict, and the writer
# checks its paths again (and refuses the one that would loop). Locking the tree first makes a
# concurrent writer of links on Neo4j, which reads committed data without locks, wait for this one
# to commit before it reads the tree; FalkorDB runs one statement at a time. A write that adds no
# link ($tree_ids empty) locks and reads nothing.
TREE_UNCHANGED = """
    FOREACH (locked IN CASE WHEN size($tree_ids) > 0 THEN [1] ELSE [] END |
        MERGE (tree:Revision {id: 'category_tree'})
        SET tree.write_lock = true
        SET tree.write_lock = null)
    WITH count(*) AS stage
    UNWIND $tree_ids AS tree_id
    MATCH (:Category {id: tree_id})-[:SUBCATEGORY_OF*0..]->(tc:Category)-[:SUBCATEGORY_OF]->(tp:Category)
    WITH collect(DISTINCT [tc.id, tp.id]) AS found
    FOREACH (changed IN CASE WHEN any(link IN found WHERE NOT link IN $tree_links) THEN [1] ELSE [] END |
        CREATE (:Revision {id: 'category_tree'}))
    WITH count(*) AS stage
"""
ITEM_FACT_LINKS = ITEM_FACTS + "    WITH count(*) AS stage\n" + CATEGORY_PATH_LINKS.lstrip("\n")


def bump_catalogue(at: str = "$now") -> str:
    """The stage that bumps the catalogue revision (``rev``, created at 0 the first time), at the
    time ``at`` (fixed text: a parameter). Serving polls this node and re-reads the items stamped
    with a later revision (:mod:`kgrec.catalogue`)."""
    return f"""
    MERGE (rev:Revision {{id: 'catalogue'}})
    ON CREATE SET rev.revision = 0, rev.created_at = {at}
    SET rev.revision = rev.revision + 1, rev.updated_at = {at}
"""


def bump_catalogue_if(changes: str, rows: Mapping[str, str], at: str = "$now") -> str:
    """The stages that bump the catalogue revision once when the Cypher list ``changes`` holds a
    true, then go on row by row again with ``rev`` (null when the graph never had one).

    ``rows`` maps each list carried through the bump (one element per row, the first list setting
    the count) to the name its element takes again. A batch whose item facts change nothing leaves
    the revision alone, so batches do not all queue on its node. A writer reads its items first
    and writes them after this, so on Neo4j it locks the revision before the items, as a
    catalogue write does. ``changes``, the names and ``at`` are fixed text of the statement.
    """
    bump = "\n        ".join(line.strip() for line in bump_catalogue(at).strip().splitlines())
    lists = ", ".join(rows)
    elements = ", ".join(f"{name}[k] AS {element}" for name, element in rows.items())
    return f"""
    FOREACH (bump IN CASE WHEN true IN {changes} THEN [1] ELSE [] END |
        {bump})
    WITH {lists}
    OPTIONAL MATCH (rev:Revision {{id: 'catalogue'}})
    UNWIND range(0, size({next(iter(rows))}) - 1) AS k
    WITH {elements}, rev
"""


def stamp_changed(node: str, changed: str, at: str = "$now") -> str:
    """The SET items of a stage that stamps ``node`` with the revision ``rev`` and the time ``at``
    when ``changed`` (a boolean expression), and leaves its stamp alone otherwise."""
    return (
        f"{node}.revision = CASE WHEN {changed} THEN rev.revision ELSE {node}.revision END,\n"
        f"        {node}.updated_at = CASE WHEN {changed} THEN {at} ELSE {node}.updated_at END"
    )
