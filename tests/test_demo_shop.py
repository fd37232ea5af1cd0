"""The synthetic shop: deterministic, in kgrec's layout, with the statistics its docstring claims."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from graph_schema.statements import admin
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.demo_shop import ATTRIBUTE_RELATION, DEPARTMENTS, FEATURE, ShopSpec, generate_shop
from kgrec.gateway import GraphGateway
from kgrec.importer import import_dataset
from kgrec_cli.main import DEMO_FOLDER, demo_fallback

FILES = ("interactions.csv", "items.csv", "kg_triples.csv", "entities.csv", "demo_shop.json")


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 users and 1,000 items: enough events (~45k) for stable ratios."""
    folder = tmp_path_factory.mktemp("shop")
    generate_shop(ShopSpec(users=3_000, items=1_000, seed=11), folder)
    return folder


@pytest.fixture(scope="module")
def human_events(shop: Path) -> list[dict[str, str]]:
    bots = set(json.loads((shop / "demo_shop.json").read_text())["bots"])
    return [row for row in read_rows(shop / "interactions.csv") if row["user_id"] not in bots]


def test_same_seed_writes_identical_files_and_another_seed_does_not(tmp_path: Path) -> None:
    spec = ShopSpec(users=300, items=100, seed=3)
    generate_shop(spec, tmp_path / "a")
    generate_shop(spec, tmp_path / "b")
    generate_shop(ShopSpec(users=300, items=100, seed=4), tmp_path / "c")
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "interactions.csv").read_bytes() != (
        tmp_path / "c" / "interactions.csv"
    ).read_bytes()


def test_funnel_ratios_are_in_the_published_bands(human_events: list[dict[str, str]]) -> None:
    counts = Counter(row["type"] for row in human_events)
    assert 0.06 <= counts["cart"] / counts["view"] <= 0.10  # REES46 / Taobao: ~6-10 %
    assert 0.30 <= counts["purchase"] / counts["cart"] <= 0.60  # ~30-60 %
    assert 0 < counts["remove_from_cart"] < counts["cart"] - counts["purchase"]


def test_item_popularity_follows_a_zipf_law(human_events: list[dict[str, str]]) -> None:
    views = Counter(row["item_id"] for row in human_events if row["type"] == "view")
    counts = np.array(sorted(views.values(), reverse=True), dtype=float)
    ranks = np.arange(1, counts.size + 1)
    # the head and the sparse tail are noisy; fit ranks 5-300
    slope = np.polyfit(np.log(ranks[4:300]), np.log(counts[4:300]), 1)[0]
    assert 0.8 <= -slope <= 1.2


def test_traffic_has_daily_and_weekly_cycles(human_events: list[dict[str, str]]) -> None:
    moments = [datetime.fromtimestamp(int(row["ts"]), UTC) for row in human_events]
    hours = Counter(m.hour for m in moments)
    weekdays = Counter(m.weekday() for m in moments)
    assert sum(hours[h] for h in (19, 20, 21)) > 4 * sum(hours[h] for h in (2, 3, 4))
    assert weekdays[5] + weekdays[6] > 1.1 * (weekdays[1] + weekdays[2])


