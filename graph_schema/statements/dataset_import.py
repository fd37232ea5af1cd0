"""Bulk-load statements used by ``kgrec import``.

Each takes ``$rows`` (a batch of 1k–10k maps) and is idempotent: the importer
aggregates the data first, then MERGEs nodes and relationships and SETs their
properties to the aggregated values, so a second run changes nothing.
Entities and knowledge edges are written by :mod:`graph_schema.statements.knowledge`.
"""

from graph_schema.allow_list import KNOWLEDGE_RELATIONS, Label, Rel
from graph_schema.catalogue import Statement, read, write
from graph_schema.statements.knowledge import (
    TREE_UNCHANGED,
    absorb_entities,
    bump_catalogue_if,
    link_knowledge,
    stamp_changed,
)

# An item a model version knows (an EMBEDDING from one, trained or folded in) whose facts an import
# changes (price, brand, categories) is stamped with a new catalogue revision, as a catalogue write
# stamps it, so serving lays the change over its model within a second (kgrec.catalogue); so is an
# item under the child of a new category link (LINK_CATEGORY_PARENTS). Items no model knows are not
# stamped: a model reads their facts from the graph when it learns them (training, or fold-in), so
# a first import stamps nothing. A batch that changes nothing to stamp leaves the revision alone;
# one that does reads its items, bumps the revision, then writes them (on Neo4j, the revision is
# locked before the items, as by a catalogue write or an event batch). Rows whose write would
# change nothing (a link the item holds already) are dropped before that. $at: when the batch is
# written (the stamp's time, against a model's data_until); $now: when the import started
# (created_at).

