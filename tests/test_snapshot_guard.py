"""The snapshot guard: no snapshot FalkorDB 4.16.3 cannot read back (a label at 63,999 or 64,000 nodes).

Both tests use the real embedded server and restart it from what it left on disk. The second is
also a canary: it fails once the engine reads such a snapshot back, and then the guard can go.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kgrec.config import Settings
from kgrec.embedded import (
    AUTO_REWRITE_PERCENTAGE,
    UNLOADABLE_LABEL_COUNTS,
    EmbeddedServer,
    EmbeddedServerError,
)
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.job_queue import GUARD_SNAPSHOTS, job_client
from kgrec_cli.stack import worker_argv
from tests.conftest import embedded_only
from tests.processes import background

pytestmark = embedded_only

UNLOADABLE = max(UNLOADABLE_LABEL_COUNTS)


def _add_tags(gateway: GraphGateway, first: int, last: int) -> None:
    gateway.run_query(
        "UNWIND range($first, $last) AS n CREATE (:Tag {id: 'tag-' + toString(n)})",
        {"first": first, "last": last},
    )


def _tag_count(gateway: GraphGateway) -> int:
    return int(gateway.run_query("MATCH (t:Tag) RETURN count(t) AS count", {})[0]["count"])


def _rewrites_and_percentage(server: EmbeddedServer) -> tuple[int, int]:
    info = server.running()
    assert info is not None
    client = info.client()
    try:
        rewrites = int(client.info("persistence")["aof_rewrites"])
        percentage = int(client.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"])
    finally:
        client.close()
    return rewrites, percentage


def _restart(server: EmbeddedServer) -> None:
    server.stop()
    server.start()


def test_a_label_at_an_unloadable_count_holds_snapshots_off_and_the_graph_still_loads_back(
    own_server: tuple[EmbeddedServer, Settings],
) -> None:
    server, settings = own_server
    with open_gateway(settings) as gateway:
        _add_tags(gateway, 1, UNLOADABLE)
        before, _ = _rewrites_and_percentage(server)
        assert gateway.guard_snapshots() == {"Tag": UNLOADABLE}
        gateway.after_bulk_load()  # would rewrite the AOF, so write a snapshot: held off
        assert _rewrites_and_percentage(server) == (before, 0)

    _restart(server)  # replays the statement log: no snapshot to trip over
    with open_gateway(settings) as gateway:
        assert _tag_count(gateway) == UNLOADABLE
        _add_tags(gateway, UNLOADABLE + 1, UNLOADABLE + 1)
        assert gateway.guard_snapshots() == {}
        gateway.after_bulk_load()
        assert _rewrites_and_percentage(server) == (1, AUTO_REWRITE_PERCENTAGE)

    _restart(server)  # now from the snapshot
    with open_gateway(settings) as gateway:
        assert _tag_count(gateway) == UNLOADABLE + 1


def test_without_the_guard_the_engine_cannot_load_the_snapshot_and_start_says_why(
    own_server: tuple[EmbeddedServer, Settings],
) -> None:
    server, settings = own_server
    with open_gateway(settings) as gateway:
        _add_tags(gateway, 1, UNLOADABLE)
    server.rewrite_aof()  # what the automatic rewrite would do without the guard
    server.stop()
    with pytest.raises(EmbeddedServerError) as refused:
        server.start()
    message = str(refused.value)
    assert "crashed loading its snapshot" in message
    assert "FalkorDB issue #1779" in message


def test_a_worker_runs_the_guard_that_beat_schedules(
    broker_graph: tuple[dict[str, str], Settings, GraphGateway], graph_server: EmbeddedServer, tmp_path: Path
) -> None:
    env, settings, gateway = broker_graph
    assert job_client(settings).conf.beat_schedule["guard-snapshots"]["task"] == GUARD_SNAPSHOTS
    _add_tags(gateway, 1, UNLOADABLE)
    try:
        with background(worker_argv(pool="solo"), env, tmp_path / "worker.log"):
            held = job_client(settings).send_task(GUARD_SNAPSHOTS).get(timeout=120)
            assert held == {"Tag": UNLOADABLE}
            assert _rewrites_and_percentage(graph_server)[1] == 0
            gateway.run_query("MATCH (t:Tag) DELETE t", {})
            assert job_client(settings).send_task(GUARD_SNAPSHOTS).get(timeout=120) == {}
            assert _rewrites_and_percentage(graph_server)[1] == AUTO_REWRITE_PERCENTAGE
    finally:
        gateway.run_query("MATCH (t:Tag) DELETE t", {})
        gateway.guard_snapshots()  # the session's server writes snapshots again
