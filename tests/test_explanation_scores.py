"""Explanation path scores on a hand-built graph and model, against values worked out by hand.

The formula (``kgrec/explanations.py``):

    score = prior × strength + 0.25 × max(0, cos(hub, target))
    strength = 1 − exp(−decayed weight of the path's first edge / 5)

with priors bought_together 1.0, also_bought 0.8, also_viewed 0.5 (× 0.8 when the
link points from the target to the hub), same brand 0.5, co-users
0.4 × min(1, support / 3), brand interest 0.4 × specificity, category interest
0.3 × specificity, specificity = 1 − sqrt(share of the model's items under it).

The graph (timestamps in half-lives before "now"):

    u -INTERACTED {5.0, 1 half-life ago, bought}-> h
    h -BOUGHT_TOGETHER-> t,   t -ALSO_VIEWED-> h
    h, t, t2 -MADE_BY-> acme;   t -IN_CATEGORY-> lips -SUBCATEGORY_OF-> makeup <-IN_CATEGORY- o
    u -INTERESTED_IN {4.0, now}-> acme;   u -INTERESTED_IN {10.0, 2 half-lives ago}-> lips
    v1, v2 (and the flagged bot) -INTERACTED-> h and t

The model knows items h, t, t2, o with unit embeddings h = (1, 0, 0),
t = (0.6, 0.8, 0), t2 = (−1, 0, 0), o = (0, 0, 1), and the directed links
h → t (bought_together) and t → h (also_viewed).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import scipy.sparse as sp

import kgrec.serving
from graph_schema.statements.explanations import EXPLANATION_CO_USERS, VERB
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.explanations import PathScorer, co_user_bounds, read_paths
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.item_facts import ItemFacts
from kgrec.maintenance import clear_graph
from kgrec.migrations import migrate
from kgrec.model_store import models_dir, save_artifacts
from kgrec.recommender import ModelArtifacts, Recommender
from kgrec.serving import HISTORY_LIMIT, ItemFilters, Serving, UserHistory

NOW = 1_700_000_000_000

# --- the expected scores, by hand ----------------------------------------------------------------

# u's purchase of h: 5.0 one half-life ago is 2.5 now.
HUB_STRENGTH = 1 - math.exp(-2.5 / 5)  # 0.393469
# cos(h, t) = 1 × 0.6 + 0 × 0.8 + 0 × 0 = 0.6; cos(h, t2) = −1, counted as 0.
EMBEDDING_TERM_T = 0.25 * 0.6  # 0.15
EMBEDDING_TERM_T2 = 0.0

BOUGHT_TOGETHER_OUT = 1.0 * HUB_STRENGTH + EMBEDDING_TERM_T  # 0.543469
ALSO_VIEWED_IN = 0.5 * 0.8 * HUB_STRENGTH + EMBEDDING_TERM_T  # 0.307388
SAME_BRAND_T = 0.5 * HUB_STRENGTH + EMBEDDING_TERM_T  # 0.346735
CO_USER_T = 0.4 * (2 / 3) * HUB_STRENGTH + EMBEDDING_TERM_T  # 0.254925: two co-users, the bot left out
# Brand interest: 4.0 stamped now; acme makes 3 of the model's 4 items.
BRAND_INTEREST = 0.4 * (1 - math.sqrt(3 / 4)) * (1 - math.exp(-4.0 / 5))  # 0.029511
# Category interest: 10.0 two half-lives ago is 2.5 now; lips holds 1 of 4 items.
CATEGORY_INTEREST = 0.3 * (1 - math.sqrt(1 / 4)) * (1 - math.exp(-2.5 / 5))  # 0.059020
SAME_BRAND_T2 = 0.5 * HUB_STRENGTH + EMBEDDING_TERM_T2  # 0.196735


def _build_graph(gw: GraphGateway, half_life_ms: float, version: str) -> None:
    one_half_life_ago = NOW - int(half_life_ms)
    two_half_lives_ago = NOW - 2 * int(half_life_ms)
    gw.run_query(
        """
        CREATE (u:User {id: 'u', flagged_bot: false}),
               (v1:User {id: 'v1', flagged_bot: false}), (v2:User {id: 'v2', flagged_bot: false}),
               (bot:User {id: 'bot', flagged_bot: true}),
               (h:Item {id: 'h', title: 'Hub lipstick', listed: true}),
               (t:Item {id: 't', title: 'Target gloss', listed: true}),
               (t2:Item {id: 't2', title: 'Other lipstick', listed: true}),
               (o:Item {id: 'o', title: 'Mascara', listed: true}),
               (acme:Brand {id: 'acme', name: 'Acme'}),
               (lips:Category {id: 'lips', name: 'Lips'}), (makeup:Category {id: 'makeup', name: 'Makeup'})
        CREATE (h)-[:MADE_BY]->(acme), (t)-[:MADE_BY]->(acme), (t2)-[:MADE_BY]->(acme),
               (t)-[:IN_CATEGORY]->(lips), (o)-[:IN_CATEGORY]->(makeup), (lips)-[:SUBCATEGORY_OF]->(makeup),
               (h)-[:BOUGHT_TOGETHER]->(t), (t)-[:ALSO_VIEWED]->(h)
        CREATE (u)-[:INTERACTED {weight: 5.0, weight_ts: $one, first_ts: $one, last_ts: $one,
                                 n_purchase: 1}]->(h),
               (u)-[:INTERESTED_IN {weight: 4.0, weight_ts: $now, count: 1}]->(acme),
               (u)-[:INTERESTED_IN {weight: 10.0, weight_ts: $two, count: 2}]->(lips)
        WITH h, t, [v1, v2, bot] AS others
        UNWIND others AS v
        CREATE (v)-[:INTERACTED {weight: 1.0, weight_ts: $now, last_ts: $now, n_view: 1}]->(h),
               (v)-[:INTERACTED {weight: 1.0, weight_ts: $now, last_ts: $now, n_view: 1}]->(t)
        """,
        {"one": one_half_life_ago, "two": two_half_lives_ago, "now": NOW},
    )
    gw.run_query(
        "CREATE (:ModelVersion {id: $v, artifact: $artifact, status: 'ready', active: true,"
        " created_at: $now, activated_at: $now})",
        {"v": version, "artifact": f"{version}.npz", "now": NOW},
    )


def _model(version: str) -> ModelArtifacts:
    item_ids = ["h", "t", "t2", "o"]

    def link(head: int, tail: int) -> sp.csr_matrix:
        return sp.csr_matrix(([1.0], ([head], [tail])), shape=(4, 4), dtype=np.float32)

    return ModelArtifacts(
        version=version,
        item_ids=item_ids,
        item_embeddings=np.array(
            [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32
        ),
        components={"bought_together_directed": link(0, 1), "also_viewed_directed": link(1, 0)},
        weights={"bought_together_directed": 1.0, "also_viewed_directed": 0.5, "embedding": 0.2},
        recency_decay=1.0,
        popularity=np.ones(4, dtype=np.float32),
        facts=ItemFacts(
            brand_ids=["acme"],
            item_brand=np.array([0, 0, 0, -1]),
            category_ids=["lips", "makeup"],
            item_category_pairs=np.array([[1, 0], [3, 1]]),
            category_parent_pairs=np.array([[0, 1]]),
            item_price=np.full(4, np.nan, dtype=np.float32),
        ),
    )


@pytest.fixture
def serving(
    settings: Settings, graph_server: EmbeddedServer | None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Serving]:
    """The serving core on the hand-built graph, its model active, the clock stopped at NOW."""
    name = f"explain_{uuid.uuid4().hex[:10]}" if settings.embedded else None
    version = f"explain-{uuid.uuid4().hex[:10]}"
    local = settings.with_overrides(graph_name=name)
    gw = open_gateway(local)
    clear_graph(gw)
    migrate(gw)
    folder = models_dir(local.data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    save_artifacts(_model(version), folder)
    _build_graph(gw, local.half_life_ms, version)
    monkeypatch.setattr(kgrec.serving, "now_ms", lambda: float(NOW))
    core = Serving(local)
    try:
        yield core
    finally:
        core.gateway.close()
        clear_graph(gw)
        gw.close()
        (folder / f"{version}.npz").unlink(missing_ok=True)


def _scores(paths: list[dict[str, object]]) -> list[tuple[str, str, float]]:
    """(kind, the node after the user, score) per path, in the order served."""
    return [(str(p["kind"]), str(p["nodes"][1]["id"]), float(p["score"])) for p in paths]  # type: ignore[index]


def test_every_path_to_an_item_scores_as_computed_by_hand(serving: Serving) -> None:
    answer = serving.explanation("u", "t", max_paths=10)
    served = _scores(answer["paths"])
    expected = [
        ("co_purchase", "h", BOUGHT_TOGETHER_OUT),
        ("same_brand", "h", SAME_BRAND_T),
        ("co_purchase", "h", ALSO_VIEWED_IN),
        ("co_user", "h", CO_USER_T),
        ("interest", "lips", CATEGORY_INTEREST),
        ("interest", "acme", BRAND_INTEREST),
    ]
    assert [(kind, via) for kind, via, _ in served] == [(kind, via) for kind, via, _ in expected]
    for (kind, via, score), (_, _, computed) in zip(served, expected, strict=True):
        assert score == pytest.approx(computed, abs=1e-6), (kind, via)
    co_purchase = [p for p in answer["paths"] if p["kind"] == "co_purchase"]
    assert [(p["relationships"][1]["type"], p["relationships"][1]["direction"]) for p in co_purchase] == [
        ("BOUGHT_TOGETHER", "out"),
        ("ALSO_VIEWED", "in"),
    ]
    # The served weight of the user's edge is the decayed one: 5.0 one half-life ago.
    assert co_purchase[0]["relationships"][0]["weight"] == pytest.approx(2.5)
    assert next(p for p in answer["paths"] if p["kind"] == "co_user")["support"] == 2
    # The bundled sentence templates (kgrec/relation_sentences.toml) for the built-in relations.
    sentences = {
        (p["kind"], p["relationships"][1]["type"]): p["sentence"]
        for p in answer["paths"]
        if p["kind"] in ("co_purchase", "same_brand")
    }
    assert sentences == {
        (
            "co_purchase",
            "BOUGHT_TOGETHER",
        ): "Target gloss is often bought together with Hub lipstick, which you bought.",
        (
            "co_purchase",
            "ALSO_VIEWED",
        ): "Customers who viewed Target gloss also viewed Hub lipstick, which you bought.",
        ("same_brand", "MADE_BY"): "Target gloss is made by Acme, like Hub lipstick, which you bought.",
    }


def test_a_negative_cosine_adds_nothing(serving: Serving) -> None:
    served = _scores(serving.explanation("u", "t2", max_paths=10)["paths"])
    assert [(kind, via) for kind, via, _ in served] == [("same_brand", "h"), ("interest", "acme")]
    assert served[0][2] == pytest.approx(SAME_BRAND_T2, abs=1e-6)
    assert served[1][2] == pytest.approx(BRAND_INTEREST, abs=1e-6)


def test_recommendations_give_the_best_path_as_the_reason(serving: Serving) -> None:
    answer = serving.recommendations("u", k=3, offset=0, exclude="seen", filters=ItemFilters(), explain=True)
    reasons = {item["item_id"]: item["reason"] for item in answer["items"]}
    assert set(reasons) == {"t", "t2", "o"}
    assert (reasons["t"]["kind"], reasons["t"]["score"]) == (
        "co_purchase",
        pytest.approx(BOUGHT_TOGETHER_OUT, abs=1e-6),
    )
    assert (reasons["t2"]["kind"], reasons["t2"]["score"]) == (
        "same_brand",
        pytest.approx(SAME_BRAND_T2, abs=1e-6),
    )
    assert reasons["o"] is None  # no path from u reaches o


def _co_user_reads(serving: Serving, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records the targets of every co-user statement the serving core sends to the graph."""
    gateway = serving.gateway
    sent: list[str] = []
    real = gateway.read_many

    def read_many(reads):  # type: ignore[no-untyped-def]
        sent.extend(params["item_id"] for statement, params in reads if statement is EXPLANATION_CO_USERS)
        return real(reads)

    monkeypatch.setattr(gateway, "read_many", read_many)
    return sent


