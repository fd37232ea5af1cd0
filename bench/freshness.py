"""Benchmark: how fast a new event shows up in a user's recommendations (fold-in freshness).

On a fresh embedded stack with Amazon Beauty imported and a model trained,
each trial picks a user and an item they never touched (read from the graph, so a
rerun on the same graph buys new items too), posts a purchase of it
over HTTP, and polls ``GET /v1/users/{id}/recommendations`` until the list
holds one of that item's five strongest neighbours that was not there before.
Latency runs from sending the POST to receiving the first list that reflects it.

    .venv/bin/python -m bench.freshness [--datasets-dir ../shared/data] [--trials 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from bench.common import percentile, serve_api
from graph_schema.statements.serving import USER_HISTORY
from graph_schema.statements.training import TRAINING_USER_IDS
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.embedded import EmbeddedServer
from kgrec.gateway import open_gateway
from kgrec.importer import import_dataset
from kgrec.migrations import migrate
from kgrec.model_store import ActiveModel
from kgrec.recommender import HistoryEntry, Recommender
from workers.training.config import TrainConfig
from workers.training.job import start_training
from workers.training.subgraph import all_ids

KEY = "freshness-key"
TOUCHED_LIMIT = 10_000
POLL_S = 0.005
TIMEOUT_S = 5.0


def touched_items(settings: Settings) -> Callable[[str], set[str]]:
    """A user's items in the graph now: a trial must buy something new to them, also when a
    rerun on the same graph draws the same users as a run before it."""

    def touched(user_id: str) -> set[str]:
        with open_gateway(settings) as gateway:
            rows = gateway.read(USER_HISTORY, {"user_id": user_id, "limit": TOUCHED_LIMIT})
        return {r["item_id"] for r in rows}

    return touched


def measure(
    base: str,
    model: Recommender,
    users: list[str],
    trials: int,
    rng: random.Random,
    tag: str,
    touched: Callable[[str], set[str]],
) -> tuple[list[float], int]:
    """Post ``trials`` purchases to the API at ``base`` and time each until it shows in a list.

    Returns the latencies (seconds) of the trials that were reflected and how many
    were not within 5 s. ``tag`` goes into the event ids: a rerun on the same
    graph needs a new one, since the API drops events whose id it has seen.
    ``touched(user)`` gives the items a user has already (:func:`touched_items`).
    """
    session = requests.Session()
    latencies: list[float] = []
    failures = 0
    for trial in range(trials):
        user = rng.choice(users)
        url = f"{base}/v1/users/{quote(user, safe='')}/recommendations?k=20"
        before = {r["item_id"] for r in session.get(url, timeout=10).json()["items"]}
        had = touched(user)
        while True:
            item = rng.choice(model.artifacts.item_ids)
            nearest = model.recommend([[HistoryEntry(item, 5.0, 1)]], 5, [[item]])[0]
            neighbours = {i for i, _ in nearest} - before - had
            if item not in before and item not in had and neighbours:
                break
        event = {
            "event_id": f"fresh-{tag}-{trial}",
            "user_id": user,
            "item_id": item,
            "type": "purchase",
            "ts": int(time.time() * 1000),
        }
        sent = time.perf_counter()
        posted = session.post(
            f"{base}/v1/events", json=[event], headers={"Authorization": f"Bearer {KEY}"}, timeout=10
        )
        assert posted.status_code == 200, posted.text
        while True:
            items = {r["item_id"] for r in session.get(url, timeout=10).json()["items"]}
            elapsed = time.perf_counter() - sent
            if items & neighbours:
                latencies.append(elapsed)
                break
            if elapsed > TIMEOUT_S:
                failures += 1
                break
            time.sleep(POLL_S)
    return latencies, failures


def summarise(latencies: list[float], failures: int) -> dict[str, Any]:
    """Trial counts and latency percentiles in milliseconds."""
    return {
        "trials": len(latencies) + failures,
        "reflected": len(latencies),
        "not_reflected_within_5s": failures,
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p95_ms": round(percentile(latencies, 95) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
    }


def run(datasets_dir: Path, trials: int, seed: int) -> dict[str, Any]:
    """Import Amazon Beauty into a fresh embedded graph, train once, then time ``trials`` fold-ins."""
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="kgrec-fresh-") as scratch:
        settings = Settings(data_dir=Path(scratch), datasets_dir=datasets_dir)
        server = EmbeddedServer(settings.data_dir)
        server.start()
        try:
            with open_gateway(settings) as gateway:
                migrate(gateway)
                import_dataset(gateway, open_dataset("amazon-beauty", datasets_dir), settings)
                start_training(gateway, settings, TrainConfig(), device="cpu")
                model = ActiveModel(gateway, settings.data_dir).get()
                assert model is not None
                users = all_ids(gateway, TRAINING_USER_IDS)
            with serve_api(settings.data_dir, KEY, 19_000 + os.getpid() % 1000) as base:
                touched = touched_items(settings)
                latencies, failures = measure(base, model, users, trials, rng, str(seed), touched)
        finally:
            server.stop()
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "data": "Amazon Beauty (22,363 users, 12,101 items, 198,502 interactions), model trained once",
        **summarise(latencies, failures),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets-dir", "--data-dir", dest="datasets_dir", type=Path, default=Path("../shared/data")
    )
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = run(args.datasets_dir, args.trials, args.seed)
    print(
        f"freshness: p50 {result['p50_ms']} ms, p95 {result['p95_ms']} ms over {result['reflected']} "
        f"of {result['trials']} trials ({result['not_reflected_within_5s']} not reflected within 5 s)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
