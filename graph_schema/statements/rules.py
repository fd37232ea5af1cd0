"""Business rules: ``(:Rule)`` nodes, each write bumping ``(:Revision {id: 'rules'})`` atomically.

Serving processes poll the counter (``catalogue_revision`` with ``id: 'rules'``) and
read every rule again when it moved; a shop has at most a few thousand rules.
"""

from __future__ import annotations

from graph_schema.catalogue import read, write
from graph_schema.decay import decayed_weight

RULES = "rules"  # the id of the rules' Revision node

_EXAMPLE_RULE = {
    "action": "pin",
    "target_kind": "item",
    "target": "B0001",
    "relation": None,
    "position": 1,
    "factor": None,
    "condition_kind": "category",
    "condition": "Lips",
    "starts_at": 1700000000000,
    "ends_at": None,
    "surface": "both",
}

UPSERT_RULE = write(
    "upsert_rule",
    """
    MERGE (rev:Revision {id: 'rules'})
    ON CREATE SET rev.revision = 0, rev.created_at = $now
    SET rev.revision = rev.revision + 1, rev.updated_at = $now
    WITH rev
    MERGE (r:Rule {id: $id})
    ON CREATE SET r.created_at = $now
    SET r += $rule, r.updated_at = $now
    RETURN r.id AS id, r.created_at AS created_at, rev.revision AS revision
    """,
    id="r1",
    now=1700000000000,
    rule=_EXAMPLE_RULE,
)

DELETE_RULE = write(
    "delete_rule",
    """
    MATCH (r:Rule {id: $id})
    MERGE (rev:Revision {id: 'rules'})
    ON CREATE SET rev.revision = 0, rev.created_at = $now
    SET rev.revision = rev.revision + 1, rev.updated_at = $now
    WITH r, rev.revision AS revision
    DELETE r
    RETURN revision
    """,
    id="r1",
    now=1700000000000,
)

ALL_RULES = read(
    "all_rules",
    """
    MATCH (r:Rule)
    RETURN r.id AS id, r.action AS action, r.target_kind AS target_kind, r.target AS target,
           r.relation AS relation, r.position AS position, r.factor AS factor,
           r.condition_kind AS condition_kind, r.condition AS condition, r.starts_at AS starts_at,
           r.ends_at AS ends_at, r.surface AS surface, r.created_at AS created_at
    ORDER BY r.id
    """,
)

# The items with a knowledge edge ``relation`` to the node ``value`` (an entity or an item).
ATTRIBUTE_ITEMS = read(
    "attribute_items",
    """
    UNWIND $pairs AS p
    MATCH (i:Item)-[k]->(t:Entity {id: p.value})
    WHERE k.relation = p.relation
    RETURN p.relation AS relation, p.value AS value, i.id AS item_id
    UNION ALL
    UNWIND $pairs AS p
    MATCH (i:Item)-[k]->(t:Item {id: p.value})
    WHERE k.relation = p.relation
    RETURN p.relation AS relation, p.value AS value, i.id AS item_id
    """,
    pairs=[{"relation": "material", "value": "cotton"}],
)

# A user's strongest brand and category interests, decayed to $now: pin conditions read them.
# Topics (also INTERESTED_IN targets) are left out before the limit: a pin's `when.interest`
# names a brand or category, and ten strong topics must not crowd those out.
USER_INTEREST_IDS = read(
    "user_interest_ids",
    """
    MATCH (:User {id: $user_id})-[x:INTERESTED_IN]->(t)
    WHERE t:Brand OR t:Category
    WITH t, """
    + decayed_weight("x.weight", "x.weight_ts")
    + """ AS weight
    ORDER BY weight DESC, t.id
    LIMIT $limit
    RETURN t.id AS id
    """,
    user_id="A1YJEY40YUW4SE",
    now=1700000000000,
    half_life_ms=1209600000.0,
    limit=10,
)
