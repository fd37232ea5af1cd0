"""Benchmark: pruning faded edges, one batch of every user against batches of ``PruneBatch.users`` users.

For each size it starts an empty embedded graph and writes, through the import's own statements,
that many users, each with ``KEPT`` fresh views and then ``FADED`` views 30 half-lives old, of
items spread over the catalogue. It then times ``kgrec.maintenance.prune`` in the same run, twice
each, alternating, best of two, writing the faded views back before each prune: with one batch of
every user (the plan before: each statement of at most ``PRUNE_BATCH`` deletions walks the users
from the first, through every edge it keeps, so a prune costs batches × edges) and with the
default batches (each statement reads only its users' edges: every edge once). Both must delete
exactly the faded views.

    .venv/bin/python -m bench.prune [--sizes 10000,20000] [--work-dir var/bench-prune]
        [--results bench/results/prune.json]
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from bench.scale import paired_result, size_sweep
from graph_schema.statements.dataset_import import SET_INTERACTIONS, UPSERT_UNLISTED_ITEMS, UPSERT_USERS
from kgrec.config import Settings
from kgrec.gateway import GraphGateway
from kgrec.maintenance import PruneBatch, prune
from kgrec.runtime import graph_session

BATCH = 10_000  # rows per import statement
KEPT = 20  # fresh views per user
FADED = 5  # views per user 30 half-lives old (worth 1e-9: under any threshold)
ITEMS = 5_000


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
    for start in range(0, len(rows), BATCH):
        gateway.write(SET_INTERACTIONS, {"rows": rows[start : start + BATCH]})


def measure(users: int, work: Path) -> dict[str, Any]:
    """One size: a fresh graph of ``users`` users with ``KEPT`` + ``FADED`` views each, both prunes timed."""
    shutil.rmtree(work, ignore_errors=True)
    settings = Settings(data_dir=work)
    now = int(time.time() * 1000)
    ids = [f"u{k:09d}" for k in range(users)]
    faded = _views(ids, KEPT, FADED, now - int(30 * settings.half_life_ms))
    timings: dict[str, float] = {}
    pruned: dict[str, int] = {}
    with graph_session(settings, apply_migrations=True) as gateway:
        gateway.write(UPSERT_UNLISTED_ITEMS, {"ids": [f"i{n:05d}" for n in range(ITEMS)], "now": now})
        for start in range(0, users, BATCH):
            gateway.write(UPSERT_USERS, {"ids": ids[start : start + BATCH], "now": now})
        _write(gateway, _views(ids, 0, KEPT, now))
        # twice each, alternating, best of two: the first prune also warms the engine's caches
        for name, batch in [("one_batch", users), ("batches", PruneBatch.users)] * 2:
            _write(gateway, faded)
            t0 = time.perf_counter()
            pruned[name] = prune(gateway, settings, now, PruneBatch(users=batch)).edges
            timings[name] = min(timings.get(name, float("inf")), time.perf_counter() - t0)
    shutil.rmtree(work, ignore_errors=True)
    assert pruned == {"one_batch": len(faded), "batches": len(faded)}, pruned
    fields = {"users": users, "kept_edges": users * KEPT, "faded_edges": len(faded)}
    return paired_result(fields, timings, "one_batch", "batches")


def main() -> None:
    size_sweep(__doc__, measure, ("one_batch", "batches"), "10000,20000", "bench/results/prune.json")


if __name__ == "__main__":
    main()
