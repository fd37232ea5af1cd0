"""``POST /v1/events`` over real HTTP (gunicorn) against the real graph: validation, auth, the batch cap,
racing writers, durability."""

from __future__ import annotations

import contextlib
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.erasure import ERASURE_TIME_MARGIN_MS
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.limits import MAX_EVENTS_PER_BATCH
from kgrec.migrations import migrate
from tests.conftest import embedded_only
from tests.processes import ApiProcess

KEY = "test-key-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {KEY}"}


def now_ms() -> int:
    return int(time.time() * 1000)


def event(event_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": "alice",
        "item_id": "lipstick",
        "type": "view",
        "ts": now_ms(),
        **overrides,
    }


@pytest.fixture(scope="module")
def api(
    settings: Settings, graph_server: EmbeddedServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ApiProcess, GraphGateway]]:
    """A gunicorn API on its own graph of the session's server."""
    graph_name = f"api_{uuid.uuid4().hex[:8]}"
    gateway = open_gateway(settings, graph_name=graph_name if settings.embedded else None)
    migrate(gateway)
    env = {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_GRAPH": graph_name, "KGREC_API_KEYS": KEY}
    process = ApiProcess(env, log=tmp_path_factory.mktemp("api") / "gunicorn.log").start()
    yield process, gateway
    process.stop()
    gateway.close()


def post(
    api: ApiProcess, body: Any, headers: dict[str, str] | None = None, **kwargs: Any
) -> requests.Response:
    return requests.post(
        f"{api.url}/v1/events",
        json=body,
        headers=headers if headers is not None else AUTH,
        timeout=30,
        **kwargs,
    )


def test_valid_batch_is_applied_and_resending_is_counted_as_duplicates(
    api: tuple[ApiProcess, GraphGateway],
) -> None:
    process, gateway = api
    batch = {
        "events": [
            event("api-1", user_id="u-api"),
            event("api-2", user_id="u-api", type="purchase", item={"brand": "Acme", "category": "Lips"}),
        ]
    }
    first = post(process, batch)
    assert first.status_code == 200, first.text
    assert first.json() == {"received": 2, "applied": 2, "duplicates": 0, "erased": 0, "attributed": 0}
    again = post(process, batch)
    assert again.json() == {"received": 2, "applied": 0, "duplicates": 2, "erased": 0, "attributed": 0}
    rows = gateway.run_query(
        "MATCH (:User {id: 'u-api'})-[r:INTERACTED]->(:Item {id: 'lipstick'}) RETURN r", {}
    )
    props = rows[0]["r"]["properties"]
    assert (props["n_view"], props["n_purchase"]) == (1, 1)


def test_invalid_batch_lists_every_problem_and_writes_nothing(api: tuple[ApiProcess, GraphGateway]) -> None:
    process, gateway = api
    batch = [
        event("bad-0", user_id="u-bad"),  # fine on its own
        event("bad-1", user_id="u-bad", type="teleport"),
        event("bad-2", user_id="u-bad", ts=now_ms() + 86_400_000),
        {"event_id": "bad-3", "user_id": "u-bad", "type": "view", "ts": now_ms()},
    ]
    response = post(process, batch)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_failed"
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "type"), (2, "ts"), (3, "item_id")]
    assert "teleport" in body["errors"][0]["reason"] and "future" in body["errors"][1]["reason"]
    assert gateway.run_query("MATCH (u:User {id: 'u-bad'}) RETURN count(u) AS n", {})[0]["n"] == 0


def test_writes_require_a_valid_api_key(api: tuple[ApiProcess, GraphGateway]) -> None:
    process, gateway = api
    batch = [event("auth-1", user_id="u-auth")]
    missing = post(process, batch, headers={})
    wrong = post(process, batch, headers={"Authorization": "Bearer not-the-key"})
    basic = post(process, batch, headers={"Authorization": f"Basic {KEY}"})
    assert [r.status_code for r in (missing, wrong, basic)] == [401, 401, 401]
    assert all(r.json()["error"] == "unauthorized" for r in (missing, wrong, basic))
    assert gateway.run_query("MATCH (u:User {id: 'u-auth'}) RETURN count(u) AS n", {})[0]["n"] == 0
    assert post(process, batch).status_code == 200
    assert requests.get(f"{process.url}/v1/graph/stats", timeout=10).status_code == 200  # reads stay open
    # and the document says so: a generated client may send the key on a read, and need not
    reads = read_security(requests.get(f"{process.url}/openapi.json", timeout=10).json())
    assert reads and all(security == [{}, {"apiKey": []}] for security in reads.values()), reads


