"""What ``kgrec up`` does while it runs: restart a dead graph server, impressions server, API, worker or beat.

A graph server that is alive but answers nothing (a deadlock, a stopped process) for
:data:`HUNG_AFTER_S` is killed and restarted like a dead one. Each restart waits an exponential
backoff (capped), is logged with the exit status, and is counted in the data dir's restart file,
which the API's ``/metrics`` reads (:mod:`kgrec.supervision`). Retrying stops only on a
configuration error: a process that dies within seconds of starting several times in a row, or a
graph server that cannot write its data dir.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis

from kgrec.embedded import EmbeddedServer, EmbeddedServerError, ImpressionsServer, ServerInfo, tied_to_parent
from kgrec.supervision import SUPERVISED, write_restart_counts

QUICK_EXIT_S = 10.0  # dying this soon after starting means it cannot run as configured...
MAX_QUICK_EXITS = 5  # ...once it happens this many times in a row
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
STABLE_S = 60.0  # up this long, a process's next failure starts the backoff over
POLL_S = 0.2
STOP_TIMEOUT_S = 25.0
# The graph server is pinged this often, each ping waiting as long; one that has answered nothing
# (not even "loading") for HUNG_AFTER_S is hung, not busy: FalkorDB's slowest legitimate stalls (a
# large write holding its lock, an fsync) last seconds.
PROBE_EVERY_S = 5.0
HUNG_AFTER_S = 60.0


class StackError(RuntimeError):
    """The stack cannot run as configured; everything was stopped."""


def exit_reason(returncode: int | None) -> str:
    """How a process ended, in words: ``killed by SIGKILL``, ``exited with status 1``."""
    if returncode is None:
        return "ended (exit status unknown)"
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


class Supervised(Protocol):
    """A process the supervisor starts and watches."""

    name: str
    started_at: float

    def launch(self) -> object:
        """Start it (raises if it cannot start)."""

    def poll(self) -> str | None:
        """None while it runs; once it has ended, how (see :func:`exit_reason`)."""

    def stop(self) -> None:
        """Stop it cleanly."""


class ChildProcess:
    """A command in its own process group (gunicorn or Celery and the processes they fork)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the command; it is SIGTERMed if ``kgrec up`` dies."""
        self.process = subprocess.Popen(tied_to_parent(self.argv), env=self.env, start_new_session=True)
        self.started_at = time.monotonic()
        return self.process

    def _kill_leftovers(self) -> None:
        # A killed gunicorn master or Celery worker leaves its forked children behind, and
        # they would keep the API port or the task queue; the group outlives its leader.
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def poll(self) -> str | None:
        """None while it runs; otherwise how it ended (its process group is cleared)."""
        if self.process is None:
            return "never started"
        returncode = self.process.poll()
        if returncode is None:
            return None
        self._kill_leftovers()
        return exit_reason(returncode)

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM); :meth:`wait` collects it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait(self, deadline: float) -> None:
        """Wait for it until ``deadline`` (monotonic), then SIGKILL what is left of its group."""
        if self.process is None:
            return
        try:
            self.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._kill_leftovers()

    def stop(self) -> None:
        """Stop it cleanly, within :data:`STOP_TIMEOUT_S`."""
        self.terminate()
        self.wait(time.monotonic() + STOP_TIMEOUT_S)


class AnswerWatch:
    """Pings a server from a daemon thread, so that the supervisor's round never waits on it, and
    tells how long the server has gone without answering."""

    def __init__(self, client: Callable[[], redis.Redis | None], every_s: float) -> None:
        self._client = client  # a new client of the server as it runs now (None: none runs)
        self._every_s = every_s
        self._answered_at = time.monotonic()  # when the last ping that got an answer was sent
        self._unanswered_at: float | None = None  # when the last ping was sent, if it got none
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self) -> None:
        """Count from now (a server just started), pinging from the thread (started once)."""
        self._answered_at, self._unanswered_at = time.monotonic(), None
        self._stopped.clear()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="kgrec-answer-watch", daemon=True)
            self._thread.start()

    def silent_for(self) -> float:
        """How long before the latest ping the server last answered; 0 when that ping got an answer.

        Measured between pings sent, not up to now: after ``kgrec up`` itself was paused (Ctrl-Z,
        a suspended laptop or VM), no ping has failed yet, so a healthy server is not taken for a
        hung one.
        """
        unanswered = self._unanswered_at
        return 0.0 if unanswered is None else max(0.0, unanswered - self._answered_at)

    def stop(self) -> None:
        """Stop pinging (the thread ends within one interval)."""
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self._every_s):
            sent = time.monotonic()
            try:
                silent = self._silent()
            except Exception:  # a ping that cannot be sent says nothing about the server
                silent = False
            if silent:
                self._unanswered_at = sent
            else:
                self._answered_at, self._unanswered_at = sent, None

    def _silent(self) -> bool:
        """True when a ping got no answer in time. Any reply counts as one, an error included
        ("loading", "max number of clients reached"); a refused connection is a death, which the
        supervisor's poll reports."""
        client = self._client()
        if client is None:
            return False  # not running: the supervisor's poll reports how it ended
        try:
            client.ping()
        except redis.TimeoutError:
            return True
        except redis.RedisError:
            return False
        finally:
            client.close()
        return False


