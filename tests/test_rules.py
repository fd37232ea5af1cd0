"""Business rules and diversity over real HTTP on a real graph, served by gunicorn (2 workers):
block, pin, boost, bury, time windows and surfaces, the `rules` each item lists, pages that stay
consistent, and max_per_brand / max_per_category."""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
import weakref
from collections import Counter
from typing import Any

import numpy as np
import pytest
import requests

from kgrec.ranking import Ranking
from kgrec.recommender import Recommender
from kgrec.rules import COMPILED_KEYS, Rule, RuleSet, RulesView, apply_scores
from kgrec.serving import Serving
from tests.test_catalogue_api import AUTH, Shop, a_user, ids, shop, within

__all__ = ["shop"]  # the module's fixture, shared with the catalogue tests' definition

PICKUP_S = 1.0


def post_rule(shop: Shop, rule: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(shop.url("/v1/rules"), json=rule, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def delete_rule(shop: Shop, rule_id: str) -> None:
    response = requests.delete(shop.url(f"/v1/rules/{rule_id}"), headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text


def brand_of(shop: Shop, item_ids: list[str]) -> dict[str, str]:
    rows = shop.cypher(
        "UNWIND $ids AS id MATCH (i:Item {id: id})-[:MADE_BY]->(b:Brand) RETURN i.id AS item, b.id AS brand",
        ids=item_ids,
    )
    return {r["item"]: r["brand"] for r in rows}


@pytest.fixture(autouse=True)
def no_rules_left(shop: Shop) -> Any:
    """Each test starts and ends without rules (so they never leak into the next)."""
    yield
    for rule in requests.get(shop.url("/v1/rules"), timeout=30).json()["rules"]:
        delete_rule(shop, rule["id"])
    time.sleep(PICKUP_S)


def test_a_block_rule_on_a_brand_removes_every_item_of_that_brand(shop: Shop) -> None:
    user = a_user(shop)
    page = ids(shop.recommend(user, k=20))
    brands = brand_of(shop, page)
    blocked = Counter(brands[i] for i in page if i in brands).most_common(1)[0][0]
    rule = post_rule(shop, {"action": "block", "target": {"brand": blocked}})
    assert rule["action"] == "block" and rule["target"] == {"brand": blocked} and rule["active"] is True

    def no_blocked_brand() -> bool:
        shown = ids(shop.recommend(user, k=100)) + ids(shop.similar(page[0], k=100))
        return blocked not in brand_of(shop, shown).values()

    within(PICKUP_S, no_blocked_brand)
    delete_rule(shop, rule["id"])
    within(PICKUP_S, lambda: ids(shop.recommend(user, k=20)) == page)


def test_a_rule_says_how_many_items_its_target_names_so_a_misspelt_one_shows(shop: Shop) -> None:
    user = a_user(shop)
    page = ids(shop.recommend(user, k=20))
    brand = sorted(set(brand_of(shop, page).values()))[0]
    of_brand = shop.cypher("MATCH (i:Item)-[:MADE_BY]->(:Brand {id: $b}) RETURN count(i) AS n", b=brand)[0][
        "n"
    ]
    assert of_brand > 0
    posted = [
        post_rule(shop, {"id": "brand", "action": "bury", "factor": 0.5, "target": {"brand": brand}}),
        post_rule(shop, {"id": "typo", "action": "block", "target": {"brand": brand + "-typo"}}),
        post_rule(shop, {"id": "pin", "action": "pin", "item": page[3], "position": 1}),
        post_rule(shop, {"id": "gone", "action": "pin", "item": "no-such-item", "position": 1}),
        post_rule(
            shop,
            {"id": "shade", "action": "block", "target": {"attribute": {"relation": "shade", "value": "x"}}},
        ),
    ]
    expected = {"brand": of_brand, "typo": 0, "pin": 1, "gone": 0, "shade": 0}
    assert {rule["id"]: rule["target_items"] for rule in posted} == expected
    listed = requests.get(shop.url("/v1/rules"), timeout=30).json()["rules"]
    assert {rule["id"]: rule["target_items"] for rule in listed} == expected
    assert shop.put(page[0], {"attributes": {"shade": ["x"]}}).status_code == 200
    listed = requests.get(shop.url("/v1/rules"), timeout=30).json()["rules"]
    assert {rule["id"]: rule["target_items"] for rule in listed}["shade"] == 1
    assert shop.put(page[0], {"attributes": {"shade": ["shade:Other"]}}).status_code == 200


def test_a_rule_sent_again_without_an_id_replaces_itself_instead_of_adding_a_second(shop: Shop) -> None:
    # a client that resends after a timeout whose first attempt committed: two ×1,000 boosts
    # would multiply to ×1,000,000
    boost = {"action": "boost", "factor": 1000, "target": {"brand": "B-retry"}}
    first, again = post_rule(shop, boost), post_rule(shop, boost)
    assert first["id"] == again["id"] and first["created_at"] == again["created_at"]
    other = post_rule(shop, {**boost, "factor": 999})
    listed = requests.get(shop.url("/v1/rules"), timeout=30).json()["rules"]
    assert sorted(rule["id"] for rule in listed) == sorted({first["id"], other["id"]})
    assert other["id"] != first["id"]


def test_a_pin_is_at_its_position_on_page_one_and_not_again_on_page_two(shop: Shop) -> None:
    user = a_user(shop)
    ranking = ids(shop.recommend(user, k=40))
    pinned = ranking[25]  # far down: the pin moves it up
    rule = post_rule(shop, {"id": "pin-3", "action": "pin", "item": pinned, "position": 3})

    def pinned_at_three() -> bool:
        first = shop.recommend(user, k=10)
        return ids(first)[2] == pinned and first[2]["rules"] == ["pin-3"]

    within(PICKUP_S, pinned_at_three)
    first, second = ids(shop.recommend(user, k=10)), ids(shop.recommend(user, k=10, offset=10))
    assert pinned not in second and not set(first) & set(second)
    # the others keep their order around it
    assert first[:2] + first[3:] + second == [i for i in ranking if i != pinned][:19]
    # a pin with a condition applies only to requests that match it
    post_rule(
        shop, {"id": "pin-3", "action": "pin", "item": pinned, "position": 3, "when": {"brand": "no-such"}}
    )
    within(PICKUP_S, lambda: ids(shop.recommend(user, k=10)) == ranking[:10])
    assert rule["id"] == "pin-3"


def test_boost_and_bury_move_items_the_expected_way(shop: Shop) -> None:
    user = a_user(shop)
    ranking = ids(shop.recommend(user, k=30))
    low, high = ranking[20], ranking[0]
    boost = post_rule(shop, {"action": "boost", "target": {"item": low}, "factor": 1000})
    bury = post_rule(shop, {"action": "bury", "target": {"item": high}, "factor": 0.001})

    def moved() -> bool:
        items = shop.recommend(user, k=30)
        order = ids(items)
        return (
            order.index(low) < 20
            and (high not in order or order.index(high) > 0)
            and items[order.index(low)]["rules"] == [boost["id"]]
        )

    within(PICKUP_S, moved)
    items = shop.recommend(user, k=100)
    bumped = [i for i in items if i["item_id"] == high]
    assert not bumped or bumped[0]["rules"] == [bury["id"]]
    untouched = [i for i in items if i["item_id"] not in (low, high)]
    assert all(i["rules"] == [] for i in untouched)
    # on the other surface only: a rule for similar items leaves recommendations alone
    delete_rule(shop, boost["id"])
    delete_rule(shop, bury["id"])
    post_rule(shop, {"action": "boost", "target": {"item": low}, "factor": 1000, "surface": "similar"})
    within(PICKUP_S, lambda: ids(shop.recommend(user, k=30)) == ranking)


def test_an_expired_rule_does_nothing_and_a_future_one_not_yet(shop: Shop) -> None:
    user = a_user(shop)
    ranking = ids(shop.recommend(user, k=10))
    now = int(time.time() * 1000)
    ends = now + 2000  # a rule that has already ended is refused: this one ends after its write
    expired = post_rule(
        shop, {"action": "block", "target": {"item": ranking[0]}, "starts_at": 0, "ends_at": ends}
    )
    future = post_rule(
        shop, {"action": "block", "target": {"item": ranking[1]}, "starts_at": now + 3_600_000}
    )
    time.sleep(max(0.0, ends / 1000 - time.time()))
    listed = {r["id"]: r for r in requests.get(shop.url("/v1/rules"), timeout=30).json()["rules"]}
    assert listed[expired["id"]]["expired"] is True and listed[future["id"]]["active"] is False
    time.sleep(PICKUP_S)
    for _ in range(10):
        assert ids(shop.recommend(user, k=10)) == ranking


def test_max_per_brand_and_category_reorder_pages_consistently(shop: Shop) -> None:
    user = a_user(shop)
    plain = ids(shop.recommend(user, k=100))
    pages = [ids(shop.recommend(user, k=10, offset=o, max_per_brand=1)) for o in (0, 10, 20)]
    flat = [i for page in pages for i in page]
    assert len(flat) == len(set(flat)) == 30  # no item twice, none lost between pages
    brands = brand_of(shop, flat)
    for page in pages[:2]:
        counts = Counter(brands[i] for i in page if i in brands)
        assert max(counts.values()) == 1, counts
    similar = shop.similar(plain[0], k=10, max_per_category=2)
    assert len(similar) == 10
    assert (
        requests.get(shop.url(f"/v1/users/{user}/recommendations"), params={"max_per_brand": 0}).status_code
        == 400
    )


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"action": "pin", "target": {"brand": "x"}, "position": 1}, "item"),
        ({"action": "pin", "item": "x"}, "position"),
        ({"action": "boost", "target": {"item": "x"}, "factor": 0.5}, "factor"),
        ({"action": "bury", "target": {"item": "x"}}, "factor"),
        ({"action": "bury", "target": {"item": "x"}, "factor": 5e-324}, "factor"),  # below 1/1,000
        ({"action": "block"}, "target"),
        ({"action": "block", "target": {"item": "x", "brand": "y"}}, "target"),
        ({"action": "block", "target": {"item": "x"}, "starts_at": 5, "ends_at": 3}, "ends_at"),
        ({"action": "block", "target": {"item": "x"}, "ends_at": "2026-01-01T00:00:00Z"}, "ends_at"),
        (
            {"action": "block", "target": {"attribute": {"relation": "made by", "value": "x"}}},
            "target.attribute.relation",
        ),
        ({"action": "pin", "item": "x", "position": 1, "when": {"brand": "x", "interest": "y"}}, "when"),
        ({"action": "launch", "target": {"item": "x"}}, "action"),
        ({"action": "block", "target": {"item": "x"}, "surface": "email"}, "surface"),
        # a JSON string is not a number, as for events and the catalogue
        ({"action": "boost", "target": {"brand": "a"}, "factor": "2"}, "factor"),
        ({"action": "pin", "item": "x", "position": "1"}, "position"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(shop: Shop, rule: dict[str, Any], field: str) -> None:
    response = requests.post(shop.url("/v1/rules"), json=rule, headers=AUTH, timeout=30)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert requests.get(shop.url("/v1/rules"), timeout=30).json()["rules"] == []


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        (
            {"action": "launch", "target": {"item": "x"}},
            "must be one of block, pin, boost, bury (got 'launch')",
        ),
        (
            {"action": "block", "target": {"topic": "x"}},
            "must be one object of {item}, {brand}, {category} or {attribute: {relation, value}} "
            "(got {'topic': 'x'})",
        ),
        (
            {"action": "pin", "item": "x", "position": 1, "when": {"topic": "y"}},
            "must be one object of {brand}, {category} or {interest} (got {'topic': 'y'})",
        ),
        (
            {"action": "block", "target": {"item": "x"}, "starts_at": 5, "ends_at": 4},
            "must be after starts_at (got ends_at 4 ms, starts_at 5 ms)",
        ),
        (  # the catalogue stores these as MADE_BY / IN_CATEGORY: the rule would name no item
            {"action": "block", "target": {"attribute": {"relation": "produced_by", "value": "Acme"}}},
            "is stored as the item's brand: target {brand} instead (got 'produced_by')",
        ),
        (
            {
                "action": "bury",
                "target": {"attribute": {"relation": "belongs_to", "value": "Lips"}},
                "factor": 0.5,
            },
            "is stored as the item's category: target {category} instead (got 'belongs_to')",
        ),
        (  # seconds sent for milliseconds: it ended in 1970, and stored it would never apply
            {"action": "boost", "target": {"item": "x"}, "factor": 2, "ends_at": 1766534400},
            "must be in the future (got 1766534400 ms, 1970-01-21T10:42:14+00:00: already past)",
        ),
    ],
)
def test_a_refused_rule_shows_the_value_it_refused(shop: Shop, rule: dict[str, Any], reason: str) -> None:
    response = requests.post(shop.url("/v1/rules"), json=rule, headers=AUTH, timeout=30)
    assert response.status_code == 422, response.text
    assert [e["reason"] for e in response.json()["errors"]] == [reason]


