"""Benchmark: the graph model's full softmax against its sampled softmax, on validation users only.

For each data set: the ``kgrec evaluate`` leave-last-out split (the test items are
never read), imported into a scratch embedded graph and pulled back, then
``train_kg_model`` exactly as training runs it (text embeddings, each user's latest
training interaction held out for validation, epoch cap and patience from
``TrainConfig``), once per variant:

- ``full``: every row scored against every item (``FULL_SOFTMAX_MAX_ITEMS`` raised
  above the catalogue);
- ``sampled``: what training uses above ``FULL_SOFTMAX_MAX_ITEMS`` items
  (:func:`workers.training.kg_model.sampled_logits`).

Reports each variant's best validation NDCG@10, its epoch, and the mean seconds per
epoch; prints a table and, as its last line, one JSON object (``--save`` also writes
it to ``bench/results/softmax.json``). Run variants one at a time on an idle machine
for the times to compare.

    .venv/bin/python -m bench.softmax [--datasets amazon-beauty,movielens] [--datasets-dir ../shared/data]
        [--epochs 40] [--save]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import validation_hold_out
from kgrec.datasets import open_dataset
from workers.training import kg_model
from workers.training.config import TrainConfig

VARIANTS = ("full", "sampled")


def run_dataset(name: str, datasets_dir: Path, work: Path, config: TrainConfig) -> list[dict[str, Any]]:
    """Both variants on one data set's validation users."""
    graph, text, fit, validation = validation_hold_out(name, datasets_dir, work)
    sampled_limit = kg_model.FULL_SOFTMAX_MAX_ITEMS
    rows = []
    for variant in VARIANTS:
        kg_model.FULL_SOFTMAX_MAX_ITEMS = graph.n_items if variant == "full" else sampled_limit
        started = time.perf_counter()
        trained = kg_model.train_kg_model(fit, config, "cpu", text, validation=validation)
        rows.append(
            {
                "dataset": name,
                "variant": variant,
                "items": graph.n_items,
                "validation_users": len(validation),
                "best_ndcg_at_10": round(max(trained.validation_ndcg), 4),
                "best_epoch": trained.best_epoch,
                "ndcg_by_epoch": [round(x, 4) for x in trained.validation_ndcg],
                "seconds_per_epoch": round(float(np.mean(trained.seconds_per_epoch)), 1),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        print(json.dumps(rows[-1]))
    kg_model.FULL_SOFTMAX_MAX_ITEMS = sampled_limit
    return rows


def main() -> None:
    """Parse the options, run every data set, print and save the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="amazon-beauty,movielens")
    parser.add_argument("--datasets-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="epoch cap (patience 3)")
    parser.add_argument("--save", action="store_true", help="write bench/results/softmax.json")
    args = parser.parse_args()
    names, datasets_dir = args.datasets.split(","), args.datasets_dir.resolve()
    for name in names:  # every one found before the first trains (an hour on the CPU)
        try:
            open_dataset(name, datasets_dir)
        except (FileNotFoundError, ValueError) as exc:
            parser.error(f"--datasets: {exc}")
    config = TrainConfig(epochs=args.epochs)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kgrec-softmax-") as tmp:
        for name in names:
            rows += run_dataset(name, datasets_dir, Path(tmp) / name, config)
    print(f"{'data set':<16}{'variant':<10}{'items':>8}{'best NDCG@10':>14}{'epoch':>7}{'s/epoch':>9}")
    for row in rows:
        print(
            f"{row['dataset']:<16}{row['variant']:<10}{row['items']:>8}{row['best_ndcg_at_10']:>14.4f}"
            f"{row['best_epoch']:>7}{row['seconds_per_epoch']:>9.1f}"
        )
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()},
        "sampled": {"negatives": kg_model.SAMPLED_NEGATIVES, "above_items": kg_model.FULL_SOFTMAX_MAX_ITEMS},
        "rows": rows,
    }
    if args.save:
        Path("bench/results/softmax.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
