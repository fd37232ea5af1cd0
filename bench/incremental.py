"""Benchmark: incremental updates against full retraining (issue 15, item 4).

**Quality** (``--quality``): a time split of one data set (the synthetic shop at ``--shop-factor``
times bench/scale.py's 1x, or MovieLens). The data set is imported into a scratch graph and
pulled once; its interactions, ordered by time, are cut into a base (``--base``, default the
oldest 50%) and ``--slices`` equal slices after it. ``full-0`` is trained on the base. Each
training sees only the knowledge a split would import for it: the relations the data set derives
from its interactions (the shop's co-occurrence links, :class:`kgrec.datasets.DerivedKnowledge`)
rebuilt without every (user, item) pair after its cut (:func:`kgrec.datasets.training_triples`),
so no test pair's events reach them, and no triple stated after its cut (a MovieLens tag a user
added later: :func:`kgrec.datasets.stated_before`, the evaluation split's rule). Then
for k = 1 … 10, slice k arrives and the incremental update (the same
:func:`~workers.training.incremental.refresh_partition` and
:func:`~workers.training.incremental.merge` the Celery tasks run, its 2-hop pulls served from
the pulled arrays instead of Cypher) makes version k from version k-1. After updates 1, 5
and 10 the next slice (k+1) is the test: each user with history and new items in it is
scored with their whole history so far (as serving reads it), history excluded, full
ranking, Recall@20 of:

- ``stale``: full-0 as it is (the user's new history is still used at request time);
- ``incremental``: version k;
- ``full``: a full retraining on base + slices 1…k (the same epochs cap).

It also reports the drift each version records and the seconds of each update (refresh and
merge, in this process) against each full training (train and fit, no pull or write-back).

**Timing** (``--live``): the shop at ``--live-factor`` in a scratch graph with the real
stack: a full training (pull → write-back, ``run_training``), then ``--new-events`` purchases
posted as events, and the incremental update through Celery (``incremental_update``: plan,
P partition tasks, merge, publish) with a worker of 1 process and then 2 processes, each
after a fresh batch of the same size; wall time from sending the task to the merge's end.

The last line printed is one JSON object (also written to ``--out``).

    .venv/bin/python -m bench.incremental --quality shop --quality movielens --live \\
        --out bench/results/incremental.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
import uuid
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import parsed_device
from bench.scale import shop_spec
from graph_schema.statements.training import TRAINING_ITEM_IDS, TRAINING_USER_IDS
from kgrec.config import Settings
from kgrec.datasets import Dataset, TripleRecord, open_dataset, stated_before, training_triples
from kgrec.demo_shop import generate_shop
from kgrec.embedded import EmbeddedServer
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.importer import import_dataset
from kgrec.item_graphs import history_order
from kgrec.job_queue import INCREMENTAL_UPDATE, job_client
from kgrec.maintenance import clear_graph
from kgrec.migrations import migrate
from kgrec.recommender import HistoryEntry, ModelArtifacts, Recommender
from kgrec.ties import interaction_ties
from kgrec.training_graph import TrainingGraph
from kgrec_cli.stack import worker_argv
from workers.training.config import TrainConfig, for_variant
from workers.training.holdout import subset
from workers.training.incremental import UpdatePlan, merge, refresh_partition, run_incremental
from workers.training.job import run_training
from workers.training.pipeline import evaluate_recommender, train_model
from workers.training.subgraph import all_ids, open_knowledge, pull

K = 20
REPORTED = (1, 5, 10)


# --- a scratch graph ---------------------------------------------------------------------------------


@contextmanager
def scratch_graph(settings: Settings, folder: str) -> Iterator[tuple[Settings, GraphGateway]]:
    """A graph of its own on the embedded server with the data set ``folder`` (or built-in name) imported."""
    name = f"bench_inc_{uuid.uuid4().hex[:8]}"
    local = replace(settings, graph_name=name)
    gateway = open_gateway(local, graph_name=name)
    try:
        migrate(gateway)
        import_dataset(gateway, open_dataset(folder, local.datasets_dir), local)
        yield local, gateway
    finally:
        clear_graph(gateway)
        gateway.close()


def dataset_folder(name: str, factor: float, work: Path) -> str:
    """A built-in data set's name, or the synthetic shop generated into ``work``."""
    if name != "shop":
        return name
    folder = work / f"shop-{factor}"
    if not (folder / "interactions.csv").exists():
        generate_shop(shop_spec(factor, seed=7), folder)
    return str(folder)