def test_many_buries_on_one_item_leave_its_score_finite(shop: Shop) -> None:
    """Buries multiply: 120 of 1/1,000 made the item's factor 0, and a negative score over it -inf
    (JSON has no -Infinity). The product is kept within 10^±100."""
    serving = Serving(shop.settings)
    try:
        model = serving.model()
        item = next(iter(model.item_index))
        rules = [
            Rule(f"b{n}", "bury", "item", item, None, None, 0.001, None, None, None, None, "both")
            for n in range(120)
        ]
        compiled = RuleSet(rules=rules).compiled(model, "recommendations", time.time() * 1000)
        row = model.item_index[item]
        assert compiled.factor is not None and compiled.factor[row] == pytest.approx(1e-100)
        ranked = apply_scores(Ranking(np.array([row], dtype=np.int64), np.array([-0.5])), compiled)
        assert np.isfinite(ranked.scores).all() and ranked.scores[0] == pytest.approx(-5e99)
    finally:
        serving.close()


def test_rules_need_the_key_and_an_unknown_rule_is_404(shop: Shop) -> None:
    rule = {"action": "block", "target": {"item": "x"}}
    assert requests.post(shop.url("/v1/rules"), json=rule, timeout=30).status_code == 401
    missing = requests.delete(shop.url("/v1/rules/no-such-rule"), headers=AUTH, timeout=30)
    assert missing.status_code == 404 and missing.json()["field"] == "rule_id"


