"""Bulk-load statements used by ``kgrec import``.

Each takes ``$rows`` (a batch of 1k–10k maps) and is idempotent: the importer
aggregates the data first, then MERGEs nodes and relationships and SETs their
properties to the aggregated values, so a second run changes nothing.
Entities and knowledge edges are written by :mod:`graph_schema.statements.knowledge`.
"""

from graph_schema.allow_list import KNOWLEDGE_RELATIONS, Label, Rel
from graph_schema.catalogue import Statement, read, write
from graph_schema.statements.knowledge import absorb_entities, link_knowledge

# Both item upserts first turn an Entity with an item's id into that Item (absorb_entities).
UPSERT_ITEMS = write(
    "upsert_items",
    absorb_entities("[row IN $rows | row.id]")
    + """
    WITH count(*) AS stage
    UNWIND $rows AS r
    MERGE (i:Item {id: r.id})
    ON CREATE SET i.created_at = $now
    SET i.listed = true,
        i.title = coalesce(r.title, i.title),
        i.description = coalesce(r.description, i.description),
        i.price = coalesce(r.price, i.price)
    """,
    rows=[{"id": "B0001", "title": "Lipstick", "description": "A matte red lipstick.", "price": 9.5}],
    now=1700000000000,
)

# Co-purchase targets outside the catalogue: Item nodes with listed = false.
UPSERT_UNLISTED_ITEMS = write(
    "upsert_unlisted_items",
    absorb_entities("$ids")
    + """
    WITH count(*) AS stage
    UNWIND $ids AS item_id
    MERGE (i:Item {id: item_id})
    ON CREATE SET i.created_at = $now, i.listed = false
    """,
    ids=["B0002"],
    now=1700000000000,
)


def _named_node_upsert(label: Label) -> Statement:
    # The label comes from the fixed allow-list in graph_schema.allow_list.
    return write(
        f"upsert_{label.value.lower()}s",
        f"""
        UNWIND $rows AS r
        MERGE (n:{label.value} {{id: r.id}})
        ON CREATE SET n.created_at = $now
        SET n.name = r.name
        """,
        rows=[{"id": "L&#39;Oreal", "name": "L'Oreal"}],
        now=1700000000000,
    )


def _link_statement(source: Label, rel: Rel, target: Label, source_key: str, target_key: str) -> Statement:
    # Labels and the relationship type come from the fixed allow-list in graph_schema.allow_list.
    return write(
        f"link_{source.value.lower()}_{rel.value.lower()}_{target.value.lower()}",
        f"""
        UNWIND $rows AS r
        MATCH (a:{source.value} {{id: r.{source_key}}})
        MATCH (b:{target.value} {{id: r.{target_key}}})
        MERGE (a)-[:{rel.value}]->(b)
        """,
        rows=[{source_key: "B0001", target_key: "B0002"}],
    )


UPSERT_BRANDS = _named_node_upsert(Label.BRAND)
UPSERT_CATEGORIES = _named_node_upsert(Label.CATEGORY)
# An item has one brand: the brand an import gives replaces the one an earlier import (or an event)
# linked, as the catalogue API's does, instead of adding a second.
LINK_ITEM_BRANDS = write(
    "link_item_made_by_brand",
    """
    UNWIND $rows AS r
    MATCH (a:Item {id: r.item_id})
    MATCH (b:Brand {id: r.brand_id})
    OPTIONAL MATCH (a)-[old:MADE_BY]->(other:Brand)
    WHERE other.id <> r.brand_id
    WITH a, b, collect(old) AS olds
    FOREACH (o IN olds | DELETE o)
    MERGE (a)-[:MADE_BY]->(b)
    """,
    rows=[{"item_id": "B0001", "brand_id": "Olay"}],
)
LINK_ITEM_CATEGORIES = _link_statement(Label.ITEM, Rel.IN_CATEGORY, Label.CATEGORY, "item_id", "category_id")
# A link that would close a loop is not written (the importer refuses such files first; this
# holds against a concurrent writer, as the catalogue's path links do).
LINK_CATEGORY_PARENTS = write(
    "link_category_subcategory_of_category",
    """
    UNWIND $rows AS r
    MATCH (a:Category {id: r.child_id})
    MATCH (b:Category {id: r.parent_id})
    WHERE NOT (b)-[:SUBCATEGORY_OF*0..]->(a)
    MERGE (a)-[:SUBCATEGORY_OF]->(b)
    """,
    rows=[{"child_id": "Lips", "parent_id": "Makeup"}],
)
# Knowledge edges of every relation are rendered in graph_schema.statements.knowledge; these are
# the built-in co-purchase ones (rows: head, relation, tail).
LINK_KNOWLEDGE_EDGES = {
    relation: link_knowledge(relation, Label.ITEM, Label.ITEM) for relation in KNOWLEDGE_RELATIONS
}

