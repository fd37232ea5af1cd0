"""Pruning: the function, and the task run by a real Celery worker and scheduled by beat on the embedded Redis.

The graph is seeded on both sides of each threshold: interests (brand and category) that have faded and
ones that are fresh, and Event ids received just before and exactly at the retention boundary.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from graph_schema.behaviours import BEHAVIOUR_TABLE
from kgrec.config import Settings
from kgrec.decay import decayed
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway
from kgrec.job_queue import (
    DELIVERIES_KEY,
    MAX_DELIVERIES,
    PRUNE_GRAPH,
    TRAIN,
    WORKER_PARENT_ENV,
    WORKER_SHUTDOWN_ENV,
    celery_config,
    in_broker,
    job_client,
    job_status,
    record_queued,
)
from kgrec.maintenance import PruneResult, clear_graph, prune, user_batches
from kgrec_cli.stack import _children, all_queues, beat_argv, worker_argv
from tests.dying_tasks import KILL_ITSELF, RUN_LONG
from tests.processes import background
from workers.celery_app import retrain_schedule

DAY = 86_400_000
HOUR = 3_600_000
RETENTION_DAYS = 30
PINNED = {
    "KGREC_EVENT_RETENTION_DAYS": "30",
    "KGREC_PRUNE_WEIGHT_BELOW": "0.01",
    "KGREC_HALF_LIFE_DAYS": "14",
}

# What a prune of the seeded graph must leave, and remove.
KEPT_ITEMS = ["kept", "new", "newer"]  # "old": a view 300 days ago; "kept": a purchase (history) as old
KEPT_INTERESTS = ["Beauty", "Eyes", "FreshBrand"]  # Beauty is fed by the fresh view too
FADED_INTERESTS = ["BoughtBrand", "FadedBrand", "Lips", "Nails"]
KEPT_EVENTS = ["at-boundary", "recent"]
EXPIRED_EVENTS = ["bought", "faded"]
PRUNED = PruneResult(edges=1 + len(FADED_INTERESTS), events=len(EXPIRED_EVENTS))


def pinned(settings: Settings) -> Settings:
    """The thresholds the seed is built around, whatever the environment says."""
    return replace(
        settings, event_retention_days=RETENTION_DAYS, prune_weight_below=0.01, half_life_days=14.0
    )


def view(event_id: str, item_id: str, ts: int, kind: str = "view", **item: Any) -> dict[str, Any]:
    raw = {"event_id": event_id, "user_id": "w-user", "item_id": item_id, "type": kind, "ts": ts}
    return {**raw, "item": item} if item else raw


def seed(gateway: GraphGateway, settings: Settings, now: int, margin_ms: int = 0) -> None:
    """Faded and fresh interests; Event ids received ``margin_ms`` + 1 ms past retention, and
    ``margin_ms`` inside it (0: exactly at the boundary), as seen at ``now``."""
    boundary = now - RETENTION_DAYS * DAY

    def receive(received_at: int, *raw: dict[str, Any]) -> None:
        events, errors = validate_batch(list(raw), max_skew_s=300, now_ms=now)
        assert errors == []
        ingest(gateway, events, settings, now_ms=received_at)  # the Event nodes' received_at

    old = now - 300 * DAY  # 21 half-lives: worth under a millionth
    receive(
        boundary - margin_ms - 1,
        view("faded", "old", old, brand="FadedBrand", category=["Beauty", "Lips"]),
        view("bought", "kept", old, kind="purchase", brand="BoughtBrand", category=["Beauty", "Nails"]),
    )
    receive(
        boundary + margin_ms,
        view("at-boundary", "new", now - 20 * DAY, brand="FreshBrand", category=["Beauty", "Eyes"]),
    )
    receive(now, view("recent", "newer", now))


def state(gateway: GraphGateway) -> dict[str, list[str]]:
    """The seeded user's items and interests, and the Event ids, sorted."""

    def ids(query: str) -> list[str]:
        return [r["id"] for r in gateway.run_query(query, {})]

    return {
        "items": ids("MATCH (:User {id: 'w-user'})-[:INTERACTED]->(i) RETURN i.id AS id ORDER BY id"),
        "interests": ids("MATCH (:User {id: 'w-user'})-[:INTERESTED_IN]->(t) RETURN t.id AS id ORDER BY id"),
        "events": ids("MATCH (e:Event) RETURN e.id AS id ORDER BY id"),
    }


