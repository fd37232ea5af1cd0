"""Soak: mixed traffic at 70% of measured capacity for a long while; errors, p99 and memory growth.

The mix is 80% recommendations, 10% explanations and 10% event batches (20
real Amazon Beauty interactions each, as purchases, with fresh event ids).
Capacity is measured first: the same mix, closed loop, 8 clients, 15 s. The
soak then offers 70% of it open loop for ``--minutes`` (default 10) and
reports the error rate, p99 per endpoint and the RSS growth of the API
(gunicorn master and workers), the Celery worker and the graph server,
between the end of the warm-up and the end of the run.

    .venv/bin/python -m bench.soak [--minutes 10] [--datasets-dir ../shared/data]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from bench.api import KEY, prepare, summarise
from bench.common import serve_api
from bench.loadgen import Request, open_loop_mix
from graph_schema.statements.training import INTERACTIONS_OF_USERS, TRAINING_USER_IDS
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.runtime import graph_session
from kgrec_cli.stack import worker_argv
from workers.training.subgraph import all_ids

CAPACITY_CLIENTS = 8
CAPACITY_S = 15.0
LOAD_SHARE = 0.7
EVENTS_PER_BATCH = 20


def rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants, in KiB."""
    total = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{current}/task").iterdir():
                stack.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def mix(users: list[str], pairs: list[tuple[str, str]], batches: list[bytes]) -> list[Request]:
    """10 requests in the proportions 8 : 1 : 1, cycling through users, pairs and batches."""
    auth = (("Authorization", f"Bearer {KEY}"),)
    requests_: list[Request] = []
    for n in range(max(len(users), len(pairs) * 8, len(batches) * 8) // 8):
        for k in range(8):
            user = users[(8 * n + k) % len(users)]
            requests_.append(
                Request("recommendations", f"/v1/users/{quote(user, safe='')}/recommendations?k=20")
            )
        user, item = pairs[n % len(pairs)]
        requests_.append(
            Request(
                "explanation",
                f"/v1/users/{quote(user, safe='')}/recommendations/{quote(item, safe='')}/explanation",
            )
        )
        requests_.append(Request("events", "/v1/events", "POST", batches[n % len(batches)], auth))
    return requests_


async def _closed_loop(base: str, requests_: list[Request], seconds: float) -> int:
    from bench.loadgen import _Pool, _send  # the same client as the open-loop runs

    host, port = base.removeprefix("http://").split(":")
    pool = _Pool(host, int(port))
    done = 0
    deadline = time.monotonic() + seconds

    async def client(offset: int) -> None:
        nonlocal done
        n = offset
        while time.monotonic() < deadline:
            await _send(pool, requests_[n % len(requests_)], 30)
            done += 1
            n += CAPACITY_CLIENTS

    await asyncio.gather(*(client(k) for k in range(CAPACITY_CLIENTS)))
    pool.close()
    return done


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    settings = Settings(data_dir=(args.work_dir / "amazon-beauty").resolve(), datasets_dir=args.datasets_dir)
    env = {**os.environ, "KGREC_DATA_DIR": str(settings.data_dir), "KGREC_API_KEYS": KEY}
    with (
        graph_session(settings, apply_migrations=True) as gateway,
        serve_api(settings.data_dir, KEY, args.port) as base,
        open(args.work_dir / "soak-worker.log", "wb") as worker_log,
    ):
        prepare(gateway, settings, "amazon-beauty", 8)
        users = all_ids(gateway, TRAINING_USER_IDS)
        rng.shuffle(users)
        items = [r["item_id"] for r in gateway.read(INTERACTIONS_OF_USERS, {"ids": users[:2000]})]
        graph_pid = EmbeddedServer(settings.data_dir).running().pid  # type: ignore[union-attr]
        worker = subprocess.Popen(worker_argv(), env=env, stdout=worker_log, stderr=subprocess.STDOUT)
        try:
            session = requests.Session()
            pairs: list[tuple[str, str]] = []
            for user in users[:100]:
                body = session.get(f"{base}/v1/users/{quote(user, safe='')}/recommendations?k=3", timeout=30)
                pairs.extend((user, i["item_id"]) for i in body.json()["items"])
            serial = iter(range(10**9))
            batches = [
                json.dumps(
                    [
                        {
                            "event_id": f"soak-{args.seed}-{next(serial)}",
                            "user_id": rng.choice(users),
                            "item_id": rng.choice(items),
                            "type": "purchase",
                            "ts": int(time.time() * 1000),
                        }
                        for _ in range(EVENTS_PER_BATCH)
                    ]
                ).encode()
                for _ in range(20_000)
            ]
            requests_ = mix(users, pairs, batches)
            capacity = asyncio.run(_closed_loop(base, requests_, CAPACITY_S)) / CAPACITY_S
            rate = LOAD_SHARE * capacity
            api_pid = int(
                subprocess.run(
                    ["pgrep", "-o", "-f", f"gunicorn.*127.0.0.1:{args.port}"], capture_output=True, text=True
                ).stdout.split()[0]
            )
            pids = {"api": api_pid, "worker": worker.pid, "graph_server": graph_pid}
            # Warm-up at the soak rate, then the memory baseline.
            open_loop_mix(base, requests_, rate, 30, warmup_s=0)
            rss_before = {name: rss_kb(pid) for name, pid in pids.items()}
            print(
                f"capacity {capacity:.0f} req/s; soaking at {rate:.0f} req/s for {args.minutes} min",
                flush=True,
            )
            results = open_loop_mix(base, requests_[::-1], rate, args.minutes * 60, warmup_s=0)
            rss_after = {name: rss_kb(pid) for name, pid in pids.items()}
        finally:
            worker.terminate()
            worker.wait(30)
    sent = sum(r.sent for r in results.values())
    errors = sum(sum(r.errors.values()) for r in results.values())
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        "load generator on the same machine",
        "data": "Amazon Beauty (22,363 users, 12,101 items), model trained once",
        "mix": "80% recommendations k=20, 10% explanations, 10% POST /v1/events (20 purchases)",
        "capacity_rps": round(capacity, 1),
        "soak_rps": round(rate, 1),
        "minutes": args.minutes,
        "requests": sent,
        "error_rate": round(errors / max(sent, 1), 6),
        "endpoints": {name: summarise(result) for name, result in results.items()},
        "rss_kib_before": rss_before,
        "rss_kib_after": rss_after,
        "rss_growth_percent": {
            name: round(100 * (rss_after[name] - rss_before[name]) / max(rss_before[name], 1), 2)
            for name in rss_before
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--datasets-dir", "--data-dir", dest="datasets_dir", type=Path, default=Path("../shared/data")
    )
    parser.add_argument("--work-dir", type=Path, default=Path("var/bench-api"))
    parser.add_argument("--port", type=int, default=17_000 + os.getpid() % 1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
