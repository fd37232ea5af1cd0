"""Benchmark: how each cost grows with the size of the shop (issue 15, "Cost growth, measured").

For each scale factor (default 1, 4 and 16: about 0.25 M, 1 M and 4 M events;
1x is 16,000 users and 4,000 items of ``kgrec demo generate``, both scaled by
the factor) it runs these stages, each in order, in its own work directory
``<work-dir>/x<factor>``:

1. generate: the synthetic shop (``kgrec.demo_shop``), traffic ending today;
2. import: ``kgrec import`` of it into a fresh embedded graph, in a process of
   its own (events/s over reading, aggregating, writing and the AOF rewrite;
   the importer's peak RSS); then the graph server's RSS;
3. train: a fixed number of epochs (``--epochs``, early stopping off), pull to
   switch, in a process of its own like a Celery worker (wall time, seconds per
   epoch, peak RSS); then the graph server's RSS;
4. api: recommendations, similar items and explanations at fixed request rates
   (``bench.api.load``: open loop, p50/p95/p99);
5. freshness: fold-in latency of new purchases (``bench.freshness.measure``);
6. restart: clean stop of the graph server, start, and the time until it
   answers with every node back (``NODE_COUNTS`` as before the stop).

Then, with ``--serving-rounds`` above 0, it serves the smallest and the largest
size side by side and offers each endpoint to them in alternating turns
(``bench.interleaved``): the p99 ratio of that phase is one run's, so the
machine's drift between the sizes' own api stages (minutes or hours apart)
does not enter it, and the serving goal is checked on it as well.

Then it fits the growth exponent b of every figure (cost ∝ events^b, least
squares on log-log) and extends the fit to ``--extrapolate-to`` events (100 M:
an estimate for planning, far outside what was measured), gives the graph
server's and the training worker's memory per million events and interactions
(the slope of a straight-line fit, so the fixed part is left out), checks the
issue's goals, writes a log-log plot to ``<results>.png``, and prints one JSON
object as its last line (also written to ``<results>.json``).

``--resume`` keeps each size's work directory and skips the stages recorded
as finished in its ``stages.json`` with the same options; the first stage
that is not (and every later one, which depends on it) runs again. Without
it, each size starts from an empty directory.

    .venv/bin/python -m bench.scale [--sizes 1,4,16] [--epochs 3] [--device cpu]
        [--duration 30] [--rates recommendations=300,similar=300,explanation=100]
        [--trials 50] [--serving-rounds 24] [--serving-turn-s 10] [--resume]
        [--work-dir var/bench-scale]
        [--results bench/results/scale]

A smoke run (about 6 minutes on the shared 2-core VM):

    .venv/bin/python -m bench.scale --sizes 0.05,0.1,0.2 --epochs 2 --duration 5 \
        --rates recommendations=60,similar=60,explanation=20 --trials 10 --serving-rounds 3 \
        --serving-turn-s 5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import in_fresh_process, parsed_device, peak_rss_while, rss_mb, serve_api
from graph_schema.statements import admin
from graph_schema.statements.training import TRAINING_USER_IDS
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.demo_shop import ShopSpec, generate_shop
from kgrec.embedded import EmbeddedServer, EmbeddedServerError
from kgrec.gateway import open_gateway
from kgrec.importer import import_dataset
from kgrec.runtime import embedded_server, graph_session

# Spawned children (import, training) import this module again, so nothing here may pull in
# torch at import time: it would count in the importer's peak RSS. bench.api, bench.freshness
# and workers.training are imported inside the stages that use them.

BASE_USERS = 16_000  # x1: about 15.4 events per user, so about 0.25 M events
# Not 4,000: at 16x that is 64,000 items, and FalkorDB 4.16.3 writes a snapshot it cannot load
# when a label holds 63,999 or 64,000 nodes (README, Operations, "A label count FalkorDB cannot
# load back"). The cost curve does not depend on the exact count.
BASE_ITEMS = 4_010
STAGES = ("generate", "import", "train", "api", "freshness", "restart")
SAMPLE = 2_000  # users and items the load stages draw from
GOAL_MAX_EXPONENT = 1.1  # import and training grow no worse than linearly
GOAL_MAX_P99_RATIO = 2.0  # serving p99, largest size over smallest

# figure -> (unit, what it is); every figure is a cost except import_events_per_s
FIGURES: dict[str, tuple[str, str]] = {
    "import_s": ("s", "import: read, aggregate, write, AOF rewrite"),
    "import_events_per_s": ("events/s", "import throughput"),
    "import_peak_rss_mb": ("MB", "importer process, peak RSS"),
    "graph_rss_after_import_mb": ("MB", "graph server RSS after import"),
    "train_s": ("s", "training, pull to switch"),
    "train_s_per_epoch": ("s", "one epoch of the graph model"),
    "train_pull_s": ("s", "training: reading the graph"),
    "train_text_s": ("s", "training: item text embeddings"),
    "train_tune_signals_s": ("s", "training: the EASE signal's λ on validation"),
    "train_blend_s": ("s", "training: fitting the blend on validation"),
    "train_write_back_s": ("s", "training: embeddings written back, version switched"),
    "train_peak_rss_mb": ("MB", "training process (worker), peak RSS"),
    "graph_rss_after_train_mb": ("MB", "graph server RSS after training"),
    "api_process_peak_rss_mb": ("MB", "largest API (gunicorn) process, peak RSS"),
    "recommendations_p99_ms": ("ms", "recommendations p99"),
    "similar_p99_ms": ("ms", "similar items p99"),
    "explanation_p99_ms": ("ms", "explanation p99"),
    "freshness_p95_ms": ("ms", "fold-in freshness p95"),
    "restart_s": ("s", "graph server clean stop, start, until every node answers"),
    "restart_start_s": ("s", "the start alone: launch until every node answers"),
    "graph_rss_after_restart_mb": ("MB", "graph server RSS after restart"),
    "graph_disk_mb": ("MB", "graph server files on disk (AOF)"),
}
# (y axis, figures, slope of the dotted reference line): costs against linear growth,
# latencies against staying flat
PLOT_PANELS: tuple[tuple[str, tuple[str, ...], float], ...] = (
    (
        "time (s)",
        (
            "import_s",
            "train_s",
            "train_s_per_epoch",
            "train_tune_signals_s",
            "train_blend_s",
            "restart_start_s",
        ),
        1.0,
    ),
    (
        "memory and disk (MB)",
        ("graph_rss_after_train_mb", "train_peak_rss_mb", "api_process_peak_rss_mb", "graph_disk_mb"),
        1.0,
    ),
    (
        "latency (ms)",
        ("recommendations_p99_ms", "similar_p99_ms", "explanation_p99_ms", "freshness_p95_ms"),
        0.0,
    ),
)


# --- fits -------------------------------------------------------------------------


def power_fit(sizes: list[float], costs: list[float | None]) -> tuple[float, float] | None:
    """(a, b) of cost = a * size^b, by least squares on log-log; None with fewer than two sizes.

    Points whose size or cost is missing, zero, negative or not finite are left out.
    """
    points = [
        (math.log(s), math.log(c))
        for s, c in zip(sizes, costs, strict=True)
        if c is not None and s > 0 and c > 0 and math.isfinite(c)
    ]
    if len({x for x, _ in points}) < 2:
        return None
    x, y = np.array(points).T
    b, log_a = np.polyfit(x, y, 1)
    return math.exp(log_a), float(b)


def growth_exponent(sizes: list[float], costs: list[float | None]) -> float | None:
    """b in cost ∝ size^b (see :func:`power_fit`)."""
    fit = power_fit(sizes, costs)
    return None if fit is None else fit[1]


def save_growth_report(
    runs: list[dict[str, Any]], size_key: str, cost_keys: dict[str, str], path: Path
) -> None:
    """Write a size sweep to ``path``: its runs, the machine, the time, and each cost's growth exponent.

    ``cost_keys`` maps a reported name to the key of that cost in every run; the exponents are printed.
    """
    sizes = [float(run[size_key]) for run in runs]
    exponents = {}
    for name, key in cost_keys.items():
        exponent = growth_exponent(sizes, [run[key] for run in runs])
        exponents[name] = None if exponent is None else round(exponent, 2)
    report = {
        "machine": f"{platform.node()} ({platform.processor() or platform.machine()})",
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "sizes": runs,
        "growth_exponent": exponents,
    }
    print(json.dumps(exponents))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def paired_result(
    fields: dict[str, Any], timings: dict[str, float], before: str, after: str
) -> dict[str, Any]:
    """One size of a same-run comparison: ``fields``, the two timings (``<name>_s``) and the ratio
    before / after, printed as one JSON line."""
    result = {
        **fields,
        f"{before}_s": round(timings[before], 3),
        f"{after}_s": round(timings[after], 3),
        "ratio": round(timings[before] / timings[after], 2),
    }
    print(json.dumps(result), flush=True)
    return result


def size_sweep(
    doc: str,
    measure: Callable[[int, Path], dict[str, Any]],
    costs: tuple[str, ...],
    sizes: str,
    results: str,
    size_key: str = "users",
) -> None:
    """A size sweep's ``main``: ``--sizes`` (integers, default ``sizes``, every one read before the
    first runs), ``--work-dir`` and ``--results`` (default ``results``); ``measure(size, work-dir /
    size)`` for each size, then :func:`save_growth_report` of the costs, each a run's ``<cost>_s``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--sizes", default=sizes, type=lambda text: [int(n) for n in text.split(",")], help=size_key
    )
    parser.add_argument("--work-dir", type=Path, default=Path("var") / f"bench-{Path(results).stem}")
    parser.add_argument("--results", type=Path, default=Path(results))
    args = parser.parse_args()
    runs = [measure(n, args.work_dir / str(n)) for n in args.sizes]
    save_growth_report(runs, size_key, {name: f"{name}_s" for name in costs}, args.results)


