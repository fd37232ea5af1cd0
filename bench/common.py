"""Shared by the benchmarks: a gunicorn API on a data directory, for the length of a block."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import requests

from kgrec_cli.stack import gunicorn_command


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
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or busy starting
                time.sleep(0.1)
        yield base
    finally:
        api.terminate()
        api.wait()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), by linear interpolation; NaN for no values."""
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


_BUCKET = re.compile(
    r'^kgrec_http_request_duration_seconds_bucket\{endpoint="([^"]+)",le="([^"]+)"\} ([0-9.e+]+)$'
)


def server_histogram(base_url: str) -> dict[str, dict[float, float]]:
    """The API's own latency histogram (cumulative counts per bucket bound, seconds) per route."""
    histogram: dict[str, dict[float, float]] = {}
    for line in requests.get(f"{base_url}/metrics", timeout=30).text.splitlines():
        match = _BUCKET.match(line)
        if match:
            route, bound, count = match.groups()
            histogram.setdefault(route, {})[float(bound)] = float(count)
    return histogram


def server_side(before: dict[float, float], after: dict[float, float]) -> dict[str, float | int]:
    """Requests the server itself answered between two scrapes, and how many took over 20 / 100 ms.

    Read beside the load generator's figures, it tells queueing and stalls
    inside the API (its handler time) from time spent before a request reached it.
    """
    delta = {bound: after.get(bound, 0.0) - before.get(bound, 0.0) for bound in after}
    total = int(delta.get(float("inf"), 0.0))
    return {
        "requests": total,
        "over_20ms": total - int(delta.get(0.02, 0.0)),
        "over_100ms": total - int(delta.get(0.1, 0.0)),
    }