def test_a_rule_change_is_compiled_off_the_request_path(shop: Shop) -> None:
    """Another process's change is loaded in the background, already compiled for the model this
    process serves: requests keep the previous rules meanwhile and never compile on their own."""
    serving = Serving(shop.settings)
    try:
        model = serving.model()
        view = RulesView(serving.gateway, check_every_s=0.05)
        before = view.rules()
        before.compiled(model, "recommendations", time.time() * 1000)  # what this process serves
        rule = post_rule(shop, {"action": "boost", "target": {"item": a_user_item(shop)}, "factor": 3})

        def changed() -> bool:
            return view.rules().revision != before.revision

        within(PICKUP_S, changed)
        after = view.rules()
        assert [r.id for r in after.rules] == [rule["id"]]
        key = (model.artifacts.version, "recommendations")
        warmed = after._compiled.peek(key)
        assert warmed is not None and warmed.model is model  # warmed ahead
        assert warmed.result.factor is not None
        assert (id(model), "similar") not in after._compiled  # not served here: not compiled
    finally:
        serving.close()


def test_a_rule_change_reaches_the_first_request_after_a_quiet_spell(shop: Shop) -> None:
    """No request in between: the poller, not a request, finds the change."""
    serving = Serving(shop.settings)
    try:
        view = RulesView(serving.gateway, check_every_s=0.05)
        before = view.rules()
        rule = post_rule(shop, {"action": "block", "target": {"item": a_user_item(shop)}})
        time.sleep(PICKUP_S)  # quiet: nothing asks this view for its rules
        after = view.rules()  # the first request since the change
        assert after.revision != before.revision and rule["id"] in [r.id for r in after.rules]
        # closed, the poller stops (it would otherwise read through a closed gateway)
        pollers = [t for t in threading.enumerate() if t.name == "kgrec-rules"]
        view.close()
        within(PICKUP_S, lambda: len([t for t in pollers if t.is_alive()]) < len(pollers))
    finally:
        serving.close()