def extrapolate(sizes: list[float], costs: list[float | None], size: float) -> float | None:
    """The fitted power law's cost at ``size``: far outside the measured sizes, an estimate only."""
    fit = power_fit(sizes, costs)
    return None if fit is None else fit[0] * size ** fit[1]


def marginal_per_million(counts: list[float], megabytes: list[float | None]) -> float | None:
    """MB per million more of ``counts`` (slope of a straight-line fit); None without two points.

    The slope leaves out the fixed part (the process's code, empty structures), which a
    plain ratio at small sizes would spread over few interactions.
    """
    points = [(n / 1e6, mb) for n, mb in zip(counts, megabytes, strict=True) if mb is not None]
    if len({x for x, _ in points}) < 2:
        return None
    x, y = np.array(points).T
    return float(np.polyfit(x, y, 1)[0])


# --- one size's work directory ----------------------------------------------------


def shop_spec(factor: float, seed: int) -> ShopSpec:
    """The generator's spec at ``factor`` times the base size; traffic ends today (recent for decay)."""
    return ShopSpec(
        users=max(1, round(BASE_USERS * factor)),
        items=max(1, round(BASE_ITEMS * factor)),
        seed=seed,
        end=datetime.now(UTC).date(),
    )


@dataclass
class SizeRun:
    """The work directory of one size: its shop, its graph, and the record of finished stages."""

    factor: float
    work: Path
    options: dict[str, dict[str, Any]]  # stage -> the options its result depends on
    resume: bool
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    _server: EmbeddedServer | None = None

    @property
    def shop(self) -> Path:
        """The generated data set."""
        return self.work / "shop"

    @property
    def settings(self) -> Settings:
        """kgrec's settings for this size's graph (embedded, in ``work/data``)."""
        return Settings(data_dir=(self.work / "data").resolve(), datasets_dir=self.work.resolve())

    @property
    def record(self) -> Path:
        """Where finished stages are recorded."""
        return self.work / "stages.json"

    def open(self) -> None:
        """Load the record (``resume``) or empty the work directory."""
        if self.resume and self.record.exists():
            self.stages = json.loads(self.record.read_text())
        else:
            self.server().stop()
            shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True, exist_ok=True)

    def finished(self, stage: str) -> bool:
        """Recorded with the same options as now."""
        done = self.stages.get(stage)
        return done is not None and done["options"] == self.options[stage]

    def save(self, stage: str, result: dict[str, Any], wall_s: float) -> None:
        """Record a finished stage (written at once, so an interrupted run keeps it)."""
        self.stages[stage] = {"options": self.options[stage], "wall_s": round(wall_s, 1), "result": result}
        self.record.write_text(json.dumps(self.stages, indent=2) + "\n")

    def forget_from(self, stage: str) -> None:
        """Drop the records of ``stage`` and every later one: they are measured again."""
        for later in STAGES[STAGES.index(stage) :]:
            self.stages.pop(later, None)

    def server(self) -> EmbeddedServer:
        """This size's embedded graph server (not started)."""
        if self._server is None:
            self._server = embedded_server(self.settings)
        return self._server

    def running_pid(self) -> int:
        """The graph server's pid, starting it if needed."""
        return self.server().start().pid

    def graph_memory(self) -> dict[str, float]:
        """The graph server's RSS and Redis' own count of its allocations, in MB."""
        info = self.server().start()
        client = info.client(socket_timeout=30)
        try:
            used = client.info("memory")["used_memory"] / 2**20
        finally:
            client.close()
        return {"rss_mb": round(rss_mb(info.pid), 1), "used_memory_mb": round(used, 1)}