def test_co_users_are_read_only_where_a_co_user_path_could_rank(
    serving: Serving, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = serving.explanation("u", "t", max_paths=10)["paths"]
    sent = _co_user_reads(serving, monkeypatch)

    # The best co-user path t could have (support 3 or more) scores 0.4 × strength + 0.15 = 0.307388:
    # below the best path (0.543469), level with the third (also viewed, 0.307388).
    bound = co_user_bounds(serving.active_model(), serving.user_history("u").entries, ["t"], complete=True)
    assert bound["t"] == pytest.approx(0.4 * HUB_STRENGTH + EMBEDDING_TERM_T, abs=1e-6)
    assert bound["t"] >= CO_USER_T

    for places, reads in ((1, []), (2, []), (3, ["t"]), (4, ["t"])):
        sent.clear()
        assert serving.explanation("u", "t", max_paths=places)["paths"] == full[:places], places
        assert sent == reads, places
    # A recommended item's reason is its best path. t's (0.543469) and t2's (same brand, 0.196735)
    # beat any co-user path to them (0.307388; 0.157388 for t2, whose cosine counts as 0); o has no
    # other path, so a co-user path could be its reason.
    sent.clear()
    serving.recommendations("u", k=3, offset=0, exclude="seen", filters=ItemFilters(), explain=True)
    assert sent == ["o"]


def test_a_history_cut_inside_a_tie_cannot_bound_co_users(serving: Serving) -> None:
    def history(positions: list[int]) -> UserHistory:
        return UserHistory([], [{"item_id": f"i{k}", "position": p} for k, p in enumerate(positions)])

    assert history([5] * 10).holds_hubs(3)  # not cut: every item was read
    assert history([9] * 3 + [5] * (HISTORY_LIMIT - 3)).holds_hubs(3)  # the third hub is newer than the cut
    assert not history([9] * 2 + [5] * (HISTORY_LIMIT - 2)).holds_hubs(3)  # unread items may tie with it
    model = serving.active_model()
    assert co_user_bounds(model, [], ["t", "o"], complete=False) == {"t": 0.65, "o": 0.65}
    assert co_user_bounds(model, [], ["t"], complete=True) == {"t": 0.0}


def _brand_row(brand: str, weight: float) -> dict[str, object]:
    def rel(kind: str, direction: str, w: float | None = None) -> dict[str, object]:
        return {
            "type": kind,
            "relation": None,
            "direction": direction,
            "weight": w,
            "weight_ts": NOW,
            "verb": None,
        }

    return {
        "target_id": "t",
        "kind": "same_brand",
        "nodes": [
            {"label": "User", "id": "u", "name": "u"},
            {"label": "Item", "id": "h", "name": "Hub"},
            {"label": "Brand", "id": brand, "name": brand},
            {"label": "Item", "id": "t", "name": "Target"},
        ],
        "rels": [
            {**rel("INTERACTED", "out", weight), "verb": "bought"},
            rel("MADE_BY", "out"),
            rel("MADE_BY", "in"),
        ],
        "support": 1,
    }


def test_only_the_places_asked_for_are_described_ties_included() -> None:
    scorer = PathScorer(Recommender(_model("ties")), float(NOW), 1.0)
    # b and c tie; a scores higher and d lower. Ties are ordered by the Browser query.
    rows = [_brand_row("d", 1.0), _brand_row("c", 5.0), _brand_row("a", 9.0), _brand_row("b", 5.0)]
    every = scorer.paths(rows)["t"]
    assert [p["nodes"][2]["id"] for p in every] == ["a", "b", "c", "d"]
    for places in (1, 2, 3, 4, 5):
        for order in (rows, rows[::-1]):
            assert scorer.paths(order, places=places)["t"] == every[:places], places
    # A merge keeps the best of both, as one list would.
    merged = scorer.paths(rows[2:], places=2)
    assert scorer.paths(rows[:2], into=merged, places=2)["t"] == every[:2]


@pytest.mark.parametrize(
    ("counters", "verb"),
    [
        ({"n_purchase": 1, "n_view": 3}, "bought"),
        ({"n_rating": 1, "n_review": 1}, "rated"),
        ({"n_review": 1}, "reviewed"),
        ({"n_cart": 1, "n_click": 2}, "added to the cart"),
        ({"n_fav": 1}, "saved"),
        ({"n_click": 1, "n_view": 1}, "clicked"),
        ({"n_view": 2}, "viewed"),
        ({}, "viewed"),  # imported data without event types
    ],
)
def test_a_path_says_the_strongest_thing_the_user_did(
    gateway: GraphGateway, counters: dict, verb: str
) -> None:
    # the paths' own expression, evaluated by the graph engine on an edge's counters
    rows = gateway.run_query(
        f"WITH $counters AS r RETURN {VERB.format(r='r')} AS verb", {"counters": counters}
    )
    assert rows == [{"verb": verb}]


def test_the_interests_searched_are_the_strongest_after_decay(gateway: GraphGateway) -> None:
    # 30 brands weighed 50 a year ago (a month's half-life: about 0.0 now) and one weighed 1 today:
    # the fresh one is the user's strongest interest, and the only one that explains the target.
    year, half_life = 365 * 86_400_000, 30 * 86_400_000
    gateway.run_query(
        "CREATE (u:User {id: 'me'}), (f:Brand {id: 'fresh', name: 'Fresh'}), (t:Item {id: 't', title: 'T'}),"
        " (t)-[:MADE_BY]->(f), (u)-[:INTERESTED_IN {weight: 1.0, weight_ts: $now}]->(f)"
        " WITH u UNWIND range(1, 30) AS k"
        " CREATE (u)-[:INTERESTED_IN {weight: 50.0, weight_ts: $then}]->(:Brand {id: 'old' + toString(k)})",
        {"now": NOW, "then": NOW - year},
    )
    rows = read_paths(gateway, "me", ["t"], hubs=30, now_ms=NOW, half_life_ms=half_life)
    assert [(r["kind"], r["nodes"][1]["id"]) for r in rows] == [("interest", "fresh")]
