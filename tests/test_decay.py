"""The Cypher spellings of interest decay, run on the real graph, against :mod:`kgrec.decay`.

Cypher cannot call Python, so three statements write the formula out: event
ingestion (merging new evidence into user–item and interest edges, and
aggregating it per interest target as :func:`kgrec.interests.interest_rows`
does), pruning of faded edges, and the interests read. Each is checked here
against the one definition.
"""

from __future__ import annotations

import contextlib
import math
import random
import uuid
from typing import Any

import numpy as np
import pytest

from graph_schema.behaviours import DEFAULT_BEHAVIOUR_WEIGHTS
from graph_schema.statements.audiences import AUDIENCE_PAGE
from graph_schema.statements.events import PRUNE_FADED_EDGES
from graph_schema.statements.rules import USER_INTEREST_IDS
from graph_schema.statements.serving import USER_INTERESTS
from kgrec.config import Settings
from kgrec.decay import DAY_MS, decay_factor, decayed, decayed_array, decayed_sum, merged, shown_weight
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.interests import PairEvidence, interest_rows
from kgrec.maintenance import clear_graph
from kgrec.migrations import migrate
from kgrec.serving import Serving

T0 = 1_760_000_000_000
REL = 1e-9
ITEMS = {
    "lipstick": {"brand": "Acme", "category": ["Beauty", "Makeup", "Lips"]},
    "mascara": {"brand": "Acme", "category": ["Beauty", "Makeup", "Eyes"]},
    "shampoo": {"brand": "Head", "category": ["Beauty", "Hair"]},
}
# Behaviours whose edges pruning keeps are left out: these tests are about the weights.
KINDS = ("view", "click", "cart", "fav", "review")


def _ingest(gateway: GraphGateway, settings: Settings, raw: list[dict[str, Any]]) -> None:
    events, errors = validate_batch(raw, max_skew_s=300, now_ms=T0 + 365 * DAY_MS)
    assert errors == []
    ingest(gateway, events, settings, now_ms=T0)


def _edges(gateway: GraphGateway, rel: str) -> dict[tuple[str, str], dict[str, Any]]:
    rows = gateway.run_query(
        f"MATCH (u:User)-[r:{rel}]->(t) RETURN u.id AS user, t.id AS target, r.weight AS weight, "
        "r.weight_ts AS weight_ts, r.count AS count, r.first_ts AS first_ts, r.last_ts AS last_ts",
        {},
    )
    return {(r["user"], r["target"]): r for r in rows}


def _random_events(rng: random.Random, count: int) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"e{n}",
            "user_id": rng.choice(("alice", "bob")),
            "item_id": (item := rng.choice(list(ITEMS))),
            "type": rng.choice(KINDS),
            "ts": T0 + rng.randrange(-60 * DAY_MS, 0),
            "item": ITEMS[item],
        }
        for n in range(count)
    ]


def test_python_helpers_agree_with_each_other() -> None:
    half_life = 14 * DAY_MS
    assert decay_factor(half_life, half_life) == 0.5
    assert decayed(8.0, T0, T0 + 3 * half_life, half_life) == 1.0
    assert decayed(None, T0, T0, half_life) == 0.0
    assert decayed(2.0, None, T0, half_life) == 2.0
    weights = decayed_array([8.0, math.nan, 2.0], [T0, T0, math.nan], T0 + half_life, half_life)
    assert weights.tolist() == [4.0, 0.0, 2.0]
    # merging out of order is the same as summing everything at the latest stamp
    first = merged(None, None, 5.0, T0, half_life)
    assert merged(*merged(*first, 3.0, T0 + 2 * half_life, half_life), 1.0, T0 + half_life, half_life) == (
        pytest.approx(5.0 / 4 + 3.0 + 1.0 / 2),
        T0 + 2 * half_life,
    )


