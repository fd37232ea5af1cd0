"""The training pull reads every id of a label once, whatever the ids look like, and pages them itself.

FalkorDB answers ``x.id > $after`` on an indexed string property from the index alone, and
wrongly for ids that mix cases, digits and punctuation (``graph_schema/statements/training.py``
says why the pull no longer filters on a key). These ids are such a mix, taken from real data
sets (MovieLens-100k's Freebase MIDs and release years, Amazon ids, KGAT's entity names): with
the keyset pages of before, pages after ``release_year:unkonwn`` held it again and pages after
``Z`` were empty.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from graph_schema.allow_list import Label
from graph_schema.catalogue import all_statements
from graph_schema.received import received_by
from graph_schema.statements.knowledge import UPSERT_ENTITIES, link_knowledge
from graph_schema.statements.privacy import ERASE_USER
from graph_schema.statements.training import (
    INTERACTIONS_RECEIVED_BY,
    TRAINING_ENTITY_IDS,
    TRAINING_ITEM_IDS,
    TRAINING_USER_IDS,
)
from kgrec.gateway import GraphGateway
from workers.training import subgraph
from workers.training.subgraph import all_ids, pull

IDS = [
    "1995", "Z", "a", "a1", "a10", "a2", "a.b", "a:b", "a_b", "ab", "b", "e:i2", "m.03_nv3", "m.0bnth9_",
    "release_year:V", "release_year:unkonwn", "A3RTKL9KB8KLID", 'B00"<i>`x`', "0553092626", "038548254X",
]  # fmt: skip


def _create(gateway: GraphGateway, label: str, ids: list[str] = IDS) -> None:
    # `listed` makes them items the item statement reads; users and entities ignore it
    gateway.run_query(f"UNWIND $ids AS id CREATE (n:{label} {{id: id, listed: true}})", {"ids": ids})


@pytest.mark.parametrize(
    ("statement", "label"),
    [(TRAINING_USER_IDS, "User"), (TRAINING_ITEM_IDS, "Item"), (TRAINING_ENTITY_IDS, "Entity")],
    ids=["users", "items", "entities"],
)
def test_every_id_is_read_once(gateway: GraphGateway, statement: object, label: str) -> None:
    _create(gateway, label, IDS[::-1])
    ids = all_ids(gateway, statement)  # type: ignore[arg-type]
    assert len(ids) == len(IDS) and set(ids) == set(IDS)


def test_bots_and_unlisted_items_are_left_out(gateway: GraphGateway) -> None:
    _create(gateway, "User", ["u1", "u2", "u3"])
    _create(gateway, "Item", ["i1", "i2"])
    gateway.run_query("MATCH (u:User {id: 'u2'}) SET u.flagged_bot = true", {})
    gateway.run_query("MATCH (i:Item {id: 'i1'}) SET i.listed = false", {})
    assert all_ids(gateway, TRAINING_USER_IDS) == ["u1", "u3"]
    assert all_ids(gateway, TRAINING_ITEM_IDS) == ["i2"]


def test_a_pull_over_many_pages_reads_every_user_item_and_entity(
    gateway: GraphGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [f"u{k:03d}" for k in range(23)]
    items = [f"i{k:03d}" for k in range(11)]
    entities = [{"id": f"e{k:02d}", "kind": "genre", "name": f"genre {k}"} for k in range(9)]
    gateway.run_query(
        "UNWIND $users AS u UNWIND $items AS i WITH u, i WHERE (toInteger(substring(u, 1)) + "
        "toInteger(substring(i, 1))) % 3 = 0 MERGE (a:User {id: u}) MERGE (b:Item {id: i, listed: true}) "
        "CREATE (a)-[:INTERACTED {weight: 1.0, weight_ts: 0, last_ts: 0, last_seq: 0}]->(b)",
        {"users": users, "items": items},
    )
    gateway.write(UPSERT_ENTITIES, {"rows": entities, "now": 0})
    item_links = [{"head": i, "relation": "has_genre", "tail": f"e{k % 9:02d}"} for k, i in enumerate(items)]
    gateway.write(link_knowledge("has_genre", Label.ITEM, Label.ENTITY), {"rows": item_links})
    entity_links = [
        {"head": f"e{k:02d}", "relation": "part_of", "tail": f"e{(k + 1) % 9:02d}"} for k in range(9)
    ]
    gateway.write(link_knowledge("part_of", Label.ENTITY, Label.ENTITY), {"rows": entity_links})

    whole = pull(gateway, now_ms=0, half_life_ms=1e12)
    monkeypatch.setattr(subgraph, "PAGE", 4)
    paged = pull(gateway, now_ms=0, half_life_ms=1e12)
    assert paged.user_ids == whole.user_ids == users
    assert paged.item_ids == whole.item_ids == items
    assert paged.entity_ids == whole.entity_ids == [e["id"] for e in entities]
    assert np.array_equal(paged.inter_user, whole.inter_user)
    assert np.array_equal(paged.inter_item, whole.inter_item)
    assert len(paged.inter_user) == sum((int(u[1:]) + int(i[1:])) % 3 == 0 for u in users for i in items)
    assert np.array_equal(paged.kg_triples, whole.kg_triples)
    assert len(paged.kg_triples) == len(items) + 9


def test_a_pull_leaves_out_the_interactions_the_graph_received_after_it(gateway: GraphGateway) -> None:
    # An erasure subtracts from a full version what the graph had received by its pull (its
    # data_until), by the edge's received_at (first_ts for an edge written before it was stamped):
    # an edge created while the pull reads its batches must not be counted either.
    pulled_at = 1_000
    edges = [
        ("before", {"received_at": 900, "first_ts": 2_000}),  # a client clock ahead: received in time
        ("at", {"received_at": pulled_at, "first_ts": 10}),
        ("during", {"received_at": 1_100, "first_ts": 10}),  # a late event dated before the pull
        ("old", {"first_ts": 800}),  # no received_at: written before it was stamped
        ("old-later", {"first_ts": 1_200}),
    ]
    for item, stamps in edges:
        gateway.run_query(
            "MERGE (u:User {id: 'u'}) CREATE (u)-[r:INTERACTED {weight: 1.0, weight_ts: 0, last_ts: 0}]->"
            "(:Item {id: $item, listed: true}) SET r += $stamps",
            {"item": item, "stamps": stamps},
        )
    graph = pull(gateway, now_ms=pulled_at, half_life_ms=1e12)
    assert graph.pulled_at == pulled_at
    assert sorted(graph.item_ids[k] for k in graph.inter_item) == ["at", "before", "old"]


def test_the_pull_and_an_erasure_count_by_one_received_rule() -> None:
    # An erasure takes off a full version what its pull counted: both statements compare by
    # graph_schema.received's one rule, rendered from the one function, and no statement spells a
    # received time of its own (two spellings could drift, and an erasure leave a count in).
    assert received_by("r", "$pulled_at") in INTERACTIONS_RECEIVED_BY.cypher
    assert received_by("s", "pulled") in ERASE_USER.cypher  # pulled: coalesce(m.data_until, m.created_at)
    received = re.compile(r"coalesce\(\s*\w+\.received_at")
    assert {s.name for s in all_statements() if received.search(s.cypher)} == {
        INTERACTIONS_RECEIVED_BY.name,
        ERASE_USER.name,
    }
    for statement in (INTERACTIONS_RECEIVED_BY, ERASE_USER):
        assert len(received.findall(statement.cypher)) == 1
