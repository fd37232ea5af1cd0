"""Benchmark: the graph model's loss chunks scored one per pass against stacked passes.

An epoch of KG-Seq on a GPU is bound by the host launching small kernels (Performance,
``bench/results/gpu-profile-kg-seq-epoch-h200.txt``). Each training step scores its batch in
chunks of ``LOSS_CHUNK`` rows; stacking a step's chunks into one pass computes the same logits
with one set of kernels per step instead of one per chunk (``CUDA_CHUNKS_PER_PASS``).

This trains on the KGAT amazon-book train split (as ``bench/train.py``: no text, dimension 64,
3 layers, the sampled softmax) with one chunk per pass (the CPU's setting) and with
``CUDA_CHUNKS_PER_PASS`` chunks per pass (a GPU's), each in fresh processes. It reports for each
the second epoch's seconds, the peak RSS (and on a GPU the peak device memory), the operators
dispatched per epoch (forward and backward, counted in an epoch of their own; views count too,
and on a GPU most others are one kernel launch each), and how far apart the two settings' item
tables are after two epochs.

    .venv/bin/python -m bench.loss_passes [--datasets-dir ../shared/data] [--device auto] [--save NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.common import in_fresh_process, parsed_device, print_and_save
from bench.train import KGAT_TRAIN_SPLIT, kgat_graph
from workers.training import kg_model
from workers.training.config import TrainConfig


class _OperatorCount(TorchDispatchMode):
    """Counts the aten operators dispatched while active, autograd's backward included."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.calls += 1
        return func(*args, **(kwargs or {}))


def _train(
    datasets_dir: str, device: str, per_pass: int, epochs: int, tables: str, count: bool
) -> dict[str, Any]:
    graph = kgat_graph(Path(datasets_dir))
    kg_model.chunks_per_pass = lambda _device: per_pass
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    counter = _OperatorCount() if count else contextlib.nullcontext()
    with counter:
        trained = kg_model.train_kg_model(graph, TrainConfig(use_text=False), device, epochs=epochs)
    if tables:
        np.save(tables, trained.items)
    examples = kg_model.next_item_examples(graph).target.size
    batch = kg_model.epoch_batch_size(examples, TrainConfig.model_batch_size, kg_model.MAX_STEPS_PER_EPOCH)
    return {
        "seconds_per_epoch": trained.seconds_per_epoch,
        "operators": counter.calls if count else 0,
        "steps": epochs * -(-examples // batch),
        "device_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


def measure(datasets_dir: Path, device: str, per_pass: int, tables: Path) -> dict[str, Any]:
    """``per_pass`` chunks per pass: two epochs timed in a fresh process (peak RSS its own; the
    second epoch's time is reported, without the first's warm-up), then one epoch with its
    operators counted in another (counting costs time of its own)."""
    timed, peak_mb = in_fresh_process(_train, str(datasets_dir), device, per_pass, 2, str(tables), False)
    counted, _ = in_fresh_process(_train, str(datasets_dir), device, per_pass, 1, "", True)
    device_peak = timed["device_peak_mb"]
    return {
        "chunks_per_pass": per_pass,
        "seconds_per_epoch": round(timed["seconds_per_epoch"][1], 2),
        "first_epoch_seconds": round(timed["seconds_per_epoch"][0], 2),
        "operators_per_epoch": counted["operators"],
        "operators_per_step": round(counted["operators"] / counted["steps"]),
        "peak_rss_mb": round(peak_mb),
        "device_peak_mb": round(device_peak) if device_peak is not None else None,
    }


def compare(datasets_dir: Path, device: str) -> dict[str, Any]:
    """One chunk per pass against ``CUDA_CHUNKS_PER_PASS``, on ``device``: the report."""
    with tempfile.TemporaryDirectory(prefix="kgrec-loss-passes-") as tmp:
        one = measure(datasets_dir, device, 1, Path(tmp) / "one.npy")
        stacked = measure(datasets_dir, device, kg_model.CUDA_CHUNKS_PER_PASS, Path(tmp) / "stacked.npy")
        a, b = np.load(Path(tmp) / "one.npy"), np.load(Path(tmp) / "stacked.npy")
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "device": device,
        "torch": torch.__version__,
        "data": KGAT_TRAIN_SPLIT,
        "one_chunk_per_pass": one,
        "stacked_passes": stacked,
        "operator_ratio": round(stacked["operators_per_epoch"] / one["operators_per_epoch"], 3),
        "epoch_time_ratio": round(stacked["seconds_per_epoch"] / max(one["seconds_per_epoch"], 1e-9), 3),
        "item_tables_max_abs_difference": float(np.abs(a - b).max()),
        "item_tables_max_abs_entry": float(np.abs(a).max()),
    }


def main() -> None:
    """Parse the options, run both settings, print and save the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--save", metavar="NAME", help="also write bench/results/loss-passes-NAME.json")
    args = parser.parse_args()
    result = compare(args.datasets_dir, parsed_device(parser, args.device))
    one, stacked = result["one_chunk_per_pass"], result["stacked_passes"]
    for row in (one, stacked):
        print(
            f"{row['chunks_per_pass']:>2} chunk(s) per pass: {row['operators_per_epoch']:,} operators "
            f"per epoch ({row['operators_per_step']:,} per step), {row['seconds_per_epoch']} s, "
            f"peak {row['peak_rss_mb']} MB"
            + (f", device peak {row['device_peak_mb']} MB" if row["device_peak_mb"] is not None else "")
        )
    print_and_save(result, "loss-passes", args.save)


if __name__ == "__main__":
    main()