def test_user_interests_drift(shop: Path, human_events: list[dict[str, str]]) -> None:
    leaf = {row["item_id"]: row["categories"] for row in read_rows(shop / "items.csv")}
    by_user: dict[str, list[str]] = defaultdict(list)
    for row in human_events:  # already in time order
        if row["type"] == "view":
            by_user[row["user_id"]].append(leaf[row["item_id"]])
    active = [leaves for leaves in by_user.values() if len(leaves) >= 12]
    moved = sum(
        Counter(leaves[: len(leaves) // 3]).most_common(1)[0][0]
        != Counter(leaves[-(len(leaves) // 3) :]).most_common(1)[0][0]
        for leaves in active
    )
    assert len(active) > 100
    # measured: 39 % here; 0.2 % when both favourites are the same category (no drift)
    assert moved / len(active) > 0.3


def test_titles_read_as_brand_attributes_and_product(shop: Path) -> None:
    nouns = {noun for _, _, leaves in DEPARTMENTS.values() for _, names in leaves.values() for noun in names}
    items = read_rows(shop / "items.csv")
    for item in items[:200]:
        department, leaf_name = item["categories"].split("|")
        leaf_nouns = DEPARTMENTS[department][2][leaf_name][1]
        assert item["title"].startswith(item["brand"] + " ")
        assert any(item["title"].endswith(" " + noun) for noun in leaf_nouns), item
        assert float(item["price"]) > 0
    assert nouns


def item_attributes(shop: Path) -> dict[str, dict[str, str]]:
    """item -> relation -> entity id, for the title attributes (colour, shade, material, flavour, feature)."""
    relations = {*ATTRIBUTE_RELATION.values(), FEATURE}
    attributes: dict[str, dict[str, str]] = defaultdict(dict)
    for row in read_rows(shop / "kg_triples.csv"):
        if row["relation"] in relations:
            attributes[row["head"]][row["relation"]] = row["tail"]
    return attributes


def test_the_titles_attributes_are_knowledge_triples_with_kinds(shop: Path) -> None:
    attributes = item_attributes(shop)
    entities = {row["entity_id"]: row for row in read_rows(shop / "entities.csv")}
    for item in read_rows(shop / "items.csv"):
        department = item["categories"].split("|")[0]
        relation = ATTRIBUTE_RELATION[department]
        assert set(attributes[item["item_id"]]) == {relation, FEATURE}, item
        for entity_id in attributes[item["item_id"]].values():
            kind, name = entity_id.split(":", 1)
            assert entities[entity_id] == {"entity_id": entity_id, "kind": kind, "name": name}
            assert f" {name} " in f" {item['title']} ", (item, entity_id)


def test_users_favour_one_attribute_per_department(shop: Path, human_events: list[dict[str, str]]) -> None:
    """How often two distinct items a user viewed in one department share the attribute, against a control.

    The control gives every item the attribute of another item of the same leaf (a permutation
    within the leaf), which keeps popularity and categories but breaks any taste.
    """
    items = read_rows(shop / "items.csv")
    leaf = {row["item_id"]: row["categories"] for row in items}
    attributes = {
        item: ids[next(r for r in ids if r != FEATURE)] for item, ids in item_attributes(shop).items()
    }
    rng = np.random.default_rng(0)
    shuffled: dict[str, str] = {}
    for category in set(leaf.values()):
        members = [row["item_id"] for row in items if row["categories"] == category]
        for item, other in zip(members, rng.permutation(members), strict=True):
            shuffled[item] = attributes[str(other)]

    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in human_events:
        if row["type"] == "view":
            seen[(row["user_id"], leaf[row["item_id"]].split("|")[0])].add(row["item_id"])

    def same_attribute_rate(attribute_of: dict[str, str]) -> float:
        same = pairs = 0
        for viewed in seen.values():
            counts = Counter(attribute_of[item] for item in viewed)
            same += sum(c * (c - 1) for c in counts.values())
            pairs += len(viewed) * (len(viewed) - 1)
        return same / pairs

    tasteful, control = same_attribute_rate(attributes), same_attribute_rate(shuffled)
    # measured: 0.263 against 0.161 here
    assert tasteful > 1.3 * control


def test_bots_view_hundreds_of_items_a_minute(shop: Path) -> None:
    manifest = json.loads((shop / "demo_shop.json").read_text())
    per_minute = Counter(
        (row["user_id"], int(row["ts"]) // 60)
        for row in read_rows(shop / "interactions.csv")
        if row["user_id"] in manifest["bots"]
    )
    assert manifest["bots"]
    assert max(per_minute.values()) >= 200


def test_the_shop_imports_cleanly_with_bots_flagged(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    generate_shop(ShopSpec(users=500, items=200, seed=5), tmp_path)
    manifest = json.loads((tmp_path / "demo_shop.json").read_text())
    items = read_rows(tmp_path / "items.csv")
    started = int(time.time() * 1000)
    report = import_dataset(gateway, open_dataset(str(tmp_path), settings.datasets_dir), settings)
    finished = int(time.time() * 1000)
    assert report.problems == []
    nodes = {r["label"]: int(r["count"]) for r in gateway.read(admin.NODE_COUNTS)}
    rels = {r["type"]: int(r["count"]) for r in gateway.read(admin.RELATIONSHIP_COUNTS)}
    users = {row["user_id"] for row in read_rows(tmp_path / "interactions.csv")}
    assert nodes["User"] == len(users)
    assert nodes["Item"] == 200
    assert nodes["Brand"] == len({item["brand"] for item in items})
    assert nodes["Entity"] == len({e for ids in item_attributes(tmp_path).values() for e in ids.values()})
    assert rels["MADE_BY"] == 200
    assert rels["ALSO_BOUGHT"] > 0 and rels["BOUGHT_TOGETHER"] > 0 and rels["ALSO_VIEWED"] > 0
    assert rels["SUBCATEGORY_OF"] == nodes["Category"] - len(
        {item["categories"].split("|")[0] for item in items}
    )
    flagged = gateway.run_query(
        "MATCH (u:User) WHERE u.flagged_bot = true RETURN u.id AS id, u.flagged_at AS at ORDER BY id", {}
    )
    assert [row["id"] for row in flagged] == sorted(manifest["bots"])
    # stamped with when the import flagged them (its batch's time), as an erasure compares with a pull
    assert all(started <= row["at"] <= finished for row in flagged)


def test_up_serves_the_demo_shop_only_when_a_built_in_data_set_is_missing(
    tmp_path: Path, shared_data: Path
) -> None:
    empty = tmp_path / "no-datasets"
    empty.mkdir()
    data_dir = tmp_path / "var"
    assert demo_fallback("amazon-beauty", empty, data_dir) == data_dir / DEMO_FOLDER
    assert demo_fallback("movielens", empty, data_dir) == data_dir / DEMO_FOLDER
    assert demo_fallback("amazon-beauty", shared_data, data_dir) is None
    # a folder the user named is never replaced by the demo
    assert demo_fallback(str(empty / "missing"), empty, data_dir) is None
