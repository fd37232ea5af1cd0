"""Brand and category changes through the catalogue API (and the facts events carry) reach serving
at once, over real HTTP on a real graph (gunicorn, 2 workers): brand and category filters, block
rules on a brand or category, max_per_brand / max_per_category and pin conditions follow the
catalogue, not the model version (the process that took the write on its next answer, the other
worker within a second)."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from kgrec.catalogue import validate_items
from kgrec.datasets import open_dataset
from kgrec.importer import import_dataset
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


def post_fact_events(shop: Shop, events: list[tuple[str, str]], facts: dict[str, Any]) -> None:
    """POST a view of each (event id, item) now, by one user, each carrying the item ``facts``."""
    now = int(time.time() * 1000)
    body = [
        {
            "event_id": event_id,
            "user_id": "facts-by-event",
            "item_id": item,
            "type": "view",
            "ts": now,
            "item": facts,
        }
        for event_id, item in events
    ]
    response = requests.post(shop.url("/v1/events"), json={"events": body}, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text


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
        post_fact_events(shop, [(event_id, item)], {"categories": ["Events-Test"], "price": new_price})

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


def import_items(shop: Shop, folder: Path, rows: list[dict[str, str]]) -> None:
    """``kgrec import`` of a data set of these items.csv rows (and no interactions) into the shop's graph."""
    folder.mkdir(exist_ok=True)
    with open(folder / "items.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["item_id", "brand", "categories", "title", "price"])
        writer.writeheader()
        writer.writerows({"brand": "", "categories": "", "title": "", "price": "", **row} for row in rows)
    (folder / "interactions.csv").write_text("user_id,item_id\n", encoding="utf-8")
    import_dataset(shop.gateway, open_dataset(str(folder), folder.parent), shop.settings)


def test_a_bulk_import_reaches_serving_at_once(shop: Shop, tmp_path: Path) -> None:
    user = a_user(shop)
    anchor = ids(shop.recommend(user, k=4))[3]
    near = ids(shop.similar(anchor, k=20))
    branded, priced, placed, both, under = near[4], near[5], near[6], near[7], near[8]
    price = shop.get_item(priced).json().get("price")
    # two categories an item has, not yet linked (belongs_to writes no path), and a second item
    # under the one that becomes the child
    parent, child = "Import-Parent-Test", "Import-Child-Test"
    assert shop.put(both, {"attributes": {"belongs_to": [parent, child]}}).status_code == 200
    assert shop.put(under, {"categories": child}).status_code == 200
    within(PICKUP_S, lambda: ids(shop.similar(anchor, k=100, category=parent)) == [both])
    rows = [
        {"item_id": branded, "brand": "Import-Brand-Test"},
        {"item_id": priced, "price": "7654.5"},
        {"item_id": placed, "categories": "Import-Category-Test"},
        # the import infers child -> parent from this item's two categories (equal sizes: the first
        # one listed is the parent)
        {"item_id": both, "categories": f"{parent}|{child}"},
    ]
    before = catalogue_revision(shop)
    import_items(shop, tmp_path / "shop-update", rows)
    moved = catalogue_revision(shop)
    assert moved > before
    within(
        PICKUP_S,
        lambda: (
            ids(shop.similar(anchor, k=100, brand="Import-Brand-Test")) == [branded]
            and ids(shop.similar(anchor, k=100, min_price=7654)) == [priced]
            and ids(shop.similar(anchor, k=100, category="Import-Category-Test")) == [placed]
            and sorted(ids(shop.similar(anchor, k=100, category=parent))) == sorted([both, under])
        ),
    )
    # the same import again changes nothing: the revision stays
    import_items(shop, tmp_path / "shop-update", rows)
    assert catalogue_revision(shop) == moved
    assert shop.put(priced, {"price": price}).status_code == 200  # as it was, for the other tests
    within(PICKUP_S, lambda: priced not in ids(shop.similar(anchor, k=100, min_price=7654)))


def interest_score(shop: Shop, user: str, item: str, category: str) -> float | None:
    """The score of the path user -INTERESTED_IN-> category <-IN_CATEGORY- item, if it is among the
    item's best paths for the user."""
    response = requests.get(
        shop.url(f"/v1/users/{user}/recommendations/{item}/explanation"), params={"max_paths": 10}, timeout=30
    )
    assert response.status_code == 200, response.text
    for path in response.json()["paths"]:
        if path["kind"] == "interest" and path["nodes"][1]["id"] == category:
            return float(path["score"])
    return None


def test_explanations_weigh_a_category_by_its_current_items(shop: Shop) -> None:
    """A category path's rarity weight counts the items the catalogue has under the category now:
    events that list more items under it lower the weight within a second."""
    user = a_user(shop)
    rows = shop.cypher(
        "MATCH (:User {id: $user})-[:INTERESTED_IN]->(c:Category)<-[:IN_CATEGORY]-(i:Item) "
        "WITH c, collect(i.id) AS items RETURN c.id AS category, items ORDER BY size(items), category",
        user=user,
    )
    category, item, before = next(
        (row["category"], i, score)
        for row in rows
        for i in sorted(row["items"])[:3]
        if (score := interest_score(shop, user, i, row["category"])) is not None
    )
    serving = Serving(shop.settings)
    try:
        model = serving.model()
        facts = serving.catalogue().facts(model)
        under = facts.category_mask(category)
        outside = [
            model.artifacts.item_ids[row] for row in np.flatnonzero(~under)[: facts.n_items // 4].tolist()
        ]
        share_before, share_after = under.sum() / facts.n_items, (under.sum() + len(outside)) / facts.n_items
    finally:
        serving.close()
    expected = before * (1 - math.sqrt(share_after)) / (1 - math.sqrt(share_before))
    post_fact_events(
        shop, [(f"rarity-{time.time_ns()}-{n}", i) for n, i in enumerate(outside)], {"categories": [category]}
    )
    within(PICKUP_S, lambda: abs((interest_score(shop, user, item, category) or 0.0) - expected) < 1e-4)
