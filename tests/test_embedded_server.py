"""The embedded FalkorDB server: start, stop, restart, kill -9, orphans, auth — with real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
import redis

from graph_schema.statements import admin, dataset_import, models
from kgrec.config import Settings
from kgrec.embedded import QUERY_LOG_KEYS, EmbeddedServer, ServerInfo, _pid_alive, rewrite_aof_now
from kgrec.gateway import GraphUnavailable, open_gateway
from kgrec.migrations import migrate
from kgrec.runtime import embedded_server
from tests.conftest import embedded_only
from tests.processes import kgrec_cli

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


def _operator_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment with none of the durability settings: kgrec's defaults, unless overridden."""
    unset = {"KGREC_AOF_FSYNC", "KGREC_GRAPH_THREADS", "NEO4J_URI"}
    return {
        **{k: v for k, v in os.environ.items() if k not in unset},
        "KGREC_DATA_DIR": str(data_dir),
        **overrides,
    }


def _live_durability_settings(info: ServerInfo) -> tuple[str, int]:
    """(appendfsync, graph query threads) as the running server reports them."""
    client = info.client()
    try:
        fsync = client.config_get("appendfsync")["appendfsync"]
        name, threads = client.execute_command("GRAPH.CONFIG", "GET", "THREAD_COUNT")
    finally:
        client.close()
    assert name in ("THREAD_COUNT", b"THREAD_COUNT")
    return fsync, int(threads)


