"""``kgrec up`` starting and stopping as an operator runs it: Ctrl-C/SIGTERM during the import and the
training, a second ``kgrec up`` on the same data dir, a taken API port. Real processes and signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

from graph_schema.statements.models import ACTIVE_VERSION
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer, _pid_alive
from kgrec.importer import import_state
from kgrec.job_queue import DELIVERIES_KEY, WORKER_ORPHAN_EXIT_S
from kgrec.runtime import graph_session
from kgrec_cli.stack import UP_TRAIN_QUEUE
from tests.conftest import embedded_only
from tests.processes import free_port, wait_for
from tests.stack_process import up_argv
from tests.subsets import amazon_beauty_subset

# What would point the stack elsewhere than its own data dir and embedded graph.
FOREIGN_ENV = ("NEO4J_URI", "KGREC_GRAPH", "KGREC_DATA_DIR")
PROMPT_STOP_S = 30.0  # "seconds": far below the minutes an import or a training takes
# After kill -9 of kgrec up, every process it started goes on SIGTERM (PR_SET_PDEATHSIG), the worker
# at worst WORKER_ORPHAN_EXIT_S later by its own hand; the rest is room for a loaded 2-core VM.
KILLED_STACK_GONE_S = WORKER_ORPHAN_EXIT_S + 75.0


ENV = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}


def start_up(data_dir: Path, port: int, log: Path, *options: str) -> subprocess.Popen[bytes]:
    """``kgrec up`` in a session of its own (as ``setsid`` starts it), its output in ``log``."""
    with open(log, "ab") as output:
        return subprocess.Popen(
            up_argv(data_dir, port, *options),
            env=ENV,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def refused(data_dir: Path, port: int) -> list[str]:
    """Run ``kgrec up``, which must be refused at once without output: its stderr's lines."""
    started = time.monotonic()
    done = subprocess.run(up_argv(data_dir, port), env=ENV, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 20  # at once, not after a start-up
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == "", done.stdout  # nothing started (nor stopped), no "kgrec is up"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kgrec: error:"), done.stderr
    return lines


def eventually(
    condition: Callable[[], object], timeout_s: float, what: str, state: Callable[[], str] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s:.0f}s: {what}" + (f" ({state()})" if state else ""))


def stopped_within(up: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait for ``up`` to exit (its whole group is SIGKILLed if it does not, and the test fails)."""
    try:
        up.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(up.pid, signal.SIGKILL)
        up.wait()
        raise AssertionError(f"kgrec up did not stop within {timeout_s:.0f}s") from None


def stop_once(
    up: subprocess.Popen[bytes],
    log: Path,
    condition: Callable[[], object],
    what: str,
    signum: signal.Signals,
    *,
    group: bool = False,
    within_s: float = PROMPT_STOP_S,
) -> str:
    """Send ``signum`` to ``up`` (to its whole group, as Ctrl-C does: ``group``) once ``condition``
    holds; it must stop within ``within_s``. Returns its output."""
    try:
        eventually(condition, 300, what)
        (os.killpg if group else os.kill)(up.pid, signum)
        stopped_within(up, within_s)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
    output = log.read_text()
    assert up.returncode == 0, output
    assert output.rstrip().endswith("kgrec stopped") and "Traceback" not in output, output
    return output


def leftovers(data_dir: Path) -> list[str]:
    """Command lines of live processes that belong to the stack on ``data_dir`` (servers, API, worker,
    beat: each names the data dir in its command line or environment)."""
    mark = str(data_dir.resolve()).encode()
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            if (mark in cmdline or mark in environ) and _pid_alive(int(entry.name)):
                left.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return left


def assert_nothing_left(data_dir: Path) -> None:
    assert EmbeddedServer(data_dir).running() is None
    assert EmbeddedServer(data_dir).impressions.running() is None
    assert leftovers(data_dir) == []


def kill_9(up: subprocess.Popen[bytes], data_dir: Path) -> None:
    """kill -9 ``up``: every process it started must go with it within :data:`KILLED_STACK_GONE_S`."""
    os.kill(up.pid, signal.SIGKILL)
    up.wait()
    eventually(
        lambda: leftovers(data_dir) == [],
        KILLED_STACK_GONE_S,
        "the processes of the killed kgrec up went with it",
        lambda: f"left: {leftovers(data_dir)}",
    )


def unfinished_import(data_dir: Path) -> bool:
    server = EmbeddedServer(data_dir).running()
    if server is None:
        return False
    with graph_session(Settings(data_dir=data_dir)) as gateway:
        state = import_state(gateway)
    return state is not None and not state.finished


@embedded_only
def test_ctrl_c_during_the_import_stops_at_once_and_leaves_it_unfinished(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    log = tmp_path / "up.log"
    up = start_up(data_dir, free_port(), log, "--import", "amazon-beauty", "--train")
    # Ctrl-C reaches the whole foreground group
    output = stop_once(
        up, log, lambda: unfinished_import(data_dir), "the import writes", signal.SIGINT, group=True
    )
    assert "kgrec up: SIGINT while importing amazon-beauty" in output, output
    assert "kgrec up --import amazon-beauty completes it" in output
    assert "no active model yet" not in output, output
    assert_nothing_left(data_dir)
    with graph_session(Settings(data_dir=data_dir)) as gateway:
        state = import_state(gateway)
    assert state is not None and not state.finished  # `kgrec up --import` runs it again


@embedded_only
def test_sigterm_during_training_stops_at_once_without_a_version(tmp_path: Path, shared_data: Path) -> None:
    subset = amazon_beauty_subset(shared_data / "amazon-beauty-kg", tmp_path / "beauty", users=300)
    data_dir = tmp_path / "var"
    log = tmp_path / "up.log"
    up = start_up(data_dir, free_port(), log, "--import", str(subset), "--train")
    output = stop_once(
        up, log, lambda: "no active model yet" in log.read_text(), "training begins", signal.SIGTERM
    )
    assert "kgrec up: SIGTERM while training (no model version was written)" in output, output
    assert "kgrec is up" not in output, output
    assert_nothing_left(data_dir)
    with graph_session(Settings(data_dir=data_dir)) as gateway:
        assert gateway.read(ACTIVE_VERSION) == []
        assert gateway.run_query("MATCH (v:ModelVersion) RETURN count(v) AS n", {})[0]["n"] == 0


@embedded_only
def test_a_second_up_on_the_same_data_dir_is_refused_and_leaves_the_first_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    first_port = free_port()
    first = start_up(data_dir, first_port, tmp_path / "first.log")
    try:
        wait_for(f"http://127.0.0.1:{first_port}/healthz", timeout_s=180)
        graph = EmbeddedServer(data_dir).running()
        assert graph is not None
        for port in (free_port(), first_port):  # another port, and the same one
            line = refused(data_dir, port)[0]
            assert f"kgrec up is already running on data dir {data_dir.resolve()}" in line, line
            assert f"pid {first.pid}, API port {first_port}" in line, line
        # The first stack's servers are the same ones, and it still answers.
        assert EmbeddedServer(data_dir).running() == graph
        assert requests.get(f"http://127.0.0.1:{first_port}/healthz", timeout=10).status_code == 200
        # kill -9 leaves the lock file behind, but not its lock: the next start goes ahead.
        kill_9(first, data_dir)
        again_port = free_port()
        again = start_up(data_dir, again_port, tmp_path / "again.log")
        try:
            wait_for(f"http://127.0.0.1:{again_port}/healthz", timeout_s=180)
        finally:
            again.send_signal(signal.SIGTERM)
            again.wait(120)
        assert again.returncode == 0, (tmp_path / "again.log").read_text()
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)
            first.wait(120)


@embedded_only
def test_a_taken_api_port_is_refused_in_one_line_before_anything_starts(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused(data_dir, port)[0]
    assert f"API port {port} on 127.0.0.1 is not free" in line, line
    assert leftovers(data_dir) == []  # no graph server was started


def job_state(base: str, job_id: str) -> str:
    return str(requests.get(f"{base}/v1/jobs/{job_id}", timeout=10).json()["state"])


def start_training_job(tmp_path: Path, shared_data: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """``kgrec up`` on a 1,500-user Beauty subset with a training job queued: the process, its API's
    base URL and the job's id (the whole group is SIGKILLed if any of it fails)."""
    subset = amazon_beauty_subset(shared_data / "amazon-beauty-kg", tmp_path / "beauty", users=1500)
    data_dir = tmp_path / "var"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    up = start_up(data_dir, port, tmp_path / "up.log", "--import", str(subset))
    try:
        wait_for(f"{base}/healthz", timeout_s=300)
        key = (data_dir / "api_key").read_text().strip()
        queued = requests.post(
            f"{base}/v1/models/train",
            json={"gate": False},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert queued.status_code == 200, queued.text
        return up, base, str(queued.json()["id"])
    except BaseException:
        os.killpg(up.pid, signal.SIGKILL)
        raise


@embedded_only
def test_a_training_running_when_up_stops_goes_back_on_the_queue_and_runs_at_the_next_start(
    tmp_path: Path, shared_data: Path
) -> None:
    data_dir = tmp_path / "var"
    log = tmp_path / "up.log"
    up, base, job_id = start_training_job(tmp_path, shared_data)
    # the worker's soft shutdown (10 s), not the training, sets the pace
    stop_once(
        up,
        log,
        lambda: job_state(base, job_id) == "PROGRESS",
        "the training runs",
        signal.SIGTERM,
        within_s=60,
    )
    assert_nothing_left(data_dir)
    # The job's message is back on its queue, not held as unacknowledged for the visibility timeout (6 h).
    server = EmbeddedServer(data_dir)
    info = server.start()
    broker, backend = info.client(db=1), info.client(db=2)
    try:
        assert broker.hlen("unacked") == 0, broker.hgetall("unacked")
        assert broker.llen(UP_TRAIN_QUEUE) == 1
        # A hand-back is no death of the worker: its start is not counted against MAX_DELIVERIES
        # (each stop of `kgrec up` during a long training used to count, and the 4th start failed it).
        assert int(backend.get(f"{DELIVERIES_KEY}{job_id}") or 0) == 0
    finally:
        broker.close()
        backend.close()
        server.stop()
    # The next start runs it again, under the same version name, to the end.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    again = start_up(data_dir, port, tmp_path / "again.log")
    try:
        wait_for(f"{base}/healthz", timeout_s=300)
        eventually(lambda: job_state(base, job_id) == "SUCCESS", 600, "the redelivered training finishes")
        active = requests.get(f"{base}/v1/models", timeout=10).json()
        assert job_id in json.dumps(active), active
    finally:
        again.send_signal(signal.SIGTERM)
        stopped_within(again, 120)
    assert again.returncode == 0, (tmp_path / "again.log").read_text()


@embedded_only
def test_a_worker_training_when_up_is_killed_goes_with_it_within_seconds(
    tmp_path: Path, shared_data: Path
) -> None:
    data_dir = tmp_path / "var"
    up, base, job_id = start_training_job(tmp_path, shared_data)
    try:
        eventually(lambda: job_state(base, job_id) == "PROGRESS", 300, "the training runs")
    except BaseException:
        os.killpg(up.pid, signal.SIGKILL)
        raise
    # Its broker (the graph server) goes too, and the worker's cold shutdown hung on it for good (a
    # heartbeat retrying the connection) until the worker learned to end itself and its pool.
    kill_9(up, data_dir)


# A worker whose shutdown is stuck (it ignores SIGTERM) with a pool process, under a parent that
# prints both pids. The worker leads its process group, as under kgrec up.
STUCK_WORKER = """
import os, signal, sys, time
from workers.celery_app import exit_with_parent
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pool = os.fork()
if pool == 0:
    time.sleep(600)
    os._exit(0)
print(os.getpid(), pool, flush=True)
exit_with_parent(int(sys.argv[1]), grace_s=float(sys.argv[2]))
time.sleep(600)
"""
PARENT = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid()), sys.argv[2]], start_new_session=True)
time.sleep(600)
"""


def test_a_worker_whose_parent_died_kills_itself_and_its_pool_after_the_grace_whatever_it_does() -> None:
    grace_s = 2.0
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, STUCK_WORKER, str(grace_s)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert parent.stdout is not None
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_pid_alive(pid) for pid in pids), pids
        time.sleep(grace_s + 1)  # no parent death, no kill
        assert all(_pid_alive(pid) for pid in pids)
    finally:
        parent.kill()
        parent.wait()
    killed = time.monotonic()
    eventually(lambda: not any(_pid_alive(pid) for pid in pids), 30, "the worker and its pool went")
    assert time.monotonic() - killed >= grace_s - 0.5  # its shutdown had its time first
