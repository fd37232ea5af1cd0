"""Benchmark: the topic links a promotion writes (``kgrec.topic_items.link_topic_items``).

For each size it starts an empty embedded graph and writes, through the catalogue's own
statements, that many items, 60 shared topics, two fully trained versions ``r1`` and ``r2``
(their topic-items files as training writes them, each item ABOUT three topics, with 384-wide
text vectors) and ``c1``, an incremental child of ``r1`` (no file of its own), plus one item in a
hundred folded in after training (a kept topic-text vector). It then times, in the same run:

- ``other_<batch>_s``: the graph holds ``r2``'s ABOUT edges and ``r1`` becomes active (a different
  full version: every edge written), once per ``--batches`` size;
- ``child_s``: the graph holds ``r1``'s edges and ``c1`` becomes active (the same file's edges);
- ``again_s``: ``r1`` becomes active again (a re-promotion, or a rollback to a version of the
  same root);
- ``rewrite_s``: ``c1`` becomes active with the marks forgotten, so every edge of the file is
  written again: what ``child_s`` cost before activation kept a file's edges (the baseline in the
  same run).

Every case is timed twice, interleaved, best of two (the VM's speed varies).

    .venv/bin/python -m bench.promotion_topics [--items 20000,100000] [--batches 2000,10000]
        [--work-dir var/bench-promotion-topics] [--results bench/results/promotion-topics.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import register_version
from bench.scale import extrapolate, save_growth_report
from graph_schema.statements.dataset_import import UPSERT_ITEMS
from graph_schema.statements.topics import WRITE_ITEM_TOPIC_VECTORS, WRITE_TOPICS
from kgrec.config import Settings
from kgrec.gateway import GraphGateway
from kgrec.model_store import models_dir
from kgrec.runtime import graph_session
from kgrec.topic_items import AboutWrite, TopicItems, link_topic_items

TOPICS = 60
DIMENSION = 384
WRITE_BATCH = 10_000
FOLDED_SHARE = 100  # one item in a hundred folded in after training


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _version_file(folder: Path, version: str, items: list[str], topic_ids: list[str], seed: int) -> None:
    """``version``'s topic-items file: each item ABOUT three distinct random topics, best first."""
    rng = np.random.default_rng(seed)
    n = len(items)
    about = np.argsort(rng.random((n, TOPICS)), axis=1)[:, :3]
    scores = np.sort(rng.uniform(0.3, 0.9, (n, 3)).astype(np.float32), axis=1)[:, ::-1]
    vectors = np.zeros((n, DIMENSION), dtype=np.float16)  # the size, not the content, costs the load
    TopicItems(version, items, vectors, topic_ids, about, scores).save(folder)


def _prepare(gateway: GraphGateway, folder: Path, n: int) -> None:
    """Items, folded items, three versions with the same 60 topics, and the two files."""
    now = int(time.time() * 1000)
    trained = [f"i{k:08d}" for k in range(n)]
    folded = [f"f{k:08d}" for k in range(n // FOLDED_SHARE)]
    for start in range(0, len(trained) + len(folded), WRITE_BATCH):
        ids = (trained + folded)[start : start + WRITE_BATCH]
        rows = [{"id": i, "title": i, "description": None, "price": None} for i in ids]
        gateway.write(UPSERT_ITEMS, {"rows": rows, "now": now, "at": now})
    rng = np.random.default_rng(7)
    centroids = _unit(rng.normal(size=(TOPICS, DIMENSION)))
    topic_ids = [f"topic-{t}" for t in range(TOPICS)]
    for version in ("r1", "r2", "c1"):
        register_version(gateway, version)
        rows = [
            {"id": t, "name": t, "keywords": [t], "centroid": [round(float(x), 6) for x in c], "size": 3}
            | {"absorbs": None}
            for t, c in zip(topic_ids, centroids, strict=True)
        ]
        gateway.write(WRITE_TOPICS, {"version": version, "now": now, "rows": rows})
    # a folded item's vector near one topic's centroid: linked to it at every full link
    noise = rng.normal(size=(len(folded), DIMENSION)) * 0.3 / np.sqrt(DIMENSION)
    near = _unit(centroids[np.arange(len(folded)) % TOPICS] + noise)
    for start in range(0, len(folded), WRITE_BATCH):
        end = start + WRITE_BATCH
        rows = [
            {"item_id": i, "vector": [round(float(x), 6) for x in v]}
            for i, v in zip(folded[start:end], near[start:end], strict=True)
        ]
        gateway.write(WRITE_ITEM_TOPIC_VECTORS, {"rows": rows})
    _version_file(folder, "r1", trained, topic_ids, seed=1)
    _version_file(folder, "r2", trained, topic_ids, seed=2)


def measure(n: int, batches: list[int], work: Path) -> dict[str, Any]:
    """One size: a fresh graph of ``n`` items, every case timed twice, alternating, best of two."""
    shutil.rmtree(work, ignore_errors=True)
    settings = Settings(data_dir=work)
    folder = models_dir(work)
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"items": n, "about_edges": 3 * n, "folded_items": n // FOLDED_SHARE}

    def timed(name: str, lineage: list[str], **batch: int) -> None:
        t0 = time.perf_counter()
        link_topic_items(gateway, folder, lineage, **batch)
        result[name] = round(min(result.get(name, float("inf")), time.perf_counter() - t0), 3)

    with graph_session(settings, apply_migrations=True) as gateway:
        _prepare(gateway, folder, n)
        for _ in range(2):  # the VM's speed varies: the best of two, the cases interleaved
            for size in batches:
                link_topic_items(gateway, folder, ["r2"])  # the other version's edges in place
                timed(f"other_{size}_s", ["r1"], batch=size)
            timed("child_s", ["c1", "r1"])
            timed("again_s", ["r1"])
            # the baseline: every edge of the same file written again, as every activation did before
            AboutWrite.forget(gateway)
            timed("rewrite_s", ["c1", "r1"])
    shutil.rmtree(work, ignore_errors=True)
    result["child_vs_rewrite"] = round(result["child_s"] / result["rewrite_s"], 4)
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    numbers = lambda text: [int(n) for n in text.split(",")]  # noqa: E731 - every one read before the first runs
    parser.add_argument("--items", default="20000,100000", type=numbers, help="catalogue sizes")
    parser.add_argument("--batches", default="2000,10000", type=numbers, help="ABOUT rows per write")
    parser.add_argument("--work-dir", type=Path, default=Path("var/bench-promotion-topics"))
    parser.add_argument("--results", type=Path, default=Path("bench/results/promotion-topics.json"))
    args = parser.parse_args()
    runs = [measure(n, args.batches, args.work_dir / str(n)) for n in args.items]
    costs = {f"other_{b}": f"other_{b}_s" for b in args.batches}
    costs |= {name: f"{name}_s" for name in ("child", "again", "rewrite")}
    save_growth_report(runs, "items", costs, args.results)
    sizes = [float(run["items"]) for run in runs]
    at_1m = {name: extrapolate(sizes, [run[key] for run in runs], 1e6) for name, key in costs.items()}
    report = json.loads(args.results.read_text())
    report["extrapolated_1m_items_s"] = {k: None if v is None else round(v, 1) for k, v in at_1m.items()}
    args.results.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["extrapolated_1m_items_s"]))


if __name__ == "__main__":
    main()
