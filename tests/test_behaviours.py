"""The behaviour table is the one list of behaviours: weights, counters, validation and statements agree."""

from __future__ import annotations

import re

import pytest

from graph_schema import allow_list
from graph_schema.behaviours import BEHAVIOUR_TABLE, BEHAVIOURS, COUNTER_PROPERTIES, DEFAULT_BEHAVIOUR_WEIGHTS
from graph_schema.statements.events import INGEST_EVENTS, PRUNE_FADED_EDGES
from kgrec import config
from kgrec.config import Settings
from kgrec.events.validation import validate_batch

T0 = 1_760_000_000_000


def test_names_and_default_weights_come_from_one_table() -> None:
    assert len(set(BEHAVIOURS)) == len(BEHAVIOURS) == len(BEHAVIOUR_TABLE)
    assert tuple(DEFAULT_BEHAVIOUR_WEIGHTS) == BEHAVIOURS
    assert config.DEFAULT_BEHAVIOUR_WEIGHTS == DEFAULT_BEHAVIOUR_WEIGHTS
    assert allow_list.BEHAVIOURS == BEHAVIOURS
    assert all(w >= 0 for w in DEFAULT_BEHAVIOUR_WEIGHTS.values())
    # the documented defaults (README, "Configuration")
    assert DEFAULT_BEHAVIOUR_WEIGHTS == {
        "view": 1.0,
        "click": 1.0,
        "cart": 3.0,
        "remove_from_cart": 0.0,
        "fav": 2.0,
        "purchase": 5.0,
        "rating": 4.0,
        "review": 4.0,
    }


def test_every_behaviour_has_exactly_one_counter_property() -> None:
    counters = {key for key in allow_list.PROPERTY_KEYS if re.fullmatch(r"n_[a-z_]+", key)}
    assert counters == {f"n_{b}" for b in BEHAVIOURS} == set(COUNTER_PROPERTIES)


def test_settings_start_from_the_table_and_refuse_unknown_behaviours() -> None:
    assert Settings().behaviour_weights == DEFAULT_BEHAVIOUR_WEIGHTS
    assert Settings.from_env({}).behaviour_weights == DEFAULT_BEHAVIOUR_WEIGHTS
    changed = Settings.from_env({"KGREC_BEHAVIOUR_WEIGHTS": "cart=2, purchase=8"}).behaviour_weights
    assert changed == {**DEFAULT_BEHAVIOUR_WEIGHTS, "cart": 2.0, "purchase": 8.0}
    assert list(changed) == list(BEHAVIOURS)
    with pytest.raises(ValueError, match="unknown behaviour 'like'"):
        Settings.from_env({"KGREC_BEHAVIOUR_WEIGHTS": "like=1"})


def test_validation_accepts_exactly_the_table() -> None:
    # a review carries its text, not a value (refused on `value`: kgrec/events/validation.py)
    raw = [
        {"event_id": f"e-{b}", "user_id": "u", "item_id": "i", "type": b, "ts": T0}
        | ({} if b == "review" else {"value": 4})
        for b in (*BEHAVIOURS, "like")
    ]
    events, errors = validate_batch(raw, max_skew_s=300, now_ms=T0)
    assert [e.type for e in events] == list(BEHAVIOURS)
    assert [(e.index, e.field) for e in errors] == [(len(BEHAVIOURS), "type")]


def test_statements_count_every_behaviour_and_prune_keeps_the_history_ones() -> None:
    for behaviour in BEHAVIOUR_TABLE:
        assert f"r.{behaviour.counter} = coalesce(r.{behaviour.counter}, 0)" in INGEST_EVENTS.cypher
        kept = f"coalesce(r.{behaviour.counter}, 0) = 0" in PRUNE_FADED_EDGES.cypher
        assert kept == behaviour.kept_when_faded
    assert {b.name for b in BEHAVIOUR_TABLE if b.kept_when_faded} == {"purchase", "rating"}
