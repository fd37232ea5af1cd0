"""Benchmark: API latency under open-loop load, per endpoint, over real HTTP.

Serves a data set with gunicorn (2 workers x 4 threads, as `kgrec up`) on the
embedded graph and offers each endpoint a fixed request rate for a while with
:mod:`bench.loadgen` (latency counted from each request's scheduled send
time), then reports p50/p95/p99 and the error rate per endpoint. It also
reports the explanation coverage: the share of recommended items (k=20,
explain=true) that carry at least one path.

The cost of recording impressions (every recommendations and similar-items
response is appended to the serving process's journal before it is answered and
shipped to the stream by a thread, see kgrec/impressions.py) is measured
in the same run: after the endpoints above, recommendations are loaded again
with recording off and on (``KGREC_RECORD_IMPRESSIONS``), alternating for
``--impression-rounds`` rounds, each in a freshly started API, and the report
gives p50/p99 of each side (pooled over the rounds) and the p99 overhead.

The work directory keeps the imported graph and the trained model between
runs (first run: import and training, minutes).

    .venv/bin/python -m bench.api [--dataset amazon-beauty|kgat-amazon-book] [--duration 30]
        [--rates recommendations=300,similar=300,explanation=100] [--datasets-dir ../shared/data]
        [--impression-rounds 2] [--impression-rate 300]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
import requests

from bench.common import percentile, positive_number, serve_api, server_histogram, server_side
from bench.loadgen import LoadResult, open_loop, pooled
from graph_schema.statements import admin
from graph_schema.statements.models import ACTIVE_VERSION
from graph_schema.statements.training import TRAINING_USER_IDS
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.gateway import GraphGateway
from kgrec.importer import import_dataset
from kgrec.impressions import ImpressionStore
from kgrec.model_store import ActiveModel
from kgrec.runtime import embedded_server, graph_session
from workers.training.config import TrainConfig
from workers.training.job import start_training
from workers.training.subgraph import all_ids

KEY = "bench-api-key"
RECORD_ENV = "KGREC_RECORD_IMPRESSIONS"
SAMPLE = 2_000
WARM_CONNECTIONS = 4
DEFAULT_RATES = "recommendations=300,similar=300,explanation=100"
ROUTES = {  # the endpoint label of the API's own latency histogram
    "recommendations": "/v1/users/{user_id}/recommendations",
    "similar": "/v1/items/{item_id}/similar",
    "explanation": "/v1/users/{user_id}/recommendations/{item_id}/explanation",
}


def _parse_rates(text: str) -> dict[str, float]:
    """``--rates`` (``ENDPOINT=REQ_PER_S,...``), or a ValueError naming the part that is not one of
    :data:`ROUTES` at a rate above 0."""
    rates = {}
    for part in filter(None, text.split(",")):  # --rates '': only the impression rounds
        name, _, value = part.partition("=")
        rate = positive_number(value)
        if name.strip() not in ROUTES or rate is None:
            raise ValueError(f"{part!r} is not ENDPOINT=REQ_PER_S with ENDPOINT one of {', '.join(ROUTES)}")
        rates[name.strip()] = rate
    return rates


def checked_rates(parser: argparse.ArgumentParser, text: str) -> str:
    """``--rates`` as given, or the parser's one-line error before any import or training."""
    try:
        _parse_rates(text)
    except ValueError as exc:
        parser.error(f"--rates: {exc}")
    return text


def prepare(gateway: GraphGateway, settings: Settings, dataset: str, epochs: int) -> dict[str, Any]:
    """Import the data set and train a model unless the work directory has them already."""
    if not int(gateway.read(admin.ITEM_COUNT)[0]["count"]):
        print(f"importing {dataset} ...", flush=True)
        import_dataset(gateway, open_dataset(dataset, settings.datasets_dir), settings)
    if not gateway.read(ACTIVE_VERSION):
        print(f"training a model ({epochs} epochs) ...", flush=True)
        start_training(gateway, settings, TrainConfig(epochs=epochs), device="cpu")
    return {
        "nodes": {r["label"]: int(r["count"]) for r in gateway.read(admin.NODE_COUNTS)},
        "relationships": {r["type"]: int(r["count"]) for r in gateway.read(admin.RELATIONSHIP_COUNTS)},
    }


def summarise(result: LoadResult) -> dict[str, Any]:
    """Percentiles in milliseconds, error rate and achieved rate."""
    ms = [x * 1000 for x in result.latencies]
    return {
        "offered_rps": result.offered_rate,
        "achieved_rps": round(result.sent / result.duration_s, 1),
        "requests": result.sent,
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2) if ms else None,
        "error_rate": round(sum(result.errors.values()) / max(result.sent, 1), 5),
        "errors": result.errors,
        "slowest": [{"at_s": round(at, 2), "ms": round(latency * 1000, 1)} for at, latency in result.slowest],
    }