def read_security(document: dict[str, Any]) -> dict[str, Any]:
    """The documented ``security`` of every read under /v1 (None: none declared)."""
    return {
        path: operations["get"].get("security")
        for path, operations in document["paths"].items()
        if path.startswith("/v1/") and "get" in operations
    }


def test_a_request_without_a_valid_key_is_401_with_a_bearer_challenge_before_its_path_is_read(
    api: tuple[ApiProcess, GraphGateway],
) -> None:
    """The key is checked before the path's ids: an unauthenticated client learns nothing about the
    id rule, and every 401 names the scheme to use (RFC 6750)."""
    process, _ = api
    url = f"{process.url}/v1/users/%20x"  # an invalid id: a 400 for a client with the key
    for headers in ({}, {"Authorization": "Bearer not-the-key"}):
        refused = requests.delete(url, headers=headers, timeout=30)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"] == "unauthorized"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer ")
    assert post(process, [event("challenge-1")], headers={}).headers["WWW-Authenticate"].startswith("Bearer ")
    invalid = requests.delete(url, headers=AUTH, timeout=30)
    assert invalid.status_code == 400 and invalid.json()["field"] == "user_id", invalid.text


def test_the_consoles_read_proxy_checks_sign_in_before_the_path(api: tuple[ApiProcess, GraphGateway]) -> None:
    """A signed-out read through the console for a bad id was a 400 naming the id rule (the path was
    checked before the sign-in), where the API itself answers 401: now 401 too, and 400 signed in."""
    process, _ = api
    url = f"{process.url}/console/api/v1/users/%20x/interests"  # an invalid id
    signed_out = requests.get(url, timeout=30)
    assert signed_out.status_code == 401, signed_out.text
    assert signed_out.json()["error"] == "unauthorized"
    invalid = console_session(process.url, KEY)[0].get(url, timeout=30)
    assert invalid.status_code == 400 and invalid.json()["field"] == "_rest", invalid.text


def test_a_batch_of_1001_valid_events_is_refused_for_its_size_and_1000_are_applied(
    api: tuple[ApiProcess, GraphGateway],
) -> None:
    process, gateway = api
    assert MAX_EVENTS_PER_BATCH == 1_000  # the documented cap
    batch = [event(f"cap-{i}", user_id="u-cap", item_id=f"cap-item-{i}") for i in range(1_001)]
    # Every event is valid on its own, so only the batch's size can be refused.
    assert validate_batch(batch[:1_000], max_skew_s=300)[1] == []
    assert validate_batch(batch[1_000:], max_skew_s=300)[1] == []

    refused = post(process, batch)
    assert refused.status_code == 422, refused.text[:500]
    assert refused.json()["errors"] == [
        {"index": -1, "field": "events", "reason": "at most 1000 events per batch (got 1001)"}
    ]
    assert gateway.run_query("MATCH (u:User {id: 'u-cap'}) RETURN count(u) AS n", {})[0]["n"] == 0

    accepted = post(process, batch[:1_000])
    assert accepted.status_code == 200, accepted.text[:500]
    assert accepted.json() == {
        "received": 1_000,
        "applied": 1_000,
        "duplicates": 0,
        "erased": 0,
        "attributed": 0,
    }
    assert post(process, batch[1_000:]).json() == {
        "received": 1,
        "applied": 1,
        "duplicates": 0,
        "erased": 0,
        "attributed": 0,
    }


# Times the API once read and now refuses, each with (part of) its reason.
UNREAD_TIMES = {
    "1700000000000": "is a string: send epoch milliseconds as a JSON number",
    "2026-01-01T10:00:00": "has no offset: add Z (UTC) or ±hh:mm",
    "2026-01-01": "is a date without a time of day",
}


