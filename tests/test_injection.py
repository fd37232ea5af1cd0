"""Hostile ids and parameters change nothing and read nothing beyond the intended result.

Every endpoint and both importers get the corpus. Reads must leave the graph
exactly as it was and answer as for any unknown id; writes must store the
hostile string verbatim as an id and touch nothing else.
"""

from __future__ import annotations

import csv
import gzip
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.erasure import user_hash
from kgrec.events.bulk import import_events
from kgrec.events.ingest import normalised_tag
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.importer import import_dataset
from tests.conftest import SMALL_API_KEY
from tests.processes import ApiProcess

HOSTILE = [
    "x' }) DETACH DELETE n //",
    "x\\' }) MATCH (n) DETACH DELETE n //",
    '"}) MATCH (n) SET n.id = "pwned" //',
    "`User`) DETACH DELETE (n",
    "$user_id",
    "{id: $item_id}",
    "\\u0027 OR 1=1 //",
    "' UNION MATCH (n) RETURN n //",
    "*/ MATCH (n) DELETE n /*",
    "ünïcödé 😀 rtl",
]


def fingerprint(gateway: GraphGateway) -> dict[str, int]:
    """Node and relationship counts, and a checksum of every node id; erasures' tombstones aside
    (an erasure leaves one, checked where a test erases)."""
    nodes = gateway.run_query("MATCH (n) WHERE NOT n:Erasure RETURN count(n) AS n", {})[0]["n"]
    rels = gateway.run_query("MATCH ()-[r]->() RETURN count(r) AS n", {})[0]["n"]
    ids = gateway.run_query("MATCH (n) WHERE n.id IS NOT NULL AND NOT n:Erasure RETURN n.id AS id", {})
    return {"nodes": nodes, "relationships": rels, "ids": hash(tuple(sorted(str(r["id"]) for r in ids)))}


@pytest.fixture(scope="module")
def target(small_api: ApiProcess, settings: Settings) -> tuple[ApiProcess, GraphGateway]:
    graph_name = small_api.graph_name  # type: ignore[attr-defined]
    gateway = open_gateway(settings.with_overrides(graph_name=graph_name), graph_name=graph_name)
    return small_api, gateway


