"""The catalogue API over real HTTP on a real graph, served by gunicorn (2 workers x 4 threads):
upserts (one and a batch, atomic, idempotent, 422 naming index/field/reason), the item as the graph
holds it, delisting, and availability and price changes that every worker applies within a second."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from kgrec.config import Settings
from kgrec.gateway import GraphGateway
from kgrec.limits import MAX_DESCRIPTION_LENGTH
from kgrec_cli.items import items as items_cli
from kgrec_cli.items import read_items
from kgrec_cli.main import main as kgrec_main
from tests.processes import ApiProcess
from tests.subsets import beauty_graph
from workers.training.config import TrainConfig
from workers.training.job import run_training

KEY = "catalogue-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PICKUP_S = 1.0  # every serving process applies a catalogue change within this


@dataclass
class Shop:
    """A trained model on an Amazon Beauty subset, served by gunicorn, and its graph."""

    api: ApiProcess
    gateway: GraphGateway
    settings: Settings

    def url(self, path: str) -> str:
        return f"{self.api.url}{path}"

    def cypher(self, query: str, **params: Any) -> list[dict[str, Any]]:
        return self.gateway.run_query(query, params)

    def put(self, item_id: str, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
        return requests.put(
            self.url(f"/v1/items/{item_id}"),
            json=body,
            headers=AUTH if headers is None else headers,
            timeout=30,
        )

    def get_item(self, item_id: str) -> requests.Response:
        return requests.get(self.url(f"/v1/items/{item_id}"), timeout=30)

    def recommend(self, user: str, **params: Any) -> list[dict[str, Any]]:
        response = requests.get(self.url(f"/v1/users/{user}/recommendations"), params=params, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["items"]

    def similar(self, item: str, **params: Any) -> list[dict[str, Any]]:
        response = requests.get(self.url(f"/v1/items/{item}/similar"), params=params, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()["items"]


@pytest.fixture(scope="module")
def shop(
    settings: Settings, graph_server: object, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shop]:
    if not settings.embedded:
        pytest.skip("runs its own API on the embedded graph")
    tmp = tmp_path_factory.mktemp("catalogue")
    local, gateway = beauty_graph(settings, shared_data, tmp, users=100, prefix="catalogue")
    run_training(gateway, local, TrainConfig(epochs=1, use_ease=False), device="cpu", version="catalogue")
    api = ApiProcess(
        {"KGREC_DATA_DIR": str(local.data_dir), "KGREC_GRAPH": local.graph_name, "KGREC_API_KEYS": KEY},
        log=tmp / "api.log",
    ).start()
    try:
        yield Shop(api, gateway, local)
    finally:
        api.stop()
        gateway.close()


def a_user(shop: Shop) -> str:
    return shop.cypher(
        "MATCH (u:User)-[r:INTERACTED]->() WITH u, count(r) AS n WHERE n >= 3 "
        "RETURN u.id AS id ORDER BY id LIMIT 1"
    )[0]["id"]


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["item_id"] for i in items]


def within(seconds: float, check: Callable[[], bool]) -> float:
    """Seconds after which ``check()`` held on every request (both workers answer some), at most ``seconds``.

    Requests go out back to back for ``seconds`` plus half a second; the answer is the time of the
    last request on which it did not hold yet.
    """
    start = time.monotonic()
    last_miss = 0.0
    while (elapsed := time.monotonic() - start) < seconds + 0.5:
        if not check():
            last_miss = elapsed
    assert last_miss < seconds, f"still not applied after {last_miss:.2f}s"
    return last_miss


def always(times: int, check: Callable[[], bool]) -> None:
    """``check()`` holds on ``times`` requests in a row (both workers answer some of them)."""
    for _ in range(times):
        assert check()


FULL = {
    "title": "Rose lip balm",
    "brand": "Acme Test",
    "categories": ["Beauty", "Lips", "Balm"],
    "price": 12.5,
    "currency": "EUR",
    "available": True,
    "stock": 40,
    "attributes": {"material": ["beeswax", "rose oil"], "origin": ["UK"]},
    "listed_at": 1_700_000_000_000,
}


def test_put_then_get_returns_the_item_as_the_graph_holds_it(shop: Shop) -> None:
    assert shop.put("cat-1", FULL, headers={}).status_code == 401
    assert shop.get_item("cat-1").status_code == 404
    first = shop.put("cat-1", FULL)
    assert first.status_code == 200, first.text
    got = shop.get_item("cat-1").json()
    expected = {k: v for k, v in FULL.items() if k != "attributes"}
    assert {k: got[k] for k in expected} == expected
    assert got["attributes"] == {"material": ["beeswax", "rose oil"], "origin": ["UK"]}
    assert got["delisted_at"] is None and got["listed"] is True
    # knowledge triples in the open graph: typed edges with the exact relation name, to entities
    edges = shop.cypher(
        "MATCH (:Item {id: 'cat-1'})-[k]->(e:Entity) RETURN type(k) AS t, k.relation AS r, e.id AS v ORDER BY v"
    )
    assert edges == [
        {"t": "ORIGIN", "r": "origin", "v": "UK"},
        {"t": "MATERIAL", "r": "material", "v": "beeswax"},
        {"t": "MATERIAL", "r": "material", "v": "rose oil"},
    ]
    # idempotent: the same call again leaves the graph as it was
    shape = "MATCH (i:Item {id: 'cat-1'})-[k]-() RETURN count(k) AS n"
    before = shop.cypher(shape)
    assert shop.put("cat-1", FULL).status_code == 200
    again = shop.get_item("cat-1").json()
    assert {k: v for k, v in again.items() if k != "updated_at"} == {
        k: v for k, v in got.items() if k != "updated_at"
    }
    assert shop.cypher(shape) == before
    # a field left out is kept; one given replaces; null removes
    partial = {"price": 9.0, "stock": None, "brand": "Other", "attributes": {"origin": ["FR"]}}
    assert shop.put("cat-1", partial).status_code == 200
    changed = shop.get_item("cat-1").json()
    assert (changed["price"], changed["stock"], changed["brand"], changed["title"]) == (
        9.0,
        None,
        "Other",
        "Rose lip balm",
    )
    assert changed["attributes"] == {"material": ["beeswax", "rose oil"], "origin": ["FR"]}


def test_a_batch_with_one_bad_item_writes_nothing_and_names_index_field_and_reason(shop: Shop) -> None:
    batch = [
        {"item_id": "batch-1", "title": "One", "price": 3.0},
        {"item_id": "batch-2", "title": "Two", "price": -1},
        {"item_id": "batch-3", "currency": "euro", "colour": "red"},
        {"item_id": "batch-4", "attributes": {"made by": ["x"]}},
    ]
    response = requests.post(shop.url("/v1/items"), json=batch, headers=AUTH, timeout=30)
    assert response.status_code == 422, response.text
    errors = {(e["index"], e["field"]) for e in response.json()["errors"]}
    assert errors == {(1, "price"), (2, "currency"), (3, "attributes.made by")}
    reasons = {e["index"]: e["reason"] for e in response.json()["errors"]}
    assert reasons[1] == "Input should be greater than or equal to 0 (got -1)"
    assert reasons[2] == "'euro' is not an ISO 4217 code like EUR"
    assert shop.cypher("MATCH (i:Item) WHERE i.id STARTS WITH 'batch-' RETURN count(i) AS n") == [{"n": 0}]
    # the same batch without the bad items: one write, every item
    good = [batch[0], {**batch[1], "price": 4.0}]
    written = requests.post(shop.url("/v1/items"), json={"items": good}, headers=AUTH, timeout=30)
    assert written.status_code == 200, written.text
    assert written.json()["items"] == 2
    assert shop.get_item("batch-2").json()["price"] == 4.0
    too_many = [{"item_id": f"x{k}"} for k in range(1001)]
    refused = requests.post(shop.url("/v1/items"), json=too_many, headers=AUTH, timeout=30)
    assert refused.status_code == 422 and refused.json()["errors"][0]["index"] == -1


def _listing_in_similar(shop: Shop, item: str, candidates: list[str]) -> tuple[str, list[str]]:
    """An item among ``candidates`` (or ``item``'s own neighbours) whose 100 similar items hold ``item``."""
    for anchor in [*candidates, *ids(shop.similar(item, k=20))]:
        neighbour = ids(shop.similar(anchor, k=100))
        if item in neighbour:
            return anchor, neighbour
    raise AssertionError(f"no item lists {item} among its 100 most similar")


def test_an_unavailable_item_disappears_at_once_and_comes_back(shop: Shop) -> None:
    user = a_user(shop)
    top = ids(shop.recommend(user, k=10))
    assert top
    gone = top[0]
    anchor, neighbour = _listing_in_similar(shop, gone, top[1:])
    assert shop.put(gone, {"available": False}).status_code == 200
    within(PICKUP_S, lambda: gone not in ids(shop.recommend(user, k=10)))
    always(10, lambda: gone not in ids(shop.similar(anchor, k=100)))
    always(5, lambda: gone not in ids(shop.recommend("a-stranger", k=100)))  # cold start too
    assert shop.get_item(gone).json()["available"] is False
    assert shop.put(gone, {"available": True}).status_code == 200
    within(PICKUP_S, lambda: gone in ids(shop.recommend(user, k=10)))
    always(20, lambda: ids(shop.recommend(user, k=10)) == top)
    assert ids(shop.similar(anchor, k=100)) == neighbour


def test_delete_delists_keeps_history_and_a_put_relists(shop: Shop) -> None:
    user = a_user(shop)
    top = ids(shop.recommend(user, k=5))
    item = top[0]
    history = "MATCH (:User)-[r:INTERACTED]->(:Item {id: $id}) RETURN count(r) AS n"
    before = shop.cypher(history, id=item)
    assert requests.delete(shop.url(f"/v1/items/{item}"), timeout=30).status_code == 401
    first = requests.delete(shop.url(f"/v1/items/{item}"), headers=AUTH, timeout=30)
    assert first.status_code == 200, first.text
    second = requests.delete(shop.url(f"/v1/items/{item}"), headers=AUTH, timeout=30).json()
    assert second["delisted_at"] == first.json()["delisted_at"]  # idempotent
    assert shop.get_item(item).json()["delisted_at"] == second["delisted_at"]
    assert shop.cypher(history, id=item) == before
    within(PICKUP_S, lambda: item not in ids(shop.recommend(user, k=5)))
    always(10, lambda: item not in ids(shop.recommend(user, k=20)))
    missing = requests.delete(shop.url("/v1/items/no-such-item"), headers=AUTH, timeout=30)
    assert missing.status_code == 404 and missing.json()["field"] == "item_id"
    assert shop.put(item, {"delisted_at": None}).status_code == 200
    within(PICKUP_S, lambda: item in ids(shop.recommend(user, k=5)))


def test_a_price_change_applies_to_price_filters_at_once(shop: Shop) -> None:
    user = a_user(shop)
    item = ids(shop.recommend(user, k=5))[0]
    assert item not in ids(shop.recommend(user, k=100, min_price=5000))
    assert shop.put(item, {"price": 5555.0}).status_code == 200
    within(PICKUP_S, lambda: item in ids(shop.recommend(user, k=100, min_price=5000)))
    always(10, lambda: ids(shop.recommend(user, k=100, min_price=5000, max_price=6000)) == [item])
    assert shop.put(item, {"price": None}).status_code == 200
    within(PICKUP_S, lambda: item not in ids(shop.recommend(user, k=100, min_price=5000)))


def test_a_future_delisting_takes_effect_when_its_time_comes(shop: Shop) -> None:
    user = a_user(shop)
    item = ids(shop.recommend(user, k=5))[1]
    soon = int(time.time() * 1000) + 1500
    assert shop.put(item, {"delisted_at": soon}).status_code == 200
    always(5, lambda: item in ids(shop.recommend(user, k=5)))
    time.sleep(1.5)
    always(10, lambda: item not in ids(shop.recommend(user, k=5)))
    assert shop.put(item, {"delisted_at": None}).status_code == 200
    within(PICKUP_S, lambda: item in ids(shop.recommend(user, k=5)))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"price": "cheap"}, "price"),
        ({"available": "yes"}, "available"),
        ({"stock": -3}, "stock"),
        ({"categories": []}, "categories"),
        ({"listed_at": "last tuesday"}, "listed_at"),
        ({"brand": ""}, "brand"),
        ({"attributes": {"origin": []}}, "attributes.origin"),
        ({"attributes": {"origin": ["UK\ud83d"]}}, "attributes.origin"),  # a lone surrogate
        ({"attributes": {"origin\ud83d": ["UK"]}}, "attributes.origin\\ud83d"),
        ({"attributes": None}, "attributes"),  # replaced relation by relation, never removed whole
        ({"item_id": "another"}, "item_id"),
        ({"description": 5}, "description"),
        ({"description": "x" * (MAX_DESCRIPTION_LENGTH + 1)}, "description"),
    ],
)
def test_put_refuses_bad_fields_naming_them(shop: Shop, body: dict[str, Any], field: str) -> None:
    response = shop.put("cat-bad", body)
    assert response.status_code == 422, response.text
    assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [(0, field)]
    assert shop.get_item("cat-bad").status_code == 404