# --- stages -----------------------------------------------------------------------


def stage_generate(run: SizeRun, args: argparse.Namespace) -> dict[str, Any]:
    """Write the shop (events, catalogue, triples)."""
    shutil.rmtree(run.shop, ignore_errors=True)
    summary = generate_shop(shop_spec(run.factor, args.seed), run.shop)
    spec = json.loads((run.shop / "demo_shop.json").read_text())["spec"]
    return {
        "spec": spec,
        "events": summary.events,
        "counts": summary.counts,
        "triples": summary.triples,
        "seconds": round(summary.seconds, 2),
        "events_per_s": round(summary.events_per_second),
    }


def _import_in_child(data_dir: str, shop: str) -> dict[str, Any]:
    settings = Settings(data_dir=Path(data_dir), datasets_dir=Path(shop).parent)
    with graph_session(settings, apply_migrations=True) as gateway:
        started = time.perf_counter()
        report = import_dataset(gateway, open_dataset(shop, settings.datasets_dir), settings)
        total_s = time.perf_counter() - started
    return {
        "total_s": total_s,
        "load_s": report.seconds,  # writing and the AOF rewrite; the rest is reading and aggregating
        "nodes": report.nodes,
        "relationships": report.relationships,
        "interactions": report.rows_by_step.get("user → item", 0),
        "problems": len(report.problems),
    }


