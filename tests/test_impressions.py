"""Impressions: every recommendations and similar-items response is recorded, readable by its id, bounded.

Real gunicorn API on the session's small trained graph (``small_api``), real embedded
redis-server; the kill -9 test runs its own server and API.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from kgrec import impression_ids
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.impressions import ImpressionStore
from tests.conftest import SHARED_DATA, SMALL_API_KEY, embedded_only
from tests.processes import ApiProcess
from tests.subsets import beauty_graph
from workers.training.config import TrainConfig
from workers.training.job import run_training

pytestmark = embedded_only
KILL_KEY = "kill-key"
KILL_AUTH = {"Authorization": f"Bearer {KILL_KEY}"}
SMALL_AUTH = {"Authorization": f"Bearer {SMALL_API_KEY}"}


def get(api: ApiProcess, path: str, **params: Any) -> requests.Response:
    """GET an API path."""
    return requests.get(f"{api.url}{path}", params=params, timeout=30)


def small_user(api: ApiProcess) -> str:
    """A user of the small graph with history (the first of its users)."""
    from graph_schema.statements.training import FIRST_USERS
    from kgrec.gateway import open_gateway

    local = Settings(data_dir=Path(api.env["KGREC_DATA_DIR"]), graph_name=api.graph_name)  # type: ignore[attr-defined]
    with open_gateway(local) as gateway:
        return gateway.read(FIRST_USERS, {"limit": 1})[0]["id"]


def impression(api: ApiProcess, recommendation_id: str) -> dict[str, Any]:
    """The recorded impression (asserting it is there)."""
    response = get(api, f"/v1/impressions/{recommendation_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_recommendations_are_recorded_with_positions_scores_model_and_filters(small_api: ApiProcess) -> None:
    user = small_user(small_api)
    before = int(time.time() * 1000)
    page = get(small_api, f"/v1/users/{quote(user, safe='')}/recommendations", k=5, offset=3, max_per_brand=3)
    assert page.status_code == 200, page.text
    body = page.json()
    recorded = impression(small_api, body["recommendation_id"])
    assert recorded["recommendation_id"] == body["recommendation_id"]
    assert recorded["surface"] == "recommendations" and recorded["user_id"] == user
    assert recorded["item_id"] is None
    assert recorded["model_version"] == body["model_version"]
    assert recorded["filters"] == body["filters"] == {"max_per_brand": 3}
    assert recorded["experiment"] is None and recorded["variant"] is None
    assert before - 1000 <= recorded["created_at"] <= int(time.time() * 1000) + 1000
    assert recorded["items"] == [
        {"item_id": item["item_id"], "position": 4 + rank, "score": item["score"]}
        for rank, item in enumerate(body["items"])
    ]
    assert len(recorded["items"]) == 5
    assert recorded["attributed"] == []
    # Every response is its own impression.
    again = get(
        small_api, f"/v1/users/{quote(user, safe='')}/recommendations", k=5, offset=3, max_per_brand=3
    )
    assert again.json()["recommendation_id"] != body["recommendation_id"]


def test_cold_start_answers_are_recorded_too(small_api: ApiProcess) -> None:
    stranger = f"nobody-{uuid.uuid4().hex}"
    body = get(small_api, f"/v1/users/{stranger}/recommendations", k=3).json()
    assert body["cold_start"] is True
    recorded = impression(small_api, body["recommendation_id"])
    assert recorded["user_id"] == stranger
    assert [i["item_id"] for i in recorded["items"]] == [i["item_id"] for i in body["items"]]


def test_a_head_request_records_no_impression(small_api: ApiProcess) -> None:
    stranger = f"head-{uuid.uuid4().hex}"
    item = get(small_api, f"/v1/users/{stranger}/recommendations", k=1).json()["items"][0]["item_id"]
    for path, params in (
        (f"/v1/users/{stranger}/recommendations", {"k": 3}),
        (f"/v1/items/{quote(item, safe='')}/similar", {"k": 3, "user_id": stranger}),
    ):
        head = requests.head(f"{small_api.url}{path}", params=params, timeout=30)
        assert head.status_code == 200 and head.content == b"", head.text
    # Only the one GET was recorded for the user.
    erased = requests.delete(f"{small_api.url}/v1/users/{stranger}", headers=SMALL_AUTH, timeout=30)
    assert erased.status_code == 200, erased.text
    assert erased.json()["removed"]["impressions"] == 1


def test_record_false_answers_without_recording_an_impression(small_api: ApiProcess) -> None:
    """The operator console reads with record=false: opening a user's page recorded a real impression
    (an experiment exposure, an exploration step, a target for window-attributed clicks; after an
    erasure, one under the erased id)."""
    stranger = f"console-{uuid.uuid4().hex}"
    shown = get(small_api, f"/v1/users/{stranger}/recommendations", k=1).json()
    item = shown["items"][0]["item_id"]
    for path, params in (
        (f"/v1/users/{stranger}/recommendations", {"k": 10, "explain": "true", "record": "false"}),
        (f"/v1/items/{quote(item, safe='')}/similar", {"k": 10, "user_id": stranger, "record": "false"}),
        (f"/v1/items/{quote(item, safe='')}/similar", {"k": 10, "record": "false"}),
    ):
        answer = get(small_api, path, **params)
        assert answer.status_code == 200, answer.text
        assert answer.json()["items"] and answer.json()["recommendation_id"]
        assert get(small_api, f"/v1/impressions/{answer.json()['recommendation_id']}").status_code == 404
    assert get(small_api, f"/v1/users/{stranger}/recommendations", k=1, record="maybe").status_code == 400
    assert impression(small_api, shown["recommendation_id"])["user_id"] == stranger  # the default records
    erased = requests.delete(f"{small_api.url}/v1/users/{stranger}", headers=SMALL_AUTH, timeout=30)
    assert erased.status_code == 200, erased.text
    assert erased.json()["removed"]["impressions"] == 1


def test_similar_items_are_recorded_with_and_without_a_user(small_api: ApiProcess) -> None:
    user = small_user(small_api)
    first = get(small_api, f"/v1/users/{quote(user, safe='')}/recommendations", k=1).json()["items"][0]
    source = first["item_id"]
    with_user = get(small_api, f"/v1/items/{quote(source, safe='')}/similar", k=4, user_id=user)
    assert with_user.status_code == 200, with_user.text
    body = with_user.json()
    assert body["user_id"] == user
    recorded = impression(small_api, body["recommendation_id"])
    assert recorded["surface"] == "similar" and recorded["item_id"] == source and recorded["user_id"] == user
    assert [(i["item_id"], i["position"]) for i in recorded["items"]] == [
        (item["item_id"], rank) for rank, item in enumerate(body["items"], 1)
    ]
    anonymous = get(small_api, f"/v1/items/{quote(source, safe='')}/similar", k=2).json()
    assert anonymous["user_id"] is None
    assert impression(small_api, anonymous["recommendation_id"])["user_id"] is None


def test_unknown_foreign_and_forged_ids_are_404(small_api: ApiProcess) -> None:
    body = get(small_api, f"/v1/users/{uuid.uuid4().hex}/recommendations", k=1).json()
    issued = body["recommendation_id"]
    assert impression(small_api, issued)["recommendation_id"] == issued
    ms = uuid.UUID(issued).int >> 80
    for unknown in (
        str(uuid.uuid4()),
        impression_ids.new_id(ms),  # made at the same millisecond, never issued
        impression_ids.encode_legacy(ms, 0, 1),  # an older kgrec's id for an entry of that time
        "not-a-uuid",
    ):
        response = get(small_api, f"/v1/impressions/{quote(unknown, safe='')}")
        assert response.status_code == 404, (unknown, response.text)
        assert response.json()["field"] == "recommendation_id"


def store_for(server_settings: Settings, **overrides: Any) -> ImpressionStore:
    """An impression store on a graph name of its own, on the session server."""
    return ImpressionStore(
        server_settings.with_overrides(graph_name=f"imp_{uuid.uuid4().hex[:8]}", **overrides)
    )


def record_some(store: ImpressionStore, n: int, now_ms: int) -> list[str]:
    """Record ``n`` small impressions for one user."""
    return [
        store.record(
            surface="recommendations",
            user_id="u1",
            items=[(f"i{n}", 1.0)],
            model_version="v",
            filters={},
            now_ms=now_ms,
        )
        for _ in range(n)
    ]


def test_retention_and_the_entry_cap_bound_the_stream(
    settings: Settings, graph_server: EmbeddedServer | None
) -> None:
    now = int(time.time() * 1000)
    aged = store_for(settings, impression_retention_days=1 / 86_400)  # one second
    old = record_some(aged, 450, now)
    assert aged.length() == 450
    time.sleep(1.5)
    # The next write trims what is past retention, whole stream nodes (100 entries) at a time.
    newest = record_some(aged, 1, int(time.time() * 1000))[0]
    assert aged.length() < 101
    assert aged.get(newest) is not None and aged.get(old[0]) is None

    capped = store_for(settings, impression_max_entries=100)
    ids = record_some(capped, 600, now)
    assert capped.length() == 100  # the oldest beyond the cap are trimmed, with their id keys
    assert capped.get(ids[-1]) is not None and capped.get(ids[0]) is None
    id_keys = capped.run(lambda client: list(client.scan_iter(match=capped.id_key("*"), count=1_000)))
    assert len(id_keys) == 100
    # A user's index of recent impressions is bounded too.
    assert len(capped.recent_entry_ids(["u1"])["u1"]) == 100
    aged.close()
    capped.close()


def test_recording_can_be_switched_off(small_api: ApiProcess, tmp_path: Path) -> None:
    off = ApiProcess({**small_api.env, "KGREC_RECORD_IMPRESSIONS": "false"}, log=tmp_path / "api.log").start()
    try:
        body = get(off, f"/v1/users/{uuid.uuid4().hex}/recommendations", k=2).json()
        assert uuid.UUID(body["recommendation_id"]).version == 4  # a random id, as before recording
        assert get(small_api, f"/v1/impressions/{body['recommendation_id']}").status_code == 404
    finally:
        off.stop()


@pytest.fixture
def own_stack(tmp_path: Path) -> Any:
    """A graph server of its own (to kill) with a small trained Beauty graph, and an API on it."""
    settings = Settings(data_dir=tmp_path / "var", datasets_dir=SHARED_DATA)
    server = EmbeddedServer(settings.data_dir)
    server.start()
    local, gateway = beauty_graph(settings, SHARED_DATA, tmp_path, users=60, prefix="kill")
    with gateway:
        run_training(gateway, local, TrainConfig(epochs=1, use_ease=False), device="cpu", version="kill")
    env = {"KGREC_DATA_DIR": str(local.data_dir), "KGREC_GRAPH": local.graph_name, "KGREC_API_KEYS": KILL_KEY}
    api = ApiProcess(env, log=tmp_path / "api.log").start()
    try:
        yield server, api, local
    finally:
        api.stop()
        server.stop()


def test_no_acknowledged_impression_or_click_is_lost_to_kill_9_of_the_api_and_the_graph_server(
    own_stack: Any,
) -> None:
    """Clients request recommendations and click while the graph server, then the API, are killed with SIGKILL."""
    server, api, local = own_stack
    acknowledged: list[tuple[str, str, list[str]]] = []
    refused: list[int] = []
    clicks: list[tuple[str, str]] = []  # acknowledged clicks: (recommendation_id, event id)
    stop = threading.Event()
    lock = threading.Lock()

    def client(n: int) -> None:
        session = requests.Session()
        i = 0
        while not stop.is_set():
            user = f"kill-user-{n}-{i % 5}"
            try:
                response = session.get(f"{api.url}/v1/users/{user}/recommendations?k=5", timeout=10)
            except requests.RequestException:
                time.sleep(0.05)
                continue
            if response.status_code != 200:
                refused.append(response.status_code)
            else:
                body = response.json()
                with lock:
                    acknowledged.append(
                        (body["recommendation_id"], user, [i["item_id"] for i in body["items"]])
                    )
                if body["items"] and i % 2 == 0:  # and click on every other page
                    click = {
                        "event_id": f"kill-click-{n}-{i}",
                        "user_id": user,
                        "item_id": body["items"][0]["item_id"],
                        "type": "click",
                        "ts": int(time.time() * 1000),
                        "recommendation_id": body["recommendation_id"],
                    }
                    try:
                        posted = session.post(
                            f"{api.url}/v1/events", json=[click], headers=KILL_AUTH, timeout=10
                        )
                    except requests.RequestException:
                        posted = None
                    if posted is not None and posted.status_code == 200:
                        with lock:
                            clicks.append((body["recommendation_id"], click["event_id"]))
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(3)
        phases = [len(acknowledged)]
        server.kill()  # requests in flight
        time.sleep(0.5)
        server.start()
        time.sleep(3)
        phases.append(len(acknowledged))
        api.kill9()
        api.start()  # the same port: the clients carry on
        time.sleep(3)
        phases.append(len(acknowledged))
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    server.kill()
    server.start()  # what the append-only file kept, and nothing else
    # Served before, between and after the kills; refused (503) while the graph server was down.
    assert phases[0] > 20 and phases[1] > phases[0] + 20 and phases[2] > phases[1] + 20, phases
    assert 503 in refused
    store = ImpressionStore(local)
    found = {}
    for recommendation_id, user, items in acknowledged:
        recorded = store.get(recommendation_id)
        found[recommendation_id] = recorded is not None and (
            recorded.user_id == user and [s.item_id for s in recorded.items] == items
        )
    lost = [rid for rid, ok in found.items() if not ok]
    assert lost == [], f"{len(lost)} of {len(found)} acknowledged impressions lost"
    # Every acknowledged click is attributed to its impression, exactly once.
    assert len(clicks) > 20
    for recommendation_id, event_id in clicks:
        shown = store.get(recommendation_id)
        assert shown is not None
        assert [e["event_id"] for e in store.attributed(shown.entry_id)] == [event_id]
    store.close()


def test_the_impression_store_names_its_keys_per_graph() -> None:
    one = ImpressionStore(Settings(graph_name="a"))
    two = ImpressionStore(Settings(graph_name="b"))
    assert one.stream != two.stream and one.user_key("u") != two.user_key("u")
    assert (
        ImpressionStore(Settings(neo4j_uri="neo4j://x", neo4j_database="shop")).stream
        == "kgrec:shop:impressions"
    )


def test_a_late_shipped_journal_does_not_hide_the_users_latest_impression(
    settings: Settings, graph_server: EmbeddedServer | None
) -> None:
    # a dead process's journal is shipped after a newer impression: its older entries are the
    # newest shipped, and the click must still go to the impression recorded last
    from kgrec.attribution import NEWEST_FIRST, match_events
    from kgrec.events.validation import validate_batch

    store = store_for(settings)
    now = int(time.time() * 1000)

    def show(item: str, at: int) -> str:
        return store.record(
            surface="recommendations",
            user_id="u1",
            items=[(item, 1.0), ("filler", 0.5)],
            model_version="v",
            filters={},
            now_ms=at,
        )

    latest = show("x", now - 1_000)
    store.settle()
    time.sleep(0.01)
    late = [show("x" if n == 0 else f"other{n}", now - 60_000 + n) for n in range(NEWEST_FIRST)]
    store.settle()
    assert store.recent_entry_ids(["u1"])["u1"][NEWEST_FIRST] is not None
    click = {"event_id": "c1", "user_id": "u1", "item_id": "x", "type": "click", "ts": now}
    events, errors = validate_batch([click], max_skew_s=300, now_ms=now)
    assert not errors
    [match] = match_events(store, events, max_skew_ms=300_000)
    assert match.impression.recommendation_id == latest, late
