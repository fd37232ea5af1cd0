"""``GraphGateway.read_many``: several reads in one round trip answer exactly what each read answers alone."""

from __future__ import annotations

import uuid

import pytest

from graph_schema.statements.events import INGEST_EVENTS
from graph_schema.statements.serving import ITEM_EXISTS, USER_HISTORY
from graph_schema.statements.topics import USER_TOPIC_ITEMS
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.maintenance import clear_graph
from kgrec.topics import user_topics_read

NOW = 1_700_000_000_000


def test_batched_reads_answer_what_each_read_answers_alone(gateway: GraphGateway) -> None:
    gateway.run_query(
        "CREATE (u:User {id: 'u'}) WITH u UNWIND range(1, 5) AS n CREATE (u)-[:INTERACTED "
        "{weight: toFloat(n), weight_ts: $now, last_ts: $now + n, n_view: 1}]->(:Item {id: 'i' + toString(n)})",
        {"now": NOW},
    )
    gateway.run_query(
        "MATCH (u:User {id: 'u'}), (i:Item {id: 'i1'}) CREATE (t:Topic {id: 't1', name: 'lip care'}), "
        "(u)-[:INTERESTED_IN {weight: 2.0, weight_ts: $now, last_ts: $now, count: 1}]->(t), "
        "(i)-[:ABOUT {score: 0.9}]->(t)",
        {"now": NOW},
    )
    reads = [
        (USER_HISTORY, {"user_id": "u", "limit": 3}),
        user_topics_read("u", NOW, 1e9),
        (ITEM_EXISTS, {"item_id": "nowhere"}),
    ]
    batched = gateway.read_many(reads)
    alone = [gateway.read(statement, params) for statement, params in reads]
    assert batched == alone
    assert [r["item_id"] for r in batched[0]] == ["i5", "i4", "i3"]
    assert [r["topic_id"] for r in batched[1]] == ["t1"] and batched[2] == []


def test_batched_reads_of_a_graph_that_does_not_exist_yet_answer_empty(
    settings: Settings, graph_server: EmbeddedServer | None
) -> None:
    name = f"never_written_{uuid.uuid4().hex[:8]}" if settings.embedded else None
    with open_gateway(settings, graph_name=name) as fresh:
        if not settings.embedded:
            clear_graph(fresh)
        reads = [(USER_HISTORY, {"user_id": "u", "limit": 3}), user_topics_read("u", NOW, 1e9)]
        assert fresh.read_many(reads) == [[], []]


def test_batched_reads_refuse_a_write_and_a_missing_parameter(gateway: GraphGateway) -> None:
    with pytest.raises(ValueError):
        gateway.read_many([(INGEST_EVENTS, {})])
    with pytest.raises(ValueError):
        gateway.read_many([(USER_TOPIC_ITEMS, {"user_id": "u"})])
