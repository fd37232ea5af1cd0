"""Event ingestion through the gateway: idempotency, decay, out-of-order events, bots, interests,
racing writers."""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from graph_schema.catalogue import Statement
from graph_schema.statements.events import PRUNE_FADED_EDGES, PRUNE_OLD_EVENTS
from graph_schema.statements.privacy import ERASE_USER
from kgrec.config import Settings
from kgrec.erasure import user_hash
from kgrec.events.ingest import (
    EventsRefused,
    IngestResult,
    commit,
    ingest,
    normalised_tag,
    prepare,
    refusals_read_the_graph,
)
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway
from tests.passing_gateway import PassingGateway

DAY = 86_400_000
T0 = 1_760_000_000_000  # a fixed "now" for reproducible decay


def events(*raw: dict[str, Any]) -> list[Any]:
    valid, errors = validate_batch(list(raw), max_skew_s=300, now_ms=T0 + 365 * DAY)
    assert errors == []
    return valid


def edge(gateway: GraphGateway, user: str, item: str) -> dict[str, Any]:
    rows = gateway.run_query(
        "MATCH (:User {id: $u})-[r:INTERACTED]->(:Item {id: $i}) RETURN r", {"u": user, "i": item}
    )
    assert len(rows) == 1
    return rows[0]["r"]["properties"]


def interest(gateway: GraphGateway, user: str, target: str) -> dict[str, Any]:
    rows = gateway.run_query(
        "MATCH (:User {id: $u})-[x:INTERESTED_IN]->(t {id: $t}) RETURN x", {"u": user, "t": target}
    )
    assert len(rows) == 1
    return rows[0]["x"]["properties"]


def ev(
    event_id: str, kind: str, ts: int, user: str = "alice", item_id: str = "lipstick", **extra: Any
) -> dict:
    return {"event_id": event_id, "user_id": user, "item_id": item_id, "type": kind, "ts": ts, **extra}


LIPSTICK = {"brand": "Acme", "category": ["Beauty", "Makeup", "Lips"], "title": "Red lipstick", "price": 9.5}


def test_batch_creates_users_items_brand_categories_and_edges(
    gateway: GraphGateway, settings: Settings
) -> None:
    result = ingest(gateway, events(ev("e1", "view", T0, item=LIPSTICK)), settings, now_ms=T0)
    assert (result.applied, result.duplicates) == (1, 0)
    props = edge(gateway, "alice", "lipstick")
    assert props["n_view"] == 1 and props["n_purchase"] == 0
    assert props["first_ts"] == props["last_ts"] == props["weight_ts"] == T0
    assert math.isclose(props["weight"], 1.0)
    item = gateway.run_query(
        "MATCH (i:Item {id: 'lipstick'})-[:MADE_BY]->(b:Brand) RETURN i.title AS title, i.price AS price, "
        "b.id AS brand",
        {},
    )
    assert item == [{"title": "Red lipstick", "price": 9.5, "brand": "Acme"}]
    tree = gateway.run_query(
        "MATCH (c:Category)-[:SUBCATEGORY_OF]->(p:Category) RETURN c.id AS c, p.id AS p ORDER BY c", {}
    )
    assert [(r["c"], r["p"]) for r in tree] == [("Lips", "Makeup"), ("Makeup", "Beauty")]
    for target in ("Acme", "Beauty", "Makeup", "Lips"):
        assert math.isclose(interest(gateway, "alice", target)["weight"], 1.0)


def test_decay_matches_a_hand_computed_value(gateway: GraphGateway, settings: Settings) -> None:
    # purchase (5) at T0, then a view (1) 7 days later, then a cart (3) 21 days after T0;
    # half-life 14 days: 5 * 2^(-21/14) + 1 * 2^(-14/14) + 3 = 1.76777 + 0.5 + 3 = 5.26777
    ingest(gateway, events(ev("p1", "purchase", T0)), settings)
    ingest(gateway, events(ev("v1", "view", T0 + 7 * DAY)), settings)
    ingest(gateway, events(ev("c1", "cart", T0 + 21 * DAY)), settings)
    props = edge(gateway, "alice", "lipstick")
    expected = 5 * 2 ** (-21 / 14) + 1 * 2 ** (-14 / 14) + 3
    assert math.isclose(props["weight"], expected, rel_tol=1e-9)
    assert props["weight_ts"] == T0 + 21 * DAY
    assert (props["n_purchase"], props["n_view"], props["n_cart"]) == (1, 1, 1)
    # Reading at time t needs no rewrite: two more half-lives later it is worth a quarter.
    at = T0 + 49 * DAY
    value = gateway.run_query(
        "MATCH (:User {id: 'alice'})-[r:INTERACTED]->(:Item {id: 'lipstick'}) "
        "RETURN r.weight * 2 ^ (-($t - r.weight_ts) / $hl) AS w",
        {"t": at, "hl": settings.half_life_ms},
    )[0]["w"]
    assert math.isclose(value, expected / 4, rel_tol=1e-9)


