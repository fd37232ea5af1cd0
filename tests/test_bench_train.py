"""bench/train.py and bench/gpu_check.py on a KGAT-layout fixture: both models on one device, runs repeatable."""

from __future__ import annotations

from pathlib import Path

from bench.gpu_check import check
from bench.train import measure

FIXTURES = Path(__file__).parent / "fixtures"


def _datasets_dir(tmp_path: Path) -> Path:
    (tmp_path / "kgat-amazon-book").symlink_to(FIXTURES / "kgat_layout", target_is_directory=True)
    return tmp_path


def test_two_same_seed_runs_on_the_cpu_are_identical(tmp_path: Path) -> None:
    result = check(_datasets_dir(tmp_path), "cpu", epochs=2)
    assert result["identical"] and result["item_table_max_abs_difference"] == 0.0
    assert result["losses_first_run"] == result["losses_second_run"]
    assert len(result["seconds_per_epoch"]) == 4  # two epochs of each run
    assert result["item_table_mean_abs_value"] > 0  # a trained table, not an empty one


def test_the_training_bench_times_both_models_in_their_own_process(tmp_path: Path) -> None:
    datasets_dir = _datasets_dir(tmp_path)
    for model in ("kgrec", "lightgcn"):
        figures = measure(model, datasets_dir, "cpu", epochs=1)
        assert figures["seconds_per_epoch"] >= 0 and figures["peak_rss_mb"] > 100
