"""A real Celery worker and beat on the embedded Redis: the prune task runs and is scheduled."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kgrec.config import Settings
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway
from kgrec.job_queue import PRUNE_GRAPH, job_client
from kgrec.maintenance import prune
from kgrec_cli.stack import beat_argv, worker_argv
from tests.processes import background

DAY = 86_400_000


def seed_faded_and_fresh(gateway: GraphGateway, settings: Settings) -> None:
    now = int(time.time() * 1000)
    raw = [
        {"event_id": "faded", "user_id": "w-user", "item_id": "old", "type": "view", "ts": now - 300 * DAY},
        {"event_id": "fresh", "user_id": "w-user", "item_id": "new", "type": "view", "ts": now},
    ]
    events, errors = validate_batch(raw, max_skew_s=300)
    assert errors == []
    ingest(gateway, events, settings)


def remaining_items(gateway: GraphGateway) -> list[str]:
    rows = gateway.run_query(
        "MATCH (:User {id: 'w-user'})-[:INTERACTED]->(i) RETURN i.id AS id ORDER BY id", {}
    )
    return [r["id"] for r in rows]


def test_prune_function(gateway: GraphGateway, settings: Settings) -> None:
    seed_faded_and_fresh(gateway, settings)
    result = prune(gateway, settings)
    assert result.edges >= 1  # the faded view and its faded interests
    assert remaining_items(gateway) == ["new"]


@pytest.fixture
def worker_env(broker_graph: tuple[dict[str, str], Settings, GraphGateway]) -> tuple:
    env, _settings, gateway = broker_graph
    env = {**env, "KGREC_PRUNE_INTERVAL_S": "1"}
    return env, Settings.from_env(env), gateway


def test_worker_runs_the_prune_task(worker_env: tuple, tmp_path: Path) -> None:
    env, settings, gateway = worker_env
    seed_faded_and_fresh(gateway, settings)
    with background(worker_argv(pool="solo"), env, tmp_path / "worker.log"):
        result = job_client(settings).send_task(PRUNE_GRAPH).get(timeout=120)
    assert result["edges"] >= 1
    assert remaining_items(gateway) == ["new"]


def test_beat_schedules_pruning(worker_env: tuple, tmp_path: Path) -> None:
    env, settings, gateway = worker_env
    seed_faded_and_fresh(gateway, settings)
    schedule = [*beat_argv(settings)[:-1], str(tmp_path / "schedule")]
    with (
        background(worker_argv(pool="solo"), env, tmp_path / "worker.log"),
        background(schedule, env, tmp_path / "beat.log"),
    ):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and remaining_items(gateway) != ["new"]:
            time.sleep(0.5)
        assert remaining_items(gateway) == ["new"], (tmp_path / "beat.log").read_text()[-2000:]
