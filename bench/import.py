"""Benchmark: relationships written per second by the full Amazon Beauty import on the embedded server.

Starts a fresh embedded FalkorDB in a temporary data directory, imports the
whole data set twice (the first run creates everything; the second, idempotent
run re-MERGEs the same rows), and prints one JSON object as its last line.

    .venv/bin/python -m bench.import [--datasets-dir ../shared/data] [--dataset amazon-beauty]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from graph_schema.statements.dataset_import import LINK_KNOWLEDGE_EDGES
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.embedded import EmbeddedServer
from kgrec.gateway import open_gateway
from kgrec.importer import load, prepare
from kgrec.migrations import migrate

BASELINE_ROWS = 5_000


def run(dataset_name: str, datasets_dir: Path) -> dict[str, object]:
    """Import once into an empty graph and once more (idempotent); time each phase."""
    with tempfile.TemporaryDirectory(prefix="kgrec-bench-") as scratch:
        settings = Settings(data_dir=Path(scratch), datasets_dir=datasets_dir)
        server = EmbeddedServer(settings.data_dir, settings.aof_fsync)
        server.start()
        try:
            with open_gateway(settings) as gateway:
                migrate(gateway)
                now = int(time.time() * 1000)
                started = time.perf_counter()
                prepared = prepare(open_dataset(dataset_name, datasets_dir), settings, now)
                prepare_s = time.perf_counter() - started

                started = time.perf_counter()
                rows, nodes, rels, created = load(gateway, prepared, now)
                first_s = time.perf_counter() - started

                started = time.perf_counter()
                load(gateway, prepared, now)
                second_s = time.perf_counter() - started

                # Baseline in the same run: the same MERGE, one transaction per row vs 10k rows.
                sample = prepared.knowledge["also_bought"][:BASELINE_ROWS]
                statement = LINK_KNOWLEDGE_EDGES["also_bought"]
                started = time.perf_counter()
                gateway.write_batches(statement, sample, batch_size=1)
                per_row_s = time.perf_counter() - started
                started = time.perf_counter()
                gateway.write_batches(statement, sample, batch_size=10_000)
                batched_s = time.perf_counter() - started

                rewrite_s = server.rewrite_aof()
            server.kill()
            started = time.perf_counter()
            server.start()
            reload_s = time.perf_counter() - started
        finally:
            server.stop()
    return {
        "dataset": dataset_name,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "nodes_written": nodes,
        "relationships_written": rels,
        "relationships_created": created,
        "prepare_s": round(prepare_s, 2),
        "load_s": round(first_s, 2),
        "relationships_per_s": round(rels / first_s),
        "reimport_s": round(second_s, 2),
        "reimport_relationships_per_s": round(rels / second_s),
        "baseline_rows": BASELINE_ROWS,
        "baseline_one_row_per_tx_per_s": round(BASELINE_ROWS / per_row_s),
        "baseline_batched_per_s": round(BASELINE_ROWS / batched_s),
        "batched_vs_one_row_per_tx": round(per_row_s / batched_s, 1),
        "aof_rewrite_s": round(rewrite_s, 2),
        "restart_after_kill9_s": round(reload_s, 2),
        "rows_by_step": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument(
        "--datasets-dir", "--data-dir", dest="datasets_dir", type=Path, default=Path("../shared/data")
    )
    args = parser.parse_args()
    result = run(args.dataset, args.datasets_dir)
    for key, value in result.items():
        if key != "rows_by_step":
            print(f"{key:>30}: {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
