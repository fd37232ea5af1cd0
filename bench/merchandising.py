"""Benchmark: recommendations under 1,000 business rules and availability masks, and audiences.

On Amazon Beauty served by gunicorn (2 workers x 4 threads) on the embedded graph
(one graph thread), in one run:

1. recommendations at ``--rate`` req/s with no rules and every item available (baseline);
2. the same load after ``--rules`` active rules (blocks, boosts, buries, conditional pins on
   items, brands and categories) and ``--unavailable`` of the catalogue marked unavailable
   through the catalogue API; the report gives p99 and its ratio to the baseline;
3. ``GET /v1/audiences`` for the brands with more than 1,000 interested users: p50/p95/p99 of
   the first page and of a page deep in the cursor walk, and the time to export each audience.

    .venv/bin/python -m bench.merchandising [--duration 30] [--rate 300] [--rules 1000]

The work directory is bench.api's (import and training happen once). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import requests

from bench.api import model_and_users, prepare, summarise
from bench.common import serve_api, server_histogram, server_side
from bench.loadgen import open_loop
from graph_schema.bench_statements import LARGEST_AUDIENCES
from graph_schema.statements.rules import ALL_RULES
from kgrec.config import Settings
from kgrec.runtime import graph_session

KEY = "bench-merchandising-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
ROUTE = "/v1/users/{user_id}/recommendations"
SAMPLE = 2_000
AUDIENCE_RATE = 20.0  # req/s for the audience pages: a marketing tool, not the request path


def make_rules(
    rng: random.Random, count: int, items: list[str], brands: list[str], categories: list[str]
) -> list[dict[str, Any]]:
    """A realistic mix: a tenth blocks, four tenths boosts, four tenths buries, a tenth pins."""
    rules: list[dict[str, Any]] = []
    for n in range(count):
        kind = rng.random()
        target_kind = rng.choice(("item", "brand", "category"))
        target = {
            "item": lambda: {"item": rng.choice(items)},
            "brand": lambda: {"brand": rng.choice(brands)},
            "category": lambda: {"category": rng.choice(categories)},
        }[target_kind]()
        rule: dict[str, Any] = {"id": f"bench-{n}"}
        if kind < 0.1:
            # blocks hit items only: a blocked big brand would empty most pages
            rule |= {"action": "block", "target": {"item": rng.choice(items)}}
        elif kind < 0.5:
            rule |= {"action": "boost", "target": target, "factor": round(rng.uniform(1.1, 3.0), 2)}
        elif kind < 0.9:
            rule |= {"action": "bury", "target": target, "factor": round(rng.uniform(0.2, 0.9), 2)}
        else:
            when = rng.choice(({"brand": rng.choice(brands)}, {"category": rng.choice(categories)}, None))
            rule |= {"action": "pin", "item": rng.choice(items), "position": rng.randint(1, 10)}
            if when:
                rule["when"] = when
        rules.append(rule)
    return rules


def apply_merchandising(base: str, rules: list[dict[str, Any]], unavailable: list[str]) -> None:
    """Store the rules and mark items unavailable, through the API as a merchandiser would."""
    for rule in rules:
        response = requests.post(f"{base}/v1/rules", json=rule, headers=AUTH, timeout=30)
        response.raise_for_status()
    for start in range(0, len(unavailable), 1_000):
        batch = [{"item_id": item, "available": False} for item in unavailable[start : start + 1_000]]
        response = requests.post(f"{base}/v1/items", json=batch, headers=AUTH, timeout=120)
        response.raise_for_status()


def recommendations_load(base: str, users: list[str], rate: float, duration: float) -> dict[str, Any]:
    """Offer the recommendations endpoint ``rate`` req/s; client and server-side figures."""
    paths = [f"/v1/users/{quote(u, safe='')}/recommendations?k=20" for u in users]
    before = server_histogram(base).get(ROUTE, {})
    report = summarise(open_loop(base, paths, rate, duration))
    report["server_side"] = server_side(before, server_histogram(base).get(ROUTE, {}))
    return report


def audience_load(base: str, brand: str, duration: float) -> dict[str, Any]:
    """First page and a deep page of one brand's audience under load, and the full CSV export."""
    first = requests.get(f"{base}/v1/audiences", params={"brand": brand, "limit": 100}, timeout=30).json()
    cursor, deep = first["next_cursor"], first
    for _ in range(5):  # the sixth page
        if not cursor:
            break
        deep = requests.get(
            f"{base}/v1/audiences", params={"brand": brand, "limit": 100, "cursor": cursor}, timeout=30
        ).json()
        cursor = deep["next_cursor"]
    query = {"brand": brand, "limit": 100}
    report: dict[str, Any] = {"brand": brand, "size": first["size"]}
    report["first_page"] = summarise(
        open_loop(base, [f"/v1/audiences?{urlencode(query)}"], AUDIENCE_RATE, duration)
    )
    if cursor:
        deep_path = f"/v1/audiences?{urlencode({**query, 'cursor': cursor})}"
        report["page_7"] = summarise(open_loop(base, [deep_path], AUDIENCE_RATE, duration))
    started = time.perf_counter()
    export = requests.post(f"{base}/v1/audiences/export", json={"brand": brand}, headers=AUTH, timeout=300)
    export.raise_for_status()
    report["export_s"] = round(time.perf_counter() - started, 3)
    report["export_rows"] = export.text.count("\n") - 1
    for part in ("first_page", "page_7"):
        if part in report:
            report[part].pop("slowest", None)
    return report


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    settings = Settings(data_dir=(args.work_dir / args.dataset).resolve(), datasets_dir=args.datasets_dir)
    with graph_session(settings, apply_migrations=True) as gateway:
        stats = prepare(gateway, settings, args.dataset, args.epochs)
        model, users = model_and_users(gateway, settings, rng)
        items = list(model.artifacts.item_ids)
        brand_sizes = gateway.read(LARGEST_AUDIENCES["brand"], {"limit": 2_000})
        categories = [r["id"] for r in gateway.read(LARGEST_AUDIENCES["category"], {"limit": 2_000})]
        if gateway.read(ALL_RULES):
            raise SystemExit("the graph holds rules already; the baseline must have none")
        brands = [r["id"] for r in brand_sizes]
        big_brands = [r["id"] for r in brand_sizes if r["users"] > 1_000][: args.audiences]
        rules = make_rules(rng, args.rules, items, brands, categories)
        unavailable = rng.sample(items, int(len(items) * args.unavailable))
        report: dict[str, Any] = {}
        with serve_api(settings.data_dir, KEY, args.port) as base:
            for user in users[:200]:  # warm-up: both workers load the model
                requests.get(f"{base}/v1/users/{quote(user, safe='')}/recommendations?k=20", timeout=30)
            print(f"no rules: {args.rate:g} req/s for {args.duration:g} s ...", flush=True)
            report["no_rules"] = recommendations_load(base, users, args.rate, args.duration)
            print(f"  {json.dumps(report['no_rules'])}", flush=True)
            print(f"storing {len(rules)} rules, {len(unavailable)} items unavailable ...", flush=True)
            apply_merchandising(base, rules, unavailable)
            time.sleep(2.0)  # every worker picks the change up within a second
            print(f"with rules: {args.rate:g} req/s for {args.duration:g} s ...", flush=True)
            report["with_rules"] = recommendations_load(base, users, args.rate, args.duration)
            print(f"  {json.dumps(report['with_rules'])}", flush=True)
            report["p99_ratio_with_rules"] = round(
                report["with_rules"]["p99_ms"] / report["no_rules"]["p99_ms"], 3
            )
            report["audiences"] = []
            for brand in big_brands:
                print(f"audience of {brand} ...", flush=True)
                report["audiences"].append(audience_load(base, brand, args.audience_duration))
                print(f"  {json.dumps(report['audiences'][-1])}", flush=True)
            # leave the work directory as bench.api expects it
            for rule in rules:
                requests.delete(f"{base}/v1/rules/{rule['id']}", headers=AUTH, timeout=30)
            for start in range(0, len(unavailable), 1_000):
                batch = [{"item_id": item, "available": True} for item in unavailable[start : start + 1_000]]
                requests.post(f"{base}/v1/items", json=batch, headers=AUTH, timeout=120)
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        "load generator on the same machine",
        "server": "gunicorn 2 workers x 4 threads (gthread), embedded FalkorDB (1 graph thread)",
        "dataset": args.dataset,
        "graph": stats,
        "model_version": model.artifacts.version,
        "rules": len(rules),
        "unavailable_items": len(unavailable),
        "duration_s": args.duration,
        **report,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="amazon-beauty", choices=["amazon-beauty"])
    parser.add_argument("--datasets-dir", dest="datasets_dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--work-dir", type=Path, default=Path("var/bench-api"))
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per scenario")
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--rules", type=int, default=1_000)
    parser.add_argument("--unavailable", type=float, default=0.05, help="share of items marked unavailable")
    parser.add_argument("--audiences", type=int, default=3, help="brands with over 1,000 users to measure")
    parser.add_argument("--audience-duration", type=float, default=15.0)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--port", type=int, default=19_000 + os.getpid() % 1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
