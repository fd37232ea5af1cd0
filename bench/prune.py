"""Benchmark: pruning faded edges, the plan before (one statement over all users, repeated) against `prune`.

For each size it starts an empty embedded graph and writes, through the import's own statements,
that many users, each with ``KEPT`` fresh views, and then ``FADED`` views 30 half-lives old, of
items spread over the catalogue: for every user (many faded: the old plan's statements each walk
again, from the first user, every edge they keep) and for ``FEW_USERS`` users only (fewer than
one statement's 10,000 deletions: the usual prune, one pass either way). It times both plans in
the same run, twice each, alternating, best of two, writing the faded views back before each
prune; both must delete exactly the faded views.

    .venv/bin/python -m bench.prune [--sizes 10000,20000] [--work-dir var/bench-prune]
        [--results bench/results/prune.json]
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from bench.scale import paired_result, size_sweep
from graph_schema.statements.dataset_import import SET_INTERACTIONS, UPSERT_UNLISTED_ITEMS, UPSERT_USERS
from graph_schema.statements.events import PRUNE_FADED_EDGES
from kgrec.config import Settings
from kgrec.gateway import GraphGateway
from kgrec.maintenance import PRUNE_BATCH, prune
from kgrec.runtime import graph_session

BATCH = 10_000  # rows per import statement
KEPT = 20  # fresh views per user
FADED = 5  # views per user 30 half-lives old (worth 1e-9: under any threshold)
ITEMS = 5_000
FEW_USERS = 1_000  # users with faded views in the "few" case: 5,000 edges, under one statement's limit


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


def _write(gateway: GraphGateway, rows: list[dict[str, Any]]) -> None:
    gateway.write_batches(SET_INTERACTIONS, rows, batch_size=BATCH, clock="at")


def prune_before(gateway: GraphGateway, settings: Settings, now: int) -> int:
    """The plan before: the statement over every user, run again while it deleted its limit."""
    decay = {"now": now, "half_life_ms": settings.half_life_ms, "threshold": settings.prune_weight_below}
    pruned = 0
    while True:
        deleted = gateway.write(PRUNE_FADED_EDGES, {**decay, "limit": PRUNE_BATCH}).relationships_deleted
        pruned += deleted
        if deleted < PRUNE_BATCH:
            return pruned


def _best_of_two(
    gateway: GraphGateway, settings: Settings, now: int, faded: list[dict[str, Any]]
) -> dict[str, float]:
    """Both plans, twice each, alternating, the faded views written back before each: best times."""
    plans = {
        "before": lambda: prune_before(gateway, settings, now),
        "prune": lambda: prune(gateway, settings, now).edges,
    }
    timings: dict[str, float] = {}
    for name in list(plans) * 2:  # the first prune also warms the engine's caches
        _write(gateway, faded)
        t0 = time.perf_counter()
        pruned = plans[name]()
        timings[name] = min(timings.get(name, float("inf")), time.perf_counter() - t0)
        assert pruned == len(faded), (name, pruned, len(faded))
    return timings


def measure(users: int, work: Path) -> dict[str, Any]:
    """One size: a fresh graph of ``users`` users with ``KEPT`` views each, both plans timed with
    ``FADED`` faded views for every user, then for ``FEW_USERS`` users."""
    shutil.rmtree(work, ignore_errors=True)
    settings = Settings(data_dir=work)
    now = int(time.time() * 1000)
    ids = [f"u{k:09d}" for k in range(users)]
    old = now - int(30 * settings.half_life_ms)
    with graph_session(settings, apply_migrations=True) as gateway:
        gateway.write(UPSERT_UNLISTED_ITEMS, {"ids": [f"i{n:05d}" for n in range(ITEMS)], "now": now})
        for start in range(0, users, BATCH):
            gateway.write(UPSERT_USERS, {"ids": ids[start : start + BATCH], "now": now})
        _write(gateway, _views(ids, 0, KEPT, now))
        many = _best_of_two(gateway, settings, now, _views(ids, KEPT, FADED, old))
        few = _best_of_two(gateway, settings, now, _views(ids[:FEW_USERS], KEPT, FADED, old))
    shutil.rmtree(work, ignore_errors=True)
    fields = {"users": users, "kept_edges": users * KEPT, "faded_edges": users * FADED}
    result = paired_result(fields, many, "before", "prune")
    result["few_faded"] = {
        "faded_edges": FEW_USERS * FADED,
        "before_s": round(few["before"], 3),
        "prune_s": round(few["prune"], 3),
        "ratio": round(few["before"] / few["prune"], 2),
    }
    print(json.dumps({"users": users, "few_faded": result["few_faded"]}), flush=True)
    return result


def main() -> None:
    size_sweep(__doc__, measure, ("before", "prune"), "10000,20000", "bench/results/prune.json")


if __name__ == "__main__":
    main()
