"""Incremental model versions: what changed since the active version, its 2-hop pull, the child's write-back.

An incremental version is a child of the active one (``parent``): it copies the
parent's EMBEDDING and HAS_TOPIC relationships, overwrites the rows of the
users and items touched since the parent's ``data_until`` (the newest
interaction time it has seen), and is switched to only while its parent is
still the active version (ACTIVATE_CHILD_VERSION), so a full retraining that
finished in between is never replaced by a child of the version it replaced.
"""

from graph_schema.allow_list import Label, Rel
from graph_schema.catalogue import Statement, read, write
from graph_schema.statements.topics import ABOUT_REVISION

# The active version with what an incremental update needs from it.
INCREMENTAL_PARENT = read(
    "incremental_parent",
    """
    MATCH (m:ModelVersion {active: true})
    RETURN m.id AS id, m.artifact AS artifact, m.created_at AS created_at, m.parameters AS parameters,
           m.counts AS counts, m.data_until AS data_until
    """,
)

# Interactions (user, item) whose latest event is newer than $since, bots left out.
TOUCHED_SINCE = read(
    "touched_since",
    """
    MATCH (u:User)-[r:INTERACTED]->(i:Item)
    WHERE r.last_ts > $since AND coalesce(u.flagged_bot, false) = false
    RETURN u.id AS user_id, i.id AS item_id, r.last_ts AS last_ts
    """,
    since=1700000000000,
)

# One hop out from items: every (non-bot) user who interacted with them. The bot filter is a WITH ... WHERE:
# as a WHERE of the MATCH, FalkorDB 4.16 took 600x longer (6 s for 364 items of a 60k-edge graph).
USERS_OF_ITEMS = read(
    "users_of_items",
    """
    UNWIND $ids AS item_id
    MATCH (:Item {id: item_id})<-[:INTERACTED]-(u:User)
    WITH u WHERE coalesce(u.flagged_bot, false) = false
    RETURN DISTINCT u.id AS id
    ORDER BY id
    """,
    ids=["B004756YJA"],
)

# Interactions per item (bots left out): the model's popularity count, as training counts it. Only
# those first seen by $until (the child's data_until): an erasure takes off a version's counts the
# interactions it could have read by then (ERASE_USER), no others.
ITEM_INTERACTION_COUNTS = read(
    "item_interaction_counts",
    """
    UNWIND $ids AS item_id
    MATCH (:Item {id: item_id})<-[r:INTERACTED]-(u:User)
    WITH item_id, r, u WHERE coalesce(u.flagged_bot, false) = false AND coalesce(r.first_ts, 0) <= $until
    RETURN item_id AS id, count(u) AS interactions
    """,
    ids=["B004756YJA"],
    until=1700000000000,
)

# A merge run again (killed before the switch, or redelivered while the first still runs) starts
# its child afresh, as CREATE_VERSION does: `writing`, owned by the new run's `owner` token,
# without the popularity adjustments erasures made to the first run's half-written child, whose
# artifact it replaces (the new one is counted from reads made after them). A child that settled
# (activated) is left as it is (`claimed` false); no row comes back when the parent is gone.
CREATE_CHILD_VERSION = write(
    "create_child_version",
    """
    MATCH (p:ModelVersion {id: $parent})
    MERGE (m:ModelVersion {id: $id})
    ON CREATE SET m.created_at = $now, m.active = false
    SET m.write_lock = true
    WITH p, m, m.activated_at IS NULL AND m.gate_decision IS NULL AS open
    SET m.write_lock = null
    FOREACH (once IN CASE WHEN open THEN [1] ELSE [] END |
        SET m.status = 'writing', m.owner = $owner, m.parent = p.id, m.data_until = $data_until,
            m.parameters = $parameters, m.counts = $counts, m.metrics = $metrics, m.artifact = $artifact)
    WITH m, open
    OPTIONAL MATCH (m)-[a:POPULARITY_ADJUSTMENT]->(:Item)
    WHERE open
    DELETE a
    RETURN DISTINCT m.id AS id, open AS claimed
    """,
    artifact="job-2.npz",
    parameters='{"incremental": {"depth": 1}}',
    metrics="{}",
    counts='{"users": 1}',
    data_until=1700000000000,
    now=1700000000000,
    parent="v1700000000000",
    id="job-2",
    owner="3f9a0c1d5e7b2468",
)


def _embedding_ids(label: Label) -> Statement:
    # The label comes from the fixed allow-list in graph_schema.allow_list.
    return read(
        f"{label.value.lower()}_embedding_ids",
        f"""
        MATCH (:ModelVersion {{id: $version}})-[:{Rel.EMBEDDING.value}]->(n:{label.value})
        RETURN n.id AS id
        """,
        version="v1700000000000",
    )