def test_a_stamp_far_ahead_is_worth_at_most_twice_its_weight() -> None:
    """An edge stamped in 2099 (kgrec import took future times) made decayed() raise OverflowError
    in serving, browsing and explanations, and then answer Infinity (not JSON; NaN profile
    weights): stored data must never make a read raise or leave the finite numbers."""
    half_life = 14 * DAY_MS
    in_2099 = 4_070_908_800_000
    assert decayed(5.0, in_2099, T0, half_life) == 10.0
    assert decay_factor(T0 - in_2099, half_life) == 2.0
    assert decayed_array(np.array([5.0, 3.0]), np.array([in_2099, T0]), T0, half_life).tolist() == [10.0, 3.0]
    # within the accepted clock skew nothing changes
    assert decayed(5.0, T0 + 300_000, T0, half_life) == pytest.approx(5.0 * 2 ** (300_000 / half_life))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ingestion_merges_batches_as_kgrec_decay_does(
    gateway: GraphGateway, settings: Settings, seed: int
) -> None:
    """Random events in random batches, out of order: each edge is every event decayed to the latest."""
    rng = random.Random(seed)
    raw = _random_events(rng, 40)
    batches: list[list[dict[str, Any]]] = []
    shuffled = rng.sample(raw, len(raw))
    while shuffled:
        size = rng.randint(1, 8)
        batches.append(shuffled[:size])
        shuffled = shuffled[size:]

    brands = {item: [facts["brand"]] for item, facts in ITEMS.items()}
    categories = {item: facts["category"] for item, facts in ITEMS.items()}
    expected_pairs: dict[tuple[str, str], tuple[float, int]] = {}
    expected_interests: dict[tuple[str, str], dict[str, Any]] = {}
    for batch in batches:
        _ingest(gateway, settings, batch)
        # the statement, stage by stage: each batch's pair sums, merged into the stored edges ...
        evidence = []
        for user, item in dict.fromkeys((e["user_id"], e["item_id"]) for e in batch):
            group = [e for e in batch if (e["user_id"], e["item_id"]) == (user, item)]
            added, stamp = decayed_sum(
                [(DEFAULT_BEHAVIOUR_WEIGHTS[e["type"]], e["ts"]) for e in group], settings.half_life_ms, T0
            )
            pair = (user, item)
            expected_pairs[pair] = merged(
                *expected_pairs.get(pair, (None, None)), added, stamp, settings.half_life_ms
            )
            evidence.append(
                PairEvidence(user, item, added, stamp, len(group), min(e["ts"] for e in group), stamp)
            )
        # ... and aggregated per interest target as the importer does, then merged likewise
        for row in [
            *interest_rows(evidence, brands, settings.half_life_ms),
            *interest_rows(evidence, categories, settings.half_life_ms),
        ]:
            key = (row["user_id"], row["target_id"])
            old = expected_interests.get(key, {"weight": None, "weight_ts": None, "count": 0})
            weight, weight_ts = merged(
                old["weight"], old["weight_ts"], row["weight"], row["weight_ts"], settings.half_life_ms
            )
            expected_interests[key] = {
                "weight": weight,
                "weight_ts": weight_ts,
                "count": old["count"] + row["count"],
                "first_ts": min(old.get("first_ts", row["first_ts"]), row["first_ts"]),
                "last_ts": max(old.get("last_ts", row["last_ts"]), row["last_ts"]),
            }
        stored = _edges(gateway, "INTERACTED")
        for pair, (weight, weight_ts) in expected_pairs.items():
            assert stored[pair]["weight_ts"] == weight_ts
            assert math.isclose(stored[pair]["weight"], weight, rel_tol=REL)
        stored = _edges(gateway, "INTERESTED_IN")
        assert set(stored) == set(expected_interests)
        for key, expected in expected_interests.items():
            assert math.isclose(stored[key]["weight"], expected["weight"], rel_tol=REL)
            assert {k: stored[key][k] for k in ("weight_ts", "count", "first_ts", "last_ts")} == {
                k: v for k, v in expected.items() if k != "weight"
            }

    interests = _edges(gateway, "INTERESTED_IN")
    for user in ("alice", "bob"):
        mine = [e for e in raw if e["user_id"] == user]
        targets = {t for e in mine for t in [ITEMS[e["item_id"]]["brand"], *ITEMS[e["item_id"]]["category"]]}
        for target in targets:
            feeding = [
                (DEFAULT_BEHAVIOUR_WEIGHTS[e["type"]], e["ts"])
                for e in mine
                if target in (ITEMS[e["item_id"]]["brand"], *ITEMS[e["item_id"]]["category"])
            ]
            weight, weight_ts = decayed_sum(feeding, settings.half_life_ms, T0)
            assert interests[(user, target)]["weight_ts"] == weight_ts
            assert math.isclose(interests[(user, target)]["weight"], weight, rel_tol=REL)


def test_pruning_removes_exactly_the_edges_kgrec_decay_says_have_faded(
    gateway: GraphGateway, settings: Settings
) -> None:
    # one view per user, 0 to 110 days old: at T0 a view of age a is worth 2^(-a/14)
    raw = [
        {
            "event_id": f"v{d}",
            "user_id": f"u{d}",
            "item_id": "lipstick",
            "type": "view",
            "ts": T0 - d * DAY_MS,
        }
        for d in range(0, 111, 5)
    ]
    for event in raw:
        _ingest(gateway, settings, [event])
    threshold = 0.02  # between 2^(-75/14) = 0.0245 and 2^(-80/14) = 0.0192
    before = {**_edges(gateway, "INTERACTED"), **_edges(gateway, "INTERESTED_IN")}
    expected = {
        key
        for key, edge in before.items()
        if decayed(edge["weight"], edge["weight_ts"], T0, settings.half_life_ms) >= threshold
    }
    assert 0 < len(expected) < len(before)
    gateway.write(
        PRUNE_FADED_EDGES,
        {"now": T0, "half_life_ms": settings.half_life_ms, "threshold": threshold, "limit": 10_000},
    )
    after = {**_edges(gateway, "INTERACTED"), **_edges(gateway, "INTERESTED_IN")}
    assert set(after) == expected


