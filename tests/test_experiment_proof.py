"""The proof of the closed loop (issue 12): an A/B test between two model versions, end to end,
with the API and the graph server killed with SIGKILL while it runs.

Real processes: an embedded graph server of the test's own (so it can be killed), gunicorn
serving the API on it. The protocol:

1. **Two versions, different data.** The planted shop (:mod:`tests.planted`: 12 tastes of 8
   items, 240 shoppers who each bought 5 items of their taste). ``planted`` is trained by the
   real training job on it; ``shuffled`` by the same pipeline on the same interactions with
   their items shuffled among the shoppers (the taste removed, popularity kept), and is the
   active version.
2. **A 50/50 experiment**: ``control`` = the active version, ``treatment`` = ``planted``.
3. **A simulated client**, 4 threads, :data:`SIM_USERS` = 96 users. User ``n`` has the hidden
   taste ``n % 12``. It views 2 items of its taste (its history), then asks for
   :data:`PAGES` = 2 pages of :data:`K` = 5 recommendations. On each page it clicks the first
   item of its taste with probability :data:`P_CLICK_TASTE` = 0.6, and otherwise any shown item
   with probability :data:`P_CLICK_ANY` = 0.05; at most one click per page, and the click
   carries the page's ``recommendation_id`` and the item's position. Every request is repeated
   until it is acknowledged (HTTP 200); an event is resent with the same ``event_id``.
4. **Faults.** Once 32 users are done the graph server is killed with SIGKILL and restarted;
   once 64 are done, the whole gunicorn process group is killed with SIGKILL and restarted on
   the same port. When all are done the graph server is killed and restarted once more, so
   what follows reads only what its append-only file kept.
5. **Checks.** Every acknowledged impression is readable at ``GET /v1/impressions/{id}`` (user,
   items, version, experiment, variant); every acknowledged click is attributed to its
   impression exactly once; the experiment's counters hold exactly the acknowledged clicks;
   ``GET /v1/experiments/{id}`` shows the treatment's CTR higher with p < 0.05 (two-sided, the
   user as the unit) after the 96 users; promoting the treatment makes ``planted``
   active in ``GET /v1/models`` and in what every serving process serves.

Why 96 users: the split is random per experiment (its id is in the hash), and these rates
(about 0.62 against 0.22 clicks per impression) gave p >= 0.05 in about 1 of 20,000 splits
of 96 users (a simulation of the pooled z-test over impressions, the results' test until
2026-12-07, with the same rates); with 48 users, about 1 in 60. Not yet re-simulated with the
per-user (delta-method) test the results use now.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from tests.conftest import SHARED_DATA, embedded_only
from tests.planted import (
    ITEMS_PER_TASTE,
    TASTES,
    event,
    item_id,
    planted_graph,
    taste_of,
    train_knowing,
    train_shuffled,
)
from tests.processes import ApiProcess

pytestmark = embedded_only

KEY = "proof-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SIM_USERS = 96
CLIENTS = 4
PAGES = 2
K = 5
VIEWS = 2
P_CLICK_TASTE = 0.6
P_CLICK_ANY = 0.05
KILL_GRAPH_AFTER = 32  # users done
KILL_API_AFTER = 64
ACK_DEADLINE_S = 90.0


@dataclass
class Shown:
    """An acknowledged recommendations answer."""

    recommendation_id: str
    user: str
    items: list[str]
    model_version: str
    variant: str


@dataclass
class Client:
    """What the simulated client saw acknowledged, and every refusal on the way."""

    api: ApiProcess
    shown: list[Shown] = field(default_factory=list)
    clicks: dict[str, str] = field(default_factory=dict)  # recommendation_id -> click event id
    refusals: list[int] = field(default_factory=list)  # statuses other than 200
    failures: int = 0  # requests without an answer (connection refused or reset)
    done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def acknowledged(
        self, call: Callable[[requests.Session], requests.Response], session: requests.Session
    ) -> Any:
        """Repeat ``call`` until it answers 200; its JSON."""
        deadline = time.monotonic() + ACK_DEADLINE_S
        while time.monotonic() < deadline:
            try:
                response = call(session)
            except requests.RequestException:
                with self.lock:
                    self.failures += 1
                time.sleep(0.05)
                continue
            if response.status_code == 200:
                return response.json()
            with self.lock:
                self.refusals.append(response.status_code)
            assert response.status_code == 503, response.text  # only "down, retry later" is expected
            time.sleep(0.05)
        raise AssertionError(f"not acknowledged within {ACK_DEADLINE_S}s")

    def post_events(self, session: requests.Session, events: list[dict[str, Any]]) -> dict[str, Any]:
        """POST a batch until acknowledged (resent as it was: the same event ids)."""
        return self.acknowledged(
            lambda s: s.post(f"{self.api.url}/v1/events", json=events, headers=AUTH, timeout=10), session
        )

    def simulate(self, n: int, session: requests.Session) -> None:
        """One user: views of its taste, then pages of recommendations it clicks by its taste."""
        user, taste = f"sim-user-{n}", n % TASTES
        rng = random.Random(f"proof-{n}")
        views = [
            event(f"view-{n}-{k}", user, item_id(taste, i), "view")
            for k, i in enumerate(rng.sample(range(ITEMS_PER_TASTE), VIEWS))
        ]
        self.post_events(session, views)
        url = f"{self.api.url}/v1/users/{user}/recommendations"
        for page in range(PAGES):
            body = self.acknowledged(lambda s: s.get(url, params={"k": K}, timeout=10), session)
            items = [i["item_id"] for i in body["items"]]
            shown = Shown(body["recommendation_id"], user, items, body["model_version"], body["variant"])
            with self.lock:
                self.shown.append(shown)
            liked = next((i for i in items if taste_of(i) == taste), None)
            clicked = liked if liked is not None and rng.random() < P_CLICK_TASTE else None
            if clicked is None and rng.random() < P_CLICK_ANY:
                clicked = rng.choice(items)
            if clicked is None:
                continue
            click = event(
                f"click-{n}-{page}",
                user,
                clicked,
                "click",
                recommendation_id=shown.recommendation_id,
                position=items.index(clicked) + 1,
            )
            self.post_events(session, [click])
            with self.lock:
                self.clicks[shown.recommendation_id] = click["event_id"]

    def run(self, users: list[int]) -> None:
        """A client thread: users from the shared list until none is left."""
        session = requests.Session()
        while True:
            with self.lock:
                if not users:
                    return
                n = users.pop(0)
            self.simulate(n, session)
            with self.lock:
                self.done += 1


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[EmbeddedServer, ApiProcess]]:
    """A graph server of its own with both versions trained, and the API on it."""
    settings = Settings(data_dir=tmp_path / "var", graph_name="proof", datasets_dir=SHARED_DATA)
    server = EmbeddedServer(settings.data_dir)
    server.start()
    api: ApiProcess | None = None
    try:
        with planted_graph(settings, tmp_path / "shop") as gateway:
            train_knowing(gateway, settings, "planted")
            train_shuffled(gateway, settings, "shuffled")  # trained last: the active version
        env = {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_GRAPH": "proof", "KGREC_API_KEYS": KEY}
        env["KGREC_EXPLORE_SHARE"] = "0"  # the simulated users are new: compare the two models' pages only
        api = ApiProcess(env, log=tmp_path / "api.log").start()
        yield server, api
    finally:
        if api is not None:
            api.stop()
        server.stop()


def wait_until(condition: Callable[[], bool], timeout_s: float = 120.0) -> None:
    """Poll ``condition`` until it holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def answer(api: ApiProcess, path: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """GET ``path``, waiting out the 503s of a graph server coming back."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            response = requests.get(f"{api.url}{path}", timeout=10)
            if response.status_code != 503:
                assert response.status_code == 200, (path, response.status_code, response.text)
                return response.json()
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"{path} kept failing"
        time.sleep(0.1)


def test_the_better_version_wins_the_experiment_through_kill_9_and_is_promoted(
    stack: tuple[EmbeddedServer, ApiProcess],
) -> None:
    server, api = stack
    split = {
        "name": "planted vs shuffled",
        "unit": "user",
        "variants": [
            {"name": "control", "model_version": "active", "traffic": 0.5},
            {"name": "treatment", "model_version": "planted", "traffic": 0.5},
        ],
    }
    created = requests.post(f"{api.url}/v1/experiments", json=split, headers=AUTH, timeout=30)
    assert created.status_code == 200, created.text
    experiment = created.json()["id"]
    time.sleep(1.2)  # every serving process sees it within a second

    client = Client(api)
    users = list(range(SIM_USERS))
    threads = [threading.Thread(target=client.run, args=(users,)) for _ in range(CLIENTS)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: client.done >= KILL_GRAPH_AFTER)
        server.kill()  # requests in flight
        time.sleep(0.5)
        server.start()
        wait_until(lambda: client.done >= KILL_API_AFTER)
        api.kill9()
        api.start()  # the same port: the clients carry on
    finally:
        for thread in threads:
            thread.join(ACK_DEADLINE_S * 4)
    simulated_s = time.monotonic() - started
    assert client.done == SIM_USERS, "a client thread failed (see its traceback above)"
    assert 503 in client.refusals and client.failures > 0  # both kills were felt
    server.kill()
    server.start()  # what the append-only file kept, and nothing else

    # Every acknowledged impression is there, as it was answered.
    assert len(client.shown) == SIM_USERS * PAGES
    served = {"control": "shuffled", "treatment": "planted"}
    acked: dict[str, dict[str, int]] = {
        "control": {"impressions": 0, "clicks": 0},
        "treatment": {"impressions": 0, "clicks": 0},
    }
    for shown in client.shown:
        assert shown.model_version == served[shown.variant]
        recorded = answer(api, f"/v1/impressions/{shown.recommendation_id}")
        assert (recorded["user_id"], recorded["model_version"]) == (shown.user, shown.model_version)
        assert (recorded["experiment"], recorded["variant"]) == (experiment, shown.variant)
        assert [i["item_id"] for i in recorded["items"]] == shown.items
        # Every acknowledged click is attributed to it, exactly once; nothing else is.
        expected = (
            [client.clicks[shown.recommendation_id]] if shown.recommendation_id in client.clicks else []
        )
        assert [e["event_id"] for e in recorded["attributed"]] == expected
        assert all(e["by"] == "id" for e in recorded["attributed"])
        acked[shown.variant]["impressions"] += 1
        acked[shown.variant]["clicks"] += len(expected)

    report = answer(api, f"/v1/experiments/{experiment}")
    control, treatment = report["variants"]
    for variant in (control, treatment):
        # Clicks counted exactly; impressions at least the acknowledged ones (an answer lost in the
        # API's kill was recorded but never acknowledged, and its request was repeated).
        assert variant["clicks"] == acked[variant["name"]]["clicks"]
        assert acked[variant["name"]]["impressions"] <= variant["impressions"]
        assert variant["impressions"] <= acked[variant["name"]]["impressions"] + client.failures + len(
            client.refusals
        )
    assert control["users"] + treatment["users"] == pytest.approx(SIM_USERS, abs=2)
    assert treatment["ctr"]["value"] > control["ctr"]["value"]
    assert treatment["vs_control"]["ctr"]["p_value"] < 0.05
    print(
        f"\nproof: {SIM_USERS} users in {simulated_s:.1f}s; control {control['users']} users, "
        f"{control['impressions']} impressions, CTR {control['ctr']}; treatment {treatment['users']} users, "
        f"{treatment['impressions']} impressions, CTR {treatment['ctr']}; vs control {treatment['vs_control']['ctr']}; "
        f"refusals {len(client.refusals)}, failed requests {client.failures}"
    )

    promote = f"{api.url}/v1/experiments/{experiment}/promote"
    promoted = requests.post(promote, json={"variant": "treatment"}, headers=AUTH, timeout=30)
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["promoted"]["model_version"] == "planted"
    models = {v["version"]: v["status"] for v in answer(api, "/v1/models")["versions"]}
    assert (models["planted"], models["shuffled"]) == ("active", "retired")
    time.sleep(1.2)  # each serving process re-reads the active version within a second
    after = [answer(api, f"/v1/users/sim-user-{n}/recommendations?k=2") for n in range(8)]
    assert {(a["model_version"], a["experiment"]) for a in after} == {("planted", None)}