def endpoint_paths(
    base: str, session: requests.Session, users: list[str], items: list[str], explained_users: int
) -> dict[str, list[str]]:
    """Warm the API at ``base`` up, then the request paths of each endpoint in ``ROUTES``.

    Explanations are asked for items the first ``explained_users`` users are recommended. The
    warm-up explains the items of as many other users, so the counts of popular entities that a
    serving process remembers per model version (kgrec/explanations.py) are there, as they are
    in a process that has served for a while, without the measured pairs themselves being warm.
    """
    warm(base, [f"/v1/users/{quote(user, safe='')}/recommendations?k=20" for user in users[:200]])

    def explained(chosen: list[str]) -> list[tuple[str, str]]:
        pairs: list[tuple[str, str]] = []
        for user in chosen:
            url = f"{base}/v1/users/{quote(user, safe='')}/recommendations?k=3"
            pairs.extend((user, item["item_id"]) for item in session.get(url, timeout=30).json()["items"])
        return pairs

    others = explained(users[explained_users : 2 * explained_users])
    warm(base, [_explanation_path(user, item) for user, item in others])
    pairs = explained(users[:explained_users])
    return {
        "recommendations": [f"/v1/users/{quote(u, safe='')}/recommendations?k=20" for u in users],
        "similar": [f"/v1/items/{quote(i, safe='')}/similar?k=20" for i in items],
        "explanation": [_explanation_path(u, i) for u, i in pairs],
    }


def warm(base: str, paths: list[str]) -> None:
    """Request ``paths`` once over several connections, so that both gunicorn workers get some
    (one keep-alive connection reaches one worker): code paths, per-version state, entity counts."""

    def one_connection(n: int) -> None:
        session = requests.Session()
        for path in paths[n::WARM_CONNECTIONS]:
            session.get(f"{base}{path}", timeout=60)

    with ThreadPoolExecutor(WARM_CONNECTIONS) as pool:
        list(pool.map(one_connection, range(WARM_CONNECTIONS)))


def _explanation_path(user: str, item: str) -> str:
    return f"/v1/users/{quote(user, safe='')}/recommendations/{quote(item, safe='')}/explanation"


def load(args: argparse.Namespace, settings: Settings, users: list[str], items: list[str]) -> dict[str, Any]:
    """Serve the API, offer each endpoint its rate, then measure explanation coverage."""
    report: dict[str, Any] = {"endpoints": {}}
    with serve_api(settings.data_dir, KEY, args.port) as base:
        session = requests.Session()
        paths = endpoint_paths(base, session, users, items, args.coverage_users)
        for name, rate in _parse_rates(args.rates).items():
            print(f"{name}: {rate:g} req/s for {args.duration:g} s ...", flush=True)
            before = server_histogram(base).get(ROUTES[name], {})
            report["endpoints"][name] = summarise(open_loop(base, paths[name], rate, args.duration))
            # includes the 2 s warm-up at the same rate
            after = server_histogram(base).get(ROUTES[name], {})
            report["endpoints"][name]["server_side"] = server_side(before, after)
            print(f"  {json.dumps(report['endpoints'][name])}", flush=True)
        # Coverage last, so its explain=true pages do not run into the latency measurements.
        explained = total = 0
        started = time.perf_counter()
        for user in users[: args.coverage_users]:
            body = session.get(
                f"{base}/v1/users/{quote(user, safe='')}/recommendations?k=20&explain=true", timeout=30
            ).json()
            total += len(body["items"])
            explained += sum(1 for item in body["items"] if item.get("reason"))
        report["explain_true_k20_mean_ms"] = round(
            (time.perf_counter() - started) * 1000 / max(args.coverage_users, 1), 1
        )
        report["explanation_coverage"] = round(explained / max(total, 1), 4)
        report["coverage_users"] = args.coverage_users
    return report


def _overhead(sides: dict[str, dict[str, Any]], side: str, figure: str) -> float | None:
    """How much slower ``side`` was than recording off, in percent of ``figure``."""
    if side not in sides:
        return None
    off, on = sides["off"][figure], sides[side][figure]
    return round((on - off) / off * 100, 1) if off else None


@contextlib.contextmanager
def fsync_policy(settings: Settings, policy: str) -> Iterator[None]:
    """The impressions server's appendfsync for a while (CONFIG SET), then the configured one again."""
    info = embedded_server(settings).running()
    assert info is not None and info.impressions_url() is not None
    client = redis.Redis.from_url(info.impressions_url())
    client.config_set("appendfsync", policy)
    try:
        yield
    finally:
        client.config_set("appendfsync", settings.impressions_fsync)
        client.close()


@contextlib.contextmanager
def recording(on: bool) -> Iterator[None]:
    """Start APIs (which copy this environment) with impression recording on or off."""
    before = os.environ.get(RECORD_ENV)
    os.environ[RECORD_ENV] = "true" if on else "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(RECORD_ENV, None)
        else:
            os.environ[RECORD_ENV] = before