def stage_import(run: SizeRun, args: argparse.Namespace) -> dict[str, Any]:
    """Import the shop into an empty graph in a fresh process; then the server's memory."""
    run.server().stop()
    shutil.rmtree(run.settings.data_dir, ignore_errors=True)
    run.running_pid()
    result, peak_mb = in_fresh_process(_import_in_child, str(run.settings.data_dir), str(run.shop))
    events = run.stages["generate"]["result"]["events"]
    return {
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()},
        "events": events,
        "events_per_s": round(events / result["total_s"]),
        "relationships_per_s": round(result["relationships"] / result["load_s"]),
        "peak_rss_mb": round(peak_mb),
        "graph_after": run.graph_memory(),
    }


def _train_in_child(data_dir: str, epochs: int, device: str) -> dict[str, Any]:
    from workers.training.config import TrainConfig
    from workers.training.job import start_training

    settings = Settings(data_dir=Path(data_dir))
    # patience = epochs: early stopping never ends the run, so every size trains the same epochs
    config = TrainConfig(epochs=epochs, patience=epochs)
    with graph_session(settings) as gateway:
        started = time.perf_counter()
        summary = start_training(gateway, settings, config, device=device)
        total_s = time.perf_counter() - started
    return {
        "total_s": total_s,
        "epochs_run": len(summary["seconds_per_epoch"]),
        "seconds_per_epoch": float(np.mean(summary["seconds_per_epoch"])),
        "timings": summary["timings"],
        "counts": summary["counts"],
    }


def stage_train(run: SizeRun, args: argparse.Namespace) -> dict[str, Any]:
    """Train in a fresh process (a worker's peak RSS); then the server's memory."""
    run.running_pid()
    result, peak_mb = in_fresh_process(_train_in_child, str(run.settings.data_dir), args.epochs, args.device)
    return {
        "total_s": round(result["total_s"], 2),
        "epochs": args.epochs,
        "epochs_run": result["epochs_run"],
        "seconds_per_epoch": round(result["seconds_per_epoch"], 2),
        "timings": {k: round(v, 2) for k, v in result["timings"].items()},
        "counts": result["counts"],
        "peak_rss_mb": round(peak_mb),
        "graph_after": run.graph_memory(),
    }


def _targets(run: SizeRun, seed: int) -> tuple[Any, list[str], list[str]]:
    """The active model, and samples of users (bots left out) and items to send requests for."""
    from kgrec.model_store import ActiveModel
    from workers.training.subgraph import all_ids

    rng = random.Random(seed)
    run.running_pid()
    with open_gateway(run.settings) as gateway:
        model = ActiveModel(gateway, run.settings.data_dir).get()
        if model is None:
            raise RuntimeError(f"{run.work}: no active model (did the train stage run?)")
        users = all_ids(gateway, TRAINING_USER_IDS)
    items = list(model.artifacts.item_ids)
    return model, rng.sample(users, min(SAMPLE, len(users))), rng.sample(items, min(SAMPLE, len(items)))


