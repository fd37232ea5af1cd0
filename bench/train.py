"""Benchmark: training epochs of the graph model (KG-Seq) vs PyG's stock LightGCN, and the full pipeline.

1. KGAT amazon-book train split (70,679 users, 24,915 items, 652,514
   interactions), dimension 64, 3 layers, batch 8,192, same device: seconds per
   epoch and peak RSS of each model, each measured in its own process, and
   their ratio (KG-Seq / LightGCN).
2. The full pipeline on Amazon Beauty in an embedded graph: pull, train
   (early-stopped) and fit the blend, write-back and switch (``--skip-pipeline``
   leaves it out).

Prints a summary and, as its last line, one JSON object; ``--save`` also writes
it to ``bench/results/train-<name>.json``.

    .venv/bin/python -m bench.train [--datasets-dir ../shared/data] [--device auto] [--epochs 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import in_fresh_process, parsed_device, print_and_save
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.datasets.kgat import KgatDataset
from kgrec.embedded import EmbeddedServer
from kgrec.gateway import open_gateway
from kgrec.importer import import_dataset
from kgrec.migrations import migrate
from kgrec.training_graph import TrainingGraph
from workers.training.baselines import train_lightgcn
from workers.training.config import TrainConfig
from workers.training.job import start_training
from workers.training.kg_model import train_kg_model

KGAT_TRAIN_SPLIT = "KGAT amazon-book train split: 70,679 users, 24,915 items, 652,514 interactions"


def kgat_graph(datasets_dir: Path) -> TrainingGraph:
    """The KGAT amazon-book train split as a TrainingGraph (no knowledge edges: not in this copy)."""
    dataset = KgatDataset(datasets_dir / "kgat-amazon-book")
    pairs = [(r.user_id, r.item_id) for r in dataset.split("train")]
    users = sorted({u for u, _ in pairs})
    items = sorted(set(dataset.item_ids.values()))
    user_index = {u: k for k, u in enumerate(users)}
    item_index = {i: k for k, i in enumerate(items)}
    return TrainingGraph(
        user_ids=users,
        item_ids=items,
        inter_user=np.array([user_index[u] for u, _ in pairs], dtype=np.int64),
        inter_item=np.array([item_index[i] for _, i in pairs], dtype=np.int64),
        inter_weight=np.ones(len(pairs)),
        inter_order=np.arange(len(pairs), dtype=np.int64),  # file order
        item_brand=np.full(len(items), -1, dtype=np.int64),
    )


def _epoch(model: str, datasets_dir: str, device: str, epochs: int) -> float:
    graph = kgat_graph(Path(datasets_dir))
    config = TrainConfig(epochs=epochs, use_text=False)
    if model == "kgrec":
        seconds = train_kg_model(graph, config, device, epochs=epochs).seconds_per_epoch
    else:
        seconds = train_lightgcn(graph, config, device)[2]
    return float(np.mean(seconds))


def measure(model: str, datasets_dir: Path, device: str, epochs: int) -> dict[str, Any]:
    """Run one model's epochs in a fresh process (so peak RSS is its own)."""
    seconds, peak_mb = in_fresh_process(_epoch, model, str(datasets_dir), device, epochs)
    return {"seconds_per_epoch": round(seconds, 2), "peak_rss_mb": round(peak_mb)}


def pipeline(datasets_dir: Path, device: str) -> dict[str, Any]:
    """Pull, train, write back and switch on Amazon Beauty in a fresh embedded graph."""
    with tempfile.TemporaryDirectory(prefix="kgrec-train-") as scratch:
        settings = Settings(data_dir=Path(scratch), datasets_dir=datasets_dir)
        server = EmbeddedServer(settings.data_dir)
        server.start()
        try:
            with open_gateway(settings) as gateway:
                migrate(gateway)
                import_dataset(gateway, open_dataset("amazon-beauty", datasets_dir), settings)
                started = time.perf_counter()
                summary = start_training(gateway, settings, TrainConfig(), device=device)
                total = time.perf_counter() - started
        finally:
            server.stop()
    timings = {k: round(v, 1) for k, v in summary["timings"].items()}
    return {"total_s": round(total, 1), **timings, "counts": summary["counts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets-dir", "--data-dir", dest="datasets_dir", type=Path, default=Path("../shared/data")
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--save", metavar="NAME", help="also write bench/results/train-NAME.json")
    args = parser.parse_args()
    device = parsed_device(parser, args.device)
    ours = measure("kgrec", args.datasets_dir, device, args.epochs)
    stock = measure("lightgcn", args.datasets_dir, device, args.epochs)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "device": device,
        "data": KGAT_TRAIN_SPLIT,
        "epochs": args.epochs,
        "kg_seq": ours,
        "pyg_lightgcn": stock,
        "epoch_time_ratio": round(ours["seconds_per_epoch"] / stock["seconds_per_epoch"], 2),
        "peak_rss_ratio": round(ours["peak_rss_mb"] / stock["peak_rss_mb"], 2),
    }
    print(f"KG-Seq: {ours['seconds_per_epoch']} s/epoch, peak {ours['peak_rss_mb']} MB")
    print(f"PyG LightGCN: {stock['seconds_per_epoch']} s/epoch, peak {stock['peak_rss_mb']} MB")
    print(f"ratio: {result['epoch_time_ratio']}x")
    if not args.skip_pipeline:
        result["pipeline_amazon_beauty"] = pipeline(args.datasets_dir, device)
        print(f"full pipeline on Amazon Beauty: {result['pipeline_amazon_beauty']}")
    print_and_save(result, "train", args.save)


if __name__ == "__main__":
    main()
