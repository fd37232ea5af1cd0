"""Topics mined from item text: their write-back after training, and the reads that use them.

``(:Topic {id, name, keywords})`` nodes keep their id across model versions (see
``workers.training.topics``); each version links its topics with
``(:ModelVersion)-[:HAS_TOPIC {centroid, size}]->(:Topic)``, the centroid being the
topic's mean sentence embedding, against which event text is matched.
``(:Item)-[:ABOUT {score, version}]->(:Topic)`` carries the item's cosine to the
centroid and the version that wrote it. The ABOUT edges, and each Topic's ``name`` and
``keywords``, are the **active** version's: a version's own are kept on its HAS_TOPIC
edges and its topic-items file, and are written to the shared nodes when it becomes
active (:func:`kgrec.topic_items.link_topic_items`), so a candidate the gate keeps
changes nothing served, and a rollback brings its topics back. ``HAS_TOPIC.absorbs`` lists
the retired topics a version's topic absorbed (merged into it at a retrain): users' interests
in those count as interest in it while the version is active (``USER_TOPIC_ITEMS``).
"""

from graph_schema.catalogue import read, write
from graph_schema.decay import decayed_weight


def active_naming(topic: str = "t", edge: str = "naming") -> str:
    """The stage that matches the active version's HAS_TOPIC edge to the node ``topic`` as ``edge``
    (null for a topic that version does not have, or a node that is no Topic). ``topic`` and
    ``edge``: variable names (fixed statement text)."""
    return f"""
    OPTIONAL MATCH (:ModelVersion {{active: true}})-[{edge}:HAS_TOPIC]->({topic})"""


def active_name(topic: str = "t", edge: str = "naming") -> str:
    """The name of the Topic ``topic`` as the version of its HAS_TOPIC ``edge`` gave it: the version's
    own, on the edge (the shared Topic node holds the names of the last version whose topics were
    linked, which a promotion that died before its switch may have left a candidate's, and a
    rollback leaves until its relink), the Topic's for an edge written without one. With no edge
    (:func:`active_naming` found none: a topic the active version does not have), the Topic's name,
    the only one it has (a retired topic's, or a dead promotion's new topic's: the candidate's); for
    a node that is no Topic, its own ``name``."""
    return f"coalesce({edge}.name, {topic}.name)"


# The active version's edge to the Topic ``t`` as ``naming``, and the name it gives ``t``.
ACTIVE_NAMING = active_naming()
ACTIVE_NAME = active_name()

# The topics of the active version, with their centroids (event ingestion matches text to these)
# and the retired topics each absorbs (training passes them on to the next version's topics).
# The name is the version's own (HAS_TOPIC's), not the shared Topic node's (ACTIVE_NAME).
ACTIVE_TOPICS = read(
    "active_topics",
    f"""
    MATCH (m:ModelVersion {{active: true}})-[naming:HAS_TOPIC]->(t:Topic)
    RETURN m.id AS version, t.id AS id, {ACTIVE_NAME} AS name, naming.centroid AS centroid,
           naming.absorbs AS absorbs
    ORDER BY id
    """,
)

# Every topic id ever written (new topics are numbered past them).
ALL_TOPIC_IDS = read(
    "all_topic_ids",
    """
    MATCH (t:Topic)
    RETURN t.id AS id
    """,
)

# Every tag with its items (training adds an item's tags to its text).
ITEM_TAGS = read(
    "item_tags",
    """
    MATCH (i:Item)-[g:TAGGED]->(t:Tag)
    RETURN i.id AS item_id, t.id AS tag, g.count AS count
    """,
)

