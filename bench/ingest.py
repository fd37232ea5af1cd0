"""Benchmark: sustained events/s through ``kgrec events import`` and through ``POST /v1/events``.

Data: MovieLens ml-latest-small's 100,836 real, timestamped ratings, as events.
- Importer: the same code path as the CLI, in batches of 10,000, once with
  ``appendfsync always`` (the default, no acknowledged event lost on kill -9)
  and once with ``everysec`` in the same run, to show what durability costs.
- API: gunicorn (2 workers x 4 threads) on the embedded server, several client
  threads posting 1,000-event batches over real HTTP.

Prints a summary and, as its last line, one JSON object.

    .venv/bin/python -m bench.ingest [--datasets-dir ../shared/data] [--clients 4]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench.common import serve_api
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.events.bulk import import_events
from kgrec.gateway import open_gateway
from kgrec.migrations import migrate

API_KEY = "bench-key"
API_BATCH = 1_000


def ratings(datasets_dir: Path) -> list[dict[str, str]]:
    """MovieLens ratings as rows of kgrec's CSV event layout."""
    with open(datasets_dir / "movielens-ml-latest-small" / "ratings.csv", newline="") as handle:
        return [
            {
                "event_id": f"ml-{i}",
                "user_id": r["userId"],
                "item_id": r["movieId"],
                "type": "rating",
                "ts": str(int(r["timestamp"]) * 1000),  # MovieLens gives seconds; kgrec takes ms
                "value": r["rating"],
            }
            for i, r in enumerate(csv.DictReader(handle))
        ]


def write_events_csv(rows: list[dict[str, str]], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def fresh_server(root: Path, fsync: str) -> tuple[Settings, EmbeddedServer]:
    settings = Settings(data_dir=root, aof_fsync=fsync)
    server = EmbeddedServer(settings.data_dir, fsync)
    server.start()
    with open_gateway(settings) as gateway:
        migrate(gateway)
    return settings, server


def bench_importer(rows: list[dict[str, str]], scratch: Path, fsync: str) -> dict[str, Any]:
    path = scratch / "events.csv"
    write_events_csv(rows, path)
    settings, server = fresh_server(scratch / f"var-{fsync}", fsync)
    try:
        with open_gateway(settings) as gateway:
            summary = import_events(gateway, path, "csv", settings)
    finally:
        server.stop()
    return {
        "events": summary.rows,
        "applied": summary.applied,
        "seconds": round(summary.seconds, 2),
        "events_per_s": round(summary.events_per_second),
    }


def bench_api(rows: list[dict[str, str]], scratch: Path, clients: int) -> dict[str, Any]:
    settings, server = fresh_server(scratch / "var-api", "always")
    try:
        with serve_api(settings.data_dir, API_KEY, 18_000 + os.getpid() % 1000) as url:
            events = [
                {
                    "event_id": r["event_id"],
                    "user_id": r["user_id"],
                    "item_id": r["item_id"],
                    "type": "rating",
                    "ts": int(r["ts"]),
                    "value": float(r["value"]),
                }
                for r in rows
            ]
            batches = [events[i : i + API_BATCH] for i in range(0, len(events), API_BATCH)]
            cursor = iter(range(len(batches)))
            lock = threading.Lock()
            errors: list[str] = []
            latencies: list[float] = []

            def client() -> None:
                session = requests.Session()
                headers = {"Authorization": f"Bearer {API_KEY}"}
                while True:
                    with lock:
                        index = next(cursor, None)
                    if index is None:
                        return
                    sent = time.perf_counter()
                    response = session.post(
                        f"{url}/v1/events", json={"events": batches[index]}, headers=headers, timeout=60
                    )
                    with lock:
                        latencies.append(time.perf_counter() - sent)
                        if response.status_code != 200:
                            errors.append(f"{response.status_code}: {response.text[:200]}")

            started = time.perf_counter()
            threads = [threading.Thread(target=client) for _ in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - started
    finally:
        server.stop()
    latencies.sort()
    return {
        "events": len(events),
        "batches": len(batches),
        "clients": clients,
        "errors": len(errors),
        "seconds": round(seconds, 2),
        "events_per_s": round(len(events) / seconds),
        "batch_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "batch_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets-dir", "--data-dir", dest="datasets_dir", type=Path, default=Path("../shared/data")
    )
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    rows = ratings(args.datasets_dir)
    with tempfile.TemporaryDirectory(prefix="kgrec-ingest-") as scratch:
        root = Path(scratch)
        always = bench_importer(rows, root, "always")
        everysec = bench_importer(rows, root, "everysec")
        api = bench_api(rows, root, args.clients)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "data": "MovieLens ml-latest-small ratings (100,836 events, 610 users, 9,724 items)",
        "importer_fsync_always": always,
        "importer_fsync_everysec": everysec,
        "fsync_always_cost": round(everysec["events_per_s"] / always["events_per_s"], 2),
        "api": api,
    }
    print(f"importer (appendfsync always):   {always['events_per_s']:,} events/s")
    print(f"importer (appendfsync everysec): {everysec['events_per_s']:,} events/s")
    print(
        f"API ({args.clients} clients, {API_BATCH}-event batches): {api['events_per_s']:,} events/s, "
        f"{api['errors']} errors, batch p99 {api['batch_p99_ms']} ms"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
