"""Faults with real processes: the broker restarting under a worker, an unwritable data directory."""

from __future__ import annotations

import os
import time
from pathlib import Path

from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.gateway import open_gateway
from kgrec.migrations import migrate
from kgrec.stack import worker_argv
from tests.conftest import embedded_only
from tests.processes import background, kgrec_cli
from workers.celery_app import make_celery

PRUNE = "workers.tasks.prune_graph"


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


@embedded_only
def test_a_read_only_data_directory_is_a_one_line_error_not_a_hang() -> None:
    read_only = Path("/sys/kgrec-read-only-test")  # sysfs is mounted read-only, even for root
    started = time.monotonic()
    result = kgrec_cli("db", "start", env={"KGREC_DATA_DIR": str(read_only)}, timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kgrec: error:"), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert str(read_only) in lines[0] or "read-only" in lines[0].lower(), lines[0]