# Review texts (the latest per user and item), for the items' text: none of a flagged bot (left
# out of training as elsewhere), newest first and then by user id, so that which few per item a
# training keeps does not depend on the graph's order (a retrain on the same graph is the same).
ITEM_REVIEWS = read(
    "item_reviews",
    """
    MATCH (u:User)-[r:INTERACTED]->(i:Item)
    WHERE r.review_text IS NOT NULL AND coalesce(u.flagged_bot, false) = false
    RETURN i.id AS item_id, r.review_text AS text
    ORDER BY i.id, coalesce(r.review_ts, 0) DESC, u.id
    """,
)

WRITE_TOPICS = write(
    "write_topics",
    """
    UNWIND $rows AS r
    MERGE (t:Topic {id: r.id})
    ON CREATE SET t.created_at = $now, t.name = r.name, t.keywords = r.keywords, t.updated_at = $now
    WITH t, r
    MATCH (m:ModelVersion {id: $version})
    MERGE (m)-[h:HAS_TOPIC]->(t)
    SET h.centroid = r.centroid, h.size = r.size, h.name = r.name, h.keywords = r.keywords,
        h.absorbs = r.absorbs
    RETURN count(*) AS written
    """,
    version="v1",
    now=1700000000000,
    rows=[
        {
            "id": "topic-1",
            "name": "lip balm",
            "keywords": ["lip", "balm"],
            "centroid": [0.6, 0.8],
            "size": 3,
            "absorbs": ["topic-7"],
        }
    ],
)

WRITE_ABOUT = write(
    "write_about",
    """
    UNWIND $rows AS r
    MATCH (i:Item {id: r.item_id})
    MATCH (t:Topic {id: r.topic_id})
    MERGE (i)-[a:ABOUT]->(t)
    SET a.score = r.score, a.version = $version
    RETURN count(*) AS written
    """,
    version="v1",
    rows=[{"item_id": "i1", "topic_id": "topic-1", "score": 0.71}],
)

# The topic-text vectors of items folded in (about_new_items), kept for a version activated later.
WRITE_ITEM_TOPIC_VECTORS = write(
    "write_item_topic_vectors",
    """
    UNWIND $rows AS r
    MATCH (i:Item {id: r.item_id})
    SET i.topic_vector = r.vector
    RETURN count(i) AS written
    """,
    rows=[{"item_id": "i1", "vector": [0.6, 0.8]}],
)

# Items folded in (a topic-text vector kept) that are ABOUT no topic: those folded in under another
# version, after a version's own ABOUT edges were written (kgrec.topic_items.link_topic_items).
UNLINKED_FOLDED_ITEMS = read(
    "unlinked_folded_items",
    """
    MATCH (i:Item)
    WHERE i.topic_vector IS NOT NULL AND NOT (i)-[:ABOUT]->(:Topic)
    RETURN i.id AS id, i.topic_vector AS vector
    """,
)

# One version's topics with their centroids (active or not).
VERSION_TOPICS = read(
    "version_topics",
    """
    MATCH (:ModelVersion {id: $version})-[h:HAS_TOPIC]->(t:Topic)
    RETURN t.id AS id, h.centroid AS centroid
    ORDER BY id
    """,
    version="v1",
)

# The ABOUT edges of the items $ids that no version in $keep wrote: deleted beside each batch of a
# version's edges, so that the bounded DELETE_STALE_ABOUT after them finds only the rest (its every
# batch scans the edges from the start again, which grows with the square of the stale edges).
DELETE_STALE_ITEM_ABOUT = write(
    "delete_stale_item_about",
    """
    UNWIND $ids AS id
    MATCH (:Item {id: id})-[a:ABOUT]->(:Topic)
    WHERE NOT a.version IN $keep
    DELETE a
    RETURN count(*) AS deleted
    """,
    ids=["i1"],
    keep=["v2"],
)

# ABOUT edges no version in $keep wrote (another version's), in bounded batches.
DELETE_STALE_ABOUT = write(
    "delete_stale_about",
    """
    MATCH (:Item)-[a:ABOUT]->(:Topic)
    WHERE NOT a.version IN $keep
    WITH a LIMIT $limit
    DELETE a
    RETURN count(*) AS deleted
    """,
    keep=["v2"],
    limit=10000,
)

