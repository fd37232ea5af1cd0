"""Reads on the request path: one query per request, no N+1."""

from graph_schema.catalogue import read

# A user's most recent interactions (order: event time, else position in the data set).
USER_HISTORY = read(
    "user_history",
    """
    MATCH (:User {id: $user_id})-[r:INTERACTED]->(i:Item)
    RETURN i.id AS item_id, r.weight AS weight, r.weight_ts AS weight_ts,
           coalesce(r.last_ts, r.last_seq, 0) AS position, coalesce(r.n_purchase, 0) AS purchases
    ORDER BY position DESC
    LIMIT $limit
    """,
    user_id="A1YJEY40YUW4SE",
    limit=200,
)
