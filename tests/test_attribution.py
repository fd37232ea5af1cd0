"""Attribution: clicks, carts and purchases find the impression they came from, once, durably.

Real gunicorn API on the session's small trained graph (``small_api``), real embedded redis-server.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from kgrec.attribution import AttributionResult, attribute, claim_attribution, find_attribution
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.events.ingest import ingest
from kgrec.events.validation import Event, validate_batch
from kgrec.gateway import open_gateway
from kgrec.impression_ids import MAX_POSITION
from kgrec.impressions import ImpressionStore
from tests.conftest import SMALL_API_KEY, embedded_only
from tests.processes import ApiProcess, wait_for

pytestmark = embedded_only
AUTH = {"Authorization": f"Bearer {SMALL_API_KEY}"}
HOUR_MS = 3_600_000


def now_ms() -> int:
    return int(time.time() * 1000)


def shown(api: ApiProcess, user: str, **params: Any) -> dict[str, Any]:
    """A recommendations page for ``user`` (recorded as an impression)."""
    response = requests.get(
        f"{api.url}/v1/users/{quote(user, safe='')}/recommendations", params=params, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def post(api: ApiProcess, events: list[dict[str, Any]]) -> requests.Response:
    """POST a batch of events."""
    return requests.post(f"{api.url}/v1/events", json=events, headers=AUTH, timeout=30)


def event(user: str, item: str, kind: str = "click", **extra: Any) -> dict[str, Any]:
    """An event now, with a fresh id."""
    return {
        "event_id": f"e-{uuid.uuid4().hex}",
        "user_id": user,
        "item_id": item,
        "type": kind,
        "ts": now_ms(),
        **extra,
    }


def attributed(api: ApiProcess, recommendation_id: str) -> list[dict[str, Any]]:
    """The events attributed to an impression."""
    response = requests.get(f"{api.url}/v1/impressions/{recommendation_id}", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["attributed"]


def fresh_user() -> str:
    return f"attr-{uuid.uuid4().hex[:12]}"


def test_an_event_naming_its_impression_is_attributed_to_it_once(small_api: ApiProcess) -> None:
    user = fresh_user()
    page = shown(small_api, user, k=5)
    item = page["items"][2]["item_id"]
    click = event(user, item, recommendation_id=page["recommendation_id"])
    first = post(small_api, [click])
    assert first.status_code == 200, first.text
    assert first.json()["attributed"] == 1
    again = post(small_api, [click])  # the same event resent: a duplicate everywhere
    assert again.json() == {"received": 1, "applied": 0, "duplicates": 1, "erased": 0, "attributed": 0}
    [stored] = attributed(small_api, page["recommendation_id"])
    assert stored["event_id"] == click["event_id"] and stored["by"] == "id"
    assert stored["position"] == 3 and stored["type"] == "click" and stored["item_id"] == item
    assert stored["user_id"] == user and stored["ts"] == click["ts"]


def test_without_an_id_the_users_latest_impression_of_the_item_wins(small_api: ApiProcess) -> None:
    user = fresh_user()
    older = shown(small_api, user, k=5)
    later = shown(small_api, user, k=5)  # the same items again: the latest showing wins
    other_page = shown(small_api, user, k=5, offset=5)  # newest, but without the first page's items
    item = older["items"][0]["item_id"]
    assert item in [i["item_id"] for i in later["items"]]
    assert item not in [i["item_id"] for i in other_page["items"]]
    purchase = event(user, item, "purchase", value=12.5)
    assert post(small_api, [purchase]).json()["attributed"] == 1
    assert attributed(small_api, older["recommendation_id"]) == []
    [stored] = attributed(small_api, later["recommendation_id"])
    assert stored["by"] == "window" and stored["position"] == 1 and stored["value"] == 12.5
    # The event's own position is kept when it gives one.
    cart = event(user, other_page["items"][1]["item_id"], "cart", position=7)
    assert post(small_api, [cart]).json()["attributed"] == 1
    assert [e["position"] for e in attributed(small_api, other_page["recommendation_id"])] == [7]


def test_a_purchase_while_the_impression_store_is_down_is_a_503_and_nothing_is_written(
    small_api: ApiProcess, graph_server: EmbeddedServer
) -> None:
    user = fresh_user()
    page = shown(small_api, user, k=5)
    purchase = event(
        user, page["items"][0]["item_id"], "purchase", recommendation_id=page["recommendation_id"]
    )
    graph_server.kill_impressions()
    try:
        down = post(small_api, [purchase])
        assert down.status_code == 503 and down.json()["error"] == "impressions_unavailable", down.text
    finally:
        graph_server.start()
    wait_for(f"{small_api.url}/readyz")
    # The 503 was true: nothing was written, so the resend is applied, not a duplicate, and attributed.
    # (A connection the kill broke may fail once more, with nothing written either.)
    for _ in range(3):
        again = post(small_api, [purchase])
        if again.status_code != 503:
            break
    assert again.json() == {"received": 1, "applied": 1, "duplicates": 0, "erased": 0, "attributed": 1}, (
        again.text
    )


def test_what_is_not_attributed(small_api: ApiProcess) -> None:
    user, stranger = fresh_user(), fresh_user()
    page = shown(small_api, user, k=3)
    rid, item = page["recommendation_id"], page["items"][0]["item_id"]
    unshown = "an-item-never-shown"
    events = [
        event(user, item, "view", recommendation_id=rid),  # views are not attributed
        event(user, item, "fav"),  # nor favourites
        event(stranger, item, "click", recommendation_id=rid),  # someone else's impression
        event(user, unshown, "click", recommendation_id=rid),  # an item the impression did not show
        event(user, item, "click", ts=now_ms() - 25 * HOUR_MS),  # before the 24 h window
        event(user, item, "click", recommendation_id=str(uuid.uuid4())),  # an id of no impression...
    ]
    response = post(small_api, events)
    assert response.status_code == 200, response.text
    assert response.json()["attributed"] == 1  # ... which falls back to the window: the last one only
    [stored] = attributed(small_api, rid)
    assert stored["event_id"] == events[-1]["event_id"] and stored["by"] == "window"


def test_anonymous_similar_items_take_the_user_of_the_event_that_names_them(small_api: ApiProcess) -> None:
    user = fresh_user()
    source = shown(small_api, user, k=1)["items"][0]["item_id"]
    similar = requests.get(
        f"{small_api.url}/v1/items/{quote(source, safe='')}/similar", params={"k": 3}, timeout=30
    )
    page = similar.json()
    assert page["user_id"] is None
    item = page["items"][1]["item_id"]
    assert post(small_api, [event(user, item, "cart")]).json()["attributed"] == 0  # not the user's impression
    named = event(user, item, "cart", recommendation_id=page["recommendation_id"])
    assert post(small_api, [named]).json()["attributed"] == 1
    [stored] = attributed(small_api, page["recommendation_id"])
    assert (stored["user_id"], stored["position"], stored["by"]) == (user, 2, "id")


def anonymous_click(api: ApiProcess, user: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """An item shown to ``user``, an anonymous similar-items page of it, and ``user``'s click on
    that page's first item naming it."""
    source = shown(api, user, k=1)["items"][0]["item_id"]
    page = requests.get(
        f"{api.url}/v1/items/{quote(source, safe='')}/similar", params={"k": 3}, timeout=30
    ).json()
    return source, page, event(user, page["items"][0]["item_id"], recommendation_id=page["recommendation_id"])


