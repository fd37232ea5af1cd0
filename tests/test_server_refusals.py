"""Servers that answer but refuse to write for a while: the embedded graph server (also the job
queue's broker and result store) and the impression store at their memory limit (`maxmemory`; a
full disk, MISCONF, and a read-only replica are the same kind of refusal,
:mod:`kgrec.server_refusals`). Under a real gunicorn API each is a 503 with Retry-After that wrote
nothing, and the same request is applied once the server writes again. Before, each was a 500."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
import requests

from graph_schema.statements.serving import USER_HISTORY
from kgrec import erasure
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer, ServerInfo
from kgrec.gateway import open_gateway
from kgrec.migrations import migrate
from tests.conftest import embedded_only
from tests.processes import ApiProcess

pytestmark = embedded_only

KEY = "test-key-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiProcess, ServerInfo, Settings]]:
    """A migrated embedded server and a real API on it."""
    work = tmp_path_factory.mktemp("refusals")
    settings = Settings(data_dir=work / "var")
    server = EmbeddedServer(settings.data_dir)
    info = server.start()
    with open_gateway(settings) as gateway:
        migrate(gateway)
    api = ApiProcess(
        {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_API_KEYS": KEY}, log=work / "gunicorn.log"
    )
    try:
        yield api.start(), info, settings
    finally:
        api.stop()
        server.stop()


# How a server is made to refuse every write, and how it is let write again: its memory limit
# (redis-py raises OutOfMemoryError) and a replica count it cannot have (NOREPLICAS, a plain
# ResponseError whose code redis-py moves behind its own words when the command was pipelined).
REFUSALS = {
    "maxmemory": ("maxmemory", "1", "0"),
    "noreplicas": ("min-replicas-to-write", "1", "0"),
}


@pytest.fixture(params=list(REFUSALS))
def refusal(request: pytest.FixtureRequest) -> str:
    """Each way a server is made to refuse writes, in turn."""
    return str(request.param)


def refusing(info: ServerInfo, port: int, refusal: str, on: bool) -> None:
    """Make the server on ``port`` refuse every write as ``refusal`` says, or let it write again."""
    setting, refuse, allow = REFUSALS[refusal]
    client = redis.Redis(host=info.host, port=port, password=info.password)
    try:
        client.config_set(setting, refuse if on else allow)
    finally:
        client.close()


def refused_while(
    info: ServerInfo, port: int, refusal: str, error: str, send: Callable[[], requests.Response]
) -> None:
    """``send`` while the server on ``port`` refuses writes: a 503 ``error`` with Retry-After."""
    refusing(info, port, refusal, True)
    try:
        refused = send()
    finally:
        refusing(info, port, refusal, False)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"] == error and refused.headers["Retry-After"]


def event(event_id: str, user_id: str) -> dict[str, object]:
    return {
        "event_id": event_id,
        "user_id": user_id,
        "item_id": "p-1",
        "type": "view",
        "ts": int(time.time() * 1000),
    }


def users(settings: Settings, user_id: str) -> int:
    """How many items the user has interacted with (0: no such user)."""
    with open_gateway(settings) as gateway:
        return len(gateway.read(USER_HISTORY, {"user_id": user_id, "limit": 10}))


def test_events_meet_a_graph_server_that_refuses_writes(
    refusal: str, stack: tuple[ApiProcess, ServerInfo, Settings]
) -> None:
    api, info, settings = stack
    refused_while(
        info,
        info.port,
        refusal,
        "graph_unavailable",
        lambda: requests.post(
            f"{api.url}/v1/events", json=[event(f"e-{refusal}", f"u-{refusal}")], headers=AUTH, timeout=60
        ),
    )
    assert users(settings, f"u-{refusal}") == 0  # nothing written
    again = requests.post(
        f"{api.url}/v1/events", json=[event(f"e-{refusal}", f"u-{refusal}")], headers=AUTH, timeout=60
    )
    assert again.status_code == 200, again.text
    assert users(settings, f"u-{refusal}") == 1


def test_an_erasure_meets_an_impression_store_that_refuses_writes(
    refusal: str, stack: tuple[ApiProcess, ServerInfo, Settings]
) -> None:
    api, info, settings = stack
    posted = requests.post(
        f"{api.url}/v1/events",
        json=[event(f"e-erase-{refusal}", f"u-erase-{refusal}")],
        headers=AUTH,
        timeout=60,
    )
    assert posted.status_code == 200, posted.text
    refused_while(
        info,
        info.impressions_port,
        refusal,
        "impressions_unavailable",
        lambda: requests.delete(f"{api.url}/v1/users/u-erase-{refusal}", headers=AUTH, timeout=60),
    )
    assert users(settings, f"u-erase-{refusal}") == 1  # the user is still there: the resend erases them
    erased = requests.delete(f"{api.url}/v1/users/u-erase-{refusal}", headers=AUTH, timeout=60)
    assert erased.status_code == 200, erased.text
    assert erased.json()["logs"]["graph"] == erasure.REWRITTEN
    assert users(settings, f"u-erase-{refusal}") == 0


def test_a_log_rewrite_the_server_does_not_permit_is_reported_refused(
    stack: tuple[ApiProcess, ServerInfo, Settings],
) -> None:
    """redis-py raises NOPERM as NoPermissionError without the code in its text: before, such a
    rewrite was reported ``failed`` (the server's fault) instead of ``refused`` (not allowed)."""
    _api, info, _settings = stack
    owner = redis.Redis(host=info.host, port=info.port, password=info.password)
    owner.acl_setuser(
        "no-rewrite", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-bgrewriteaof"]
    )
    limited = redis.Redis(host=info.host, port=info.port, username="no-rewrite", password="pw")
    try:
        assert erasure.rewrite_log(limited) == erasure.REFUSED
    finally:
        limited.close()
        owner.acl_deluser("no-rewrite")
        owner.close()


def test_a_job_meets_a_broker_that_refuses_writes(
    refusal: str, stack: tuple[ApiProcess, ServerInfo, Settings]
) -> None:
    """Embedded, the graph server is also the Celery broker and result store."""
    api, info, _settings = stack
    refused_while(
        info,
        info.port,
        refusal,
        "queue_unavailable",
        lambda: requests.post(f"{api.url}/v1/models/train", headers=AUTH, timeout=60),
    )
    queued = requests.post(f"{api.url}/v1/models/train", headers=AUTH, timeout=60)
    assert queued.status_code == 200, queued.text