def test_interests_read_decays_as_kgrec_decay_does(gateway: GraphGateway, settings: Settings) -> None:
    _ingest(gateway, settings, _random_events(random.Random(7), 30))
    now = T0 + 9 * DAY_MS
    rows = gateway.read(
        USER_INTERESTS,
        {"user_id": "alice", "now": now, "half_life_ms": settings.half_life_ms, "limit": 10, "items": 3},
    )
    interests = _edges(gateway, "INTERESTED_IN")
    items = _edges(gateway, "INTERACTED")
    assert rows
    for row in rows:
        edge = interests[("alice", row["id"])]
        assert math.isclose(
            row["weight"], decayed(edge["weight"], edge["weight_ts"], now, settings.half_life_ms), rel_tol=REL
        )
        for driver in row["drivers"]:
            item = items[("alice", driver["id"])]
            expected = decayed(item["weight"], item["weight_ts"], now, settings.half_life_ms)
            assert math.isclose(driver["weight"], expected, rel_tol=REL)


def test_the_cypher_reads_cap_a_stamp_far_ahead_as_kgrec_decay_does(
    gateway: GraphGateway, settings: Settings
) -> None:
    """Edges stamped in 2099 (imported before future times were refused): the Cypher reads spelled
    the decay uncapped, so /v1/users/{id}/interests answered Infinity (not JSON) where decayed()
    answers twice the weight. Each read must give what kgrec.decay gives."""
    in_2099 = 4_070_908_800_000
    raw = [
        {
            "event_id": f"f{n}",
            "user_id": "alice",
            "item_id": item,
            "type": "cart",
            "ts": in_2099 + n,
            "item": ITEMS[item],
        }
        for n, item in enumerate(("lipstick", "shampoo"))
    ]
    events, errors = validate_batch(raw, max_skew_s=300, now_ms=in_2099)
    assert errors == []
    ingest(gateway, events, settings, now_ms=in_2099)
    half_life = settings.half_life_ms
    interests = _edges(gateway, "INTERESTED_IN")
    items = _edges(gateway, "INTERACTED")
    rows = gateway.read(
        USER_INTERESTS, {"user_id": "alice", "now": T0, "half_life_ms": half_life, "limit": 10, "items": 3}
    )
    assert {row["id"] for row in rows} == {target for _, target in interests}
    for row in rows:
        edge = interests[("alice", row["id"])]
        assert math.isfinite(row["weight"]) and row["weight"] == pytest.approx(2 * edge["weight"], rel=REL)
        assert row["weight"] == pytest.approx(
            decayed(edge["weight"], edge["weight_ts"], T0, half_life), rel=REL
        )
        for driver in row["drivers"]:
            item = items[("alice", driver["id"])]
            assert driver["weight"] == pytest.approx(2 * item["weight"], rel=REL)
    ids = gateway.read(
        USER_INTEREST_IDS, {"user_id": "alice", "now": T0, "half_life_ms": half_life, "limit": 10}
    )
    assert {row["id"] for row in ids} == {target for _, target in interests}
    for kind, target, edge in (
        ("brand", "Acme", interests[("alice", "Acme")]),
        ("category", "Beauty", interests[("alice", "Beauty")]),
        ("item", "lipstick", items[("alice", "lipstick")]),
    ):
        page = gateway.read(
            AUDIENCE_PAGE[kind],
            {
                "target": target,
                "now": T0,
                "half_life_ms": half_life,
                "min_weight": 0.0,
                "active_since": None,
                "after_rank": None,
                "after_id": None,
                "limit": 10,
            },
        )
        assert [row["user_id"] for row in page] == ["alice"]
        expected = decayed(edge["weight"], edge["weight_ts"], T0, half_life)
        assert page[0]["weight"] == pytest.approx(expected, rel=REL) and expected == 2 * edge["weight"]


def test_an_old_interest_is_shown_with_its_weight_not_as_zero(settings: Settings, graph_server: Any) -> None:
    """Answers rounded weights to six decimals, so every interest a few months old (here about a
    year at a 14-day half-life: 1e-9) was shown as 0, listed in an order its weights did not show."""
    name = f"oldinterest_{uuid.uuid4().hex[:10]}" if settings.embedded else None
    local = settings.with_overrides(graph_name=name)
    with contextlib.closing(open_gateway(local)) as gw:
        clear_graph(gw)
        migrate(gw)
        _ingest(gw, local, _random_events(random.Random(7), 30))
        with contextlib.closing(Serving(local)) as serving:
            answer = serving.interests("alice", limit=10, items=3)
    shown = [
        (i["weight"], [d["weight"] for d in i["items"]]) for i in answer["brands"] + answer["categories"]
    ]
    assert shown
    for weight, drivers in shown:
        assert 0 < weight < 1e-6 and all(0 < w < 1e-6 for w in drivers)
    assert answer["brands"][0]["weight"] >= answer["brands"][-1]["weight"]
    assert shown_weight(1 / 3) == 0.333333 and shown_weight(1 / 3 * 1e-9) == 3.33333e-10
    assert shown_weight(1234.5678901) == 1234.56789 and shown_weight(None) == 0.0
