"""bench/common.py's helpers as the benches call them: ``parsed_device`` gives a device name and
``serve_api`` is a context manager around a real gunicorn (both broke once, unnoticed, because
the benches' tests call the measuring functions, not ``main``); and benches' ``main`` run from their
command line at the smallest inputs their options allow, or refusing the ones they cannot run."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import requests
import torch

from bench import api, audience_export, catalogue_snapshot, import_steps, prune, softmax
from bench.common import parsed_device, positive_number, serve_api
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from tests.processes import free_port


def test_parsed_device_is_the_device_name() -> None:
    parser = argparse.ArgumentParser()
    assert parsed_device(parser, "cpu") == "cpu"
    assert parsed_device(parser, "auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.5", 0.5),
        ("300", 300.0),
        ("0", None),
        ("-1", None),
        ("nan", None),
        ("inf", None),
        ("1e400", None),
        ("x", None),
        ("", None),
    ],
)
def test_positive_number_takes_only_numbers_above_zero(text: str, value: float | None) -> None:
    assert positive_number(text) == value


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_parsed_device_refuses_cuda_without_a_gpu_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        parsed_device(argparse.ArgumentParser(prog="bench"), "cuda")
    assert exited.value.code == 2
    assert "cuda" in capsys.readouterr().err.lower()


def test_serve_api_yields_the_url_of_an_answering_api_and_stops_it(
    own_server: tuple[EmbeddedServer, Settings],
) -> None:
    _, settings = own_server
    with serve_api(settings.data_dir, "bench-key", free_port()) as base:
        assert requests.get(f"{base}/healthz", timeout=10).ok
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/healthz", timeout=2)


SMALL_CATALOGUE = ["--items", "200", "--changed", "20", "--brands", "10", "--categories", "30"]


def test_the_catalogue_snapshot_bench_runs_from_its_command_line_with_two_repeats(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["bench.catalogue_snapshot", *SMALL_CATALOGUE, "--repeat", "2"])
    catalogue_snapshot.main()
    result = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (result["items"], result["changed_items"]) == (200, 20)
    assert result["rebuilt_ms_median"] > 0 and result["ratio"] > 0  # both kinds of write were timed


@pytest.mark.parametrize(
    ("option", "value"), [("--repeat", "1"), ("--changed", "0"), ("--changed", "201"), ("--categories", "20")]
)
def test_the_catalogue_snapshot_bench_refuses_what_it_cannot_run_naming_the_option(
    option: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # --repeat 1 times no price write (no median), --changed 0 or above --items has no changed
    # items to write, and 20 categories are all roots, with no leaf to put an item in
    argv = [*SMALL_CATALOGUE, "--repeat", "2"]
    argv[argv.index(option) + 1] = value
    monkeypatch.setattr(sys, "argv", ["bench.catalogue_snapshot", *argv])
    with pytest.raises(SystemExit) as exited:
        catalogue_snapshot.main()
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert option in error and f"not {value}" in error


@pytest.mark.parametrize("names", ["movielens,movielns", "movielns,movielens"])
def test_the_softmax_bench_refuses_a_data_set_it_cannot_find_before_training_any(
    names: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # movielns was found missing only once movielens had trained both variants
    folder = tmp_path / "movielens-ml-latest-small"
    folder.mkdir()
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4.0,964982703\n")
    argv = ["bench.softmax", "--datasets", names, "--datasets-dir", str(tmp_path), "--epochs", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        softmax.main()
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("bench.softmax: error: --datasets:") and "'movielns'" in error


def test_the_api_bench_refuses_rates_it_cannot_offer_before_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # an unknown endpoint failed only after the import, the training and the warm-up
    argv = [
        "bench.api",
        "--work-dir",
        str(tmp_path),
        "--datasets-dir",
        str(tmp_path),
        "--rates",
        "similar=9,recs=9",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        api.main()
    assert exited.value.code == 2 and "'recs=9'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
    assert api._parse_rates("recommendations=300,explanation=0.5") == {
        "recommendations": 300,
        "explanation": 0.5,
    }
    assert api._parse_rates("") == {}  # --rates '': only the impression rounds


@pytest.mark.parametrize(
    ("module", "sizes"), [(audience_export, "100,x"), (prune, "100,x"), (import_steps, "0.01,x")]
)
def test_a_size_that_is_not_a_number_is_refused_before_the_first_size_runs(
    module: object,
    sizes: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # it was read only after every size before it had run (import_steps: the 1x and 4x imports)
    argv = ["bench", "--sizes", sizes, "--work-dir", str(tmp_path), "--results", str(tmp_path / "r.json")]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        module.main()  # type: ignore[attr-defined]
    assert exited.value.code == 2 and "--sizes" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