def _copy_embeddings(label: Label) -> Statement:
    # From each node to its few versions, then the parent by id: matching the parent first made
    # FalkorDB 4.16 walk all of its edges per id (6 s for 2,000 users; 12 ms this way). Only the
    # child's `owner` (the run of the merge that claimed it last) copies; `owned` 0 tells a
    # superseded run to stop, as WRITE_EMBEDDINGS does.
    return write(
        f"copy_{label.value.lower()}_embeddings",
        f"""
        MATCH (m:ModelVersion {{id: $id, owner: $owner}})
        UNWIND $ids AS node_id
        MATCH (n:{label.value} {{id: node_id}})<-[e:{Rel.EMBEDDING.value}]-(p:ModelVersion)
        WITH m, n, e, p WHERE p.id = $parent
        MERGE (m)-[c:{Rel.EMBEDDING.value}]->(n)
        SET c.vector = e.vector, c.folded_at = e.folded_at,
            c.folded_version = CASE WHEN e.folded_at IS NULL THEN null ELSE m.id END
        WITH count(c) AS copied
        OPTIONAL MATCH (o:ModelVersion {{id: $id, owner: $owner}})
        RETURN copied, count(o) AS owned
        """,
        parent="v1700000000000",
        id="job-2",
        owner="3f9a0c1d5e7b2468",
        ids=["x"],
    )


_LABELS = (Label.USER, Label.ITEM, Label.BRAND, Label.CATEGORY)
EMBEDDING_IDS = {label: _embedding_ids(label) for label in _LABELS}
COPY_EMBEDDINGS = {label: _copy_embeddings(label) for label in _LABELS}

# The parent's HAS_TOPIC edges onto the child, only by the child's `owner` (`owned` 0: another run
# of the merge took it over, nothing is copied).
COPY_TOPICS = write(
    "copy_version_topics",
    """
    MATCH (p:ModelVersion {id: $parent})-[h:HAS_TOPIC]->(t:Topic)
    MATCH (m:ModelVersion {id: $id, owner: $owner})
    MERGE (m)-[c:HAS_TOPIC]->(t)
    SET c.centroid = h.centroid, c.size = h.size, c.name = h.name, c.keywords = h.keywords,
        c.absorbs = h.absorbs
    WITH count(c) AS copied
    OPTIONAL MATCH (o:ModelVersion {id: $id, owner: $owner})
    RETURN copied, count(o) AS owned
    """,
    parent="v1700000000000",
    id="job-2",
    owner="3f9a0c1d5e7b2468",
)

# The child's switch: one statement, only while its parent is still the active version and only by
# the child's `owner` (`owned` 0: another run of the merge took it over). The write locks come
# before reading `active` and `owner`, so on Neo4j a full version's switch committing meanwhile is
# seen (ACTIVATE_VERSION writes every version, the parent too). No WHERE follows the lock:
# FalkorDB 4.16 then keeps the lock property when the filter drops the row.
# The switch carries the parent's `about_from` onto the child: the child has its root's topics
# and no topic-items file of its own, so the graph still holds every edge of the parent's file.
# The parent's mark is read under the ABOUT writers' lock (Revision {id: 'about'}, taken first, as
# by BEGIN_ABOUT_WRITE, MARK_ABOUT_WRITTEN and FORGET_ABOUT_WRITTEN): a write from a file removes
# every mark first (FORGET_ABOUT_WRITTEN), and on Neo4j the two must not interleave, or the
# child is marked after the marks were forgotten. Unmarked, the child would lose the mark to
# garbage collection of the parent, and beat's topic check
# (kgrec.model_versions.relink_active_topics) would then rewrite every ABOUT edge.
ACTIVATE_CHILD_VERSION = write(
    "activate_child_version",
    """
    MATCH (target:ModelVersion {id: $id, status: 'ready', parent: $parent})
    MATCH (p:ModelVersion {id: $parent})"""
    + ABOUT_REVISION
    + """
    SET r.write_lock = true, p.write_lock = true, target.write_lock = true
    WITH r, target, p.about_from AS mark, coalesce(target.owner = $owner, false) AS owned,
         p.active = true AS parent_active
    SET r.write_lock = null
    WITH target, mark, owned, owned AND parent_active AS switch
    FOREACH (_ IN CASE WHEN switch AND mark IS NOT NULL THEN [1] ELSE [] END |
        SET target.about_from = mark)
    WITH target, owned, switch
    MATCH (m:ModelVersion)
    SET m.write_lock = null,
        m.active = CASE WHEN switch THEN m.id = $id ELSE m.active END,
        m.activated_at = CASE WHEN switch AND m.id = $id THEN $now ELSE m.activated_at END
    RETURN count(DISTINCT CASE WHEN switch THEN target END) AS activated,
           count(DISTINCT CASE WHEN owned THEN target END) AS owned
    """,
    id="job-2",
    parent="v1700000000000",
    owner="3f9a0c1d5e7b2468",
    now=1700000000000,
)