SEEDED = {
    "items": sorted(["old", *KEPT_ITEMS]),
    "interests": sorted(KEPT_INTERESTS + FADED_INTERESTS),
    "events": sorted(KEPT_EVENTS + EXPIRED_EVENTS),
}
AFTER_PRUNE = {"items": KEPT_ITEMS, "interests": KEPT_INTERESTS, "events": KEPT_EVENTS}


def user_edges(gateway: GraphGateway) -> int:
    return gateway.run_query("MATCH (:User)-[r]->() RETURN count(r) AS n", {})[0]["n"]


def test_prune_removes_faded_interests_and_expired_ids_at_the_boundary(
    gateway: GraphGateway, settings: Settings
) -> None:
    settings = pinned(settings)
    now = 1_760_000_000_000
    seed(gateway, settings, now)  # the two sides of retention are 1 ms apart
    assert state(gateway) == SEEDED
    edges_before = user_edges(gateway)
    result = prune(gateway, settings, now_ms=now)
    assert state(gateway) == AFTER_PRUNE
    assert result == PRUNED
    assert edges_before - user_edges(gateway) == result.edges
    assert prune(gateway, settings, now_ms=now) == PruneResult(edges=0, events=0)  # nothing left to do
    # one millisecond later, the id received exactly at the boundary has expired too
    assert prune(gateway, settings, now_ms=now + 1) == PruneResult(edges=0, events=1)
    assert state(gateway)["events"] == ["recent"]


# Ids whose orders by case, digits and punctuation differ, so batches split them anywhere.
MANY_USERS = [f"{('u', 'U', 'u-', '_', 'ü')[n % 5]}{n}" for n in range(37)]
HISTORY = [b.counter for b in BEHAVIOUR_TABLE if b.kept_when_faded]


def seed_many_users(gateway: GraphGateway, now: int, half_life_ms: float) -> None:
    """Each user 0 to 9 item edges (a quarter with history) and 0 to 3 brand interests, 0 to 14
    half-lives old: about half of them faded at ``now``."""
    rng = random.Random(11)
    items, interests = [], []
    for user in MANY_USERS:
        for n in range(rng.randrange(10)):
            history = {rng.choice(HISTORY): 1} if rng.random() < 0.25 else {}
            ts = now - int(rng.uniform(0, 14) * half_life_ms)
            items.append({"user": user, "target": f"i{n}", "ts": ts, "counts": {"n_view": 1, **history}})
        for n in range(rng.randrange(4)):
            interests.append(
                {"user": user, "target": f"b{n}", "ts": now - int(rng.uniform(0, 14) * half_life_ms)}
            )
    gateway.run_query(
        "UNWIND $rows AS row MERGE (u:User {id: row.user}) MERGE (i:Item {id: row.target}) "
        "CREATE (u)-[r:INTERACTED]->(i) SET r += row.counts, r.weight = 1.0, r.weight_ts = row.ts",
        {"rows": items},
    )
    gateway.run_query(
        "UNWIND $rows AS row MERGE (u:User {id: row.user}) MERGE (b:Brand {id: row.target}) "
        "CREATE (u)-[:INTERESTED_IN {weight: 1.0, weight_ts: row.ts}]->(b)",
        {"rows": interests},
    )
    gateway.run_query("UNWIND $ids AS id MERGE (:User {id: id})", {"ids": MANY_USERS})  # users with no edge


def user_edge_list(gateway: GraphGateway) -> list[dict[str, Any]]:
    counters = ", ".join(f"r.{c} AS {c}" for c in HISTORY)
    return gateway.run_query(
        f"MATCH (u:User)-[r:INTERACTED|INTERESTED_IN]->(t) RETURN u.id AS user, type(r) AS type, "
        f"t.id AS target, r.weight AS weight, r.weight_ts AS weight_ts, {counters}",
        {},
    )