def impression_overhead(args: argparse.Namespace, settings: Settings, users: list[str]) -> dict[str, Any]:
    """Recommendations with recording off and on, alternating in fresh APIs; p99 pooled per side."""
    paths = [f"/v1/users/{quote(u, safe='')}/recommendations?k=20" for u in users]
    runs: dict[str, list[LoadResult]] = {}
    rounds: list[dict[str, Any]] = []
    sides_run = ("off", "on", "on_always") if args.impression_always else ("off", "on")
    for round_no in range(args.impression_rounds):
        for side in sides_run:
            with (
                recording(side != "off"),
                fsync_policy(settings, "always" if side == "on_always" else settings.impressions_fsync),
                serve_api(settings.data_dir, KEY, args.port) as base,
            ):
                session = requests.Session()
                for path in paths[:200]:  # warm-up, as in load()
                    session.get(f"{base}{path}", timeout=30)
                print(
                    f"impressions {side}, round {round_no + 1}: {args.impression_rate:g} req/s ...",
                    flush=True,
                )
                result = open_loop(base, paths, args.impression_rate, args.duration)
            rounds.append({"round": round_no + 1, "recording": side, **summarise(result)})
            print(f"  {json.dumps(rounds[-1])}", flush=True)
            runs.setdefault(side, []).append(result)
    sides = {side: summarise(pooled(results)) for side, results in runs.items()}
    for side in sides.values():
        side.pop("slowest")
    store = ImpressionStore(settings)
    try:
        kept = store.length()
        memory = store.run(lambda client: client.memory_usage(store.stream, samples=0)) or 0
        id_key_bytes = store.run(lambda client: _mean_key_bytes(client, store.id_key("*")))
    finally:
        store.close()
    return {
        "server_appendfsync": settings.aof_fsync,
        "impressions_appendfsync": settings.impressions_fsync,
        "endpoint": "recommendations?k=20",
        "rate_rps": args.impression_rate,
        "rounds": rounds,
        "pooled": sides,
        "p99_overhead_pct": _overhead(sides, "on", "p99_ms"),
        "p50_overhead_pct": _overhead(sides, "on", "p50_ms"),
        "p99_overhead_always_pct": _overhead(sides, "on_always", "p99_ms"),
        "stream_entries": kept,
        "stream_bytes_per_impression": round(memory / kept, 1) if kept else None,
        "id_key_bytes_per_impression": id_key_bytes,
    }


def _mean_key_bytes(client: redis.Redis, pattern: str, sample: int = 500) -> float | None:
    """The mean MEMORY USAGE of up to ``sample`` keys matching ``pattern``."""
    sizes = []
    for key in client.scan_iter(match=pattern, count=1_000):
        sizes.append(client.memory_usage(key, samples=0) or 0)
        if len(sizes) >= sample:
            break
    return round(sum(sizes) / len(sizes), 1) if sizes else None


def model_and_users(gateway: GraphGateway, settings: Settings, rng: random.Random) -> tuple[Any, list[str]]:
    """The active model and a seeded sample of up to ``SAMPLE`` users of the graph."""
    model = ActiveModel(gateway, settings.data_dir).get()
    assert model is not None
    users = all_ids(gateway, TRAINING_USER_IDS)
    return model, rng.sample(users, min(SAMPLE, len(users)))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Prepare the work directory, then load the API."""
    rng = random.Random(args.seed)
    settings = Settings(data_dir=(args.work_dir / args.dataset).resolve(), datasets_dir=args.datasets_dir)
    with graph_session(settings, apply_migrations=True) as gateway:
        stats = prepare(gateway, settings, args.dataset, args.epochs)
        model, users = model_and_users(gateway, settings, rng)
        items = rng.sample(list(model.artifacts.item_ids), min(SAMPLE, model.n_items))
        report = load(args, settings, users, items)
        if args.impression_rounds:
            report["impression_overhead"] = impression_overhead(args, settings, users)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        "load generator on the same machine",
        "server": "gunicorn 2 workers x 4 threads (gthread), embedded FalkorDB",
        "dataset": args.dataset,
        "graph": stats,
        "model_version": model.artifacts.version,
        "duration_s_per_endpoint": args.duration,
        **report,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amazon-beauty", choices=["amazon-beauty", "kgat-amazon-book"])
    parser.add_argument(
        "--datasets-dir", "--data-dir", dest="datasets_dir", type=Path, default=Path("../shared/data")
    )
    parser.add_argument("--work-dir", type=Path, default=Path("var/bench-api"))
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per endpoint")
    parser.add_argument("--rates", default=DEFAULT_RATES)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--coverage-users", type=int, default=300)
    parser.add_argument("--port", type=int, default=18_000 + os.getpid() % 1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--impression-rounds", type=int, default=2, help="off/on rounds of the recording overhead (0: skip)"
    )
    parser.add_argument("--impression-rate", type=float, default=300.0, help="req/s of those rounds")
    parser.add_argument(
        "--impression-always",
        action="store_true",
        help="a third side: the impressions server with appendfsync always (what a per-write fsync costs)",
    )
    args = parser.parse_args()
    checked_rates(parser, args.rates)
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