# Which topic-items file the graph's ABOUT edges were last all written from: ModelVersion.about_from,
# set on the version being activated once every row of the file is written and every other
# version's edge deleted (kgrec.topic_items.link_topic_items). Activating a version with that file
# again (a re-promotion, an incremental child, a rollback within one root) then writes no edge.
ABOUT_WRITTEN = read(
    "about_written",
    """
    MATCH (m:ModelVersion)
    WHERE m.about_from = $file
    RETURN count(m) AS marked
    """,
    file="v1",
)

# The ABOUT writers' node (made, its counters at 0, when no writer ever began), whose write lock
# every statement that reads or writes the writers' state or a version's `about_from` takes first.
# Lock order (Neo4j; FalkorDB runs one write at a time): this node first, then ModelVersion nodes.
# Its lock is the first a statement takes (its first SET) when it also locks a version, and in
# every statement that may lock several versions (the switches ACTIVATE_VERSION,
# ACTIVATE_OWNED_VERSION and ACTIVATE_CHILD_VERSION write every version; FORGET_ABOUT_WRITTEN the
# marked ones), so those queue on it instead of each holding a version another one waits for: an
# owned switch locked its target, then the others, while FORGET_ABOUT_WRITTEN, holding this node,
# locked the marked versions (the target among them) in its own order. tests/test_lock_order.py.
ABOUT_REVISION = """
    MERGE (r:Revision {id: 'about'})
    ON CREATE SET r.created_at = $now, r.revision = 0, r.running = 0, r.busy_until = 0, r.updated_at = 0"""

# A writer of ABOUT edges starts: a ticket (the revision), and whether it runs alone (no other
# writer in flight, or only ones whose lease ran out: they died). A writer that did not run alone,
# or after which another started, marks nothing: the other's deletions may have taken its edges.
# The write lock comes before reading `running` (Neo4j reads committed data without locking, so
# two writers beginning at once could both see none in flight and both run "alone").
BEGIN_ABOUT_WRITE = write(
    "begin_about_write",
    """
    MERGE (r:Revision {id: 'about'})
    ON CREATE SET r.created_at = $now, r.revision = 0, r.running = 0, r.busy_until = 0
    SET r.write_lock = true
    WITH r, r.running = 0 OR r.busy_until < $now AS alone
    SET r.write_lock = null,
        r.running = CASE WHEN alone THEN 1 ELSE r.running + 1 END,
        r.busy_until = $now + $lease_ms, r.revision = r.revision + 1, r.updated_at = $now
    RETURN r.revision AS ticket, alone
    """,
    now=1700000000000,
    lease_ms=1800000,
)

# The writer's end: ``$version`` marked as holding every edge of ``$file``, when it ran alone and
# no writer started after it ($complete false: ended without a mark, as a failed write does); a
# version already marked with the file is left as it is. ``updated_at``: when the last writer began
# or ended (CLAIM_ABOUT_REPAIR waits a while after it). The write lock comes before reading
# `revision`, so on Neo4j a writer beginning meanwhile is seen.
MARK_ABOUT_WRITTEN = write(
    "mark_about_written",
    """
    MATCH (r:Revision {id: 'about'})
    SET r.write_lock = true
    WITH r, $complete AND r.revision = $ticket AS marked
    SET r.write_lock = null,
        r.running = CASE WHEN r.running > 0 THEN r.running - 1 ELSE 0 END, r.updated_at = $now
    WITH marked
    MATCH (m:ModelVersion {id: $version})
    FOREACH (_ IN CASE WHEN marked AND coalesce(m.about_from <> $file, true) THEN [1] ELSE [] END |
        SET m.about_from = $file)
    RETURN marked
    """,
    version="v2",
    file="v1",
    ticket=1,
    complete=True,
    now=1700000000000,
)

