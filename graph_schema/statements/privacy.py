"""Erasing a user (privacy): one atomic statement.

It removes the user node with every relationship (interactions, interests,
model embeddings) and subtracts the user's interactions from the popularity
counts of every model version trained on them (the user has an embedding in it)
through ``POPULARITY_ADJUSTMENT`` relationships, which keep no trace of who was
erased, so a version promoted later (a rollback, a kept candidate) serves
without them too. Only interactions a version counted are taken off: for a full
training, those the graph had received by its ``data_until`` (when its graph was
pulled; ``created_at`` for versions that did not record it), by the edge's
``received_at`` (stamped when the edge is created; its first event's time for an
edge written before 2026-12-07), whatever times its events carry, the rule the pull
read by (:mod:`graph_schema.received`): a late event dated before the pull was
never read, an event a client clock dated after it was;
for an incremental child, those first seen by its ``data_until`` (event time), as
its counts were read (``ITEM_INTERACTION_COUNTS``). A flagged bot is left out of
what is read from the moment of the flag (``flagged_at``, when it first turned
true): a full training counted them if they were flagged after its pull
(``data_until``, or ``created_at``). An incremental child recounted its touched
items at its merge, without a user flagged by then, but carries its parent's
counts, which had them, for the others; it cannot tell which items it touched,
so it takes off as for any user once the flag's time is known: no share of an
erased user stays, and a touched item may lose one it did not have (as in the
known limit, README Operations, *Privacy*). A user flagged before
``flagged_at`` was recorded (2026-12-07) has no such time and is taken as
flagged before every version, as before: nothing is taken off for them.
The user's tags (``USED_TAG {item_id, count}``, their share of each item's ``TAGGED`` count)
are taken off those counts: an edge left at zero is deleted, and so is a ``Tag`` left with no
edge, so the user's words no longer reach topic text (``ITEM_TAGS``). Tags written before
2026-12-07 have no ``USED_TAG`` and stay (README Operations, *Privacy*).
Explanation paths are read from the graph, so no path runs through the user
afterwards.

It leaves a tombstone, ``(:Erasure {id, erased_at, cleanup_owed})``: the SHA-1 of the user id (not the id) and
the erasure's time, also when the graph has no such user yet (their first events may still be on
their way). Events and imports then leave out what the user did up to that time, so an
event that arrives late, or a data set imported again, does not bring the user back; what they
do after it is a new history. ``cleanup_owed`` (the erasure's time) marks what the caller still
has to do outside this statement (rewrite the append-only file, withdraw update plans) until it
is done, so a resend that finds no user still does it.
"""

from graph_schema.catalogue import read, write
from graph_schema.received import received_by
from graph_schema.statements.models import moved_stamp
from graph_schema.statements.topics import ABOUT_REVISION