# --- quality on a time split -------------------------------------------------------------------------


def cuts(graph: TrainingGraph, base: float, slices: int) -> np.ndarray:
    """Order-key boundaries: base = order <= cuts[0]; slice k = cuts[k-1] < order <= cuts[k]."""
    order = np.sort(graph.inter_order)
    positions = [base + (1.0 - base) * k / slices for k in range(slices + 1)]
    return np.array([order[min(int(p * order.size), order.size) - 1] for p in positions], dtype=np.int64)


def pairs_after(graph: TrainingGraph, cut: int) -> set[tuple[str, str]]:
    """The (user, item) pairs of ``graph`` whose interaction is newer than ``cut`` (one row per pair,
    ordered by its latest event): those a training on the interactions up to ``cut`` holds out."""
    later = np.flatnonzero(graph.inter_order > cut)
    return {
        (graph.user_ids[int(graph.inter_user[r])], graph.item_ids[int(graph.inter_item[r])]) for r in later
    }


def stated_after(statements: Iterable[TripleRecord], cut: int) -> set[tuple[str, str, str]]:
    """The (head, relation, tail) of ``statements`` whose every statement is dated after ``cut`` (the
    import keeps one edge per triple, however many users stated it and when): a tag added later."""
    later: set[tuple[str, str, str]] = set()
    known: set[tuple[str, str, str]] = set()
    for triple in statements:
        # Times are whole ms: before cut + 1 is up to the cut. An undated triple is known throughout.
        (later if stated_before(triple, cut + 1) is False else known).add(triple[:3])
    return later - known


def with_training_knowledge(
    graph: TrainingGraph,
    dataset: object,
    held_out: set[tuple[str, str]],
    later: Collection[tuple[str, str, str]] = (),
) -> TrainingGraph:
    """``graph`` with the knowledge a split that holds the ``held_out`` pairs out would import: the
    relations ``dataset`` derives from its interactions rebuilt without those pairs' interactions
    (:func:`kgrec.datasets.training_triples`), the triples stated ``later`` left out, every other
    triple as pulled."""
    nodes = [*graph.item_ids, *graph.entity_ids]
    every = (
        TripleRecord(nodes[head], graph.relation_names[relation], nodes[tail])
        for head, relation, tail in graph.kg_triples.tolist()
    )
    pulled = (triple for triple in every if triple[:3] not in later)
    items = set(graph.item_ids)

    def label(end: str) -> str:
        return "Item" if end in items else "Entity"  # the importer's rule: a listed item first

    edges = [
        {
            "head": t.head,
            "relation": t.relation,
            "tail": t.tail,
            "head_label": label(t.head),
            "tail_labels": [label(t.tail)],
        }
        for t in training_triples(dataset, pulled, held_out)
    ]
    kinds = dict(zip(graph.entity_ids, graph.entity_kinds, strict=True))
    kg = open_knowledge({item: k for k, item in enumerate(graph.item_ids)}, kinds, edges)
    return replace(
        graph,
        knowledge=kg.knowledge,
        entity_ids=kg.entity_ids,
        entity_kinds=kg.entity_kinds,
        relation_names=kg.relation_names,
        kg_triples=kg.kg_triples,
    )


