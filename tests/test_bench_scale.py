"""bench/scale.py's arithmetic and its resume rule (the measurements themselves live in bench/, untested)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from bench import round_stats, scale
from bench.common import in_fresh_process
from kgrec.embedded import IMPRESSIONS_DIR


def test_growth_exponent_recovers_the_power_of_a_power_law() -> None:
    sizes = [0.25e6, 1e6, 4e6]
    assert scale.growth_exponent(sizes, [3.0 * s**1.0 for s in sizes]) == pytest.approx(1.0)
    assert scale.growth_exponent(sizes, [7.0 * s**1.5 for s in sizes]) == pytest.approx(1.5)
    assert scale.growth_exponent(sizes, [5.0, 5.0, 5.0]) == pytest.approx(0.0, abs=1e-12)


def test_growth_exponent_is_a_least_squares_fit_on_log_log() -> None:
    # log2 sizes 0, 1, 2 and log2 costs 0, 2, 2: the least-squares slope is 1
    assert scale.growth_exponent([1, 2, 4], [1, 4, 4]) == pytest.approx(1.0)


def test_growth_exponent_leaves_out_missing_points_and_needs_two_sizes() -> None:
    assert scale.growth_exponent([1, 2, 4], [None, 2.0, 4.0]) == pytest.approx(1.0)
    assert scale.growth_exponent([1, 2, 4], [0.0, float("nan"), 4.0]) is None
    assert scale.growth_exponent([1, 1], [1.0, 2.0]) is None


def test_extrapolation_follows_the_fitted_power_law() -> None:
    sizes = [0.25e6, 1e6, 4e6]
    costs = [2.0 * (s / 1e6) ** 1.2 for s in sizes]  # 2 s per million events, growing as size^1.2
    assert scale.extrapolate(sizes, costs, 100e6) == pytest.approx(2.0 * 100**1.2)
    assert scale.extrapolate([1e6], [2.0], 100e6) is None


def test_memory_per_million_is_the_slope_without_the_fixed_part() -> None:
    counts = [0.5e6, 1e6, 2e6]
    megabytes = [300 + 120 * n / 1e6 for n in counts]  # 300 MB of code, 120 MB per million
    assert scale.marginal_per_million(counts, megabytes) == pytest.approx(120.0)
    assert scale.marginal_per_million([1e6], [400.0]) is None


def test_round_ratios_are_summarised_by_their_geometric_mean_and_a_bootstrap_interval() -> None:
    summary = round_stats.ratio_summary([0.5, 2.0, 1.0, 1.0])
    assert summary["rounds"] == 4
    assert summary["geometric_mean"] == pytest.approx(1.0)
    low, high = summary["ci95"]
    assert 0.5 <= low < 1.0 < high <= 2.0
    assert summary["within_2x"] == 4
    # one stalled round moves the mean by its fourth root, and only it is outside the bound
    stalled = round_stats.ratio_summary([1.0, 1.0, 1.0, 16.0])
    assert stalled["geometric_mean"] == pytest.approx(2.0)
    assert stalled["within_2x"] == 3
    assert round_stats.ratio_summary([])["geometric_mean"] is None


def test_the_round_ratio_goal_holds_only_when_the_intervals_upper_end_does() -> None:
    def report(ratios: list[float]) -> dict[str, object]:
        return {
            "endpoints": {
                "similar": {"p99_ratio": 1.0, "round_ratio_summary": round_stats.ratio_summary(ratios)}
            }
        }

    assert scale.interleaved_goals(report([1.0, 1.2, 0.9, 1.1]))[
        "similar_p99_round_ratio_upper_ci95_within_2x"
    ]
    spread = scale.interleaved_goals(report([1.0, 0.5, 3.0, 6.0]))
    assert spread["similar_p99_round_ratio_upper_ci95_within_2x"] is False
    assert spread["similar_p99_interleaved_within_2x"] is True


def test_stolen_share_is_the_steal_ticks_over_all_ticks() -> None:
    assert round_stats.stolen_share((10, 1000), (30, 1200)) == pytest.approx(0.1)
    assert round_stats.stolen_share((0, 0), (0, 0)) is None
    stolen, total = round_stats.cpu_ticks()
    assert 0 <= stolen <= total


def test_the_steal_adjusted_ratio_separates_size_from_stolen_cpu() -> None:
    # p99 = 20 ms × 1.5 on the larger side × 1.2 per stolen percent; the larger side was
    # stolen from less, so its raw p99 ratio (about 1.0) hides the size effect
    steal = {False: [0.01, 0.03, 0.05, 0.04, 0.06], True: [0.0, 0.01, 0.02, 0.01, 0.03]}
    turns = [
        (second, share, 20.0 * (1.5 if second else 1.0) * 1.2 ** (100 * share))
        for second, shares in steal.items()
        for share in shares
    ]
    adjusted = round_stats.steal_adjusted_ratio(turns)
    assert adjusted["turns"] == 10
    assert adjusted["ratio"] == pytest.approx(1.5, abs=1e-3)
    assert adjusted["per_stolen_percent"] == pytest.approx(1.2, abs=1e-3)
    low, high = adjusted["ci95"]
    assert low == pytest.approx(1.5, abs=1e-3) and high == pytest.approx(1.5, abs=1e-3)
    # without a spread in stolen CPU, or with one side only, nothing can be separated
    assert round_stats.steal_adjusted_ratio([(s, 0.01, 20.0) for s in (False, True) * 3])["ratio"] is None
    assert round_stats.steal_adjusted_ratio([(False, x / 100, 20.0) for x in range(6)])["ratio"] is None


def _args(tmp_path: Path, **changes: object) -> argparse.Namespace:
    options = {
        "seed": 7,
        "epochs": 1,
        "device": "cpu",
        "rates": "recommendations=10",
        "duration": 1.0,
        "coverage_users": 1,
        "trials": 1,
        "work_dir": tmp_path,
        "resume": True,
    }
    return argparse.Namespace(**{**options, **changes})


def test_resume_skips_finished_stages_and_reruns_from_the_first_changed_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []

    def fake(stage: str):  # stands in for a measurement: records that it ran
        def run(_run: scale.SizeRun, _args: argparse.Namespace) -> dict[str, str]:
            ran.append(stage)
            return {"stage": stage}

        return run

    monkeypatch.setattr(scale, "STAGE_FUNCTIONS", {stage: fake(stage) for stage in scale.STAGES})

    scale.run_size(0.01, _args(tmp_path, resume=False))
    assert ran == list(scale.STAGES)

    ran.clear()
    scale.run_size(0.01, _args(tmp_path))
    assert ran == []

    ran.clear()
    stages = scale.run_size(0.01, _args(tmp_path, duration=2.0))  # the api stage's option changed
    assert ran == ["api", "freshness", "restart"]
    assert stages["api"]["options"]["duration"] == 2.0

    ran.clear()
    scale.run_size(0.01, _args(tmp_path, duration=2.0, resume=False))  # without --resume: all again
    assert ran == list(scale.STAGES)


def _allocate(megabytes: int) -> int:
    block = bytearray(megabytes * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page, so it is resident
    return len(block)


def test_a_fresh_process_reports_its_own_peak_not_its_parents() -> None:
    ballast = bytearray(300 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])
    size, peak_mb = in_fresh_process(_allocate, 100)
    assert size == 100 * 2**20
    # its own 100 MB and an interpreter, but not this process's 300 MB (ru_maxrss would include them)
    assert 100 <= peak_mb < 250


def test_a_graph_server_that_does_not_come_back_is_recorded_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The restart stage on a real embedded server whose files are broken while it is down."""
    run = scale.SizeRun(0.01, tmp_path, scale.stage_options(0.01, _args(tmp_path)), resume=False)
    server = run.server()
    stop = server.stop

    def stop_and_break() -> None:
        stop()
        for aof in server.dir.rglob("*.aof"):
            if IMPRESSIONS_DIR not in aof.relative_to(server.dir).parts:  # the graph's own files
                aof.write_bytes(b"not a command\r\n")

    run.running_pid()
    monkeypatch.setattr(server, "stop", stop_and_break)
    try:
        result = scale.stage_restart(run, _args(tmp_path))
    finally:
        stop()
    assert "restart_s" not in result and "graph_after" not in result
    assert "graph server" in result["failed"], result


@pytest.mark.parametrize("rates", ["recomendations=60", "similar=x", "explanation=0"])
def test_rates_it_cannot_offer_are_refused_before_any_size_is_generated(
    rates: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # they were read only at the first size's api stage, after generating, importing and training it
    argv = ["bench.scale", "--sizes", "0.01", "--work-dir", str(tmp_path), "--rates", rates]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        scale.main()
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert "--rates" in error and repr(rates) in error
    assert not any(tmp_path.iterdir())  # nothing generated
