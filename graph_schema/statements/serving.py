"""Reads on the request path: one query per request, no N+1."""

from graph_schema.behaviours import COUNTER_PROPERTIES
from graph_schema.catalogue import read
from graph_schema.decay import decayed_weight

# Every behaviour's events on one INTERACTED edge ``r`` (exploration counts a new user's events).
_EVENTS = " + ".join(f"coalesce(r.{counter}, 0)" for counter in COUNTER_PROPERTIES)

# A user's most recent interactions (order: event time, else position in the data set).
USER_HISTORY = read(
    "user_history",
    f"""
    MATCH (:User {{id: $user_id}})-[r:INTERACTED]->(i:Item)
    RETURN i.id AS item_id, r.weight AS weight, r.weight_ts AS weight_ts,
           coalesce(r.last_ts, r.last_seq, 0) AS position, coalesce(r.n_purchase, 0) AS purchases,
           {_EVENTS} AS events
    ORDER BY position DESC, item_id DESC
    LIMIT $limit
    """,
    user_id="A1YJEY40YUW4SE",
    limit=200,
)

ITEM_EXISTS = read(
    "item_exists",
    """
    MATCH (i:Item {id: $item_id})
    RETURN i.id AS id
    """,
    item_id="B004756YJA",
)

# A user's strongest brand and category interests (decayed to $now), each with the
# items of the user's history that feed it, strongest first.
_INTEREST_BRANCH = """
    MATCH (u:User {{id: $user_id}})-[x:INTERESTED_IN]->(t:{label})
    WITH u, t, x, {weight} AS weight
    ORDER BY weight DESC, t.id
    LIMIT $limit
    OPTIONAL MATCH (u)-[r:INTERACTED]->(i:Item)-[:{rel}]->(t)
    WITH t, x, weight, i, {item_weight} AS item_weight
    ORDER BY item_weight DESC
    WITH t, x, weight, collect({{id: i.id, title: i.title, weight: item_weight}}) AS drivers
    RETURN '{label}' AS kind, t.id AS id, coalesce(t.name, t.id) AS name, weight, x.count AS events,
           x.last_ts AS last_ts, drivers[0..$items] AS drivers
"""
_DECAYED = {
    "weight": decayed_weight("x.weight", "x.weight_ts"),
    "item_weight": decayed_weight("r.weight", "r.weight_ts"),
}

USER_INTERESTS = read(
    "user_interests",
    _INTEREST_BRANCH.format(label="Brand", rel="MADE_BY", **_DECAYED)
    + "UNION ALL"
    + _INTEREST_BRANCH.format(label="Category", rel="IN_CATEGORY", **_DECAYED),
    user_id="A1YJEY40YUW4SE",
    now=1700000000000,
    half_life_ms=1209600000.0,
    limit=10,
    items=3,
)
