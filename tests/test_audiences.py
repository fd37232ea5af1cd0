"""Audiences over real HTTP on a real graph: each page, the cursor walk and the CSV export agree with
a Cypher count and a ranking computed here from the raw edges; bad conditions are refused by name."""

from __future__ import annotations

import base64
import csv
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import requests

from app.audiences import csv_cell
from kgrec.audiences import EXPORT_MAX_PAGES, EXPORT_PAGE, Audience, export_page_size, iter_audience
from kgrec.config import Settings
from kgrec.gateway import GraphGateway
from tests.processes import ApiProcess
from tests.subsets import beauty_graph

KEY = "audience-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
DAY_MS = 86_400_000
TARGET_EDGES = {"brand": ("Brand", "INTERESTED_IN"), "category": ("Category", "INTERESTED_IN")}


@dataclass
class Graph:
    api: ApiProcess
    gateway: GraphGateway
    settings: Settings

    def get(self, **params: Any) -> requests.Response:
        return requests.get(f"{self.api.url}/v1/audiences", params=params, timeout=30)

    def cypher(self, query: str, **params: Any) -> list[dict[str, Any]]:
        return self.gateway.run_query(query, params)


@pytest.fixture(scope="module")
def graph(
    settings: Settings, graph_server: object, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Graph]:
    if not settings.embedded:
        pytest.skip("runs its own API on the embedded graph")
    tmp = tmp_path_factory.mktemp("audiences")
    local, gateway = beauty_graph(settings, shared_data, tmp, users=400, prefix="audiences")
    api = ApiProcess(
        {"KGREC_DATA_DIR": str(local.data_dir), "KGREC_GRAPH": local.graph_name, "KGREC_API_KEYS": KEY},
        log=tmp / "api.log",
    ).start()
    try:
        yield Graph(api, gateway, local)
    finally:
        api.stop()
        gateway.close()


def biggest(graph: Graph, kind: str) -> str:
    """The brand or category with the most interested users."""
    label, _ = TARGET_EDGES[kind]
    return graph.cypher(
        f"MATCH (t:{label})<-[:INTERESTED_IN]-(u:User) WITH t, count(u) AS n "
        "RETURN t.id AS id ORDER BY n DESC, id LIMIT 1"
    )[0]["id"]


def expected(
    graph: Graph, kind: str, target: str, now: int, min_weight: float = 0.0
) -> list[tuple[str, float]]:
    """The audience computed here from the raw edges: decayed weights, strongest first, ties by id."""
    label, rel = TARGET_EDGES.get(kind, ("Item", "INTERACTED"))
    rows = graph.cypher(
        f"MATCH (t:{label} {{id: $target}})<-[x:{rel}]-(u:User) "
        "WHERE coalesce(u.flagged_bot, false) = false "
        "RETURN u.id AS user_id, x.weight AS weight, x.weight_ts AS weight_ts",
        target=target,
    )
    half_life = graph.settings.half_life_ms
    decayed = [(r["user_id"], r["weight"] * 2.0 ** (-(now - r["weight_ts"]) / half_life)) for r in rows]
    kept = [(user, weight) for user, weight in decayed if weight >= min_weight]
    return sorted(kept, key=lambda pair: (-int(pair[1] * 1_000_000), pair[0]))