def training_graph(full: TrainingGraph, dataset: Dataset, cut: int) -> TrainingGraph:
    """What a training at ``cut`` sees: the interactions of ``full`` up to ``cut``, with the knowledge
    of those pairs alone (the pull's derived relations are counted from every event, later ones too)
    and stated up to ``cut`` (the pull keeps no statement's time: a tag added after the cut would
    tell the training what the user watched next). ``cut`` is a time: the data sets here have them."""
    kept = subset(full, full.inter_order <= cut)
    later = stated_after(dataset.triples(), cut)
    return with_training_knowledge(kept, dataset, pairs_after(full, cut), later)


def rows_for(graph: TrainingGraph, users: set[str], now_ms: int) -> list[dict[str, Any]]:
    """What INTERACTIONS_OF_USERS would return for ``users`` on ``graph`` (weights already decayed)."""
    wanted = np.array([u in users for u in graph.user_ids], dtype=bool)
    keep = np.flatnonzero(wanted[graph.inter_user])
    return [
        {
            "user_id": graph.user_ids[int(graph.inter_user[r])],
            "item_id": graph.item_ids[int(graph.inter_item[r])],
            "weight": float(graph.inter_weight[r]),
            "weight_ts": now_ms,
            "last_ts": int(graph.inter_order[r]),
            "last_seq": None,
        }
        for r in keep
    ]


def incremental_step(
    parent: ModelArtifacts,
    graph: TrainingGraph,
    since: int,
    version: str,
    lineage: dict[str, Any],
    partitions: int,
    damping: float,
    half_life_ms: float,
) -> ModelArtifacts:
    """One update of ``parent`` for the interactions of ``graph`` newer than ``since`` (in-memory pulls)."""
    new = graph.inter_order > since
    items = sorted({graph.item_ids[i] for i in graph.inter_item[new]})
    users = sorted({graph.user_ids[u] for u in graph.inter_user[new]})
    counts = np.bincount(graph.inter_item, minlength=graph.n_items)
    index = {i: k for k, i in enumerate(graph.item_ids)}
    since_root = lineage.get("new_interactions_since_root", 0) + int(new.sum())
    plan = UpdatePlan(
        parent=parent.version,
        parent_artifact="",
        since=since,
        data_until=int(graph.inter_order[new].max()),
        items=items,
        users=users,
        item_interactions={i: int(counts[index[i]]) for i in items},
        new_interactions=int(new.sum()),
        partitions=partitions,
        parent_counts="{}",
        lineage={
            **lineage,
            "new_interactions_since_root": since_root,
            "drift": since_root / lineage["root_interactions"],
        },
    )
    now = int(time.time() * 1000)
    parts = []
    for part in range(partitions):
        part_items, _users = plan.seeds(part)
        # the 2-hop pull: every user of the partition's items, and every touched user
        of_items = np.isin(graph.inter_item, [index[i] for i in part_items])
        wanted = set(plan.users) | {graph.user_ids[u] for u in np.unique(graph.inter_user[of_items])}
        rows = rows_for(graph, wanted, now)
        parts.append(
            refresh_partition(
                parent, plan, part, rows, now_ms=now, half_life_ms=half_life_ms, damping=damping
            )
        )
    artifacts, _users = merge(parent, plan, parts, version)
    return artifacts


def test_slice(graph: TrainingGraph, lo: int, hi: int) -> tuple[list[list[HistoryEntry]], list[set[str]]]:
    """Users with history up to ``lo`` and new items in (lo, hi]: (histories, targets)."""
    order = history_order(graph)
    ties = interaction_ties(graph)
    histories: dict[int, list[HistoryEntry]] = {}
    targets: dict[int, set[str]] = {}
    for r in order:
        u, key = int(graph.inter_user[r]), int(graph.inter_order[r])
        item = graph.item_ids[int(graph.inter_item[r])]
        if key <= lo:
            entry = HistoryEntry(item, float(graph.inter_weight[r]), key, int(ties[r]))
            histories.setdefault(u, []).append(entry)
        elif key <= hi:
            targets.setdefault(u, set()).add(item)
    users = sorted(u for u in targets if u in histories)
    seen = [{h.item_id for h in histories[u]} for u in users]
    pairs = [(histories[u], targets[u] - s) for u, s in zip(users, seen, strict=True)]
    pairs = [(h, t) for h, t in pairs if t]
    return [h for h, _ in pairs], [t for _, t in pairs]


