"""Benchmark: what stamping changed items with the catalogue revision costs a bulk import.

On a fresh embedded FalkorDB: the whole data set imported into an empty graph (no model knows
an item: nothing is stamped), then every item given an embedding by a model version (as a
training leaves the graph), the same import again on that live graph (nothing changes: nothing is
bumped), and an import that changes the facts of some items (``--changed`` of them get a new
price, a new brand or one more category). Prints each load's seconds, and those of its four
steps that write item facts (items, item → brand, category → parent, item → category: the
statements that stamp), the catalogue revision and the items stamped, and, as its last line, one
JSON object. Runs against whichever kgrec is on ``PYTHONPATH``, so the code before a change can be
timed with the same script.

    .venv/bin/python -m bench.import_revision [--dataset amazon-beauty] [--changed 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from graph_schema.allow_list import Label
from graph_schema.statements.catalogue import CATALOGUE, CATALOGUE_CHANGES, CATALOGUE_REVISION
from graph_schema.statements.models import CREATE_VERSION, WRITE_EMBEDDINGS
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.gateway import GraphGateway
from kgrec.importer import PreparedImport, load, prepare
from kgrec.runtime import graph_session

EMBEDDING_BATCH = 5_000
BENCH_VERSION = "bench"


def give_embeddings(gateway: GraphGateway, item_ids: list[str]) -> None:
    """Every item known to a model version, as a training's write-back leaves the graph."""
    gateway.write(
        CREATE_VERSION,
        {
            "id": BENCH_VERSION,
            "owner": BENCH_VERSION,
            "now": 0,
            "data_until": 0,
            "parameters": "{}",
            "counts": "{}",
            "metrics": "{}",
            "artifact": "",
        },
    )
    for start in range(0, len(item_ids), EMBEDDING_BATCH):
        rows = [{"id": item_id, "vector": [0.0]} for item_id in item_ids[start : start + EMBEDDING_BATCH]]
        gateway.write(
            WRITE_EMBEDDINGS[Label.ITEM], {"version": BENCH_VERSION, "owner": BENCH_VERSION, "rows": rows}
        )


def changed(prepared: PreparedImport, share: float) -> PreparedImport:
    """The import with a new price for every third of ``share`` of the items, a new brand for the
    next third and one more category for the last."""
    items = [dict(row) for row in prepared.items]
    step = max(1, round(1 / share))
    chosen = list(range(0, len(items), step))
    brands = {row["item_id"]: dict(row) for row in prepared.item_brands}
    extra_categories = []
    for n, k in enumerate(chosen):
        row = items[k]
        if n % 3 == 0:
            row["price"] = (row["price"] or 1.0) + 1.0
        elif n % 3 == 1:
            brands[row["id"]] = {"item_id": row["id"], "brand_id": "bench-brand"}
        else:
            extra_categories.append({"item_id": row["id"], "category_id": "bench-category"})
    return PreparedImport(
        **{
            **prepared.__dict__,
            "items": items,
            "brands": [*prepared.brands, {"id": "bench-brand", "name": "bench-brand"}],
            "item_brands": list(brands.values()),
            "categories": [*prepared.categories, {"id": "bench-category", "name": "bench-category"}],
            "item_categories": [*prepared.item_categories, *extra_categories],
        }
    )


FACT_STEPS = ("items", "item → brand", "category → parent", "item → category")  # the steps that stamp


def timed_load(gateway: GraphGateway, prepared: PreparedImport, now: int) -> tuple[float, float]:
    """Seconds of the whole load, and of the steps that write item facts."""
    steps: dict[str, list[float]] = {}

    def progress(step: str, rows: int) -> Any:
        times = steps.setdefault(step, [time.perf_counter()] * 2)
        return lambda written: times.__setitem__(1, time.perf_counter())

    started = time.perf_counter()
    load(gateway, prepared, now, progress)
    facts_s = sum(stop - start for step, (start, stop) in steps.items() if step in FACT_STEPS)
    return time.perf_counter() - started, facts_s


def catalogue_state(gateway: GraphGateway) -> dict[str, int]:
    """The catalogue revision, and how many items carry one (every item changed since revision 0)."""
    rows = gateway.read(CATALOGUE_REVISION, {"id": CATALOGUE})
    stamped = gateway.read(CATALOGUE_CHANGES, {"since": 0})
    return {"revision": int(rows[0]["revision"]) if rows else 0, "stamped_items": len(stamped)}


def run(dataset_name: str, datasets_dir: Path, share: float) -> dict[str, Any]:
    """Time the three loads on one fresh graph."""
    with tempfile.TemporaryDirectory(prefix="kgrec-bench-") as scratch:
        settings = Settings(data_dir=Path(scratch), datasets_dir=datasets_dir)
        with graph_session(settings, apply_migrations=True) as gateway:
            now = int(time.time() * 1000)
            prepared = prepare(open_dataset(dataset_name, datasets_dir), settings, now)
            fresh_s, fresh_facts_s = timed_load(gateway, prepared, now)
            give_embeddings(gateway, [row["id"] for row in prepared.items])
            same_s, same_facts_s = timed_load(gateway, prepared, now)
            after_same = catalogue_state(gateway)
            changed_s, changed_facts_s = timed_load(gateway, changed(prepared, share), now)
            after_changed = catalogue_state(gateway)
    relationships = sum(
        len(rows)
        for rows in (
            prepared.item_brands,
            prepared.category_parents,
            prepared.item_categories,
            prepared.interactions,
            prepared.brand_interests,
            prepared.category_interests,
            *prepared.knowledge.values(),
        )
    )
    return {
        "dataset": dataset_name,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "items": len(prepared.items),
        "relationships_about": relationships,
        "fresh_load_s": round(fresh_s, 2),
        "fresh_fact_steps_s": round(fresh_facts_s, 2),
        "live_same_load_s": round(same_s, 2),
        "live_same_fact_steps_s": round(same_facts_s, 2),
        "live_same": after_same,
        "live_changed_load_s": round(changed_s, 2),
        "live_changed_fact_steps_s": round(changed_facts_s, 2),
        "changed_share": share,
        "live_changed": after_changed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--datasets-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--changed", type=float, default=0.05, help="share of the items whose facts change")
    args = parser.parse_args()
    result = run(args.dataset, args.datasets_dir, args.changed)
    for key, value in result.items():
        print(f"{key:>22}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