def test_put_takes_the_paths_item_id_in_the_body_and_refuses_another_naming_both(shop: Shop) -> None:
    document = requests.get(shop.url("/openapi.json"), timeout=30).json()
    body = document["paths"]["/v1/items/{item_id}"]["put"]["requestBody"]["content"]["application/json"]
    schema = body["schema"]
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    assert "item_id" in schema["properties"] and "item_id" not in schema.get("required", [])
    assert shop.put("cat-same", {"item_id": "cat-same", "title": "Same"}).status_code == 200
    assert shop.get_item("cat-same").json()["title"] == "Same"
    other = shop.put("cat-same", {"item_id": "cat-other", "title": "Other"})
    assert other.status_code == 422, other.text
    (error,) = other.json()["errors"]
    assert (
        error["field"] == "item_id" and "'cat-other'" in error["reason"] and "'cat-same'" in error["reason"]
    )
    assert shop.get_item("cat-same").json()["title"] == "Same"
    assert shop.get_item("cat-other").status_code == 404


def test_a_batch_merges_the_entries_of_one_id_as_its_answer_documents(shop: Shop) -> None:
    document = requests.get(shop.url("/openapi.json"), timeout=30).json()
    described = document["components"]["schemas"]["CatalogueWrite"]["properties"]["items"]["description"]
    assert "merged" in described and "wins" not in described
    entries = [
        {"item_id": "cat-merge", "title": "First", "price": 2.0},
        {"item_id": "cat-merge", "price": 3.0},
    ]
    answer = requests.post(shop.url("/v1/items"), json=entries, headers=AUTH, timeout=30)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["received"], answer.json()["items"]) == (2, 1)
    got = shop.get_item("cat-merge").json()
    assert (got["title"], got["price"]) == ("First", 3.0)  # merged: not the last entry alone


