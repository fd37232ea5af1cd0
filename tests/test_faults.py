"""Faults with real processes: the broker restarting under a worker, an unwritable data directory, a full disk."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from bench.faults import padded_batch
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.gateway import open_gateway
from kgrec.job_queue import PRUNE_GRAPH
from kgrec.migrations import migrate
from kgrec_cli.stack import worker_argv
from tests.conftest import embedded_only
from tests.processes import ApiProcess, background, kgrec_cli, tmpfs
from workers.celery_app import make_celery

PRUNE = PRUNE_GRAPH


@embedded_only
def test_tasks_survive_a_broker_restart_and_the_worker_reconnects(tmp_path: Path) -> None:
    """In embedded mode Redis is the graph server: restart it with tasks queued and under a live worker."""
    settings = Settings(data_dir=tmp_path / "var")
    server = EmbeddedServer(settings.data_dir)
    server.start()
    try:
        with open_gateway(settings) as gateway:
            migrate(gateway)
        env = {**os.environ, "KGREC_DATA_DIR": str(settings.data_dir)}
        producer = make_celery(settings)
        queued = [producer.send_task(PRUNE).id for _ in range(3)]  # no worker yet: they wait in Redis
        producer.close()
        port = server.running().port  # type: ignore[union-attr]
        server.kill()  # kill -9: only what the append-only file kept survives
        assert server.start().port == port
        with background(worker_argv(pool="solo"), env, tmp_path / "worker.log"):
            celery = make_celery(settings)
            for task_id in queued:
                assert celery.AsyncResult(task_id).get(timeout=120) == {"edges": 0, "events": 0}
            # Now restart it under the running worker: it must reconnect and keep consuming.
            celery.close()
            server.stop()
            time.sleep(2)
            assert server.start().port == port
            deadline = time.monotonic() + 120
            after = None
            while after is None and time.monotonic() < deadline:
                try:
                    after = celery.send_task(PRUNE)
                except Exception:  # the client's own connection may need a moment
                    time.sleep(0.5)
            assert after is not None and after.get(timeout=120) == {"edges": 0, "events": 0}, (
                tmp_path / "worker.log"
            ).read_text()[-3000:]
    finally:
        server.stop()


@contextlib.contextmanager
def read_only_directory(path: Path) -> Iterator[Path]:
    """A directory nothing can be written to: a read-only tmpfs for root, else one without write permission."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    with tmpfs(path, "ro,size=1m"):
        yield path


@embedded_only
def test_a_read_only_data_directory_is_a_one_line_error_not_a_hang(tmp_path: Path) -> None:
    """The CLI's timeout turns a hang into a failure; bench/faults.py measures how long the error takes."""
    with read_only_directory(tmp_path / "read-only") as read_only:
        data_dir = read_only / "var"
        result = kgrec_cli("db", "start", env={"KGREC_DATA_DIR": str(data_dir)}, timeout=60)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kgrec: error:"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert str(data_dir) in lines[0] or "read-only" in lines[0].lower(), lines[0]


@embedded_only
def test_a_full_disk_gives_503s_not_a_hang_and_keeps_every_acknowledged_event(tmp_path: Path) -> None:
    """The data directory on a 24 MB tmpfs: ingest until the disk is full."""
    with tmpfs(tmp_path / "small-disk", "size=24m") as mount_point:
        _fill_the_disk_and_recover(mount_point, tmp_path)


def _fill_the_disk_and_recover(mount_point: Path, tmp_path: Path) -> None:
    settings = Settings(data_dir=mount_point / "var")
    server = EmbeddedServer(settings.data_dir)
    api = None
    try:
        server.start()
        with open_gateway(settings) as gateway:
            migrate(gateway)
        api = ApiProcess(
            {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_API_KEYS": "k"}, log=tmp_path / "api.log"
        ).start()
        acknowledged: list[str] = []
        refused = None
        for batch in range(2_000):
            events = padded_batch(batch)
            # The timeout turns a hang into a failure; bench/faults.py measures the answers' latency.
            response = requests.post(
                f"{api.url}/v1/events", json=events, headers={"Authorization": "Bearer k"}, timeout=60
            )
            if response.status_code != 200:
                refused = response
                break
            acknowledged.extend(e["event_id"] for e in events)
        assert refused is not None, "24 MB never filled up"
        assert refused.status_code == 503 and refused.json()["error"] == "graph_unavailable"
        assert int(refused.headers["Retry-After"]) > 0
        assert acknowledged
        api.stop()
        api = None
        # Give the disk more room, as an operator would, and restart: every acknowledged event is there.
        server.stop()
        subprocess.run(["mount", "-o", "remount,size=96m", str(mount_point)], check=True)
        server.start()
        with open_gateway(settings) as gateway:
            stored = {r["id"] for r in gateway.run_query("MATCH (e:Event) RETURN e.id AS id", {})}
        assert set(acknowledged) <= stored
    finally:
        if api is not None:
            api.stop()
        server.kill()
