"""bench/train.py, bench/gpu_check.py and bench/loss_passes.py on a KGAT-layout fixture: runs repeatable."""

from __future__ import annotations

from pathlib import Path

from bench.gpu_check import check
from bench.loss_passes import compare
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


def test_the_loss_pass_bench_trains_both_settings_to_the_same_tables(tmp_path: Path) -> None:
    result = compare(_datasets_dir(tmp_path), "cpu")
    one, stacked = result["one_chunk_per_pass"], result["stacked_passes"]
    assert (one["chunks_per_pass"], stacked["chunks_per_pass"]) == (1, 16)
    assert one["operators_per_epoch"] > 0 and one["peak_rss_mb"] > 100
    # A smoke test of the bench: the fixture's few examples fit one chunk, so both settings run the
    # very same operators (tests/test_kg_model.py checks stacking itself)
    assert stacked["operators_per_epoch"] == one["operators_per_epoch"]
    assert result["item_tables_max_abs_difference"] == 0.0 and result["item_tables_max_abs_entry"] > 0