def test_user_batches_give_every_user_once(gateway: GraphGateway) -> None:
    gateway.run_query("UNWIND $ids AS id MERGE (:User {id: id})", {"ids": MANY_USERS})
    batches = list(user_batches(gateway, 4))
    assert [len(b) for b in batches] == [4] * 9 + [1]
    assert sorted(user for batch in batches for user in batch) == sorted(MANY_USERS)


def test_a_prune_in_many_batches_deletes_exactly_the_faded_edges_without_history(
    gateway: GraphGateway, settings: Settings
) -> None:
    settings = pinned(settings)
    now = 1_760_000_000_000
    seed_many_users(gateway, now, settings.half_life_ms)
    before = user_edge_list(gateway)

    def key(edge: dict[str, Any]) -> tuple[str, str, str]:
        return edge["user"], edge["type"], edge["target"]

    faded = {
        key(e)
        for e in before
        if decayed(e["weight"], e["weight_ts"], now, settings.half_life_ms) < settings.prune_weight_below
        and not any(e[c] for c in HISTORY)
    }
    per_user = Counter(user for user, _, _ in faded)
    assert len(before) > 2 * len(faded) > 0 and max(per_user.values()) > 3  # some batch runs again
    # 4 users and at most 3 deletions a statement: ten batches, some of them run twice
    result = prune(gateway, settings, now, users=4, limit=3)
    assert sorted(key(e) for e in user_edge_list(gateway)) == sorted(
        key(e) for e in before if key(e) not in faded
    )
    assert result == PruneResult(edges=len(faded), events=0)


class PageReads:
    """The real gateway, keeping the number of rows of each read."""

    def __init__(self, gateway: GraphGateway) -> None:
        self.gateway, self.rows = gateway, []

    def read(self, statement: Any, params: Any = None) -> Any:
        rows = self.gateway.read(statement, params)
        self.rows.append(len(rows))
        return rows

    def write(self, statement: Any, params: Any = None) -> Any:
        return self.gateway.write(statement, params)


def test_user_batches_hold_one_page_of_ids_at_a_time(gateway: GraphGateway) -> None:
    """The ids were read in one statement and all held through the prune; now a page at a time."""
    gateway.run_query("UNWIND $ids AS id MERGE (:User {id: id})", {"ids": MANY_USERS})
    reads = PageReads(gateway)
    batches = list(user_batches(reads, 2, page=5))  # type: ignore[arg-type]
    assert reads.rows == [5] * 7 + [2]
    assert [len(b) for b in batches] == [2, 2, 1] * 7 + [2]
    users = [user for batch in batches for user in batch]
    assert sorted(users) == sorted(MANY_USERS) and len(users) == len(MANY_USERS)


def test_a_prune_by_small_pages_and_batches_leaves_what_one_batch_leaves(
    gateway: GraphGateway, settings: Settings
) -> None:
    settings = pinned(settings)
    now = 1_760_000_000_000
    left: list[list[str]] = []
    results = []
    for users, page in ((2, 5), (len(MANY_USERS), len(MANY_USERS) + 1)):
        clear_graph(gateway)
        seed_many_users(gateway, now, settings.half_life_ms)
        reads = PageReads(gateway)
        results.append(prune(reads, settings, now, users=users, limit=3, page=page))  # type: ignore[arg-type]
        assert max(reads.rows) <= page
        left.append(sorted(repr(sorted(e.items())) for e in user_edge_list(gateway)))
    assert results[0] == results[1] and results[0].edges > 3 * 3  # past the first pass, many batches
    assert left[0] == left[1]


@pytest.fixture
def worker_env(broker_graph: tuple[dict[str, str], Settings, GraphGateway]) -> tuple:
    env, _settings, gateway = broker_graph
    env = {**env, **PINNED, "KGREC_PRUNE_INTERVAL_S": "1"}
    return env, Settings.from_env(env), gateway


