"""Benchmark: exploration for new users against popularity-only cold start, in a seeded simulation.

Protocol (issue 12, item 5):

1. A demo shop (:mod:`kgrec.demo_shop`, ``--shop-users`` x ``--shop-items``, seed ``--seed``) is
   generated, imported into a fresh embedded graph and a model is trained on it (1 epoch).
2. ``--users`` simulated new users each get a hidden favourite leaf category, drawn uniformly from
   the shop's leaves (``--preferences uniform``: most favourites are not among the most popular
   categories) or in proportion to the leaves' events in the shop (``--preferences popular``:
   new users like what earlier users liked, popularity's best case). A user clicks
   an item shown to them with probability ``--p-like`` if the item is in their favourite leaf, else
   ``--p-other``. The random numbers are common to both policies: whether user ``u`` clicks item
   ``i`` in impression ``t`` is the same draw under both, so the policies differ only in what
   they show.
3. Each policy serves its own copy of the users (distinct ids, the same preferences) through the
   real API code path (the Flask app in process: recommendations, impression recording, event
   ingestion with attribution): each impression is ``GET /v1/users/{id}/recommendations?k=K``,
   and the clicks go back as ``POST /v1/events`` click events carrying the ``recommendation_id``.
   - ``exploration``: ``KGREC_EXPLORE_SHARE`` = ``--share``, ``KGREC_EXPLORE_MAX_EVENTS`` = ``--max-events``;
   - ``popularity``: exploration off (``KGREC_EXPLORE_SHARE=0``): a new user gets decayed
     popularity until their first click, then the model folds their clicks in, as always.
4. Reported per policy: the **hit rate** in the first 10 and the first ``--impressions``
   impressions (the share of impressions, i.e. responses, with at least one click), the CTR per
   shown item, the share of users with a click within 10 impressions, and the mean impressions to
   the first click (users without one count as ``--impressions`` + 1); and the paired difference
   in per-user hit rate (exploration minus popularity) with its 95% interval and the paired
   t-test's p-value.

Progress goes to stderr; the last line of stdout is one JSON object.

    .venv/bin/python -m bench.exploration [--users 40] [--impressions 50] [--out FILE]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from app import create_app
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.demo_shop import ShopSpec, generate_shop
from kgrec.embedded import EmbeddedServer
from kgrec.gateway import open_gateway
from kgrec.importer import import_dataset
from kgrec.migrations import migrate
from workers.training.config import TrainConfig
from workers.training.job import run_training

KEY = "bench-exploration-key"
GRAPH = "explore_bench"


def progress(message: str) -> None:
    """One progress line on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def uniform(seed: int, user: int, impression: int, item_id: str) -> float:
    """The common random number of (user, impression, item): the same under both policies."""
    digest = hashlib.sha256(f"{seed}|{user}|{impression}|{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def leaves(shop: Path) -> dict[str, str]:
    """Each item's leaf category (the last of its categories), from the generated catalogue."""
    with open(shop / "items.csv", newline="") as handle:
        return {row["item_id"]: row["categories"].split("|")[-1] for row in csv.DictReader(handle)}


def leaf_events(shop: Path, leaf_of: dict[str, str]) -> dict[str, int]:
    """How many of the shop's events fell on each leaf."""
    counts: dict[str, int] = dict.fromkeys(leaf_of.values(), 0)
    with open(shop / "interactions.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            counts[leaf_of[row["item_id"]]] += 1
    return counts


def build(
    folder: Path, args: argparse.Namespace
) -> tuple[EmbeddedServer, Settings, dict[str, str], dict[str, int]]:
    """Start a graph server, load and train the demo shop; the server, settings, item leaves and
    the leaves' event counts."""
    settings = Settings(
        data_dir=folder / "var",
        graph_name=GRAPH,
        aof_fsync="everysec",
        api_keys=(KEY,),
        bot_events_per_minute=1_000_000,  # simulated users click faster than people
    )
    server = EmbeddedServer(settings.data_dir, settings.aof_fsync)
    server.start()
    shop = folder / "shop"
    generate_shop(ShopSpec(users=args.shop_users, items=args.shop_items, seed=args.seed), shop)
    with open_gateway(settings) as gateway:
        migrate(gateway)
        import_dataset(gateway, open_dataset(str(shop), settings.datasets_dir), settings)
        progress("demo shop imported; training")
        run_training(gateway, settings, TrainConfig(epochs=1, seed=args.seed), device="cpu", version="sim")
    leaf_of = leaves(shop)
    return server, settings, leaf_of, leaf_events(shop, leaf_of)


def simulate(
    settings: Settings, policy: str, favourites: list[str], leaf_of: dict[str, str], args: argparse.Namespace
) -> tuple[dict[str, Any], np.ndarray]:
    """Serve every simulated user ``args.impressions`` times under one policy; the figures, and the
    hits (users x impressions)."""
    client = create_app(settings).test_client()
    auth = {"Authorization": f"Bearer {KEY}"}
    hits = np.zeros((len(favourites), args.impressions), dtype=bool)
    clicks = shown = explored = explored_clicks = 0
    started = time.perf_counter()
    for t in range(args.impressions):
        for u, favourite in enumerate(favourites):
            user = f"{policy}-{args.seed}-{u}"
            response = client.get(f"/v1/users/{user}/recommendations?k={args.k}")
            assert response.status_code == 200, response.get_data(as_text=True)
            body = response.get_json()
            events = []
            for position, item in enumerate(body["items"], 1):
                liked = leaf_of.get(item["item_id"]) == favourite
                p = args.p_like if liked else args.p_other
                clicked = uniform(args.seed, u, t, item["item_id"]) < p
                shown += 1
                explored += "explore" in item
                if clicked:
                    explored_clicks += "explore" in item
                    events.append(
                        {
                            "event_id": f"{user}-{t}-{position}",
                            "user_id": user,
                            "item_id": item["item_id"],
                            "type": "click",
                            "ts": int(time.time() * 1000),
                            "recommendation_id": body["recommendation_id"],
                            "position": position,
                        }
                    )
            if events:
                posted = client.post("/v1/events", json=events, headers=auth)
                assert posted.status_code == 200, posted.get_data(as_text=True)
                hits[u, t] = True
                clicks += len(events)
        if (t + 1) % 10 == 0 or t == 0:
            so_far = hits[:, : t + 1].mean()
            progress(f"{policy}: impression {t + 1}/{args.impressions}, hit rate so far {so_far:.3f}")
    first_hit = [int(np.argmax(row)) + 1 if row.any() else args.impressions + 1 for row in hits]
    seconds = time.perf_counter() - started
    return {
        "hit_rate_first_10": round(float(hits[:, :10].mean()), 4),
        f"hit_rate_first_{args.impressions}": round(float(hits.mean()), 4),
        "ctr": round(clicks / shown, 4),
        "users_with_a_click_within_10": round(float(hits[:, :10].any(axis=1).mean()), 4),
        "mean_impressions_to_first_click": round(float(np.mean(first_hit)), 2),
        "explored_slots": explored,
        "explored_ctr": round(explored_clicks / explored, 4) if explored else None,
        "requests_per_second": round(len(favourites) * args.impressions / seconds, 1),
    }, hits


def paired(explore: np.ndarray, popular: np.ndarray, upto: int) -> dict[str, float]:
    """Exploration minus popularity in the per-user hit rate of the first ``upto`` impressions:
    the mean difference, its 95% interval and the paired t-test's two-sided p-value (the same
    users, preferences and random numbers under both policies)."""
    difference = explore[:, :upto].mean(axis=1) - popular[:, :upto].mean(axis=1)
    mean, n = float(difference.mean()), difference.size
    half = float(stats.t.ppf(0.975, n - 1) * difference.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    p = float(stats.ttest_rel(explore[:, :upto].mean(axis=1), popular[:, :upto].mean(axis=1)).pvalue)
    return {
        "difference": round(mean, 4),
        "ci_low": round(mean - half, 4),
        "ci_high": round(mean + half, 4),
        "p_value": round(p, 5),
    }


def main() -> None:
    """Run the protocol and print the JSON result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=40, help="simulated new users per policy")
    parser.add_argument("--impressions", type=int, default=50, help="recommendation responses per user")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--share", type=float, default=0.2, help="KGREC_EXPLORE_SHARE of the exploration policy"
    )
    parser.add_argument("--max-events", type=int, default=5, help="KGREC_EXPLORE_MAX_EVENTS")
    parser.add_argument("--p-like", type=float, default=0.3, help="click probability, favourite leaf")
    parser.add_argument("--p-other", type=float, default=0.01, help="click probability, any other item")
    parser.add_argument("--shop-users", type=int, default=1000)
    parser.add_argument("--shop-items", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--preferences", choices=("uniform", "popular"), default="uniform")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.impressions < 10:
        parser.error("--impressions must be at least 10")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="kgrec-explore-") as tmp:
        server, settings, leaf_of, events = build(Path(tmp), args)
        try:
            shop_leaves = sorted(events)
            weights = np.array([events[leaf] if args.preferences == "popular" else 1 for leaf in shop_leaves])
            rng = np.random.default_rng(args.seed)
            favourites = [
                str(leaf) for leaf in rng.choice(shop_leaves, args.users, p=weights / weights.sum())
            ]
            runs = {
                policy: simulate(
                    settings.with_overrides(explore_share=share, explore_max_events=args.max_events),
                    policy,
                    favourites,
                    leaf_of,
                    args,
                )
                for policy, share in (("exploration", args.share), ("popularity", 0.0))
            }
        finally:
            server.stop()
    report = {
        "benchmark": "exploration",
        "protocol": {
            "shop": {"users": args.shop_users, "items": args.shop_items, "leaves": len(shop_leaves)},
            "users": args.users,
            "impressions": args.impressions,
            "k": args.k,
            "share": args.share,
            "max_events": args.max_events,
            "p_like": args.p_like,
            "p_other": args.p_other,
            "seed": args.seed,
            "preferences": args.preferences,
        },
        "results": {policy: figures for policy, (figures, _) in runs.items()},
        "exploration_minus_popularity": {
            f"hit_rate_first_{upto}": paired(runs["exploration"][1], runs["popularity"][1], upto)
            for upto in sorted({10, args.impressions})
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    line = json.dumps(report)
    if args.out:
        args.out.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
