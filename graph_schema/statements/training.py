"""Reading the training subgraph: every id of a label once, then its rows in pages of ids.

Flagged bots are left out here, so neither training nor popularity sees them.

The id statements read a whole label in one scan and the worker sorts and pages the ids
(``workers/training/subgraph.py``). Keyset pages (``WHERE x.id > $after ORDER BY x.id
LIMIT n``) were tried and dropped. FalkorDB (4.16) answers a range on an indexed string
property from the index alone, and wrongly: over ids that mix cases, digits and punctuation
it returns rows at or before ``$after`` and drops rows after it (FalkorDB issues #2239,
#294). Keeping the engine off the index (``toString(x.id) > $after``) made each page a label
scan, so a label of N nodes cost N / page-size scans: quadratic (README, Operations).
"""

from graph_schema.catalogue import read
from graph_schema.received import received_by

TRAINING_USER_IDS = read(
    "training_user_ids",
    """
    MATCH (u:User)
    WHERE u.id IS NOT NULL AND coalesce(u.flagged_bot, false) = false
    RETURN u.id AS id
    """,
)

# The first users by id, for examples (`kgrec stack`'s example request)
FIRST_USERS = read(
    "first_users",
    """
    MATCH (u:User)
    WHERE coalesce(u.flagged_bot, false) = false
    RETURN u.id AS id
    ORDER BY id
    LIMIT $limit
    """,
    limit=1,
)


def _interactions(where: str = "") -> str:
    """The rows of the users named by $ids, their INTERACTED edges kept by ``where`` (a Cypher
    WHERE clause, empty for all of them)."""
    return f"""
    UNWIND $ids AS user_id
    MATCH (:User {{id: user_id}})-[r:INTERACTED]->(i:Item){where}
    RETURN user_id, i.id AS item_id, r.weight AS weight, r.weight_ts AS weight_ts,
           r.last_ts AS last_ts, r.last_seq AS last_seq
    """


# The histories of the users named by $ids, as the graph holds them now (an incremental merge's
# partitions, which count by event time).
INTERACTIONS_OF_USERS = read(
    "interactions_of_users",
    _interactions(),
    ids=["A1YJEY40YUW4SE"],
)

# The same, for a full training's pull: only the edges the graph had received by $pulled_at (the
# version's `data_until`), by graph_schema.received's rule, the one an erasure (ERASE_USER)
# subtracts what the version counted by. The pull reads in many batches: an edge created meanwhile
# is left out, or an erasure would leave the user's count in.
INTERACTIONS_RECEIVED_BY = read(
    "interactions_received_by",
    _interactions(f"""
    WHERE {received_by("r", "$pulled_at")}"""),
    ids=["A1YJEY40YUW4SE"],
    pulled_at=1700000000000,
)

TRAINING_ITEM_IDS = read(
    "training_item_ids",
    """
    MATCH (i:Item)
    WHERE i.id IS NOT NULL AND i.listed = true
    RETURN i.id AS id
    """,
)

ITEM_FACTS = read(
    "item_facts",
    """
    UNWIND $ids AS item_id
    MATCH (i:Item {id: item_id})
    RETURN item_id,
           i.title AS title,
           i.description AS description,
           i.price AS price,
           [(i)-[:MADE_BY]->(b:Brand) | b.id] AS brands,
           [(i)-[:IN_CATEGORY]->(c:Category) | c.id] AS categories
    """,
    ids=["B004756YJA"],
)

TRAINING_ENTITY_IDS = read(
    "training_entity_ids",
    """
    MATCH (e:Entity)
    WHERE e.id IS NOT NULL
    RETURN e.id AS id, e.kind AS kind
    """,
)

# Every knowledge edge out of a page of items, or of entities: generic, so no relation name is in
# the text (the relation property names it). labels() tells an item tail from an entity tail;
# unlisted items (co-purchase targets outside the catalogue, most of Amazon's edges) stay in the graph.
KNOWLEDGE_OF_ITEMS = read(
    "knowledge_of_items",
    """
    UNWIND $ids AS head_id
    MATCH (:Item {id: head_id})-[k]->(t)
    WHERE k.relation IS NOT NULL AND coalesce(t.listed, true) = true
    RETURN head_id AS head, k.relation AS relation, t.id AS tail, labels(t) AS tail_labels
    """,
    ids=["B004756YJA"],
)

KNOWLEDGE_OF_ENTITIES = read(
    "knowledge_of_entities",
    """
    UNWIND $ids AS head_id
    MATCH (:Entity {id: head_id})-[k]->(t)
    WHERE k.relation IS NOT NULL AND coalesce(t.listed, true) = true
    RETURN head_id AS head, k.relation AS relation, t.id AS tail, labels(t) AS tail_labels
    """,
    ids=["m.0jzc"],
)

CATEGORY_NAMES = read(
    "category_names",
    """
    MATCH (c:Category)
    RETURN c.id AS id, c.name AS name
    """,
)

CATEGORY_TREE = read(
    "category_tree",
    """
    MATCH (c:Category)-[:SUBCATEGORY_OF]->(p:Category)
    RETURN c.id AS child, p.id AS parent
    """,
)
