"""Settings read from the environment: every number and flag is checked once, at start-up, and a
bad one is refused in one line that names the variable and the value."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kgrec.config import Settings


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("KGREC_ATTRIBUTION_WINDOW_HOURS", "nan", "must be a number at least 0, not 'nan'"),
        ("KGREC_ATTRIBUTION_WINDOW_HOURS", "-1", "must be a number at least 0, not '-1'"),
        ("KGREC_IMPRESSION_RETENTION_DAYS", "0", "must be a number above 0, not '0'"),
        ("KGREC_HALF_LIFE_DAYS", "inf", "must be a number above 0, not 'inf'"),
        ("KGREC_EXPLORE_SHARE", "abc", "must be a number at least 0 and at most 1, not 'abc'"),
        ("KGREC_EXPLORE_MAX_EVENTS", "x", "must be a whole number at least 0, not 'x'"),
        ("KGREC_GATE_MIN_USERS", "2.5", "must be a whole number at least 1, not '2.5'"),
        ("KGREC_GATE_EXPERIMENT", "ture", "must be true or false (1/0, yes/no, on/off), not 'ture'"),
        # a key is a secret, so not repeated; headers reach the app as Latin-1, so "clé" never matches
        ("KGREC_API_KEYS", "fine,clé", "must hold printable ASCII keys only (one has other characters)"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_variable_and_the_value(
    name: str, value: str, reason: str
) -> None:
    with pytest.raises(ValueError) as refused:
        Settings.from_env({name: value})
    assert str(refused.value) == f"{name} {reason}"


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