def test_out_of_order_events_give_the_same_result(gateway: GraphGateway, settings: Settings) -> None:
    in_order = [ev("a", "purchase", T0), ev("b", "view", T0 + 7 * DAY), ev("c", "cart", T0 + 21 * DAY)]
    for raw in reversed(in_order):  # newest first, one batch each
        ingest(gateway, events(raw), settings)
    ingest(
        gateway,
        events(*[{**r, "event_id": r["event_id"] + "2", "user_id": "bob"} for r in in_order]),
        settings,
    )
    alice, bob = edge(gateway, "alice", "lipstick"), edge(gateway, "bob", "lipstick")
    expected = 5 * 2 ** (-21 / 14) + 1 * 2 ** (-14 / 14) + 3
    assert math.isclose(alice["weight"], expected, rel_tol=1e-9)
    assert math.isclose(bob["weight"], expected, rel_tol=1e-9)
    assert alice["first_ts"] == bob["first_ts"] == T0
    assert alice["last_ts"] == bob["last_ts"] == alice["weight_ts"] == T0 + 21 * DAY


def test_resending_changes_nothing(gateway: GraphGateway, settings: Settings) -> None:
    batch = events(ev("e1", "purchase", T0), ev("e2", "view", T0 + DAY, item_id="mascara", item=LIPSTICK))
    first = ingest(gateway, batch, settings)
    before = gateway.run_query(
        "MATCH ()-[r]->() RETURN type(r) AS t, count(r) AS n, sum(r.weight) AS w ORDER BY t", {}
    )
    second = ingest(gateway, batch, settings)
    after = gateway.run_query(
        "MATCH ()-[r]->() RETURN type(r) AS t, count(r) AS n, sum(r.weight) AS w ORDER BY t", {}
    )
    assert (first.applied, first.duplicates) == (2, 0)
    assert (second.applied, second.duplicates) == (0, 2)
    assert before == after
    # a retry that mixes old and new events applies only the new one
    mixed = ingest(gateway, events(ev("e1", "purchase", T0), ev("e3", "view", T0 + 2 * DAY)), settings)
    assert (mixed.applied, mixed.duplicates) == (1, 1)
    assert edge(gateway, "alice", "lipstick")["n_view"] == 1


def test_exact_duplicates_inside_a_batch_are_dropped(gateway: GraphGateway, settings: Settings) -> None:
    result = ingest(
        gateway,
        events(ev("x1", "view", T0), ev("x1", "view", T0), ev("x2", "view", T0)),  # x2: same content as x1
        settings,
    )
    assert (result.received, result.applied, result.duplicates) == (3, 1, 2)
    assert edge(gateway, "alice", "lipstick")["n_view"] == 1
    # x2 was recorded too: retrying it alone later is still a duplicate
    retry = ingest(gateway, events(ev("x2", "view", T0)), settings)
    assert (retry.applied, retry.duplicates) == (0, 1)
    # a copy that carries item facts is not an exact duplicate: its facts are written
    facts = ingest(
        gateway,
        events(ev("y1", "view", T0, item_id="new"), ev("y2", "view", T0, item_id="new", item=LIPSTICK)),
        settings,
    )
    assert (facts.applied, facts.duplicates) == (2, 0)
    title = gateway.run_query("MATCH (i:Item {id: 'new'}) RETURN i.title AS t", {})
    assert title == [{"t": "Red lipstick"}]


def test_ratings_keep_the_latest_value(gateway: GraphGateway, settings: Settings) -> None:
    ingest(gateway, events(ev("r2", "rating", T0 + DAY, value=2.0)), settings)
    ingest(gateway, events(ev("r1", "rating", T0, value=5.0)), settings)  # older, arrives later
    props = edge(gateway, "alice", "lipstick")
    assert props["rating"] == 2.0 and props["n_rating"] == 2


