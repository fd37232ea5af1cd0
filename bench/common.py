"""Shared by the benchmarks: a gunicorn API on a data directory, for the length of a block."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import requests

from kgrec.stack import gunicorn_command


@contextlib.contextmanager
def serve_api(data_dir: Path, api_key: str, port: int) -> Iterator[str]:
    """Run ``kgrec``'s API (gunicorn 2 workers x 4 threads); yields its base URL once it answers."""
    env = {**os.environ, "KGREC_DATA_DIR": str(data_dir), "KGREC_API_KEYS": api_key}
    api = subprocess.Popen(
        gunicorn_command("127.0.0.1", port, 2, 4),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield base
    finally:
        api.terminate()
        api.wait()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), by linear interpolation; NaN for no values."""
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")