def recall(artifacts: ModelArtifacts, histories: list, targets: list) -> float:
    """Recall@20 of ``artifacts`` served (history excluded, full ranking)."""
    return round(evaluate_recommender(Recommender(artifacts), histories, targets, (K,))[f"recall@{K}"], 5)


def quality(settings: Settings, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Recall@20 of stale, incremental and full versions on a time split of data set ``name``."""
    config = for_variant(TrainConfig(epochs=args.epochs), args.variant)
    folder = dataset_folder(name, args.shop_factor, Path(args.work_dir))
    with scratch_graph(settings, folder) as (local, gateway):
        full = pull(gateway, int(time.time() * 1000), local.half_life_ms)
        dataset = open_dataset(folder, local.datasets_dir)
    bounds = cuts(full, args.base, args.slices)

    def upto(k: int) -> TrainingGraph:
        return training_graph(full, dataset, int(bounds[k]))

    def train(k: int) -> tuple[ModelArtifacts, float]:
        graph = upto(k)
        started = time.perf_counter()
        result = train_model(graph, config, device=args.device, version=f"full-{k}")
        return result.artifacts, time.perf_counter() - started

    root, root_seconds = train(0)
    lineage = {
        "root": root.version,
        "depth": 0,
        "root_interactions": int((full.inter_order <= bounds[0]).sum()),
    }
    model, steps, report = root, [], {}
    for k in range(1, max(REPORTED) + 1):
        graph = upto(k)
        started = time.perf_counter()
        model = incremental_step(
            model,
            graph,
            int(bounds[k - 1]),
            f"inc-{k}",
            {**lineage, **(model.parameters.get("incremental") or {})},
            args.partitions,
            args.damping,
            local.half_life_ms,
        )
        seconds = time.perf_counter() - started
        info = model.parameters["incremental"]
        steps.append(
            {
                "update": k,
                "seconds": round(seconds, 3),
                "items": info["items"],
                "users": info["users"],
                "new_interactions": info["new_interactions"],
                "drift": round(info["drift"], 4),
            }
        )
        if k in REPORTED:
            histories, targets = test_slice(full, int(bounds[k]), int(bounds[k + 1]))
            retrained, seconds_full = train(k)
            report[str(k)] = {
                "test_users": len(targets),
                "stale": recall(root, histories, targets),
                "incremental": recall(model, histories, targets),
                "full": recall(retrained, histories, targets),
                "drift": round(info["drift"], 4),
                "full_train_s": round(seconds_full, 2),
            }
            print(json.dumps({"dataset": name, "after_updates": k, **report[str(k)]}), flush=True)
    return {
        "dataset": name,
        "size": full.counts() | {"base_interactions": lineage["root_interactions"]},
        "split": {
            "base": args.base,
            "slices": args.slices,
            "slice_interactions": int((full.inter_order > bounds[0]).sum()) // args.slices,
        },
        "recall@20": report,
        "updates": steps,
        "mean_update_s": round(float(np.mean([s["seconds"] for s in steps])), 3),
        "full_train_s": round(root_seconds, 2),
    }


# --- timing with the real stack ---------------------------------------------------------------------


def purchases(gateway: GraphGateway, settings: Settings, n: int, seed: int) -> None:
    """``n`` purchases now by random users of random items (both from the graph)."""
    users = all_ids(gateway, TRAINING_USER_IDS)
    items = all_ids(gateway, TRAINING_ITEM_IDS)
    rng = np.random.default_rng(seed)
    now = int(time.time() * 1000)
    raw = [
        {
            "event_id": f"inc-{seed}-{k}",
            "user_id": users[u],
            "item_id": items[i],
            "type": "purchase",
            "ts": now,
        }
        for k, (u, i) in enumerate(
            zip(rng.integers(0, len(users), n), rng.integers(0, len(items), n), strict=True)
        )
    ]
    for start in range(0, n, 500):
        events, errors = validate_batch(raw[start : start + 500], max_skew_s=300)
        assert not errors, errors[:3]
        ingest(gateway, events, settings)


def live(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """Full retraining against Celery incremental updates with 1 and 2 worker processes."""
    folder = dataset_folder("shop", args.live_factor, Path(args.work_dir))
    config = for_variant(TrainConfig(epochs=args.epochs, patience=args.epochs), args.variant)
    result: dict[str, Any] = {"shop_factor": args.live_factor, "new_events": args.new_events}
    with scratch_graph(settings, folder) as (local, gateway):
        started = time.perf_counter()
        summary = run_training(gateway, local, config, device=args.device, version="bench-full")
        result["full_retrain_s"] = round(time.perf_counter() - started, 2)
        result["size"] = summary["counts"]
        env = {
            **os.environ,
            "KGREC_DATA_DIR": str(local.data_dir),
            "KGREC_GRAPH": local.graph_name,
            "OMP_NUM_THREADS": "1",
        }
        client = job_client(local)
        for processes in args.workers:
            purchases(gateway, local, args.new_events, seed=processes)
            log = Path(args.work_dir) / f"worker-{processes}.log"
            with open(log, "wb") as output:
                worker = subprocess.Popen(
                    worker_argv(concurrency=processes), env=env, stdout=output, stderr=output
                )
                try:
                    time.sleep(args.worker_start_s)
                    started = time.perf_counter()
                    job = client.send_task(INCREMENTAL_UPDATE, kwargs={"partitions": args.live_partitions})
                    planned = job.get(timeout=3600)
                    done = client.AsyncResult(planned["merge_job"]).get(timeout=3600)
                    seconds = time.perf_counter() - started
                finally:
                    worker.terminate()
                    worker.wait(60)
            result[f"incremental_{processes}_workers"] = {
                "seconds": round(seconds, 2),
                "partitions": planned["partitions"],
                "items": planned["items"],
                "users": planned["users"],
                "activated": done["activated"],
            }
            print(json.dumps({"live": processes, **result[f"incremental_{processes}_workers"]}), flush=True)
        # the same update in this process, one phase after another (where the time goes)
        purchases(gateway, local, args.new_events, seed=99)
        result["incremental_in_process"] = run_incremental(
            gateway, local, "bench-sync", partitions=args.live_partitions
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quality", action="append", default=[], choices=["shop", "movielens"])
    parser.add_argument("--live", action="store_true")
    parser.add_argument("--shop-factor", type=float, default=0.125, help="of bench/scale.py's 1x (16k users)")
    parser.add_argument("--live-factor", type=float, default=4.0)
    parser.add_argument("--new-events", type=int, default=2_000)
    parser.add_argument("--workers", type=lambda t: [int(x) for x in t.split(",")], default=[1, 2])
    parser.add_argument("--worker-start-s", type=float, default=15.0)
    parser.add_argument("--live-partitions", type=int, default=2)
    parser.add_argument("--base", type=float, default=0.5)
    parser.add_argument("--slices", type=int, default=11)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--variant", default="no-text")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--damping", type=float, default=Settings.incremental_damping)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work-dir", default="var/bench-incremental")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    args.device = parsed_device(parser, args.device)
    if args.slices < max(REPORTED) + 1:  # update k absorbs slice k, and the last is held out
        parser.error(f"--slices must be at least {max(REPORTED) + 1} (updates {REPORTED} are reported)")
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env().with_overrides(data_dir=Path(args.work_dir) / "data")
    server = EmbeddedServer(settings.data_dir, settings.aof_fsync)
    server.start()
    try:
        report: dict[str, Any] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "epochs_cap": args.epochs,
            "variant": args.variant,
            "damping": args.damping,
            "partitions": args.partitions,
            "quality": [quality(settings, name, args) for name in args.quality],
        }
        if args.live:
            report["live"] = live(settings, args)
    finally:
        server.stop()
    line = json.dumps(report)
    if args.out:
        Path(args.out).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
