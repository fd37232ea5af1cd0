"""The embedded FalkorDB server: start, stop, restart, kill -9, orphans, auth — with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from graph_schema.statements import admin, dataset_import
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer, _pid_alive
from kgrec.gateway import open_gateway
from tests.conftest import embedded_only

pytestmark = embedded_only


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    EmbeddedServer(tmp_path).stop()


def _user_count(settings: Settings) -> int:
    with open_gateway(settings) as gateway:
        rows = gateway.read(admin.NODE_COUNTS)
    return next((int(r["count"]) for r in rows if r["label"] == "User"), 0)


def _add_users(settings: Settings, ids: list[str]) -> None:
    with open_gateway(settings) as gateway:
        gateway.write_batches(dataset_import.UPSERT_USERS, ids, param="ids", extra={"now": 1})


def _wait_gone(pid: int, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_clean_restart_keeps_data(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir)
    server = EmbeddedServer(data_dir)
    first = server.start()
    _add_users(settings, [f"u{i}" for i in range(100)])
    assert server.stop() is True
    assert not _pid_alive(first.pid)
    assert server.running() is None
    second = server.start()
    assert second.pid != first.pid
    assert _user_count(settings) == 100


def test_kill_9_keeps_every_acknowledged_write(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir)
    server = EmbeddedServer(data_dir)
    server.start()
    _add_users(settings, [f"bulk{i}" for i in range(20_000)])
    server.rewrite_aof()  # as after a bulk load
    _add_users(settings, ["after-rewrite-1", "after-rewrite-2"])  # only in the AOF tail
    server.kill()
    assert server.running() is None
    server.start()
    assert _user_count(settings) == 20_002


def test_binds_loopback_and_requires_the_generated_password(data_dir: Path) -> None:
    info = EmbeddedServer(data_dir).start()
    assert info.host == "127.0.0.1"
    assert len(info.password) >= 24
    anonymous = redis.Redis(host="127.0.0.1", port=info.port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    assert info.client().config_get("bind")["bind"] == "127.0.0.1"
    assert info.client().config_get("appendonly")["appendonly"] == "yes"
    password_file = data_dir / "falkordb" / "password"
    assert oct(password_file.stat().st_mode & 0o777) == "0o600"


def test_start_reuses_the_running_server(data_dir: Path) -> None:
    server = EmbeddedServer(data_dir)
    assert server.start().pid == server.start().pid


def test_attached_server_dies_with_its_owner(data_dir: Path) -> None:
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from kgrec.embedded import EmbeddedServer;"
            "info = EmbeddedServer(Path(sys.argv[1])).start();"
            "print(info.pid, flush=True); time.sleep(600)",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    server_pid = int(owner.stdout.readline())
    assert _pid_alive(server_pid)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert _wait_gone(server_pid), "the graph server outlived its owner"
    assert EmbeddedServer(data_dir).running() is None


def test_startup_check_stops_an_orphan(data_dir: Path) -> None:
    """A server recorded as owned by a dead process is stopped before a new start."""
    server = EmbeddedServer(data_dir)
    orphan = server.start(detached=True)
    record = json.loads(server.info_path.read_text())
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record["owner_pid"] = dead.pid
    server.info_path.write_text(json.dumps(record))
    assert server.running() is None
    assert _wait_gone(orphan.pid)
    fresh = server.start()
    assert fresh.pid != orphan.pid


def test_db_commands_manage_a_detached_server(data_dir: Path) -> None:
    env = {**os.environ, "KGREC_DATA_DIR": str(data_dir)}
    env.pop("NEO4J_URI", None)

    def kgrec(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kgrec_cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    started = kgrec("db", "start")
    assert started.returncode == 0, started.stderr
    status = json.loads(kgrec("db", "status", "--json").stdout)
    assert status["running"] is True and status["attached"] is False
    assert _pid_alive(status["pid"])  # survived the CLI process that started it
    assert kgrec("migrate").returncode == 0
    stopped = kgrec("db", "stop")
    assert "stopped" in stopped.stdout
    assert _wait_gone(status["pid"])
    assert json.loads(kgrec("db", "status", "--json").stdout)["running"] is False