def walk(graph: Graph, limit: int, **conditions: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every page of one audience by its cursors: (pages, members in order)."""
    pages, members, cursor = [], [], ""
    while True:
        response = graph.get(**conditions, limit=limit, cursor=cursor)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        members.extend(page["users"])
        cursor = page["next_cursor"]
        if not cursor:
            return pages, members


@pytest.mark.parametrize("kind", ["brand", "category"])
def test_every_page_of_an_audience_matches_the_ranking_of_the_raw_edges(graph: Graph, kind: str) -> None:
    target = biggest(graph, kind)
    pages, members = walk(graph, 7, **{kind: target})
    truth = expected(graph, kind, target, pages[0]["as_of"])
    assert len(truth) > 14  # several pages
    assert [m["user_id"] for m in members] == [user for user, _ in truth]
    assert [m["weight"] for m in members] == pytest.approx([w for _, w in truth], rel=1e-5)
    assert all(page["size"] == len(truth) and page[kind] == target for page in pages)
    assert {page["as_of"] for page in pages} == {pages[0]["as_of"]}  # one instant for every page
    (count,) = graph.cypher(
        f"MATCH (:{TARGET_EDGES[kind][0]} {{id: $t}})<-[:INTERESTED_IN]-(u:User) RETURN count(u) AS n",
        t=target,
    )
    assert count["n"] == len(members)


def test_an_item_audience_ranks_the_users_who_interacted_with_it(graph: Graph) -> None:
    item = graph.cypher(
        "MATCH (i:Item)<-[:INTERACTED]-(u:User) WITH i, count(u) AS n RETURN i.id AS id ORDER BY n DESC, id LIMIT 1"
    )[0]["id"]
    pages, members = walk(graph, 3, item=item)
    assert [m["user_id"] for m in members] == [u for u, _ in expected(graph, "item", item, pages[0]["as_of"])]
    assert all(m["events"] >= 1 for m in members)


def test_min_weight_keeps_only_the_users_above_it(graph: Graph) -> None:
    target = biggest(graph, "brand")
    everyone = graph.get(brand=target, limit=1000).json()
    weights = sorted({m["weight"] for m in everyone["users"]})
    threshold = weights[len(weights) // 2]
    page = graph.get(brand=target, limit=1000, min_weight=threshold).json()
    truth = expected(graph, "brand", target, page["as_of"], min_weight=threshold)
    assert 0 < page["size"] == len(truth) < everyone["size"]
    assert all(m["weight"] >= threshold for m in page["users"])


def test_active_within_days_keeps_the_users_with_a_recent_event_on_the_target(graph: Graph) -> None:
    brand = biggest(graph, "brand")
    item = graph.cypher("MATCH (i:Item)-[:MADE_BY]->(:Brand {id: $b}) RETURN i.id AS id LIMIT 1", b=brand)[0][
        "id"
    ]
    now = int(time.time() * 1000)
    fresh = ["aud-fresh-1", "aud-fresh-2"]
    events = [
        {"event_id": f"aud-{user}", "user_id": user, "item_id": item, "type": "purchase", "ts": now}
        for user in fresh
    ]
    response = requests.post(f"{graph.api.url}/v1/events", json=events, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    recent = graph.get(brand=brand, active_within_days=1, limit=1000).json()
    (count,) = graph.cypher(
        "MATCH (:Brand {id: $b})<-[x:INTERESTED_IN]-(u:User) WHERE x.last_ts >= $since RETURN count(u) AS n",
        b=brand,
        since=recent["as_of"] - DAY_MS,
    )
    assert set(fresh) <= {m["user_id"] for m in recent["users"]}
    assert recent["size"] == count["n"] < graph.get(brand=brand, limit=1).json()["size"]


def test_a_flagged_bot_is_never_part_of_an_audience(graph: Graph) -> None:
    brand = biggest(graph, "brand")
    first = graph.get(brand=brand, limit=1).json()["users"][0]["user_id"]
    graph.cypher("MATCH (u:User {id: $u}) SET u.flagged_bot = true", u=first)
    try:
        page = graph.get(brand=brand, limit=1000).json()
        assert first not in {m["user_id"] for m in page["users"]}
    finally:
        graph.cypher("MATCH (u:User {id: $u}) SET u.flagged_bot = false", u=first)


def test_export_streams_the_whole_audience_as_csv_in_ranking_order(graph: Graph) -> None:
    brand = biggest(graph, "brand")
    url = f"{graph.api.url}/v1/audiences/export"
    assert requests.post(url, json={"brand": brand}, timeout=30).status_code == 401
    response = requests.post(url, json={"brand": brand}, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == ["user_id", "weight", "events", "last_ts"]
    _, members = walk(graph, 1000, brand=brand)
    assert [r["user_id"] for r in rows] == [m["user_id"] for m in members]


def test_an_export_cell_that_opens_like_a_formula_is_quoted() -> None:
    # OWASP "CSV injection": a spreadsheet would run these
    for text in ("=cmd|' /C calc'!A0", '=HYPERLINK("http://evil","x")', "+1+2", "-2+3", "@SUM(1)", "\tx"):
        assert csv_cell(text) == "'" + text
    assert [csv_cell(v) for v in ("u0001", "a=b", 2.5, -1, None)] == ["u0001", "a=b", 2.5, -1, ""]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "brand"),
        ({"brand": "x", "category": "y"}, "brand"),
        ({"brand": "x", "min_weight": "-1"}, "min_weight"),
        ({"brand": "x", "min_weight": "nan"}, "min_weight"),
        ({"brand": "x", "limit": "0"}, "limit"),
        ({"brand": "x", "active_within_days": "0"}, "active_within_days"),
        ({"brand": "x", "cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_bad_conditions_are_refused_naming_the_field(
    graph: Graph, params: dict[str, str], field: str
) -> None:
    response = graph.get(**params)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({}, "brand: give exactly one of brand, category, topic, item (got 0)"),
        (
            {"brand": "x", "category": "y"},
            "brand='x': give exactly one of brand, category, topic, item (got 2: brand, category)",
        ),
        (
            {"brand": "x", "min_weight": "nan"},
            "min_weight must be a number as JSON writes it (like 9.99 or 1e3: no '+', space, '_', inf or "
            "nan), not 'nan'",
        ),
    ],
)
def test_a_refused_audience_says_what_was_given(graph: Graph, params: dict[str, str], detail: str) -> None:
    assert graph.get(**params).json()["detail"] == detail


def test_a_cursor_of_another_audience_is_refused(graph: Graph) -> None:
    brand, category = biggest(graph, "brand"), biggest(graph, "category")
    cursor = graph.get(brand=brand, limit=2).json()["next_cursor"]
    response = graph.get(category=category, limit=2, cursor=cursor)
    assert response.status_code == 400 and response.json()["field"] == "cursor"
    # a cursor made by hand for this audience, with a time no graph engine can take (2**63 or more)
    forged = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    # ... or with a size no count gives
    for bad in ({"now": 10**20}, {"now": float("inf")}, {"size": -1}, {"size": 2**63}):
        made = base64.urlsafe_b64encode(json.dumps({**forged, **bad}).encode()).decode()
        response = graph.get(brand=brand, limit=2, cursor=made)
        assert response.status_code == 400 and response.json()["field"] == "cursor"
    response = requests.post(
        f"{graph.api.url}/v1/audiences/export", json={"brand": brand, "limit": 5}, headers=AUTH, timeout=30
    )
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["limit"]


def test_a_walk_passes_users_whose_ids_are_long_quotes_or_outside_ascii(graph: Graph) -> None:
    """The cursor carries the last user's id: one of 256 quotes, CJK or astral characters still makes
    a cursor the query takes (it was refused as longer than 512 characters, ending the walk)."""
    item = "aud-long-ids-item"
    users = ['"' * 256, "\u4e00" * 256, "\U0001d518" * 256, "\\" * 256, "aud-plain"]
    now = int(time.time() * 1000)
    events = [
        {"event_id": f"aud-long-{n}", "user_id": user, "item_id": item, "type": "purchase", "ts": now - n}
        for n, user in enumerate(users)
    ]
    response = requests.post(f"{graph.api.url}/v1/events", json=events, headers=AUTH, timeout=30)
    assert response.status_code == 200, response.text
    pages, members = walk(graph, 1, item=item)
    assert sorted(m["user_id"] for m in members) == sorted(users)
    assert len(pages) == len(users) + 1  # a full last page has a cursor to an empty one


def test_a_later_page_answers_the_size_the_first_page_counted(graph: Graph) -> None:
    """Only the first page counts the audience; its cursor carries the count on, so a user who joins
    during the walk changes neither the walk's size nor costs a later page a second read."""
    item = "aud-size-item"
    now = int(time.time() * 1000)

    def buy(*users: str) -> None:
        events = [
            {"event_id": f"aud-size-{user}", "user_id": user, "item_id": item, "type": "purchase", "ts": now}
            for user in users
        ]
        response = requests.post(f"{graph.api.url}/v1/events", json=events, headers=AUTH, timeout=30)
        assert response.status_code == 200, response.text

    buy("aud-size-a", "aud-size-b", "aud-size-c")
    first = graph.get(item=item, limit=2).json()
    assert first["size"] == 3
    buy("aud-size-d")
    assert graph.get(item=item, limit=2, cursor=first["next_cursor"]).json()["size"] == 3  # a recount: 4
    assert graph.get(item=item, limit=2).json()["size"] == 4  # a new walk counts afresh
    # a cursor from before cursors carried the size still works, and its page counts
    state = json.loads(
        base64.urlsafe_b64decode(first["next_cursor"] + "=" * (-len(first["next_cursor"]) % 4))
    )
    del state["size"]
    older = base64.urlsafe_b64encode(json.dumps(state).encode()).decode()
    assert graph.get(item=item, limit=2, cursor=older).json()["size"] == 4


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"brand": " x"}, "must not start or end with white space (got ' x')"),
        ({"brand": 1}, "must be a string, not int"),
    ],
)
def test_an_export_refusal_gives_the_id_rule(graph: Graph, body: dict, reason: str) -> None:
    response = requests.post(f"{graph.api.url}/v1/audiences/export", json=body, headers=AUTH, timeout=30)
    assert response.status_code == 422, response.text
    assert [(e["field"], e["reason"]) for e in response.json()["errors"]] == [("brand", reason)]


