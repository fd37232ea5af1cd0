"""Brand and category changes through the catalogue API (and the facts events carry) reach serving
at once, over real HTTP on a real graph (gunicorn, 2 workers): brand and category filters, block
rules on a brand or category, max_per_brand / max_per_category and pin conditions follow the
catalogue, not the model version (the process that took the write on its next answer, the other
worker within a second)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from kgrec.catalogue import validate_items
from kgrec.serving import ItemFilters, Serving
from tests.test_catalogue_api import AUTH, Shop, a_user, ids, shop, within

__all__ = ["shop"]  # the module's fixture, shared with the catalogue tests' definition

PICKUP_S = 1.0


def post_rule(shop: Shop, rule: dict[str, Any]) -> None:
    response = requests.post(shop.url("/v1/rules"), json=rule, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text


@pytest.fixture(autouse=True)
def no_rules_left(shop: Shop) -> Any:
    yield
    for rule in requests.get(shop.url("/v1/rules"), timeout=30).json()["rules"]:
        requests.delete(shop.url(f"/v1/rules/{rule['id']}"), headers=AUTH, timeout=30)
    time.sleep(PICKUP_S)


def brands(shop: Shop, item_ids: list[str]) -> dict[str, str]:
    rows = shop.cypher(
        "UNWIND $ids AS id MATCH (i:Item {id: id})-[:MADE_BY]->(b:Brand) RETURN i.id AS item, b.id AS brand",
        ids=item_ids,
    )
    return {r["item"]: r["brand"] for r in rows}


def categories(shop: Shop, item_id: str) -> set[str]:
    rows = shop.cypher("MATCH (:Item {id: $id})-[:IN_CATEGORY]->(c:Category) RETURN c.id AS id", id=item_id)
    return {r["id"] for r in rows}


def not_shown(shop: Shop, user: str, anchor: str, *items: str) -> bool:
    """None of ``items`` among the user's recommendations or the anchor's similar items."""
    shown = set(ids(shop.similar(anchor, k=100)) + ids(shop.recommend(user, k=100)))
    return not shown & set(items)


def test_a_new_brand_moves_an_item_between_filters_rules_diversity_and_pins_at_once(shop: Shop) -> None:
    user = a_user(shop)
    anchor = ids(shop.recommend(user, k=1))[0]
    near = ids(shop.similar(anchor, k=20))
    known = brands(shop, near)
    first = near[0]
    second = next(i for i in near[1:] if known.get(i) != known.get(first))  # two brands before
    old = known[first]
    page = ids(shop.similar(anchor, k=10, max_per_brand=1))
    assert first in page and second in page
    put = requests.post(
        shop.url("/v1/items"),
        json={"items": [{"item_id": first, "brand": "Tami-Test"}, {"item_id": second, "brand": "Tami-Test"}]},
        headers=AUTH,
        timeout=30,
    )
    assert put.status_code == 200, put.text

    def follows() -> bool:
        new = ids(shop.similar(anchor, k=100, brand="Tami-Test"))
        return (
            sorted(new) == sorted([first, second])
            and first not in ids(shop.similar(anchor, k=100, brand=old))
            and not {first, second} <= set(ids(shop.similar(anchor, k=10, max_per_brand=1)))
        )

    within(PICKUP_S, follows)
    # a pin on the source item's brand (similar items) follows its new brand
    pinned = near[-1]
    post_rule(
        shop,
        {"id": "pin-tami", "action": "pin", "item": pinned, "position": 1, "when": {"brand": "Tami-Test"}},
    )
    within(PICKUP_S, lambda: ids(shop.similar(first, k=5))[0] == pinned)
    # a block rule on the new brand removes every item of that brand
    post_rule(shop, {"id": "blk-tami", "action": "block", "target": {"brand": "Tami-Test"}})
    within(PICKUP_S, lambda: not_shown(shop, user, anchor, first, second))
    # back to its old brand: shown again, and no longer the blocked brand's
    assert shop.put(first, {"brand": old}).status_code == 200
    within(PICKUP_S, lambda: first in ids(shop.similar(anchor, k=100, brand=old)))
    within(PICKUP_S, lambda: first in ids(shop.similar(anchor, k=100)))


def test_a_new_category_path_moves_an_item_between_filters_rules_and_diversity_at_once(shop: Shop) -> None:
    user = a_user(shop)
    anchor = ids(shop.recommend(user, k=2))[1]
    near = ids(shop.similar(anchor, k=20))
    first, second = near[0], near[1]
    old = sorted(categories(shop, first))
    assert old and "Gifts-Test" not in old
    # the item's categories as a path, general to specific, as GET /v1/items gives them back (a
    # sorted list is no path: written as one it would loop the stored tree, and be refused)
    old_path = shop.get_item(first).json()["categories"]
    # the second item writes the path Gifts-Test > Sets-Test; the first goes under Sets-Test only,
    # so a filter on Gifts-Test finds it through the tree
    assert shop.put(second, {"categories": ["Gifts-Test", "Sets-Test"]}).status_code == 200
    assert shop.put(first, {"categories": "Sets-Test"}).status_code == 200

    def follows() -> bool:
        return (
            sorted(ids(shop.similar(anchor, k=100, category="Gifts-Test"))) == sorted([first, second])
            and ids(shop.similar(anchor, k=100, category="Sets-Test"))
            == ids(shop.similar(anchor, k=100, category="Gifts-Test"))
            and all(first not in ids(shop.similar(anchor, k=100, category=c)) for c in old)
            and not {first, second} <= set(ids(shop.similar(anchor, k=10, max_per_category=1)))
        )

    within(PICKUP_S, follows)
    post_rule(shop, {"id": "blk-gifts", "action": "block", "target": {"category": "Gifts-Test"}})
    within(PICKUP_S, lambda: not_shown(shop, user, anchor, first, second))
    assert shop.put(first, {"categories": old_path[-1:]}).status_code == 200  # its most specific
    within(PICKUP_S, lambda: first in ids(shop.similar(anchor, k=100)))


def catalogue_revision(shop: Shop) -> int:
    rows = shop.cypher("MATCH (r:Revision {id: 'catalogue'}) RETURN r.revision AS revision")
    return int(rows[0]["revision"]) if rows else 0


def test_an_event_that_gives_an_item_a_category_or_a_price_reaches_serving_at_once(shop: Shop) -> None:
    user = a_user(shop)
    anchor = ids(shop.recommend(user, k=3))[2]
    item = ids(shop.similar(anchor, k=20))[3]
    price = shop.get_item(item).json().get("price")
    new_price = 4321.5 if price != 4321.5 else 4321.25

    def send(event_id: str) -> None:
        event = {
            "event_id": event_id,
            "user_id": "facts-by-event",
            "item_id": item,
            "type": "view",
            "ts": int(time.time() * 1000),
            "item": {"categories": ["Events-Test"], "price": new_price},
        }
        response = requests.post(shop.url("/v1/events"), json={"events": [event]}, headers=AUTH, timeout=30)
        assert response.status_code == 200, response.text

    before = catalogue_revision(shop)
    send(f"facts-{time.time_ns()}")
    moved = catalogue_revision(shop)
    assert moved == before + 1
    within(
        PICKUP_S,
        lambda: (
            ids(shop.similar(anchor, k=100, category="Events-Test")) == [item]
            and ids(shop.similar(anchor, k=100, min_price=4321)) == [item]
        ),
    )
    # the same facts again change nothing: the revision stays (event batches do not all bump it)
    send(f"facts-{time.time_ns()}")
    assert catalogue_revision(shop) == moved
    assert shop.put(item, {"price": price}).status_code == 200  # as it was, for the other tests
    within(PICKUP_S, lambda: item not in ids(shop.similar(anchor, k=100, min_price=4321)))


def test_the_process_that_took_the_write_answers_with_it_at_once(shop: Shop) -> None:
    serving = Serving(shop.settings)
    try:
        user = a_user(shop)
        anchor = serving.recommendations(
            user, k=1, offset=0, exclude="seen", filters=ItemFilters(), explain=False
        )["items"][0]["item_id"]
        item = serving.similar(anchor, k=3, filters=ItemFilters())["items"][2]["item_id"]
        for brand in ("Now-Test", "Again-Test"):
            items, problems = validate_items([{"item_id": item, "brand": brand}])
            assert not problems
            serving.upsert_items(items)
            shown = serving.similar(anchor, k=100, filters=ItemFilters(brand=brand))["items"]
            assert [i["item_id"] for i in shown] == [item]
    finally:
        serving.close()
