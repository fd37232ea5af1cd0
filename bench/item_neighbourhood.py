"""Benchmark: an item's neighbourhood (the console's item graph) beside a category of many items.

For each size it starts an empty embedded graph and writes, through the import's and training's own
statements, that many items, all in one category, one in four made by one brand, each ABOUT one of
three topics an active version names, and five users who bought the centre item. It then times, in
the same run, alternating, ``ROUNDS`` times each, best of them: ``ITEM_NEIGHBOURHOOD_NAMING_ALL``
(the read before 2026-12-07: the active version's name looked up for every second neighbour, then
cut to ``per_node``) and ``ITEM_NEIGHBOURHOOD`` (cut first, then the kept ones named), for the
centre item with the console's ``first`` and ``per_node``. Both must return the same rows.

    .venv/bin/python -m bench.item_neighbourhood [--sizes 2000,20000,80000]
        [--work-dir var/bench-item-neighbourhood] [--results bench/results/item-neighbourhood.json]
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from bench.common import register_version
from bench.scale import paired_result, size_sweep
from graph_schema.bench_statements import ITEM_NEIGHBOURHOOD_NAMING_ALL
from graph_schema.statements import dataset_import as imports
from graph_schema.statements.browse import ITEM_NEIGHBOURHOOD
from graph_schema.statements.models import ACTIVATE_VERSION
from graph_schema.statements.topics import WRITE_ABOUT, WRITE_TOPICS
from kgrec.config import Settings
from kgrec.gateway import GraphGateway
from kgrec.runtime import graph_session

BATCH = 10_000  # rows per write statement
TOPICS = 3
USERS = 5
FIRST, PER_NODE = 40, 3  # the API's defaults (the console asks for 24 and 2)
ROUNDS = 5
SIZES, RESULTS = "2000,20000,80000", "bench/results/item-neighbourhood.json"
VERSION = "v-bench"


def _prepare(gateway: GraphGateway, items: list[str], now: int) -> None:
    gateway.write(imports.UPSERT_CATEGORIES, {"rows": [{"id": "cat", "name": "Everything"}], "now": now})
    gateway.write(imports.UPSERT_BRANDS, {"rows": [{"id": "brand", "name": "Acme"}], "now": now})
    for start in range(0, len(items), BATCH):
        ids = items[start : start + BATCH]
        rows = [{"id": i, "title": f"title {i}", "description": None, "price": None} for i in ids]
        gateway.write(imports.UPSERT_ITEMS, {"rows": rows, "now": now, "at": now})
        links = [{"item_id": i, "category_id": "cat"} for i in ids]
        gateway.write(imports.LINK_ITEM_CATEGORIES, {"rows": links, "at": now})
        brands = [{"item_id": i, "brand_id": "brand"} for k, i in enumerate(ids, start) if k % 4 == 0]
        gateway.write(imports.LINK_ITEM_BRANDS, {"rows": brands, "at": now})
    register_version(gateway, VERSION)
    topics = [
        {"id": f"topic-{t}", "name": f"topic {t}", "keywords": [], "centroid": [1.0, 0.0]}
        | {"size": 1, "absorbs": None}
        for t in range(TOPICS)
    ]
    gateway.write(WRITE_TOPICS, {"version": VERSION, "now": now, "rows": topics})
    for start in range(0, len(items), BATCH):
        rows = [
            {"item_id": i, "topic_id": f"topic-{k % TOPICS}", "score": 0.5}
            for k, i in enumerate(items[start : start + BATCH], start)
        ]
        gateway.write(WRITE_ABOUT, {"version": VERSION, "rows": rows})
    gateway.write(ACTIVATE_VERSION, {"id": VERSION, "now": now})
    users = [f"u{k}" for k in range(USERS)]
    gateway.write(imports.UPSERT_USERS, {"ids": users, "now": now})
    counts = {"n_purchase": 1}
    rows = [
        {
            "user_id": u,
            "item_id": items[len(items) // 2],
            "counts": counts,
            "first_ts": now,
            "last_ts": now,
            "last_seq": 0,
            "rating": None,
            "rating_ts": None,
            "weight": 1.0,
            "weight_ts": now,
        }
        for u in users
    ]
    gateway.write(imports.SET_INTERACTIONS, {"rows": rows, "at": now})


def measure(size: int, work: Path) -> dict[str, Any]:
    """One size: a fresh graph with a category of ``size`` items, both reads timed."""
    shutil.rmtree(work, ignore_errors=True)
    settings = Settings(data_dir=work)
    now = int(time.time() * 1000)
    items = [f"i{k:08d}" for k in range(size)]
    centre = items[size // 2]
    params = {"item_id": centre, "first": FIRST, "per_node": PER_NODE}
    with graph_session(settings, apply_migrations=True) as gateway:
        _prepare(gateway, items, now)
        reads = {"naming_all": ITEM_NEIGHBOURHOOD_NAMING_ALL, "cut_first": ITEM_NEIGHBOURHOOD}
        timings: dict[str, float] = {}
        answers: dict[str, list[Any]] = {}
        for name in list(reads) * ROUNDS:  # the first round also warms the engine's caches
            t0 = time.perf_counter()
            answers[name] = gateway.read(reads[name], params)
            timings[name] = min(timings.get(name, float("inf")), time.perf_counter() - t0)
    shutil.rmtree(work, ignore_errors=True)
    assert answers["cut_first"] == answers["naming_all"], "the two reads differ"
    second = sum(len(row["second"]) for row in answers["cut_first"])
    fields = {
        "items_in_category": size,
        "items_of_brand": (size + 3) // 4,
        "first_neighbours": len(answers["cut_first"]),
        "second_neighbours_kept": second,
    }
    return paired_result(fields, timings, "naming_all", "cut_first")


def main() -> None:
    """The sweep (``--sizes``: items in the category) and its report."""
    costs = ("naming_all", "cut_first")
    size_sweep(__doc__, measure, costs, SIZES, RESULTS, size_key="items_in_category")


if __name__ == "__main__":
    main()
