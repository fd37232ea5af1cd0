"""Reading the training subgraph in pages (keyset pagination on the indexed ``id``).

Flagged bots are left out here, so neither training nor popularity sees them.
"""

from graph_schema.allow_list import KNOWLEDGE_RELATIONS
from graph_schema.catalogue import read

TRAINING_USER_PAGE = read(
    "training_user_page",
    """
    MATCH (u:User)
    WHERE u.id > $after AND coalesce(u.flagged_bot, false) = false
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
    WHERE i.id > $after AND i.listed = true
    RETURN i.id AS id
    ORDER BY id
    LIMIT $limit
    """,
    after="",
    limit=5000,
)

# Each pattern comprehension needs its own variable name: FalkorDB 4.16 returns
# empty lists for later comprehensions that reuse one.
# One list of linked items per knowledge relation of the allow-list, named after the relation.
_KNOWLEDGE_LISTS = ",\n           ".join(
    f"[(i)-[:{rel}]->(k{n}:Item) WHERE k{n}.listed = true | k{n}.id] AS {name}"
    for n, (name, rel) in enumerate(KNOWLEDGE_RELATIONS.items())
)

ITEM_FACTS = read(
    "item_facts",
    f"""
    UNWIND $ids AS item_id
    MATCH (i:Item {{id: item_id}})
    RETURN item_id,
           i.title AS title,
           i.price AS price,
           [(i)-[:MADE_BY]->(b:Brand) | b.id] AS brands,
           [(i)-[:IN_CATEGORY]->(c:Category) | c.id] AS categories,
           {_KNOWLEDGE_LISTS}
    """,
    ids=["B004756YJA"],
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
