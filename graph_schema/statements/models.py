"""Model versions: write-back under a version node, one-statement activation, garbage collection.

A version's embeddings are ``(:ModelVersion)-[:EMBEDDING {vector}]->(node)``
relationships, so two versions never share a property and a reader of the
active version never sees a half-written one. ``status`` is ``writing`` until
everything is written; ACTIVATE_VERSION then flips ``active`` in one statement.
"""

from graph_schema.allow_list import Label, Rel
from graph_schema.catalogue import Statement, read, write
from graph_schema.statements.topics import ABOUT_REVISION


def moved_stamp(stamp: str, at: str = "$now") -> str:
    """``stamp`` moved to ``at``, or one past its value when that is ``at`` or later: serving
    processes reload when the stamp's value changes, and two writes in one millisecond (two
    fold-ins, erasures on two API workers) each move it."""
    return f"CASE WHEN {stamp} >= {at} THEN {stamp} + 1 ELSE {at} END"


# A job writing its version again (redelivered before it settled) starts it afresh: `writing`,
# without the popularity adjustments of the first run, whose artifact it replaces (the new one is
# counted from a new pull, and its own write-back adjusts for users erased since). Each write-back
# claims the version with a fresh `owner` token, the newest delivery taking it over from one still
# running (past the broker's visibility timeout); every later write of the write-back acts only
# for its owner, so the superseded delivery stops without undoing the newer one's work. A version
# that settled (activated, or decided on by the gate) is left as it is (`claimed` false): another
# delivery of the job published it after this one checked. The lock comes before reading the
# settled marks (Neo4j reads committed data unlocked); no WHERE drops the row after it (FalkorDB
# 4.16 then keeps the lock property), so the settled case writes nothing through FOREACH.
CREATE_VERSION = write(
    "create_model_version",
    """
    MERGE (m:ModelVersion {id: $id})
    ON CREATE SET m.created_at = $now, m.active = false
    SET m.write_lock = true
    WITH m, m.activated_at IS NULL AND m.gate_decision IS NULL AS open
    SET m.write_lock = null
    FOREACH (once IN CASE WHEN open THEN [1] ELSE [] END |
        SET m.status = 'writing', m.owner = $owner, m.parameters = $parameters, m.counts = $counts,
            m.metrics = $metrics, m.artifact = $artifact, m.data_until = $data_until)
    WITH m, open
    OPTIONAL MATCH (m)-[a:POPULARITY_ADJUSTMENT]->(:Item)
    WHERE open
    DELETE a
    RETURN DISTINCT m.id AS id, open AS claimed
    """,
    id="v1700000000000",
    owner="3f9a0c1d5e7b2468",
    now=1700000000000,
    data_until=1699999990000,
    parameters='{"dim": 64}',
    counts='{"users": 1}',
    metrics='{"ndcg@10": 0.07}',
    artifact="models/v1700000000000.npz",
)


def _embedding_statement(label: Label) -> Statement:
    # The label comes from the fixed allow-list in graph_schema.allow_list. A user's vector was
    # computed from data read at $since (a training's pull, an update's planning): a user erased
    # at or after it gets none, not even a user node that events after the erasure made again
    # (rows carry the user's erasure id, kgrec.erasure.user_hash); checked in the write itself, so
    # that no erasure commits between the check and the write. Only the version's `owner` (the
    # write-back that claimed it last) writes; `owned` tells a superseded one to stop.
    guard, example = "", {}
    if label is Label.USER:
        guard = """
        OPTIONAL MATCH (gone:Erasure {id: r.erasure_id})
        WITH m, r, gone
        WHERE gone IS NULL OR gone.erased_at < $since
        """
        example = {"since": 1700000000000, "rows": [{"id": "x", "erasure_id": "e-x", "vector": [0.1, 0.2]}]}
    return write(
        f"write_{label.value.lower()}_embeddings",
        f"""
        UNWIND $rows AS r
        MATCH (m:ModelVersion {{id: $version, owner: $owner}})
        {guard}
        MATCH (n:{label.value} {{id: r.id}})
        MERGE (m)-[e:{Rel.EMBEDDING.value}]->(n)
        SET e.vector = r.vector
        WITH collect(n.id) AS written
        OPTIONAL MATCH (o:ModelVersion {{id: $version, owner: $owner}})
        RETURN written, count(o) AS owned
        """,
        **(
            {
                "version": "v1700000000000",
                "owner": "3f9a0c1d5e7b2468",
                "rows": [{"id": "x", "vector": [0.1, 0.2]}],
            }
            | example
        ),
    )


WRITE_EMBEDDINGS = {
    label: _embedding_statement(label) for label in (Label.USER, Label.ITEM, Label.BRAND, Label.CATEGORY)
}