# Both item upserts first turn an Entity with an item's id into that Item (absorb_entities).
UPSERT_ITEMS = write(
    "upsert_items",
    absorb_entities("[row IN $rows | row.id]")
    + """
    WITH count(*) AS stage
    UNWIND $rows AS r
    MERGE (i:Item {id: r.id})
    ON CREATE SET i.created_at = $now
    WITH r, i, r.price IS NOT NULL AND (i.price IS NULL OR r.price <> i.price) AS repriced
    OPTIONAL MATCH (i)<-[known:EMBEDDING]-(:ModelVersion)
    WHERE repriced
    WITH r, i, repriced, count(known) AS models
    WITH collect(r) AS rs, collect(i) AS nodes, collect(repriced AND models > 0) AS changes
"""
    + bump_catalogue_if("changes", {"rs": "r", "nodes": "i", "changes": "changed"}, at="$at")
    + f"""
    SET i.listed = true,
        i.title = coalesce(r.title, i.title),
        i.description = coalesce(r.description, i.description),
        i.price = coalesce(r.price, i.price),
        {stamp_changed("i", "changed", at="$at")}
    """,
    rows=[{"id": "B0001", "title": "Lipstick", "description": "A matte red lipstick.", "price": 9.5}],
    now=1700000000000,
    at=1700000000000,
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


UPSERT_BRANDS = _named_node_upsert(Label.BRAND)
UPSERT_CATEGORIES = _named_node_upsert(Label.CATEGORY)


def _item_fact_link(rel: Rel, target: Label, key: str, *, replacing: bool) -> Statement:
    """An import's links from items to their brand or categories (rows: ``item_id`` and ``key``),
    stamping each item a model knows that the link changes. ``replacing``: the link replaces the
    item's other links of the type (an item has one brand)."""
    # The labels and the relationship type come from the fixed allow-list in graph_schema.allow_list.
    others = (
        f"""OPTIONAL MATCH (a)-[old:{rel.value}]->(other:{target.value})
    WHERE other.id <> r.{key}
    WITH a, b, collect(old) AS olds"""
        if replacing
        else "WITH a, b, [] AS olds"
    )
    return write(
        f"link_item_{rel.value.lower()}_{target.value.lower()}",
        f"""
    UNWIND $rows AS r
    MATCH (a:Item {{id: r.item_id}})
    MATCH (b:{target.value} {{id: r.{key}}})
    {others}
    OPTIONAL MATCH (a)-[held:{rel.value}]->(b)
    WITH a, b, olds, held
    WHERE held IS NULL OR size(olds) > 0
    OPTIONAL MATCH (a)<-[known:EMBEDDING]-(:ModelVersion)
    WITH a, b, olds, count(known) AS models
    WITH collect(a) AS items, collect(b) AS targets, collect(olds) AS replaced, collect(models > 0) AS changes
"""
        + bump_catalogue_if(
            "changes", {"items": "a", "targets": "b", "replaced": "olds", "changes": "changed"}, at="$at"
        )
        + f"""
    FOREACH (o IN olds | DELETE o)
    MERGE (a)-[:{rel.value}]->(b)
    SET {stamp_changed("a", "changed", at="$at")}
    """,
        rows=[{"item_id": "B0001", key: "Olay" if replacing else "Lips"}],
        at=1700000000000,
    )


# An item has one brand: the brand an import gives replaces the one an earlier import (or an event)
# linked, as the catalogue API's does, instead of adding a second.
LINK_ITEM_BRANDS = _item_fact_link(Rel.MADE_BY, Label.BRAND, "brand_id", replacing=True)
# Categories are added: a category an item did not have yet changes its facts.
LINK_ITEM_CATEGORIES = _item_fact_link(Rel.IN_CATEGORY, Label.CATEGORY, "category_id", replacing=False)
# A link that would close a loop is not written (the importer refuses such files first; this
# holds against a concurrent writer, as the catalogue's path links do). As for the API's writes,
# the batch first locks the tree and checks that the links above $tree_ids are still those its
# importer read, or its own ($tree_links: kgrec.importer.link_category_parents), else refuses the
# batch whole (TREE_UNCHANGED): on Neo4j an import and an API write could otherwise each add half
# of a loop. A new link changes the
# tree above every item under its child: when the graph has a model version, one of those items
# (the least id) is stamped, and serving reads the link with that item's categories and lays it
# over the whole tree. (Any item carries the link, so none is checked for an EMBEDDING: looking
# for one a model knows scanned the child's items with a pattern each, 1 s for Amazon Beauty's
# 248 links against 20 ms.)
LINK_CATEGORY_PARENTS = write(
    "link_category_subcategory_of_category",
    TREE_UNCHANGED
    + """
    OPTIONAL MATCH (m:ModelVersion)
    WITH count(m) > 0 AS served
    UNWIND $rows AS r
    MATCH (a:Category {id: r.child_id})
    MATCH (b:Category {id: r.parent_id})
    WHERE NOT (b)-[:SUBCATEGORY_OF*0..]->(a)
    OPTIONAL MATCH (a)-[held:SUBCATEGORY_OF]->(b)
    WITH served, a, b, held
    WHERE held IS NULL
    OPTIONAL MATCH (a)<-[:IN_CATEGORY]-(i:Item)
    WITH served, a, b, min(i.id) AS least
    WITH a, b, CASE WHEN served AND least IS NOT NULL THEN least ELSE '' END AS witness
    WITH collect(a) AS children, collect(b) AS parents, collect(witness) AS witnesses
"""
    + bump_catalogue_if(
        "[w IN witnesses | w <> '']", {"children": "a", "parents": "b", "witnesses": "witness"}, at="$at"
    )
    + """
    MERGE (a)-[:SUBCATEGORY_OF]->(b)
    WITH witness, rev
    WHERE witness <> ''
    MATCH (i:Item {id: witness})
    SET i.revision = rev.revision, i.updated_at = $at
    """,
    rows=[{"child_id": "Lips", "parent_id": "Makeup"}],
    at=1700000000000,
    tree_ids=["Lips", "Makeup"],
    tree_links=[["Lips", "Makeup"], ["Makeup", "Beauty"]],
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

# Users whose timed events exceed the bot limit in some minute (the live path flags them the same
# way); one newly flagged is stamped with its batch's time ($at, `flagged_at`), as the live path does.
FLAG_BOTS = write(
    "flag_bots",
    """
    UNWIND $ids AS user_id
    MATCH (u:User {id: user_id})
    WITH u, coalesce(u.flagged_bot, false) AS was_bot
    SET u.flagged_bot = true,
        u.flagged_at = CASE WHEN was_bot THEN u.flagged_at ELSE $at END
    """,
    ids=["A1YJEY40YUW4SE"],
    at=1700000000000,
)

# One row per (user, item) pair, already aggregated over the data set; a new pair is stamped with
# its batch's time ($at), when the graph received it (an erasure compares it with a pull's time).
SET_INTERACTIONS = write(
    "set_interactions",
    """
    UNWIND $rows AS r
    MATCH (u:User {id: r.user_id})
    MATCH (i:Item {id: r.item_id})
    MERGE (u)-[e:INTERACTED]->(i)
    ON CREATE SET e.received_at = $at
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
    at=1700000000000,
)

# The statements that take $at, their batch's time: those that write item facts and stamp what they
# change, the interactions (their receive time) and the bot flags (when a user was flagged).
BATCH_TIMED = (
    UPSERT_ITEMS,
    LINK_ITEM_BRANDS,
    LINK_ITEM_CATEGORIES,
    LINK_CATEGORY_PARENTS,
    SET_INTERACTIONS,
    FLAG_BOTS,
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
# again (every step is idempotent) instead of serving the partial graph. `first_starts`: JSON text,
# {data set: when its first import started}, for every data set imported into the graph; it holds
# what `first_started_at` held (the first start of `dataset`), which a record kept before
# 2026-12-07 has and a start removes (kgrec.importer.first_starts still reads it on such a record).
START_IMPORT = write(
    "start_import",
    """
    MERGE (r:Revision {id: 'import'})
    ON CREATE SET r.created_at = $now
    SET r.dataset = $dataset, r.started_at = $now, r.first_starts = $first_starts,
        r.first_started_at = null, r.finished_at = null
    """,
    dataset="amazon-beauty-kg",
    now=1700000000000,
    first_starts='{"amazon-beauty-kg": 1700000000000}',
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
    RETURN r.dataset AS dataset, r.started_at AS started_at, r.finished_at AS finished_at,
           r.first_started_at AS first_started_at, r.first_starts AS first_starts
    """,
)