def stage_api(run: SizeRun, args: argparse.Namespace) -> dict[str, Any]:
    """Each endpoint at its fixed rate, through bench.api's load()."""
    from bench import api

    _, users, items = _targets(run, args.seed)
    load_args = argparse.Namespace(
        port=args.port, rates=args.rates, duration=args.duration, coverage_users=args.coverage_users
    )
    # gunicorn's master and workers all carry the bind address in their command line
    with peak_rss_while(f"127.0.0.1:{args.port}") as peaks:
        report = api.load(load_args, run.settings, users, items)
    for endpoint in report["endpoints"].values():
        endpoint.pop("slowest", None)
    report["api_process_peak_rss_mb"] = round(max(peaks.values())) if peaks else None
    return report


def stage_freshness(run: SizeRun, args: argparse.Namespace) -> dict[str, Any]:
    """Fold-in latency through bench.freshness' measure()."""
    from bench import freshness

    model, users, _ = _targets(run, args.seed)
    # event ids must be new to the graph, or the API drops them as duplicates
    tag = f"scale-{int(time.time())}"
    with serve_api(run.settings.data_dir, freshness.KEY, args.port) as base:
        touched = freshness.touched_items(run.settings)
        latencies, failures = freshness.measure(
            base, model, users, args.trials, random.Random(args.seed), tag, touched
        )
    return freshness.summarise(latencies, failures)


def _node_counts(settings: Settings) -> dict[str, int]:
    with open_gateway(settings) as gateway:
        return {r["label"]: int(r["count"]) for r in gateway.read(admin.NODE_COUNTS)}


def stage_restart(run: SizeRun, args: argparse.Namespace) -> dict[str, Any]:
    """Stop the graph server cleanly, start it, and wait until every node answers again."""
    run.running_pid()
    expected = _node_counts(run.settings)
    disk = sum(f.stat().st_size for f in run.server().dir.rglob("*") if f.is_file())
    started = time.perf_counter()
    run.server().stop()
    stop_s = time.perf_counter() - started
    started = time.perf_counter()
    try:
        run.server().start()
    except EmbeddedServerError as error:
        # Recorded, not raised: the other stages' figures still make the report (FalkorDB 4.16.3
        # crashed loading the 16x graph back, see the README's Operations).
        return {"stop_s": round(stop_s, 2), "disk_mb": round(disk / 2**20, 1), "failed": str(error)}
    ready_s = time.perf_counter() - started  # PING answers: the AOF is loaded
    while (counts := _node_counts(run.settings)) != expected:
        if time.perf_counter() - started > 600:
            raise RuntimeError(f"after restart the graph holds {counts}, expected {expected}")
        time.sleep(0.05)
    start_s = time.perf_counter() - started
    return {
        "stop_s": round(stop_s, 2),
        "ping_s": round(ready_s, 2),
        "start_s": round(start_s, 2),
        "restart_s": round(stop_s + start_s, 2),
        "nodes": sum(expected.values()),
        "disk_mb": round(disk / 2**20, 1),
        "graph_after": run.graph_memory(),
    }


STAGE_FUNCTIONS = {
    "generate": stage_generate,
    "import": stage_import,
    "train": stage_train,
    "api": stage_api,
    "freshness": stage_freshness,
    "restart": stage_restart,
}


