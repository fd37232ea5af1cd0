"""Benchmark: reading a model version's folded-in items, by a walk of its embeddings against the index.

For each size it starts an empty embedded graph and writes, through the training's and the
fold-in's own statements, one version with that many trained item embeddings (``DIM`` floats)
and ``FOLDED`` items folded in after training. It then times, in the same run, alternating,
``ROUNDS`` times each, best of them: ``FOLDED_ITEMS_BY_WALK`` (the read before 2026-12-07: every
EMBEDDING edge of the version, ``folded_at IS NOT NULL``) and ``FOLDED_ITEMS`` (the folded edges
of the version through the index on ``EMBEDDING.folded_version``), the read every serving process
makes when it loads a version or sees ``folded_at`` move. Both must return the same rows.

    .venv/bin/python -m bench.folded_items [--sizes 20000,80000,320000]
        [--work-dir var/bench-folded-items] [--results bench/results/folded-items.json]
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from bench.scale import paired_result, size_sweep
from graph_schema.allow_list import Label
from graph_schema.bench_statements import FOLDED_ITEMS_BY_WALK
from graph_schema.statements.dataset_import import UPSERT_UNLISTED_ITEMS
from graph_schema.statements.models import (
    CREATE_VERSION,
    FOLDED_ITEMS,
    WRITE_EMBEDDINGS,
    WRITE_FOLDED_ITEMS,
)
from kgrec.config import Settings
from kgrec.runtime import graph_session

BATCH = 10_000  # rows per write statement
DIM = 16  # floats per vector (the walk reads no vector but the folded ones)
FOLDED = 100  # items folded in after training
ROUNDS = 5
VERSION = "v-bench"
OWNER = "bench"


def _vector(k: int) -> list[float]:
    return [((k * 31 + d) % 97) / 97.0 for d in range(DIM)]


def measure(items: int, work: Path) -> dict[str, Any]:
    """One size: a fresh graph with a version of ``items`` trained items and ``FOLDED`` folded ones,
    both reads timed."""
    shutil.rmtree(work, ignore_errors=True)
    settings = Settings(data_dir=work)
    now = int(time.time() * 1000)
    with graph_session(settings, apply_migrations=True) as gateway:
        gateway.write(
            CREATE_VERSION,
            {
                "id": VERSION,
                "owner": OWNER,
                "now": now,
                "data_until": now,
                "parameters": "{}",
                "counts": "{}",
                "metrics": "{}",
                "artifact": "models/v-bench.npz",
            },
        )
        for start in range(0, items, BATCH):
            ids = [f"i{k:09d}" for k in range(start, min(items, start + BATCH))]
            gateway.write(UPSERT_UNLISTED_ITEMS, {"ids": ids, "now": now})
            rows = [{"id": item, "vector": _vector(k)} for k, item in enumerate(ids, start)]
            gateway.write(WRITE_EMBEDDINGS[Label.ITEM], {"version": VERSION, "owner": OWNER, "rows": rows})
        folded = [f"new{k:05d}" for k in range(FOLDED)]
        gateway.write(UPSERT_UNLISTED_ITEMS, {"ids": folded, "now": now})
        for k, item in enumerate(folded):  # one fold-in per item, as the events bring them
            rows = [{"id": item, "vector": _vector(k)}]
            gateway.write(WRITE_FOLDED_ITEMS, {"version": VERSION, "rows": rows, "now": now + k})
        reads = {"walk": FOLDED_ITEMS_BY_WALK, "index": FOLDED_ITEMS}
        timings: dict[str, float] = {}
        answers: dict[str, list[Any]] = {}
        for name in list(reads) * ROUNDS:  # the first round also warms the engine's caches
            t0 = time.perf_counter()
            answers[name] = gateway.read(reads[name], {"version": VERSION})
            timings[name] = min(timings.get(name, float("inf")), time.perf_counter() - t0)
    shutil.rmtree(work, ignore_errors=True)
    assert answers["index"] == answers["walk"] and [r["id"] for r in answers["index"]] == folded
    return paired_result({"items": items, "folded_items": FOLDED}, timings, "walk", "index")


def main() -> None:
    sizes, results = "20000,80000,320000", "bench/results/folded-items.json"
    size_sweep(__doc__, measure, ("walk", "index"), sizes, results, size_key="items")


if __name__ == "__main__":
    main()
