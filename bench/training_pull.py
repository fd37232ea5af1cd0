"""Benchmark: how the training pull's cost grows with the number of users.

For each size it starts an empty embedded graph and writes, through the import's own
statements, that many users (random 12-character ids mixing cases, digits and ``._:``, the kind
FalkorDB's index ranges got wrong), each with interactions with up to 3 of 1,000 items. It
times reading every user id (``TRAINING_USER_IDS``) and the whole pull
(``workers.training.subgraph.pull``). It prints
seconds and microseconds per user at every size, and the growth exponent between the smallest
and the largest size (1 is linear, 2 quadratic), and writes everything to ``--results``.

    .venv/bin/python -m bench.training_pull [--sizes 100000,200000,400000]
        [--work-dir var/bench-training-pull] [--results bench/results/training-pull.json]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import string
import time
from pathlib import Path
from typing import Any

from bench.scale import save_growth_report
from graph_schema.statements.dataset_import import SET_INTERACTIONS, UPSERT_ITEMS, UPSERT_USERS
from graph_schema.statements.training import TRAINING_USER_IDS
from kgrec.config import Settings
from kgrec.runtime import graph_session
from workers.training.subgraph import all_ids, pull

ITEMS = 1_000
PER_USER = 3
BATCH = 10_000
ID_CHARACTERS = string.ascii_letters + string.digits + "._:"


def random_ids(n: int, rng: random.Random) -> list[str]:
    """``n`` distinct random ids of 12 characters."""
    ids: set[str] = set()
    while len(ids) < n:
        ids.add("".join(rng.choices(ID_CHARACTERS, k=12)))
    return sorted(ids)


def measure(users: int, work: Path, seed: int) -> dict[str, Any]:
    """One size: a fresh graph of ``users`` users, the id read and the pull timed."""
    shutil.rmtree(work, ignore_errors=True)
    rng = random.Random(seed)
    user_ids = random_ids(users, rng)
    rng.shuffle(user_ids)  # created in no particular order
    settings = Settings(data_dir=work)
    with graph_session(settings, apply_migrations=True) as gateway:
        gateway.write(UPSERT_ITEMS, {"rows": [{"id": f"item{k}"} for k in range(ITEMS)], "now": 0, "at": 0})
        t0 = time.perf_counter()
        for start in range(0, users, BATCH):
            batch = user_ids[start : start + BATCH]
            gateway.write(UPSERT_USERS, {"ids": batch, "now": 0})
            rows = [
                {
                    "user_id": u,
                    "item_id": f"item{k}",
                    "counts": {"n_view": 1},
                    "first_ts": 0,
                    "last_ts": 0,
                    "last_seq": 0,
                    "rating": None,
                    "weight": 1.0,
                    "weight_ts": 0,
                }
                for u in batch
                for k in sorted(set(rng.choices(range(ITEMS), k=PER_USER)))
            ]
            gateway.write(SET_INTERACTIONS, {"rows": rows, "at": int(time.time() * 1000)})
        write_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ids = all_ids(gateway, TRAINING_USER_IDS)
        ids_s = time.perf_counter() - t0
        assert ids == sorted(user_ids), "the id read lost or repeated users"
        t0 = time.perf_counter()
        graph = pull(gateway, now_ms=int(time.time() * 1000), half_life_ms=1e12)  # after the writes
        pull_s = time.perf_counter() - t0
        assert len(graph.user_ids) == users
    shutil.rmtree(work, ignore_errors=True)
    result = {
        "users": users,
        "interactions": len(graph.inter_user),
        "write_s": round(write_s, 2),
        "user_ids_s": round(ids_s, 3),
        "pull_s": round(pull_s, 2),
        "user_ids_us_per_user": round(1e6 * ids_s / users, 2),
        "pull_us_per_user": round(1e6 * pull_s / users, 2),
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,200000,400000", help="user counts, comma-separated")
    parser.add_argument("--work-dir", type=Path, default=Path("var/bench-training-pull"))
    parser.add_argument("--results", type=Path, default=Path("bench/results/training-pull.json"))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    runs = [measure(n, args.work_dir / str(n), args.seed) for n in sizes]
    save_growth_report(runs, "users", {"user_ids": "user_ids_s", "pull": "pull_s"}, args.results)


if __name__ == "__main__":
    main()
