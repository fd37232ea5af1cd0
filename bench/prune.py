"""Benchmark: a prune by user batches with every user id held against pages of ids (`prune`).

For each size it starts an empty embedded graph and writes, through the import's own statements,
that many users (random 12-character ids mixing cases, digits and ``._:``, as
``bench.training_pull``), each with ``KEPT`` fresh views and then ``FADED`` views 30 half-lives
old: more than one statement's 10,000 deletions, so the prune goes by user batches. It runs, in
the same run, alternating, twice each, the faded views written back before each: ``one_read``
(``prune`` with one page of every user id, the memory of the plan before 2026-12-07, which read
every id in one statement and held them) and ``paged`` (``prune`` as it runs: pages of
``PRUNE_PAGE`` ids); best time of two, then once more each under tracemalloc for the peak of
Python memory the prune allocated. Both must delete exactly the faded views.

    .venv/bin/python -m bench.prune [--sizes 10000,30000,90000] [--work-dir var/bench-prune]
        [--results bench/results/prune-pages.json]
"""

from __future__ import annotations

import json
import random
import shutil
import string
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.scale import paired_result, size_sweep
from graph_schema.statements.dataset_import import SET_INTERACTIONS, UPSERT_UNLISTED_ITEMS, UPSERT_USERS
from kgrec.config import Settings
from kgrec.gateway import GraphGateway
from kgrec.maintenance import PRUNE_PAGE, prune
from kgrec.runtime import graph_session

BATCH = 10_000  # rows per import statement
KEPT = 20  # fresh views per user
FADED = 5  # views per user 30 half-lives old (worth 1e-9: under any threshold)
ITEMS = 5_000
ID_CHARACTERS = string.ascii_letters + string.digits + "._:"


def _views(users: list[str], first: int, count: int, ts: int) -> list[dict[str, Any]]:
    return [
        {
            "user_id": user,
            "item_id": f"i{(k * 7 + n) % ITEMS:05d}",
            "counts": {"n_view": 1},
            "first_ts": ts,
            "last_ts": ts,
            "last_seq": 0,
            "rating": None,
            "rating_ts": None,
            "weight": 1.0,
            "weight_ts": ts,
        }
        for k, user in enumerate(users)
        for n in range(first, first + count)
    ]


def _write(gateway: GraphGateway, users: list[str], first: int, count: int, ts: int) -> None:
    for start in range(0, len(users), BATCH // count):
        rows = _views(users[start : start + BATCH // count], first, count, ts)
        gateway.write(SET_INTERACTIONS, {"rows": rows, "at": ts})


def _peak_mb(run: Callable[[], int]) -> tuple[int, float]:
    tracemalloc.start()
    try:
        pruned = run()
        return pruned, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def measure(users: int, work: Path) -> dict[str, Any]:
    """One size: a fresh graph of ``users`` users with ``KEPT`` views each and ``FADED`` faded ones,
    both prunes timed and their peak Python memory taken."""
    shutil.rmtree(work, ignore_errors=True)
    settings = Settings(data_dir=work)
    now = int(time.time() * 1000)
    rng = random.Random(users)
    ids: list[str] = sorted({"".join(rng.choices(ID_CHARACTERS, k=12)) for _ in range(users)})
    old = now - int(30 * settings.half_life_ms)
    with graph_session(settings, apply_migrations=True) as gateway:
        gateway.write(UPSERT_UNLISTED_ITEMS, {"ids": [f"i{n:05d}" for n in range(ITEMS)], "now": now})
        for start in range(0, len(ids), BATCH):
            gateway.write(UPSERT_USERS, {"ids": ids[start : start + BATCH], "now": now})
        _write(gateway, ids, 0, KEPT, now)
        plans = {
            "one_read": lambda: prune(gateway, settings, now, page=len(ids) + 1).edges,
            "paged": lambda: prune(gateway, settings, now).edges,
        }
        timings: dict[str, float] = {}
        peaks: dict[str, float] = {}
        for name in list(plans) * 2:  # the first prune also warms the engine's caches
            _write(gateway, ids, KEPT, FADED, old)
            t0 = time.perf_counter()
            pruned = plans[name]()
            timings[name] = min(timings.get(name, float("inf")), time.perf_counter() - t0)
            assert pruned == len(ids) * FADED, (name, pruned)
        for name in plans:
            _write(gateway, ids, KEPT, FADED, old)
            pruned, peaks[name] = _peak_mb(plans[name])
            assert pruned == len(ids) * FADED, (name, pruned)
    shutil.rmtree(work, ignore_errors=True)
    fields = {"users": len(ids), "kept_edges": len(ids) * KEPT, "faded_edges": len(ids) * FADED}
    result = paired_result(fields, timings, "one_read", "paged")
    result["peak_mb"] = {name: round(peak, 2) for name, peak in peaks.items()}
    result["peak_ratio"] = round(peaks["one_read"] / peaks["paged"], 2)
    result["page"] = PRUNE_PAGE
    print(json.dumps({"users": len(ids), "peak_mb": result["peak_mb"], "peak_ratio": result["peak_ratio"]}))
    return result


def main() -> None:
    size_sweep(__doc__, measure, ("one_read", "paged"), "10000,30000,90000", "bench/results/prune-pages.json")


if __name__ == "__main__":
    main()
