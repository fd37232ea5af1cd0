"""``kgrec events import``: rees46, taobao and csv files through the API's validation and write path."""

from __future__ import annotations

import csv
import gzip
import json
import re
import shutil
import uuid
from pathlib import Path

import pytest

from kgrec.config import Settings
from kgrec.events.bulk import import_events
from kgrec.gateway import GraphGateway
from tests.processes import kgrec_cli

FIXTURES = Path(__file__).parent / "fixtures"


def test_rees46_rows_become_events_with_a_category_tree(gateway: GraphGateway, settings: Settings) -> None:
    summary = import_events(gateway, FIXTURES / "rees46_sample.csv", "rees46", settings, batch_size=4)
    assert (summary.rows, summary.applied, summary.duplicates) == (16, 10, 1)
    rejected = {(r.line, r.field): r.reason for r in summary.rejected}
    assert set(rejected) == {(13, "type"), (14, "row"), (15, "row"), (16, "item_id"), (17, "row")}
    assert "wishlist" in rejected[(13, "type")]
    assert "cheap" in rejected[(14, "row")]
    assert "2019-13-01" in rejected[(15, "row")]
    assert rejected[(17, "row")] == "expected 9 fields, found 8"

    laptop = gateway.run_query(
        "MATCH (:User {id: '550050854'})-[r:INTERACTED]->(i:Item {id: '1307067'})-[:MADE_BY]->(b:Brand) "
        "RETURN r.n_cart AS cart, r.n_purchase AS purchase, r.n_remove_from_cart AS removed, "
        "i.price AS price, b.id AS brand",
        {},
    )
    assert laptop == [{"cart": 1, "purchase": 1, "removed": 1, "price": 251.74, "brand": "lenovo"}]
    path = gateway.run_query(
        "MATCH (c:Category {id: 'appliances.environment.water_heater'})-[:SUBCATEGORY_OF*]->(p:Category) "
        "RETURN p.id AS id ORDER BY id",
        {},
    )
    assert [r["id"] for r in path] == ["appliances", "appliances.environment"]


def test_taobao_rows_become_events(gateway: GraphGateway, settings: Settings) -> None:
    summary = import_events(gateway, FIXTURES / "taobao_sample.csv", "taobao", settings)
    assert (summary.rows, summary.applied, summary.duplicates) == (15, 11, 1)
    assert [(r.line, r.field) for r in summary.rejected] == [(13, "row"), (14, "row"), (15, "row")]
    buys = gateway.run_query(
        "MATCH (:User {id: '100'})-[r:INTERACTED]->(:Item {id: '1603476'}) RETURN r.n_purchase AS n, "
        "r.n_fav AS fav, r.first_ts AS first",
        {},
    )
    assert buys == [{"n": 1, "fav": 1, "first": 1_511_732_732_000}]


