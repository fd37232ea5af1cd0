"""Benchmark: the import's time per step at each scale factor (issue 15: which parts grow fastest).

For each factor it generates ``bench.scale``'s synthetic shop, starts an empty embedded graph,
and times ``kgrec.importer.prepare`` (reading and aggregating), every write step of
``kgrec.importer.load`` (from the importer's own progress callbacks) and
``after_bulk_load``. It prints each step's microseconds per row at every size, and the growth
exponent of prepare and load between consecutive sizes, and writes everything to ``--results``.

    .venv/bin/python -m bench.import_steps [--sizes 1,4,16] [--order file|sorted]
        [--work-dir var/bench-import-steps] [--results bench/results/import-steps.json]

``--order sorted`` writes the user–item rows grouped by user, in node creation order, to see
whether locality changes the write cost (it did not: 51.3 s against 50.2 s at 4x).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from bench.scale import shop_spec
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.demo_shop import generate_shop
from kgrec.importer import PreparedImport, load, prepare
from kgrec.runtime import graph_session


def _sorted_by_user(prepared: PreparedImport) -> None:
    user_position = {u: i for i, u in enumerate(prepared.users)}
    item_position = {row["id"]: i for i, row in enumerate(prepared.items)}
    prepared.interactions.sort(key=lambda r: (user_position[r["user_id"]], item_position[r["item_id"]]))


def measure(factor: float, work: Path, order: str, seed: int = 7) -> dict[str, Any]:
    """One size: the shop generated, imported into an empty graph, every part timed."""
    shutil.rmtree(work, ignore_errors=True)
    generate_shop(shop_spec(factor, seed), work / "shop")
    settings = Settings(data_dir=work / "data", datasets_dir=work)
    steps: dict[str, dict[str, float]] = {}

    def progress(name: str, total: int) -> Any:
        started = time.perf_counter()
        steps[name] = {"rows": total, "s": 0.0}

        def on_batch(_done: int) -> None:
            steps[name]["s"] = round(time.perf_counter() - started, 3)

        return on_batch

    with graph_session(settings, apply_migrations=True) as gateway:
        now_ms = int(time.time() * 1000)
        t0 = time.perf_counter()
        prepared = prepare(open_dataset(str(work / "shop"), settings.datasets_dir), settings, now_ms)
        if order == "sorted":
            _sorted_by_user(prepared)
        t1 = time.perf_counter()
        load(gateway, prepared, now_ms, progress)
        t2 = time.perf_counter()
        gateway.after_bulk_load()
        t3 = time.perf_counter()
    shutil.rmtree(work, ignore_errors=True)
    return {
        "factor": factor,
        "order": order,
        "prepare_s": round(t1 - t0, 2),
        "load_s": round(t2 - t1, 2),
        "after_bulk_s": round(t3 - t2, 2),
        "steps": steps,
    }


def report(runs: list[dict[str, Any]]) -> None:
    """Microseconds per row of each step taking over a second somewhere; b between sizes."""
    names = [n for n in runs[-1]["steps"] if max(r["steps"][n]["s"] for r in runs) > 1.0]
    print("step".ljust(18) + "".join(f"{'x' + str(r['factor']):>10}" for r in runs) + "   (µs per row)")
    for name in names:
        cells = [1e6 * r["steps"][name]["s"] / max(r["steps"][name]["rows"], 1) for r in runs]
        print(name.ljust(18) + "".join(f"{c:>10.1f}" for c in cells))
    for part in ("prepare_s", "load_s"):
        growth = [
            round(math.log(b[part] / a[part]) / math.log(b["factor"] / a["factor"]), 2)
            for a, b in itertools.pairwise(runs)
        ]
        print(f"{part}: {[r[part] for r in runs]}, b between consecutive sizes {growth}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="1,4,16",
        type=lambda text: [float(s) for s in text.split(",")],  # every one read before the first runs
    )
    parser.add_argument("--order", choices=("file", "sorted"), default="file")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work-dir", type=Path, default=Path("var/bench-import-steps"))
    parser.add_argument("--results", type=Path, default=Path("bench/results/import-steps.json"))
    args = parser.parse_args()
    runs = []
    for factor in args.sizes:
        runs.append(measure(factor, args.work_dir / f"x{factor:g}", args.order, args.seed))
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "steps"}), flush=True)
    report(runs)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(runs, indent=1) + "\n")
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
