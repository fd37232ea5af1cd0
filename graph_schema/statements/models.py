"""Model versions: write-back under a version node, one-statement activation, garbage collection.

A version's embeddings are ``(:ModelVersion)-[:EMBEDDING {vector}]->(node)``
relationships, so two versions never share a property and a reader of the
active version never sees a half-written one. ``status`` is ``writing`` until
everything is written; ACTIVATE_VERSION then flips ``active`` in one statement.
"""

from graph_schema.allow_list import Label, Rel
from graph_schema.catalogue import Statement, read, write


def moved_stamp(stamp: str, at: str = "$now") -> str:
    """``stamp`` moved to ``at``, or one past its value when that is ``at`` or later: serving
    processes reload when the stamp's value changes, and two writes in one millisecond (two
    fold-ins, erasures on two API workers) each move it."""
    return f"CASE WHEN {stamp} >= {at} THEN {stamp} + 1 ELSE {at} END"


# A job writing its version again (redelivered before it settled) starts it afresh: `writing`,
# without the popularity adjustments of the first run, whose artifact it replaces (the new one is
# counted from a new pull, and its own write-back adjusts for users erased since). A version that
# settled (activated, or decided on by the gate) is left as it is, and no row comes back: another
# delivery of the job, running at the same time, published it after this one checked.
CREATE_VERSION = write(
    "create_model_version",
    """
    MERGE (m:ModelVersion {id: $id})
    ON CREATE SET m.created_at = $now, m.active = false
    WITH m WHERE m.activated_at IS NULL AND m.gate_decision IS NULL
    SET m.status = 'writing', m.parameters = $parameters, m.counts = $counts, m.metrics = $metrics,
        m.artifact = $artifact, m.data_until = $data_until
    WITH m
    OPTIONAL MATCH (m)-[a:POPULARITY_ADJUSTMENT]->(:Item)
    DELETE a
    RETURN DISTINCT m.id AS id
    """,
    id="v1700000000000",
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
    # that no erasure commits between the check and the write.
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
        MATCH (m:ModelVersion {{id: $version}})
        {guard}
        MATCH (n:{label.value} {{id: r.id}})
        MERGE (m)-[e:{Rel.EMBEDDING.value}]->(n)
        SET e.vector = r.vector
        RETURN collect(n.id) AS written
        """,
        **({"version": "v1700000000000", "rows": [{"id": "x", "vector": [0.1, 0.2]}]} | example),
    )


WRITE_EMBEDDINGS = {
    label: _embedding_statement(label) for label in (Label.USER, Label.ITEM, Label.BRAND, Label.CATEGORY)
}

# The end of a write-back: `ready`, with the share of the users erased while it was written taken
# off the version's popularity counts (`erased`: item id and count), once (only while `writing`).
MARK_VERSION_READY = write(
    "mark_model_version_ready",
    (
        """
    MATCH (m:ModelVersion {id: $id})
    WITH m, CASE WHEN m.status = 'writing' THEN $erased ELSE [] END AS erased
    FOREACH (r IN erased |
        MERGE (it:Item {id: r.item_id})
        MERGE (m)-[a:POPULARITY_ADJUSTMENT]->(it)
        ON CREATE SET a.delta = 0
        SET a.delta = a.delta - r.count)
    SET m.status = 'ready',
        m.adjusted_at = CASE WHEN size(erased) > 0 THEN """
        + moved_stamp("m.adjusted_at")
        + """ ELSE m.adjusted_at END
    RETURN m.id AS id
    """
    ),
    id="v1700000000000",
    erased=[{"item_id": "B0001", "count": 1}],
    now=1700000000000,
)


# The switch: one small statement, only for a version whose write-back finished.
ACTIVATE_VERSION = write(
    "activate_model_version",
    """
    MATCH (target:ModelVersion {id: $id, status: 'ready'})
    MATCH (m:ModelVersion)
    SET m.active = (m.id = $id),
        m.activated_at = CASE WHEN m.id = $id THEN $now ELSE m.activated_at END
    RETURN count(DISTINCT target) AS activated
    """,
    id="v1700000000000",
    now=1700000000000,
)

ACTIVE_VERSION = read(
    "active_model_version",
    """
    MATCH (m:ModelVersion {active: true})
    RETURN m.id AS id, m.artifact AS artifact, m.created_at AS created_at,
           m.activated_at AS activated_at, m.metrics AS metrics, m.counts AS counts,
           m.parameters AS parameters, m.folded_at AS folded_at, m.adjusted_at AS adjusted_at
    """,
)

MODEL_VERSIONS = read(
    "model_versions",
    """
    MATCH (m:ModelVersion)
    RETURN m.id AS id, m.status AS status, m.active AS active, m.created_at AS created_at,
           m.activated_at AS activated_at, m.artifact AS artifact, m.metrics AS metrics,
           m.counts AS counts, m.gate_decision AS gate_decision, m.gate_reason AS gate_reason,
           m.gate_metrics AS gate_metrics, m.gate_at AS gate_at, m.gate_taken AS gate_taken,
           m.parent AS parent, m.data_until AS data_until, m.parameters AS parameters
    ORDER BY m.created_at DESC, id
    """,
)

# The promotion gate's verdict on a newly trained version (it is activated separately, by
# ACTIVATE_VERSION, only when the verdict is 'promoted' and no hook took the candidate: `taken`).
RECORD_GATE_DECISION = write(
    "record_gate_decision",
    """
    MATCH (m:ModelVersion {id: $id})
    SET m.gate_decision = $decision, m.gate_reason = $reason, m.gate_metrics = $metrics, m.gate_at = $now,
        m.gate_taken = $taken
    RETURN m.id AS id
    """,
    id="v1700000000000",
    decision="kept",
    reason="validation NDCG@10 0.0510 is below 0.0686 (active 0.0700, tolerance 2%)",
    metrics='{"candidate": {"ndcg@10": 0.051}, "active": {"ndcg@10": 0.07}}',
    now=1700000000000,
    taken=False,
)

EMBEDDINGS_OF_VERSION = read(
    "embeddings_of_version",
    """
    MATCH (:ModelVersion {id: $version})-[e:EMBEDDING]->(n:Item)
    RETURN n.id AS id, e.vector AS vector
    """,
    version="v1700000000000",
)

# Garbage collection in bounded batches: embeddings (adjustments, topic links) first, then the node
# (Neo4j deletes no node that still has relationships).
# `active <> true`, not `{active: false}`: FalkorDB 4.16's index on ModelVersion.active finds no
# `false` once the graph was loaded from a rewritten log (seen after a kill -9), while a filter
# on the value still reads it.
DELETE_VERSION_EMBEDDINGS = write(
    "delete_model_version_embeddings",
    """
    MATCH (m:ModelVersion {id: $id})-[e:EMBEDDING|POPULARITY_ADJUSTMENT|HAS_TOPIC]->()
    WHERE m.active <> true
    WITH e LIMIT $limit
    DELETE e
    RETURN count(*) AS deleted
    """,
    id="v1700000000000",
    limit=10000,
)

DELETE_VERSION = write(
    "delete_model_version",
    """
    MATCH (m:ModelVersion {id: $id})
    WHERE m.active <> true AND NOT (m)-[:EMBEDDING|POPULARITY_ADJUSTMENT|HAS_TOPIC]->()
    DELETE m
    RETURN count(*) AS deleted
    """,
    id="v1700000000000",
)

# Items created after training get an embedding under the active version
# (folded in from their text, brand and categories); `folded_at` on the version
# tells serving processes to reload the folded items.
WRITE_FOLDED_ITEMS = write(
    "write_folded_items",
    f"""
    MATCH (m:ModelVersion {{id: $version}})
    UNWIND $rows AS r
    MATCH (i:Item {{id: r.id}})
    MERGE (m)-[e:EMBEDDING]->(i)
    SET e.vector = r.vector, e.folded_at = $now
    WITH m, count(*) AS folded
    SET m.folded_at = {moved_stamp("m.folded_at")}
    RETURN folded
    """,
    version="v1700000000000",
    rows=[{"id": "x", "vector": [0.1, 0.2]}],
    now=1700000000000,
)

FOLDED_ITEMS = read(
    "folded_items",
    """
    MATCH (:ModelVersion {id: $version})-[e:EMBEDDING]->(i:Item)
    WHERE e.folded_at IS NOT NULL
    RETURN i.id AS id, e.vector AS vector, i.price AS price,
           [(i)-[:MADE_BY]->(b:Brand) | b.id] AS brands,
           [(i)-[:IN_CATEGORY]->(c:Category) | c.id] AS categories
    ORDER BY e.folded_at, id
    """,
    version="v1700000000000",
)

# Listed items the active version cannot score yet (the periodic fold-in sweep), every one: the
# sweep sorts them and takes its page in Python (workers.training.item_fold_in.sweep_page). A
# keyset page here (`i.id > $after ORDER BY id LIMIT n`) is answered from FalkorDB's index on
# Item.id, which drops ids after $after when they mix cases, digits and punctuation (see
# graph_schema/statements/training.py): 1,241 of 3,000 such items were never swept.
ITEMS_WITHOUT_EMBEDDING = read(
    "items_without_embedding",
    """
    MATCH (m:ModelVersion {active: true})
    MATCH (i:Item {listed: true})
    WHERE NOT (m)-[:EMBEDDING]->(i)
    RETURN i.id AS id
    """,
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
