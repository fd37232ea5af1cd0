"""Scheduled retraining: the due rule, the one-claim check on a real graph, and beat + a real worker.

The end-to-end case runs beat and a Celery worker on the embedded Redis against a
graph of 60 real Amazon Beauty users with a trained version; five new events
(``KGREC_RETRAIN_AFTER_EVENTS=5``, the interval trigger off) make beat's check
queue a gated training, which the worker runs: a new version appears with the
gate's decision on it, and the schedule records the job.
"""

from __future__ import annotations

import socket
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from celery import Celery, states
from kombu.exceptions import OperationalError

from graph_schema.statements.schedule import CLAIM_RETRAIN
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.embedded import EmbeddedServer
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway
from kgrec.importer import import_dataset
from kgrec.job_queue import (
    NEVER_QUEUED,
    RETRAIN_IF_DUE,
    TRAIN,
    job_client,
    merge_job_id,
    record_queued,
    scheduled_job_state,
)
from kgrec.retrain_schedule import (
    LOST_CLAIM_AFTER_MS,
    RetrainState,
    check_and_claim,
    due_reason,
    stale_after_ms,
)
from kgrec_cli.stack import beat_argv, worker_argv
from tests.processes import background
from tests.subsets import amazon_beauty_subset
from workers.celery_app import make_celery
from workers.training.config import TrainConfig
from workers.training.job import run_training

NOW = 1_800_000_000_000
HOUR_MS = 3_600_000
SETTINGS = Settings(retrain_interval_s=3600, retrain_after_events=100)