class GraphProcess:
    """The embedded graph server; ``kgrec up`` is its parent, so it reaps it and reads its exit status."""

    name = "graph"

    def __init__(
        self, server: EmbeddedServer, hung_after_s: float = HUNG_AFTER_S, probe_every_s: float = PROBE_EVERY_S
    ) -> None:
        self.server = server
        self.info: ServerInfo | None = None
        self.started_at = 0.0
        self.hung_after_s = hung_after_s
        self.answers = AnswerWatch(self._probe_client, probe_every_s)
        self._probe_timeout_s = probe_every_s

    def launch(self) -> ServerInfo:
        """Start the server (on its previous port when it is free) and wait until it answers."""
        self.info = self.server.start()
        self.started_at = time.monotonic()
        self.answers.watch()
        return self.info

    def poll(self) -> str | None:
        """None while it runs; otherwise how it ended, and why if its log says (see :func:`_with_log`).

        A server that has answered nothing for :attr:`hung_after_s` is killed here (SIGKILL: it
        may be stopped, or deadlocked past SIGTERM), and reported as ended; its writes were fsynced
        as they were acknowledged, so the restart loses none.
        """
        if self.info is None:
            return "never started"
        ended = _with_log(_child_exit(self.info.pid, lambda: self.server.running() is not None), self.server)
        silent = self.answers.silent_for()
        if ended is not None or silent < self.hung_after_s:
            return ended
        self._kill(self.info.pid)
        return f"answered nothing for {silent:.0f}s and was killed"

    def _kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        # Reap our child, so that its pid cannot be mistaken for a live one; not for ever: one in
        # uninterruptible sleep (a hung disk) dies only when its system call returns.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] != 0:
                    return
            except ChildProcessError:  # not our child (it was already running)
                if self.server.running() is None:
                    return
            time.sleep(0.05)

    def _probe_client(self) -> redis.Redis | None:
        info = self.info
        if info is None:
            return None
        return info.one_try_client(self._probe_timeout_s)

    def stop(self) -> None:
        """Shut the server down cleanly (fsyncs the AOF)."""
        self.answers.stop()
        self.server.stop()


class ImpressionsProcess:
    """The embedded impressions' redis-server beside the graph server (started with it, restarted alone)."""

    name = "impressions"

    def __init__(self, server: EmbeddedServer) -> None:
        self.server = server
        self.pid: int | None = None
        self.started_at = 0.0

    def launch(self) -> ServerInfo:
        """Start it beside the running graph server (nothing to do if it runs) and wait until it answers."""
        info = self.server.start_impressions()
        record = self.server.impressions.running()
        if record is None:
            raise EmbeddedServerError("the impressions server did not stay up")
        self.pid = record.pid
        self.started_at = time.monotonic()
        return info

    def poll(self) -> str | None:
        """None while it runs; otherwise how it ended, and why if its log says (see :func:`_with_log`)."""
        if self.pid is None:
            return "never started"
        ended = _child_exit(self.pid, lambda: self.server.impressions.running() is not None)
        return _with_log(ended, self.server.impressions)

    def stop(self) -> None:
        """Shut it down cleanly (its AOF is flushed and fsynced)."""
        self.server.impressions.stop()


def _with_log(ended: str | None, server: EmbeddedServer | ImpressionsServer) -> str | None:
    """``ended`` with the last warnings of the server's log (a full disk, a crash): its reason is there."""
    if ended is None:
        return None
    said = server.last_warnings()
    return f"{ended} ({server.log_path}: {said})" if said else ended


def _child_exit(pid: int, alive: Callable[[], bool]) -> str | None:
    """None while our child ``pid`` runs; otherwise how it ended (``alive`` decides for one not ours)."""
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (it was already running), or reaped elsewhere
        return None if alive() else exit_reason(None)
    return None if reaped == 0 else exit_reason(os.waitstatus_to_exitcode(status))