def test_ts_is_a_json_number_of_ms_or_a_date_time_with_an_offset_as_the_document_says(
    api: tuple[ApiProcess, GraphGateway],
) -> None:
    process, gateway = api
    refused = UNREAD_TIMES
    answer = post(process, [event(f"ts-bad-{k}", user_id="u-ts", ts=raw) for k, raw in enumerate(refused)])
    assert answer.status_code == 422, answer.text
    got = [(e["index"], e["field"], e["reason"]) for e in answer.json()["errors"]]
    assert [k for k, _, _ in got] == [0, 1, 2], got
    for (_, field, reason), (raw, why) in zip(got, refused.items(), strict=True):
        assert field == "ts" and reason.startswith(repr(raw)) and why in reason, got
    # finer than a millisecond: truncated, as the document says
    assert (
        post(process, [event("ts-fine", user_id="u-ts", ts="2023-11-14T22:13:20.0019Z")]).status_code == 200
    )
    first = gateway.run_query("MATCH (:User {id: 'u-ts'})-[r:INTERACTED]->() RETURN r.first_ts AS t", {})
    assert first == [{"t": 1_700_000_000_001}]
    document = requests.get(f"{process.url}/openapi.json", timeout=30).json()
    ts = document["components"]["schemas"]["Event"]["properties"]["ts"]
    assert "truncated" in ts["description"] and "offset" in ts["description"]
    (date_time,) = [form for form in ts["anyOf"] if form.get("type") == "string"]
    pattern = re.compile(date_time["pattern"])
    assert pattern.search("2023-11-14T22:13:20.0019Z") and pattern.search("2023-11-14T23:13:20+01:00")
    assert not any(pattern.search(raw) for raw in refused)


def test_racing_clients_with_overlapping_event_ids_apply_each_event_once(
    api: tuple[ApiProcess, GraphGateway],
) -> None:
    """Eight clients post overlapping windows of ids at the same instant, round after round."""
    process, gateway = api
    clients, rounds, window, step = 8, 6, 40, 10
    base = now_ms() - 60_000

    def batch(round_no: int, client: int) -> list[dict[str, Any]]:
        first = round_no * 1_000 + client * step
        return [
            event(
                f"race-{k}",
                user_id=f"u-race-{k % 50}",
                item_id=f"race-item-{k}",
                ts=base + k,
                item={"brand": "RaceBrand"},
            )
            for k in range(first, first + window)
        ]

    start = threading.Barrier(clients, timeout=120)

    def send(round_no: int, client: int) -> requests.Response:
        body = batch(round_no, client)
        start.wait()
        return post(process, body)

    responses: list[requests.Response] = []
    with ThreadPoolExecutor(clients) as pool:
        for round_no in range(rounds):
            futures = [pool.submit(send, round_no, c) for c in range(clients)]
            responses.extend(f.result() for f in futures)

    assert [r.status_code for r in responses] == [200] * len(responses), [
        r.text[:300] for r in responses if r.status_code != 200
    ]
    distinct = rounds * ((clients - 1) * step + window)
    results = [r.json() for r in responses]
    assert sum(r["applied"] for r in results) == distinct
    assert sum(r["received"] for r in results) == sum(r["applied"] + r["duplicates"] for r in results)
    stored = gateway.run_query("MATCH (e:Event) WHERE e.id STARTS WITH 'race-' RETURN count(e) AS n", {})
    assert stored[0]["n"] == distinct
    edges = gateway.run_query(
        "MATCH (u:User)-[r:INTERACTED]->(i:Item) WHERE u.id STARTS WITH 'u-race-' "
        "RETURN count(r) AS n, sum(r.n_view) AS views, max(r.n_view) AS most",
        {},
    )
    assert edges == [{"n": distinct, "views": distinct, "most": 1}]
    interests = gateway.run_query(
        "MATCH (u:User)-[x:INTERESTED_IN]->(:Brand {id: 'RaceBrand'}) RETURN sum(x.count) AS events", {}
    )
    assert interests[0]["events"] == distinct


HUGE_INT_EVENT = (
    b'[{"event_id": "h", "user_id": "u", "item_id": "i", "type": "rating", "ts": 1700000000000, "value": '
    + b"9" * 400
    + b"}]"
)