def get(api: ApiProcess, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{api.url}{path}", params=params, timeout=30)


def refused_event(api: ApiProcess, event: dict[str, Any]) -> requests.Response:
    """POST ``event`` alone with a writing key; asserts the 422 and returns the answer."""
    response = requests.post(
        f"{api.url}/v1/events", json=[event], headers={"Authorization": f"Bearer {SMALL_API_KEY}"}, timeout=30
    )
    assert response.status_code == 422, response.text
    return response


def an_event(event_id: str) -> dict[str, Any]:
    """A valid view event of now, whose fields a test replaces one at a time."""
    return {
        "event_id": event_id,
        "user_id": "u",
        "item_id": "i",
        "type": "view",
        "ts": int(time.time() * 1000),
    }


@pytest.mark.parametrize("hostile", HOSTILE)
def test_read_endpoints_change_nothing_and_answer_as_for_an_unknown_id(
    target: tuple[ApiProcess, GraphGateway], hostile: str
) -> None:
    api, gateway = target
    before = fingerprint(gateway)
    known_user = gateway.run_query(
        "MATCH (u:User)-[:INTERACTED]->() RETURN u.id AS id ORDER BY id LIMIT 1", {}
    )
    known_item = gateway.run_query("MATCH (i:Item {listed: true}) RETURN i.id AS id ORDER BY id LIMIT 1", {})
    user, item, h = known_user[0]["id"], known_item[0]["id"], quote(hostile, safe="")

    cold = get(api, f"/v1/users/{h}/recommendations", k=5)
    assert cold.status_code == 200 and cold.json()["cold_start"] is True and cold.json()["user_id"] == hostile
    # the impression keeps the id verbatim; hostile ids as impression or experiment ids are unknown ones
    assert get(api, f"/v1/impressions/{cold.json()['recommendation_id']}").json()["user_id"] == hostile
    assert get(api, f"/v1/impressions/{h}").status_code == 404
    assert get(api, f"/v1/experiments/{h}").status_code == 404
    unlisted = get(api, "/v1/experiments", status=hostile)
    assert unlisted.status_code == 400 and unlisted.json()["field"] == "status"
    filtered = get(api, f"/v1/users/{quote(user, safe='')}/recommendations", brand=hostile, category=hostile)
    assert filtered.status_code == 200 and filtered.json()["items"] == []
    assert get(api, f"/v1/users/{h}/interests").json() == {
        "user_id": hostile,
        "brands": [],
        "categories": [],
        "topics": [],
    }
    unknown_topic = get(api, f"/v1/topics/{h}")
    assert unknown_topic.status_code == 404 and unknown_topic.json()["field"] == "topic_id"
    assert get(api, "/v1/topics", q=hostile).status_code == 200
    assert get(api, f"/v1/items/{h}/similar").status_code == 404
    missing = get(api, f"/v1/users/{quote(user, safe='')}/recommendations/{h}/explanation")
    assert missing.status_code == 404 and missing.json()["field"] == "item_id"
    stranger = get(api, f"/v1/users/{h}/recommendations/{quote(item, safe='')}/explanation")
    assert stranger.status_code == 200 and stranger.json()["paths"] == []
    job = get(api, f"/v1/jobs/{h}")  # no job was queued under it
    assert job.status_code == 404 and job.json()["field"] == "job_id"
    # The cold answer's impression is all that is kept under that id: erasing it is a 200, then a 404.
    erased = requests.delete(
        f"{api.url}/v1/users/{h}", headers={"Authorization": f"Bearer {SMALL_API_KEY}"}, timeout=30
    )
    assert erased.status_code == 200 and erased.json()["removed"]["impressions"] >= 1, erased.text
    assert get(api, f"/v1/impressions/{cold.json()['recommendation_id']}").status_code == 404
    again = requests.delete(
        f"{api.url}/v1/users/{h}", headers={"Authorization": f"Bearer {SMALL_API_KEY}"}, timeout=30
    )
    assert again.status_code == 404
    # What it leaves in the graph is the tombstone, named by the id's hash, not the id.
    tombstones = gateway.run_query(
        "MATCH (g:Erasure) WHERE g.id IN $ids RETURN g.id AS id", {"ids": [hostile, user_hash(hostile)]}
    )
    assert tombstones == [{"id": user_hash(hostile)}]
    assert get(api, f"/v1/items/{h}").status_code == 404
    delisted = requests.delete(
        f"{api.url}/v1/items/{h}", headers={"Authorization": f"Bearer {SMALL_API_KEY}"}, timeout=30
    )
    assert delisted.status_code == 404 and delisted.json()["field"] == "item_id"
    unruled = requests.delete(
        f"{api.url}/v1/rules/{h}", headers={"Authorization": f"Bearer {SMALL_API_KEY}"}, timeout=30
    )
    assert unruled.status_code == 404 and unruled.json()["field"] == "rule_id"
    unpromoted = requests.post(
        f"{api.url}/v1/models/{h}/promote", headers={"Authorization": f"Bearer {SMALL_API_KEY}"}, timeout=30
    )
    assert unpromoted.status_code == 404 and unpromoted.json()["field"] == "version"
    for kind in ("brand", "category", "topic", "item"):
        audience = get(api, "/v1/audiences", **{kind: hostile})
        assert audience.status_code == 200 and (audience.json()["size"], audience.json()["users"]) == (0, [])
    exported = requests.post(
        f"{api.url}/v1/audiences/export",
        json={"brand": hostile},
        headers={"Authorization": f"Bearer {SMALL_API_KEY}"},
        timeout=30,
    )
    assert exported.status_code == 200 and exported.text == "user_id,weight,events,last_ts\n"
    searched = get(api, "/v1/search", q=hostile)
    # Searched as plain text: only nodes whose id or name holds the string itself (the other
    # tests store hostile ids verbatim) are found, never the rest of the graph.
    assert searched.status_code == 200 and searched.json()["query"] == hostile
    found = searched.json()["results"]
    assert all(hostile.lower() in f"{r['id']} {r['name']}".lower() for r in found), found
    assert get(api, f"/v1/users/{h}/timeline").json() == {"user_id": hostile, "events": []}
    hood = get(api, f"/v1/items/{h}/neighbourhood")
    assert hood.status_code == 404 and hood.json()["field"] == "item_id"
    assert fingerprint(gateway) == before


def test_events_store_hostile_ids_verbatim_and_touch_nothing_else(
    target: tuple[ApiProcess, GraphGateway],
) -> None:
    api, gateway = target
    before = fingerprint(gateway)
    now = int(time.time() * 1000)
    events = [
        {
            "event_id": f"inj-{k}-{value}",
            "user_id": f"u {value}",
            "item_id": f"i {value}",
            "type": "purchase",
            "ts": now,
            "item": {"brand": f"b {value}", "category": [f"c {value}"], "title": value},
        }
        for k, value in enumerate(HOSTILE)
    ]
    posted = requests.post(
        f"{api.url}/v1/events", json=events, headers={"Authorization": f"Bearer {SMALL_API_KEY}"}, timeout=30
    )
    assert posted.status_code == 200 and posted.json()["applied"] == len(HOSTILE)
    after = fingerprint(gateway)
    # per event: an Event, a User, an Item, a Brand and a Category node; INTERACTED, MADE_BY,
    # IN_CATEGORY and two INTERESTED_IN relationships; and the catalogue's revision node, which the
    # batch's new item facts bump (created by the first write that does)
    revision = gateway.run_query("MATCH (r:Revision {id: 'catalogue'}) RETURN r.created_at AS at", {})
    assert len(revision) == 1
    assert after["nodes"] == before["nodes"] + 5 * len(HOSTILE) + (1 if revision[0]["at"] >= now else 0)
    assert after["relationships"] == before["relationships"] + 5 * len(HOSTILE)
    for value in HOSTILE:
        stored = gateway.run_query(
            "MATCH (u:User {id: $u})-[:INTERACTED]->(i:Item {id: $i})-[:MADE_BY]->(b:Brand {id: $b}) "
            "RETURN i.title AS title",
            {"u": f"u {value}", "i": f"i {value}", "b": f"b {value}"},
        )
        assert stored == [{"title": value}]
    # and reading them back through the API returns exactly those ids
    user = quote(f"u {HOSTILE[0]}", safe="")
    interests = requests.get(f"{api.url}/v1/users/{user}/interests", timeout=30).json()
    assert [b["id"] for b in interests["brands"]] == [f"b {HOSTILE[0]}"]
    # language: a hostile tag is stored as its normalised id (lower case, NFC, words split at
    # invisible characters, joined by single spaces), a hostile
    # query and review text are only embedded and matched
    language = [
        {"event_id": f"inj-tag-{k}", "user_id": f"u {value}", "item_id": f"i {value}", "type": "tag"}
        | {"ts": now, "tag": value}
        for k, value in enumerate(HOSTILE)
    ] + [
        {"event_id": f"inj-q-{k}", "user_id": f"u {value}", "type": "search", "ts": now, "query": value}
        for k, value in enumerate(HOSTILE)
    ]
    auth = {"Authorization": f"Bearer {SMALL_API_KEY}"}
    posted = requests.post(f"{api.url}/v1/events", json=language, headers=auth, timeout=60)
    assert posted.status_code == 200 and posted.json()["applied"] == 2 * len(HOSTILE)
    for value in HOSTILE:
        tagged = gateway.run_query(
            "MATCH (:Item {id: $i})-[r:TAGGED]->(t:Tag) RETURN t.id AS tag, r.count AS n", {"i": f"i {value}"}
        )
        assert tagged == [{"tag": normalised_tag(value), "n": 1}]


@pytest.mark.parametrize("padded", ["a ", " a", "a\u00a0", "\u2003a"])
def test_ids_with_white_space_at_either_end_are_refused_and_the_graph_stays_up(
    target: tuple[ApiProcess, GraphGateway], padded: str
) -> None:
    """FalkorDB 4.16.3 crashes on MERGE of a uniquely-constrained id ending in white space: refuse them."""
    api, gateway = target
    before = fingerprint(gateway)
    auth = {"Authorization": f"Bearer {SMALL_API_KEY}"}
    event = an_event("pad")
    for body in (
        {**event, "user_id": padded},
        {**event, "item": {"brand": padded}},
        {**event, "item": {"attributes": {"colour": [padded]}}},
    ):
        response = refused_event(api, body)
        assert "white space" in response.text, response.text
    response = requests.put(f"{api.url}/v1/items/ok-item", json={"brand": padded}, headers=auth, timeout=30)
    assert response.status_code == 422, response.text
    # FalkorDB reads the query and its parameters as one C string: a NUL in a text would cut it short
    refused_event(api, {**event, "item": {"title": "a\u0000b"}})
    response = requests.put(
        f"{api.url}/v1/items/ok-item", json={"title": "a\u0000b"}, headers=auth, timeout=30
    )
    assert response.status_code == 422, response.text
    assert fingerprint(gateway) == before  # refused whole, and the server still answers


# Ids that look the same as, or address the same URL as, another id: refused by the one id rule.
LOOKALIKES = {
    "\ufeffu1": "U+FEFF",
    "u1\u200b": "U+200B",
    "a\u202erl": "U+202E",
    "cafe\u0301": "NFC",
    ".": "'..'",
    "..": "'..'",
}


@pytest.mark.parametrize("lookalike", list(LOOKALIKES))
def test_lookalike_ids_are_refused_by_events_catalogue_paths_filters_and_importers(
    target: tuple[ApiProcess, GraphGateway], settings: Settings, tmp_path: Path, lookalike: str
) -> None:
    api, gateway = target
    auth = {"Authorization": f"Bearer {SMALL_API_KEY}"}
    # every byte escaped in a path, so that no client collapses "." or ".."
    escaped = "".join(f"%{byte:02X}" for byte in lookalike.encode())
    # Before the fingerprint, since a first delisting may write the catalogue's revision: a user
    # stored under such an id before the rule refused it can still be erased
    gateway.run_query("CREATE (:User {id: $id})", {"id": lookalike})
    erased = requests.delete(f"{api.url}/v1/users/{escaped}", headers=auth, timeout=30)
    assert erased.status_code == 200 and erased.json()["erased"] is True, erased.text
    assert gateway.run_query("MATCH (u:User {id: $id}) RETURN u.id AS id", {"id": lookalike}) == []
    gateway.run_query("MATCH (g:Erasure {id: $id}) DELETE g", {"id": user_hash(lookalike)})
    # and an item stored so can still be delisted (rules' deletion takes stored ids the same way)
    gateway.run_query("CREATE (:Item {id: $id})", {"id": lookalike})
    delisted = requests.delete(f"{api.url}/v1/items/{escaped}", headers=auth, timeout=30)
    assert delisted.status_code == 200 and delisted.json()["item_id"] == lookalike, delisted.text
    gateway.run_query("MATCH (i:Item {id: $id}) DETACH DELETE i", {"id": lookalike})
    before = fingerprint(gateway)
    event = an_event("look")
    now = event["ts"]
    for field in ("event_id", "user_id", "item_id"):
        response = refused_event(api, {**event, field: lookalike})
        assert LOOKALIKES[lookalike] in response.text, response.text
    response = requests.put(
        f"{api.url}/v1/items/ok-item", json={"brand": lookalike}, headers=auth, timeout=30
    )
    assert response.status_code == 422 and LOOKALIKES[lookalike] in response.text, response.text
    response = requests.post(
        f"{api.url}/v1/items", json=[{"item_id": lookalike, "title": "t"}], headers=auth, timeout=30
    )
    assert response.status_code == 422 and LOOKALIKES[lookalike] in response.text, response.text
    assert fingerprint(gateway) == before
    # in a path (every byte escaped) and in a filter
    response = requests.get(f"{api.url}/v1/users/{escaped}/interests", timeout=30)
    assert response.status_code == 400 and LOOKALIKES[lookalike] in response.text, response.text
    response = get(api, "/v1/users/u/recommendations", brand=lookalike)
    assert response.status_code == 400 and LOOKALIKES[lookalike] in response.text, response.text
    # the bulk import follows the same rule: the row is rejected, naming why
    events_file = tmp_path / "events.csv"
    events_file.write_text(f"event_id,user_id,item_id,type,ts\nlook-1,{lookalike},i,view,{now}\n", "utf-8")
    result = import_events(gateway, events_file, "csv", settings)
    assert result.applied == 0 and [r.field for r in result.rejected] == ["user_id"], result.rejected
    assert LOOKALIKES[lookalike] in result.rejected[0].reason
    assert fingerprint(gateway) == before


def test_catalogue_stores_hostile_ids_verbatim_and_touches_nothing_else(
    target: tuple[ApiProcess, GraphGateway],
) -> None:
    api, gateway = target
    auth = {"Authorization": f"Bearer {SMALL_API_KEY}"}
    before = fingerprint(gateway)
    # the catalogue's own counter (the rules keep another Revision node)
    had_revision = gateway.run_query("MATCH (r:Revision {id: 'catalogue'}) RETURN count(r) AS n", {})[0]["n"]
    items = [
        {
            "item_id": f"cat {value}",
            "title": value,
            "brand": f"cb {value}",
            "categories": [f"cc {value}"],
            "attributes": {"material": [f"m {value}"]},
        }
        for value in HOSTILE
    ]
    posted = requests.post(f"{api.url}/v1/items", json=items, headers=auth, timeout=30)
    assert posted.status_code == 200, posted.text
    after = fingerprint(gateway)
    # per item: Item, Brand, Category and Entity nodes; MADE_BY, IN_CATEGORY and MATERIAL edges
    assert after["nodes"] == before["nodes"] + 4 * len(HOSTILE) + (0 if had_revision else 1)
    assert after["relationships"] == before["relationships"] + 3 * len(HOSTILE)
    for value in HOSTILE:
        got = requests.get(f"{api.url}/v1/items/{quote(f'cat {value}', safe='')}", timeout=30).json()
        assert (got["item_id"], got["title"], got["brand"], got["categories"]) == (
            f"cat {value}",
            value,
            f"cb {value}",
            [f"cc {value}"],
        )
        assert got["attributes"] == {"material": [f"m {value}"]}
    # a hostile relation name is refused by the relation rule, naming it; nothing is written
    refused = requests.put(
        f"{api.url}/v1/items/{quote(f'cat {HOSTILE[0]}', safe='')}",
        json={"attributes": {HOSTILE[0]: ["x"]}},
        headers=auth,
        timeout=30,
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == f"attributes.{HOSTILE[0]}"
    assert fingerprint(gateway) == after


def test_rules_store_hostile_ids_verbatim_and_touch_nothing_else(
    target: tuple[ApiProcess, GraphGateway],
) -> None:
    api, gateway = target
    auth = {"Authorization": f"Bearer {SMALL_API_KEY}"}
    requests.post(
        f"{api.url}/v1/rules",
        json={"id": "warm-up", "action": "block", "target": {"item": "x"}},
        headers=auth,
        timeout=30,
    )
    assert requests.delete(f"{api.url}/v1/rules/warm-up", headers=auth, timeout=30).status_code == 200
    before = fingerprint(gateway)  # the rules' Revision node exists from here on
    for value in HOSTILE:
        rule = {"id": value, "action": "pin", "item": value, "position": 2, "when": {"interest": value}}
        posted = requests.post(f"{api.url}/v1/rules", json=rule, headers=auth, timeout=30)
        assert posted.status_code == 200, posted.text
        assert posted.json()["id"] == value and posted.json()["when"] == {"interest": value}
    # (other tests, the fuzzer among them, may have left rules of their own)
    listed = requests.get(f"{api.url}/v1/rules", timeout=30).json()["rules"]
    assert {r["id"]: r["item"] for r in listed if r["id"] in HOSTILE} == {v: v for v in HOSTILE}
    stored = gateway.run_query(
        "MATCH (r:Rule) WHERE r.id IN $ids RETURN r.id AS id, r.target AS target", {"ids": HOSTILE}
    )
    assert sorted((r["id"], r["target"]) for r in stored) == sorted((v, v) for v in HOSTILE)
    after = fingerprint(gateway)
    assert (after["nodes"], after["relationships"]) == (
        before["nodes"] + len(HOSTILE),
        before["relationships"],
    )
    user = gateway.run_query("MATCH (u:User)-[:INTERACTED]->() RETURN u.id AS id LIMIT 1", {})[0]["id"]
    assert get(api, f"/v1/users/{quote(user, safe='')}/recommendations", k=5).status_code == 200
    for value in HOSTILE:
        deleted = requests.delete(f"{api.url}/v1/rules/{quote(value, safe='')}", headers=auth, timeout=30)
        assert deleted.status_code == 200, deleted.text
    assert fingerprint(gateway) == before


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def test_importers_store_hostile_ids_verbatim(
    gateway: GraphGateway, settings: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "hostile"
    folder.mkdir()
    _write_csv(
        folder / "interactions.csv.gz",
        ["user_id", "item_id", "seq_index"],
        [[f"u {v}", f"i {v}", "0"] for v in HOSTILE],
    )
    _write_csv(
        folder / "items.csv.gz",
        ["item_id", "brand", "categories"],
        [[f"i {v}", f"b {v}", f"c {v}"] for v in HOSTILE],
    )
    report = import_dataset(gateway, open_dataset(str(folder), settings.datasets_dir), settings)
    assert not report.problems
    users = {r["id"] for r in gateway.run_query("MATCH (u:User) RETURN u.id AS id", {})}
    assert users == {f"u {v}" for v in HOSTILE}
    brands = {r["id"] for r in gateway.run_query("MATCH (:Item)-[:MADE_BY]->(b:Brand) RETURN b.id AS id", {})}
    assert brands == {f"b {v}" for v in HOSTILE}

    events_file = tmp_path / "events.csv"
    with open(events_file, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["event_id", "user_id", "item_id", "type", "ts"])
        writer.writerows([[f"e {v}", f"eu {v}", f"i {v}", "view", str(int(time.time()))] for v in HOSTILE])
    before_items = gateway.run_query("MATCH (i:Item) RETURN count(i) AS n", {})[0]["n"]
    result = import_events(gateway, events_file, "csv", settings)
    assert result.applied == len(HOSTILE)
    event_users = {
        r["id"]
        for r in gateway.run_query("MATCH (u:User) WHERE u.id STARTS WITH 'eu ' RETURN u.id AS id", {})
    }
    assert event_users == {f"eu {v}" for v in HOSTILE}
    assert gateway.run_query("MATCH (i:Item) RETURN count(i) AS n", {})[0]["n"] == before_items
