"""Benchmark: ``kgrec demo generate``'s speed to disk (issue 15: at least 1 M events/s).

It generates the same shop ``--repeat`` times into a fresh folder, each time in a fresh process as
``kgrec demo generate`` runs it (a warm process is faster: its allocator keeps freed memory), and
reports the median events per second over the whole of ``generate_shop`` (sampling, formatting,
writing every file; not the interpreter's start). The
same-run baseline is the disk: the time to write the generated files' bytes, already in memory,
into a new folder. Their ratio says how much of the generator's time is more than its I/O.

    .venv/bin/python -m bench.demo_generate [--users 66000] [--items 16000] [--repeat 7]
        [--work-dir var/bench-demo-generate] [--results bench/results/demo-generate.json]

The default spec makes about 1 M events. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from bench.common import in_fresh_process
from kgrec.demo_shop import ShopSpec, ShopSummary, generate_shop


def _generate(spec: ShopSpec, folder: Path) -> ShopSummary:
    return generate_shop(spec, folder)


def _write_floor(files: dict[str, bytes], folder: Path) -> float:
    """Seconds to write ``files`` (name → bytes) into an empty ``folder``."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return time.perf_counter() - started


def measure(spec: ShopSpec, work: Path, repeat: int) -> dict[str, Any]:
    """Generation and write-floor seconds for ``repeat`` rounds, alternating the two."""
    generated: list[float] = []
    floor: list[float] = []
    events = 0
    for round_ in range(repeat):
        target = work / "shop"
        shutil.rmtree(target, ignore_errors=True)
        summary, _peak_mb = in_fresh_process(_generate, spec, target)
        events = summary.events
        generated.append(summary.seconds)
        files = {p.name: p.read_bytes() for p in sorted(target.iterdir())}
        floor.append(_write_floor(files, work / "copy"))
        print(
            f"round {round_ + 1}/{repeat}: {summary.seconds:.3f} s "
            f"({events / summary.seconds / 1e6:.2f} M events/s), write floor {floor[-1]:.3f} s",
            flush=True,
        )
    size = sum(len(b) for b in files.values())
    median_s = statistics.median(generated)
    median_floor = statistics.median(floor)
    return {
        "spec": {"users": spec.users, "items": spec.items, "seed": spec.seed, "days": spec.days},
        "events": events,
        "bytes": size,
        "seconds": [round(s, 4) for s in generated],
        "median_s": round(median_s, 4),
        "median_events_per_s": round(events / median_s),
        "best_events_per_s": round(events / min(generated)),
        "write_floor_s": round(median_floor, 4),
        "ratio_to_write_floor": round(median_s / median_floor, 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=66_000)
    parser.add_argument("--items", type=int, default=16_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--work-dir", type=Path, default=Path("var/bench-demo-generate"))
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    result = measure(ShopSpec(users=args.users, items=args.items, seed=args.seed), args.work_dir, args.repeat)
    shutil.rmtree(args.work_dir, ignore_errors=True)
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