@pytest.mark.parametrize(
    ("data", "content_type", "status"),
    [
        (b'{"events": [', "application/json", 400),
        (b'[{"event_id": "n", "ts": NaN}]', "application/json", 400),
        (b"\xff\xfe[]", "application/json", 400),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400),
        (b"event_id=1", "application/x-www-form-urlencoded", 415),
        (b"[]", "application/json", 422),
        (b"[" + b",".join([b'{"event_id":"x"}'] * 1001) + b"]", "application/json", 422),
        (b"[" + b" " * (5 * 1024 * 1024) + b"]", "application/json", 413),
        (HUGE_INT_EVENT, "application/json", 422),
        (b'[{"event_id": "n", "ts": 1e400}]', "application/json", 422),
        (b'[{"event_id": "n", "ts": ' + b"9" * 5000 + b"}]", "application/json", 400),
    ],
    ids=[
        "truncated",
        "nan",
        "not-utf8",
        "deep",
        "form",
        "empty",
        "too-many",
        "too-big",
        "huge-int-value",
        "overflowing-float",
        "over-long-integer",
    ],
)
def test_malformed_bodies_are_refused(
    api: tuple[ApiProcess, GraphGateway], data: bytes, content_type: str, status: int
) -> None:
    process, _ = api
    response = requests.post(
        f"{process.url}/v1/events", data=data, headers={**AUTH, "Content-Type": content_type}, timeout=30
    )
    assert response.status_code == status, response.text
    assert set(response.json()) >= {"error", "detail"}
    assert "Traceback" not in response.text
    assert "sys." not in response.text  # said in kgrec's words, not Python's