def test_bots_are_flagged_without_losing_counts(gateway: GraphGateway, settings: Settings) -> None:
    limit = 5
    strict = replace(settings, bot_events_per_minute=limit)
    burst = [ev(f"b{i}", "view", T0 + i * 1000, user="bot", item_id=f"i{i}") for i in range(limit + 1)]
    calm = [ev(f"c{i}", "view", T0 + i * 60_000, user="human", item_id=f"i{i}") for i in range(limit + 1)]
    ingest(gateway, events(*burst[:3]), strict)  # split over two batches within one minute
    ingest(gateway, events(*burst[3:]), strict)
    ingest(gateway, events(*calm), strict)
    flags = gateway.run_query("MATCH (u:User) RETURN u.id AS id, u.flagged_bot AS bot ORDER BY id", {})
    assert flags == [{"id": "bot", "bot": True}, {"id": "human", "bot": False}]
    kept = gateway.run_query("MATCH (:User {id: 'bot'})-[r:INTERACTED]->() RETURN sum(r.n_view) AS n", {})
    assert kept[0]["n"] == limit + 1


def test_a_minute_split_over_batches_is_counted_whole_when_the_later_batch_goes_on_to_the_next(
    gateway: GraphGateway, settings: Settings
) -> None:
    """The stored minute M holds 3 events; the next batch has 3 more in M and 1 in M+1: M holds 6,
    over the limit of 5, though the counter moves on to M+1."""
    limit = 5
    strict = replace(settings, bot_events_per_minute=limit)
    start = (T0 // 60_000 + 10) * 60_000  # the start of a minute
    early = [ev(f"m{i}", "view", start + i * 1000, user="split", item_id=f"i{i}") for i in range(3)]
    late = [ev(f"n{i}", "view", start + 10_000 + i * 1000, user="split", item_id=f"i{i}") for i in range(3)]
    ingest(gateway, events(*early), strict)
    ingest(gateway, events(*late, ev("next", "view", start + 60_000, user="split", item_id="i9")), strict)
    state = gateway.run_query(
        "MATCH (u:User {id: 'split'}) RETURN u.flagged_bot AS bot, u.rate_minute AS m, u.rate_count AS n", {}
    )
    assert state == [{"bot": True, "m": start // 60_000 + 1, "n": 1}]


def test_a_future_dated_event_does_not_switch_off_bot_flagging(
    gateway: GraphGateway, settings: Settings
) -> None:
    """One event 240 s ahead (within the clock skew allowed) is counted in the server's current
    minute, so the batches that follow in that minute still add up: 1 + 3 × 2 events, over 5."""
    limit = 5
    strict = replace(settings, bot_events_per_minute=limit)
    now = (T0 // 60_000 + 20) * 60_000 + 5_000
    ingest(gateway, events(ev("ahead", "view", now + 240_000, user="skew", item_id="i0")), strict, now_ms=now)
    for b in range(3):
        batch = [ev(f"s{b}{i}", "view", now + b * 1000 + i, user="skew", item_id=f"i{i}") for i in range(2)]
        ingest(gateway, events(*batch), strict, now_ms=now + b * 1000)
    state = gateway.run_query(
        "MATCH (u:User {id: 'skew'}) RETURN u.flagged_bot AS bot, u.rate_minute AS m, u.rate_count AS n", {}
    )
    assert state == [{"bot": True, "m": now // 60_000, "n": 7}]


def test_an_erasure_between_prepare_and_write_leaves_out_events_within_its_margin(
    gateway: GraphGateway, settings: Settings
) -> None:
    """The write's own tombstone check (for an erasure that commits after the ingester read the
    tombstones) has the margin the read has: an event dated a minute after the erasure may come from
    a client clock ahead, so nothing of the user is written."""
    batch = events(ev("late", "view", T0, user="racer"))
    prepared = prepare(gateway, batch, settings, T0)
    assert prepared.result.applied == 1
    gateway.write(ERASE_USER, {"user_id": "racer", "erasure_id": user_hash("racer"), "now": T0 - 60_000})
    commit(gateway, prepared, batch, settings, T0)
    assert gateway.run_query("MATCH (u:User {id: 'racer'}) RETURN u.id AS id", {}) == []
    assert gateway.run_query(
        "MATCH ()-[r:INTERACTED]->(:Item {id: 'lipstick'}) RETURN count(r) AS n", {}
    ) == [{"n": 0}]


def test_an_erasure_takes_off_a_trained_version_what_its_pull_read_by_when_the_graph_received_it(
    gateway: GraphGateway, settings: Settings
) -> None:
    """A full training counts in its popularity the interactions the graph held when it pulled (its
    data_until); erasing a user takes those off, by when the graph received each, not by its events'
    times: a late event dated a day before the pull was never counted, one a client clock ahead
    dated a minute after it was."""
    pulled = T0
    ahead = events(ev("ahead", "view", pulled + 60_000, user="gone", item_id="ahead"))
    ingest(gateway, ahead, settings, now_ms=pulled - 1_000)
    gateway.run_query(
        "MATCH (u:User {id: 'gone'}) CREATE (:ModelVersion {id: 'v-full', active: true, created_at: $c, "
        "data_until: $pulled})-[:EMBEDDING {vector: [1.0]}]->(u)",
        {"c": pulled + 5_000, "pulled": pulled},
    )
    late = events(ev("late", "purchase", pulled - DAY, user="gone", item_id="late"))
    ingest(gateway, late, settings, now_ms=pulled + 60_000)
    gateway.write(ERASE_USER, {"user_id": "gone", "erasure_id": user_hash("gone"), "now": pulled + 120_000})
    adjusted = gateway.run_query(
        "MATCH (:ModelVersion {id: 'v-full'})-[a:POPULARITY_ADJUSTMENT]->(i) RETURN i.id AS id, a.delta AS delta",
        {},
    )
    assert adjusted == [{"id": "ahead", "delta": -1}]


def test_racing_writers_of_overlapping_ids_retry_and_apply_each_event_once(
    gateway: GraphGateway, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Writers that all prepared before any of them wrote: the constraint on Event ids makes all but
    the first conflict, and each prepares again (the retry path of :func:`commit`)."""
    writers, window, step = 4, 20, 5  # every window overlaps every other one
    batches = [
        events(
            *[
                ev(f"race-{k}", "view", T0 + k, user=f"u{k % 3}", item_id=f"item-{k}", item={"brand": "Acme"})
                for k in range(w * step, w * step + window)
            ]
        )
        for w in range(writers)
    ]
    prepared_all = threading.Barrier(writers, timeout=120)

    def write(batch: list[Any]) -> IngestResult:
        prepared = prepare(gateway, batch, settings, T0)
        assert prepared.result.applied == window  # nothing stored yet when every writer looked
        prepared_all.wait()
        return commit(gateway, prepared, batch, settings, T0)

    with caplog.at_level(logging.INFO, logger="kgrec.gateway.base"), ThreadPoolExecutor(writers) as pool:
        results = list(pool.map(write, batches))

    retries = [r for r in caplog.records if r.getMessage().startswith("events: write")]
    assert len(retries) >= writers - 1  # every writer but the first hit the constraint at least once
    distinct = (writers - 1) * step + window
    assert sum(r.applied for r in results) == distinct
    assert [r.received for r in results] == [window] * writers
    assert all(r.applied + r.duplicates == r.received for r in results)
    counters = gateway.run_query(
        "MATCH (:User)-[r:INTERACTED]->(:Item) RETURN count(r) AS n, sum(r.n_view) AS views, "
        "max(r.n_view) AS most, sum(r.weight) AS weight",
        {},
    )
    assert counters[0]["n"] == counters[0]["views"] == distinct and counters[0]["most"] == 1
    assert math.isclose(counters[0]["weight"], distinct)  # one view each, weighed at its own time
    brand = gateway.run_query(
        "MATCH (:User)-[x:INTERESTED_IN]->(:Brand {id: 'Acme'}) RETURN sum(x.count) AS events", {}
    )
    assert brand[0]["events"] == distinct
    assert gateway.run_query("MATCH (e:Event) RETURN count(e) AS n", {})[0]["n"] == distinct


class _RecordedReads(PassingGateway):
    """The test's graph, with the names of the statements read through it."""

    def __init__(self, graph: GraphGateway) -> None:
        super().__init__(graph)
        self.names: list[str] = []

    def _read(self, statement: Statement, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        self.names.append(statement.name)
        return super()._read(statement, params)


def test_an_import_batch_waits_for_the_previous_write_whenever_its_refusals_read_the_graph(
    gateway: GraphGateway, settings: Settings
) -> None:
    """``kgrec events import`` lets a batch be checked while the one before it is written, unless
    :func:`refusals_read_the_graph` says its refusals read the graph: it must say so for every batch
    whose checks (tags on known items, category paths) read it, and, of batches with no duplicate
    or erased event, for no other (each such batch waits for nothing). No batch carries item
    attributes, whose read of known items is no refusal."""
    ingest(gateway, events(ev("setup", "view", T0, item_id="stored", item=LIPSTICK)), settings, T0)
    path = {"category": ["Beauty", "Makeup"]}
    batches = [
        [ev("a1", "view", T0)],
        [ev("a2", "purchase", T0, item={"category": ["Beauty"], "brand": "Acme"})],
        [ev("a3", "view", T0, item=path)],
        [ev("a4", "tag", T0, item_id="stored", tag="red")],  # its item is in the graph
        [ev("a5", "tag", T0, item_id="ghost", tag="red")],  # refused: no such item
        [ev("a6", "view", T0, item_id="new"), ev("a7", "tag", T0, item_id="new", tag="red")],
        [{"event_id": "a8", "user_id": "u", "type": "search", "ts": T0, "query": "red lipstick"}],
        [ev("a9", "review", T0, text="fine"), ev("a10", "cart", T0, item={"category": ["Hair", "Comb"]})],
        [
            ev("a11", "rating", T0, value=4),
            ev("a12", "view", T0 + 1, item={"category": ["Makeup", "Beauty"]}),
        ],
    ]
    for raw in batches:
        batch = events(*raw)
        recorded = _RecordedReads(gateway)
        with contextlib.suppress(EventsRefused):
            prepare(recorded, batch, settings, T0)
        refusal_reads = {"known_items", "category_links_above"} & set(recorded.names)
        assert refusals_read_the_graph(batch) == bool(refusal_reads), (raw, recorded.names)


def test_the_paths_of_duplicate_and_erased_events_are_not_checked_nor_lock_the_tree(
    gateway: GraphGateway, settings: Settings
) -> None:
    """Only the events a batch applies are written, so only their category paths are checked
    against the tree, and only theirs make the write lock it (``tree_ids``); the import's wait
    (:func:`refusals_read_the_graph`, which cannot know which events apply before reading the
    graph) still says True: a safe over-approximation."""
    ingest(gateway, events(ev("seen", "view", T0, item={"category": ["Beauty", "Makeup"]})), settings, T0)
    gateway.write(ERASE_USER, {"user_id": "gone", "erasure_id": user_hash("gone"), "now": T0 + 60_000})
    batch = events(
        ev("seen", "view", T0, item={"category": ["Makeup", "Beauty"]}),  # resent: would loop
        ev("erased", "view", T0, user="gone", item_id="comb", item={"category": ["Hair", "Comb"]}),
        ev("fresh", "view", T0, user="bob"),
    )
    recorded = _RecordedReads(gateway)
    prepared = prepare(recorded, batch, settings, T0)
    assert prepared.result.applied == 1 and prepared.params is not None
    assert "category_links_above" not in recorded.names
    assert (prepared.params["tree_ids"], prepared.params["tree_links"]) == ([], [])
    assert refusals_read_the_graph(batch)


def test_pruning_removes_faded_edges_only(gateway: GraphGateway, settings: Settings) -> None:
    received = T0 + 200 * DAY
    ingest(
        gateway,
        events(
            ev("old-view", "view", T0, item_id="old"),
            ev("old-buy", "purchase", T0, item_id="kept"),
            ev("new-view", "view", T0 + 200 * DAY, item_id="new"),
        ),
        settings,
        now_ms=received,
    )
    now = T0 + 200 * DAY  # 200 days = 14+ half-lives: the old view is worth < 0.01
    pruned = gateway.write(
        PRUNE_FADED_EDGES,
        {"now": now, "half_life_ms": settings.half_life_ms, "threshold": 0.01, "limit": 1000},
    )
    assert pruned.relationships_deleted == 1  # the old view; the old purchase is history
    left = gateway.run_query("MATCH (:User)-[:INTERACTED]->(i:Item) RETURN i.id AS id ORDER BY id", {})
    assert [r["id"] for r in left] == ["kept", "new"]
    # Ids received exactly at the cut-off are kept; one millisecond later they go.
    assert gateway.write(PRUNE_OLD_EVENTS, {"before": received, "limit": 1000}).nodes_deleted == 0
    assert gateway.run_query("MATCH (e:Event) RETURN count(e) AS n", {})[0]["n"] == 3
    assert gateway.write(PRUNE_OLD_EVENTS, {"before": received + 1, "limit": 1000}).nodes_deleted == 3
    assert gateway.run_query("MATCH (e:Event) RETURN count(e) AS n", {})[0]["n"] == 0


@pytest.mark.parametrize(
    ("raw", "field", "fragment"),
    [
        ({"user_id": "u", "item_id": "i", "type": "view", "ts": T0}, "event_id", "required"),
        ({"event_id": "e", "user_id": "", "item_id": "i", "type": "view", "ts": T0}, "user_id", "empty"),
        ({"event_id": "e", "user_id": "u", "item_id": 7, "type": "view", "ts": T0}, "item_id", "string"),
        ({"event_id": "e", "user_id": "u", "item_id": "i", "type": "stare", "ts": T0}, "type", "stare"),
        ({"event_id": "e", "user_id": "u", "item_id": "i", "type": "view"}, "ts", "required"),
        (
            {"event_id": "e", "user_id": "u", "item_id": "i", "type": "view", "ts": T0 + 3600_000},
            "ts",
            "future",
        ),
        ({"event_id": "e", "user_id": "u", "item_id": "i", "type": "view", "ts": "soon"}, "ts", "RFC 3339"),
        (
            {
                "event_id": "e",
                "user_id": "u",
                "item_id": "i",
                "type": "view",
                "ts": T0,
                "item": {"category": []},
            },
            "item.category",
            "must list 1 to 10 categories (got 0)",
        ),
        (
            {"event_id": "e", "user_id": "u", "item_id": "i", "type": "view", "ts": T0}
            | {"item": {"category": [f"c{k}" for k in range(11)]}},
            "item.category",
            "must list 1 to 10 categories (got 11)",
        ),
        (
            {
                "event_id": "e",
                "user_id": "u",
                "item_id": "i",
                "type": "rating",
                "ts": T0,
                "value": float("nan"),
            },
            "value",
            "finite",
        ),
        (
            {
                "event_id": "e",
                "user_id": "u",
                "item_id": "i",
                "type": "view",
                "ts": T0,
                "item": {"price": -1},
            },
            "item.price",
            "negative",
        ),
        (
            {"event_id": "e", "user_id": "u", "item_id": "i", "type": "view", "ts": T0, "color": "red"},
            "color",
            "not a known",
        ),
        ({"event_id": "e", "user_id": "u" * 300, "item_id": "i", "type": "view", "ts": T0}, "user_id", "300"),
    ],
)
def test_validation_names_field_and_reason(raw: dict, field: str, fragment: str) -> None:
    _, errors = validate_batch([raw], max_skew_s=300, now_ms=T0)
    assert [(e.index, e.field) for e in errors] == [(0, field)]
    assert fragment in errors[0].reason


def test_a_resend_whose_value_is_written_another_way_has_the_same_content_hash() -> None:
    # -0.0 and 0 are one value (as the key's tuples compare), so a resend writing either is a
    # duplicate, not a conflicting reuse of its id; before, their JSON differed ("-0.0" vs "0.0").
    base = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "purchase", "ts": 1_700_000_000_000}
    hashes = {repr(value): events({**base, "value": value})[0].content_hash() for value in (0, 0.0, -0.0, -0)}
    assert len(set(hashes.values())) == 1, hashes
    assert (
        events({**base, "value": 1000})[0].content_hash()
        == events({**base, "value": 1000.0})[0].content_hash()
    )
    assert events({**base, "value": 1})[0].content_hash() != hashes["0"]


def test_a_tag_typed_composed_or_decomposed_is_one_tag() -> None:
    assert normalised_tag("Cafe\u0301") == normalised_tag("Caf\u00e9") == "caf\u00e9"
    # a soft hyphen or a word joiner marks no break: one word, as shown; a zero-width space is a break
    assert (
        normalised_tag("Co\u00adop") == normalised_tag("co\u2060op") == normalised_tag("co\ufeffop") == "coop"
    )
    assert normalised_tag("dark\u200bcomedy") == "dark comedy"