# The end of a write-back: `ready`, with the share of the users erased while it was written taken
# off the version's popularity counts (`erased`: item id and count), once (only while `writing`);
# only by the version's `owner` (`owned` false: another delivery took it over, nothing changes).
MARK_VERSION_READY = write(
    "mark_model_version_ready",
    (
        """
    MATCH (m:ModelVersion {id: $id})
    SET m.write_lock = true
    WITH m, coalesce(m.owner = $owner, false) AS owned
    WITH m, owned, CASE WHEN owned AND m.status = 'writing' THEN $erased ELSE [] END AS erased
    FOREACH (r IN erased |
        MERGE (it:Item {id: r.item_id})
        MERGE (m)-[a:POPULARITY_ADJUSTMENT]->(it)
        ON CREATE SET a.delta = 0
        SET a.delta = a.delta - r.count)
    SET m.write_lock = null,
        m.status = CASE WHEN owned THEN 'ready' ELSE m.status END,
        m.adjusted_at = CASE WHEN size(erased) > 0 THEN """
        + moved_stamp("m.adjusted_at")
        + """ ELSE m.adjusted_at END
    RETURN m.id AS id, owned
    """
    ),
    id="v1700000000000",
    owner="3f9a0c1d5e7b2468",
    erased=[{"item_id": "B0001", "count": 1}],
    now=1700000000000,
)


# The version `$id` and whether `$owner` owns it (`owned`), read under the version's lock (no WHERE
# follows the lock: FalkorDB 4.16 then keeps the lock property when the filter drops the row).
OWNED_VERSION = """
    MATCH (m:ModelVersion {id: $id})
    SET m.write_lock = true
    WITH m, coalesce(m.owner = $owner, false) AS owned
    SET m.write_lock = null"""

# Before a write-back writes its version's topics: the HAS_TOPIC edges already on the version go
# (those of a delivery it took the version over from, or of one that crashed), so the version
# holds only its owner's topics; only by the version's `owner` (`owned` false: nothing changes, and
# the superseded delivery writes no topics). The owner is read under the version's lock.
CLEAR_VERSION_TOPICS = write(
    "clear_model_version_topics",
    OWNED_VERSION
    + """
    WITH m, owned
    OPTIONAL MATCH (m)-[h:HAS_TOPIC]->(:Topic)
    WHERE owned
    DELETE h
    RETURN DISTINCT m.id AS id, owned
    """,
    id="v1700000000000",
    owner="3f9a0c1d5e7b2468",
)


def _activation(name: str, owned: bool) -> Statement:
    # The switch: one small statement, only for a version whose write-back finished; a job's own
    # switch (`owned`) also only while it owns the version, read under the version's lock (no WHERE
    # follows the lock: FalkorDB 4.16 then keeps the lock property when the filter drops the row).
    # It writes every version, so it takes the ABOUT writers' lock first (the lock order beside
    # ABOUT_REVISION, graph_schema/statements/topics.py).
    if not owned:
        return write(
            name,
            """
            MATCH (target:ModelVersion {id: $id, status: 'ready'})"""
            + ABOUT_REVISION
            + """
            SET r.write_lock = true
            WITH r, target
            SET r.write_lock = null
            WITH target
            MATCH (m:ModelVersion)
            SET m.active = (m.id = $id),
                m.activated_at = CASE WHEN m.id = $id THEN $now ELSE m.activated_at END
            RETURN count(DISTINCT target) AS activated
            """,
            id="v1700000000000",
            now=1700000000000,
        )
    return write(
        name,
        """
        MATCH (target:ModelVersion {id: $id})"""
        + ABOUT_REVISION
        + """
        SET r.write_lock = true, target.write_lock = true
        WITH r, target, target.status = 'ready' AND coalesce(target.owner = $owner, false) AS owned
        SET r.write_lock = null
        WITH target, owned
        MATCH (m:ModelVersion)
        SET m.write_lock = null,
            m.active = CASE WHEN owned THEN m.id = $id ELSE m.active END,
            m.activated_at = CASE WHEN owned AND m.id = $id THEN $now ELSE m.activated_at END
        RETURN count(DISTINCT CASE WHEN owned THEN target END) AS activated
        """,
        id="v1700000000000",
        owner="3f9a0c1d5e7b2468",
        now=1700000000000,
    )


ACTIVATE_VERSION = _activation("activate_model_version", owned=False)
# The training job's own switch of the version it wrote (a promotion through the API, or a job
# carrying out a promotion its dead predecessor recorded, uses ACTIVATE_VERSION).
ACTIVATE_OWNED_VERSION = _activation("activate_owned_model_version", owned=True)

