"""``kgrec train --sync`` and ``kgrec evaluate`` through the installed console script, as a person runs them.

The serving graph holds the first 40 Amazon Beauty users (a few hundred
interactions) and the model ``kgrec train --sync`` made from it; ``kgrec
evaluate`` on the same folder must work in a scratch graph and leave the
serving graph, its versions and the artifacts folder exactly as they were.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.paired_runs import load_run
from graph_schema.statements import admin
from graph_schema.statements.models import ACTIVE_VERSION, MODEL_VERSIONS
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.embedded import EmbeddedServer
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.importer import import_dataset
from kgrec.maintenance import clear_graph
from kgrec.migrations import migrate
from kgrec.model_store import models_dir
from tests.conftest import embedded_only
from tests.subsets import amazon_beauty_subset

pytestmark = embedded_only  # the CLI finds the session's graph by data directory and graph name

KGREC = Path(sys.executable).parent / "kgrec"  # the console script `pip install` made
SUMMARY_KEYS = {
    "version",
    "counts",
    "validation",
    "weights",
    "recency_decay",
    "timings",
    "gate",  # null without --gate
    "seconds_per_epoch",
    "removed_versions",
}
EVALUATED_MODELS = {
    "kgrec",
    "ease",
    "lightgcn",
    "bprmf",
    "itemknn",
    "itemknn_recency",
    "markov",
    "copurchase",
    "popularity",
}


def kgrec(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the installed ``kgrec`` command."""
    return subprocess.run(
        [str(KGREC), *args],
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_env(settings: Settings, graph_name: str) -> dict[str, str]:
    """The environment that points the CLI at ``graph_name`` on the session's graph server."""
    return {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_GRAPH": graph_name}


@pytest.fixture(scope="module")
def subset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40 Amazon Beauty users in the kgrec layout (a folder named cli-beauty)."""
    return amazon_beauty_subset(
        shared_data / "amazon-beauty-kg", tmp_path_factory.mktemp("cli") / "cli-beauty", users=40
    )


@pytest.fixture(scope="module")
def serving_graph(
    settings: Settings, graph_server: EmbeddedServer | None, subset: Path
) -> Iterator[tuple[dict[str, str], GraphGateway]]:
    """A graph of its own holding the subset, and the CLI environment that serves it."""
    graph_name = f"cli_{uuid.uuid4().hex[:10]}"
    local = settings.with_overrides(graph_name=graph_name)
    gateway = open_gateway(local)
    migrate(gateway)
    import_dataset(gateway, open_dataset(str(subset), local.datasets_dir), local)
    try:
        yield cli_env(settings, graph_name), gateway
    finally:
        clear_graph(gateway)
        gateway.close()


@pytest.fixture(scope="module")
def trained(serving_graph: tuple[dict[str, str], GraphGateway]) -> subprocess.CompletedProcess[str]:
    """``kgrec train --sync`` on the serving graph."""
    env, _ = serving_graph
    return kgrec("train", "--sync", "--epochs", "1", "--device", "cpu", env=env)


def snapshot(gateway: GraphGateway, data_dir: Path) -> dict[str, Any]:
    """What serving depends on: counts per label and type, the versions, the artifact files."""
    return {
        "nodes": {r["label"]: r["count"] for r in gateway.read(admin.NODE_COUNTS)},
        "relationships": {r["type"]: r["count"] for r in gateway.read(admin.RELATIONSHIP_COUNTS)},
        "active": gateway.read(ACTIVE_VERSION),
        "versions": gateway.read(MODEL_VERSIONS),
        "artifacts": sorted(p.name for p in models_dir(data_dir).iterdir()),
    }


def test_train_sync_prints_its_summary_and_activates_the_version(
    trained: subprocess.CompletedProcess[str],
    serving_graph: tuple[dict[str, str], GraphGateway],
    settings: Settings,
) -> None:
    assert trained.returncode == 0, trained.stderr
    assert "Traceback" not in trained.stderr
    summary = json.loads(trained.stdout.strip().splitlines()[-1])
    assert set(summary) == SUMMARY_KEYS
    assert summary["gate"] is None  # trained and activated without the promotion gate
    assert summary["counts"]["users"] == 40
    _, gateway = serving_graph
    (active,) = gateway.read(ACTIVE_VERSION)
    assert active["id"] == summary["version"]
    assert (models_dir(settings.data_dir) / active["artifact"]).is_file()


def test_evaluate_reports_every_model_and_leaves_the_serving_graph_untouched(
    trained: subprocess.CompletedProcess[str],
    serving_graph: tuple[dict[str, str], GraphGateway],
    subset: Path,
    settings: Settings,
    tmp_path: Path,
) -> None:
    assert trained.returncode == 0, trained.stderr
    env, gateway = serving_graph
    before = snapshot(gateway, settings.data_dir)
    assert before["nodes"]["ModelVersion"] == 1 and before["nodes"]["Item"] > 0 and before["active"]

    done = kgrec(
        "evaluate",
        "--dataset",
        str(subset),
        "--protocol",
        "leave-last-out",
        "--k",
        "5,10",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--json",
        "--per-user",
        str(tmp_path / "per-user.npz"),
        env=env,
    )

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # The per-user file holds every model's per-user metrics, whose means are the reported ones.
    for name in ("kgrec", "ease"):
        users, items, per_user = load_run(tmp_path / "per-user.npz", name)
        assert users.size == items.size == report["protocol"]["test_users"]
        assert per_user["ndcg@10"].mean() == pytest.approx(report[name]["ndcg@10"])
    assert set(report) == EVALUATED_MODELS | {"confidence", "paired", "protocol"}
    for name in EVALUATED_MODELS:
        metrics = report[name]
        assert set(metrics) == {f"{m}@{k}" for m in ("recall", "ndcg", "hit") for k in (5, 10)}, name
        assert all(0.0 <= value <= 1.0 for value in metrics.values()), name
        low, high = report["confidence"][name]["ndcg@10"]
        assert low <= metrics["ndcg@10"] <= high, name
    assert set(report["paired"]) == EVALUATED_MODELS - {"kgrec"}
    assert all(0.0 <= report["paired"][name]["ndcg@10"]["p"] <= 1.0 for name in report["paired"])
    protocol = report["protocol"]
    assert set(protocol["kgrec_weights"]) and protocol["variant"] == "full"
    for name in ("lightgcn", "bprmf"):
        model = protocol["models"][name]
        assert 1 <= model["best_epoch"] <= model["epochs_run"] <= model["epoch_cap"], name
    assert protocol["models"]["ease"]["lambda"] > 0
    assert snapshot(gateway, settings.data_dir) == before


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (
            ("train", "--sync", "--epochs", "1", "--device", "cpu"),
            "the graph holds no interactions to train on",
        ),
        (
            ("evaluate", "--dataset", "no-such-dataset", "--protocol", "leave-last-out", "--device", "cpu"),
            "'no-such-dataset' is neither a built-in data set",
        ),
        (
            ("import", "movielens", "--datasets-dir", "/nonexistent-datasets"),
            "the built-in data set 'movielens' is not in /nonexistent-datasets (no folder "
            "movielens-ml-latest-small); get it with: kgrec data fetch movielens",
        ),
    ],
    ids=["train-on-an-empty-graph", "evaluate-a-missing-dataset", "import-a-built-in-not-fetched"],
)
def test_a_failure_is_one_line_without_a_traceback(
    settings: Settings, graph_server: EmbeddedServer | None, command: tuple[str, ...], reason: str
) -> None:
    graph_name = f"cli_empty_{uuid.uuid4().hex[:10]}"
    failed = kgrec(*command, env=cli_env(settings, graph_name))
    assert failed.returncode == 1
    assert "Traceback" not in failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("kgrec: error:")]
    assert len(errors) == 1, failed.stderr
    assert errors[0].startswith(f"kgrec: error: {reason}")
    assert failed.stderr.rstrip().endswith(errors[0])  # the reason is the last thing printed
    assert failed.stdout == ""


def test_worker_refuses_a_bad_queue_name_in_one_line(tmp_path: Path) -> None:
    done = kgrec("worker", "--queues", "celery,no such queue", env={"KGREC_DATA_DIR": str(tmp_path)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--queues" in done.stderr and "'no such queue'" in done.stderr
    bad_env = kgrec("worker", env={"KGREC_DATA_DIR": str(tmp_path), "KGREC_TRAIN_QUEUE": "a b"})
    assert (
        bad_env.returncode != 0
        and "KGREC_TRAIN_QUEUE" in bad_env.stderr
        and "Traceback" not in bad_env.stderr
    )


@pytest.mark.parametrize(
    "command",
    [
        ("serve", "--workers", "0"),
        ("serve", "--threads", "-1"),
        ("serve", "--port", "0"),
        ("serve", "--port", "70000"),
        ("worker", "--concurrency", "0"),
    ],
    ids=["no-workers", "negative-threads", "port-0", "port-too-high", "no-worker-processes"],
)
def test_serve_and_worker_refuse_counts_and_ports_out_of_range(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    """They were taken as they were: gunicorn or Celery then failed, or port 0 bound a random port."""
    done = kgrec(*command, env={"KGREC_DATA_DIR": str(tmp_path)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert command[1] in done.stderr and command[2] in done.stderr


def test_db_commands_refuse_an_external_neo4j_in_one_line(tmp_path: Path) -> None:
    env = {"KGREC_DATA_DIR": str(tmp_path), "NEO4J_URI": "bolt://127.0.0.1:1"}
    done = kgrec("db", "start", env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "kgrec: error: NEO4J_URI is set: kgrec does not manage an external Neo4j"
    )


@pytest.mark.parametrize("scheme", ["neo4j", "bolt"])
def test_an_unreachable_neo4j_is_reported_in_one_line_within_seconds(tmp_path: Path, scheme: str) -> None:
    """It took about 64 s of driver retries, each logged (13 lines), before the error."""
    env = {"KGREC_DATA_DIR": str(tmp_path), "NEO4J_URI": f"{scheme}://127.0.0.1:1", "REDIS_URL": ""}
    for command in (("migrate",), ("cypher", "RETURN 1")):
        done = kgrec(*command, env=env, timeout=30)
        assert done.returncode == 1
        (line,) = done.stderr.splitlines()
        assert line.startswith(f"kgrec: error: Neo4j at {scheme}://127.0.0.1:1 is not reachable: "), line


def test_worker_and_beat_without_a_broker_fail_in_one_line(tmp_path: Path) -> None:
    """Celery printed a 41-line traceback when the broker was not there or did not answer."""
    cases = [
        (
            {},
            "the embedded graph server (also the Celery broker) is not running; start it with `kgrec db start`",
        ),
        (
            {"REDIS_URL": "redis://:secret@127.0.0.1:1/0"},
            "the Celery broker (REDIS_URL, redis://:**@127.0.0.1:1/0) does not answer: ",
        ),
        ({"NEO4J_URI": "bolt://127.0.0.1:1"}, "NEO4J_URI is set but REDIS_URL is not"),
    ]
    for env, reason in cases:
        for command in ("worker", "beat"):
            done = kgrec(command, env={"KGREC_DATA_DIR": str(tmp_path), **env}, timeout=60)
            assert done.returncode == 1, done.stderr
            (line,) = done.stderr.splitlines()
            assert line.startswith(f"kgrec: error: {reason}"), line


def test_the_broker_check_takes_a_rediss_url_as_celery_does(tmp_path: Path) -> None:
    """The check pinged with its own redis-py client, which refused the ``ssl_cert_reqs=CERT_REQUIRED``
    Celery (kombu) takes: 'Invalid SSL Certificate Requirements Flag'. Now it tries to connect."""
    url = "rediss://:secret@127.0.0.1:1/0?ssl_cert_reqs=CERT_REQUIRED"
    started = time.monotonic()
    done = kgrec("beat", env={"KGREC_DATA_DIR": str(tmp_path), "REDIS_URL": url}, timeout=60)
    assert time.monotonic() - started < 15
    assert done.returncode == 1, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(
        "kgrec: error: the Celery broker (REDIS_URL, rediss://:**@127.0.0.1:1/0) does not answer: "
        "Error 111 connecting to 127.0.0.1:1"
    ), line


def test_serve_on_a_busy_port_fails_in_one_line(tmp_path: Path) -> None:
    """gunicorn logged "Connection in use" every second, then gave up with no kgrec error."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = kgrec("serve", "--port", str(port), env={"KGREC_DATA_DIR": str(tmp_path)}, timeout=60)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"kgrec: error: API port {port} on 127.0.0.1 is not free (Address already in use); "
        "stop what holds it or use --port"
    ]


def test_serve_and_up_refuse_a_bad_sentence_file_in_one_line(tmp_path: Path) -> None:
    """Only gunicorn's workers read the file: each printed a traceback and "Worker failed to boot"
    (``kgrec up`` imported and trained first, then restarted the API five times)."""
    path = tmp_path / "bad.toml"
    path.write_text('[item_entity]\norigin = "{artist}"', encoding="utf-8")
    env = {"KGREC_DATA_DIR": str(tmp_path / "var"), "KGREC_RELATION_SENTENCES": str(path)}
    for command in (("serve", "--port", "1"), ("up", "--port", "1")):
        done = kgrec(*command, env=env, timeout=60)
        assert done.returncode == 1, done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith(f"kgrec: error: {path}: relation 'origin'") and "{artist}" in line, line


def test_serve_warns_once_while_every_api_key_is_an_admin_key(tmp_path: Path) -> None:
    """Without KGREC_ADMIN_KEYS a storefront's key can erase users and promote models: said at start."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = str(held.getsockname()[1])
        env = {"KGREC_DATA_DIR": str(tmp_path), "KGREC_API_KEYS": "shop-key"}
        unscoped = kgrec("serve", "--port", port, env=env, timeout=60).stderr.splitlines()
        scoped = kgrec("serve", "--port", port, env={**env, "KGREC_ADMIN_KEYS": "ops-key"}, timeout=60)
    warnings = [line for line in unscoped if line.startswith("kgrec: warning: ")]
    assert len(warnings) == 1 and "KGREC_ADMIN_KEYS is not set" in warnings[0], unscoped
    assert not [line for line in scoped.stderr.splitlines() if "warning" in line], scoped.stderr


def test_train_wait_with_no_worker_says_so_and_ctrl_c_leaves_the_job_queued(tmp_path: Path) -> None:
    """It waited silently for ever (result.get(timeout=None)), and Ctrl-C printed a traceback."""
    env = {"KGREC_DATA_DIR": str(tmp_path)}
    assert kgrec("db", "start", env=env).returncode == 0
    try:
        log = tmp_path / "wait.err"
        with open(log, "wb") as err:
            waiting = subprocess.Popen(
                [str(KGREC), "train", "--wait"],
                env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
            deadline = time.monotonic() + 60
            while "answered within 1 s" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.2)
            waiting.send_signal(signal.SIGINT)
            out, _ = waiting.communicate(timeout=30)
        lines = log.read_text().splitlines()
        job_id = out.split()[2]
        assert lines[:2] == [
            f"job {job_id}: pending",
            "no worker taking queue 'celery' answered within 1 s (a busy solo-pool worker cannot): "
            "if none runs, start one (`kgrec worker`, or `kgrec up`); still waiting (Ctrl-C stops "
            "waiting, the job stays queued)",
        ]
        assert lines[-1] == f"kgrec: stopped waiting; job {job_id} goes on (GET /v1/jobs/{job_id})"
        assert waiting.returncode == 130 and "Traceback" not in log.read_text()
    finally:
        EmbeddedServer(tmp_path).stop()
