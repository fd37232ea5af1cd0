"""The embedded impressions' redis-server: impressions go there (not to the graph server), it keeps every
acknowledged impression through kill -9, ``kgrec up``'s supervisor restarts it, and /readyz reports it.

Real redis-server processes (the graph server with FalkorDB, the impressions server without), real API.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.gateway import GraphUnavailable
from kgrec.impressions import ImpressionStore, impressions_redis_url
from kgrec.runtime import embedded_server
from kgrec.supervision import restart_counts
from kgrec_cli.supervisor import GraphProcess, ImpressionsProcess, Supervisor
from tests.conftest import embedded_only
from tests.processes import ApiProcess, graph_errors_total, wait_for

pytestmark = embedded_only


def record(store: ImpressionStore, user: str, items: list[str]) -> str:
    """Record one recommendations answer; returns its recommendation_id (the acknowledgement)."""
    return store.record(
        surface="recommendations",
        user_id=user,
        items=[(item, 1.0 / rank) for rank, item in enumerate(items, 1)],
        model_version="m1",
        filters={},
        now_ms=int(time.time() * 1000),
    )


def test_impressions_go_to_their_own_server_without_the_graph_module_or_a_per_write_fsync(
    own_server: Any,
) -> None:
    server, settings = own_server
    info = server.running()
    assert info is not None and info.impressions_port not in (None, info.port)
    store = ImpressionStore(settings)
    recommendation_id = record(store, "u1", ["i1", "i2"])
    store.settle()  # shipped from this process's journal to the stream
    assert impressions_redis_url(settings) == info.impressions_url()
    impressions = redis.Redis.from_url(info.impressions_url())
    graph = info.client(db=3)
    try:
        assert impressions.xlen(store.stream) == 1
        assert graph.exists(store.stream) == 0  # not in database 3 of the graph server any more
        assert impressions.config_get("appendfsync") == {"appendfsync": "no"}
        assert impressions.config_get("appendonly") == {"appendonly": "yes"}
        assert graph.config_get("appendfsync") == {"appendfsync": "always"}  # the graph keeps its fsync
        assert b"graph" not in {module[b"name"] for module in impressions.module_list()}
        assert (Path(info.data_dir) / "impressions" / "data").is_dir()
        recorded = store.get(recommendation_id)
        assert recorded is not None and [s.item_id for s in recorded.items] == ["i1", "i2"]
    finally:
        impressions.close()
        graph.close()
        store.close()


def test_the_impressions_fsync_policy_is_a_validated_setting(tmp_path: Path) -> None:
    assert Settings.from_env({}).impressions_fsync == "no"
    with pytest.raises(ValueError, match="KGREC_IMPRESSIONS_AOF_FSYNC"):
        Settings.from_env({"KGREC_IMPRESSIONS_AOF_FSYNC": "sometimes"})
    settings = Settings.from_env({"KGREC_IMPRESSIONS_AOF_FSYNC": "everysec", "KGREC_DATA_DIR": str(tmp_path)})
    server = embedded_server(settings)
    info = server.start()
    try:
        client = redis.Redis.from_url(info.impressions_url() or "")
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        client.close()
    finally:
        server.stop()
    assert server.running() is None and server.impressions.running() is None


def test_a_server_recorded_by_an_older_kgrec_keeps_working_and_gets_its_impressions_server(
    own_server: Any,
) -> None:
    server, settings = own_server
    info = server.running()
    assert info is not None
    # What an older kgrec wrote: no impressions server.
    stored = json.loads(server.info_path.read_text())
    del stored["impressions_port"]
    server.info_path.write_text(json.dumps(stored))
    server.impressions.stop()
    older = server.running()
    assert older is not None and older.impressions_port is None and older.pid == info.pid
    assert impressions_redis_url(settings) == older.redis_url(3)  # database 3, as before
    # Starting finds the running graph server and adds the impressions server beside it.
    upgraded = server.start()
    assert upgraded.pid == info.pid and upgraded.impressions_port is not None
    assert EmbeddedServer(settings.data_dir).running() == upgraded
    assert impressions_redis_url(settings) == upgraded.impressions_url()


def test_impressions_an_older_kgrec_kept_in_the_graph_server_move_to_the_impressions_server(
    own_server: Any,
) -> None:
    server, settings = own_server
    info = server.running()
    assert info is not None
    # An older kgrec recorded into database 3 of the graph server (REDIS_URL pointing there does the same).
    older = ImpressionStore(replace(settings, redis_url=info.redis_url(0)))
    ids = [record(older, f"u{n}", [f"i{n}", "shared"]) for n in range(30)]
    older.settle()
    graph = info.client(db=3)
    assert graph.xlen(older.stream) == 30 and graph.pttl(older.user_key("u1")) > 0
    older.close()
    server.stop()
    info = server.start()
    store = ImpressionStore(settings)
    try:
        assert [store.get(rid) is not None for rid in ids] == [True] * 30
        assert store.recent_entry_ids(["u1"])["u1"]  # the users' indexes came along, with their TTL
        moved = redis.Redis.from_url(info.impressions_url() or "")
        assert 0 < moved.pttl(store.user_key("u1")) <= int(settings.attribution_window_hours * 3_600_000)
        moved.close()
        graph = info.client(db=3)
        assert graph.dbsize() == 0
        # Kill -9 right after: the moved keys are in its append-only file.
        server.kill_impressions()
        server.start()
        assert [store.get(rid) is not None for rid in ids] == [True] * 30
    finally:
        graph.close()
        store.close()


def test_no_acknowledged_impression_is_lost_to_kill_9_of_the_impressions_server_nor_refused(
    own_server: Any,
) -> None:
    server, settings = own_server
    store = ImpressionStore(settings)
    acknowledged: list[tuple[str, str, list[str]]] = []
    refused: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            user, items = f"user-{n}-{i % 7}", [f"item-{n}-{i}-{k}" for k in range(5)]
            try:
                recommendation_id = record(store, user, items)
            except GraphUnavailable as exc:
                refused.append(str(exc))
                time.sleep(0.02)
                continue
            with lock:
                acknowledged.append((recommendation_id, user, items))
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        before = len(acknowledged)
        first = server.impressions.running()
        server.kill_impressions()  # writes in flight
        time.sleep(0.5)
        server.start()  # the graph server is running: this restarts only the impressions server
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    restarted = server.impressions.running()
    assert first is not None and restarted is not None and restarted.pid != first.pid
    assert restarted.port == first.port  # clients that know the port reconnect
    server.kill_impressions()
    server.start()  # what its append-only file kept, and nothing else
    assert before > 50 and len(acknowledged) > before + 50, (before, len(acknowledged))
    assert refused == []  # recording is an append to the journal: it goes on while the server is down
    reader = ImpressionStore(settings)
    lost = []
    for recommendation_id, user, items in acknowledged:
        recorded = reader.get(recommendation_id)
        if recorded is None or recorded.user_id != user or [s.item_id for s in recorded.items] != items:
            lost.append(recommendation_id)
    assert lost == [], f"{len(lost)} of {len(acknowledged)} acknowledged impressions lost"
    reader.close()
    store.close()


def test_a_graph_server_killed_alone_leaves_the_impressions_server_recording(own_server: Any) -> None:
    server, settings = own_server
    graph, companion = server.running(), server.impressions.running()
    assert graph is not None and companion is not None
    store = ImpressionStore(settings)
    before = record(store, "u1", ["i1"])
    os.kill(graph.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while server.running() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.running() is None
    during = record(store, "u1", ["i2"])  # its clients know its port: recording goes on
    restarted = server.start()
    assert restarted.pid != graph.pid and restarted.impressions_port == companion.port
    assert server.impressions.running() == companion  # kept, not restarted
    assert store.get(before) is not None and store.get(during) is not None
    store.close()


def test_the_supervisor_restarts_a_killed_impressions_server(own_server: Any) -> None:
    server, settings = own_server
    graph, impressions = GraphProcess(server), ImpressionsProcess(server)
    graph.launch()  # already running: found, not started again
    impressions.launch()
    lines: list[str] = []
    supervisor = Supervisor(
        settings.data_dir, graph, [], should_stop=lambda: False, log=lines.append, servers=[impressions]
    )
    store = ImpressionStore(settings)
    kept = record(store, "u1", ["i1"])
    # Shipped before the kill, so only the supervisor acts on the dead server here (this test
    # supervises and records in one process, which `kgrec up` never does).
    store.settle()
    first = server.impressions.running()
    assert first is not None and impressions.poll() is None
    os.kill(first.pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while restart_counts(settings.data_dir)["impressions"] < 1 and time.monotonic() < deadline:
        supervisor.check()
        time.sleep(0.05)
    assert restart_counts(settings.data_dir) == {
        "graph": 0,
        "impressions": 1,
        "api": 0,
        "worker": 0,
        "trainer": 0,
        "beat": 0,
    }
    assert lines[0].startswith("kgrec up: impressions killed by SIGKILL after "), lines
    assert lines[1] == "kgrec up: impressions restarted (restart 1)", lines
    again = server.impressions.running()
    assert again is not None and again.pid != first.pid and again.port == first.port
    assert impressions.poll() is None and graph.poll() is None
    # Its clients reconnect by themselves (a call on a connection the kill broke may fail once).
    try:
        record(store, "u1", ["i2"])
    except GraphUnavailable:
        record(store, "u1", ["i2"])
    assert store.get(kept) is not None and store.length() >= 2
    store.close()
    supervisor.stop_all()
    assert server.running() is None and server.impressions.running() is None


def test_readiness_reports_the_impression_store(small_api: ApiProcess, graph_server: EmbeddedServer) -> None:
    ready = requests.get(f"{small_api.url}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["impressions"] == "ok", ready.text
    graph_errors = graph_errors_total(small_api)
    graph_server.kill_impressions()
    try:
        down = requests.get(f"{small_api.url}/readyz", timeout=30)
        assert down.status_code == 503 and int(down.headers["Retry-After"]) > 0, down.text
        # The store that is down is named: the graph still answers, and no graph error is counted.
        assert down.json()["error"] == "impressions_unavailable", down.text
        assert "impression store" in down.json()["detail"]
        assert graph_errors_total(small_api) == graph_errors
    finally:
        graph_server.start()
    assert wait_for(f"{small_api.url}/readyz").json()["impressions"] == "ok"
