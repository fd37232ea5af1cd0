"""``kgrec import`` on real data: exact counts, idempotency, bad rows reported and skipped."""

from __future__ import annotations

import csv
import gc
import gzip
import math
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from graph_schema.allow_list import BEHAVIOURS
from graph_schema.bench_statements import INTERACTED_ITEM_COUNT
from graph_schema.statements import admin
from graph_schema.statements import dataset_import as import_statements
from graph_schema.statements.privacy import ERASE_USER
from kgrec.category_tree import infer_parents
from kgrec.collector import cycle_collection_paused
from kgrec.config import Settings
from kgrec.datasets import BUILTIN, import_source, open_dataset
from kgrec.datasets.records import write_csv_rows
from kgrec.decay import decayed_sum
from kgrec.embedded import EmbeddedServer
from kgrec.erasure import user_hash
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.importer import ImportState, first_starts, import_dataset, import_state, link_category_parents
from kgrec.limits import MAX_EPOCH_MS
from kgrec_cli.main import import_record
from kgrec_cli.stack import StackError, import_decision, mixing_refusal
from tests.conftest import embedded_only
from tests.processes import kgrec_cli
from tests.subsets import amazon_beauty_subset

DAY_MS = 86_400_000

# The first 100 users of Amazon Beauty: relationships per type, counted in the source files once.
SUBSET_RELATIONSHIPS = {
    "INTERACTED": 1_366,  # distinct (user, item) pairs of interactions.csv
    "MADE_BY": 920,
    "IN_CATEGORY": 4_553,
    "ALSO_BOUGHT": 82_088,
    "ALSO_VIEWED": 13_934,
    "BOUGHT_TOGETHER": 796,
    "SUBCATEGORY_OF": 181 - 1,  # one root, "Beauty"
    "INTERESTED_IN": 904 + 2_069,  # distinct (user, brand) and (user, category) pairs
}


def counts(gateway: GraphGateway) -> tuple[dict[str, int], dict[str, int]]:
    nodes = {r["label"]: int(r["count"]) for r in gateway.read(admin.NODE_COUNTS)}
    rels = {r["type"]: int(r["count"]) for r in gateway.read(admin.RELATIONSHIP_COUNTS)}
    return nodes, rels


def fingerprint(gateway: GraphGateway) -> list[dict[str, object]]:
    """Property totals that any change to interaction or interest edges would move."""
    return gateway.run_query(
        "MATCH (u:User)-[r:INTERACTED|INTERESTED_IN]->(t) "
        "RETURN type(r) AS type, count(r) AS n, sum(r.weight) AS weight, "
        "sum(coalesce(r.n_purchase, 0)) AS purchases, sum(coalesce(r.count, 0)) AS events, "
        "min(r.weight_ts) AS first_stamp, max(r.weight_ts) AS last_stamp "
        "ORDER BY type",
        {},
    )


@pytest.fixture(scope="module")
def beauty_subset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 100 users of Amazon Beauty with their items and those items' triples."""
    return amazon_beauty_subset(
        shared_data / "amazon-beauty-kg", tmp_path_factory.mktemp("beauty100"), users=100
    )


def distinct_pairs(path: Path, first: str, second: str) -> int:
    """How many distinct (first, second) column pairs a gzip CSV holds."""
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return len({(row[first], row[second]) for row in csv.DictReader(handle)})


def test_subset_import_counts_are_exact(
    gateway: GraphGateway, beauty_subset: Path, settings: Settings
) -> None:
    interactions = distinct_pairs(beauty_subset / "interactions.csv.gz", "user_id", "item_id")
    assert interactions == SUBSET_RELATIONSHIPS["INTERACTED"]
    report = import_dataset(gateway, open_dataset(str(beauty_subset), settings.datasets_dir), settings)
    nodes, rels = counts(gateway)
    assert nodes["User"] == 100
    assert int(gateway.read(INTERACTED_ITEM_COUNT)[0]["count"]) == 1_100
    assert nodes["Item"] == 1_100 + 29_849  # rated items + co-purchase targets outside them
    assert nodes["Brand"] == 450
    assert nodes["Category"] == 181
    assert rels == SUBSET_RELATIONSHIPS
    assert report.problems == []
    assert report.relationships == sum(SUBSET_RELATIONSHIPS.values())


def test_second_import_changes_nothing(
    gateway: GraphGateway, beauty_subset: Path, settings: Settings
) -> None:
    """A day later too: the subset has only seq_index, and each run stamped its untimed pairs with
    its own time, so a second import set every interaction and interest back to full weight."""
    dataset = open_dataset(str(beauty_subset), settings.datasets_dir)
    first = import_dataset(gateway, dataset, settings, now_ms=1_700_000_000_000)
    before = (counts(gateway), fingerprint(gateway))
    assert [row["last_stamp"] for row in before[1]] == [1_700_000_000_000] * 2
    second = import_dataset(
        gateway,
        open_dataset(str(beauty_subset), settings.datasets_dir),
        settings,
        now_ms=1_700_000_000_000 + DAY_MS,
    )
    assert (counts(gateway), fingerprint(gateway)) == before
    assert first.relationships == first.relationships_created == sum(SUBSET_RELATIONSHIPS.values())
    assert second.relationships == sum(SUBSET_RELATIONSHIPS.values())
    assert second.relationships_created == 0


