"""Category paths never loop the tree: a path that repeats an id or reverses stored links is refused
(events, imports; the catalogue API's own cases are in test_catalogue_api.py), and the code that walks
the tree stays right on a graph that holds a loop from before."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from graph_schema.catalogue import Statement
from graph_schema.statements.dataset_import import LINK_CATEGORY_PARENTS
from kgrec.catalogue import CatalogueItem, ItemsRefused, read_item, write_items
from kgrec.category_tree import categories_above
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.datasets.records import write_csv_rows
from kgrec.diversity import ItemGroups
from kgrec.events.ingest import EventsRefused, ingest
from kgrec.events.validation import FieldError, validate_batch
from kgrec.gateway import GraphGateway
from kgrec.gateway.base import WriteSummary
from kgrec.importer import import_dataset
from kgrec.item_facts import ItemFacts
from tests.passing_gateway import PassingGateway

T0 = 1_760_000_000_000


def links(gateway: GraphGateway) -> set[tuple[str, str]]:
    rows = gateway.run_query(
        "MATCH (c:Category)-[:SUBCATEGORY_OF]->(p:Category) RETURN c.id AS c, p.id AS p", {}
    )
    return {(r["c"], r["p"]) for r in rows}


def event(event_id: str, item_id: str, category: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": "u1",
        "item_id": item_id,
        "type": "view",
        "ts": T0,
        "item": {"category": category},
    }


def test_an_event_path_that_repeats_an_id_is_refused_naming_field_and_value() -> None:
    for path in (["Beauty", "Beauty"], ["A", "B", "A"]):
        _, errors = validate_batch([event("e1", "i1", path)], max_skew_s=300, now_ms=T0)
        assert [(e.index, e.field) for e in errors] == [(0, "item.category")]
        assert repr(path) in errors[0].reason and "twice" in errors[0].reason


def test_event_paths_that_would_loop_the_tree_are_refused_and_nothing_is_written(
    gateway: GraphGateway, settings: Settings
) -> None:
    def valid(*raw: dict[str, Any]) -> list[Any]:
        checked, errors = validate_batch(list(raw), max_skew_s=300, now_ms=T0)
        assert errors == []
        return checked

    ingest(gateway, valid(event("e1", "i1", ["Beauty", "Makeup", "Lips"])), settings, now_ms=T0)
    stored = links(gateway)
    for batch, index in (
        ([event("e2", "i2", ["Lips", "Beauty"])], 0),  # reverses two stored links
        (
            [
                event("e3", "i3", ["Hair"]),
                event("e4", "i4", ["Makeup", "Lips"]),
                event("e5", "i5", ["X", "Y"]),
            ],
            None,
        ),
        ([event("e6", "i6", ["P", "Q"]), event("e7", "i7", ["Q", "P"])], 1),  # within the batch
    ):
        if index is None:  # no loop: written
            ingest(gateway, valid(*batch), settings, now_ms=T0)
            stored = links(gateway)
            continue
        try:
            ingest(gateway, valid(*batch), settings, now_ms=T0)
        except EventsRefused as refused:
            assert [(e.index, e.field) for e in refused.errors] == [(index, "item.category")]
            assert "loop" in refused.errors[0].reason
        else:
            raise AssertionError("a looping path was written")
        assert links(gateway) == stored
    assert ("Y", "X") in stored and ("Beauty", "Lips") not in stored


def test_catalogue_paths_are_checked_against_stored_links_and_each_other(gateway: GraphGateway) -> None:
    write_items(gateway, [CatalogueItem(item_id="a1", categories=["Beauty", "Makeup"])])
    for batch, index in (
        ([{"item_id": "a2", "categories": ["Makeup", "Beauty"]}], 0),
        ([{"item_id": "a3", "categories": ["S", "T"]}, {"item_id": "a4", "categories": ["T", "S"]}], 1),
        # loops that take several links of one path: Beauty is above Makeup, so Makeup > Lips > Beauty
        # would close Beauty > Makeup > Lips > Beauty; and P > Q, then Q > R > P within one batch
        ([{"item_id": "a5", "categories": ["Makeup", "Lips", "Beauty"]}], 0),
        ([{"item_id": "a6", "categories": ["P", "Q"]}, {"item_id": "a7", "categories": ["Q", "R", "P"]}], 1),
    ):
        try:
            write_items(gateway, [CatalogueItem(**item) for item in batch])
        except ItemsRefused as refused:
            assert [(e.index, e.field) for e in refused.errors] == [(index, "categories")]
        else:
            raise AssertionError("a looping path was written")
    assert links(gateway) == {("Makeup", "Beauty")}


class _WritingTogether(PassingGateway):
    """The test's graph; each thread's first write waits until every thread has come to its own,
    so that all of them have checked their paths before any writes."""

    def __init__(self, graph: GraphGateway, threads: int) -> None:
        super().__init__(graph)
        self.ready = threading.Barrier(threads, timeout=60)
        self.waited: set[int] = set()

    def _write(self, statement: Statement, params: Mapping[str, Any]) -> WriteSummary:
        if threading.get_ident() not in self.waited:
            self.waited.add(threading.get_ident())
            self.ready.wait()
        return super()._write(statement, params)


def _halves_of_a_loop(gateway: GraphGateway, write: Callable[[GraphGateway, str, list[str]], None]) -> str:
    """Two writers put one item each under half of a loop (B under A, A under B), both checked
    before either writes: no loop is stored, one writer is refused (naming the field, the path and
    the loop), and nothing of its write is in the graph. The refused item's id."""
    paths = {"half-1": ["HalfA", "HalfB"], "half-2": ["HalfB", "HalfA"]}
    together = _WritingTogether(gateway, len(paths))

    def attempt(item_id: str) -> list[FieldError]:
        try:
            write(together, item_id, paths[item_id])
        except (EventsRefused, ItemsRefused) as refused:
            return refused.errors
        return []

    with ThreadPoolExecutor(len(paths)) as pool:
        outcomes = dict(zip(paths, pool.map(attempt, paths), strict=True))
    refused = [item_id for item_id, errors in outcomes.items() if errors]
    assert len(refused) == 1, outcomes
    (error,) = outcomes[refused[0]]
    assert error.index == 0 and "loop" in error.reason and repr(paths[refused[0]]) in error.reason
    (written,) = set(paths) - set(refused)
    child, parent = paths[written][1], paths[written][0]
    assert links(gateway) == {(child, parent)}
    # nothing of the refused write: no node with its item's (or event's) id, so no link of it either
    assert gateway.run_query("MATCH (n) WHERE n.id = $id RETURN n.id AS id", {"id": refused[0]}) == []
    return error.field