@dataclass
class _Restarts:
    """Restart state of one process."""

    attempt: int = 0  # consecutive restarts: sets the next backoff
    quick_exits: int = 0  # consecutive deaths soon after starting
    due_at: float | None = None  # when a pending restart is to be tried


class Supervisor:
    """Restarts what dies, in dependency order: the graph (also the broker) before its clients.

    ``servers`` run beside the graph server and need it (the impressions server): they are
    restarted after it, and their deaths do not hold up the other children.
    """

    def __init__(
        self,
        data_dir: Path,
        graph: GraphProcess | None,
        children: Sequence[ChildProcess],
        should_stop: Callable[[], bool],
        log: Callable[[str], None] = lambda line: print(line, flush=True),
        servers: Sequence[Supervised] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.graph = graph
        self.servers = list(servers)
        self.children = list(children)
        self.should_stop = should_stop
        self.log = log
        self.counts = dict.fromkeys(SUPERVISED, 0)
        self._state: dict[str, _Restarts] = {}
        write_restart_counts(self.data_dir, self.counts)

    @property
    def processes(self) -> list[Supervised]:
        """Everything supervised, the graph first, then the servers beside it."""
        return ([self.graph] if self.graph is not None else []) + self.servers + list(self.children)

    def run(self) -> None:
        """Watch and restart until :attr:`should_stop` says so; raises :class:`StackError` when hopeless."""
        while not self.should_stop():
            self.check()
            time.sleep(POLL_S)

    def check(self) -> None:
        """One round: notice deaths, start restarts that are due."""
        graph_pending = False
        for process in self.processes:
            state = self._state.setdefault(process.name, _Restarts())
            if state.due_at is None:
                reason = process.poll()
                if reason is not None:
                    self._schedule(process, state, reason)
            # Clients of a dead graph (also their broker) would only die again: the graph goes first.
            blocked = graph_pending and process is not self.graph
            if state.due_at is not None and time.monotonic() >= state.due_at and not blocked:
                self._restart(process, state)
            graph_pending = graph_pending or (process is self.graph and state.due_at is not None)

    def _schedule(self, process: Supervised, state: _Restarts, reason: str) -> None:
        uptime = time.monotonic() - process.started_at
        state.quick_exits = state.quick_exits + 1 if uptime < QUICK_EXIT_S else 0
        if state.quick_exits >= MAX_QUICK_EXITS:
            raise StackError(
                f"{process.name} {reason} {state.quick_exits} times in a row within {QUICK_EXIT_S:.0f}s "
                "of starting; not restarting it (check its configuration and the log above)"
            )
        if uptime >= STABLE_S:
            state.attempt = 0
        delay = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2**state.attempt)
        state.attempt += 1
        state.due_at = time.monotonic() + delay
        self.log(f"kgrec up: {process.name} {reason} after {uptime:.1f}s up; restarting it in {delay:.1f}s")

    def _restart(self, process: Supervised, state: _Restarts) -> None:
        old_port = self.graph.info.port if process is self.graph and self.graph.info else None
        try:
            process.launch()
        except (EmbeddedServerError, OSError) as exc:
            if isinstance(exc, PermissionError) or "Permission denied" in str(exc):
                raise StackError(f"cannot restart {process.name}: {exc}") from exc
            state.due_at = None
            process.started_at = time.monotonic()
            self._schedule(process, state, f"failed to start ({exc})")
            return
        state.due_at = None
        self.counts[process.name] = self.counts.get(process.name, 0) + 1
        write_restart_counts(self.data_dir, self.counts)
        self.log(f"kgrec up: {process.name} restarted (restart {self.counts[process.name]})")
        if process is self.graph and self.graph.info is not None and self.graph.info.port != old_port:
            # Workers and beat know the broker only by its URL, so they follow the new port by restarting.
            self.log(
                f"kgrec up: the graph server moved to port {self.graph.info.port}; restarting its clients"
            )
            for child in self.children:
                child.stop()
                child.launch()
                self._state.setdefault(child.name, _Restarts()).due_at = None

    def stop_all(self) -> None:
        """Stop the children together (SIGTERM, then SIGKILL after a grace period), then the servers."""
        for child in self.children:
            child.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in self.children:
            child.wait(deadline)
        for server in self.servers:
            server.stop()
        if self.graph is not None:
            self.graph.stop()
