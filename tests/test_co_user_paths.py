"""Co-user explanation paths: a bounded number of the target's users, bots left out, none of them named."""

from __future__ import annotations

from typing import Any

from graph_schema.path_query import path_cypher
from graph_schema.statements.explanations import CO_USER_CANDIDATES
from kgrec.explanations import PathScorer, read_co_user_paths, sentence
from kgrec.gateway import GraphGateway
from kgrec.recommender import Recommender
from tests.test_explanation_scores import _model

ANONYMOUS = {"label": "User", "id": None, "name": None, "anonymous": True}

_SEEN = "{weight: 1.0, weight_ts: 1, n_view: 1, last_ts: $ts}"

# "me" viewed the hub. "popular" has more users than the search looks at (o<k> viewed it at k),
# each of whom also viewed the hub; "niche" has three, whose views of it were at 5, 7 and 6.
# A flagged bot saw all three items last of all.
_GRAPH = (
    f"""
CREATE (me:User {{id: 'me'}}), (bot:User {{id: 'bot', flagged_bot: true}}),
       (h:Item {{id: 'hub', title: 'Hub'}}), (p:Item {{id: 'popular', title: 'Popular'}}),
       (n:Item {{id: 'niche', title: 'Niche'}}),
       (me)-[:INTERACTED {_SEEN}]->(h), (bot)-[:INTERACTED {_SEEN}]->(h),
       (bot)-[:INTERACTED {_SEEN}]->(p), (bot)-[:INTERACTED {_SEEN}]->(n)
""",
    f"""
MATCH (h:Item {{id: 'hub'}}), (p:Item {{id: 'popular'}})
UNWIND range(0, $users - 1) AS k
CREATE (o:User {{id: 'o' + toString(k)}}), (o)-[:INTERACTED {_SEEN}]->(h),
       (o)-[:INTERACTED {{weight: 1.0, weight_ts: 1, n_view: 1, last_ts: k}}]->(p)
""",
    """
MATCH (n:Item {id: 'niche'})
UNWIND [['o0', 5], ['o1', 7], ['o2', 6]] AS seen
MATCH (o:User {id: seen[0]})
CREATE (o)-[:INTERACTED {weight: 1.0, weight_ts: 1, n_view: 1, last_ts: seen[1]}]->(n)
""",
)


def _co_user_rows(gateway: GraphGateway, targets: list[str]) -> dict[str, list[dict[str, Any]]]:
    rows = read_co_user_paths(gateway, "me", targets, hubs=30)
    found: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["kind"] == "co_user":
            found.setdefault(row["target_id"], []).append(row)
    return found


def test_co_users_are_counted_among_a_bounded_number_of_the_targets_users(gateway: GraphGateway) -> None:
    for query in _GRAPH:
        gateway.run_query(query, {"ts": 10_000, "users": CO_USER_CANDIDATES + 50})
    found = _co_user_rows(gateway, ["popular", "niche"])

    # The popular item: one path through the hub, counted among CO_USER_CANDIDATES users only.
    [popular] = found["popular"]
    assert [n["id"] for n in popular["nodes"]][:2] == ["me", "hub"]
    assert popular["support"] == CO_USER_CANDIDATES
    assert popular["nodes"][2] == ANONYMOUS

    # The other target of the same batch keeps its own search: all three.
    [niche] = found["niche"]
    assert niche["support"] == 3
    assert [n["id"] for n in niche["nodes"]] == ["me", "hub", None, "niche"]
    assert [r["type"] for r in niche["rels"]] == ["INTERACTED"] * 3
    assert [r["direction"] for r in niche["rels"]] == ["out", "in", "out"]


def test_no_other_customer_is_named_and_the_browser_query_still_finds_the_path(gateway: GraphGateway) -> None:
    for query in _GRAPH:
        gateway.run_query(query, {"ts": 10_000, "users": 5})
    rows = read_co_user_paths(gateway, "me", ["niche", "popular"], hubs=30)
    scorer = PathScorer(Recommender(_model("anon")), 10_000.0, 1.0)
    served = [p for paths in scorer.paths(rows).values() for p in paths]
    assert len(served) == 2
    others = [f"o{k}" for k in range(5)] + ["bot"]
    for path in served:
        assert path["nodes"][2] == ANONYMOUS
        # Only the user's own edge keeps its weight: the others' edges say nothing of what they did.
        assert [r["weight"] is None for r in path["relationships"]] == [False, True, True]
        text = repr(path)
        assert not any(other in text for other in others), text
        found = gateway.run_query(path["cypher"], {})
        assert len(found) == 1, path["cypher"]
    assert path_cypher(rows[0]["nodes"], rows[0]["rels"]).startswith(
        "MATCH p = (n0:User {id: 'me'})-[:INTERACTED]->(n1:Item {id: 'hub'})<-[:INTERACTED]-(n2:User)"
    )


def test_a_co_user_sentence_claims_no_verb_for_the_other_customers() -> None:
    nodes = [
        {"id": n, "name": name} for n, name in (("u", None), ("h", "Earbuds"), ("o", None), ("t", "Soundbar"))
    ]
    rels = [{"verb": "viewed"}, {"verb": None}, {"verb": None}]
    assert sentence("co_user", nodes, rels, 10) == (
        "10 other customers who interacted with Earbuds, which you viewed, also interacted with Soundbar."
    )
    assert sentence("co_user", nodes, rels, 1).startswith("1 other customer who interacted with Earbuds")
