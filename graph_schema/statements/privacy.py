"""Erasing a user (privacy): one atomic statement.

It removes the user node with every relationship (interactions, interests,
model embeddings) and subtracts the user's interactions from the active model
version's popularity counts through ``POPULARITY_ADJUSTMENT`` relationships,
which keep no trace of who was erased. Only interactions the version was
trained on count (the user has an embedding in it; the interaction is not
newer than the version). Explanation paths are read from the graph, so no path
runs through the user afterwards.
"""

from graph_schema.catalogue import write

ERASE_USER = write(
    "erase_user",
    """
    MATCH (u:User {id: $user_id})
    OPTIONAL MATCH (m:ModelVersion {active: true})
    WITH u, m,
         CASE WHEN m IS NOT NULL AND size([(m)-[:EMBEDDING]->(u) | 1]) > 0
                   AND coalesce(u.flagged_bot, false) = false
              THEN m.created_at ELSE -1 END AS trained_until
    OPTIONAL MATCH (u)-[r:INTERACTED]->(i:Item)
    WITH u, m, count(r) AS interactions,
         collect(CASE WHEN coalesce(r.first_ts, 0) <= trained_until THEN i.id END) AS counted
    OPTIONAL MATCH (u)-[x:INTERESTED_IN]->()
    WITH u, m, interactions, counted, count(x) AS interests
    OPTIONAL MATCH (:ModelVersion)-[e:EMBEDDING]->(u)
    WITH u, m, interactions, counted, interests, count(e) AS embeddings
    FOREACH (item_id IN counted |
        MERGE (it:Item {id: item_id})
        MERGE (m)-[a:POPULARITY_ADJUSTMENT]->(it)
        ON CREATE SET a.delta = 0
        SET a.delta = a.delta - 1)
    FOREACH (version IN CASE WHEN size(counted) > 0 THEN [m] ELSE [] END | SET version.adjusted_at = $now)
    DETACH DELETE u
    RETURN interactions, interests, embeddings, size(counted) AS popularity_adjusted
    """,
    user_id="A1YJEY40YUW4SE",
    now=1700000000000,
)