def test_event_writers_each_adding_half_of_a_loop_store_no_loop_and_one_is_refused_whole(
    gateway: GraphGateway, settings: Settings
) -> None:
    def write(graph: GraphGateway, item_id: str, path: list[str]) -> None:
        checked, errors = validate_batch([event(item_id, item_id, path)], max_skew_s=300, now_ms=T0)
        assert errors == []
        ingest(graph, checked, settings, now_ms=T0)

    assert _halves_of_a_loop(gateway, write) == "item.category"


def test_catalogue_writers_each_adding_half_of_a_loop_store_no_loop_and_one_is_refused_whole(
    gateway: GraphGateway,
) -> None:
    def write(graph: GraphGateway, item_id: str, path: list[str]) -> None:
        write_items(graph, [CatalogueItem(item_id=item_id, title="half", categories=path)])

    assert _halves_of_a_loop(gateway, write) == "categories"


def test_an_import_refuses_a_repeating_path_and_skips_a_link_that_would_loop(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    stored = CatalogueItem(item_id="s0", categories=["Makeup", "Beauty"])  # Beauty below Makeup
    write_items(gateway, [stored])
    folder = tmp_path / "shop"
    folder.mkdir()
    seen = [["u1", item, "1704067200"] for item in ("s1", "s2", "s3")]
    write_csv_rows(folder / "interactions.csv", ["user_id", "item_id", "ts"], seen)
    write_csv_rows(
        folder / "items.csv",
        ["item_id", "categories", "title"],
        [
            ["s1", "Beauty|Makeup", "Lipstick"],  # infers Makeup below Beauty: the reverse of the stored
            ["s2", "Beauty", "Soap"],
            ["s3", "Hair|Hair", "Comb"],  # line 4: repeats an id
        ],
    )
    report = import_dataset(gateway, open_dataset(str(folder), settings.datasets_dir), settings)
    found = {(Path(p.file).name, p.line): p.reason for p in report.problems}
    assert "'Hair' twice" in found[("items.csv", 4)] and "'Hair|Hair'" in found[("items.csv", 4)]
    assert "loop" in found[("items.csv", 0)]
    assert links(gateway) == {("Beauty", "Makeup")}
    # the bad row is skipped: s3 comes from its interaction alone
    assert gateway.run_query("MATCH (i:Item {id: 's3'}) RETURN i.title AS t", {}) == [{"t": None}]
    assert gateway.run_query("MATCH (:Item {id: 's3'})-[:IN_CATEGORY]->(c) RETURN c.id AS c", {}) == []


class _LinkingAfterAnotherWriter(PassingGateway):
    """The importer's graph: its first write of category links waits, its check made, until another
    thread's writer has stored links of its own."""

    def __init__(self, graph: GraphGateway) -> None:
        super().__init__(graph)
        self.checked = threading.Event()
        self.other_wrote = threading.Event()

    def _write(self, statement: Statement, params: Mapping[str, Any]) -> WriteSummary:
        if statement is LINK_CATEGORY_PARENTS and not self.checked.is_set():
            self.checked.set()
            assert self.other_wrote.wait(timeout=60), "the other writer never wrote"
        return super()._write(statement, params)


def test_an_import_whose_link_another_writer_makes_loop_after_the_check_skips_and_reports_it(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    """An import checked its inferred link (Makeup under Beauty) against an empty tree; before it
    writes, the catalogue API stores Beauty under Makeup. The import's batch conflicts, its links are
    checked again and the link is skipped: no loop stored, and the report names the field and link."""
    folder = tmp_path / "shop"
    folder.mkdir()
    write_csv_rows(folder / "interactions.csv", ["user_id", "item_id", "ts"], [["u1", "s1", "1704067200"]])
    write_csv_rows(
        folder / "items.csv",
        ["item_id", "categories", "title"],
        [["s1", "Beauty|Makeup", "Lipstick"], ["s2", "Beauty", "Soap"]],  # infers Makeup below Beauty
    )
    importing = _LinkingAfterAnotherWriter(gateway)

    def other_writer() -> None:
        assert importing.checked.wait(timeout=60), "the import never came to its category links"
        try:
            write_items(gateway, [CatalogueItem(item_id="c1", categories=["Makeup", "Beauty"])])
        finally:
            importing.other_wrote.set()

    with ThreadPoolExecutor(2) as pool:
        imported = pool.submit(
            import_dataset, importing, open_dataset(str(folder), settings.datasets_dir), settings
        )
        wrote = pool.submit(other_writer)
        report = imported.result(timeout=120)
        wrote.result(timeout=120)
    assert links(gateway) == {("Beauty", "Makeup")}  # the other writer's link, and no loop
    (skipped,) = [p for p in report.problems if (Path(p.file).name, p.line) == ("items.csv", 0)]
    assert skipped.reason.startswith("categories: ") and "loop" in skipped.reason
    assert "would put 'Makeup' under 'Beauty'" in skipped.reason
    assert report.rows_by_step["category → parent"] == 0
    # the import's items are in the tree's categories all the same
    rows = gateway.run_query("MATCH (:Item {id: 's1'})-[:IN_CATEGORY]->(c) RETURN c.id AS c ORDER BY c", {})
    assert rows == [{"c": "Beauty"}, {"c": "Makeup"}]


def _facts(
    category_ids: list[str], item_categories: list[tuple[int, int]], tree: list[tuple[int, int]]
) -> ItemFacts:
    n_items = 1 + max(i for i, _ in item_categories)
    return ItemFacts(
        brand_ids=[],
        item_brand=np.full(n_items, -1, dtype=np.int64),
        category_ids=category_ids,
        item_category_pairs=np.array(item_categories, dtype=np.int64),
        category_parent_pairs=np.array(tree, dtype=np.int64).reshape(-1, 2),
        item_price=np.full(n_items, np.nan, dtype=np.float32),
    )


def test_walking_a_tree_with_a_stored_loop_ends_and_keeps_categories_apart() -> None:
    # Beauty(0) > Makeup(1) > Lips(2), Beauty > Hair(3), plus the loop Beauty under Makeup and a self-loop
    names = ["Beauty", "Makeup", "Lips", "Hair"]
    items = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 3), (2, 3), (3, 1)]
    facts = _facts(names, items, [(1, 0), (2, 1), (3, 0), (0, 1), (3, 3)])
    makeup = np.flatnonzero(facts.category_mask("Makeup")).tolist()
    assert makeup == [0, 3]  # items listed under Makeup or Lips, not the Hair items of Beauty
    assert np.flatnonzero(facts.category_mask("Hair")).tolist() == [1, 2]
    assert np.flatnonzero(facts.category_mask("Lips")).tolist() == [0]
    groups = ItemGroups(facts)
    assert groups.categories[1] == (3,)  # most specific of Beauty and Hair: Hair, its self-loop ignored
    # every item at once (the exploration arms) as item by item (the diversity caps)
    assert groups.categories == {row: ItemGroups(facts).categories_of(row) for row in range(4)}


