"""Scheduled retraining: is one due, and claiming it so that only one is queued.

Beat runs the check every ``KGREC_RETRAIN_CHECK_INTERVAL_S``. A retraining is due
``KGREC_RETRAIN_INTERVAL_S`` after the last one (the later of the last scheduled
request and the newest model version), or as soon as ``KGREC_RETRAIN_AFTER_EVENTS``
events were received since then, whichever comes first. Nothing is due before the
first model exists (``kgrec train`` or ``kgrec up --train`` makes it), nor while the
last scheduled job is still queued or running (for at most :func:`stale_after_ms`: twice
``KGREC_JOB_VISIBILITY_TIMEOUT_S``), nor in the
:data:`LOST_CLAIM_AFTER_MS` after a claim whose job was never sent to the broker (its claimer may
still be sending it; after that it was lost: :data:`~kgrec.job_queue.NEVER_QUEUED`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from graph_schema.statements.models import ACTIVE_VERSION
from graph_schema.statements.schedule import CLAIM_RETRAIN, EVENTS_RECEIVED_SINCE, RETRAIN_STATE
from kgrec.config import Settings
from kgrec.gateway import GraphGateway
from kgrec.job_queue import NEVER_QUEUED

UNFINISHED_STATES = frozenset({"PENDING", "RECEIVED", "STARTED", "PROGRESS", "RETRY"})
# A claimed job not sent to the broker this long after the claim never will be: the check that
# claimed it died before sending it (before or after recording it), or could not send it and could
# not put the claim back either.
LOST_CLAIM_AFTER_MS = 5 * 60_000


@dataclass(frozen=True)
class RetrainState:
    """What the check reads from the graph (and the job queue)."""

    requested_at: int | None  # the last scheduled request
    job_id: str | None  # the job it queued
    latest_version_at: int | None  # created_at of the newest model version
    versions: int
    events_since: int  # events received after since()
    job_unfinished: bool  # the queued job is still waiting or running (or not yet queued)
    job_sent: bool = True  # sent (it is, or was, queued), or its claim too young to ask the broker

    def since(self) -> int:
        """When the last retraining happened (request or version, the later), epoch ms."""
        return max(self.requested_at or 0, self.latest_version_at or 0)


def stale_after_ms(settings: Settings) -> int:
    """How long after it was queued a scheduled job still PENDING/STARTED/PROGRESS is taken as lost:
    twice the broker's visibility timeout (``KGREC_JOB_VISIBILITY_TIMEOUT_S``).

    The operator keeps that timeout above the longest training (README, "Configuration"), and a job
    that is alive is unfinished for up to twice it after it was queued: it may wait on its queue
    behind another training (up to one timeout) before running for up to one; or its worker is lost
    as a whole, and the broker hands it to another worker one timeout after it took it, which runs it
    for up to one more. A fixed 6 hours, the default timeout itself, queued a second gated training
    while the first still ran in either case, and during every training longer than 6 hours on a
    stack whose timeout was raised for them.
    """
    return round(2 * settings.job_visibility_timeout_s * 1000)


def due_reason(state: RetrainState, settings: Settings, now_ms: int) -> str | None:
    """Why a retraining is due now (``schedule`` or ``events``), or None."""
    if state.versions == 0:
        return None
    if state.job_unfinished and state.requested_at is not None:
        lost_after = stale_after_ms(settings) if state.job_sent else LOST_CLAIM_AFTER_MS
        if now_ms - state.requested_at < lost_after:
            return None
    if settings.retrain_after_events > 0 and state.events_since >= settings.retrain_after_events:
        return "events"
    if settings.retrain_interval_s > 0 and now_ms - state.since() >= settings.retrain_interval_s * 1000:
        return "schedule"
    return None


# What read_state's ``job_state`` is given: the job id, and whether to look for its message in the
# broker (kgrec.job_queue.scheduled_job_state's look_in_broker).
JobState = Callable[[str, bool], str]


def read_state(gateway: GraphGateway, job_state: JobState, now_ms: int) -> RetrainState:
    """The schedule's state at ``now_ms``; ``job_state(job id, look_in_broker)`` is the queued
    job's Celery state, or :data:`~kgrec.job_queue.NEVER_QUEUED`
    (:func:`~kgrec.job_queue.scheduled_job_state`).

    The broker is asked whether a PENDING job was ever sent only once its claim is
    :data:`LOST_CLAIM_AFTER_MS` old: before, a job sent and one not sent both hold the schedule
    (:func:`due_reason`), and the look reads every queue, each check while the job waits."""
    row = gateway.read(RETRAIN_STATE)[0]
    since = max(row["requested_at"] or 0, row["latest_version_at"] or 0)
    events = gateway.read(EVENTS_RECEIVED_SINCE, {"since": since})[0]["events"]
    job_id = row["job_id"]
    requested_at = row["requested_at"]
    old_claim = requested_at is None or now_ms - requested_at >= LOST_CLAIM_AFTER_MS
    job = job_state(job_id, old_claim) if job_id else None
    return RetrainState(
        requested_at=row["requested_at"],
        job_id=job_id,
        latest_version_at=row["latest_version_at"],
        versions=int(row["versions"]),
        events_since=int(events),
        job_unfinished=job is not None and (job in UNFINISHED_STATES or job == NEVER_QUEUED),
        job_sent=job != NEVER_QUEUED,
    )


def check_and_claim(
    gateway: GraphGateway,
    settings: Settings,
    job_state: JobState,
    enqueue: Callable[[str], None],
    now_ms: int | None = None,
) -> dict[str, object]:
    """Queue a gated retraining when one is due; returns what was decided.

    The claim is a compare-and-set on the schedule's ``requested_at``: of two checks
    that both find a retraining due, one claims it and queues the job, the other
    does nothing. ``enqueue(job id)`` queues the training under that id; when it raises, the
    claim is put back (as a compare-and-set on the claim's ``requested_at``), so the next check
    queues the retraining rather than waiting for a job that was never queued.
    """
    now = int(time.time() * 1000) if now_ms is None else now_ms
    state = read_state(gateway, job_state, now)
    reason = due_reason(state, settings, now)
    summary: dict[str, object] = {"due": reason, "events_since": state.events_since, "job_id": None}
    if reason is None:
        return summary
    job_id = f"retrain-{uuid.uuid4()}"
    expected = -1 if state.requested_at is None else state.requested_at
    claimed = gateway.write(CLAIM_RETRAIN, {"expected": expected, "now": now, "job_id": job_id})
    if not claimed.rows or claimed.rows[0]["claimed"] != 1:
        return {**summary, "due": None}
    try:
        enqueue(job_id)
    except Exception:
        # The claim statement run backwards: from this claim to the state read before it.
        gateway.write(CLAIM_RETRAIN, {"expected": now, "now": state.requested_at, "job_id": state.job_id})
        raise
    return {**summary, "job_id": job_id}


def update_kind(active_parameters: str | None, settings: Settings) -> str:
    """``incremental`` or ``full``: what the next scheduled update of the active version should be.

    Incremental while ``KGREC_INCREMENTAL_UPDATES`` is on and the active version's drift is below
    ``KGREC_INCREMENTAL_DRIFT_THRESHOLD``. The drift, recorded by each incremental version in
    ``parameters.incremental.drift``, is the number of interactions the incremental versions
    refreshed since the last full training over the number that training saw (a fully trained
    version has drift 0).
    """
    if not settings.incremental_updates:
        return "full"
    parameters = json.loads(active_parameters) if active_parameters else {}
    drift = float((parameters.get("incremental") or {}).get("drift", 0.0))
    return "incremental" if drift < settings.incremental_drift_threshold else "full"


def next_update(gateway: GraphGateway, settings: Settings) -> str:
    """:func:`update_kind` for the version active now (``full`` when none is)."""
    rows = gateway.read(ACTIVE_VERSION)
    return update_kind(rows[0]["parameters"], settings) if rows else "full"