def test_put_without_a_body_makes_a_bare_listed_item(shop: Shop) -> None:
    bare = requests.put(shop.url("/v1/items/cat-bare"), headers=AUTH, timeout=30)
    assert bare.status_code == 200, bare.text
    got = shop.get_item("cat-bare").json()
    assert got["listed"] is True and got["title"] is None and got["brand"] is None
    assert requests.put(shop.url("/v1/items/cat-bare"), headers=AUTH, timeout=30).status_code == 200


def test_produced_by_and_belongs_to_attributes_replace_the_brand_and_categories(shop: Shop) -> None:
    assert shop.put("cat-pb", {"brand": "B1", "categories": ["Root", "Leaf"]}).status_code == 200
    attributes = {"produced_by": ["B2"], "belongs_to": ["Other"]}
    assert shop.put("cat-pb", {"attributes": attributes}).status_code == 200
    got = shop.get_item("cat-pb").json()
    assert (got["brand"], got["categories"]) == ("B2", ["Other"])


def test_a_description_is_written_kept_removed_and_checked(shop: Shop) -> None:
    text = "A rich balm of beeswax and rose oil for dry, chapped lips."
    assert shop.put("cat-desc", {"title": "Balm", "description": text}).status_code == 200
    assert shop.get_item("cat-desc").json()["description"] == text
    assert shop.put("cat-desc", {"price": 2.0}).status_code == 200  # left out: kept
    assert shop.get_item("cat-desc").json()["description"] == text
    assert shop.put("cat-desc", {"description": None}).status_code == 200  # null: removed
    assert shop.get_item("cat-desc").json()["description"] is None
    assert shop.cypher("MATCH (i:Item {id: 'cat-desc'}) RETURN i.description AS d") == [{"d": None}]
    limit = f"must be a string of at most {MAX_DESCRIPTION_LENGTH} characters without NUL"
    for bad, got in (
        ("x" * (MAX_DESCRIPTION_LENGTH + 1), f"{MAX_DESCRIPTION_LENGTH + 1} characters"),
        (7, "7"),
    ):
        refused = shop.put("cat-desc", {"description": bad, "title": "Changed"})
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"] == [
            {"index": 0, "field": "description", "reason": f"{limit} (got {got})"}
        ]
    assert shop.get_item("cat-desc").json()["title"] == "Balm"  # nothing written


