"""``kgrec up`` supervises what it starts: kill -9 the graph server, the impressions server, the API master
and the worker."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import kombu.exceptions
import pytest
import redis
import requests
from celery import Celery

from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.gateway import open_gateway
from kgrec.job_queue import job_client
from kgrec.supervision import restart_counts
from kgrec_cli.supervisor import MAX_QUICK_EXITS, ChildProcess, GraphProcess, StackError, Supervisor
from tests.conftest import embedded_only
from tests.processes import free_port, tmpfs, wait_for

KEY = "test-key-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {KEY}"}


def eventually(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    """Poll ``condition`` until it is truthy (a generous deadline, not a performance bound)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s}s: {what}")


def child_pid(parent: int, *words: str) -> int | None:
    """The child of ``parent`` whose command line holds all ``words``."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    for pid in map(int, children):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if all(word in cmdline for word in words):
            return pid
    return None


def restarts(base: str) -> dict[str, int]:
    """Restart counts as /metrics shows them."""
    text = requests.get(f"{base}/metrics", timeout=10).text
    return {
        m[1]: int(float(m[2]))
        for m in re.finditer(r'kgrec_process_restarts_total\{process="(\w+)"\} (\S+)', text)
    }


def worker_answers(celery: Celery) -> bool:
    """A Celery worker answers a ping (a broker connection broken by a restart counts as no)."""
    try:
        return bool(celery.control.ping(timeout=1.0))
    except (OSError, redis.RedisError, kombu.exceptions.OperationalError):
        return False


class EventPoster(threading.Thread):
    """Posts small batches of new events until stopped; remembers what was acknowledged and every answer."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.acknowledged: list[str] = []
        self.answers: list[tuple[int, str | None]] = []  # (status, Retry-After)
        self.done = threading.Event()

    def run(self) -> None:
        for batch in itertools.count():
            if self.done.is_set():
                return
            events = [
                {
                    "event_id": f"s-{batch}-{i}",
                    "user_id": f"user-{i % 5}",
                    "item_id": f"item-{batch % 13}",
                    "type": "view",
                    "ts": int(time.time() * 1000),
                }
                for i in range(10)
            ]
            try:
                response = requests.post(f"{self.base}/v1/events", json=events, headers=AUTH, timeout=30)
            except requests.RequestException:
                self.answers.append((0, None))
                time.sleep(0.1)
                continue
            self.answers.append((response.status_code, response.headers.get("Retry-After")))
            if response.status_code == 200:
                self.acknowledged.extend(e["event_id"] for e in events)
            else:
                time.sleep(0.1)

    def healed_after_outage(self) -> bool:
        """A 503 with Retry-After was answered, and a 200 after it."""
        statuses = list(self.answers)
        outage = next((i for i, (s, retry) in enumerate(statuses) if s == 503 and retry), None)
        return outage is not None and any(s == 200 for s, _ in statuses[outage:])