def test_worker_runs_the_prune_task(worker_env: tuple, tmp_path: Path) -> None:
    env, settings, gateway = worker_env
    # The worker reads its own clock: the ids sit an hour either side of the boundary.
    seed(gateway, settings, int(time.time() * 1000), margin_ms=HOUR)
    assert state(gateway) == SEEDED
    with background(worker_argv(pool="solo"), env, tmp_path / "worker.log"):
        result = job_client(settings).send_task(PRUNE_GRAPH).get(timeout=120)
    assert result == {"edges": PRUNED.edges, "events": PRUNED.events}
    assert state(gateway) == AFTER_PRUNE


def test_beat_schedules_pruning(worker_env: tuple, tmp_path: Path) -> None:
    env, settings, gateway = worker_env
    seed(gateway, settings, int(time.time() * 1000), margin_ms=HOUR)
    assert state(gateway) == SEEDED
    schedule = [*beat_argv(settings)[:-1], str(tmp_path / "schedule")]
    with (
        background(worker_argv(pool="solo"), env, tmp_path / "worker.log"),
        background(schedule, env, tmp_path / "beat.log"),
    ):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and state(gateway) != AFTER_PRUNE:
            time.sleep(0.5)
        assert state(gateway) == AFTER_PRUNE, (tmp_path / "beat.log").read_text()[-2000:]


def test_training_goes_to_its_own_queue_when_one_is_set(worker_env: tuple, tmp_path: Path) -> None:
    """With KGREC_TRAIN_QUEUE, a worker on the default queue leaves training to the training queue's
    workers (the compose file's GPU worker), and still runs everything else."""
    env, _settings, _gateway = worker_env
    env = {**env, "KGREC_TRAIN_QUEUE": "kgrec-train-test"}
    settings = Settings.from_env(env)
    client = job_client(settings)
    with background(worker_argv(pool="solo", queues="celery"), env, tmp_path / "cpu-worker.log"):
        client.send_task(PRUNE_GRAPH).get(timeout=120)  # the default queue's worker is up
        job = client.send_task(TRAIN, kwargs={"epochs": 1, "device": "cpu"})
        time.sleep(3)
        assert job.state == "PENDING"  # nobody on the training queue yet
        with background(
            worker_argv(pool="solo", queues="kgrec-train-test"), env, tmp_path / "gpu-worker.log"
        ):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and job.state == "PENDING":
                time.sleep(0.2)
        assert job.state != "PENDING"
    assert "kgrec-train-test" in (tmp_path / "gpu-worker.log").read_text()


