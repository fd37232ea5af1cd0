"""Settings read from the environment: every number and flag is checked once, at start-up, and a
bad one is refused in one line that names the variable and the value."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from kgrec.config import Settings
from kgrec.job_queue import redis_urls


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("KGREC_ATTRIBUTION_WINDOW_HOURS", "nan", "must be a number at least 0 and at most 8760, not 'nan'"),
        ("KGREC_ATTRIBUTION_WINDOW_HOURS", "-1", "must be a number at least 0 and at most 8760, not '-1'"),
        ("KGREC_IMPRESSION_RETENTION_DAYS", "0", "must be a number above 0 and at most 3650, not '0'"),
        ("KGREC_HALF_LIFE_DAYS", "inf", "must be a number above 0 and at most 3650, not 'inf'"),
        ("KGREC_EXPLORE_SHARE", "abc", "must be a number at least 0 and at most 1, not 'abc'"),
        ("KGREC_EXPLORE_MAX_EVENTS", "x", "must be a whole number at least 0 and at most 1000000, not 'x'"),
        ("KGREC_GATE_MIN_USERS", "2.5", "must be a whole number at least 1 and at most 1000000, not '2.5'"),
        ("KGREC_GATE_EXPERIMENT", "ture", "must be true or false (1/0, yes/no, on/off), not 'ture'"),
        # a key is a secret, so not repeated; headers reach the app as Latin-1, so "clé" never matches
        ("KGREC_API_KEYS", "fine,clé", "must hold printable ASCII keys only (one has other characters)"),
        ("KGREC_ADMIN_KEYS", "ops,clé", "must hold printable ASCII keys only (one has other characters)"),
        # alone they would narrow nothing: every key may erase while KGREC_ADMIN_KEYS is unset
        (
            "KGREC_ERASE_KEYS",
            "shop",
            "needs KGREC_ADMIN_KEYS: while it is unset every API key may erase users",
        ),
        # a URL without its scheme was a driver traceback, or Celery's "No module named 'localhost'"
        (
            "NEO4J_URI",
            "localhost:7687",
            "must be a URL starting neo4j:// or neo4j+s:// or neo4j+ssc:// or bolt:// or bolt+s:// or "
            "bolt+ssc:// (e.g. neo4j://localhost:7687), not 'localhost:7687'",
        ),
        (
            "REDIS_URL",
            "localhost:6379",
            "must be a URL starting redis:// or rediss:// (e.g. redis://localhost:6379/0), not 'localhost:6379'",
        ),
        (  # its password is not repeated
            "REDIS_URL",
            "http://:secret@cache:6379",
            "must be a URL starting redis:// or rediss:// (e.g. redis://localhost:6379/0), "
            "not 'http://***@cache:6379'",
        ),
        ("KGREC_GRAPH", "", "must not be empty (unset it for the default 'kgrec')"),
        # empty reached the driver (the server's home database) and namespaced impressions by ""
        ("NEO4J_DATABASE", "", "must not be empty (unset it for the default 'neo4j')"),
        # empty opened the serving database, which `kgrec evaluate` then emptied
        ("KGREC_EVAL_DATABASE", "", "must not be empty (unset it for the default 'kgreceval')"),
        ("KGREC_EVAL_DATABASE", " ", "must not be empty (unset it for the default 'kgreceval')"),
        # huge durations passed and failed later: beat's OverflowError, a 500 from every Redis client
        ("KGREC_PRUNE_INTERVAL_S", "2.5e11", "must be a number above 0 and at most 604800, not '2.5e11'"),
        ("KGREC_SERVING_TIMEOUT_S", "9.3e9", "must be a number above 0 and at most 600, not '9.3e9'"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_variable_and_the_value(
    name: str, value: str, reason: str
) -> None:
    with pytest.raises(ValueError) as refused:
        Settings.from_env({name: value})
    assert str(refused.value) == f"{name} {reason}"


def test_the_evaluation_database_is_never_the_serving_one() -> None:
    """KGREC_EVAL_DATABASE equal to NEO4J_DATABASE was accepted, and `kgrec evaluate` emptied the
    serving database; Neo4j folds database names to lower case, so ``Shop`` is ``shop`` too."""
    for serving, scratch in (("neo4j", "neo4j"), ("shop", "Shop"), ("kgreceval", None)):
        env = {"NEO4J_DATABASE": serving} | ({} if scratch is None else {"KGREC_EVAL_DATABASE": scratch})
        with pytest.raises(ValueError) as refused:
            Settings.from_env(env)
        assert str(refused.value) == (
            f"KGREC_EVAL_DATABASE must name a database other than NEO4J_DATABASE ({serving!r}), "
            f"which `kgrec evaluate` would empty, not {scratch or 'kgreceval'!r}"
        )
    chosen = Settings.from_env({"NEO4J_DATABASE": "shop", "KGREC_EVAL_DATABASE": "shopeval"})
    assert (chosen.neo4j_database, chosen.eval_database) == ("shop", "shopeval")


# Every duration, its ceiling, and the unit it is in. Above the ceiling each was accepted and failed
# later (beat, Redis clients, integers a graph engine cannot store).
CEILINGS = {
    "KGREC_HALF_LIFE_DAYS": 3650,
    "KGREC_MAX_CLOCK_SKEW_S": 86400,
    "KGREC_EVENT_RETENTION_DAYS": 3650,
    "KGREC_PRUNE_INTERVAL_S": 604800,
    "KGREC_FOLD_IN_INTERVAL_S": 604800,
    "KGREC_SERVING_TIMEOUT_S": 600,
    "KGREC_RETRAIN_INTERVAL_S": 31536000,
    "KGREC_RETRAIN_CHECK_INTERVAL_S": 604800,
    "KGREC_JOB_VISIBILITY_TIMEOUT_S": 604800,
    "KGREC_IMPRESSION_RETENTION_DAYS": 3650,
    "KGREC_ATTRIBUTION_WINDOW_HOURS": 8760,
}


def test_every_duration_has_a_ceiling() -> None:
    durations = {f for f in Settings.__dataclass_fields__ if f.endswith(("_s", "_days", "_hours"))}
    assert durations == {name.removeprefix("KGREC_").lower() for name in CEILINGS}


@pytest.mark.parametrize(("name", "ceiling"), sorted(CEILINGS.items()))
def test_every_duration_is_refused_above_its_ceiling_and_accepted_at_it(name: str, ceiling: int) -> None:
    field = name.removeprefix("KGREC_").lower()
    assert getattr(Settings.from_env({name: str(ceiling)}), field) == ceiling
    with pytest.raises(ValueError, match=rf"^{name} must be a number .*at most {ceiling}, not '1e\+12'$"):
        Settings.from_env({name: "1e+12"})


# Every whole-number setting and its ceiling: 1e30 passed before and overflowed the 64-bit integers
# of Redis and the graph engines (or sized a batch or a thread pool no machine holds).
WHOLE_CEILINGS = {
    "KGREC_BOT_EVENTS_PER_MINUTE": 1_000_000,
    "KGREC_GRAPH_THREADS": 256,
    "KGREC_EMBEDDING_BATCH": 1_000_000,
    "KGREC_RETRAIN_AFTER_EVENTS": 1_000_000_000_000,
    "KGREC_GATE_MIN_USERS": 1_000_000,
    "KGREC_INCREMENTAL_PARTITIONS": 1_024,
    "KGREC_IMPRESSION_MAX_ENTRIES": 10_000_000_000,
    "KGREC_EXPLORE_MAX_EVENTS": 1_000_000,
}


def test_every_whole_number_setting_has_a_ceiling() -> None:
    whole = {f.name for f in dataclasses.fields(Settings) if f.type in ("int", int)}
    assert whole == {name.removeprefix("KGREC_").lower() for name in WHOLE_CEILINGS}


@pytest.mark.parametrize(("name", "ceiling"), sorted(WHOLE_CEILINGS.items()))
def test_every_whole_number_is_refused_above_its_ceiling_and_accepted_at_it(name: str, ceiling: int) -> None:
    field = name.removeprefix("KGREC_").lower()
    assert getattr(Settings.from_env({name: str(ceiling)}), field) == ceiling
    with pytest.raises(
        ValueError, match=rf"^{name} must be a whole number .*at most {ceiling}, not '{ceiling + 1}'$"
    ):
        Settings.from_env({name: str(ceiling + 1)})


def test_an_admin_key_is_an_api_key_too_and_unset_means_none() -> None:
    scoped = Settings.from_env({"KGREC_API_KEYS": "shop", "KGREC_ADMIN_KEYS": " ops , shop "})
    assert (scoped.api_keys, scoped.admin_keys) == (("shop", "ops"), ("ops", "shop"))
    assert Settings.from_env({"KGREC_API_KEYS": "shop", "KGREC_ADMIN_KEYS": ""}).admin_keys == ()
    assert Settings(admin_keys=("ops",)).api_keys == ("ops",)


def test_an_erase_key_is_an_api_key_too_and_needs_admin_keys() -> None:
    scoped = Settings.from_env(
        {"KGREC_API_KEYS": "shop", "KGREC_ADMIN_KEYS": "ops", "KGREC_ERASE_KEYS": "del,ops"}
    )
    assert (scoped.api_keys, scoped.erase_keys) == (("shop", "ops", "del"), ("del", "ops"))
    assert Settings.from_env({"KGREC_ADMIN_KEYS": "ops", "KGREC_ERASE_KEYS": ""}).erase_keys == ()
    with pytest.raises(ValueError, match="KGREC_ERASE_KEYS must hold printable ASCII keys only"):
        Settings.from_env({"KGREC_ADMIN_KEYS": "ops", "KGREC_ERASE_KEYS": "clé"})


def test_a_behaviour_weight_must_be_a_number_at_least_0() -> None:
    """``view=abc`` was float's message without the variable; nan, inf and -5 were accepted."""
    for value, pair, weight in (
        ("view=abc", "view=abc", "abc"),
        ("cart=nan", "cart=nan", "nan"),
        ("view=1,purchase=-5", "purchase=-5", "-5"),
        ("fav=inf", "fav=inf", "inf"),
        ("click", "click", ""),
    ):
        with pytest.raises(ValueError) as refused:
            Settings.from_env({"KGREC_BEHAVIOUR_WEIGHTS": value})
        assert str(refused.value) == (
            f"KGREC_BEHAVIOUR_WEIGHTS: {pair!r}: the weight must be a number at least 0, not {weight!r}"
        )
    assert (
        Settings.from_env({"KGREC_BEHAVIOUR_WEIGHTS": "view=0, cart = 2.5"}).behaviour_weights["cart"] == 2.5
    )


