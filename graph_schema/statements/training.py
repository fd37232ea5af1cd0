"""Reading the training subgraph in pages (keyset pagination on ``id``).

Flagged bots are left out here, so neither training nor popularity sees them.

The page filters compare ``toString(x.id) > $after``, not ``x.id > $after``: FalkorDB
(4.16) answers a range on an indexed string property with a parameter from the index
alone, and wrongly. Over ids that mix cases, digits and punctuation it returns rows at or
before ``$after`` and drops rows after it (FalkorDB issues #2239, #294). A pull then
repeated a page for ever (MovieLens-100k's Freebase entities) or silently missed rows.
The function call keeps the engine off the index, so the filter is evaluated on each
row, as Neo4j does anyway; a page costs a label scan (README, Operations).
"""

from graph_schema.catalogue import read

TRAINING_USER_PAGE = read(
    "training_user_page",
    """
    MATCH (u:User)
    WHERE toString(u.id) > $after AND coalesce(u.flagged_bot, false) = false
    RETURN u.id AS id
    ORDER BY id
    LIMIT $limit
    """,
    after="",
    limit=5000,
)

INTERACTIONS_OF_USERS = read(
    "interactions_of_users",
    """
    UNWIND $ids AS user_id
    MATCH (:User {id: user_id})-[r:INTERACTED]->(i:Item)
    RETURN user_id, i.id AS item_id, r.weight AS weight, r.weight_ts AS weight_ts,
           r.last_ts AS last_ts, r.last_seq AS last_seq
    """,
    ids=["A1YJEY40YUW4SE"],
)

TRAINING_ITEM_PAGE = read(
    "training_item_page",
    """
    MATCH (i:Item)
    WHERE toString(i.id) > $after AND i.listed = true
    RETURN i.id AS id
    ORDER BY id
    LIMIT $limit
    """,
    after="",
    limit=5000,
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

TRAINING_ENTITY_PAGE = read(
    "training_entity_page",
    """
    MATCH (e:Entity)
    WHERE toString(e.id) > $after
    RETURN e.id AS id, e.kind AS kind
    ORDER BY id
    LIMIT $limit
    """,
    after="",
    limit=5000,
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