def state(**changes: object) -> RetrainState:
    base = RetrainState(
        requested_at=None,
        job_id=None,
        latest_version_at=NOW - HOUR_MS + 1,
        versions=1,
        events_since=99,
        job_unfinished=False,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_due_after_the_interval_or_n_events_whichever_first() -> None:
    assert due_reason(state(), SETTINGS, NOW) is None  # 1 ms and 1 event short of both
    assert due_reason(state(), SETTINGS, NOW + 1) == "schedule"
    assert due_reason(state(events_since=100), SETTINGS, NOW) == "events"
    # the interval runs from the later of the last request and the newest version
    assert due_reason(state(requested_at=NOW - 10), SETTINGS, NOW + 1) is None
    assert due_reason(state(versions=0, latest_version_at=None, events_since=10**6), SETTINGS, NOW) is None
    # a queued or running scheduled job blocks another, until it is stale
    busy = state(requested_at=NOW - HOUR_MS, job_id="j", job_unfinished=True, events_since=500)
    assert due_reason(busy, SETTINGS, NOW) is None
    assert due_reason(busy, SETTINGS, NOW - HOUR_MS + stale_after_ms(SETTINGS) - 1) is None
    assert due_reason(busy, SETTINGS, NOW - HOUR_MS + stale_after_ms(SETTINGS)) == "events"
    # a claimed job never sent to the broker is lost sooner: its claimer died before sending it
    unqueued = replace(busy, requested_at=NOW, job_sent=False)
    assert due_reason(unqueued, SETTINGS, NOW + LOST_CLAIM_AFTER_MS - 1) is None
    assert due_reason(unqueued, SETTINGS, NOW + LOST_CLAIM_AFTER_MS) == "events"
    off = replace(SETTINGS, retrain_interval_s=0, retrain_after_events=0)
    assert due_reason(state(events_since=10**6), off, NOW + 10 * HOUR_MS) is None


def test_a_running_scheduled_job_is_waited_for_as_long_as_the_brokers_visibility_timeout_allows() -> None:
    """The staleness limit was a fixed 6 hours whatever KGREC_JOB_VISIBILITY_TIMEOUT_S said: on a stack
    whose timeout was raised above its 8-hour trainings, a second gated training was queued 6 hours
    into the first. It is twice the timeout now: a job may wait on its queue behind another training,
    or be handed to a second worker when its first is lost, one timeout after it was taken."""
    busy = state(requested_at=NOW, job_id="j", job_unfinished=True, events_since=500)
    ten_hours = replace(SETTINGS, job_visibility_timeout_s=10 * 3600.0)
    assert stale_after_ms(ten_hours) == 20 * HOUR_MS
    assert due_reason(busy, ten_hours, NOW + 8 * HOUR_MS) is None  # still training
    assert due_reason(busy, ten_hours, NOW + 20 * HOUR_MS - 1) is None  # redelivered, training again
    assert due_reason(busy, ten_hours, NOW + 20 * HOUR_MS) == "events"
    # a short timeout gives up on a lost job as much sooner: the broker would redeliver it by then
    one_hour = replace(SETTINGS, job_visibility_timeout_s=3600.0)
    assert due_reason(busy, one_hour, NOW + 2 * HOUR_MS - 1) is None
    assert due_reason(busy, one_hour, NOW + 2 * HOUR_MS) == "events"


def test_beat_schedules_the_check_only_when_a_trigger_is_on(broker_graph: tuple) -> None:
    env, _settings, _gateway = broker_graph
    on = make_celery(Settings.from_env({**env, "KGREC_RETRAIN_CHECK_INTERVAL_S": "7"}))
    assert on.conf.beat_schedule["retrain-if-due"] == {
        "task": RETRAIN_IF_DUE,
        "schedule": 7.0,
        "options": {"expires": 7.0},
    }
    off = make_celery(
        Settings.from_env({**env, "KGREC_RETRAIN_INTERVAL_S": "0", "KGREC_RETRAIN_AFTER_EVENTS": "0"})
    )
    assert "retrain-if-due" not in off.conf.beat_schedule
    assert "prune-faded-edges" in off.conf.beat_schedule


def events(prefix: str, count: int, user: str = "sched-user") -> list:
    now = int(time.time() * 1000)
    raw = [
        {
            "event_id": f"{prefix}-{k}",
            "user_id": user,
            "item_id": f"sched-item-{k}",
            "type": "view",
            "ts": now,
        }
        for k in range(count)
    ]
    validated, errors = validate_batch(raw, max_skew_s=300)
    assert errors == []
    return validated


def test_check_claims_one_retraining_and_counts_events(gateway: GraphGateway, settings: Settings) -> None:
    local = replace(settings, retrain_interval_s=0, retrain_after_events=3)
    queued: list[str] = []
    never_ran = lambda _job, _look: "PENDING"  # noqa: E731

    def check(now: int, job_state=never_ran) -> dict[str, object]:  # type: ignore[no-untyped-def]
        return check_and_claim(gateway, local, job_state, queued.append, now_ms=now)

    now = int(time.time() * 1000)
    ingest(gateway, events("a", 5), local, now_ms=now - 10)
    assert check(now) == {"due": None, "events_since": 5, "job_id": None}  # no model version yet
    gateway.run_query(
        "CREATE (:ModelVersion {id: 'v-old', status: 'ready', active: true, created_at: $t})", {"t": now - 5}
    )
    assert check(now) == {"due": None, "events_since": 0, "job_id": None}
    ingest(gateway, events("b", 3), local, now_ms=now)
    first = check(now + 1)
    assert first["due"] == "events" and first["events_since"] == 3
    assert queued == [first["job_id"]]
    # The job is queued (PENDING): nothing more is queued, whatever arrives.
    ingest(gateway, events("c", 3), local, now_ms=now + 2)
    assert check(now + 3)["job_id"] is None
    # Once it finished, events since the request count again.
    done = check(now + 4, job_state=lambda _job, _look: "SUCCESS")
    assert done["due"] == "events" and done["events_since"] == 3
    assert queued == [first["job_id"], done["job_id"]]
    schedule = gateway.run_query("MATCH (s:Schedule) RETURN s.job_id AS job, s.requested_at AS at", {})
    assert schedule == [{"job": done["job_id"], "at": now + 4}]


def test_beat_and_worker_retrain_after_n_events(
    broker_graph: tuple, shared_data: Path, tmp_path: Path
) -> None:
    env, settings, gateway = broker_graph
    subset = amazon_beauty_subset(shared_data / "amazon-beauty-kg", tmp_path / "beauty", users=60)
    import_dataset(gateway, open_dataset(str(subset), settings.datasets_dir), settings)
    run_training(gateway, settings, TrainConfig(epochs=1, use_ease=False), device="cpu", version="v-first")
    env = {
        **env,
        "KGREC_RETRAIN_AFTER_EVENTS": "5",
        "KGREC_RETRAIN_INTERVAL_S": "0",
        "KGREC_RETRAIN_CHECK_INTERVAL_S": "1",
        "OMP_NUM_THREADS": "1",
    }
    ingest(gateway, events("n", 4), settings)
    schedule = [*beat_argv(settings)[:-1], str(tmp_path / "schedule")]

    def new_versions() -> list[dict]:
        return gateway.run_query(
            "MATCH (m:ModelVersion) WHERE m.id <> 'v-first' AND m.gate_decision IS NOT NULL "
            "RETURN m.id AS id, m.gate_decision AS decision, m.gate_reason AS reason",
            {},
        )

    with (
        background(worker_argv(pool="solo"), env, tmp_path / "worker.log"),
        background(schedule, env, tmp_path / "beat.log"),
    ):
        time.sleep(8)  # four events: below the threshold, nothing is queued
        assert gateway.run_query("MATCH (s:Schedule) RETURN count(s) AS n", {}) == [{"n": 0}]
        ingest(gateway, events("m", 1), settings)  # the fifth
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and not new_versions():
            time.sleep(1)
    found = new_versions()
    logs = (tmp_path / "worker.log").read_text()[-3000:]
    assert len(found) == 1, logs
    (claim,) = gateway.run_query("MATCH (s:Schedule {id: 'retrain'}) RETURN s.job_id AS job", {})
    assert found[0]["id"] == f"job-{claim['job']}"
    # five fresh events from one new user: too few users for the gate to compare, so it stays a candidate
    assert found[0]["decision"] == "kept", found
    assert found[0]["reason"].startswith("only ")
    active = gateway.run_query("MATCH (m:ModelVersion {active: true}) RETURN m.id AS id", {})
    assert active == [{"id": "v-first"}]


def test_a_scheduled_incremental_update_runs_until_its_merge_ends(
    settings: Settings, graph_server: EmbeddedServer | None
) -> None:
    """The update task ends once it has queued its chord; the update, and so the schedule's job,
    only when the merge does: before, beat could queue another update of the same parent while
    the first one's partitions ran (two children, one of them never switched to)."""
    client = job_client(settings)
    update, training = f"retrain-{uuid.uuid4()}", f"retrain-{uuid.uuid4()}"
    merge = merge_job_id(update)
    client.backend.store_result(update, {"version": f"job-{update}", "merge_job": merge}, states.SUCCESS)
    record_queued(client, merge)
    assert scheduled_job_state(client, update) == states.PENDING
    client.backend.store_result(merge, None, "STARTED")
    assert scheduled_job_state(client, update) == "STARTED"
    client.backend.store_result(merge, {"version": f"job-{update}"}, states.SUCCESS)
    assert scheduled_job_state(client, update) == states.SUCCESS
    # a full training, or an update that found nothing to do, has no merge
    client.backend.store_result(training, {"version": f"job-{training}"}, states.SUCCESS)
    assert scheduled_job_state(client, training) == states.SUCCESS
    # an id nothing was queued under is no waiting job (Celery's own state for it is PENDING)
    assert scheduled_job_state(client, f"retrain-{uuid.uuid4()}") == NEVER_QUEUED


def schedule_row(gateway: GraphGateway) -> list[dict]:
    return gateway.run_query(
        "MATCH (s:Schedule {id: 'retrain'}) RETURN s.job_id AS job, s.requested_at AS at", {}
    )


def test_a_claim_whose_job_was_never_queued_does_not_block_retraining(
    gateway: GraphGateway, settings: Settings, graph_server: EmbeddedServer | None
) -> None:
    """A check that died after its claim committed, or whose queueing failed, left a job id no job
    was queued under; the queue reads it as PENDING, so no retraining was due for 6 hours."""
    local = replace(
        settings, retrain_interval_s=0, retrain_after_events=3, train_queue=f"idle-{uuid.uuid4()}"
    )
    client = job_client(local)
    queued: list[str] = []

    def enqueue(job_id: str) -> None:
        record_queued(client, job_id)  # as the worker's enqueue does, before sending the task
        client.send_task(TRAIN, kwargs={"gate": True}, task_id=job_id)  # to a queue no worker reads
        queued.append(job_id)

    def check(now: int, queue=enqueue) -> dict[str, object]:  # type: ignore[no-untyped-def]
        return check_and_claim(
            gateway,
            local,
            lambda job, look: scheduled_job_state(client, job, look_in_broker=look),
            queue,
            now_ms=now,
        )

    now = int(time.time() * 1000)
    gateway.run_query(
        "CREATE (:ModelVersion {id: 'v-old', status: 'ready', active: true, created_at: $t})", {"t": now - 5}
    )
    ingest(gateway, events("lost", 3), local, now_ms=now + 1)
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = job_client(local.with_overrides(redis_url=f"redis://127.0.0.1:{port}/0"))
    # Queueing fails (its broker is down): the first claim is put back (no request yet).
    with pytest.raises(redis.ConnectionError):
        check(now, queue=lambda job_id: record_queued(down, job_id))
    assert schedule_row(gateway) == [{"job": None, "at": None}]
    # The check's first step, the claim, commits; its process dies before it queues the job.
    lost = f"retrain-{uuid.uuid4()}"
    claimed = gateway.write(CLAIM_RETRAIN, {"expected": -1, "now": now, "job_id": lost})
    assert claimed.rows == [{"claimed": 1}]
    # while its claimer may still be queueing it, nothing else is queued
    assert check(now + LOST_CLAIM_AFTER_MS - 1)["job_id"] is None
    again = check(now + LOST_CLAIM_AFTER_MS)
    assert again["due"] == "events" and queued == [again["job_id"]]
    # that one the queue knows: it is waited for, as before
    assert check(now + LOST_CLAIM_AFTER_MS + HOUR_MS)["job_id"] is None

    # Queueing fails again: the claim is put back, and the next check queues it.
    ingest(gateway, events("failed", 3), local, now_ms=now + LOST_CLAIM_AFTER_MS + 1)
    before = schedule_row(gateway)
    with pytest.raises(redis.ConnectionError):
        check(now + stale_after_ms(local) + HOUR_MS, queue=lambda job_id: record_queued(down, job_id))
    assert schedule_row(gateway) == before
    retried = check(now + stale_after_ms(local) + HOUR_MS + 1)
    assert retried["due"] == "events" and queued == [again["job_id"], retried["job_id"]]
    assert schedule_row(gateway) == [
        {"job": retried["job_id"], "at": now + stale_after_ms(local) + HOUR_MS + 1}
    ]
    with client.connection_for_write() as connection:
        connection.default_channel.queue_purge(local.train_queue)


def without_broker(client: Celery) -> Celery:
    """A client of ``client``'s result backend and queues whose broker does not answer."""
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = Celery("no-broker", set_as_current=False)
    app.conf.update(
        broker_url=f"redis://127.0.0.1:{port}/0",
        broker_transport_options={"max_retries": 0},
        result_backend=client.conf.result_backend,
        task_routes=client.conf.task_routes,
    )
    return app


def test_a_claim_whose_job_was_recorded_but_never_sent_is_lost_after_five_minutes(
    gateway: GraphGateway, settings: Settings, graph_server: EmbeddedServer | None
) -> None:
    """The check records the job (PENDING) before it sends it: a check that died between the two,
    or whose send failed and whose put-back of the claim failed too, left a PENDING record of a job
    the broker never had, which held the schedule for 6 hours. A job sent, waiting on its queue or
    reserved by a worker, is still waited for. The broker is asked only once the claim is
    LOST_CLAIM_AFTER_MS old (each check read every queue while the job was PENDING): a client whose
    broker does not answer shows which checks ask it."""
    local = replace(
        settings, retrain_interval_s=0, retrain_after_events=3, train_queue=f"idle-{uuid.uuid4()}"
    )
    client = job_client(local)
    sent: list[str] = []

    def send(job_id: str) -> None:
        record_queued(client, job_id)
        client.send_task(TRAIN, kwargs={"gate": True}, task_id=job_id)  # to a queue no worker reads
        sent.append(job_id)

    def check(now: int, app: Celery = client) -> dict[str, object]:
        def job_state(job: str, look: bool) -> str:
            return scheduled_job_state(app, job, 0.05, look_in_broker=look)

        return check_and_claim(gateway, local, job_state, send, now_ms=now)

    now = int(time.time() * 1000)
    gateway.run_query(
        "CREATE (:ModelVersion {id: 'v-old', status: 'ready', active: true, created_at: $t})", {"t": now - 5}
    )
    ingest(gateway, events("unsent", 3), local, now_ms=now + 1)
    # The claim commits, the job is recorded, and the check dies before sending it.
    unsent = f"retrain-{uuid.uuid4()}"
    claimed = gateway.write(CLAIM_RETRAIN, {"expected": -1, "now": now, "job_id": unsent})
    assert claimed.rows == [{"claimed": 1}]
    record_queued(client, unsent)
    assert scheduled_job_state(client, unsent, 0.05) == NEVER_QUEUED
    # a fresh claim: decided from the result backend alone, the broker is not asked
    no_broker = without_broker(client)
    assert check(now + LOST_CLAIM_AFTER_MS - 1, no_broker) == {"due": None, "events_since": 3, "job_id": None}
    with pytest.raises(OperationalError):  # an old one: it is
        check(now + LOST_CLAIM_AFTER_MS, no_broker)
    assert sent == []
    taken_over = check(now + LOST_CLAIM_AFTER_MS)
    assert taken_over["due"] == "events" and sent == [taken_over["job_id"]]
    # That one was sent: waiting on its queue, it holds the schedule until it is stale.
    job = str(taken_over["job_id"])
    assert scheduled_job_state(client, job, 0.05) == states.PENDING
    assert check(now + LOST_CLAIM_AFTER_MS + HOUR_MS)["job_id"] is None
    # A worker reserves it (kombu keeps it among the unacknowledged): still waited for.
    with client.connection_for_write() as connection:
        channel = connection.default_channel
        message = channel.basic_get(local.train_queue, no_ack=False)
        assert message is not None and message.headers["id"] == job
        assert scheduled_job_state(client, job, 0.05) == states.PENDING
        assert check(now + LOST_CLAIM_AFTER_MS + 2 * HOUR_MS)["job_id"] is None
        client.backend.store_result(job, None, "STARTED")
        message.ack()
    assert check(now + LOST_CLAIM_AFTER_MS + 3 * HOUR_MS)["job_id"] is None
    assert sent == [job]