def test_the_categories_above_an_item_are_those_whose_filter_and_rules_reach_it_a_stored_loop_left_out(
    gateway: GraphGateway,
) -> None:
    # the tree of the test above, stored: Beauty > Makeup > Lips, Beauty > Hair, plus Beauty under
    # Makeup (a loop from before paths were checked) and Hair under itself
    names = ["Beauty", "Makeup", "Lips", "Hair"]
    write_items(
        gateway,
        [
            CatalogueItem(item_id="w1", categories=["Beauty", "Makeup", "Lips"]),
            CatalogueItem(item_id="w2", categories=["Beauty", "Hair"]),
            CatalogueItem(item_id="w3", categories=["Lips"]),  # stored only under the leaf
        ],
    )
    gateway.run_query(
        "MATCH (b:Category {id: 'Beauty'}), (m:Category {id: 'Makeup'}), (h:Category {id: 'Hair'}) "
        "CREATE (b)-[:SUBCATEGORY_OF]->(m), (h)-[:SUBCATEGORY_OF]->(h)",
        {},
    )
    facts = _facts(names, [(0, 0)], [(1, 0), (2, 1), (3, 0), (0, 1), (3, 3)])
    for k, name in enumerate(names):
        reaching = {other for other in names if k in facts.subtree(other)}  # serving's walk
        assert {name, *categories_above(gateway, [name])} == reaching, name
    assert categories_above(gateway, ["Lips"]) == ["Makeup"]  # not Beauty: the loop's links are out
    assert categories_above(gateway, ["Makeup", "Lips"]) == [] and categories_above(gateway, []) == []
    item = read_item(gateway, "w3")
    assert item is not None and (item["categories"], item["categories_above"]) == (["Lips"], ["Makeup"])