@embedded_only
def test_acknowledged_events_survive_kill_9_of_api_and_graph(tmp_path: Path) -> None:
    """Everything the API acknowledged is there after kill -9 of gunicorn and of the graph server."""
    settings = Settings(data_dir=tmp_path / "var")
    server = EmbeddedServer(settings.data_dir)
    server.start()
    with open_gateway(settings) as gateway:
        migrate(gateway)
    env = {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_API_KEYS": KEY}
    api = ApiProcess(env, log=tmp_path / "gunicorn.log").start()
    try:
        acknowledged = []
        base = now_ms() - 60_000
        for batch in range(20):
            events = [
                event(
                    f"d-{batch}-{i}",
                    user_id=f"user-{i % 7}",
                    item_id=f"item-{batch}",
                    ts=base + batch * 50 + i,
                )
                for i in range(50)
            ]
            response = post(api, events)
            assert response.status_code == 200
            acknowledged.extend(e["event_id"] for e in events)
        api.kill9()
        server.kill()

        # While the graph is down, a restarted API refuses writes with 503 + Retry-After.
        api = ApiProcess(env, port=api.port, log=tmp_path / "gunicorn.log").start()
        down = post(api, [event("while-down")])
        assert down.status_code == 503
        assert int(down.headers["Retry-After"]) > 0
        assert down.json()["error"] == "graph_unavailable"

        server.start()
        with open_gateway(settings) as gateway:
            stored = gateway.run_query("MATCH (e:Event) RETURN e.id AS id", {})
            views = gateway.run_query("MATCH (:User)-[r:INTERACTED]->() RETURN sum(r.n_view) AS n", {})
        assert {r["id"] for r in stored} == set(acknowledged)
        assert views[0]["n"] == len(acknowledged)
        # and the API reconnects by itself
        after = post(api, [event("after-restart")])
        assert after.status_code == 200 and after.json()["applied"] == 1
    finally:
        api.stop()
        server.stop()


def test_reads_can_be_made_to_require_a_key(
    settings: Settings, graph_server: EmbeddedServer | None, tmp_path: Path
) -> None:
    if not settings.embedded:
        pytest.skip("starts its own API on the embedded graph")
    env = {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_API_KEYS": KEY, "KGREC_READ_REQUIRES_KEY": "true"}
    process = ApiProcess(env, log=tmp_path / "gunicorn.log").start()
    try:
        assert requests.get(f"{process.url}/v1/graph/stats", timeout=10).status_code == 401
        assert requests.get(f"{process.url}/v1/graph/stats", headers=AUTH, timeout=10).status_code == 200
        assert requests.get(f"{process.url}/healthz", timeout=10).status_code == 200
        # A client generated from the document sends the key on reads too (it did not: reads had no
        # security, so every generated read was a 401).
        document = requests.get(f"{process.url}/openapi.json", timeout=10).json()
        reads = read_security(document)
        assert reads and all(security == [{"apiKey": []}] for security in reads.values()), reads
        assert "security" not in document["paths"]["/healthz"]["get"]  # the probes stay open
    finally:
        process.stop()


def csrf_of(html: str) -> str:
    found = re.search(r'(?:name="csrf_token" value|data-csrf)="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def console_session(url: str, key: str) -> tuple[requests.Session, str]:
    """A requests session signed in to the console with ``key``, and its CSRF token."""
    session = requests.Session()
    token = csrf_of(session.get(f"{url}/console/signin", timeout=30).text)
    signed_in = session.post(
        f"{url}/console/signin",
        data={"csrf_token": token, "api_key": key},
        headers={"Origin": url},
        timeout=30,
    )
    assert signed_in.status_code == 200 and "Signed in" in signed_in.text, signed_in.text[:300]
    return session, csrf_of(signed_in.text)


def console_promote(url: str, key: str) -> str:
    """Sign in to the console with ``key`` and promote a version that does not exist: the notice."""
    session, token = console_session(url, key)
    origin = {"Origin": url}
    answer = session.post(
        f"{url}/console/models/no-such-version/promote",
        data={"csrf_token": token},
        headers=origin,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text[:300]
    return answer.text


@contextlib.contextmanager
def scoped_api(settings: Settings, tmp_path: Path, **env: str) -> Iterator[tuple[ApiProcess, GraphGateway]]:
    """A gunicorn API on a graph of its own, with a storefront's key (KGREC_API_KEYS), an admin key
    (KGREC_ADMIN_KEYS) and ``env``; skips where the graph is not the embedded one."""
    if not settings.embedded:
        pytest.skip("starts its own API on the embedded graph")
    graph_name = f"scope_{uuid.uuid4().hex[:8]}"
    gateway = open_gateway(settings, graph_name=graph_name)
    migrate(gateway)
    scoped = {
        "KGREC_DATA_DIR": str(settings.data_dir),
        "KGREC_GRAPH": graph_name,
        "KGREC_API_KEYS": f"shop-{uuid.uuid4().hex}",
        "KGREC_ADMIN_KEYS": f"ops-{uuid.uuid4().hex}",
        **env,
    }
    process = ApiProcess(scoped, log=tmp_path / "gunicorn.log").start()
    try:
        yield process, gateway
    finally:
        process.stop()
        gateway.close()


def test_admin_operations_need_an_admin_key_once_admin_keys_are_set(
    settings: Settings, graph_server: EmbeddedServer | None, tmp_path: Path
) -> None:
    """With KGREC_ADMIN_KEYS set, a storefront's key sends events and nothing else that writes: every
    other write (erasure, export, catalogue, rules, experiments, models) is a 403 naming it, and the
    document marks each. An admin key is an API key too, in the API and in the console."""
    with scoped_api(settings, tmp_path) as (process, gateway):
        shop_key, ops_key = process.env["KGREC_API_KEYS"], process.env["KGREC_ADMIN_KEYS"]
        shop, ops = {"Authorization": f"Bearer {shop_key}"}, {"Authorization": f"Bearer {ops_key}"}
        user = f"u-scope-{uuid.uuid4().hex[:6]}"
        assert post(process, [event("scope-1", user_id=user)], headers=shop).status_code == 200
        assert post(process, [event("scope-2", user_id=user)], headers=ops).status_code == 200

        document = requests.get(f"{process.url}/openapi.json", timeout=30).json()
        writes = {(m, p) for p, operations in document["paths"].items() for m in operations if m != "get"}
        admin = admin_operations(document)
        assert writes - admin == {("post", "/v1/events"), ("delete", "/v1/users/{user_id}")}
        assert document["paths"]["/v1/events"]["post"]["security"] == [{"apiKey": []}]
        assert document["paths"]["/v1/users/{user_id}"]["delete"]["security"] == ERASE_SECURITY
        refuse_admin_operations(process, document, shop, user)
        assert requests.delete(f"{process.url}/v1/users/{user}", timeout=30).status_code == 401
        refused = requests.delete(f"{process.url}/v1/users/{user}", headers=shop, timeout=30)
        assert refused.status_code == 403, refused.text
        assert "DELETE /v1/users/{user_id} needs an erase key or an admin key" in refused.json()["detail"]
        assert 'scope="erase"' in refused.headers["WWW-Authenticate"]
        count = "MATCH (u:User {id: $user}) RETURN count(u) AS n"
        assert gateway.run_query(count, {"user": user})[0]["n"] == 1  # nothing was erased
        erased = requests.delete(f"{process.url}/v1/users/{user}", headers=ops, timeout=60)
        assert erased.status_code == 200, erased.text
        assert gateway.run_query(count, {"user": user})[0]["n"] == 0

        # The console forwards its forms with the signed-in key: the API decides, as for any client.
        assert "failed (403)" in console_promote(process.url, shop_key)
        assert "(403)" not in console_promote(process.url, ops_key)


# An erasure's OpenAPI security: an admin key or an erase key (alternatives).
ERASE_SECURITY = [{"apiKey": ["admin"]}, {"apiKey": ["erase"]}]


def admin_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    """The (method, path) of every operation the document gives the admin role alone."""
    return {
        (method, path)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") == [{"apiKey": ["admin"]}]
    }


def refuse_admin_operations(
    process: ApiProcess, document: dict[str, Any], headers: dict[str, str], user: str
) -> None:
    """Every admin operation is a 403 naming it for the key in ``headers``, each documented so."""
    for method, path in sorted(admin_operations(document)):
        target = process.url + re.sub(r"\{[^}]+\}", user, path)
        refused = requests.request(method, target, headers=headers, json={}, timeout=30)
        assert refused.status_code == 403, f"{method} {path}: {refused.text}"
        assert refused.json()["error"] == "forbidden"
        assert f"{method.upper()} {path} needs an admin key" in refused.json()["detail"]
        assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
        assert "403" in document["paths"][path][method]["responses"]


def test_an_erase_key_erases_users_and_does_nothing_else_an_admin_key_does(
    settings: Settings, graph_server: EmbeddedServer | None, tmp_path: Path
) -> None:
    """A storefront that erases on account deletion needed an admin key, and with it could change the
    catalogue and models and list users. An erase key (KGREC_ERASE_KEYS) erases, sends events and
    reads as a storefront's key, and is refused every admin operation."""
    eraser = f"erase-{uuid.uuid4().hex}"
    with scoped_api(settings, tmp_path, KGREC_ERASE_KEYS=eraser) as (process, gateway):
        erase = {"Authorization": f"Bearer {eraser}"}
        ops = {"Authorization": f"Bearer {process.env['KGREC_ADMIN_KEYS']}"}
        users = [f"u-erase-{n}-{uuid.uuid4().hex[:6]}" for n in range(2)]
        batch = [event(f"erase-{n}-{user}", user_id=user) for n, user in enumerate(users)]
        assert post(process, batch, headers=erase).status_code == 200
        reads = requests.get(f"{process.url}/v1/users/{users[0]}/interests", headers=erase, timeout=30)
        assert reads.status_code == 200, reads.text
        document = requests.get(f"{process.url}/openapi.json", timeout=30).json()
        assert document["paths"]["/v1/users/{user_id}"]["delete"]["security"] == ERASE_SECURITY
        assert "403" in document["paths"]["/v1/users/{user_id}"]["delete"]["responses"]
        refuse_admin_operations(process, document, erase, users[0])
        count = "MATCH (u:User) WHERE u.id IN $users RETURN count(u) AS n"
        assert gateway.run_query(count, {"users": users})[0]["n"] == 2
        for user, headers in zip(users, (erase, ops), strict=True):  # an admin key erases too
            erased = requests.delete(f"{process.url}/v1/users/{user}", headers=headers, timeout=60)
            assert erased.status_code == 200, erased.text
        assert gateway.run_query(count, {"users": users})[0]["n"] == 0


# The reads that list users or another user's history: admin-scoped once KGREC_ADMIN_KEYS is set.
USER_LISTING_READS = {
    "/v1/audiences": "?item={item}",
    "/v1/search": "?q={user}",
    "/v1/users/{user_id}/timeline": "",
    "/v1/items/{item_id}/neighbourhood": "",
}


def test_reads_that_list_users_need_an_admin_key_once_admin_keys_are_set(
    settings: Settings, graph_server: EmbeddedServer | None, tmp_path: Path
) -> None:
    """Audience pages, search, timelines and neighbourhoods listed users and their events to any key,
    or to anyone where reads are open, while the audience export needed an admin key. Now each is a
    401 without a key and a 403 naming it for a storefront's key, and the document gives each the
    admin role; a storefront's reads (recommendations, similar items, interests, explanations) stay
    open. A console signed in with an admin key reads them through its proxy, another key's gets 403."""
    with scoped_api(settings, tmp_path) as (process, _):
        shop_key, ops_key = process.env["KGREC_API_KEYS"], process.env["KGREC_ADMIN_KEYS"]
        shop, ops = {"Authorization": f"Bearer {shop_key}"}, {"Authorization": f"Bearer {ops_key}"}
        user, item = f"u-reads-{uuid.uuid4().hex[:6]}", "lipstick-reads"
        assert post(process, [event("reads-1", user_id=user, item_id=item)], headers=shop).status_code == 200
        document = requests.get(f"{process.url}/openapi.json", timeout=30).json()
        scoped = {
            path
            for path, operations in document["paths"].items()
            if operations.get("get", {}).get("security") == [{"apiKey": ["admin"]}]
        }
        assert scoped == set(USER_LISTING_READS)
        for path, query in USER_LISTING_READS.items():
            url = process.url + path.replace("{user_id}", user).replace("{item_id}", item)
            url += query.format(user=user, item=item)
            anonymous = requests.get(url, timeout=30)
            assert anonymous.status_code == 401, f"{path}: {anonymous.text}"
            refused = requests.get(url, headers=shop, timeout=30)
            assert refused.status_code == 403, f"{path}: {refused.text}"
            assert f"GET {path} needs an admin key" in refused.json()["detail"]
            assert {"401", "403"} <= set(document["paths"][path]["get"]["responses"])
            answer = requests.get(url, headers=ops, timeout=30)
            assert answer.status_code == 200, f"{path}: {answer.text}"
            assert user in answer.text, f"{path}: {answer.text}"
        timeline = requests.get(f"{process.url}/v1/users/{user}/timeline", headers=ops, timeout=30)
        assert [entry["item_id"] for entry in timeline.json()["events"]] == [item]

        # What a storefront reads stays open, with or without its key.
        interests = requests.get(f"{process.url}/v1/users/{user}/interests", timeout=30)
        assert interests.status_code == 200, interests.text
        storefront = {
            "/v1/users/{user_id}/interests": f"/v1/users/{user}/interests",
            "/v1/users/{user_id}/recommendations": f"/v1/users/{user}/recommendations",
            "/v1/users/{user_id}/recommendations/{item_id}/explanation": f"/v1/users/{user}/recommendations/{item}/explanation",
            "/v1/items/{item_id}/similar": f"/v1/items/{item}/similar",
        }
        for path, url in storefront.items():
            for headers in ({}, shop):
                answer = requests.get(process.url + url, headers=headers, timeout=30)
                assert answer.status_code not in (401, 403), f"{path}: {answer.text}"
            assert document["paths"][path]["get"]["security"] == [{}, {"apiKey": []}]

        # The console reads through its proxy with the signed-in key: an admin key's reads answer.
        audience = f"/v1/audiences?item={item}"
        for key, status in ((ops_key, 200), (shop_key, 403)):
            session, _ = console_session(process.url, key)
            page = session.get(f"{process.url}/console/audiences", timeout=30).text
            assert 'data-api="/console/api/v1"' in page
            relayed = session.get(f"{process.url}/console/api{audience}", timeout=30)
            assert relayed.status_code == status, relayed.text
        assert 'data-api="/v1"' in requests.get(f"{process.url}/console/audiences", timeout=30).text


def test_without_admin_keys_the_reads_that_list_users_are_reads_as_before(
    api: tuple[ApiProcess, GraphGateway],
) -> None:
    process, _ = api
    assert post(process, [event("open-reads-1", user_id="u-open", item_id="open-item")]).status_code == 200
    document = requests.get(f"{process.url}/openapi.json", timeout=30).json()
    for path, query in USER_LISTING_READS.items():
        url = process.url + path.replace("{user_id}", "u-open").replace("{item_id}", "open-item")
        answer = requests.get(url + query.format(user="u-open", item="open-item"), timeout=30)
        assert answer.status_code == 200, f"{path}: {answer.text}"
        assert document["paths"][path]["get"]["security"] == [{}, {"apiKey": []}]


def test_an_id_repeated_with_other_content_is_refused_and_an_exact_repeat_is_a_duplicate(
    api: tuple[ApiProcess, GraphGateway],
) -> None:
    process, gateway = api
    ts = now_ms()
    first = event("dup-1", user_id="u-dup", item_id="p001", ts=ts)
    other = event("dup-1", user_id="u-dup", item_id="p002", type="purchase", ts=ts)
    refused = post(process, [first, event("dup-2", user_id="u-dup", ts=ts), other])
    assert refused.status_code == 422, refused.text
    (error,) = refused.json()["errors"]
    assert (error["index"], error["field"]) == (2, "event_id")
    assert "'dup-1'" in error["reason"] and "other content than event 0" in error["reason"]
    assert gateway.run_query("MATCH (u:User {id: 'u-dup'}) RETURN count(u) AS n", {})[0]["n"] == 0
    # the same event twice (its attribution aside) is one event and a duplicate
    again = post(process, [first, {**first, "position": 3}])
    assert again.status_code == 200, again.text
    assert again.json() == {"received": 2, "applied": 1, "duplicates": 1, "erased": 0, "attributed": 0}


def test_late_events_of_an_erased_user_do_not_bring_the_user_back(
    api: tuple[ApiProcess, GraphGateway],
) -> None:
    """An event dated before a user's erasure that arrives after it (an app's offline queue, a log
    sent again) is left out and counted as ``erased``, sent again too; what the user does after the
    erasure is a new history. The graph keeps the SHA-1 of the id, never the id."""
    process, gateway = api
    user = f"erased-{uuid.uuid4().hex[:8]}"
    before = now_ms() - 60_000
    assert post(process, [event(f"{user}-0", user_id=user, ts=before - 1)]).json()["applied"] == 1
    erased = requests.delete(f"{process.url}/v1/users/{user}", headers=AUTH, timeout=60)
    assert erased.status_code == 200, erased.text

    def interactions() -> list[int]:
        rows = gateway.run_query(
            "MATCH (:User {id: $u})-[r:INTERACTED]->(:Item) RETURN r.n_view AS n", {"u": user}
        )
        return [row["n"] for row in rows]

    late = [
        event(f"{user}-1", user_id=user, ts=before),
        event(f"{user}-bob", user_id=f"{user}-bob", ts=before),
    ]
    # bob's event is applied once; the erased user's is left out each time (not recorded, so not a duplicate)
    for applied, duplicates in ((1, 0), (0, 1)):
        answer = post(process, late)
        assert answer.json() == {
            "received": 2,
            "applied": applied,
            "duplicates": duplicates,
            "erased": 1,
            "attributed": 0,
        }
    assert gateway.run_query("MATCH (u:User {id: $u}) RETURN u.id AS id", {"u": user}) == []
    assert gateway.run_query("MATCH (g:Erasure) WHERE g.id = $u RETURN g.id AS id", {"u": user}) == []

    # The new history starts past the tombstone's margin (a client clock up to that far ahead).
    time.sleep(1.5)
    after = post(process, [event(f"{user}-2", user_id=user, ts=now_ms() + ERASURE_TIME_MARGIN_MS - 500)])
    assert after.json()["applied"] == 1 and after.json()["erased"] == 0
    assert interactions() == [1]  # the new history only


def test_an_event_from_a_clock_ahead_does_not_bring_an_erased_user_back(
    api: tuple[ApiProcess, GraphGateway],
) -> None:
    """A client clock up to KGREC_MAX_CLOCK_SKEW_S ahead dates an event made before the erasure
    after it: within that margin of the tombstone it is left out as erased, sent again too."""
    process, gateway = api
    user = f"ahead-{uuid.uuid4().hex[:8]}"
    assert post(process, [event(f"{user}-0", user_id=user)]).json()["applied"] == 1
    erased_at = now_ms()
    erased = requests.delete(f"{process.url}/v1/users/{user}", headers=AUTH, timeout=60)
    assert erased.status_code == 200, erased.text
    queued = event(f"{user}-1", user_id=user, ts=erased_at + ERASURE_TIME_MARGIN_MS - 60_000)
    for _ in range(2):
        answer = post(process, [queued])
        assert answer.json() == {"received": 1, "applied": 0, "duplicates": 0, "erased": 1, "attributed": 0}
    assert gateway.run_query("MATCH (u:User {id: $u}) RETURN u.id AS id", {"u": user}) == []