def test_importing_the_same_file_twice_changes_nothing(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    gz = tmp_path / "sample.csv.gz"
    with open(FIXTURES / "taobao_sample.csv", "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    first = import_events(gateway, gz, "taobao", settings)
    weights = gateway.run_query("MATCH ()-[r:INTERACTED]->() RETURN sum(r.weight) AS w, count(r) AS n", {})
    second = import_events(gateway, gz, "taobao", settings)
    assert first.applied == 11
    assert (second.applied, second.duplicates) == (0, 12)
    assert (
        gateway.run_query("MATCH ()-[r:INTERACTED]->() RETURN sum(r.weight) AS w, count(r) AS n", {})
        == weights
    )


def test_csv_with_column_mapping(gateway: GraphGateway, settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "shop.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["customer", "sku", "action", "when", "stars", "maker", "category"])
        writer.writerow(["c1", "s1", "rating", "2024-05-01T10:00:00Z", "4", "Acme", "Beauty|Skin Care"])
        # kgrec's field names mean what they mean in the API: ts is epoch milliseconds
        writer.writerow(["c1", "s2", "view", "1714557600000", "", "", ""])
        writer.writerow(["c2", "s1", "purchase", "not-a-time", "", "", ""])
        writer.writerow(["c2", "s1", "purchase", "1714557600.5", "", "", ""])  # not whole milliseconds
        # a date-time as the API reads one: with an offset, a time of day
        writer.writerow(["c2", "s1", "purchase", "2024-05-01T10:00:00", "", "", ""])
        writer.writerow(["c2", "s1", "purchase", "2024-05-01", "", "", ""])
    summary = import_events(
        gateway,
        path,
        "csv",
        settings,
        mapping={
            "customer": "user_id",
            "sku": "item_id",
            "action": "type",
            "when": "ts",
            "stars": "value",
            "maker": "brand",
        },
    )
    assert (summary.applied, len(summary.rejected)) == (2, 4)
    assert [(r.line, r.field) for r in summary.rejected] == [(4, "ts"), (5, "ts"), (6, "ts"), (7, "ts")]
    assert summary.rejected[1].reason == "'1714557600.5' is not a whole number of epoch milliseconds"
    assert summary.rejected[2].reason.startswith("'2024-05-01T10:00:00' has no offset")
    assert summary.rejected[3].reason.startswith("'2024-05-01' is a date without a time of day")
    view = gateway.run_query(
        "MATCH (:User {id: 'c1'})-[r:INTERACTED]->(:Item {id: 's2'}) RETURN r.first_ts AS t", {}
    )
    assert view == [{"t": 1_714_557_600_000}]
    rating = gateway.run_query(
        "MATCH (:User {id: 'c1'})-[r:INTERACTED]->(:Item {id: 's1'})-[:IN_CATEGORY]->(c:Category) "
        "RETURN r.rating AS rating, collect(c.id) AS categories",
        {},
    )
    assert rating[0]["rating"] == 4.0 and sorted(rating[0]["categories"]) == ["Beauty", "Skin Care"]
    with pytest.raises(ValueError, match="lacks"):
        import_events(gateway, path, "csv", settings)


def test_cli_writes_the_reject_file(settings: Settings, graph_server: object, tmp_path: Path) -> None:
    if not settings.embedded:
        pytest.skip("the CLI test uses its own embedded graph")
    rejects = tmp_path / "rejects.csv"
    env = {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_GRAPH": f"ev_{uuid.uuid4().hex[:8]}"}
    done = kgrec_cli(
        "events",
        "import",
        str(FIXTURES / "rees46_sample.csv"),
        "--format",
        "rees46",
        "--rejects",
        str(rejects),
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "10 applied, 1 duplicates, 5 rejected" in done.stderr
    with open(rejects) as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["line"], r["field"]) for r in rows] == [
        ("13", "type"),
        ("14", "row"),
        ("15", "row"),
        ("16", "item_id"),
        ("17", "row"),
    ]
    wrong = kgrec_cli("events", "import", str(FIXTURES / "taobao_sample.csv"), "--format", "rees46", env=env)
    assert wrong.returncode == 1
    assert wrong.stderr.strip().splitlines()[-1].startswith("kgrec: error: not a rees46 file")
    assert "Traceback" not in wrong.stderr
    # a rejects file that could not be written is refused before anything is imported
    nowhere = rejects.parent / "missing" / "r.csv"
    refused = kgrec_cli(
        "events",
        "import",
        str(FIXTURES / "taobao_sample.csv"),
        "--format",
        "taobao",
        "--rejects",
        str(nowhere),
        env=env,
    )
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"kgrec: error: --rejects {nowhere}: the folder {nowhere.parent} does not exist (nothing was imported)"
    )


def test_an_unreadable_file_is_refused_in_one_line_naming_the_file_and_line(
    settings: Settings, graph_server: object, tmp_path: Path
) -> None:
    """The importer read files its own way: a truncated .gz was a bare EOFError with no file, a byte
    that is not UTF-8 a reject. It reads through the data sets' reader, as ``kgrec import`` does."""
    if not settings.embedded:
        pytest.skip("the CLI test uses its own embedded graph")
    rows = "".join(f"u{n},i{n % 50},c1,pv,{1_704_067_200 + n}\n" for n in range(20_000))
    packed = gzip.compress(rows.encode())
    truncated, undecodable = tmp_path / "truncated.csv.gz", tmp_path / "undecodable.csv"
    truncated.write_bytes(packed[: len(packed) // 2])
    undecodable.write_bytes(b"u1,i1,c1,pv,1704067200\nu2,i\xff2,c1,pv,1704067201\n")
    # malformed CSV: a traceback for a field over csv's limit; an unclosed quote imported the rows
    # after it as one field
    unclosed, oversized = tmp_path / "unclosed.csv", tmp_path / "oversized.csv"
    unclosed.write_text('u1,i1,c1,pv,1704067200\nu2,"i2,c1,pv,1704067201\nu3,i3,c1,pv,1704067202\n')
    oversized.write_text(f"u1,{'i' * 200_000},c1,pv,1704067200\n")
    env = {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_GRAPH": f"ev_{uuid.uuid4().hex[:8]}"}
    for path, reason in (
        (unclosed, r"unclosed\.csv line 2: not valid CSV: a quoted field is never closed .*$"),
        (oversized, r"oversized\.csv line 1: not valid CSV: field larger than field limit \(131072\)$"),
        (truncated, r"truncated\.csv\.gz: cannot read past line \d+: it ends early \(truncated\)$"),
        (undecodable, r"undecodable\.csv line 2: not UTF-8 \(byte 0xff at column 5\)$"),
    ):
        done = kgrec_cli("events", "import", str(path), "--format", "taobao", env=env)
        assert done.returncode == 1, done.stderr
        (last,) = [line for line in done.stderr.splitlines() if line.startswith("kgrec: error:")]
        assert re.search(reason, last) and str(path) in last, done.stderr
        assert "Traceback" not in done.stderr and "Aborted" not in done.stderr
    # Text after a closing quote (the record ends with its line) is one reject, like a row of the
    # wrong shape, and the rows after it go in. A field over csv's size limit stops the import
    # (above): csv gives up inside the field, which may go on over the lines after it.
    stray = tmp_path / "stray.csv"
    stray.write_text(
        'u1,i1,c1,pv,1704067200\nu2,"12" TV,c1,pv,1704067201\n'
        'u3,"i3" x,c1,pv,1704067202\nu4,i4,c1,pv,1704067203\n'
    )
    rejects = tmp_path / "stray-rejects.csv"
    done = kgrec_cli("events", "import", str(stray), "--format", "taobao", "--rejects", str(rejects), env=env)
    assert done.returncode == 0, done.stderr
    assert rejects.read_text().splitlines() == [
        "line,field,reason",
        "2,row,\"not valid CSV: ',' expected after '\"\"'\"",
        "3,row,\"not valid CSV: ',' expected after '\"\"'\"",
    ]
    found = kgrec_cli("cypher", "MATCH (u:User) RETURN u.id AS id ORDER BY id", "--json", env=env)
    assert [row["id"] for row in json.loads(found.stdout)] == ["u1", "u4"], found.stderr


def test_a_batch_with_a_tag_on_an_unknown_item_and_a_looping_path_rejects_both_rows(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    # two refusals of one batch, found one after the other: both rows go to the rejects, the
    # rest is written (the second refusal escaped and stopped the import before)
    path = tmp_path / "two.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "item_id", "type", "ts", "category", "tag"])
        writer.writerow(["u1", "t1", "view", "1714557600000", "Beauty|Makeup", ""])
        writer.writerow(["u1", "ghost", "tag", "1714557600000", "", "nice"])  # no item 'ghost'
        writer.writerow(["u2", "t2", "view", "1714557600000", "Makeup|Beauty", ""])  # reverses line 2's
        writer.writerow(["u2", "t3", "view", "1714557600000", "Hair", ""])
    summary = import_events(gateway, path, "csv", settings)
    assert sorted((r.line, r.field) for r in summary.rejected) == [(3, "item_id"), (4, "item.category")]
    assert summary.applied == 2
    links = gateway.run_query("MATCH (c:Category)-[:SUBCATEGORY_OF]->(p) RETURN c.id AS c, p.id AS p", {})
    assert links == [{"c": "Makeup", "p": "Beauty"}]


def test_a_batch_is_checked_against_the_batches_written_before_it(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    # the tag's item and the reversed path's first link come at the end of a batch still being
    # written when the next one was checked: the tag was refused and the loop written
    batch = 2_000
    path = tmp_path / "across.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "item_id", "type", "ts", "category", "tag"])
        for n in range(batch - 1):
            writer.writerow([f"u{n}", f"old{n}", "view", "1714557600000", "", ""])
        writer.writerow(["u", "new", "view", "1714557600000", "A|B", ""])
        writer.writerow(["u", "new", "tag", "1714557600001", "", "nice"])
        writer.writerow(["v", "other", "view", "1714557600002", "B|A", ""])
    summary = import_events(gateway, path, "csv", settings, batch_size=batch)
    assert [(r.line, r.field) for r in summary.rejected] == [(batch + 3, "item.category")]
    assert summary.applied == batch + 1
    links = gateway.run_query("MATCH (c:Category)-[:SUBCATEGORY_OF]->(p) RETURN c.id AS c, p.id AS p", {})
    assert links == [{"c": "B", "p": "A"}]
