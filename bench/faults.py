"""Benchmark: how fast kgrec answers under faults (the tests check the answers, never their timing).

- Read-only data directory: seconds from ``kgrec db start`` to its one-line error, on a read-only tmpfs.
- Full disk: the data directory on a 24 MB tmpfs; 100-event batches are posted over HTTP until the
  disk is full, then a few more. Reports the latency of the accepted batches and of the 503 answers
  (a full disk must give a quick refusal, not a hang).

Needs root (it mounts tmpfs file systems). Prints a summary and, as its last line, one JSON object.

    .venv/bin/python -m bench.faults [--trials 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from bench.common import percentile, serve_api
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.gateway import open_gateway
from kgrec.migrations import migrate

API_KEY = "faults-key"
REFUSALS_TIMED = 20


def padded_batch(batch: int, size: int = 100, padding: int = 900) -> list[dict[str, Any]]:
    """``size`` valid view events with ``padding`` characters of title each: they fill a disk quickly."""
    now = int(time.time() * 1000)
    return [
        {
            "event_id": f"full-{batch}-{i}",
            "user_id": f"u{i}",
            "item_id": f"item-{batch}-{i}",
            "type": "view",
            "ts": now,
            "item": {"title": "x" * padding},
        }
        for i in range(size)
    ]


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` for the length of a block."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def read_only_start(root: Path, trials: int) -> dict[str, Any]:
    """Seconds ``kgrec db start`` takes to refuse a read-only data directory."""
    seconds = []
    with tmpfs(root / "read-only", "ro,size=1m") as read_only:
        env = {**os.environ, "KGREC_DATA_DIR": str(read_only / "var")}
        for _ in range(trials):
            started = time.monotonic()
            result = subprocess.run(
                [sys.executable, "-m", "kgrec_cli.main", "db", "start"],
                env=env,
                capture_output=True,
                timeout=300,
            )
            seconds.append(time.monotonic() - started)
            assert result.returncode == 1, result.stderr
    return {"trials": trials, "p50_s": round(percentile(seconds, 50), 2), "max_s": round(max(seconds), 2)}


def full_disk(root: Path) -> dict[str, Any]:
    """Latency of accepted batches while a 24 MB disk fills, and of the refusals once it is full."""
    accepted: list[float] = []
    refused: list[float] = []
    statuses: dict[int, int] = {}
    with tmpfs(root / "small-disk", "size=24m") as disk:
        settings = Settings(data_dir=disk / "var")
        server = EmbeddedServer(settings.data_dir)
        server.start()
        try:
            with open_gateway(settings) as gateway:
                migrate(gateway)
            with serve_api(settings.data_dir, API_KEY, 19_500 + os.getpid() % 400) as base:
                for batch in range(2_000):
                    events = padded_batch(batch)
                    started = time.monotonic()
                    response = requests.post(
                        f"{base}/v1/events",
                        json=events,
                        headers={"Authorization": f"Bearer {API_KEY}"},
                        timeout=300,
                    )
                    elapsed = time.monotonic() - started
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    (accepted if response.status_code == 200 else refused).append(elapsed)
                    if len(refused) >= REFUSALS_TIMED:
                        break
        finally:
            server.kill()
    return {
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "accepted_p50_ms": round(percentile(accepted, 50) * 1000, 1),
        "accepted_max_ms": round(max(accepted, default=float("nan")) * 1000, 1),
        "refused_p50_ms": round(percentile(refused, 50) * 1000, 1),
        "refused_max_ms": round(max(refused, default=float("nan")) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kgrec-faults-") as scratch:
        root = Path(scratch)
        read_only = read_only_start(root, args.trials)
        disk = full_disk(root)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "read_only_data_dir": read_only,
        "full_disk": disk,
    }
    print(f"read-only data directory: error after {read_only['p50_s']} s (p50), {read_only['max_s']} s (max)")
    print(
        f"full disk: accepted batches p50 {disk['accepted_p50_ms']} ms; "
        f"503s p50 {disk['refused_p50_ms']} ms, max {disk['refused_max_ms']} ms; statuses {disk['statuses']}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