def test_compiled_rules_keep_no_superseded_model_alive(shop: Shop) -> None:
    """Each fold-in or erasure copies the served model; the compiled rules, kept until a rule
    changes, were keyed by the model object, so a shop whose rules never changed kept every copy
    (embeddings and all) alive. One entry per version now, and at most COMPILED_KEYS."""
    serving = Serving(shop.settings)
    try:
        model = serving.model()
        rule_set = RuleSet()  # no rules: serving compiles for every request all the same
        now = time.time() * 1000
        copies = [model.with_popularity(model.artifacts.popularity * 0.5) for _ in range(3)]
        first = weakref.ref(copies[0])
        for copy in copies:
            rule_set.compiled(copy, "recommendations", now, copy.facts)
        del copies, copy
        gc.collect()
        assert first() is None and len(rule_set._compiled) == 1
        for k in range(COMPILED_KEYS + 3):
            other = Recommender(dataclasses.replace(model.artifacts, version=f"other-{k}"))
            rule_set.compiled(other, "similar", now + k + 1, other.facts)
        assert len(rule_set._compiled) == COMPILED_KEYS
        assert ("other-0", "similar") not in rule_set._compiled  # the least recently used went first
    finally:
        serving.close()


def a_user_item(shop: Shop) -> str:
    return shop.cypher("MATCH (i:Item) RETURN i.id AS id ORDER BY id LIMIT 1")[0]["id"]


