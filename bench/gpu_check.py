"""GPU check: ``--device auto`` picks CUDA, and the graph model trains there, repeatably or not.

Trains the graph model (KG-Seq) twice with the same seed on the KGAT amazon-book
train split (70,679 users, 24,915 items, 652,514 interactions) on the resolved
device, and reports seconds per epoch, the losses of both runs, and how far the
two runs' item tables drift apart. PyG's scatter sums use atomic adds on CUDA,
so two GPU runs may differ in the last bits, and that difference grows with the
epochs; on the CPU the runs are identical.

    .venv/bin/python -m bench.gpu_check [--datasets-dir ../shared/data] [--device auto] [--epochs 3]

Prints one JSON object; ``--save NAME`` also writes ``bench/results/gpu-check-NAME.json``.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import parsed_device, print_and_save
from bench.train import KGAT_TRAIN_SPLIT, kgat_graph
from workers.training.config import TrainConfig
from workers.training.kg_model import train_kg_model


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.machine()} CPU"


def check(datasets_dir: Path, device: str, epochs: int) -> dict[str, Any]:
    """Two same-seed training runs on ``device``: timings, losses and their item tables' drift."""
    graph = kgat_graph(datasets_dir)
    config = TrainConfig(epochs=epochs, use_text=False)
    first = train_kg_model(graph, config, device, epochs=epochs)
    second = train_kg_model(graph, config, device, epochs=epochs)
    drift = np.abs(first.items - second.items)
    scale = float(np.abs(first.items).mean())
    peak_gb = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return {
        "device": device,
        "device_name": _device_name(device),
        "torch": torch.__version__,
        "data": KGAT_TRAIN_SPLIT,
        "epochs": epochs,
        "seconds_per_epoch": [round(s, 2) for s in first.seconds_per_epoch + second.seconds_per_epoch],
        "losses_first_run": [round(x, 6) for x in first.losses],
        "losses_second_run": [round(x, 6) for x in second.losses],
        "item_table_max_abs_difference": float(drift.max()),
        "item_table_mean_abs_value": scale,
        "identical": bool(drift.max() == 0.0),
        "peak_gpu_memory_gb": None if peak_gb is None else round(peak_gb, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--save", metavar="NAME", help="also write bench/results/gpu-check-NAME.json")
    args = parser.parse_args()
    result = check(args.datasets_dir, parsed_device(parser, args.device), args.epochs)
    print_and_save(result, "gpu-check", args.save)


if __name__ == "__main__":
    main()