ACTIVE_VERSION = read(
    "active_model_version",
    """
    MATCH (m:ModelVersion {active: true})
    RETURN m.id AS id, m.artifact AS artifact, m.created_at AS created_at,
           m.activated_at AS activated_at, m.metrics AS metrics, m.counts AS counts,
           m.parameters AS parameters, m.folded_at AS folded_at, m.adjusted_at AS adjusted_at
    """,
)

# A version's row, as MODEL_VERSIONS and ONE_MODEL_VERSION return it.
_VERSION_ROW = """
    RETURN m.id AS id, m.status AS status, m.active AS active, m.created_at AS created_at,
           m.activated_at AS activated_at, m.artifact AS artifact, m.metrics AS metrics,
           m.counts AS counts, m.gate_decision AS gate_decision, m.gate_reason AS gate_reason,
           m.gate_metrics AS gate_metrics, m.gate_at AS gate_at, m.gate_taken AS gate_taken,
           m.gate_experiment AS gate_experiment, m.parent AS parent, m.data_until AS data_until,
           m.parameters AS parameters, m.owner AS owner"""

MODEL_VERSIONS = read(
    "model_versions",
    """
    MATCH (m:ModelVersion)"""
    + _VERSION_ROW
    + """
    ORDER BY m.created_at DESC, id
    """,
)

# One version's row (none when there is no such version): a write-back checking it still owns its
# version, a redelivered job whether its version was published, read it without every other's.
ONE_MODEL_VERSION = read(
    "one_model_version",
    """
    MATCH (m:ModelVersion {id: $version})"""
    + _VERSION_ROW,
    version="v1700000000000",
)

# The promotion gate's verdict on a newly trained version (it is activated separately, by
# ACTIVATE_OWNED_VERSION, only when the verdict is 'promoted' and no hook took the candidate:
# `taken`), with the experiment a hook took it for (`experiment`, '' for none); recorded only by
# the version's `owner` (`owned`).
RECORD_GATE_DECISION = write(
    "record_gate_decision",
    OWNED_VERSION
    + """
    FOREACH (once IN CASE WHEN owned THEN [1] ELSE [] END |
        SET m.gate_decision = $decision, m.gate_reason = $reason, m.gate_metrics = $metrics,
            m.gate_at = $now, m.gate_taken = $taken, m.gate_experiment = $experiment)
    RETURN m.id AS id, owned
    """,
    id="v1700000000000",
    owner="3f9a0c1d5e7b2468",
    decision="kept",
    reason="validation NDCG@10 0.0510 is below 0.0686 (active 0.0700, tolerance 2%)",
    metrics='{"candidate": {"ndcg@10": 0.051}, "active": {"ndcg@10": 0.07}}',
    now=1700000000000,
    taken=False,
    experiment="",
)

# Garbage collection in bounded batches: embeddings (adjustments, topic links) first, then the node
# (Neo4j deletes no node that still has relationships). Only while the version's `owner` is the one
# the collection read ('' for none): a redelivery that claimed the version since (CREATE_VERSION
# merges it, a new owner) keeps it and the edges it writes.
# `active <> true`, not `{active: false}`: FalkorDB 4.16's index on ModelVersion.active finds no
# `false` once the graph was loaded from a rewritten log (seen after a kill -9), while a filter
# on the value still reads it.
DELETE_VERSION_EMBEDDINGS = write(
    "delete_model_version_embeddings",
    """
    MATCH (m:ModelVersion {id: $id})-[e:EMBEDDING|POPULARITY_ADJUSTMENT|HAS_TOPIC]->()
    WHERE m.active <> true AND coalesce(m.owner, '') = $owner
    WITH e LIMIT $limit
    DELETE e
    RETURN count(*) AS deleted
    """,
    id="v1700000000000",
    limit=10000,
    owner="",
)

DELETE_VERSION = write(
    "delete_model_version",
    """
    MATCH (m:ModelVersion {id: $id})
    WHERE m.active <> true AND coalesce(m.owner, '') = $owner
      AND NOT (m)-[:EMBEDDING|POPULARITY_ADJUSTMENT|HAS_TOPIC]->()
    DELETE m
    RETURN count(*) AS deleted
    """,
    id="v1700000000000",
    owner="",
)

