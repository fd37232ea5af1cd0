"""Erasing a user removes their impressions and what was attributed to them (privacy), idempotently.

The store test runs on the session's embedded server; the API test on the shared small API
(real gunicorn, real graph and Redis).
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import quote

import requests

from kgrec.attribution import attribute
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.events.validation import validate_batch
from kgrec.impressions import USER_RECENT, ImpressionStore
from tests.conftest import SMALL_API_KEY, embedded_only
from tests.planted import event
from tests.processes import ApiProcess

pytestmark = embedded_only
AUTH = {"Authorization": f"Bearer {SMALL_API_KEY}"}


def record(store: ImpressionStore, user: str | None, item: str, now: int) -> str:
    """One impression showing ``item`` (to ``user``, or anonymously)."""
    return store.record(
        surface="recommendations" if user else "similar",
        user_id=user,
        items=[(item, 1.0), ("other", 0.5)],
        model_version="v",
        filters={},
        now_ms=now,
    )


def click(store: ImpressionStore, event_id: str, user: str, item: str, recommendation_id: str) -> None:
    """Attribute a click on ``item`` to the impression it names."""
    raw = event(event_id, user, item, "click", recommendation_id=recommendation_id)
    events, errors = validate_batch([raw], max_skew_s=300)
    assert errors == []
    assert attribute(store, events, max_skew_ms=300_000, now_ms=int(time.time() * 1000)).attributed == 1


def users_in_stream(store: ImpressionStore) -> list[str]:
    """The user field of every kept impression."""
    rows = store.run(lambda client: client.xrange(store.stream))
    return [fields[b"u"].decode() for _, fields in rows]


def test_erasure_deletes_every_impression_of_the_user_and_their_attributed_events(
    settings: Settings, graph_server: EmbeddedServer | None
) -> None:
    store = ImpressionStore(settings.with_overrides(graph_name=f"erase_{uuid.uuid4().hex[:8]}"))
    now = int(time.time() * 1000)
    gone, kept, anonymous = [], [], []
    # More impressions than the user's index holds, so only the scan can find the oldest.
    for n in range(USER_RECENT + 60):
        gone.append(record(store, "victim", f"item-{n}", now))
        kept.append(record(store, "bystander", f"item-{n}", now))
        if n % 40 == 0:
            anonymous.append(record(store, None, f"item-{n}", now))
    click(store, "victim-click", "victim", "item-0", gone[0])
    click(store, "bystander-click", "bystander", "item-0", kept[0])
    click(store, "victim-on-anonymous", "victim", "item-40", anonymous[1])
    click(store, "bystander-on-anonymous", "bystander", "item-40", anonymous[1])

    entry_ids = {rid: shown.entry_id for rid, shown in store.by_ids([gone[0], anonymous[1]]).items()}
    assert store.erase_user("victim", now, chunk=64).impressions == len(gone)  # several scans of the stream
    assert "victim" not in users_in_stream(store)
    assert all(store.get(rid) is None for rid in gone)
    assert all(store.get(rid) is not None for rid in kept + anonymous)
    assert store.attributed(entry_ids[gone[0]]) == []
    assert store.recent_entry_ids(["victim"]) == {"victim": []}
    assert [e["event_id"] for e in store.attributed(entry_ids[anonymous[1]])] == ["bystander-on-anonymous"]
    claims = store.run(
        lambda client: [
            client.exists(store.claim_key(e))
            for e in ("victim-click", "victim-on-anonymous", "bystander-click", "bystander-on-anonymous")
        ]
    )
    assert claims == [0, 0, 1, 1]
    # Idempotent: nothing more to delete, and the bystander keeps everything.
    assert store.erase_user("victim", now).impressions == 0
    assert users_in_stream(store).count("bystander") == len(kept)
    store.close()


def get(api: ApiProcess, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{api.url}{path}", params=params, timeout=30)


def test_delete_user_over_http_erases_their_impressions(small_api: ApiProcess) -> None:
    user = f"erased-{uuid.uuid4().hex[:8]}"
    quoted = quote(user, safe="")
    first = get(small_api, f"/v1/users/{quoted}/recommendations", k=3).json()
    item = first["items"][0]["item_id"]
    click = event(
        f"erase-click-{uuid.uuid4().hex}", user, item, "click", recommendation_id=first["recommendation_id"]
    )
    posted = requests.post(f"{small_api.url}/v1/events", json=[click], headers=AUTH, timeout=30)
    assert posted.status_code == 200 and posted.json()["attributed"] == 1, posted.text
    second = get(small_api, f"/v1/users/{quoted}/recommendations", k=3).json()
    assert get(small_api, f"/v1/impressions/{first['recommendation_id']}").status_code == 200

    erased = requests.delete(f"{small_api.url}/v1/users/{quoted}", headers=AUTH, timeout=30)
    assert erased.status_code == 200, erased.text
    assert erased.json()["removed"]["user"] == 1 and erased.json()["removed"]["impressions"] == 2
    for answer in (first, second):
        assert get(small_api, f"/v1/impressions/{answer['recommendation_id']}").status_code == 404
    again = requests.delete(f"{small_api.url}/v1/users/{quoted}", headers=AUTH, timeout=30)
    assert again.status_code == 404

    # A user the graph never saw, who was only shown recommendations, is erased too.
    stranger = f"only-shown-{uuid.uuid4().hex[:8]}"
    shown = get(small_api, f"/v1/users/{stranger}/recommendations", k=2).json()
    erased = requests.delete(f"{small_api.url}/v1/users/{stranger}", headers=AUTH, timeout=30)
    assert erased.status_code == 200, erased.text
    assert erased.json()["removed"]["user"] == 0 and erased.json()["removed"]["impressions"] == 1
    assert get(small_api, f"/v1/impressions/{shown['recommendation_id']}").status_code == 404