def test_a_task_that_keeps_killing_its_worker_fails_after_the_limit(
    worker_env: tuple, tmp_path: Path
) -> None:
    """Celery requeues a task lost with its pool process every time: a training killed by the OOM
    killer ran for ever and its job never finished. Past MAX_DELIVERIES starts its job fails."""
    env, settings, _gateway = worker_env
    client = job_client(settings)
    job_id = f"dying-{time.time_ns()}"
    record_queued(client, job_id)
    argv = [*worker_argv(concurrency=1), "--include", "tests.dying_tasks"]
    with background(argv, env, tmp_path / "worker.log"):
        client.send_task(KILL_ITSELF, task_id=job_id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and job_status(client, job_id)["state"] != "FAILURE":
            time.sleep(0.3)
        status = job_status(client, job_id)
        log = (tmp_path / "worker.log").read_text()
        assert status["state"] == "FAILURE", log[-3000:]
        assert status["error"] == f"the worker running it died {MAX_DELIVERIES} times (out of memory?)"
        assert log.count("WorkerLostError") >= MAX_DELIVERIES
        time.sleep(2)  # acknowledged: no further delivery
        assert job_status(client, job_id)["state"] == "FAILURE"
        assert client.backend.client.get(f"{DELIVERIES_KEY}{job_id}") == str(MAX_DELIVERIES + 1).encode()


def test_a_task_handed_back_by_a_worker_shutdown_is_not_counted_as_a_death(
    worker_env: tuple, tmp_path: Path
) -> None:
    """Every start was counted, a start after a cold shutdown's hand-back too: stopping `kgrec up`
    three times during one long training failed it at its next start as out of memory."""
    env = {**worker_env[0], "KGREC_JOB_VISIBILITY_TIMEOUT_S": "604800"}  # trainings of up to a week
    settings = Settings.from_env(env)
    client = job_client(settings)
    job_id = f"long-{time.time_ns()}"
    key = f"{DELIVERIES_KEY}{job_id}"
    record_queued(client, job_id)
    argv = [*worker_argv(concurrency=1), "--include", "tests.dying_tasks"]
    try:
        with background(argv, {**env, **WORKER_SHUTDOWN_ENV}, tmp_path / "worker.log") as worker:
            client.send_task(RUN_LONG, task_id=job_id)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and client.backend.client.get(key) is None:
                time.sleep(0.2)
            assert client.backend.client.get(key) == b"1", (tmp_path / "worker.log").read_text()[-3000:]
            worker.send_signal(signal.SIGTERM)  # as kgrec up stops it: a cold shutdown
            worker.wait(60)
        log = (tmp_path / "worker.log").read_text()
        assert in_broker(client, job_id), log[-3000:]  # handed back
        assert client.backend.client.get(key) == b"0", log[-3000:]
        # Kept as long as a training may run (twice the visibility timeout), not a day as results are.
        assert client.backend.client.ttl(key) > 2 * 604800 - 60
    finally:
        client.control.purge()  # the next test's worker must not find it


@pytest.mark.parametrize("train_queue", ["celery", "gpu"])
def test_kgrec_up_gives_training_a_worker_process_of_its_own(train_queue: str, tmp_path: Path) -> None:
    """One worker on every queue ran no scheduled task while a training lasted: under `kgrec up` the
    default queue's worker takes no training, and every child sends training to the trainer's queue."""
    settings = Settings.from_env({"KGREC_DATA_DIR": str(tmp_path), "KGREC_TRAIN_QUEUE": train_queue})
    children = {child.name: child for child in _children(settings, 8000)}
    queues = {
        name: child.argv[child.argv.index("--queues") + 1].split(",")
        for name, child in children.items()
        if "--queues" in child.argv
    }
    trained_on = children["trainer"].env["KGREC_TRAIN_QUEUE"]
    assert queues == {"worker": ["celery"], "trainer": [trained_on]} and trained_on != "celery"
    assert trained_on == ("kgrec-train" if train_queue == "celery" else train_queue)
    assert {child.env["KGREC_TRAIN_QUEUE"] for child in children.values()} == {trained_on}
    for name in ("worker", "trainer"):
        assert children[name].env[WORKER_PARENT_ENV] == str(os.getpid())
    # Each its own node name: under one they shared the control queue, and a broadcast reached one.
    hostnames = [
        children[name].argv[children[name].argv.index("--hostname") + 1] for name in ("worker", "trainer")
    ]
    assert len(set(hostnames)) == 2, hostnames


@pytest.mark.parametrize("train_queue", ["celery", "gpu"])
def test_a_standalone_worker_takes_the_trainings_kgrec_up_left_queued(
    train_queue: str, tmp_path: Path
) -> None:
    """`kgrec worker` took the default queue and KGREC_TRAIN_QUEUE only: after `kgrec up`, trainings
    left on its training queue ("kgrec-train") waited for ever."""
    settings = Settings.from_env({"KGREC_DATA_DIR": str(tmp_path), "KGREC_TRAIN_QUEUE": train_queue})
    trainer = {child.name: child for child in _children(settings, 8000)}["trainer"]
    assert trainer.env["KGREC_TRAIN_QUEUE"] in all_queues(settings).split(",")
    assert {"celery", settings.train_queue} <= set(all_queues(settings).split(","))


def test_every_beat_entry_expires_after_its_interval(worker_env: tuple) -> None:
    """Ticks queued behind a training ran back to back for hours after it; now a tick not started
    within its interval is dropped (the next one comes)."""
    settings = Settings.from_env({**worker_env[0], "KGREC_RETRAIN_INTERVAL_S": "3600"})
    schedule = {**celery_config(settings)["beat_schedule"], **retrain_schedule(settings)}  # as make_celery
    assert "retrain-if-due" in schedule and len(schedule) == 5
    for name, entry in schedule.items():
        assert entry["options"]["expires"] == entry["schedule"] > 0, name
