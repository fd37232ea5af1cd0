"""Scheduled retraining: when beat last asked for one, and how many events arrived since.

``(:Schedule {id: 'retrain'})`` holds ``requested_at`` and the ``job_id`` of the
training it queued. CLAIM_RETRAIN is a compare-and-set on ``requested_at``, so
two checks running at once queue one training, never two.
"""

from graph_schema.catalogue import read, write

RETRAIN_STATE = read(
    "retrain_state",
    """
    OPTIONAL MATCH (s:Schedule {id: 'retrain'})
    OPTIONAL MATCH (m:ModelVersion)
    RETURN s.requested_at AS requested_at, s.job_id AS job_id,
           max(m.created_at) AS latest_version_at, count(m) AS versions
    """,
)

# Event ids are kept for the retention window with the time they were received (indexed).
EVENTS_RECEIVED_SINCE = read(
    "events_received_since",
    """
    MATCH (e:Event)
    WHERE e.received_at > $since
    RETURN count(e) AS events
    """,
    since=1700000000000,
)

# The write lock comes first: Neo4j reads committed data without locking, so two checks could
# both read the old requested_at and both claim.
CLAIM_RETRAIN = write(
    "claim_retrain",
    """
    MERGE (s:Schedule {id: 'retrain'})
    SET s.write_lock = true
    WITH s, coalesce(s.requested_at, -1) = $expected AS free
    SET s.write_lock = null,
        s.requested_at = CASE WHEN free THEN $now ELSE s.requested_at END,
        s.job_id = CASE WHEN free THEN $job_id ELSE s.job_id END
    RETURN CASE WHEN free THEN 1 ELSE 0 END AS claimed
    """,
    expected=-1,
    now=1700000000000,
    job_id="retrain-1700000000000",
)