def erase(api: ApiProcess, user: str) -> None:
    """DELETE the user."""
    erased = requests.delete(f"{api.url}/v1/users/{quote(user, safe='')}", headers=AUTH, timeout=60)
    assert erased.status_code == 200, erased.text


def test_a_late_click_of_an_erased_user_is_not_attributed(small_api: ApiProcess) -> None:
    """A click made before the user's erasure that arrives after it (an app's offline queue), on
    an anonymous impression, which the erasure could not know was theirs: the graph leaves it out,
    and so does attribution, which would store the user's id and count the click again."""
    user = fresh_user()
    source, page, click = anonymous_click(small_api, user)
    assert post(small_api, [event(user, source, "view")]).json()["applied"] == 1
    erase(small_api, user)
    late = post(small_api, [click])
    assert late.json() == {"received": 1, "applied": 0, "duplicates": 0, "erased": 1, "attributed": 0}
    assert attributed(small_api, page["recommendation_id"]) == []


def test_a_resent_click_of_an_erased_user_is_not_attributed_again(small_api: ApiProcess) -> None:
    """A click attributed to an anonymous impression, then its user erased (which deletes the
    attribution and its claim), then the batch resent (its answer was lost): a duplicate for the
    graph, but still the erased user's; not claimed again, so their id stays out of the store."""
    user = fresh_user()
    _source, page, click = anonymous_click(small_api, user)
    assert post(small_api, [click]).json()["attributed"] == 1
    assert [e["user_id"] for e in attributed(small_api, page["recommendation_id"])] == [user]
    erase(small_api, user)
    assert attributed(small_api, page["recommendation_id"]) == []
    resent = post(small_api, [click])
    assert resent.json() == {"received": 1, "applied": 0, "duplicates": 0, "erased": 1, "attributed": 0}
    assert attributed(small_api, page["recommendation_id"]) == []