def stage_options(factor: float, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """What each stage's result depends on; a recorded stage with other options runs again."""
    spec = shop_spec(factor, args.seed)
    return {
        "generate": {"users": spec.users, "items": spec.items, "seed": spec.seed, "days": spec.days},
        "import": {},
        "train": {"epochs": args.epochs, "device": args.device},
        "api": {"rates": args.rates, "duration": args.duration, "coverage_users": args.coverage_users},
        "freshness": {"trials": args.trials},
        "restart": {},
    }


def run_size(factor: float, args: argparse.Namespace) -> dict[str, Any]:
    """Every stage of one size (resumed where ``--resume`` allows); returns the recorded stages."""
    run = SizeRun(factor, args.work_dir / f"x{factor:g}", stage_options(factor, args), args.resume)
    run.open()
    rerun = False
    try:
        for stage in STAGES:
            if not rerun and run.finished(stage):
                print(f"x{factor:g} {stage}: done ({run.stages[stage]['wall_s']} s), skipped", flush=True)
                continue
            if not rerun:
                run.forget_from(stage)
                rerun = True
            print(f"x{factor:g} {stage} ...", flush=True)
            started = time.perf_counter()
            result = STAGE_FUNCTIONS[stage](run, args)
            run.save(stage, result, time.perf_counter() - started)
            print(f"x{factor:g} {stage}: {run.stages[stage]['wall_s']} s", flush=True)
    finally:
        run.server().stop()
    return run.stages


def serve_interleaved(smallest: float, largest: float, args: argparse.Namespace) -> dict[str, Any]:
    """The smallest and the largest size served side by side, load alternating (bench.interleaved)."""
    from bench import interleaved
    from bench.api import _parse_rates

    runs = [
        SizeRun(f, args.work_dir / f"x{f:g}", stage_options(f, args), resume=True)
        for f in (smallest, largest)
    ]
    print(f"serving: x{smallest:g} and x{largest:g} interleaved, {args.serving_rounds} rounds", flush=True)
    try:
        sides = []
        for run in runs:
            _, users, items = _targets(run, args.seed)
            sides.append(interleaved.Side(f"x{run.factor:g}", run.settings.data_dir, users, items))
        return interleaved.measure(
            (sides[0], sides[1]),
            _parse_rates(args.rates),
            args.serving_turn_s,
            args.serving_rounds,
            args.port,
            args.coverage_users,
        )
    finally:
        for run in runs:
            run.server().stop()


def interleaved_goals(report: dict[str, Any]) -> dict[str, Any]:
    """The p99 goal on the interleaved figures: pooled p99, largest over smallest; and the
    per-round ratios' geometric mean, within the goal when its 95% interval's upper end is."""
    goals: dict[str, Any] = {}
    for name, endpoint in report["endpoints"].items():
        ratio = endpoint["p99_ratio"]
        goals[f"{name}_p99_interleaved_largest_over_smallest"] = ratio
        goals[f"{name}_p99_interleaved_within_{GOAL_MAX_P99_RATIO:g}x"] = (
            None if ratio is None else ratio <= GOAL_MAX_P99_RATIO
        )
        rounds = endpoint["round_ratio_summary"]
        goals[f"{name}_p99_round_ratio_geometric_mean"] = rounds["geometric_mean"]
        goals[f"{name}_p99_round_ratio_ci95"] = rounds["ci95"]
        goals[f"{name}_p99_round_ratio_upper_ci95_within_{GOAL_MAX_P99_RATIO:g}x"] = (
            None if rounds["ci95"] is None else rounds["ci95"][1] <= GOAL_MAX_P99_RATIO
        )
        adjusted = endpoint.get("steal_adjusted_ratio") or {}  # runs before it have none
        goals[f"{name}_p99_steal_adjusted_ratio"] = adjusted.get("ratio")
        goals[f"{name}_p99_steal_adjusted_ratio_ci95"] = adjusted.get("ci95")
    return goals


# --- the report -------------------------------------------------------------------


def figures(stages: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """One size's figures (see FIGURES) from its stage results."""
    imp, train = stages["import"]["result"], stages["train"]["result"]
    endpoints = stages["api"]["result"]["endpoints"]
    restart = stages["restart"]["result"]

    def p99(name: str) -> float | None:
        return endpoints[name]["p99_ms"] if name in endpoints else None

    return {
        "import_s": imp["total_s"],
        "import_events_per_s": imp["events_per_s"],
        "import_peak_rss_mb": imp["peak_rss_mb"],
        "graph_rss_after_import_mb": imp["graph_after"]["rss_mb"],
        "train_s": train["total_s"],
        "train_s_per_epoch": train["seconds_per_epoch"],
        "train_pull_s": train["timings"].get("pull_s"),
        "train_text_s": train["timings"].get("text_s"),
        "train_tune_signals_s": train["timings"].get("tune_signals_s"),  # EASE's λ walk
        "train_blend_s": train["timings"].get("fit_blend_s"),
        "train_write_back_s": train["timings"].get("write_back_and_gate_s"),
        "train_peak_rss_mb": train["peak_rss_mb"],
        "graph_rss_after_train_mb": train["graph_after"]["rss_mb"],
        "api_process_peak_rss_mb": stages["api"]["result"].get("api_process_peak_rss_mb"),
        "recommendations_p99_ms": p99("recommendations"),
        "similar_p99_ms": p99("similar"),
        "explanation_p99_ms": p99("explanation"),
        "freshness_p95_ms": stages["freshness"]["result"]["p95_ms"],
        "restart_s": restart.get("restart_s"),  # none: the server did not come back ("failed")
        "restart_start_s": restart.get("start_s"),
        "graph_rss_after_restart_mb": restart["graph_after"]["rss_mb"] if "graph_after" in restart else None,
        "graph_disk_mb": restart["disk_mb"],
    }


def summarise(sizes: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """Exponents, each figure extrapolated to ``target`` events, memory per million, and the goals."""
    events = [s["events"] for s in sizes]
    interactions = [s["interactions"] for s in sizes]
    series = {name: [s["figures"][name] for s in sizes] for name in FIGURES}
    exponents = {name: growth_exponent(events, values) for name, values in series.items()}

    def memory(name: str) -> dict[str, Any]:
        largest = sizes[-1]["figures"][name]
        return {
            "marginal_mb_per_m_events": _round(marginal_per_million(events, series[name])),
            "marginal_mb_per_m_interactions": _round(marginal_per_million(interactions, series[name])),
            "at_largest_mb_per_m_interactions": _round(largest / (interactions[-1] / 1e6))
            if largest
            else None,
        }

    # The import writes one row per node and relationship, and the shop's rows grow faster than its
    # events (more brands per user, more co-view links); the import's cost per row written says
    # whether the writing itself scales.
    written = [s["stages"]["import"]["nodes"] + s["stages"]["import"]["relationships"] for s in sizes]
    import_by_rows = {
        "rows_written": written,
        "rows_written_exponent_against_events": _round(growth_exponent(events, written), 3),
        "import_s_exponent_against_rows_written": _round(growth_exponent(written, series["import_s"]), 3),
    }
    goals: dict[str, Any] = {}
    for name in ("import_s", "train_s"):
        b = exponents[name]
        goals[f"{name}_exponent_at_most_{GOAL_MAX_EXPONENT}"] = None if b is None else b <= GOAL_MAX_EXPONENT
    for name in ("recommendations_p99_ms", "similar_p99_ms", "explanation_p99_ms"):
        first, last = series[name][0], series[name][-1]
        ratio = last / first if first and last else None
        goals[f"{name}_largest_over_smallest"] = _round(ratio)
        within = None if ratio is None else ratio <= GOAL_MAX_P99_RATIO
        goals[f"{name}_within_{GOAL_MAX_P99_RATIO:g}x"] = within
    return {
        "exponents": {name: _round(b, 3) for name, b in exponents.items()},
        "import_by_rows_written": import_by_rows,
        "extrapolated": {
            "events": target,
            "note": "the fitted power law far outside the measured sizes: an estimate, not a measurement",
            "figures": {name: _round(extrapolate(events, values, target)) for name, values in series.items()},
        },
        "memory_per_million": {
            "graph_server_after_training": memory("graph_rss_after_train_mb"),
            "training_worker_peak": memory("train_peak_rss_mb"),
            "api_process_peak": memory("api_process_peak_rss_mb"),
        },
        "goals": goals,
    }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def plot(sizes: list[dict[str, Any]], exponents: dict[str, float | None], path: Path) -> None:
    """Cost against events, log-log, one panel per unit, b in each legend entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    events = np.array([s["events"] for s in sizes], dtype=float)
    fig, axes = plt.subplots(1, len(PLOT_PANELS), figsize=(5.2 * len(PLOT_PANELS), 6.0))
    for ax, (ylabel, names, slope) in zip(axes, PLOT_PANELS, strict=True):
        for name in names:
            values = np.array([s["figures"][name] or np.nan for s in sizes], dtype=float)
            b = exponents.get(name)
            label = f"{name} (b = {b:.2f})" if b is not None else name
            ax.plot(events, values, marker="o", label=label)
        # the reference slope through the first point of the first series
        first = sizes[0]["figures"][names[0]]
        if first:
            reference = first * (events / events[0]) ** slope
            ax.plot(events, reference, linestyle=":", color="grey", label=f"reference (b = {slope:g})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14))  # below: never on a line
    fig.suptitle("kgrec: cost against data size (bench/scale.py)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(sizes: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """One row per figure: its value at each size, and its exponent."""

    def cell(value: float | None, width: int = 12) -> str:
        return f"{'-':>{width}}" if value is None else f"{value:>{width},.1f}"

    target = summary["extrapolated"]["events"]
    head = "".join(f"{'x' + format(s['factor'], 'g'):>12}" for s in sizes)
    print(f"{'figure':<32}{head}{'b':>8}{f'at {target / 1e6:g} M events':>18}")
    print(f"{'events':<32}" + "".join(f"{s['events']:>12,}" for s in sizes))
    for name, (unit, _) in FIGURES.items():
        b = summary["exponents"][name]
        print(
            f"{name + ' (' + unit + ')':<32}"
            + "".join(cell(s["figures"][name]) for s in sizes)
            + f"{'-' if b is None else format(b, '.2f'):>8}"
            + cell(summary["extrapolated"]["figures"][name], 18)
        )
    print(f"import against rows written: {json.dumps(summary['import_by_rows_written'])}")
    print(f"memory per million: {json.dumps(summary['memory_per_million'])}")
    print(f"goals: {json.dumps(summary['goals'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="1,4,16",
        help="scale factors; 1 = 16,000 users, 4,000 items, about 0.25 M events",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=3, help="graph model epochs (fixed: no early stop)")
    parser.add_argument("--device", default="cpu", help="training device: cpu, cuda, cuda:N")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per endpoint")
    parser.add_argument("--rates", default="recommendations=300,similar=300,explanation=100")
    parser.add_argument("--coverage-users", type=int, default=100)
    parser.add_argument("--trials", type=int, default=50, help="fold-in freshness trials")
    parser.add_argument(
        "--serving-rounds",
        type=int,
        default=24,
        help="rounds of serving the smallest and largest size side by side, load alternating (0: skip)",
    )
    parser.add_argument(
        "--serving-turn-s",
        type=float,
        default=10.0,
        help="seconds of each side-by-side turn (--duration is the per-size api stage's); short turns "
        "alternate the sides often, so a noisy stretch of the machine falls on both",
    )
    parser.add_argument("--port", type=int, default=17_000 + os.getpid() % 1000)
    parser.add_argument("--work-dir", type=Path, default=Path("var/bench-scale"))
    parser.add_argument(
        "--resume", action="store_true", help="skip the stages each size's stages.json records as done"
    )
    parser.add_argument(
        "--results", type=Path, default=Path("bench/results/scale"), help="writes RESULTS.json, RESULTS.png"
    )
    parser.add_argument(
        "--extrapolate-to", type=float, default=100e6, help="events to extrapolate each figure to"
    )
    args = parser.parse_args()
    args.device = parsed_device(parser, args.device)
    from bench.api import checked_rates

    checked_rates(parser, args.rates)
    factors = sorted(float(x) for x in args.sizes.split(","))

    sizes: list[dict[str, Any]] = []
    for factor in factors:
        stages = run_size(factor, args)
        sizes.append(
            {
                "factor": factor,
                "users": stages["generate"]["result"]["spec"]["users"],
                "items": stages["generate"]["result"]["spec"]["items"],
                "events": stages["generate"]["result"]["events"],
                "interactions": stages["import"]["result"]["interactions"],
                "wall_s": {stage: stages[stage]["wall_s"] for stage in STAGES},
                "figures": figures(stages),
                "stages": {stage: stages[stage]["result"] for stage in STAGES},
            }
        )
    summary = summarise(sizes, args.extrapolate_to)
    if args.serving_rounds and len(factors) > 1:
        summary["serving_interleaved"] = serve_interleaved(factors[0], factors[-1], args)
        summary["goals"].update(interleaved_goals(summary["serving_interleaved"]))
    defaults = Settings()
    print_table(sizes, summary)
    plot(sizes, summary["exponents"], args.results.with_suffix(".png"))
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; load generator on the same machine",
        "server": f"embedded FalkorDB ({defaults.graph_threads} graph thread(s), appendfsync "
        f"{defaults.aof_fsync}); gunicorn 2 workers x 4 threads",
        "options": {
            "sizes": factors,
            "base": {"users": BASE_USERS, "items": BASE_ITEMS},
            "seed": args.seed,
            "epochs": args.epochs,
            "device": args.device,
            "rates": args.rates,
            "duration_s": args.duration,
            "freshness_trials": args.trials,
            "serving_rounds": args.serving_rounds,
            "serving_turn_s": args.serving_turn_s,
        },
        "figures": {name: {"unit": unit, "what": what} for name, (unit, what) in FIGURES.items()},
        **summary,
        "sizes": sizes,
    }
    args.results.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