def test_items_import_from_csv_and_json_lines(shop: Shop, tmp_path: Path) -> None:
    csv_file = tmp_path / "items.csv"
    csv_file.write_text(
        "item_id,title,brand,categories,price,currency,available,stock,attr:material\n"
        "imp-1,Soap,Acme Test,Beauty|Bath,3.5,EUR,true,10,olive|lye\n"
        "imp-2,Shampoo,,,,,no,,\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    result = runner.invoke(items_cli, ["import", str(csv_file)], obj={"settings": shop.settings})
    assert result.exit_code == 0, result.output
    one = shop.get_item("imp-1").json()
    assert (one["title"], one["brand"], one["categories"], one["price"], one["stock"]) == (
        "Soap",
        "Acme Test",
        ["Beauty", "Bath"],
        3.5,
        10,
    )
    assert one["attributes"] == {"material": ["lye", "olive"]}
    assert shop.get_item("imp-2").json()["available"] is False
    # again: the same graph
    shape = "MATCH (i:Item)-[k]-() WHERE i.id STARTS WITH 'imp-' RETURN count(k) AS n"
    before = shop.cypher(shape)
    assert runner.invoke(items_cli, ["import", str(csv_file)], obj={"settings": shop.settings}).exit_code == 0
    assert shop.cypher(shape) == before
    # JSON Lines with one bad line: nothing is written, the line is named
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(
        '{"item_id": "imp-3", "title": "Cream"}\n{"item_id": "imp-4", "price": "free"}\n', encoding="utf-8"
    )
    bad = runner.invoke(items_cli, ["import", str(jsonl)], obj={"settings": shop.settings})
    assert bad.exit_code == 1
    assert "line 2: price:" in bad.output
    # the bad lines, then the one failure line
    assert bad.output.splitlines()[-1] == f"kgrec: error: 1 bad line(s) in {jsonl}; nothing was written"
    assert shop.get_item("imp-3").status_code == 404


def test_items_import_reads_gzip_and_names_the_file_and_line_of_an_unreadable_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kgrec items import` reads through the data sets' reader: gzip, and one line for a bad file."""
    good = tmp_path / "items.csv.gz"
    good.write_bytes(gzip.compress(b"item_id,title\ngz-1,Soap\n"))
    assert [item for _, item in read_items(good)] == [{"item_id": "gz-1", "title": "Soap"}]
    bad_byte = tmp_path / "latin1.csv"
    bad_byte.write_bytes(b"item_id,title\nok-1,Soap\nok-2,Cr\xe8me\n")
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(b'{"item_id": "cut-1"}\n' * 2000)[:-40])
    unclosed = tmp_path / "unclosed.csv"  # its last rows were one title, imported
    unclosed.write_text('item_id,title\nok-3,"Soap\nok-4,Cream\n', encoding="utf-8")
    stray = tmp_path / "stray.csv"
    stray.write_text('item_id,title\nok-5,"Soap\nok-6,"Cream"\n', encoding="utf-8")
    oversized = tmp_path / "oversized.csv"  # a traceback from the csv module
    oversized.write_text(f"item_id,title\nok-7,{'x' * 200_000}\n", encoding="utf-8")
    monkeypatch.setenv("KGREC_DATA_DIR", str(tmp_path / "data"))  # refused before any graph is opened
    runner = CliRunner()
    for path, reason in (
        (bad_byte, "line 3: not UTF-8"),
        (truncated, "it ends early"),
        (unclosed, "line 2: not valid CSV: a quoted field is never closed"),
        (stray, "line 2: not valid CSV: ',' expected after '\"'"),
        (oversized, "line 2: not valid CSV: field larger than field limit (131072)"),
    ):
        result = runner.invoke(kgrec_main, ["items", "import", str(path)])
        assert result.exit_code == 1, result.output
        (line,) = result.output.splitlines()
        assert line.startswith(f"kgrec: error: {path}") and reason in line, line


def test_a_category_path_that_repeats_an_id_or_loops_the_tree_is_refused(shop: Shop, tmp_path: Path) -> None:
    assert shop.put("cyc0", {"title": "x", "categories": ["CyBeauty", "CyMakeup"]}).status_code == 200
    tree = "MATCH (c:Category)-[:SUBCATEGORY_OF]->(p:Category) WHERE c.id STARTS WITH 'Cy' RETURN c.id AS c, p.id AS p"
    stored = shop.cypher(tree)
    assert stored == [{"c": "CyMakeup", "p": "CyBeauty"}]
    for path, fragment in (
        (["CyMakeup", "CyBeauty"], "loop"),
        (["CyBeauty", "CyBeauty"], "'CyBeauty' twice"),
        (["CyA", "CyB", "CyA"], "'CyA' twice"),
    ):
        refused = shop.put("cyc1", {"title": "x", "categories": path})
        assert refused.status_code == 422, refused.text
        (error,) = refused.json()["errors"]
        assert (error["index"], error["field"]) == (0, "categories")
        assert fragment in error["reason"] and repr(path) in error["reason"]
    batch = [
        {"item_id": "cyc2", "categories": ["CyP", "CyQ"]},
        {"item_id": "cyc3", "categories": ["CyQ", "CyP"]},
    ]
    refused = requests.post(shop.url("/v1/items"), json=batch, headers=AUTH, timeout=30)
    assert refused.status_code == 422, refused.text
    assert [(e["index"], e["field"]) for e in refused.json()["errors"]] == [(1, "categories")]
    assert shop.cypher(tree) == stored  # nothing written
    assert shop.get_item("cyc1").status_code == 404 and shop.get_item("cyc2").status_code == 404
    # kgrec items import: the whole file is checked before anything is written
    jsonl = tmp_path / "loop.jsonl"
    jsonl.write_text(
        '{"item_id": "cyc4", "categories": ["CyX", "CyY"]}\n{"item_id": "cyc5", "categories": ["CyY", "CyX"]}\n',
        encoding="utf-8",
    )
    bad = CliRunner().invoke(items_cli, ["import", str(jsonl)], obj={"settings": shop.settings})
    assert bad.exit_code == 1, bad.output
    assert "line 2: categories:" in bad.output and "loop" in bad.output
    assert shop.cypher(tree) == stored and shop.get_item("cyc4").status_code == 404


def test_puts_at_once_each_adding_half_of_a_loop_never_store_one_and_one_is_refused(shop: Shop) -> None:
    """Two PUTs sent at once, one putting RaceB under RaceA, the other RaceA under RaceB, to
    gunicorn's workers and threads: whichever way they meet (one checked after the other wrote, or
    both checked before either wrote), one is written and the other refused whole (a 422 naming the
    field and the path; the deterministic meeting: test_category_paths.py)."""
    start = threading.Barrier(2, timeout=60)

    def put(item_id: str, path: list[str]) -> requests.Response:
        start.wait()
        return shop.put(item_id, {"title": "race", "categories": path})

    for n in range(10):
        a, b = f"RaceA{n}", f"RaceB{n}"
        writes = {f"race{n}-1": [a, b], f"race{n}-2": [b, a]}
        with ThreadPoolExecutor(2) as pool:
            answers = dict(zip(writes, pool.map(put, writes, writes.values()), strict=True))
        assert sorted(r.status_code for r in answers.values()) == [200, 422], [
            r.text for r in answers.values()
        ]
        (refused,) = [item_id for item_id, r in answers.items() if r.status_code == 422]
        (error,) = answers[refused].json()["errors"]
        assert (error["index"], error["field"]) == (0, "categories") and "loop" in error["reason"]
        assert repr(writes[refused]) in error["reason"]
        assert shop.get_item(refused).status_code == 404
        links = "MATCH (c:Category)-[:SUBCATEGORY_OF]->(p:Category) WHERE c.id IN $ids RETURN c.id AS c"
        assert len(shop.cypher(links, ids=[a, b])) == 1


def _as_stored(shop: Shop, item_id: str) -> dict[str, Any]:
    got = shop.get_item(item_id).json()
    return {k: v for k, v in got.items() if k not in ("item_id", "created_at", "updated_at", "listed_at")}


def test_entries_of_one_id_in_a_batch_merge_as_if_sent_one_after_the_other(
    shop: Shop, tmp_path: Path
) -> None:
    first = {"title": "First title", "price": 5, "brand": "DupB1", "categories": ["DupA", "DupB"]}
    first["attributes"] = {"material": ["dup-m1"], "origin": ["dup-o1"]}
    second = {"available": False, "attributes": {"belongs_to": ["DupC"], "material": ["dup-m2"]}}
    batch = [{"item_id": "dup1", **first}, {"item_id": "dup1", **second}]
    written = requests.post(shop.url("/v1/items"), json=batch, headers=AUTH, timeout=30)
    assert written.status_code == 200, written.text
    assert (written.json()["items"], written.json()["received"]) == (1, 2)
    for body in (first, second):  # the same entries, one request each
        assert shop.put("dup2", body).status_code == 200
    merged = _as_stored(shop, "dup1")
    assert (merged["title"], merged["price"], merged["available"], merged["brand"]) == (
        "First title",
        5,
        False,
        "DupB1",
    )
    assert merged["categories"] == ["DupC"]  # belongs_to replaced the path, as it does alone
    assert merged["attributes"] == {"material": ["dup-m2"], "origin": ["dup-o1"]}
    assert merged == _as_stored(shop, "dup2")
    # kgrec items import: the same within a batch of 1,000 lines as across two
    lines = [{"item_id": f"dup-fill-{n}"} for n in range(997)]
    lines += [{"item_id": "dup3", **first}, {"item_id": "dup3", **second}]  # lines 998, 999: one batch
    lines += [{"item_id": "dup4", **first}, {"item_id": "dup4", **second}]  # lines 1000 | 1001
    jsonl = tmp_path / "dups.jsonl"
    jsonl.write_text("".join(f"{json.dumps(line)}\n" for line in lines), encoding="utf-8")
    result = CliRunner().invoke(items_cli, ["import", str(jsonl)], obj={"settings": shop.settings})
    assert result.exit_code == 0, result.output
    assert "in 2 batch(es)" in result.output
    assert _as_stored(shop, "dup3") == merged == _as_stored(shop, "dup4")


def test_an_items_csv_from_a_spreadsheet_is_read_as_written(tmp_path: Path) -> None:
    # a byte-order mark before the header is no part of the first column's name
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffitem_id,title\nb1,Face cream\n".encode())
    assert [(n, i) for n, i in read_items(bom)] == [(2, {"item_id": "b1", "title": "Face cream"})]
    # a column named twice, or a row longer than the header, is refused rather than cut silently
    twice = tmp_path / "twice.csv"
    twice.write_text("item_id,title,title\nb2,A,B\n", encoding="utf-8")
    [(line, error)] = list(read_items(twice))
    assert line == 1 and "the header names 'title' more than once" in str(error)
    longer = tmp_path / "longer.csv"
    longer.write_text("item_id,title\nb3,A,stray\n", encoding="utf-8")
    [(line, error)] = list(read_items(longer))
    assert line == 2 and "1 more cell(s) than the header has columns: ['stray']" in str(error)