def test_a_claim_after_the_users_erasure_is_not_made(tmp_path: Path) -> None:
    """The race: the impression found before the erasure, the claim made after it. Not claimed (the
    experiment's counters not counted), as the graph leaves the event out."""
    settings = Settings(data_dir=tmp_path / "var")
    server = EmbeddedServer(settings.data_dir)
    server.start()
    try:
        store = ImpressionStore(settings)
        at = now_ms()
        rid = store.record(
            surface="similar",
            user_id=None,
            items=[("a", 0.9), ("b", 0.5)],
            model_version="v1",
            filters={},
            experiment="exp",
            variant="B",
            now_ms=at,
        )
        click = validated([event("u", "b", "purchase", recommendation_id=rid, value=3.0)])
        found = find_attribution(store, click, max_skew_ms=0)
        assert len(found.matches) == 1
        store.erase_user("u", now_ms())
        assert claim_attribution(store, found, now_ms=now_ms()) == AttributionResult(0, 0, 1)
        kept = store.get(rid)
        assert kept is not None and store.attributed(kept.entry_id) == []
        counters = store.run(lambda client: client.hgetall(store.experiment_key("exp", "B")))
        assert counters == {b"impressions": b"1"}  # the impression only: no purchase, no revenue
        assert store.run(lambda client: client.exists(store.claim_key(click[0].event_id))) == 0
        # Another user's click on the same impression is claimed as before.
        other = validated([event("w", "b", "purchase", recommendation_id=rid, value=3.0)])
        assert attribute(store, other, max_skew_ms=0, now_ms=now_ms()) == AttributionResult(1, 0)
    finally:
        server.stop()


def test_an_id_used_again_for_another_event_is_not_attributed_but_a_resend_still_is(
    small_api: ApiProcess, settings: Settings
) -> None:
    # A purchase sent under the id of a recorded view was a duplicate for the graph, yet attributed:
    # it counted as a conversion, and its revenue, for an event that was never applied.
    user = fresh_user()
    page = shown(small_api, user, k=5)
    item, rid = page["items"][0]["item_id"], page["recommendation_id"]
    view = event(user, item, "view")
    assert post(small_api, [view]).json()["applied"] == 1
    reused = {**view, "type": "purchase", "value": 1000, "recommendation_id": rid}
    answer = post(small_api, [reused])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": 1, "applied": 0, "duplicates": 1, "erased": 0, "attributed": 0}
    assert attributed(small_api, rid) == []
    # A purchase the graph applied, whose claims a crash cut off before the answer: the client's
    # resend of the same content is a duplicate for the graph and is attributed then.
    purchase = event(user, item, "purchase", value=20, recommendation_id=rid)
    with open_gateway(settings, small_api.graph_name) as graph:  # type: ignore[attr-defined]
        assert ingest(graph, validated([purchase]), settings).applied == 1
    resent = post(small_api, [purchase]).json()
    assert resent == {"received": 1, "applied": 0, "duplicates": 1, "erased": 0, "attributed": 1}
    assert [(e["event_id"], e["value"]) for e in attributed(small_api, rid)] == [(purchase["event_id"], 20)]
    assert post(small_api, [purchase]).json()["attributed"] == 0  # and once only


def test_exact_duplicates_in_one_batch_count_once(small_api: ApiProcess) -> None:
    user = fresh_user()
    page = shown(small_api, user, k=2)
    item = page["items"][0]["item_id"]
    one = event(user, item, "purchase")
    twin = {**one, "event_id": f"e-{uuid.uuid4().hex}"}
    body = post(small_api, [one, twin]).json()
    assert body["applied"] == 1 and body["attributed"] == 1
    assert len(attributed(small_api, page["recommendation_id"])) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("recommendation_id", "not-a-uuid"),
        ("recommendation_id", 12),
        ("position", 0),
        ("position", MAX_POSITION + 1),
        ("position", "3"),
        ("position", True),
    ],
)
def test_bad_attribution_fields_are_refused_by_name(small_api: ApiProcess, field: str, value: Any) -> None:
    response = post(small_api, [event(fresh_user(), "x", **{field: value})])
    assert response.status_code == 422, response.text
    [problem] = response.json()["errors"]
    assert problem["field"] == field and problem["index"] == 0


def test_attributions_survive_kill_9_of_the_server_and_are_not_counted_again(tmp_path: Path) -> None:
    """The claim and the attributed event are in the append-only file: a restart keeps both, no recount."""
    settings = Settings(data_dir=tmp_path / "var")
    server = EmbeddedServer(settings.data_dir)
    server.start()
    try:
        store = ImpressionStore(settings)
        rid = store.record(
            surface="recommendations",
            user_id="u",
            items=[("a", 0.9), ("b", 0.5)],
            model_version="v1",
            filters={},
            now_ms=now_ms(),
        )
        click = validated([event("u", "b", recommendation_id=rid)])
        assert attribute(store, click, max_skew_ms=0, now_ms=now_ms()) == AttributionResult(1, 0)
        server.kill()
        server.start()
        store.close()
        # The API was killed before it answered, so the client resends: nothing new is attributed.
        assert attribute(store, click, max_skew_ms=0, now_ms=now_ms()) == AttributionResult(0, 1)
        shown = store.get(rid)
        assert shown is not None
        stored = store.attributed(shown.entry_id)
        assert [(e["event_id"], e["position"], e["by"]) for e in stored] == [(click[0].event_id, 2, "id")]
    finally:
        server.stop()


def validated(raw: list[dict[str, Any]]) -> list[Event]:
    """Events as the API validates them."""
    events, errors = validate_batch(raw, max_skew_s=300)
    assert not errors, errors
    return events