def test_an_import_again_after_another_data_set_or_under_another_spelling_changes_nothing(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    """The record kept only the last data set's first start: importing A, then B, then A again
    stamped A's untimed pairs with the third run's time (full weight again), and so did a built-in
    data set imported by name and then by its folder's path."""
    data_dir = tmp_path / "data"
    beauty, other = data_dir / BUILTIN["amazon-beauty"], tmp_path / "other"
    for folder, users in ((beauty, ("u1", "u2")), (other, ("v1",))):
        folder.mkdir(parents=True)
        rows = [[user, f"i{n}", str(n)] for user in users for n in range(3)]
        write_csv_rows(folder / "interactions.csv", ["user_id", "item_id", "seq_index"], rows)

    def run(name_or_path: str, now_ms: int) -> None:
        dataset = open_dataset(name_or_path, data_dir)
        import_dataset(
            gateway, dataset, settings, now_ms=now_ms, source=import_source(name_or_path, data_dir)
        )

    def stamps() -> dict[str, set[int]]:
        rows = gateway.run_query("MATCH (u:User)-[r:INTERACTED]->() RETURN u.id AS u, r.weight_ts AS ts", {})
        found: dict[str, set[int]] = {}
        for row in rows:
            found.setdefault(row["u"], set()).add(row["ts"])
        return found

    start = 1_700_000_000_000
    assert {import_source(s, data_dir) for s in ("amazon-beauty", str(beauty), BUILTIN["amazon-beauty"])} == {
        "amazon-beauty"
    }
    run("amazon-beauty", start)
    run(str(other), start + DAY_MS)
    run("amazon-beauty", start + 2 * DAY_MS)
    run(str(beauty), start + 3 * DAY_MS)  # the same data set by its folder's path
    run(str(other), start + 4 * DAY_MS)
    assert stamps() == {"u1": {start}, "u2": {start}, "v1": {start + DAY_MS}}
    state = import_state(gateway)
    assert state is not None and state.first_starts == {
        "amazon-beauty": start,
        str(other.resolve()): start + DAY_MS,
    }


def test_interest_edges_follow_interactions(
    gateway: GraphGateway, beauty_subset: Path, settings: Settings
) -> None:
    import_dataset(gateway, open_dataset(str(beauty_subset), settings.datasets_dir), settings)
    # Every brand interest is backed by an interaction with an item of that brand, and vice versa.
    rows = gateway.run_query(
        "MATCH (u:User)-[x:INTERESTED_IN]->(b:Brand) "
        "OPTIONAL MATCH (u)-[e:INTERACTED]->(:Item)-[:MADE_BY]->(b) "
        "WITH x, count(e) AS backing, sum(e.n_purchase) AS purchases "
        "RETURN count(x) AS interests, sum(CASE WHEN backing = 0 THEN 1 ELSE 0 END) AS unbacked, "
        "sum(CASE WHEN x.count = purchases THEN 0 ELSE 1 END) AS miscounted",
        {},
    )
    assert rows[0]["interests"] > 0
    assert rows[0]["unbacked"] == 0
    assert rows[0]["miscounted"] == 0


def test_full_amazon_beauty_import(gateway: GraphGateway, settings: Settings) -> None:
    """The whole real data set: the counts the README promises."""
    report = import_dataset(gateway, open_dataset("amazon-beauty", settings.datasets_dir), settings)
    nodes, rels = counts(gateway)
    assert nodes["User"] == 22_363
    assert int(gateway.read(INTERACTED_ITEM_COUNT)[0]["count"]) == 12_101
    assert rels["INTERACTED"] == 198_502
    # PGPR's brand list has 2,077 entries, one of them the empty string (18 triples
    # "produced_by,<empty>"): kgrec reports those rows and keeps 2,076 real brands.
    assert nodes["Brand"] == 2_076
    assert nodes["Category"] == 248
    assert rels["ALSO_BOUGHT"] == 891_182
    assert rels["ALSO_VIEWED"] == 155_350
    assert rels["BOUGHT_TOGETHER"] == 9_021
    assert len(report.problems) == 18
    assert {p.reason for p in report.problems} == {"tail is empty"}


@pytest.fixture
def messy_dataset(tmp_path: Path) -> Path:
    folder = tmp_path / "messy"
    folder.mkdir()
    write_csv_rows(
        folder / "interactions.csv",
        ["user_id", "item_id", "ts", "type", "value"],
        [
            ["u1", "i1", "2024-01-01T00:00:00Z", "purchase", ""],  # line 2: ok
            ["u1", "i2", "1704067200", "view", ""],  # line 3: ok (Unix seconds)
            ["", "i1", "1704067200", "view", ""],  # line 4: empty user_id
            ["u2", "i1", "yesterday", "view", ""],  # line 5: bad ts
            ["u2", "i1", "1704067200", "teleport", ""],  # line 6: unknown type
            ["u2", "i1", "1704067200", "rating", "NaN"],  # line 7: NaN value
            ["u2", "i3", "1704067200", "rating", "4.5"],  # line 8: ok
        ],
    )
    with open(folder / "interactions.csv", "a") as handle:
        handle.write("u3,i1,1704067200\n")  # line 9: too few fields
    write_csv_rows(
        folder / "items.csv",
        ["item_id", "brand", "categories", "title", "price"],
        [
            ["i1", "Acme", "Beauty|Skin Care|Face", "Face cream", "12.5"],
            ["i2", "Acme", "Beauty|Makeup", "Lipstick", "oops"],  # line 3: bad price
            ["i3", "Bolt", "Beauty|Skin Care", "Serum", ""],
        ],
    )
    write_csv_rows(
        folder / "kg_triples.csv",
        ["head", "relation", "tail"],
        [
            ["i1", "also_bought", "i3"],
            ["i1", "sounds like", "i2"],  # line 3: bad relation
            ["i3", "also_viewed", "x9"],
            ["i3", "produced_by", "Bolt"],  # the brand items.csv gives: nothing to report
            ["i1", "produced_by", "Zed"],  # line 6: a second brand for i1
            ["ghost", "produced_by", "Phantom"],  # line 7: no item 'ghost' anywhere
            ["ghost", "belongs_to", "Nowhere"],  # line 8: so is this one
            ["ghost", "produced_by", "Other"],  # line 9: reported once, for its first reason
        ],
    )
    return folder


def test_a_data_set_folder_is_found_by_its_name_in_the_data_sets_folder(tmp_path: Path) -> None:
    folder = tmp_path / "sets" / "my-shop"
    folder.mkdir(parents=True)
    write_csv_rows(folder / "interactions.csv", ["user_id", "item_id", "ts"], [["u1", "i1", "1704067200"]])
    assert open_dataset("my-shop", tmp_path / "sets").name == open_dataset(str(folder), tmp_path).name
    with pytest.raises(FileNotFoundError, match=f"nor a folder, here or in {tmp_path}"):
        open_dataset("my-shop", tmp_path)


def test_a_later_import_replaces_the_brand_of_an_item(
    gateway: GraphGateway, tmp_path: Path, settings: Settings
) -> None:
    def shop(name: str, brand: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        write_csv_rows(
            folder / "interactions.csv", ["user_id", "item_id", "ts"], [["u1", "i1", "1704067200"]]
        )
        write_csv_rows(folder / "items.csv", ["item_id", "brand", "title"], [["i1", brand, "Face cream"]])
        return folder

    for name, brand in (("first", "Acme"), ("rebranded", "Bolt"), ("again", "Bolt")):
        import_dataset(gateway, open_dataset(str(shop(name, brand)), settings.datasets_dir), settings)
    brands = gateway.run_query("MATCH (:Item {id: 'i1'})-[:MADE_BY]->(b:Brand) RETURN b.id AS b", {})
    assert brands == [{"b": "Bolt"}]  # one brand, the latest import's


def test_an_import_again_leaves_out_what_an_erased_user_did_before_the_erasure(
    gateway: GraphGateway, tmp_path: Path, settings: Settings
) -> None:
    """A data set imported again (a shop's nightly export of its orders) does not bring an erased
    user back: their interactions dated at or before the erasure are left out, and reported; a
    later one is a new history."""
    folder = tmp_path / "shop"
    folder.mkdir()
    rows = [["gone", "i1", "1704067200"], ["gone", "i2", "1704067300"], ["kept", "i1", "1704067200"]]
    write_csv_rows(folder / "interactions.csv", ["user_id", "item_id", "ts"], rows)
    import_dataset(gateway, open_dataset(str(folder), settings.datasets_dir), settings)
    erased_at = 1704067250_000  # between the two interactions of "gone"
    gateway.write(ERASE_USER, {"user_id": "gone", "erasure_id": user_hash("gone"), "now": erased_at})

    report = import_dataset(gateway, open_dataset(str(folder), settings.datasets_dir), settings)
    pairs = gateway.run_query("MATCH (u:User)-[:INTERACTED]->(i:Item) RETURN u.id AS u, i.id AS i", {})
    assert sorted((r["u"], r["i"]) for r in pairs) == [("gone", "i2"), ("kept", "i1")]
    assert report.erased_interactions == 1 and report.problems == []


def test_bad_rows_are_reported_and_the_rest_loads(
    gateway: GraphGateway, messy_dataset: Path, settings: Settings
) -> None:
    report = import_dataset(gateway, open_dataset(str(messy_dataset), settings.datasets_dir), settings)
    found = {(Path(p.file).name, p.line): p.reason for p in report.problems}
    assert len(found) == len(report.problems)  # no row twice
    assert found == {
        ("interactions.csv", 4): "user_id is empty",
        ("interactions.csv", 5): (
            "ts 'yesterday' is not Unix seconds or an RFC 3339 date-time with an offset, like 2023-11-14T22:13:20Z"
        ),
        ("interactions.csv", 6): f"type 'teleport' is not one of {', '.join(BEHAVIOURS)}",
        ("interactions.csv", 7): "value: value 'NaN' is not a finite number",
        ("interactions.csv", 9): "expected 5 fields, found 3",
        ("items.csv", 3): "price: could not convert string to float: 'oops'",
        ("kg_triples.csv", 3): (
            "relation 'sounds like' must be 1 to 128 characters of letters, digits, '.', '_', '-', '/' and ':'"
        ),
        (
            "kg_triples.csv",
            6,
        ): "produced_by 'Zed': item 'i1' already has brand 'Acme' (an item has one brand)",
        ("kg_triples.csv", 7): "produced_by 'Phantom': 'ghost' is no item of this data set or the graph",
        ("kg_triples.csv", 8): "belongs_to 'Nowhere': 'ghost' is no item of this data set or the graph",
        (
            "kg_triples.csv",
            9,
        ): "produced_by 'Other': item 'ghost' already has brand 'Phantom' (an item has one brand)",
    }
    orphans = gateway.run_query(
        "MATCH (n) WHERE n.id IN ['Phantom', 'Nowhere', 'ghost'] RETURN n.id AS id", {}
    )
    assert orphans == []
    brands = gateway.run_query(
        "MATCH (i:Item)-[:MADE_BY]->(b:Brand) RETURN i.id AS i, b.id AS b ORDER BY i", {}
    )
    assert brands == [{"i": "i1", "b": "Acme"}, {"i": "i3", "b": "Bolt"}]
    nodes, rels = counts(gateway)
    assert nodes["User"] == 2 and rels["INTERACTED"] == 3
    assert rels["ALSO_BOUGHT"] == 1 and rels["ALSO_VIEWED"] == 1
    assert nodes["Item"] == 3 + 1  # i1..i3 plus co-purchase target x9
    rating = gateway.run_query("MATCH (:User {id: 'u2'})-[e:INTERACTED]->(:Item {id: 'i3'}) RETURN e", {})
    props = rating[0]["e"]["properties"]
    assert props["rating"] == 4.5 and props["n_rating"] == 1
    assert props["first_ts"] == props["last_ts"] == props["weight_ts"] == 1_704_067_200_000
    assert props["rating_ts"] == 1_704_067_200_000  # when the rating was given
    # so a rating event older than the imported one, arriving later, counts but does not replace it
    late = {"event_id": "late", "user_id": "u2", "item_id": "i3", "type": "rating", "value": 1.0}
    valid, errors = validate_batch([{**late, "ts": 1_704_067_200_000 - 86_400_000}], max_skew_s=300)
    assert errors == []
    ingest(gateway, valid, settings)
    after = gateway.run_query("MATCH (:User {id: 'u2'})-[e:INTERACTED]->(:Item {id: 'i3'}) RETURN e", {})
    assert after[0]["e"]["properties"]["rating"] == 4.5 and after[0]["e"]["properties"]["n_rating"] == 2
    # "Skin Care" covers "Face"; "Beauty" covers everything ("Makeup" came only with the rejected i2 row)
    parents = gateway.run_query(
        "MATCH (c:Category)-[:SUBCATEGORY_OF]->(p:Category) RETURN c.id AS c, p.id AS p ORDER BY c", {}
    )
    assert {(r["c"], r["p"]) for r in parents} == {
        ("Face", "Skin Care"),
        ("Skin Care", "Beauty"),
    }
    # a head this data set does not list but the graph holds is an item: its triple is written
    later = messy_dataset.parent / "later"
    later.mkdir()
    write_csv_rows(
        later / "interactions.csv", ["user_id", "item_id", "ts", "type"], [["u9", "i9", "1704067200", "view"]]
    )
    write_csv_rows(later / "kg_triples.csv", ["head", "relation", "tail"], [["i3", "belongs_to", "Extra"]])
    report = import_dataset(gateway, open_dataset(str(later), settings.datasets_dir), settings)
    assert report.problems == []
    extra = gateway.run_query("MATCH (i:Item)-[:IN_CATEGORY]->(:Category {id: 'Extra'}) RETURN i.id AS i", {})
    assert extra == [{"i": "i3"}]


def test_cli_import_reports_rejects_and_summary(
    messy_dataset: Path, settings: Settings, graph_server: object, tmp_path: Path
) -> None:
    if not settings.embedded:
        pytest.skip("the CLI test uses a separate embedded graph")
    rejects = tmp_path / "rejects.csv"
    env = {
        **os.environ,
        "KGREC_DATA_DIR": str(settings.data_dir),
        "KGREC_GRAPH": f"cli_{uuid.uuid4().hex[:8]}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "kgrec_cli.main", "import", str(messy_dataset), "--rejects", str(rejects)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "11 row(s) skipped" in done.stderr
    assert "Traceback" not in done.stderr
    with open(rejects) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 11
    assert {"file", "line", "reason"} == set(rows[0])
    missing = subprocess.run(
        [sys.executable, "-m", "kgrec_cli.main", "import", str(tmp_path / "nowhere")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 1
    assert missing.stderr.startswith("kgrec: error:") and "Traceback" not in missing.stderr


def test_decayed_sum_matches_hand_computation() -> None:
    half_life = 14 * DAY_MS
    t0 = 1_700_000_000_000
    # a purchase (5) two half-lives before a view (1): 5 * 0.25 + 1 = 2.25 at the view's time
    weight, ts = decayed_sum([(5.0, t0), (1.0, t0 + 28 * DAY_MS)], half_life, now_ms=0)
    assert ts == t0 + 28 * DAY_MS
    assert math.isclose(weight, 2.25)
    # no timestamps: no decay, stamped with the import time
    assert decayed_sum([(5.0, None), (3.0, None)], half_life, now_ms=42) == (8.0, 42)


def test_category_tree_from_unordered_sets() -> None:
    parents = infer_parents(
        {
            "a": ["Curling Irons", "Beauty", "Irons", "Hair Care"],
            "b": ["Beauty", "Hair Care", "Irons"],
            "c": ["Hair Care", "Beauty"],
            "d": ["Makeup", "Beauty"],
        }
    )
    assert parents == {
        "Curling Irons": "Irons",
        "Irons": "Hair Care",
        "Hair Care": "Beauty",
        "Makeup": "Beauty",
    }


def test_the_cycle_collector_pause_restores_the_collectors_state() -> None:
    assert gc.isenabled()
    with cycle_collection_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    # an error inside still restores it, and a caller that had it off keeps it off
    with pytest.raises(RuntimeError), cycle_collection_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with cycle_collection_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


# Imports a data set and kills its own process (kill -9) as the import reaches the step named in
# argv[3]: everything before that step is written, nothing after.
KILLED_IMPORT = """
import os, signal, sys
from pathlib import Path
from kgrec.config import Settings
from kgrec.datasets import import_source, open_dataset
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.importer import import_dataset

settings = Settings(data_dir=Path(sys.argv[1]))

def progress(step, total):
    if step == sys.argv[3]:
        os.kill(os.getpid(), signal.SIGKILL)
    return lambda n: None

with open_gateway(settings) as gateway:
    dataset = open_dataset(sys.argv[2], settings.datasets_dir)
    # as `kgrec import` and `kgrec up --import` record it
    import_dataset(gateway, dataset, settings, progress, source=import_source(sys.argv[2], settings.datasets_dir))
"""


def _aof_rewrites(server: EmbeddedServer) -> int:
    info = server.running()
    assert info is not None
    client = info.client()
    try:
        return int(client.info("persistence")["aof_rewrites"])
    finally:
        client.close()


@embedded_only
def test_an_import_killed_part_way_is_run_again_by_up_and_the_aof_rewritten(
    own_server: tuple[EmbeddedServer, Settings], tmp_path: Path
) -> None:
    server, settings = own_server
    shop = tmp_path / "shop"
    shop.mkdir()
    rows = [
        [f"u{u}", f"i{(u * 7 + k) % 40}", str(1_704_067_200 + 60 * k)] for u in range(30) for k in range(5)
    ]
    write_csv_rows(shop / "interactions.csv", ["user_id", "item_id", "ts"], rows)
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_IMPORT, str(settings.data_dir), str(shop), "user → item"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr
    with open_gateway(settings) as gateway:
        items = int(gateway.read(admin.ITEM_COUNT)[0]["count"])
        state = import_state(gateway)
        assert items == 40 and gateway.run_query("MATCH ()-[r:INTERACTED]->() RETURN count(r) AS n", {}) == [
            {"n": 0}
        ]
    # the folder's full path, so that the hint below works from any directory
    assert state is not None and state.dataset == str(shop.resolve()) and not state.finished
    # `kgrec up --import` runs it again; plain `kgrec up` serves the partial graph and says how to finish it
    run_it, said = import_decision(items, state, str(shop))
    assert (
        run_it and said is not None and f"the import of {shop} started" in said and "did not finish" in said
    )
    # another data set does not complete it: it would mix two data sets in one graph
    assert import_record(settings, str(shop), tmp_path) == import_record(settings, "shop", tmp_path)
    assert import_decision(items, state, "shop", import_record(settings, "shop", tmp_path))[0]
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(StackError) as refused:
        import_decision(items, state, str(other), import_record(settings, str(other), tmp_path))
    assert str(refused.value).endswith(
        f"did not finish; importing {other} over it would mix two data sets in one graph: "
        f"finish it with kgrec up --import {shop.resolve()}, or use another --data-dir"
    )
    served, why = import_decision(items, state, None)
    assert not served and why is not None and why.startswith(said.split(" did not finish")[0])
    assert why.endswith(
        f"did not finish: the partial graph is served as it is (kgrec up --import {shop} finishes it)"
    )
    # so is `kgrec import` of another data set: it mixed the two and marked the graph finished
    write_csv_rows(other / "interactions.csv", ["user_id", "item_id", "ts"], [["x1", "y1", "1704067200"]])
    mixed = kgrec_cli("import", str(other), env={"KGREC_DATA_DIR": str(settings.data_dir)})
    assert mixed.returncode == 1 and "Traceback" not in mixed.stderr
    assert (
        mixed.stderr.strip()
        .splitlines()[-1]
        .endswith(
            f"did not finish; importing {other} over it would mix two data sets in one graph: "
            f"finish it with kgrec import {shop.resolve()}, or use another --data-dir"
        )
    ), mixed.stderr
    with open_gateway(settings) as gateway:
        assert import_state(gateway) == state
        assert gateway.run_query("MATCH (u:User {id: 'x1'}) RETURN count(u) AS n", {}) == [{"n": 0}]
    rewrites = _aof_rewrites(server)
    # by the folder's name in the data sets folder, from elsewhere: the record still has its full path
    done = kgrec_cli(
        "import", "shop", env={"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_DATASETS_DIR": str(tmp_path)}
    )
    assert done.returncode == 0, done.stderr
    assert _aof_rewrites(server) == rewrites + 1  # the long log of the killed import is compacted
    with open_gateway(settings) as gateway:
        state = import_state(gateway)
        interacted = gateway.run_query("MATCH ()-[r:INTERACTED]->() RETURN count(r) AS n", {})
    assert state is not None and state.finished and interacted == [{"n": len({(r[0], r[1]) for r in rows})}]
    assert state.dataset == str(shop.resolve())
    run_it, said = import_decision(40, state, str(shop))
    assert not run_it and said is not None and "already holds 40 items; skipping" in said
    assert import_decision(0, None, str(shop)) == (True, None)


def test_a_time_outside_1970_to_9999_skips_its_row_with_the_reason(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    """``inf`` aborted the import with an OverflowError; ``1e300`` was stored clipped to 2**63 - 1."""
    rows = [["u1", "i1", "inf"], ["u1", "i2", "1e300"], ["u1", "i3", "-5"], ["u1", "i4", "nan"]]
    rows += [["u1", "i5", "1700000000"], ["u1", "i6", str(MAX_EPOCH_MS / 1000)]]
    write_csv_rows(tmp_path / "interactions.csv", ["user_id", "item_id", "ts"], rows)
    # an import's clock at the end of 9999 takes that time; any real clock refuses it as ahead
    report = import_dataset(
        gateway, open_dataset(str(tmp_path), settings.datasets_dir), settings, now_ms=MAX_EPOCH_MS
    )
    assert [(p.line, p.reason) for p in report.problems] == [
        (2, "ts 'inf' is not a finite number of seconds"),
        (3, "ts '1e300' is after 9999"),
        (4, "ts '-5' is before 1970"),
        (5, "ts 'nan' is not a finite number of seconds"),
    ]
    stored = gateway.run_query("MATCH (:User)-[r:INTERACTED]->(i:Item) RETURN i.id AS i, r.last_ts AS ts", {})
    assert sorted((r["i"], r["ts"]) for r in stored) == [("i5", 1_700_000_000_000), ("i6", MAX_EPOCH_MS)]


def test_rows_beyond_the_apis_bounds_are_skipped_with_the_reason_and_the_rest_loads(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    """The import took what the events and catalogue APIs refuse: a ts in 2099 (whose weight_ts
    made serving's decay raise OverflowError), '²' as seq_index (int() raised with no file or
    line), one beyond 2**63, a rating of 1e300, prices of -5 and 1e300, titles of 6,000
    characters or with NUL, 40 categories; and one malformed CSV record aborted the whole import."""
    now_ms = 1_765_000_000_000
    header = ["user_id", "item_id", "ts", "seq_index", "type", "value"]
    rows = [
        ["u1", "i1", "2099-01-01T00:00:00Z", "", "", ""],
        ["u1", "i2", str(now_ms // 1000 + 301), "", "", ""],  # more than 300 s ahead
        ["u1", "i3", "", "²", "", ""],
        ["u1", "i4", "", "99999999999999999999999", "", ""],
        ["u1", "i5", "1700000000", "", "rating", "1e300"],
        ["u1", "ok1", str(now_ms // 1000 + 299), "7", "rating", "4.5"],
    ]
    write_csv_rows(tmp_path / "interactions.csv", header, rows)
    with open(tmp_path / "interactions.csv", "a") as handle:
        handle.write('u2,"i6"x,1700000000,,,\r\nu2,ok2,1700000000,,,\r\n')
    items = [
        ["p1", "", "", "Cream", "-5"],
        ["p2", "", "", "Cream", "1e300"],
        ["p3", "", "", "a" * 6000, ""],
        ["p4", "", "", "a\x00b", ""],
        ["p5", "", "|".join(f"c{n}" for n in range(40)), "", ""],
        ["ok1", "Acme", "Face|Skin", "Good cream", "1000000000000"],
    ]
    write_csv_rows(tmp_path / "items.csv", ["item_id", "brand", "categories", "title", "price"], items)
    report = import_dataset(
        gateway, open_dataset(str(tmp_path), settings.datasets_dir), settings, now_ms=now_ms
    )
    found = [(Path(p.file).name, p.line, p.reason) for p in report.problems]
    ahead = "is in the future (more than 300s ahead of the import's clock)"
    assert found == [
        ("items.csv", 2, "price must not be negative (got -5.0)"),
        ("items.csv", 3, "price must be at most 1e+12 (got 1e+300)"),
        ("items.csv", 4, f"title is longer than 1000 characters (got '{'a' * 59}… (6000 characters))"),
        ("items.csv", 5, "title must not contain NUL (U+0000) (got 'a\\x00b')"),
        ("items.csv", 6, "categories must list 1 to 10 categories (got 40)"),
        ("interactions.csv", 2, f"ts '2099-01-01T00:00:00Z' {ahead}"),
        ("interactions.csv", 3, f"ts '{now_ms // 1000 + 301}' {ahead}"),
        ("interactions.csv", 4, "seq_index '²' is not a whole number from 0 to 2**63 - 1"),
        (
            "interactions.csv",
            5,
            "seq_index '99999999999999999999999' is not a whole number from 0 to 2**63 - 1",
        ),
        ("interactions.csv", 6, "value must be between -1e+12 and 1e+12 (got 1e+300)"),
        ("interactions.csv", 8, "not valid CSV: ',' expected after '\"'"),
    ]
    stored = gateway.run_query(
        "MATCH (u:User)-[r:INTERACTED]->(i:Item) RETURN u.id AS u, i.id AS i, r.weight_ts AS ts, "
        "r.rating AS rating ORDER BY i",
        {},
    )
    assert stored == [
        {"u": "u1", "i": "ok1", "ts": (now_ms // 1000 + 299) * 1000, "rating": 4.5},
        {"u": "u2", "i": "ok2", "ts": 1_700_000_000_000, "rating": None},
    ]
    priced = gateway.run_query("MATCH (i:Item) WHERE i.price IS NOT NULL RETURN i.id AS i, i.price AS p", {})
    assert priced == [{"i": "ok1", "p": 1e12}]


def test_a_value_and_an_entity_name_the_events_api_refuses_are_refused_by_the_import_too(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    """The layout import stored a review's value and a negative purchase revenue, which
    ``POST /v1/events`` refuses, and an entity name with NUL, which no title may hold."""
    now_ms = 1_765_000_000_000
    rows = [
        ["u1", "i1", "review", "4"],
        ["u1", "i2", "purchase", "-5"],
        ["u1", "i3", "view", "2"],  # the API keeps a value on any behaviour but a review
        ["u1", "i4", "purchase", "12.5"],
    ]
    write_csv_rows(tmp_path / "interactions.csv", ["user_id", "item_id", "type", "value"], rows)
    entities = [["e1", "genre", "Ja\x00zz"], ["e2", "genre", "Jazz"]]
    write_csv_rows(tmp_path / "entities.csv", ["entity_id", "kind", "name"], entities)
    write_csv_rows(tmp_path / "kg_triples.csv", ["head", "relation", "tail"], [["i3", "genre", "e2"]])
    events = [
        {"event_id": f"e{n}", "user_id": u, "item_id": i, "type": t, "value": float(v), "ts": now_ms}
        for n, (u, i, t, v) in enumerate(rows)
    ]
    refused = {e.index: e.reason for e in validate_batch(events, max_skew_s=300, now_ms=now_ms)[1]}
    report = import_dataset(
        gateway, open_dataset(str(tmp_path), settings.datasets_dir), settings, now_ms=now_ms
    )
    found = {(Path(p.file).name, p.line, p.reason) for p in report.problems}
    assert found == {
        ("interactions.csv", 2, f"value: {refused[0]}"),
        ("interactions.csv", 3, f"value: {refused[1]}"),
        ("entities.csv", 2, "name must not contain NUL (U+0000) (got 'Ja\\x00zz')"),
    }
    assert refused[0] == "a review event carries no value (got 4): a value is a rating's or a purchase's"
    assert sorted(refused) == [0, 1]
    stored = gateway.run_query("MATCH (:User)-[:INTERACTED]->(i:Item) RETURN i.id AS i ORDER BY i", {})
    assert stored == [{"i": "i3"}, {"i": "i4"}]


def test_an_unreadable_file_is_refused_in_one_line_naming_the_file_and_line(
    settings: Settings, graph_server: object, tmp_path: Path
) -> None:
    """A truncated .gz printed only "Aborted!"; a byte that is not UTF-8, a reason with no file or line."""
    if not settings.embedded:
        pytest.skip("the CLI test uses a separate embedded graph")
    truncated, undecodable = tmp_path / "truncated", tmp_path / "undecodable"
    truncated.mkdir()
    undecodable.mkdir()
    rows = "".join(f"u{n},i{n % 50},{1_704_067_200 + n}\n" for n in range(20_000))
    packed = gzip.compress(f"user_id,item_id,ts\n{rows}".encode())
    (truncated / "interactions.csv.gz").write_bytes(packed[: len(packed) // 2])
    (undecodable / "interactions.csv").write_bytes(b"user_id,item_id\nu1,i1\nu2,i\xff2\n")
    # malformed CSV was a traceback (a field over csv's limit), or rows swallowed into one field
    unclosed, oversized = tmp_path / "unclosed", tmp_path / "oversized"
    unclosed.mkdir()
    oversized.mkdir()
    (unclosed / "interactions.csv").write_text('user_id,item_id,ts\nu1,i1,1704067200\nu2,"i2,1\nu3,i3,2\n')
    (oversized / "interactions.csv").write_text(f"user_id,item_id,ts\nu1,{'i' * 200_000},1704067200\n")
    env = {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_GRAPH": f"cli_{uuid.uuid4().hex[:8]}"}
    for folder, reason in (
        (unclosed, r"unclosed/interactions\.csv line 3: not valid CSV: a quoted field is never closed"),
        (oversized, r"oversized/interactions\.csv line 2: not valid CSV: field larger than field limit"),
        (
            truncated,
            r"truncated/interactions\.csv\.gz: cannot read past line \d+: it ends early \(truncated\)",
        ),
        (undecodable, r"undecodable/interactions\.csv line 3: not UTF-8 \(byte 0xff at column 5\)"),
    ):
        done = kgrec_cli("import", str(folder), env=env)
        assert done.returncode == 1
        (last,) = [line for line in done.stderr.splitlines() if line.startswith("kgrec: error:")]
        assert re.search(reason, last), done.stderr
        assert "Traceback" not in done.stderr and "Aborted" not in done.stderr


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    """kg_triples.csv saved with a BOM was refused as "missing required column(s) head"."""
    (tmp_path / "interactions.csv").write_text(
        "\ufeffuser_id,item_id,ts\nu1,i1,1704067200\n", encoding="utf-8"
    )
    (tmp_path / "kg_triples.csv").write_text("\ufeffhead,relation,tail\ni1,origin,UK\n", encoding="utf-8")
    packed = tmp_path / "entities.csv.gz"
    packed.write_bytes(gzip.compress("\ufeffentity_id,kind,name\nUK,country,United Kingdom\n".encode()))
    report = import_dataset(gateway, open_dataset(str(tmp_path), settings.datasets_dir), settings)
    assert report.problems == []
    rows = gateway.run_query(
        "MATCH (:User {id: 'u1'})-[:INTERACTED]->(:Item {id: 'i1'})-[:ORIGIN]->(e:Entity) RETURN e.name AS n",
        {},
    )
    assert rows == [{"n": "United Kingdom"}]


def test_each_skipped_row_is_printed_on_one_line_as_it_is(
    settings: Settings, graph_server: object, tmp_path: Path
) -> None:
    """Off a terminal the list of skipped rows was wrapped at 80 columns (and read as Rich markup)."""
    if not settings.embedded:
        pytest.skip("the CLI test uses a separate embedded graph")
    kind = "[bold]" + "n" * 90
    write_csv_rows(
        tmp_path / "interactions.csv",
        ["user_id", "item_id", "type"],
        [["u1", "i1", "view"], ["u1", "i2", kind]],
    )
    env = {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_GRAPH": f"cli_{uuid.uuid4().hex[:8]}"}
    done = kgrec_cli("import", str(tmp_path), env=env)
    assert done.returncode == 0, done.stderr
    expected = f"  {tmp_path / 'interactions.csv'}:3: type {kind!r} is not one of {', '.join(BEHAVIOURS)}"
    assert expected in done.stderr.splitlines(), done.stderr


def test_a_repeated_item_row_is_reported_and_the_first_row_kept(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    """Two items.csv rows of one item were merged silently: the later row's empty title and price
    replaced the first's, its brand replaced the brand, and both rows' categories made one path."""
    write_csv_rows(tmp_path / "interactions.csv", ["user_id", "item_id", "ts"], [["u1", "i1", "1704067200"]])
    write_csv_rows(
        tmp_path / "items.csv",
        ["item_id", "brand", "categories", "title", "price"],
        [["i1", "Acme", "Beauty|Face", "Face cream", "3.5"], ["i1", "Bolt", "Tools", "", ""]],
    )
    report = import_dataset(gateway, open_dataset(str(tmp_path), settings.datasets_dir), settings)
    assert [(Path(p.file).name, p.line, p.reason) for p in report.problems] == [
        ("items.csv", 3, "item_id 'i1' is listed again (first on line 2); the first row is kept")
    ]
    item = gateway.run_query(
        "MATCH (i:Item {id: 'i1'})-[:MADE_BY]->(b:Brand) RETURN i.title AS title, i.price AS price, b.id AS b",
        {},
    )
    assert item == [{"title": "Face cream", "price": 3.5, "b": "Acme"}]
    categories = gateway.run_query(
        "MATCH (:Item {id: 'i1'})-[:IN_CATEGORY]->(c:Category) RETURN c.id AS c ORDER BY c", {}
    )
    assert categories == [{"c": "Beauty"}, {"c": "Face"}]


def test_a_data_set_name_prints_as_it_is_and_rejects_are_written_every_run(
    settings: Settings, graph_server: object, tmp_path: Path
) -> None:
    """A folder ``shop[backup]`` printed as ``shop`` (its name was read as Rich markup), and a
    clean run left the previous run's --rejects file in place, as if its rows were still skipped."""
    if not settings.embedded:
        pytest.skip("the CLI test uses a separate embedded graph")
    shop = tmp_path / "shop[backup]"
    shop.mkdir()
    write_csv_rows(shop / "interactions.csv", ["user_id", "item_id", "ts"], [["u1", "i1", "1704067200"]])
    rejects = tmp_path / "rejects.csv"
    write_csv_rows(rejects, ["file", "line", "reason"], [["old.csv", "2", "an earlier run's row"]])
    env = {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_GRAPH": f"cli_{uuid.uuid4().hex[:8]}"}
    done = kgrec_cli("import", str(shop), "--rejects", str(rejects), env=env)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "reading shop[backup] ..." in output and "imported shop[backup]: " in output, output
    with open(rejects) as handle:
        assert handle.read().splitlines() == ["file,line,reason"]


def test_category_links_in_many_batches_check_the_tree_and_write_every_link(gateway: GraphGateway) -> None:
    # Each batch checks under the tree's lock that the links above its ids are those read, or the
    # import's own: the links the earlier batches wrote are not another writer's. A link that
    # would close a loop with the stored tree is skipped.
    gateway.run_query(
        "UNWIND ['a', 'b', 'c', 'd', 'e'] AS id CREATE (:Category {id: id}) WITH count(*) AS made "
        "MATCH (d:Category {id: 'd'}), (e:Category {id: 'e'}) CREATE (d)-[:SUBCATEGORY_OF]->(e)",
        {},
    )
    chain = [("b", "a"), ("c", "b"), ("d", "c"), ("a", "d")]  # the last closes a -> d -> c -> b -> a
    links = [{"child_id": child, "parent_id": parent} for child, parent in chain]
    written, skipped = link_category_parents(gateway, links, batch_size=1)
    assert written.relationships_created == 3
    assert [(p.file, p.line) for p in skipped] == [("items.csv", 0)]
    assert "categories" in skipped[0].reason and "would put 'a' under 'd'" in skipped[0].reason
    rows = gateway.run_query(
        "MATCH (c:Category)-[:SUBCATEGORY_OF]->(p:Category) RETURN c.id AS c, p.id AS p", {}
    )
    assert sorted((r["c"], r["p"]) for r in rows) == [("b", "a"), ("c", "b"), ("d", "c"), ("d", "e")]
    assert gateway.run_query("MATCH (r:Revision {id: 'category_tree'}) RETURN r.write_lock AS lock", {}) == [
        {"lock": None}
    ]


def test_a_hand_edited_first_starts_on_the_import_record_is_ignored_with_a_warning(
    gateway: GraphGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """``kgrec up`` reads the record on every start: an unreadable ``first_starts`` must not stop it."""
    for edited in ["{amazon-beauty: 12", '["amazon-beauty"]', '{"amazon-beauty": "soon"}']:
        gateway.write(
            import_statements.START_IMPORT, {"dataset": "amazon-beauty", "now": 5_000, "first_starts": edited}
        )
        caplog.clear()
        with caplog.at_level("WARNING", logger="kgrec.importer"):
            state = import_state(gateway)
        assert state == ImportState("amazon-beauty", 5_000, None, None, {}), edited
        assert first_starts(state) == {"amazon-beauty": 5_000}
        (warning,) = caplog.records
        assert "first_starts is unreadable" in warning.getMessage() and "\n" not in warning.getMessage()


def test_an_import_again_after_a_record_with_only_first_started_at_keeps_the_weights(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    """Until 2026-12-07 the record also held ``first_started_at``, the first start of its data set,
    which ``first_starts`` holds too. A record kept before ``first_starts`` existed has only the
    former: importing its data set again still stamps the untimed pairs with it (their weights
    stay), and the record written since carries no ``first_started_at``."""
    folder = tmp_path / "shop"
    folder.mkdir()
    rows = [[user, f"i{n}", str(n)] for user in ("u1", "u2") for n in range(3)]
    write_csv_rows(folder / "interactions.csv", ["user_id", "item_id", "seq_index"], rows)
    source = import_source(str(folder), tmp_path)
    start = 1_700_000_000_000

    def stamps() -> set[int]:
        found = gateway.run_query("MATCH (:User)-[r:INTERACTED]->() RETURN DISTINCT r.weight_ts AS ts", {})
        return {row["ts"] for row in found}

    import_dataset(gateway, open_dataset(str(folder), tmp_path), settings, now_ms=start, source=source)
    assert stamps() == {start}
    # the record as an import before first_starts kept it: a later run of it, its first start apart
    gateway.run_query(
        "MATCH (r:Revision {id: 'import'}) REMOVE r.first_starts "
        "SET r.started_at = $later, r.first_started_at = $first",
        {"later": start + DAY_MS, "first": start},
    )
    assert first_starts(import_state(gateway), tmp_path) == {source: start}
    import_dataset(
        gateway, open_dataset(str(folder), tmp_path), settings, now_ms=start + 2 * DAY_MS, source=source
    )
    assert stamps() == {start}
    (record,) = gateway.run_query("MATCH (r:Revision {id: 'import'}) RETURN properties(r) AS p", {})
    assert "first_started_at" not in record["p"], record["p"]
    assert import_state(gateway) == ImportState(
        source, start + 2 * DAY_MS, record["p"]["finished_at"], None, {source: start}
    )


def test_an_unfinished_import_recorded_by_a_built_in_data_sets_path_is_that_data_set(tmp_path: Path) -> None:
    """Before built-in data sets were recorded by their name, the record held their folder's
    absolute path: the same data set, by either name, completes it and keeps its first start."""
    name, stored = "amazon-beauty", BUILTIN["amazon-beauty"]
    (tmp_path / stored).mkdir()
    state = ImportState(str(tmp_path / stored), 7_000, None, 6_000)
    requested = import_source(stored, tmp_path)
    assert requested == name
    assert mixing_refusal(state, stored, requested, data_dir=tmp_path) is None
    run_it, said = import_decision(10, state, stored, requested, tmp_path)
    assert run_it and said is not None and said.endswith(f"importing {stored} again")
    assert first_starts(state, tmp_path) == {name: 6_000}
    # another data set is still refused
    (tmp_path / "shop").mkdir()
    other = import_source("shop", tmp_path)
    assert mixing_refusal(state, "shop", other, data_dir=tmp_path) is not None