@embedded_only
def test_up_restarts_a_killed_graph_impressions_server_api_and_worker(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    port = free_port()
    env = {**os.environ, "KGREC_API_KEYS": KEY}
    env.pop("NEO4J_URI", None)
    log = tmp_path / "up.log"
    with open(log, "wb") as output:
        up = subprocess.Popen(
            [sys.executable, "-m", "kgrec_cli.main", "up", "--port", str(port), "--data-dir", str(data_dir)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    poster = EventPoster(base)
    try:
        wait_for(f"{base}/healthz", timeout_s=300)
        celery = job_client(Settings(data_dir=data_dir))
        eventually(lambda: worker_answers(celery), 120, "the Celery worker answers a ping")
        assert restarts(base) == {
            "graph": 0,
            "impressions": 0,
            "api": 0,
            "worker": 0,
            "trainer": 0,
            "beat": 0,
        }

        # The graph server: the API answers 503 + Retry-After, then 200 again by itself.
        poster.start()
        eventually(lambda: len(poster.acknowledged) >= 50, 60, "events are acknowledged")
        graph = EmbeddedServer(data_dir).running()
        assert graph is not None and graph.owner_pid == up.pid
        os.kill(graph.pid, signal.SIGKILL)
        eventually(poster.healed_after_outage, 120, "503 with Retry-After, then 200 again")
        eventually(lambda: restarts(base)["graph"] == 1, 30, "the graph restart shows in /metrics")
        restarted = EmbeddedServer(data_dir).running()
        assert restarted is not None and restarted.pid != graph.pid and restarted.port == graph.port
        # The worker reconnects to the broker (the restarted graph server's redis-server).
        eventually(lambda: worker_answers(celery), 120, "the worker answers after the restart")
        poster.done.set()
        poster.join(60)

        # The impressions server: restarted on its port, alone.
        companion = EmbeddedServer(data_dir).impressions.running()
        assert companion is not None and companion.owner_pid == up.pid
        os.kill(companion.pid, signal.SIGKILL)
        eventually(
            lambda: restarts(base)["impressions"] == 1, 60, "the impressions restart shows in /metrics"
        )
        back = EmbeddedServer(data_dir).impressions.running()
        assert back is not None and back.pid != companion.pid and back.port == companion.port
        assert restarts(base)["graph"] == 1

        # The API master, and with it its workers.
        master = child_pid(up.pid, "gunicorn")
        assert master is not None
        os.kill(master, signal.SIGKILL)
        eventually(lambda: child_pid(up.pid, "gunicorn") not in (None, master), 60, "a new gunicorn master")
        wait_for(f"{base}/healthz", timeout_s=120)
        assert restarts(base)["api"] == 1

        # The Celery worker.
        worker = child_pid(up.pid, "celery", " worker ", "--queues celery ")  # not the trainer
        assert worker is not None
        os.kill(worker, signal.SIGKILL)
        eventually(lambda: restarts(base)["worker"] == 1, 60, "the worker restart shows in /metrics")
        eventually(lambda: worker_answers(celery), 120, "the restarted worker answers a ping")

        # Every acknowledged event is in the graph.
        with open_gateway(Settings(data_dir=data_dir)) as gateway:
            stored = {r["id"] for r in gateway.run_query("MATCH (e:Event) RETURN e.id AS id", {})}
        assert poster.acknowledged and set(poster.acknowledged) <= stored
    finally:
        poster.done.set()
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=120)
    output = log.read_text()
    assert up.returncode == 0, output
    assert "kgrec up: graph killed by SIGKILL" in output, output
    assert "kgrec up: impressions killed by SIGKILL" in output, output
    assert "kgrec up: api killed by SIGKILL" in output and "kgrec up: worker killed by SIGKILL" in output
    assert "kgrec stopped" in output
    assert EmbeddedServer(data_dir).running() is None
    assert EmbeddedServer(data_dir).impressions.running() is None


def test_a_process_that_cannot_start_is_given_up_with_one_line(tmp_path: Path) -> None:
    broken = ChildProcess("worker", [sys.executable, "-c", "import sys; sys.exit(3)"], dict(os.environ))
    lines: list[str] = []
    supervisor = Supervisor(tmp_path, None, [broken], should_stop=lambda: False, log=lines.append)
    broken.launch()
    with pytest.raises(StackError) as raised:
        supervisor.run()
    reason = str(raised.value)
    assert "\n" not in reason
    assert f"worker exited with status 3 {MAX_QUICK_EXITS} times in a row" in reason, reason
    delays = [float(m[1]) for line in lines if (m := re.search(r"restarting it in (\S+)s$", line))]
    assert delays == [0.5 * 2**i for i in range(MAX_QUICK_EXITS - 1)]  # exponential backoff
    assert restart_counts(tmp_path)["worker"] == MAX_QUICK_EXITS - 1


def test_backoff_is_capped_and_a_long_run_starts_it_over(tmp_path: Path) -> None:
    from kgrec_cli import supervisor as module

    sleeper = ChildProcess("beat", [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ))
    lines: list[str] = []
    supervisor = Supervisor(tmp_path, None, [sleeper], should_stop=lambda: False, log=lines.append)
    state = supervisor._state.setdefault("beat", module._Restarts())
    sleeper.started_at = time.monotonic() - module.STABLE_S / 2  # up long enough not to count as quick
    state.attempt = 20
    module.Supervisor._schedule(supervisor, sleeper, state, "killed by SIGKILL")
    assert lines[-1].endswith(f"restarting it in {module.MAX_BACKOFF_S:.1f}s")
    sleeper.started_at = time.monotonic() - module.STABLE_S
    module.Supervisor._schedule(supervisor, sleeper, state, "killed by SIGKILL")
    assert lines[-1].endswith(f"restarting it in {module.FIRST_BACKOFF_S:.1f}s")


class UnwritableGraph:
    """A graph server that died, and whose data dir can no longer be written."""

    name = "graph"
    info = None
    started_at = 0.0

    def launch(self) -> None:
        raise PermissionError("[Errno 13] Permission denied: '/srv/kgrec/var/falkordb/start.lock'")

    def poll(self) -> str:
        return "killed by SIGSEGV"


def test_a_graph_server_that_cannot_write_its_data_dir_stops_the_stack_at_once(tmp_path: Path) -> None:
    lines: list[str] = []
    supervisor = Supervisor(tmp_path, UnwritableGraph(), [], should_stop=lambda: False, log=lines.append)
    with pytest.raises(StackError, match=r"^cannot restart graph: .*Permission denied"):
        supervisor.run()
    assert len(lines) == 1 and lines[0].startswith("kgrec up: graph killed by SIGSEGV"), lines


@embedded_only
def test_a_server_that_exits_on_a_full_disk_is_logged_with_the_reason_from_its_log(tmp_path: Path) -> None:
    """The graph server on a small tmpfs exits when its AOF cannot be written: the exit line says why."""
    with tmpfs(tmp_path / "small-disk", "size=8m") as disk:
        _exit_on_a_full_disk(disk, tmp_path)


def _exit_on_a_full_disk(disk: Path, tmp_path: Path) -> None:
    graph = GraphProcess(EmbeddedServer(disk / "var"))
    lines: list[str] = []
    supervisor = Supervisor(tmp_path, graph, [], should_stop=lambda: False, log=lines.append)
    try:
        info = graph.launch()
        # fill the disk, as ingestion would (unbuffered: nothing is left to flush at close)
        with open(disk / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * (1 << 20))
        client = info.client(socket_timeout=5)
        with contextlib.suppress(redis.RedisError):
            client.set("one-more", "x" * 100_000)  # appendfsync always: the write hits the full disk
        client.close()
        eventually(lambda: supervisor.check() or lines, 30, "the graph server's exit is noticed")
        assert len(lines) == 1, lines
        assert lines[0].startswith("kgrec up: graph "), lines[0]
        assert f"{graph.server.log_path}: " in lines[0], lines[0]
        assert "Error writing to the AOF file: No space left on device" in lines[0], lines[0]
    finally:
        graph.server.kill()


@embedded_only
def test_a_graph_server_that_answers_nothing_is_killed_and_restarted_with_its_data(tmp_path: Path) -> None:
    """A graph server stopped with SIGSTOP (as a deadlocked one: alive, answering nothing) is killed
    once a ping sent the bound after its last answer gets none, restarted, and has every
    acknowledged write; one that still answers is left alone, and so is one after a pause of the
    supervisor itself."""
    graph = GraphProcess(EmbeddedServer(tmp_path / "var"), hung_after_s=6, probe_every_s=1)
    lines: list[str] = []
    supervisor = Supervisor(tmp_path, graph, [], should_stop=lambda: False, log=lines.append)
    try:
        first = graph.launch()
        client = first.client(socket_timeout=5)
        client.set("acknowledged", "yes")  # appendfsync always: on disk before the answer
        client.close()
        for _ in range(40):  # 8 s of rounds, past the bound, while it answers: nothing happens
            supervisor.check()
            time.sleep(0.2)
        assert lines == []
        # kgrec up itself paused past the bound (Ctrl-Z, a suspended laptop): its last answer is
        # long ago, but no ping has gone unanswered since, so nothing happens either.
        graph.answers._answered_at -= 100
        supervisor.check()
        assert lines == []

        os.kill(first.pid, signal.SIGSTOP)
        eventually(
            lambda: supervisor.check() or len(lines) >= 2, 60, "the silent server is killed and restarted"
        )
        assert re.fullmatch(r"kgrec up: graph answered nothing for \d+s and was killed after .*", lines[0]), (
            lines
        )
        assert lines[1] == "kgrec up: graph restarted (restart 1)", lines
        assert graph.info is not None and graph.info.pid != first.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(first.pid, 0)
            raise AssertionError(f"the stopped server (pid {first.pid}) is still there")
        client = graph.info.client(socket_timeout=5)
        assert client.get("acknowledged") == b"yes"
        client.close()
        assert restart_counts(tmp_path)["graph"] == 1
    finally:
        graph.answers.stop()
        graph.server.kill()