def test_an_export_takes_at_most_its_page_cap_and_never_pages_below_the_smallest() -> None:
    assert export_page_size(0) == EXPORT_PAGE
    assert export_page_size(EXPORT_PAGE * EXPORT_MAX_PAGES) == EXPORT_PAGE
    for size in (EXPORT_PAGE * EXPORT_MAX_PAGES + 1, 400_000, 1_234_567):
        page = export_page_size(size)
        assert page > EXPORT_PAGE and -(-size // page) <= EXPORT_MAX_PAGES


def test_an_export_in_small_pages_yields_every_member_once_strongest_first(graph: Graph) -> None:
    # the default page holds this whole audience; pages of 7 cross many rank ties and cursors
    audience = Audience.from_conditions({"category": biggest(graph, "category")})
    whole = list(iter_audience(graph.gateway, graph.settings, audience))
    paged = list(iter_audience(graph.gateway, graph.settings, audience, page=7))
    assert len(whole) > 7 * 3
    # each export ranks at its own instant, so members a millionth apart may swap: compare as sets
    assert len(paged) == len(whole) == len({m["user_id"] for m in paged})
    assert {m["user_id"] for m in paged} == {m["user_id"] for m in whole}
    weights = [m["weight"] for m in paged]
    assert all(a >= b - 1e-6 for a, b in pairwise(weights))
