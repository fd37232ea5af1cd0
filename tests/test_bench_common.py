"""bench/common.py's helpers as the benches call them: ``parsed_device`` gives a device name and
``serve_api`` is a context manager around a real gunicorn (both broke once, unnoticed, because
the benches' tests call the measuring functions, not ``main``)."""

from __future__ import annotations

import argparse

import pytest
import requests
import torch

from bench.common import parsed_device, serve_api
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from tests.processes import free_port


def test_parsed_device_is_the_device_name() -> None:
    parser = argparse.ArgumentParser()
    assert parsed_device(parser, "cpu") == "cpu"
    assert parsed_device(parser, "auto") == ("cuda" if torch.cuda.is_available() else "cpu")


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