def _wait_gone(pid: int, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_the_server_kgrec_starts_fsyncs_every_write_and_runs_one_graph_thread(data_dir: Path) -> None:
    """``kgrec db start`` with the default configuration, read back from the running server.

    fsync always: an acknowledged write is on disk (tests/test_durability.py cuts the power to show
    it). One graph query thread: the workaround for the FalkorDB 4.16.3 crash (README "Operations").
    """
    started = subprocess.run(
        [sys.executable, "-m", "kgrec_cli.main", "db", "start"],
        env=_operator_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr
    info = EmbeddedServer(data_dir).running()
    assert info is not None
    assert _live_durability_settings(info) == ("always", 1)


def test_the_session_server_runs_the_default_durability_settings(graph_server: EmbeddedServer | None) -> None:
    """The server the other tests share is configured as in production."""
    assert graph_server is not None
    info = graph_server.running()
    assert info is not None
    assert _live_durability_settings(info) == ("always", 1)


def test_the_live_settings_follow_the_configuration(data_dir: Path) -> None:
    """The checks above read the server itself: another configuration shows up there."""
    settings = Settings.from_env(_operator_env(data_dir, KGREC_AOF_FSYNC="everysec", KGREC_GRAPH_THREADS="2"))
    info = embedded_server(settings).start()
    assert _live_durability_settings(info) == ("everysec", 2)


def _query_logs(client: redis.Redis) -> list[bytes]:
    return list(client.scan_iter(match=QUERY_LOG_KEYS, _type="stream"))


def _logged_a_query(client: redis.Redis, needle: str) -> None:
    """Log queries as FalkorDB does by default (as a server an older kgrec started did), and run
    two that name ``needle``; returns once the log has them (about a second)."""
    client.execute_command("GRAPH.CONFIG", "SET", "CMD_INFO", "yes")
    client.execute_command("GRAPH.QUERY", "g", f'CYPHER id="{needle}" CREATE (:User {{id: $id}})')
    client.execute_command("GRAPH.QUERY", "g", f'CYPHER id="{needle}" MATCH (u:User {{id: $id}}) DELETE u')
    deadline = time.monotonic() + 30
    while needle.encode() not in _logged(client) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert needle.encode() in _logged(client)


def _logged(client: redis.Redis) -> bytes:
    """Every query log entry, as bytes."""
    return repr([client.xrange(log) for log in _query_logs(client)]).encode()


def _in_the_log_files(data_dir: Path, needle: str) -> bool:
    folder = data_dir / "falkordb" / "data" / "appendonlydir"
    return any(needle.encode() in path.read_bytes() for path in folder.iterdir() if path.is_file())


def test_the_server_keeps_no_query_log_with_ids_in_it(data_dir: Path) -> None:
    """FalkorDB logs each graph's last 1,000 queries with their parameters in the keyspace, so an
    erased user's id came back with every snapshot. kgrec starts it with the log off, and turns it
    off and deletes the logs of a server found running or of a snapshot that holds them."""
    server = EmbeddedServer(data_dir)
    client = server.start().client()
    client.config_set("rdbcompression", "no")  # an id is found in the snapshot whatever its bytes
    assert client.execute_command("GRAPH.CONFIG", "GET", "CMD_INFO") == [b"CMD_INFO", False]
    client.execute_command("GRAPH.QUERY", "g", 'CYPHER id="kept-user" CREATE (:User {id: $id})')
    time.sleep(3)  # a logged query is in its log within about a second
    assert _query_logs(client) == []

    _logged_a_query(client, "logged-while-running")
    server.start()  # finds it running
    assert _query_logs(client) == []
    assert client.execute_command("GRAPH.CONFIG", "GET", "CMD_INFO") == [b"CMD_INFO", False]

    _logged_a_query(client, "logged-before-a-restart")
    rewrite_aof_now(client, 60)
    assert _in_the_log_files(data_dir, "logged-before-a-restart")  # the snapshot the restart loads
    server.stop()
    client = server.start().client()
    client.config_set("rdbcompression", "no")
    assert _query_logs(client) == []
    rewrite_aof_now(client, 60)
    assert not _in_the_log_files(data_dir, "logged-before-a-restart")
    assert not _in_the_log_files(data_dir, "logged-while-running")
    assert client.execute_command("GRAPH.QUERY", "g", "MATCH (u:User) RETURN u.id")[1] == [[b"kept-user"]]


def test_start_finds_a_running_server_that_does_not_answer_as_before(data_dir: Path) -> None:
    """Turning the query log off is tried at each start; a server that does not answer (stopped,
    swapping) is still found running, as before, and its callers get GraphUnavailable."""
    server = EmbeddedServer(data_dir)
    info = server.start()
    os.kill(info.pid, signal.SIGSTOP)
    try:
        assert server.start() == info
    finally:
        os.kill(info.pid, signal.SIGCONT)
    assert info.client().ping()


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


def test_garbage_collection_finds_inactive_versions_after_a_reload_from_a_rewritten_log(
    data_dir: Path,
) -> None:
    """FalkorDB's index on ModelVersion.active finds no `false` after such a reload; the collection
    statements filter on the value instead, so they still delete what they are asked to."""
    settings = Settings(data_dir=data_dir)
    server = EmbeddedServer(data_dir)
    server.start()
    with open_gateway(settings) as gateway:
        migrate(gateway)  # the index on ModelVersion.active among the rest
        gateway.run_query(
            "UNWIND range(1, 4) AS k CREATE (:ModelVersion {id: 'v' + toString(k), active: k = 4})", {}
        )
    server.rewrite_aof()
    server.kill()
    server.start()
    with open_gateway(settings) as gateway:
        assert gateway.run_query("MATCH (m:ModelVersion {active: false}) RETURN count(m) AS n", {}) == [
            {"n": 0}
        ]
        deleted = [
            gateway.write(models.DELETE_VERSION, {"id": v, "owner": ""}).nodes_deleted
            for v in ("v1", "v2", "v4")
        ]
        left = gateway.run_query("MATCH (m:ModelVersion) RETURN m.id AS id ORDER BY id", {})
    assert deleted == [1, 1, 0] and left == [{"id": "v3"}, {"id": "v4"}]


def test_kill_9_keeps_every_acknowledged_write(data_dir: Path) -> None:
    """The AOF is replayed in full after kill -9, including the tail written after a rewrite.

    This holds whatever the fsync policy (the kernel keeps what the server wrote); the power cut in
    tests/test_durability.py is what tells fsync on from off.
    """
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


def test_threads_sharing_a_gateway_see_only_graph_unavailable_through_kill_9(data_dir: Path) -> None:
    """A crash under concurrent reads: every failed call is GraphUnavailable (503), nothing else.

    The serving processes share one gateway among their threads. When one thread's call fails, the
    next call reconnects; another thread still inside a call on the old connection must get the
    same GraphUnavailable, not an error from a client closed under it (once a 500 in CI).
    """
    settings = Settings(data_dir=data_dir)
    server = EmbeddedServer(data_dir)
    server.start()
    _add_users(settings, [f"u{i}" for i in range(2_000)])
    gateway = open_gateway(settings)
    stop = threading.Event()
    unexpected: list[BaseException] = []
    answered = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                gateway.read_many([(admin.NODE_COUNTS, {}), (admin.NODE_COUNTS, {})])
                gateway.read(admin.NODE_COUNTS)
                answered[0] += 1
            except GraphUnavailable:
                time.sleep(0.001)
            except BaseException as exc:  # anything else is the defect
                unexpected.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for thread in threads:
        thread.start()
    admin_client = server.running().client()
    try:
        # Dropping every connection is the crash's effect on the clients, repeated far more often
        # than restarts allow; then a real kill -9 and restart.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and not unexpected:
            admin_client.client_kill_filter(_type="normal", skipme=True)
            time.sleep(0.005)
        server.kill()
        time.sleep(0.2)
        server.start()
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        gateway.close()
        admin_client.close()
    assert unexpected == [], [f"{type(e).__module__}.{type(e).__qualname__}: {e}" for e in unexpected[:3]]
    assert answered[0] > 0
    assert _user_count(settings) == 2_000


def test_binds_loopback_and_requires_the_generated_password(data_dir: Path) -> None:
    info = EmbeddedServer(data_dir).start()
    assert info.host == "127.0.0.1"
    assert len(info.password) >= 24
    anonymous = redis.Redis(host="127.0.0.1", port=info.port)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    assert info.client().config_get("bind")["bind"] == "127.0.0.1"
    assert info.client().config_get("appendonly")["appendonly"] == "yes"
    # a crash ends the process at once (no memory test that maps FalkorDB's whole reservation)
    assert info.client().config_get("crash-memcheck-enabled")["crash-memcheck-enabled"] == "no"
    password_file = data_dir / "falkordb" / "password"
    assert oct(password_file.stat().st_mode & 0o777) == "0o600"


def test_start_reuses_the_running_server(data_dir: Path) -> None:
    server = EmbeddedServer(data_dir)
    assert server.start().pid == server.start().pid


def _owned_server(data_dir: Path) -> tuple[subprocess.Popen[str], int]:
    """A process that starts the server attached (its owner) and sleeps; and the server's pid."""
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
    return owner, int(owner.stdout.readline())


def test_attached_server_dies_with_its_owner(data_dir: Path) -> None:
    owner, server_pid = _owned_server(data_dir)
    assert _pid_alive(server_pid)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    assert _wait_gone(server_pid), "the graph server outlived its owner"
    assert EmbeddedServer(data_dir).running() is None


def test_db_start_refuses_a_server_another_live_process_owns(data_dir: Path) -> None:
    """`kgrec db start` handed back the server a running `kgrec import` owned, saying it stays up until
    `kgrec db stop`, though it stopped with its owner: it now refuses, naming the owner."""
    owner, server_pid = _owned_server(data_dir)
    try:
        started = kgrec_cli("db", "start", env=_operator_env(data_dir), timeout=120)
        assert started.returncode == 1, started.stdout
        assert started.stderr.strip().splitlines() == [
            f"kgrec: error: the graph server (pid {server_pid}) is running for process {owner.pid} and "
            "stops when that exits; start it detached once that process has finished"
        ]
        assert "running" not in started.stdout
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    assert _wait_gone(server_pid)
    started = kgrec_cli("db", "start", env=_operator_env(data_dir), timeout=120)  # its owner gone: starts
    assert started.returncode == 0, started.stderr
    assert EmbeddedServer(data_dir).running().owner_pid is None
    EmbeddedServer(data_dir).stop()


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


def test_a_record_copied_from_another_data_dir_never_stops_that_ones_servers(tmp_path: Path) -> None:
    """``server.json`` naming another data directory's live servers (pids of redis-servers) is
    stale here: ``kgrec db stop`` and the start-up check leave those servers running."""
    a, b = tmp_path / "a", tmp_path / "b"
    theirs = EmbeddedServer(a).start(detached=True)
    try:
        companion = json.loads(EmbeddedServer(a).impressions.info_path.read_text())
        ours = EmbeddedServer(b)
        ours.impressions.dir.mkdir(parents=True)
        for port in (1, theirs.port):  # another port, or the same one (the record copied as it was)
            ours.info_path.write_text(json.dumps({**asdict(theirs), "port": port, "owner_pid": None}))
            ours.impressions.info_path.write_text(json.dumps({**companion, "owner_pid": None}))
            stopped = kgrec_cli("db", "stop", env=_operator_env(b), timeout=120)
            assert stopped.returncode == 0, stopped.stderr
            assert "not running" in stopped.stdout
            assert _pid_alive(theirs.pid) and _pid_alive(companion["pid"])
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        ours.info_path.write_text(json.dumps({**asdict(theirs), "owner_pid": dead.pid}))  # an "orphan"
        assert ours.running() is None
        assert _pid_alive(theirs.pid) and EmbeddedServer(a).running() == theirs
    finally:
        EmbeddedServer(a).stop()


def test_a_data_dir_with_quotes_and_backslashes_in_its_path_works(tmp_path: Path) -> None:
    data_dir = tmp_path / 'shop "a" \\ b'
    settings = Settings(data_dir=data_dir)
    server = EmbeddedServer(data_dir)
    try:
        server.start()
        _add_users(settings, ["u1", "u2"])
        assert server.stop() is True
        server.start()
        assert _user_count(settings) == 2  # read back from the AOF in that folder
        assert list(data_dir.rglob("*.aof"))
    finally:
        server.stop()