# A repair of the graph's topics (kgrec.model_versions.relink_active_topics) begins as a writer of
# ABOUT edges, alone, only when no writer is in flight (or only ones whose lease ran out: they died)
# and none began or ended within $settle_ms: a promotion switches the active version right after
# its write ends, so a write that ended that long ago with its version still inactive was cut off
# before the switch. `claimed` false: not now (and no ticket taken, so a writer in flight still
# marks). The decision is read under the write lock (on Neo4j two claims, or a claim and a
# BEGIN_ABOUT_WRITE, could otherwise both see no writer in flight) and applied through CASE, with
# no WHERE after the lock (FalkorDB 4.16 then keeps the lock property when the filter drops the row).
CLAIM_ABOUT_REPAIR = write(
    "claim_about_repair",
    ABOUT_REVISION
    + """
    SET r.write_lock = true
    WITH r, (r.running = 0 OR r.busy_until < $now)
        AND coalesce(r.updated_at, 0) <= $now - $settle_ms AS free
    SET r.write_lock = null,
        r.running = CASE WHEN free THEN 1 ELSE r.running END,
        r.busy_until = CASE WHEN free THEN $now + $lease_ms ELSE r.busy_until END,
        r.revision = CASE WHEN free THEN r.revision + 1 ELSE r.revision END,
        r.updated_at = CASE WHEN free THEN $now ELSE r.updated_at END
    RETURN free AS claimed, r.revision AS ticket
    """,
    now=1700000000000,
    lease_ms=1800000,
    settle_ms=60000,
)

# The marks naming one of $files (a version's topic-items file written again), or every mark ($files
# null: before ABOUT edges are written from a file, so that a write cut short leaves none). The
# ABOUT write lock comes before reading the marks, as for every statement that reads or writes
# them (MARK_ABOUT_WRITTEN, ACTIVATE_CHILD_VERSION): on Neo4j (read committed) a child's switch
# committing meanwhile could otherwise carry its parent's mark onto the child after the marks were
# read, and the child's mark would outlive the write it no longer describes. The node is made
# here when no writer ever began (a first training's topics).
FORGET_ABOUT_WRITTEN = write(
    "forget_about_written",
    ABOUT_REVISION
    + """
    SET r.write_lock = true
    WITH r
    SET r.write_lock = null
    WITH r
    OPTIONAL MATCH (m:ModelVersion)
    WHERE m.about_from IS NOT NULL AND ($files IS NULL OR m.about_from IN $files)
    REMOVE m.about_from
    RETURN count(m) AS forgotten
    """,
    files=["v1"],
    now=1700000000000,
)

# The version's own topic names and keywords onto the shared Topic nodes (a version written
# before HAS_TOPIC kept them leaves the nodes as they are).
NAME_VERSION_TOPICS = write(
    "name_version_topics",
    """
    MATCH (:ModelVersion {id: $version})-[h:HAS_TOPIC]->(t:Topic)
    SET t.name = coalesce(h.name, t.name), t.keywords = coalesce(h.keywords, t.keywords),
        t.updated_at = $now
    RETURN count(t) AS named
    """,
    version="v2",
    now=1700000000000,
)