def test_an_interest_pin_holds_for_a_user_with_stronger_topics_on_both_surfaces(shop: Shop) -> None:
    # Ten strong topic interests used to fill the ten interests a pin's `when` is matched against,
    # and similar items never read the user's interests at all.
    user = f"topical-{time.time_ns()}"
    category = shop.cypher(
        "MATCH (c:Category)<-[:IN_CATEGORY]-(:Item) RETURN c.id AS id ORDER BY id LIMIT 1"
    )[0]["id"]
    now = int(time.time() * 1000)
    shop.cypher(
        "MERGE (u:User {id: $user}) WITH u "
        "MATCH (c:Category {id: $category}) "
        "CREATE (u)-[:INTERESTED_IN {weight: 1.0, weight_ts: $now, count: 1, first_ts: $now, last_ts: $now}]->(c) "
        "WITH u UNWIND range(1, 10) AS n "
        "CREATE (t:Topic {id: $user + '-topic-' + toString(n)}) "
        "CREATE (u)-[:INTERESTED_IN {weight: 100.0, weight_ts: $now, count: 1, first_ts: $now, last_ts: $now}]->(t)",
        user=user,
        category=category,
        now=now,
    )
    try:
        page = ids(shop.recommend(user, k=50))
        anchor, pinned = page[0], page[-1]
        post_rule(
            shop,
            {
                "id": "pin-interest",
                "action": "pin",
                "item": pinned,
                "position": 1,
                "when": {"interest": category},
            },
        )
        within(PICKUP_S, lambda: ids(shop.recommend(user, k=10))[0] == pinned)
        within(PICKUP_S, lambda: ids(shop.similar(anchor, k=10, user_id=user))[0] == pinned)
        assert shop.similar(anchor, k=10, user_id=user)[0]["rules"] == ["pin-interest"]
        assert all("pin-interest" not in i["rules"] for i in shop.similar(anchor, k=10))  # no user
    finally:
        shop.cypher(
            "MATCH (u:User {id: $user}) OPTIONAL MATCH (u)-[:INTERESTED_IN]->(t:Topic) DETACH DELETE u, t",
            user=user,
        )