def test_empty_url_and_folder_variables_mean_unset() -> None:
    """KGREC_DATA_DIR='' was the working directory; the URLs' empty already meant unset."""
    empty = Settings.from_env({"KGREC_DATA_DIR": "", "NEO4J_URI": "", "REDIS_URL": ""})
    assert empty.data_dir == Settings.from_env({}).data_dir
    assert empty.neo4j_uri is None and empty.redis_url is None
    good = {"NEO4J_URI": "bolt+s://db.example:7687", "REDIS_URL": "rediss://:pw@cache:6380/0"}
    assert Settings.from_env(good).redis_url == good["REDIS_URL"]
    assert Settings.from_env(good).neo4j_uri == good["NEO4J_URI"]


def test_good_settings_are_read_as_numbers_and_flags() -> None:
    settings = Settings.from_env(
        {
            "KGREC_ATTRIBUTION_WINDOW_HOURS": "0",
            "KGREC_GATE_EXPERIMENT": " ON ",
            "KGREC_RECORD_IMPRESSIONS": "no",
            "KGREC_GATE_MIN_USERS": "12",
        }
    )
    assert settings.attribution_window_hours == 0.0 and settings.gate_experiment is True
    assert settings.record_impressions is False and settings.gate_min_users == 12
    assert Settings.from_env({}) == Settings.from_env({"KGREC_GATE_EXPERIMENT": ""})


def test_the_cli_refuses_a_bad_setting_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kgrec_cli.main", "db", "status"],
        env={"KGREC_EXPLORE_SHARE": "abc", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        == "kgrec: error: KGREC_EXPLORE_SHARE must be a number at least 0 and at most 1, not 'abc'"
    )


@pytest.mark.parametrize(
    ("redis_url", "backend"),
    [
        ("redis://cache:6379", "redis://cache:6379/2"),
        ("redis://cache:6379/0", "redis://cache:6379/2"),
        ("redis://:secret@cache:6379/5", "redis://:secret@cache:6379/2"),
        (
            "rediss://cache:6380/0?ssl_cert_reqs=required",  # Celery's TLS backend needs the query
            "rediss://cache:6380/2?ssl_cert_reqs=required",
        ),
        ("redis://cache:6379/0?db=0&socket_timeout=5", "redis://cache:6379/2?socket_timeout=5"),
    ],
)
def test_the_result_backend_is_database_2_of_redis_url_with_its_query(redis_url: str, backend: str) -> None:
    settings = Settings(neo4j_uri="bolt://graph:7687", redis_url=redis_url)
    assert redis_urls(settings) == (redis_url, backend)
