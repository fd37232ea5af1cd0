"""Benchmark: one impression's journal append while other threads of the process are busy.

Why the impression journal (kgrec/impression_journal.py) copies into a file mapping rather than
calling ``write(2)``: a system call releases the GIL, and a busy thread that takes it may keep it
for the whole switch interval (5 ms) before the writer gets it back. This runs ``--threads``
threads that each compute for 2 ms and sleep up to 4 ms (a request's scoring, roughly), and
times one append of an impression of 20 items every 2 ms, alternating the two ways for
``--rounds`` rounds of ``--appends`` each, in one process on the same machine.

    .venv/bin/python -m bench.journal_append [--threads 3] [--appends 1500] [--rounds 2]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import random
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import percentile

FILE_BYTES = 64 << 20


def busy(stop: threading.Event) -> None:
    """Python work in 2 ms bursts with short pauses, as request threads scoring."""
    while not stop.is_set():
        started = time.perf_counter()
        while time.perf_counter() - started < 0.002:
            sum(range(200))
        time.sleep(random.random() * 0.004)


def timed(append: Callable[[], None], n: int) -> dict[str, float]:
    """p50/p99/max in microseconds of ``n`` appends, one every 2 ms."""
    latencies = []
    for _ in range(n):
        started = time.perf_counter()
        append()
        latencies.append((time.perf_counter() - started) * 1e6)
        time.sleep(0.002)
    return {
        "p50_us": round(percentile(latencies, 50), 1),
        "p99_us": round(percentile(latencies, 99), 1),
        "max_us": round(max(latencies), 1),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    """Alternate write(2) and mapped appends beside busy threads."""
    line = json.dumps({"i": [[f"item-{n}", 0.5] for n in range(20)]}).encode() + b"\n"
    with tempfile.TemporaryDirectory() as folder:
        fd = os.open(Path(folder) / "write.jnl", os.O_RDWR | os.O_CREAT | os.O_APPEND)
        mapped_fd = os.open(Path(folder) / "mapped.jnl", os.O_RDWR | os.O_CREAT)
        os.posix_fallocate(mapped_fd, 0, FILE_BYTES)
        mapping = mmap.mmap(mapped_fd, FILE_BYTES)
        position = 0

        def by_write() -> None:
            os.write(fd, line)

        def by_mapping() -> None:
            nonlocal position
            mapping[position : position + len(line)] = line
            position += len(line)

        stop = threading.Event()
        threads = [threading.Thread(target=busy, args=(stop,)) for _ in range(args.threads)]
        for thread in threads:
            thread.start()
        rounds = []
        try:
            for round_no in range(args.rounds):
                for name, append in (("write", by_write), ("mapping", by_mapping)):
                    rounds.append({"round": round_no + 1, "append": name, **timed(append, args.appends)})
                    print(json.dumps(rounds[-1]), flush=True)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
            mapping.close()
            os.close(fd)
            os.close(mapped_fd)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "busy_threads": args.threads,
        "line_bytes": len(line),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--appends", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=2)
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