def test_a_category_pin_holds_under_its_subcategories_on_both_surfaces(shop: Shop) -> None:
    # A pin's `when: {category}` was matched against the request's category and the item's own
    # categories only, while a category filter, block or boost covers the subcategories: a pin on
    # "Makeup" did not apply to a request for "Lips" nor to the similar items of a lipstick.
    user = a_user(shop)
    seed = ids(shop.recommend(user, k=5))[0]
    child = shop.cypher(
        "MATCH (:Item {id: $item})-[:IN_CATEGORY]->(c:Category) RETURN c.id AS id ORDER BY id LIMIT 1",
        item=seed,
    )[0]["id"]
    top = f"PinTop-{time.time_ns()}"  # a new category above `child`, which no item is listed under
    assert (
        shop.put(f"pin-tree-{time.time_ns()}", {"title": "x", "categories": [top, child]}).status_code == 200
    )
    in_child = [i for i in ids(shop.recommend(user, k=30, category=child)) if i != seed]
    pinned = in_child[-1]
    post_rule(
        shop, {"id": "pin-top", "action": "pin", "item": pinned, "position": 1, "when": {"category": top}}
    )
    within(PICKUP_S, lambda: ids(shop.recommend(user, k=10, category=child))[0] == pinned)
    within(PICKUP_S, lambda: ids(shop.similar(seed, k=10))[0] == pinned)
    assert shop.similar(seed, k=10)[0]["rules"] == ["pin-top"]
    assert all("pin-top" not in i["rules"] for i in shop.recommend(user, k=10))  # no category asked


def test_a_pin_on_an_item_never_puts_it_among_its_own_similar_items(shop: Shop) -> None:
    user = a_user(shop)
    item = ids(shop.recommend(user, k=5))[0]
    others = ids(shop.similar(item, k=3))
    post_rule(shop, {"id": "pin-self", "action": "pin", "item": item, "position": 1})
    # the pin has reached every worker once it holds on recommendations
    within(PICKUP_S, lambda: ids(shop.recommend(user, k=5))[0] == item)
    for _ in range(6):
        similar = shop.similar(item, k=3)
        assert item not in ids(similar) and ids(similar) == others
        assert all("pin-self" not in i["rules"] for i in similar)


def test_an_attribute_rule_follows_later_attribute_changes_within_a_second(shop: Shop) -> None:
    user = a_user(shop)
    item = ids(shop.recommend(user, k=5))[0]
    target = {"attribute": {"relation": "shade", "value": "shade:AmberTest"}}
    post_rule(shop, {"id": "block-amber", "action": "block", "target": target})
    within(PICKUP_S, lambda: ids(shop.recommend(user, k=5))[0] == item)  # no item has the shade yet
    assert shop.put(item, {"attributes": {"shade": ["shade:AmberTest"]}}).status_code == 200
    within(PICKUP_S, lambda: item not in ids(shop.recommend(user, k=20)))
    assert shop.put(item, {"attributes": {"shade": ["shade:Other"]}}).status_code == 200
    within(PICKUP_S, lambda: ids(shop.recommend(user, k=5))[0] == item)