# Items created after training get an embedding under the active version
# (folded in from their text, brand and categories); `folded_at` on the version
# tells serving processes to reload the folded items. `folded_version` (the version's id, indexed)
# lets FOLDED_ITEMS find a version's folded edges without walking all of its embeddings.
# An item the version was trained on keeps its trained vector: the API asks for a fold-in against
# the model it holds, which may be the version before (up to a second, or an artifact load), and a
# folded vector would replace the trained one here and in every child the version's embeddings are
# copied to. The check is in the write, so no read before it can go stale.
WRITE_FOLDED_ITEMS = write(
    "write_folded_items",
    f"""
    MATCH (m:ModelVersion {{id: $version}})
    UNWIND $rows AS r
    MATCH (i:Item {{id: r.id}})
    OPTIONAL MATCH (m)-[held:EMBEDDING]->(i)
    WITH m, r, i, held
    WHERE held IS NULL OR held.folded_at IS NOT NULL
    MERGE (m)-[e:EMBEDDING]->(i)
    SET e.vector = r.vector, e.folded_at = $now, e.folded_version = m.id
    WITH m, count(*) AS folded
    SET m.folded_at = {moved_stamp("m.folded_at")}
    RETURN folded
    """,
    version="v1700000000000",
    rows=[{"id": "x", "vector": [0.1, 0.2]}],
    now=1700000000000,
)

# Which of $ids the version was trained on (an embedding that was not folded in): fold-in leaves them.
# From each item to its few versions, then the version by id: matching the version first made
# FalkorDB walk all of its embeddings per id (6.3 s for 1,000 ids at 20,000 embeddings; a sweep
# sends 1,000 ids every time), as in incremental.py's copy.
TRAINED_ITEMS = read(
    "trained_items",
    """
    UNWIND $ids AS id
    MATCH (i:Item {id: id})<-[e:EMBEDDING]-(m:ModelVersion)
    WITH i, e, m
    WHERE m.id = $version AND e.folded_at IS NULL
    RETURN i.id AS id
    """,
    version="v1700000000000",
    ids=["x"],
)

# A version's folded items with the facts serving adds them with, in fold-in order (also the rows of
# graph_schema.bench_statements' FOLDED_ITEMS_BY_WALK, which must return the same).
FOLDED_ROWS = """
    RETURN i.id AS id, e.vector AS vector, i.price AS price,
           [(i)-[:MADE_BY]->(b:Brand) | b.id] AS brands,
           [(i)-[:IN_CATEGORY]->(c:Category) | c.id] AS categories
    ORDER BY e.folded_at, id
"""

# Through the index on EMBEDDING.folded_version (an equality, bounded by the version's folded
# items): `folded_at IS NOT NULL` walked every embedding of the version, in every serving process
# at each (re)load (README, Performance).
FOLDED_ITEMS = read(
    "folded_items",
    "MATCH (:ModelVersion {id: $version})-[e:EMBEDDING {folded_version: $version}]->(i:Item)" + FOLDED_ROWS,
    version="v1700000000000",
)

# Migration 0015's backfill, `$limit` edges per statement (kgrec.migrations.mark_folded_versions,
# run before the file's own SET, which then finds nothing left): edges folded in before
# 2026-12-07 carry only folded_at. One SET over every such edge was one write the server held
# every other client back for, on a graph of many folded items.
MARK_FOLDED_VERSIONS = write(
    "mark_folded_versions",
    """
    MATCH (m:ModelVersion)-[e:EMBEDDING]->(:Item)
    WHERE e.folded_at IS NOT NULL AND e.folded_version IS NULL
    WITH m, e
    LIMIT $limit
    SET e.folded_version = m.id
    RETURN count(*) AS marked
    """,
    limit=10_000,
)

# Listed items the active version cannot score yet (the periodic fold-in sweep): a page of ids after
# $after, so that items the sweep cannot fold in (no facts, no user with a known history) are
# stepped over rather than returned first by every sweep. `toString(i.id)` keeps the range off
# FalkorDB's index on Item.id, which answers it wrongly over ids mixing cases, digits and
# punctuation (see graph_schema/statements/training.py; 1,241 of 3,000 such items were never
# swept); the page is a scan of the listed items either way, for the NOT pattern.
ITEMS_WITHOUT_EMBEDDING = read(
    "items_without_embedding",
    """
    MATCH (m:ModelVersion {active: true})
    MATCH (i:Item {listed: true})
    WHERE toString(i.id) > $after AND NOT (m)-[:EMBEDDING]->(i)
    RETURN i.id AS id
    ORDER BY id
    LIMIT $limit
    """,
    after="",
    limit=1000,
)

# A version served besides the active one (an experiment's variant): when an erasure last adjusted it.
VERSION_ADJUSTED_AT = read(
    "model_version_adjusted_at",
    """
    MATCH (m:ModelVersion {id: $version})
    RETURN m.adjusted_at AS adjusted_at
    """,
    version="v1700000000000",
)

POPULARITY_ADJUSTMENTS = read(
    "popularity_adjustments",
    """
    MATCH (:ModelVersion {id: $version})-[a:POPULARITY_ADJUSTMENT]->(i:Item)
    RETURN i.id AS id, a.delta AS delta
    """,
    version="v1700000000000",
)
