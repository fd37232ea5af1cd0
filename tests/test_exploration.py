"""Exploration for new users: explored slots, their marks, the threshold, learning from attributed
clicks, block rules and availability, and the switch.

A demo shop on a graph of its own on the session's embedded server, a quickly trained model, a
real gunicorn API (impressions recorded, events ingested and attributed) and, where a test needs
draws that do not move on with each recorded impression, an in-process :class:`Serving` (which
records nothing).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

import kgrec.exploration as exploration_module
from bench.exploration import leaves
from graph_schema.statements import admin
from graph_schema.statements.exploration import ITEM_TOPICS, VERSION_ITEM_TOPICS
from kgrec.catalogue import CatalogueItem
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.demo_shop import ShopSpec, generate_shop
from kgrec.embedded import EmbeddedServer
from kgrec.exploration import (
    ARM_CACHE,
    ArmState,
    Exploration,
    TopicMembers,
    draw,
    explored_slots,
    seed_of,
    spread,
)
from kgrec.gateway import GraphUnavailable, open_gateway
from kgrec.importer import import_dataset
from kgrec.impressions import USER_RECENT
from kgrec.limits import MAX_K
from kgrec.migrations import migrate
from kgrec.model_store import models_dir
from kgrec.recommender import EMBEDDING, ModelArtifacts, Recommender
from kgrec.rules import validate_rule
from kgrec.serving import ItemFilters, Serving
from kgrec.topic_items import TopicItems, topic_items_path
from kgrec.topics import ACTIVE
from tests.conftest import embedded_only
from tests.processes import ApiProcess
from tests.test_catalogue_api import PICKUP_S, within
from tests.threads import together
from workers.training.config import TrainConfig
from workers.training.item_fold_in import embed_new_items
from workers.training.job import run_training

pytestmark = embedded_only
KEY = "explore-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_EVENTS = 5


@dataclass
class Shop:
    settings: Settings  # the shop's graph, exploration at its defaults (share 0.2, 5 events)
    api: ApiProcess
    leaf_of: dict[str, str]  # item -> its leaf category
    brand_of: dict[str, str]  # item -> its brand


@pytest.fixture(scope="module")
def shop(
    settings: Settings, graph_server: EmbeddedServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shop]:
    """A 300-user, 150-item demo shop with a trained model, served by gunicorn."""
    tmp = tmp_path_factory.mktemp("explore")
    folder = tmp / "shop"
    generate_shop(ShopSpec(users=300, items=150, seed=11), folder)
    local = Settings(
        data_dir=settings.data_dir,
        graph_name=f"explore_{uuid.uuid4().hex[:8]}",
        api_keys=(KEY,),
        explore_share=0.2,
        explore_max_events=MAX_EVENTS,
    )
    with open_gateway(local) as gateway:
        migrate(gateway)
        import_dataset(gateway, open_dataset(str(folder), local.datasets_dir), local)
        run_training(
            gateway, local, TrainConfig(epochs=1, use_ease=False), device="cpu", version="explore-v1"
        )
    leaf_of = leaves(folder)
    with open(folder / "items.csv", newline="") as handle:
        brand_of = {row["item_id"]: row["brand"] for row in csv.DictReader(handle)}
    api = ApiProcess(
        {
            "KGREC_DATA_DIR": str(local.data_dir),
            "KGREC_GRAPH": local.graph_name,
            "KGREC_API_KEYS": KEY,
            "KGREC_EXPLORE_SHARE": "0.2",
            "KGREC_EXPLORE_MAX_EVENTS": str(MAX_EVENTS),
        },
        log=tmp / "api.log",
    ).start()
    try:
        yield Shop(local, api, leaf_of, brand_of)
    finally:
        api.stop()


def page(shop: Shop, user: str, **params: Any) -> dict[str, Any]:
    """GET a user's recommendations (asserting 200)."""
    response = requests.get(f"{shop.api.url}/v1/users/{user}/recommendations", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def explored(body: dict[str, Any]) -> list[tuple[int, str, str]]:
    """(position, item, arm) of the answer's explored slots."""
    return [(n, i["item_id"], i["explore"]) for n, i in enumerate(body["items"], 1) if "explore" in i]


def post_events(shop: Shop, events: list[dict[str, Any]]) -> dict[str, Any]:
    """POST events (asserting 200)."""
    response = requests.post(f"{shop.api.url}/v1/events", json=events, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def event(user: str, item: str, kind: str, recommendation_id: str | None = None) -> dict[str, Any]:
    """One event of ``user`` now."""
    return {
        "event_id": uuid.uuid4().hex,
        "user_id": user,
        "item_id": item,
        "type": kind,
        "ts": int(time.time() * 1000),
        **({"recommendation_id": recommendation_id} if recommendation_id else {}),
    }


def recommend(serving: Serving, user: str, k: int = 10) -> dict[str, Any]:
    """In-process recommendations (nothing recorded)."""
    return serving.recommendations(user, k=k, offset=0, exclude="seen", filters=ItemFilters(), explain=False)


def test_the_slot_share_and_its_spread() -> None:
    assert [explored_slots(k, 0.2) for k in (1, 3, 7, 8, 10, 20, 100)] == [1, 1, 1, 2, 2, 4, 20]
    assert explored_slots(10, 0.0) == 0 and explored_slots(10, 1.0) == 10
    assert spread(list(range(10)), 2) == [4, 9] and spread(list(range(20)), 4) == [4, 9, 14, 19]
    assert spread([0, 2, 3], 1) == [3] and spread([], 2) == []


def test_a_new_user_gets_the_documented_explored_slots_marked_and_recorded(shop: Shop) -> None:
    user = f"newcomer-{uuid.uuid4().hex[:8]}"
    for k, positions in ((10, [5, 10]), (20, [5, 10, 15, 20]), (3, [3])):
        body = page(shop, user, k=k)
        assert body["cold_start"] is True and len(body["items"]) == k
        slots = explored(body)
        assert [p for p, _, _ in slots] == positions
        assert all(arm.startswith(("category:", "topic:")) for _, _, arm in slots)
        ids = [i["item_id"] for i in body["items"]]
        assert len(set(ids)) == k  # an explored item is never a second copy of a ranked one
        recorded = requests.get(f"{shop.api.url}/v1/impressions/{body['recommendation_id']}", timeout=30)
        assert recorded.status_code == 200, recorded.text
        assert [
            (i["position"], i["item_id"], i["explore"]) for i in recorded.json()["items"] if "explore" in i
        ] == (slots)
    # later pages are not explored
    assert explored(page(shop, user, k=10, offset=10)) == []
    # a category arm offers items of its category
    for _, item, arm in explored(page(shop, f"other-{uuid.uuid4().hex[:8]}", k=20)):
        if arm.startswith("category:"):
            assert shop.leaf_of[item] == arm.removeprefix("category:")


def test_a_new_user_paging_on_sees_no_item_twice(shop: Shop) -> None:
    user = f"pager-{uuid.uuid4().hex[:8]}"
    first = page(shop, user, k=10)
    assert len(explored(first)) == 2
    # once the first page's impression is stored (its explored items with it), later pages leave them out
    recorded = requests.get(f"{shop.api.url}/v1/impressions/{first['recommendation_id']}", timeout=30)
    assert recorded.status_code == 200, recorded.text
    shown = [i["item_id"] for i in first["items"]]
    for offset in (10, 20, 30):
        later = page(shop, user, k=10, offset=offset)
        assert explored(later) == []
        ids = [i["item_id"] for i in later["items"]]
        assert not set(ids) & set(shown), offset
        shown += ids
    assert len(shown) == len(set(shown)) == 40


def test_explored_slots_keep_the_diversity_caps(shop: Shop) -> None:
    # An explored item of a brand (category) the page already holds broke the cap.
    for n in range(6):
        for cap, group_of in (("max_per_brand", shop.brand_of), ("max_per_category", shop.leaf_of)):
            body = page(shop, f"diverse-{n}-{uuid.uuid4().hex[:8]}", k=10, **{cap: 1})
            assert len(explored(body)) == 2 and len(body["items"]) == 10
            groups = Counter(group_of[i["item_id"]] for i in body["items"])
            assert max(groups.values()) == 1, (cap, groups, body["items"])


def test_a_new_user_paging_at_once_sees_no_item_twice(shop: Shop) -> None:
    # An infinite scroll asks for the next pages before the first page's impression is shipped.
    for n in range(3):
        user = f"scroller-{n}-{uuid.uuid4().hex[:8]}"
        shown = [
            i["item_id"] for offset in (0, 20, 40) for i in page(shop, user, k=20, offset=offset)["items"]
        ]
        assert len(shown) == 60
        assert len(set(shown)) == 60, [i for i in set(shown) if shown.count(i) > 1]


@pytest.mark.parametrize("caps", [{}, {"max_per_brand": 100}], ids=["plain", "with-caps"])
def test_the_ranked_items_explored_slots_displaced_come_on_the_next_page(
    shop: Shop, caps: dict[str, int]
) -> None:
    off = Serving(shop.settings.with_overrides(explore_share=0.0))
    try:
        reference = [  # what a new user's pages show without exploration
            i["item_id"]
            for offset in (0, 100)
            for i in off.recommendations(
                "nobody-new", k=100, offset=offset, exclude="seen", filters=ItemFilters(), explain=False
            )["items"]
        ]
    finally:
        off.close()
    user = f"completist-{uuid.uuid4().hex[:8]}"
    first = page(shop, user, k=20, **caps)  # caps that bind nothing: the later pages find this page by them
    shown = [i["item_id"] for i in first["items"]]
    displaced = [i for i in reference[:20] if i not in shown]
    assert len(displaced) == 4
    second = page(shop, user, k=20, offset=20, **caps)["items"]
    # they lead the next page: they rank above the rest (items of one score come in any order)
    assert set(displaced) <= {i["item_id"] for i in second}
    assert [i["score"] for i in second] == sorted((i["score"] for i in second), reverse=True)
    shown += [i["item_id"] for i in second]
    for offset in range(40, len(reference) + 20, 20):
        shown += [i["item_id"] for i in page(shop, user, k=20, offset=offset, **caps)["items"]]
    assert len(shown) == len(set(shown))
    assert set(reference) <= set(shown), [i for i in reference if i not in shown]


def test_a_pin_keeps_its_position_on_a_new_users_later_page(shop: Shop) -> None:
    """A later page is cut from the ranking without the first page, at offset less its length: a pin's
    position counts the first page too (a pin at 15 showed at 25)."""
    items = page(shop, f"probe-{uuid.uuid4().hex[:8]}", k=50)["items"]
    pinned = next(i["item_id"] for i in reversed(items) if "explore" not in i)  # far down
    headers = AUTH
    rule = {"id": "pin-15-new", "action": "pin", "item": pinned, "position": 15}
    response = requests.post(f"{shop.api.url}/v1/rules", json=rule, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    try:
        within(
            PICKUP_S, lambda: page(shop, f"w-{uuid.uuid4().hex[:8]}", k=20)["items"][14]["item_id"] == pinned
        )
        for n in range(3):
            user = f"pinned-pager-{n}-{uuid.uuid4().hex[:8]}"
            first = page(shop, user, k=10)["items"]
            second = page(shop, user, k=10, offset=10)["items"]
            shown = [i["item_id"] for i in first + second]
            assert len(set(shown)) == 20
            assert shown.index(pinned) == 14 and second[4]["rules"] == ["pin-15-new"], shown
    finally:
        requests.delete(f"{shop.api.url}/v1/rules/pin-15-new", headers=headers, timeout=30)
        time.sleep(PICKUP_S)


def test_a_pin_on_a_new_users_first_page_is_not_shown_again_on_the_next(shop: Shop) -> None:
    """Pins at 2 and 3 fall on the first page: the next page neither repeats them (both went to its
    top) nor an item the first page explored that a pin at 15 names."""
    items = page(shop, f"probe-{uuid.uuid4().hex[:8]}", k=50)["items"]
    far = [i["item_id"] for i in reversed(items) if "explore" not in i][:2]
    rules = [
        {"id": "pin-2-new", "action": "pin", "item": far[0], "position": 2},
        {"id": "pin-3-new", "action": "pin", "item": far[1], "position": 3},
    ]
    try:
        for rule in rules:
            response = requests.post(f"{shop.api.url}/v1/rules", json=rule, headers=AUTH, timeout=30)
            assert response.status_code == 200, response.text
        settled(
            lambda: (
                [i["item_id"] for i in page(shop, f"w-{uuid.uuid4().hex[:8]}", k=10)["items"][1:3]] == far
            ),
            "the pins",
        )
        for n in range(2):
            user = f"pin-pager-{n}-{uuid.uuid4().hex[:8]}"
            first = page(shop, user, k=10)["items"]
            assert [i["item_id"] for i in first[1:3]] == far
            explored_item = next(i["item_id"] for i in first if "explore" in i)
            rule = {"id": "pin-15-explored", "action": "pin", "item": explored_item, "position": 15}
            response = requests.post(f"{shop.api.url}/v1/rules", json=rule, headers=AUTH, timeout=30)
            assert response.status_code == 200, response.text
            settled(
                lambda item=explored_item: (
                    page(shop, f"w-{uuid.uuid4().hex[:8]}", k=20)["items"][14]["item_id"] == item
                ),
                "the pin at 15",
            )
            second = page(shop, user, k=10, offset=10)["items"]
            shown = [i["item_id"] for i in first + second]
            assert len(shown) == len(set(shown)) == 20, shown
            assert all(i["rules"] == [] for i in second), second
    finally:
        for rule_id in ("pin-2-new", "pin-3-new", "pin-15-explored"):
            requests.delete(f"{shop.api.url}/v1/rules/{rule_id}", headers=AUTH, timeout=30)
        time.sleep(PICKUP_S)


def test_a_user_at_the_threshold_gets_no_explored_slot(shop: Shop) -> None:
    user = f"regular-{uuid.uuid4().hex[:8]}"
    items = [i["item_id"] for i in page(shop, "warm-up", k=MAX_EVENTS)["items"]]
    post_events(shop, [event(user, item, "view") for item in items[: MAX_EVENTS - 1]])
    below = page(shop, user, k=10)
    assert below["cold_start"] is False and len(explored(below)) == 2  # 4 events: still new
    post_events(shop, [event(user, items[-1], "view")])
    at = page(shop, user, k=10)
    assert explored(at) == [] and all("explore" not in i for i in at["items"])


def test_attributed_clicks_on_an_arm_raise_its_share(shop: Shop) -> None:
    learner = f"learner-{uuid.uuid4().hex[:8]}"
    exploration = Exploration(shop.settings)
    serving = Serving(shop.settings)
    try:
        arms = exploration.arms(serving.model(), serving.gateway)
    finally:
        serving.close()

    def share(state: ArmState, arm: str) -> float:
        """How often ``arm`` wins one of the two explored slots of a 10-item page, over 1000 seeds."""
        index = arms.ids.index(arm)
        return float(np.mean([index in draw(arms, state, seed_of(learner, n))[0][:2] for n in range(1000)]))

    body = page(shop, learner, k=10)
    target = explored(body)[0][2]
    exploration.store.settle()
    shares = [share(exploration.state(learner), target)]  # shown once, not clicked (yet)
    clicks = 0
    for _ in range(30):
        chosen = [item for _, item, arm in explored(body) if arm == target]
        if chosen:
            result = post_events(shop, [event(learner, chosen[0], "click", body["recommendation_id"])])
            assert result["attributed"] == 1
            clicks += 1
            exploration.store.settle()  # the pages' impressions, as the server reads them for the next page
            state = exploration.state(learner)
            assert state.clicked.get(target) == clicks and sum(state.clicked.values()) == clicks
            shares.append(share(state, target))
            if clicks == MAX_EVENTS - 2:  # the learner stays a new user
                break
        # every served page follows the posterior: its arms come in the order of that state's draw
        exploration.store.settle()
        state = exploration.state(learner)
        body = page(shop, learner, k=10)
        order = [arms.ids[a] for a in draw(arms, state, seed_of(learner, state.impressions, state.newest))[0]]
        served = [arm for _, _, arm in explored(body)]
        assert served == sorted(served, key=order.index) and order.index(served[0]) < 5
    # Each attributed click raises the arm's share of the explored slots. (Whether the arm is drawn
    # again within 30 pages depends on its items: those the learner's clicks bring into the
    # ranked slots are not explored again.)
    assert clicks >= 1 and len(shares) == clicks + 1
    assert all(a < b for a, b in pairwise(shares)), shares
    assert shares[0] < 0.04 and shares[1] > max(0.06, 3 * shares[0]), shares


def test_the_draw_moves_on_after_the_kept_impressions_are_full(shop: Shop) -> None:
    # The count of kept impressions stops at USER_RECENT; the newest id still changes the seed.
    browser = f"browser-{uuid.uuid4().hex[:8]}"
    exploration = Exploration(shop.settings)
    store = exploration.store
    seeds = []
    for n in range(USER_RECENT + 2):
        store.record(
            surface="recommendations",
            user_id=browser,
            items=[("x", 1.0)],
            model_version="m",
            filters={},
            now_ms=int(time.time() * 1000),
        )
        if n >= USER_RECENT:
            store.settle()
            state = exploration.state(browser)
            assert state.impressions == USER_RECENT
            seeds.append(seed_of(browser, state.impressions, state.newest))
    assert seeds[0] != seeds[1]


def test_explored_items_respect_block_rules_and_unavailability(shop: Shop) -> None:
    serving = Serving(shop.settings)
    changed: list[str] = []
    try:
        user = f"cautious-{uuid.uuid4().hex[:8]}"
        before = explored(recommend(serving, user, k=20))
        assert explored(recommend(serving, user, k=20)) == before  # nothing recorded: the same draw
        blocked_item, hidden_item = before[0][1], before[1][1]
        changed = [blocked_item, hidden_item, before[2][1]]  # put back, and waited for, at the end
        blocked_leaf = shop.leaf_of[before[2][1]]
        for target in ({"category": blocked_leaf}, {"item": blocked_item}):
            rule, problems = validate_rule({"action": "block", "target": target})
            assert not problems
            serving.save_rule(rule)
        serving.upsert_items([CatalogueItem(item_id=hidden_item, available=False)])
        after = recommend(serving, user, k=20)
        ids = {i["item_id"] for i in after["items"]}
        assert not {blocked_item, hidden_item} & ids
        assert all(shop.leaf_of[i] != blocked_leaf for i in ids)
        assert len(explored(after)) == 4  # other arms, or the arms' next items, fill the slots
    finally:
        try:
            for rule in serving.list_rules()["rules"]:
                serving.delete_rule(rule["id"])
            if changed:
                serving.upsert_items([CatalogueItem(item_id=changed[1], available=True)])
                api_sees_what(serving, shop, changed)
        finally:
            serving.close()


def test_explored_slots_skip_buried_items_and_list_the_rules_that_touched_theirs(shop: Shop) -> None:
    serving = Serving(shop.settings)
    changed: list[str] = []

    def save(rule: dict[str, Any]) -> None:
        valid, problems = validate_rule(rule)
        assert not problems
        serving.save_rule(valid)

    def explored_rules(user: str) -> dict[str, list[str]]:
        return {i["item_id"]: i["rules"] for i in recommend(serving, user, k=20)["items"] if "explore" in i}

    try:
        user = f"buried-{uuid.uuid4().hex[:8]}"
        first = recommend(serving, user, k=20)
        before = explored(first)
        buried_item = before[0][1]
        changed = [i for _, i, _ in before]  # their leaves' rules are gone at the end
        buried_leaf = shop.leaf_of[before[1][1]]
        # A boost that moves nothing: the same draw explores the same items, the boosted one listing
        # it. Any boost breaks an exact tie, and a new user's ranking has them (an explored item as
        # popular as the page's last ranked one then takes that place): the test boosts the first
        # explored item whose boost leaves the ranked items where they were.
        boosted = None
        for _, candidate, _ in before[2:]:
            save({"id": "nudge", "action": "boost", "factor": 1.000001, "target": {"item": candidate}})
            page = recommend(serving, user, k=20)
            if ranked_part(page) == ranked_part(first):
                boosted = candidate
                break
            serving.delete_rule("nudge")
        assert boosted is not None, "every explored item's boost moved the ranking"
        assert explored_rules(user) == {i: (["nudge"] if i == boosted else []) for _, i, _ in before}
        save({"id": "bury-item", "action": "bury", "factor": 0.01, "target": {"item": buried_item}})
        save({"id": "bury-leaf", "action": "bury", "factor": 0.01, "target": {"category": buried_leaf}})
        after = explored(recommend(serving, user, k=20))
        assert len(after) == 4  # other arms, or the arms' next items, fill the slots
        items = {i for _, i, _ in after}
        assert buried_item not in items and all(shop.leaf_of[i] != buried_leaf for i in items), after
        assert explored_rules(user) == {i: (["nudge"] if i == boosted else []) for i in items}
    finally:
        try:
            for rule in serving.list_rules()["rules"]:
                serving.delete_rule(rule["id"])
            if changed:
                api_sees_what(serving, shop, changed)
        finally:
            serving.close()


def ranked_part(body: dict[str, Any]) -> list[tuple[int, str]]:
    """(position, item) of the answer's ranked (not explored) items."""
    return [(n, i["item_id"]) for n, i in enumerate(body["items"], 1) if "explore" not in i]


def settled(check: Callable[[], bool], what: str, steady_s: float = 1.0, timeout_s: float = 30.0) -> None:
    """Wait until ``check()`` (requests to the API) has held on every request for ``steady_s``.

    A serving process picks up a change of the rules or the catalogue within about a second, each
    gunicorn worker on its own poll; a test paging through the API right after another test
    changed them would otherwise get pages cut from two states. Holding for a second of requests
    back to back means that both workers answered with the change.
    """
    deadline = time.monotonic() + timeout_s
    held_since = None
    while (now := time.monotonic()) < deadline:
        if not check():
            held_since = None
        elif held_since is None:
            held_since = now
        elif now - held_since >= steady_s:
            return
        time.sleep(0.02)
    raise AssertionError(f"the API did not settle within {timeout_s:.0f}s: {what}")


def api_sees_what(serving: Serving, shop: Shop, items: list[str]) -> None:
    """Wait until the API process serves ``items`` as ``serving`` does (available, blocked or not):
    each item's whole leaf category, as the items similar to an item of another leaf."""
    leaves = sorted({shop.leaf_of[i] for i in items})
    probe = next(i for i in serving.model().artifacts.item_ids if shop.leaf_of[i] not in leaves)
    wanted = [
        [i["item_id"] for i in serving.similar(probe, k=MAX_K, filters=ItemFilters(category=leaf))["items"]]
        for leaf in leaves
    ]

    def served() -> list[list[str]]:
        answers = []
        for leaf in leaves:
            answer = requests.get(
                f"{shop.api.url}/v1/items/{probe}/similar", params={"k": MAX_K, "category": leaf}, timeout=30
            )
            assert answer.status_code == 200, answer.text
            answers.append([i["item_id"] for i in answer.json()["items"]])
        return answers

    settled(lambda: served() == wanted, f"the rules and catalogue of {leaves}")


def test_share_zero_turns_exploration_off(shop: Shop) -> None:
    user = f"plain-{uuid.uuid4().hex[:8]}"
    on, off, nobody_new = (
        Serving(shop.settings.with_overrides(**changes))
        for changes in ({}, {"explore_share": 0.0}, {"explore_max_events": 0})
    )
    try:
        explored_answer, plain, threshold_zero = (recommend(s, user) for s in (on, off, nobody_new))
        positions = [p - 1 for p, _, _ in explored(explored_answer)]
        assert len(positions) == 2 and all("explore" not in i for i in plain["items"])
        # the two ways of switching it off give the same bytes
        stable = {key: value for key, value in plain.items() if key != "recommendation_id"}
        also = {key: value for key, value in threshold_zero.items() if key != "recommendation_id"}
        assert json.dumps(stable) == json.dumps(also)
        # and exploration only replaced its slots
        for n, (a, b) in enumerate(zip(explored_answer["items"], plain["items"], strict=True)):
            assert (a == b) is (n not in positions)
    finally:
        for s in (on, off, nobody_new):
            s.close()


def test_the_setting_is_read_and_checked() -> None:
    env = {"KGREC_EXPLORE_SHARE": "0.25", "KGREC_EXPLORE_MAX_EVENTS": "8"}
    read = Settings.from_env(env)
    assert (read.explore_share, read.explore_max_events) == (0.25, 8)
    assert Settings.from_env({}).explore_share == 0.2 and Settings.from_env({}).explore_max_events == 5
    with pytest.raises(ValueError, match="KGREC_EXPLORE_SHARE"):
        Settings.from_env({"KGREC_EXPLORE_SHARE": "1.5"})


class CountingGateway:
    """The real gateway, counting the item–topic reads that building arms makes."""

    def __init__(self, gateway: Any) -> None:
        self.gateway = gateway
        self.topic_reads = 0
        self.asked: list[list[str] | None] = []  # the item ids each read asked for (None: all)
        self.lock = threading.Lock()

    def read(self, statement: Any, params: Any) -> Any:
        if statement in (ITEM_TOPICS, VERSION_ITEM_TOPICS):
            with self.lock:
                self.topic_reads += 1
                self.asked.append(params.get("ids"))
            time.sleep(0.2)  # a slow read: every thread arrives while the first one is building
        return self.gateway.read(statement, params)


def folded_copy(model: Recommender, item_id: str = "folded-in") -> Recommender:
    """``model`` as a fold-in serves it: one more item (no topic), appended."""
    return model.with_items([item_id], np.zeros((1, model.target.shape[1])), model.facts)


def test_arms_are_built_once_per_version_and_facts_by_one_thread(shop: Shop) -> None:
    exploration = Exploration(shop.settings)
    serving = Serving(shop.settings)
    try:
        model = serving.model()
        gateway = CountingGateway(serving.gateway)
        # the version's own topics come from its topic-items file: no graph read
        trained = exploration.arms(model, gateway)
        assert gateway.topic_reads == 0 and any(arm.startswith("topic:") for arm in trained.ids)
        # a fold-in's copy of the model (same version, one more item): the arms built again, the
        # new item's topics read from the graph once, by one of the threads asking together
        folded = folded_copy(model)
        with ThreadPoolExecutor(max_workers=4) as pool:
            built = list(pool.map(lambda _: exploration.arms(folded, gateway), range(4)))
        assert gateway.topic_reads == 1
        assert all(arms is built[0] for arms in built) and built[0].ids == trained.ids
        assert exploration.built_versions() == [model.artifacts.version]
        # the same facts again: nothing rebuilt; other facts (a catalogue write that moved items):
        # the category arms anew, the topics kept
        arms = built[0]
        assert exploration.arms(folded, gateway, folded.facts) is arms
        rows = sorted(model.item_index.values())[:3]
        moved = model.facts.replaced({row: (model.facts.brand_of(row), ("Elsewhere-Test",)) for row in rows})
        other = exploration.arms(folded, gateway, moved)
        assert other is not arms and gateway.topic_reads == 1
        assert sorted(other.rows[other.ids.index("category:Elsewhere-Test")].tolist()) == rows
        assert "category:Elsewhere-Test" not in arms.ids
        assert exploration.arms(folded, gateway, moved) is other
        # the next fold-in: only the item it appended is read, not every item folded in before
        again = folded_copy(folded, "folded-again")
        assert exploration.arms(again, gateway, again.facts).ids == trained.ids
        assert gateway.asked == [["folded-in"], ["folded-again"]]
        # "folded-in" folded in again: it moves to the end, so every folded row is read again
        refolded = folded_copy(folded_copy(model, "folded-again"), "folded-in")
        assert exploration.arms(refolded, gateway, refolded.facts).ids == trained.ids
        assert gateway.asked[-1] == ["folded-again", "folded-in"]
    finally:
        serving.close()


class Sliced(list[str]):
    """Item ids that record where each slice taken of them starts."""

    def __init__(self, item_ids: Sequence[str]) -> None:
        super().__init__(item_ids)
        self.starts: list[int] = []

    def __getitem__(self, at: Any) -> Any:
        if isinstance(at, slice):
            self.starts.append(at.start or 0)
        return super().__getitem__(at)


def test_whether_topics_cover_a_fold_ins_copy_is_told_by_its_folded_rows() -> None:
    """Each fold-in's copy of the model was compared with the items the topics were read for, id
    by id, the trained ones too (a million string comparisons at each fold-in on a large
    catalogue): only the folded rows are now, the trained ones being in their rows in every copy.
    An item folded in again moves to the end: the folded rows differ, and are all read again."""
    ids = ["a", "b", "c"]
    trained = Recommender(
        ModelArtifacts(
            version="v-covers",
            item_ids=ids,
            item_embeddings=np.eye(3, 4, dtype=np.float32),
            components={},
            weights={EMBEDDING: 1.0},
            recency_decay=0.0,
            popularity=np.ones(3, dtype=np.float32),
        )
    )

    def folded(*item_ids: str) -> Recommender:
        return trained.with_items(list(item_ids), np.ones((len(item_ids), 4)), trained.facts)

    held = folded("x", "y")
    read = TopicMembers({"topic:t": np.array([0, 3])}, 0.0, items=5, item_ids=Sliced(held.artifacts.item_ids))
    assert read.covers(held)
    assert read.covers(folded("x", "y", "z"))  # appended
    assert not read.covers(folded("y", "x"))  # "x" folded in again: moved to the end
    assert not read.covers(folded("x"))  # fewer items
    assert read.item_ids.starts and min(read.item_ids.starts) == trained.n_items


def test_a_version_without_a_topic_items_file_reads_its_edges_at_once(
    shop: Shop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its topics are its ABOUT edges, read in one statement; before, one read per batch of its
    items (64,000 items: 32 reads on a newcomer's request, again every minute without topics)."""
    monkeypatch.setattr(exploration_module, "TOPIC_READ_BATCH", 10)  # so that batches would be many
    serving = Serving(shop.settings)
    try:
        model = serving.model()
        gateway = CountingGateway(serving.gateway)
        from_file = TopicMembers.of_file(model, models_dir(shop.settings.data_dir))
        no_file = TopicMembers.of_file(model, tmp_path)  # a folder without the version's file
        assert from_file.members and not no_file.members and model.n_items > 10
        from_edges = no_file.read(model, gateway)
        assert gateway.topic_reads == 1
        by_arm = [
            {arm: sorted(rows.tolist()) for arm, rows in t.members.items()} for t in (from_edges, from_file)
        ]
        assert by_arm[0] == by_arm[1]  # linking wrote the file's rows
    finally:
        serving.close()


class TopicsFrom:
    """The real gateway, whose item–topic reads go to another real server's (one to stall)."""

    def __init__(self, gateway: Any, topics_gateway: Any) -> None:
        self.gateway, self.topics_gateway = gateway, topics_gateway

    def read(self, statement: Any, params: Any) -> Any:
        topics = statement in (ITEM_TOPICS, VERSION_ITEM_TOPICS)
        return (self.topics_gateway if topics else self.gateway).read(statement, params)


def test_threads_building_arms_on_a_stalled_server_each_wait_one_bound(shop: Shop, tmp_path: Path) -> None:
    """Four threads that need a version's arms while the graph server stalls share the one build's
    failure. Before, they built one after another under a lock: the fourth waited four bounds.
    (The model has an item folded in, whose topics are read from the graph.)"""
    bound_s = 2.0
    server = EmbeddedServer(tmp_path / "var")
    info = server.start()
    stalled = open_gateway(Settings(data_dir=tmp_path / "var"), timeout_s=bound_s)
    exploration = Exploration(shop.settings)
    serving = Serving(shop.settings)
    try:
        model = folded_copy(serving.model())
        gateway = TopicsFrom(serving.gateway, stalled)
        stalled.read(admin.PING)  # connected before the stall
        os.kill(info.pid, signal.SIGSTOP)
        try:
            ended = together(lambda: exploration.arms(model, gateway))
        finally:
            os.kill(info.pid, signal.SIGCONT)
        assert {outcome for outcome, _ in ended} == {"GraphTimeout"}, ended
        assert max(waited for _, waited in ended) < 2 * bound_s, ended  # before: 2, 4, 6 and 8 s
        assert exploration.built_versions() == []
        # the server goes on: the next request builds them
        assert exploration.arms(model, gateway).ids and exploration.built_versions() == [
            model.artifacts.version
        ]
    finally:
        serving.close()
        stalled.close()
        server.stop()


def test_versions_whose_arms_never_build_are_not_all_kept(shop: Shop, tmp_path: Path) -> None:
    """A version whose arms fail keeps its flight (and failure) until built; before, nothing but a
    successful build trimmed them, so a process whose graph failed kept one per version it met."""
    server = EmbeddedServer(tmp_path / "var")
    server.start()
    down = open_gateway(Settings(data_dir=tmp_path / "var"), timeout_s=1.0)
    server.stop()
    exploration = Exploration(shop.settings)
    serving = Serving(shop.settings)
    try:
        model = serving.model()
        gateway = TopicsFrom(serving.gateway, down)
        versions = [
            Recommender(dataclasses.replace(model.artifacts, version=f"v{k}")) for k in range(ARM_CACHE + 3)
        ]
        for version in versions:
            with pytest.raises(GraphUnavailable):
                exploration.arms(version, gateway)
        assert len(exploration._unbuilt) == ARM_CACHE
        assert exploration._unbuilt.items()[-1][0] == versions[-1].artifacts.version
        # a built version is not forgotten for an unbuilt one
        assert exploration.arms(model, serving.gateway).ids
        for version in versions:
            with pytest.raises(GraphUnavailable):
                exploration.arms(version, gateway)
        assert exploration.built_versions() == [model.artifacts.version]
        assert len(exploration._built) == 1 and len(exploration._unbuilt) == ARM_CACHE
        # nor when another version builds: before, the trim to ARM_CACHE counted the failed ones
        other = Recommender(dataclasses.replace(model.artifacts, version="built-later"))
        assert exploration.arms(other, serving.gateway).ids
        assert exploration.built_versions() == [model.artifacts.version, "built-later"]
    finally:
        serving.close()
        down.close()


def test_the_arms_order_their_items_by_the_popularity_an_erasure_left(shop: Shop) -> None:
    # An erasure lowers the version's popularity counts (the active model is served with them
    # within a second, the facts unchanged): the arms' most popular items must follow.
    exploration = Exploration(shop.settings)
    serving = Serving(shop.settings)
    try:
        model = serving.model()
        arms = exploration.arms(model, serving.gateway)
        popularity = model.artifacts.popularity
        arm = next(a for a, rows in enumerate(arms.rows) if rows.size > 1 and popularity[rows[1]] > 0)
        first = int(arms.rows[arm][0])
        lowered = popularity.copy()
        lowered[first] = 0  # every user of the arm's most popular item erased
        erased = model.with_popularity(lowered)
        assert erased.facts is model.facts
        rows = exploration.arms(erased, serving.gateway).rows[arm]
        assert int(rows[0]) != first
        # a fold-in's copy (its counts extended, not changed): the same arms, in that order
        again = exploration.arms(folded_copy(erased), serving.gateway)
        assert again.ids == arms.ids and [r.tolist() for r in again.rows] == [
            r.tolist() for r in exploration.arms(erased, serving.gateway).rows
        ]
    finally:
        serving.close()


def test_the_category_arms_follow_the_catalogue_at_once(shop: Shop) -> None:
    """Items the catalogue API moves to another category are offered by that category's arm on new
    users' first pages within a second, and no longer by their old categories' arms."""
    moved = [i["item_id"] for i in page(shop, "arms-warm-up", k=20)["items"] if "explore" not in i][:6]
    paths = {
        item: requests.get(f"{shop.api.url}/v1/items/{item}", timeout=30).json()["categories"]
        for item in moved
    }

    def put_categories(categories: dict[str, Any]) -> None:
        body = [{"item_id": item, "categories": path} for item, path in categories.items()]
        response = requests.post(f"{shop.api.url}/v1/items", json=body, headers=AUTH, timeout=30)
        assert response.status_code == 200, response.text

    put_categories(dict.fromkeys(moved, "Arms-Test"))
    try:

        def filtered() -> list[str]:
            return sorted(i["item_id"] for i in page(shop, "arms-watch", k=20, category="Arms-Test")["items"])

        within(PICKUP_S, lambda: filtered() == sorted(moved))
        # k=2 under the filter: two ranked items and one explored slot, from an arm holding one of
        # the four other moved items
        arms = Counter(
            arm
            for n in range(40)
            for _, _, arm in explored(page(shop, f"arms-facts-{n}", k=2, category="Arms-Test"))
        )
        assert {arm for arm in arms if arm.startswith("category:")} == {"category:Arms-Test"}, arms
    finally:
        put_categories(paths)
        settled(lambda: filtered() == [], "the moved items back in their categories")


@dataclass
class Variant:
    settings: Settings  # a graph of its own: the active version moves
    active: str  # trained and active
    held: str  # trained with topics of its own, held by the gate (ABOUT edges still the active's)


@pytest.fixture(scope="module")
def variant(
    settings: Settings, graph_server: EmbeddedServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Variant:
    """A 150-user, 80-item demo shop with an active version and a candidate the gate held."""
    folder = tmp_path_factory.mktemp("explore-variant") / "shop"
    generate_shop(ShopSpec(users=150, items=80, seed=5), folder)
    local = Settings(
        data_dir=settings.data_dir, graph_name=f"explore_variant_{uuid.uuid4().hex[:8]}", explore_share=0.2
    )
    tag = uuid.uuid4().hex[:6]
    active, held = f"explore-topics-{tag}-1", f"explore-topics-{tag}-2"
    with open_gateway(local) as gateway:
        migrate(gateway)
        import_dataset(gateway, open_dataset(str(folder), local.datasets_dir), local)
        run_training(
            gateway, local, TrainConfig(epochs=1, use_ease=False, seed=0), device="cpu", version=active
        )
        run_training(
            gateway,
            local,
            TrainConfig(epochs=1, use_ease=False, seed=3),
            device="cpu",
            version=held,
            gate=True,
            on_decision=lambda _version, _decision: "held for a test",
        )
    return Variant(local, active, held)


def topic_arms(arms: Any, model: Recommender) -> dict[str, set[str]]:
    """Each topic arm's items."""
    ids = model.artifacts.item_ids
    return {
        a: {ids[r] for r in rows.tolist()}
        for a, rows in zip(arms.ids, arms.rows, strict=True)
        if a.startswith("topic:")
    }


def own_topics(settings: Settings, version: str) -> dict[str, set[str]]:
    """The topic arms ``version``'s topic-items file gives (at least 3 items each)."""
    found = TopicItems.load(topic_items_path(models_dir(settings.data_dir), version), version)
    members: dict[str, set[str]] = {}
    for k, j in zip(*np.nonzero(found.item_topics >= 0), strict=True):
        members.setdefault(f"topic:{found.topic_ids[found.item_topics[k, j]]}", set()).add(found.item_ids[k])
    return {arm: items for arm, items in members.items() if len(items) >= 3}


def test_every_process_serves_a_versions_own_topic_arms_and_its_folded_items(variant: Variant) -> None:
    """Two processes serving one model hold the same topic arms: the version's own (its topic-items
    file) and, for items folded in later, their ABOUT edges. Before, a process read the graph's ABOUT
    edges once per version: one that served a held variant kept the active version's memberships
    for it after its promotion, while another read the variant's own, and items folded in later
    joined no topic arm in either."""
    local = variant.settings
    assert own_topics(local, variant.held) != own_topics(local, variant.active)  # else nothing to tell apart
    one = Serving(local)  # a process that serves the variant (an experiment's) before its promotion
    two = Serving(local)  # a process that only meets it once promoted
    try:
        assert one.active_model().artifacts.version == variant.active
        held = one.model(variant.held)
        before = topic_arms(one.exploration.arms(held, one.gateway), held)
        one.promote(variant.held)

        def served(serving: Serving) -> dict[str, set[str]]:
            model = serving.active_model()
            assert model.artifacts.version == variant.held
            facts = serving.catalogue().facts(model)
            return topic_arms(serving.exploration.arms(model, serving.gateway, facts), model)

        assert served(one) == served(two) == own_topics(local, variant.held)
        assert before == served(one)  # the variant's own topics before its promotion too
        # the same state gives the same page, whichever process answers
        for n in range(3):
            user = f"variant-newcomer-{n}"
            first = recommend(one, user)["items"]
            assert any("explore" in i for i in first) and recommend(two, user)["items"] == first

        # an item folded in joins the topic arms its ABOUT edges name, in both processes
        gateway = one.gateway
        name = ACTIVE.get(gateway).names[0]
        gateway.run_query("CREATE (:Item {id: 'variant-folded', title: $t, listed: true})", {"t": name})
        assert embed_new_items(gateway, local, ["variant-folded"])["folded"] == 1
        edges = gateway.run_query(
            "MATCH (:Item {id: 'variant-folded'})-[a:ABOUT]->(t:Topic) RETURN t.id AS t, a.version AS v", {}
        )
        assert edges and {r["v"] for r in edges} == {variant.held}
        about = {f"topic:{r['t']}" for r in edges}
        deadline = time.monotonic() + 30
        while "variant-folded" not in one.active_model().item_index or (
            "variant-folded" not in two.active_model().item_index
        ):
            assert time.monotonic() < deadline, "the fold-in never reached the serving processes"
            time.sleep(0.2)
        for serving in (one, two):
            assert {arm for arm, items in served(serving).items() if "variant-folded" in items} == about
        assert served(one) == served(two)
    finally:
        one.close()
        two.close()