# The ABOUT writers' lock comes first (the lock order beside ABOUT_REVISION): the statement locks
# every version the user has an embedding in (their POPULARITY_ADJUSTMENT edges, `adjusted_at`),
# and on Neo4j a switch holding that lock while writing every version would otherwise deadlock
# with it. Each shared TAGGED count the user's tags added to is read under that edge's write lock
# (write_lock set first), so another user's tag ingested meanwhile is either in what is read or
# waits for the erasure, never overwritten by it (Neo4j; FalkorDB runs writes one at a time).
ERASE_USER = write(
    "erase_user",
    ABOUT_REVISION
    + """
    SET r.write_lock = true
    WITH r
    SET r.write_lock = null
    WITH count(*) AS locked"""
    + f"""
    MERGE (gone:Erasure {{id: $erasure_id}})
    SET gone.erased_at = CASE WHEN gone.erased_at IS NULL OR gone.erased_at < $now
                              THEN $now ELSE gone.erased_at END
    WITH count(*) AS stage
    MATCH (u:User {{id: $user_id}})
    OPTIONAL MATCH (u)-[edge:INTERACTED]->(i:Item)
    WITH u, count(edge) AS interactions,
         collect({{id: i.id, first_ts: coalesce(edge.first_ts, 0), received_at: edge.received_at}}) AS seen
    OPTIONAL MATCH (u)-[x:INTERESTED_IN]->()
    WITH u, interactions, seen, count(x) AS interests
    OPTIONAL MATCH (v:ModelVersion)-[e:EMBEDDING]->(u)
    WITH u, interactions, seen, interests, count(e) AS embeddings, collect(v) AS trained
    UNWIND CASE WHEN size(trained) = 0 THEN [null] ELSE trained END AS m
    WITH u, interactions, seen, interests, embeddings, m, coalesce(m.data_until, m.created_at) AS pulled
    WITH u, interactions, interests, embeddings, m,
         [s IN seen WHERE m IS NOT NULL AND s.id IS NOT NULL
                      AND (NOT coalesce(u.flagged_bot, false)
                           OR (u.flagged_at IS NOT NULL AND (m.parent IS NOT NULL OR u.flagged_at > pulled)))
                      AND CASE WHEN m.parent IS NULL
                               THEN {received_by("s", "pulled")}
                               ELSE s.first_ts <= pulled END | s.id] AS counted
    FOREACH (item_id IN counted |
        MERGE (it:Item {{id: item_id}})
        MERGE (m)-[a:POPULARITY_ADJUSTMENT]->(it)
        ON CREATE SET a.delta = 0
        SET a.delta = a.delta - 1)
    FOREACH (version IN CASE WHEN size(counted) > 0 THEN [m] ELSE [] END |
        SET version.adjusted_at = {moved_stamp("version.adjusted_at")})
    WITH u, interactions, interests, embeddings,
         max(CASE WHEN m.active = true THEN size(counted) ELSE 0 END) AS adjusted
    OPTIONAL MATCH (u)-[ut:USED_TAG]->(g:Tag)
    OPTIONAL MATCH (:Item {{id: ut.item_id}})-[tagged:TAGGED]->(g)
    FOREACH (locked IN CASE WHEN tagged IS NULL THEN [] ELSE [tagged] END | SET locked.write_lock = true)
    WITH u, interactions, interests, embeddings, adjusted, g, tagged,
         coalesce(tagged.count, 0) - coalesce(ut.count, 0) AS remaining
    FOREACH (kept IN CASE WHEN tagged IS NOT NULL AND remaining > 0 THEN [tagged] ELSE [] END |
        SET kept.count = remaining, kept.write_lock = null)
    FOREACH (emptied IN CASE WHEN tagged IS NOT NULL AND remaining <= 0 THEN [tagged] ELSE [] END |
        DELETE emptied)
    WITH u, interactions, interests, embeddings, adjusted, collect(DISTINCT g) AS used
    DETACH DELETE u
    WITH interactions, interests, embeddings, adjusted, used
    UNWIND CASE WHEN size(used) = 0 THEN [null] ELSE used END AS g
    OPTIONAL MATCH (g)-[rest]-()
    WITH interactions, interests, embeddings, adjusted, g, count(rest) AS edges
    FOREACH (bare IN CASE WHEN g IS NOT NULL AND edges = 0 THEN [g] ELSE [] END | DELETE bare)
    WITH DISTINCT interactions, interests, embeddings, adjusted
    MATCH (gone:Erasure {{id: $erasure_id}})
    SET gone.cleanup_owed = $now
    RETURN interactions, interests, embeddings, adjusted AS popularity_adjusted
    """,
    user_id="A1YJEY40YUW4SE",
    erasure_id="ed2de8978be42d652f56fd8d3f78a4363448bf9e",
    now=1700000000000,
)

# The cleanup an erasure that deleted the user still owes (the append-only file's rewrite, the
# withdrawal of update plans naming them): the time of that erasure, if its answer never came.
ERASURE_CLEANUP_OWED = read(
    "erasure_cleanup_owed",
    """
    MATCH (gone:Erasure {id: $erasure_id})
    WHERE gone.cleanup_owed IS NOT NULL
    RETURN gone.cleanup_owed AS owed
    """,
    erasure_id="ed2de8978be42d652f56fd8d3f78a4363448bf9e",
)

# That cleanup done: cleared only if no later erasure of the user owes its own since.
ERASURE_CLEANED_UP = write(
    "erasure_cleaned_up",
    """
    MATCH (gone:Erasure {id: $erasure_id})
    WHERE gone.cleanup_owed = $owed
    SET gone.cleanup_owed = null
    RETURN count(gone) AS cleared
    """,
    erasure_id="ed2de8978be42d652f56fd8d3f78a4363448bf9e",
    owed=1700000000000,
)

# The tombstones of the users named by $ids (their erasure ids, kgrec.erasure.user_hash).
ERASURES = read(
    "erasures",
    """
    UNWIND $ids AS erasure_id
    MATCH (gone:Erasure {id: erasure_id})
    RETURN gone.id AS id, gone.erased_at AS erased_at
    """,
    ids=["ed2de8978be42d652f56fd8d3f78a4363448bf9e"],
)

# Every tombstone (a bulk import reads them once; one per erased user).
ALL_ERASURES = read(
    "all_erasures",
    """
    MATCH (gone:Erasure)
    RETURN gone.id AS id, gone.erased_at AS erased_at
    """,
)