# A user's strongest topic interests, decayed to now, each with its most central items. An interest
# in a topic no item is ABOUT (one the active version does not have) counts as interest in the
# active version's topic that absorbs it (HAS_TOPIC.absorbs: it merged into that one at a retrain):
# decayed weights and events summed, the latest time kept. One that no active topic absorbs is
# passed over, not counted in $topics. (The ABOUT checks are on matched nodes: FalkorDB 4.16 fails,
# "Type mismatch: expected Null but was Pointer", on a pattern over the coalesce of a node.)
USER_TOPIC_ITEMS = read(
    "user_topic_items",
    """
    MATCH (:User {id: $user_id})-[x:INTERESTED_IN]->(s:Topic)
    WITH s, """
    + decayed_weight("x.weight", "x.weight_ts")
    + """ AS weight, x.last_ts AS last_ts,
         x.count AS events
    OPTIONAL MATCH (:ModelVersion {active: true})-[h:HAS_TOPIC]->(b:Topic)
    WHERE s.id IN h.absorbs AND (b)<-[:ABOUT]-(:Item) AND NOT (s)<-[:ABOUT]-(:Item)
    WITH s, b, weight, last_ts, events
    WHERE b IS NOT NULL OR (s)<-[:ABOUT]-(:Item)
    WITH coalesce(b, s) AS t, sum(weight) AS weight, max(last_ts) AS last_ts, sum(events) AS events
    ORDER BY weight DESC LIMIT $topics
    MATCH (i:Item)-[a:ABOUT]->(t)
    WITH t, weight, last_ts, events, i, a ORDER BY a.score DESC
    WITH t, weight, last_ts, events, collect({id: i.id, title: i.title, score: a.score}) AS items"""
    + ACTIVE_NAMING
    + f"""
    RETURN t.id AS topic_id, {ACTIVE_NAME} AS name, weight, last_ts, events, items[..$items] AS items
    ORDER BY weight DESC, topic_id
    """,
    user_id="A1YJEY40YUW4SE",
    now=1700000000000,
    half_life_ms=1209600000.0,
    topics=5,
    items=10,
)


def counted_topics(carried: str = "") -> str:
    """The stage that turns one topic ``t`` into the topics whose users count as its users, one row
    each as ``counted``: ``t`` itself and, while ``t``'s version is active, the retired topics it
    absorbs (HAS_TOPIC.absorbs; retired: no item is ABOUT them). ``carried``: the variables (fixed
    statement text) the rows keep besides ``t`` and the active version's edge to it, ``naming``
    (:data:`ACTIVE_NAMING`)."""
    keep = f"t, naming, {carried}" if carried else "t, naming"
    return (
        ACTIVE_NAMING
        + f"""
    WITH {keep}, coalesce(naming.absorbs, []) AS absorbed
    OPTIONAL MATCH (s:Topic)
    WHERE s.id IN absorbed AND NOT (s)<-[:ABOUT]-(:Item)
    WITH {keep}, collect(s) AS retired
    UNWIND [t] + retired AS counted
"""
    )


# One topic with its most central items and how many users are interested in it: while its
# version is active, the users of the retired topics it absorbs count too (each user once), as
# USER_TOPIC_ITEMS and the topic audiences read them. Its name and keywords are the active
# version's (ACTIVE_NAMING), as its items are.
TOPIC_DETAIL = read(
    "topic_detail",
    """
    MATCH (t:Topic {id: $topic_id})
    OPTIONAL MATCH (i:Item)-[a:ABOUT]->(t)
    WITH t, i, a ORDER BY a.score DESC
    WITH t, collect(CASE WHEN i IS NULL THEN NULL
                         ELSE {id: i.id, title: i.title, score: a.score} END) AS items"""
    + counted_topics("items")
    + f"""
    OPTIONAL MATCH (u:User)-[:INTERESTED_IN]->(counted)
    WHERE coalesce(u.flagged_bot, false) = false
    RETURN t.id AS id, {ACTIVE_NAME} AS name, coalesce(naming.keywords, t.keywords) AS keywords,
           items[..$items] AS items, count(DISTINCT u) AS users
    """,
    topic_id="topic-1",
    items=10,
)

# A user's text vector (the decayed sum of their texts' embeddings, written by event ingestion):
# read only for a user without history who has topic interests (a searching newcomer).
USER_TEXT_VECTOR = read(
    "user_text_vector",
    """
    MATCH (u:User {id: $user_id})
    RETURN u.text_vector AS vector, u.text_vector_ts AS ts
    """,
    user_id="A1YJEY40YUW4SE",
)