UPSERT_USERS = write(
    "upsert_users",
    """
    UNWIND $ids AS user_id
    MERGE (u:User {id: user_id})
    ON CREATE SET u.created_at = $now, u.flagged_bot = false
    """,
    ids=["A1YJEY40YUW4SE"],
    now=1700000000000,
)

# Users whose timed events exceed the bot limit in some minute (the live path flags them the same way).
FLAG_BOTS = write(
    "flag_bots",
    """
    UNWIND $ids AS user_id
    MATCH (u:User {id: user_id})
    SET u.flagged_bot = true
    """,
    ids=["A1YJEY40YUW4SE"],
)

# One row per (user, item) pair, already aggregated over the data set.
SET_INTERACTIONS = write(
    "set_interactions",
    """
    UNWIND $rows AS r
    MATCH (u:User {id: r.user_id})
    MATCH (i:Item {id: r.item_id})
    MERGE (u)-[e:INTERACTED]->(i)
    SET e += r.counts,
        e.first_ts = r.first_ts,
        e.last_ts = r.last_ts,
        e.last_seq = r.last_seq,
        e.rating = r.rating,
        e.rating_ts = r.rating_ts,
        e.weight = r.weight,
        e.weight_ts = r.weight_ts
    """,
    rows=[
        {
            "user_id": "A1YJEY40YUW4SE",
            "item_id": "B0001",
            "counts": {"n_purchase": 1},
            "first_ts": 1700000000000,
            "last_ts": 1700000000000,
            "last_seq": 0,
            "rating": None,
            "rating_ts": None,
            "weight": 5.0,
            "weight_ts": 1700000000000,
        }
    ],
)

_INTEREST_ROW = {
    "user_id": "A1YJEY40YUW4SE",
    "target_id": "Olay",
    "weight": 5.0,
    "weight_ts": 1700000000000,
    "count": 1,
    "first_ts": 1700000000000,
    "last_ts": 1700000000000,
}


def _interest_statement(target: Label) -> Statement:
    # The target label comes from the fixed allow-list in graph_schema.allow_list.
    return write(
        f"set_{target.value.lower()}_interests",
        f"""
        UNWIND $rows AS r
        MATCH (u:User {{id: r.user_id}})
        MATCH (t:{target.value} {{id: r.target_id}})
        MERGE (u)-[x:INTERESTED_IN]->(t)
        SET x.weight = r.weight, x.weight_ts = r.weight_ts, x.count = r.count,
            x.first_ts = r.first_ts, x.last_ts = r.last_ts
        """,
        rows=[_INTEREST_ROW],
    )


SET_BRAND_INTERESTS = _interest_statement(Label.BRAND)
SET_CATEGORY_INTERESTS = _interest_statement(Label.CATEGORY)

# The import's own record, (:Revision {id: 'import'}): the data set an import started with and
# when, and when it finished (null until then). An import writes in many batches, so a process
# killed part way leaves a partial graph; `kgrec up --import` reads this to run an unfinished one
# again (every step is idempotent) instead of serving the partial graph.
START_IMPORT = write(
    "start_import",
    """
    MERGE (r:Revision {id: 'import'})
    ON CREATE SET r.created_at = $now
    SET r.dataset = $dataset, r.started_at = $now, r.finished_at = null
    """,
    dataset="amazon-beauty-kg",
    now=1700000000000,
)
# Only the import that started at $started finishes the record (a later start owns it).
FINISH_IMPORT = write(
    "finish_import",
    """
    MATCH (r:Revision {id: 'import'})
    WHERE r.started_at = $started
    SET r.finished_at = $now
    RETURN r.finished_at AS finished_at
    """,
    started=1700000000000,
    now=1700000060000,
)
IMPORT_STATE = read(
    "import_state",
    """
    MATCH (r:Revision {id: 'import'})
    RETURN r.dataset AS dataset, r.started_at AS started_at, r.finished_at AS finished_at
    """,
)
