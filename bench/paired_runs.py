"""Compare two ``kgrec evaluate`` runs user by user: a paired interval and test for each metric.

Two variants (full and no-knowledge, say) are evaluated in separate runs. Each run's own interval
overlaps the other's long before their difference is uncertain, because most of the spread is the
users, who are the same in both. This pairs them::

    kgrec evaluate --dataset movielens ... --variant full --per-user /tmp/full.npz
    kgrec evaluate --dataset movielens ... --variant no-knowledge --per-user /tmp/nk.npz
    python -m bench.paired_runs /tmp/full.npz /tmp/nk.npz [--model kgrec] [--model-b sasrec] [--json]
        [--by-popularity movielens [--datasets-dir ../shared/data] [--edges 5,20,60]]

For each metric it prints A's mean, B's mean, A − B, its 95% bootstrap interval over users and the
paired t-test p (``workers.training.metrics.confidence``). A side may be several runs, comma-separated
(the same variant at several seeds): each user's metric is then the mean over those runs. The runs
must have held out the same test items for the same users; otherwise it stops with a one-line reason.

``--by-popularity DATASET [--datasets-dir D] [--edges 5,20,60]`` also splits the users by how
popular their held-out item is, its training count (the users who have it in the data set, less
every test user's holding it out; a user with several test items: their median), and pairs each
bucket on its own. A user's several records of one item (a view, a cart, a purchase) count once:
the import merges them into one training edge, and the split holds out the pair with all of them.
Many buckets are many comparisons: a single bucket's p-value is not evidence alone.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TypedDict

import numpy as np

from kgrec.datasets import open_dataset
from workers.training.metrics import confidence

# One run of one model: (user ids, each user's test items tab-joined, metric -> per-user values)
Run = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]


class PairingError(ValueError):
    """The two runs cannot be paired (a model missing, or different test users or items)."""


def load_run(path: Path, model: str) -> Run:
    """(user ids, their test items, metric -> per-user values) of ``model`` in a ``--per-user`` file."""
    with np.load(path) as stored:
        prefix = f"{model}."
        metrics = {key[len(prefix) :]: stored[key] for key in stored.files if key.startswith(prefix)}
        if not metrics:
            models = sorted({key.split(".")[0] for key in stored.files if "." in key})
            raise PairingError(f"{path}: no model {model!r} (it has {', '.join(models)})")
        return stored["user_ids"], _joined_test_items(stored), metrics


def _joined_test_items(stored: np.lib.npyio.NpzFile) -> np.ndarray:
    """Each user's test items as one tab-joined string."""
    items = stored["test_items"].tolist()
    counts = stored["test_item_counts"].tolist()
    starts = np.cumsum([0, *counts[:-1]]).tolist()
    return np.array(
        ["\t".join(items[start : start + n]) for start, n in zip(starts, counts, strict=True)],
        dtype=object,
    )


def mean_of_runs(runs: list[Run]) -> Run:
    """Several runs of one side as one: each user's metric is its mean over the runs."""
    users, items, first = runs[0]
    order = np.argsort(users)
    names = set(first).intersection(*(metrics for _, _, metrics in runs[1:]))
    sums = {name: first[name].astype(np.float64) for name in names}
    for other_users, other_items, metrics in runs[1:]:
        _check_same_users(users, items, other_users, other_items)
        position = np.empty_like(order)
        position[order] = np.argsort(other_users)  # row of each of the first run's users in this run
        for name in names:
            sums[name] += metrics[name][position]
    return users, items, {name: total / len(runs) for name, total in sums.items()}


def _check_same_users(
    users_a: np.ndarray, items_a: np.ndarray, users_b: np.ndarray, items_b: np.ndarray
) -> None:
    if users_a.size != users_b.size or set(users_a.tolist()) != set(users_b.tolist()):
        raise PairingError(f"the runs have different test users ({users_a.size} and {users_b.size})")
    differ = int((items_a[np.argsort(users_a)] != items_b[np.argsort(users_b)]).sum())
    if differ:
        raise PairingError(f"the runs held out different test items for {differ} users")


def paired_difference(a: Run, b: Run, seed: int = 7) -> dict[str, dict[str, float | list[float]]]:
    """For each metric both runs have: A's and B's means, and A − B with its interval and p."""
    users_a, items_a, metrics_a = a
    users_b, items_b, metrics_b = b
    _check_same_users(users_a, items_a, users_b, items_b)
    order = np.argsort(users_a)
    other = np.argsort(users_b)
    names = sorted(set(metrics_a) & set(metrics_b))
    if not names:
        raise PairingError("the runs have no metric in common")
    per_user = {
        "a": {n: metrics_a[n][order].astype(np.float64) for n in names},
        "b": {n: metrics_b[n][other].astype(np.float64) for n in names},
    }
    _, paired = confidence(per_user, names, reference="a", seed=seed)
    return {
        name: {
            "a": float(per_user["a"][name].mean()),
            "b": float(per_user["b"][name].mean()),
            **paired["b"][name],
        }
        for name in names
        if name in paired["b"]
    }


def held_out_item_popularity(items: np.ndarray, interactions: Iterable[tuple[str, str]]) -> np.ndarray:
    """Each user's held-out item's training count: the distinct (user, item) pairs of it in the data
    set (``interactions``: every record's (user id, item id); a user's several records of an item,
    such as a view, a cart and a purchase, are one pair, as in the training graph) less every test
    user's holding it out; a user with several test items gets their median. Refuses test items
    fewer users have in the data set than hold them out."""
    counts = Counter(item for _, item in set(interactions))
    held = Counter(item for joined in items for item in joined.split("\t"))
    missing = sorted(item for item, n in held.items() if counts[item] < n)
    if missing:
        raise PairingError(
            f"{len(missing)} test items (e.g. {missing[0]!r}) have fewer users in the data set than hold "
            "them out: is it the runs' data set?"
        )
    return np.array(
        [np.median([counts[i] - held[i] for i in joined.split("\t")]) for joined in items], dtype=np.float64
    )


class Bucket(TypedDict):
    """The users whose held-out item's popularity lies in [low, high) (high None: no bound)."""

    popularity: list[float | None]
    users: int
    metrics: dict[str, dict[str, float | list[float]]] | None  # None: fewer than 2 users


def _rows(run: Run, chosen: np.ndarray) -> Run:
    users, items, metrics = run
    return users[chosen], items[chosen], {name: values[chosen] for name, values in metrics.items()}


def by_popularity(a: Run, b: Run, popularity: np.ndarray, edges: list[float]) -> list[Bucket]:
    """``paired_difference`` within each popularity bucket [edge, next edge) of A's users
    (``popularity``: one value per A user, in A's order)."""
    buckets: list[Bucket] = []
    for low, high in zip([0.0, *edges], [*edges, np.inf], strict=True):
        chosen = (popularity >= low) & (popularity < high)
        in_b = np.isin(b[0], a[0][chosen])
        metrics = paired_difference(_rows(a, chosen), _rows(b, in_b)) if chosen.sum() >= 2 else None
        bound = None if np.isinf(high) else high
        buckets.append(Bucket(popularity=[low, bound], users=int(chosen.sum()), metrics=metrics))
    return buckets


def bucket_edges(text: str) -> list[float]:
    """``--edges``: positive, strictly increasing numbers, comma-separated."""
    try:
        edges = [float(edge) for edge in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not comma-separated numbers") from None
    if edges[0] <= 0 or any(later <= earlier for earlier, later in itertools.pairwise(edges)):
        raise argparse.ArgumentTypeError(f"{text!r}: the edges must be positive and increasing")
    return edges


def main(argv: list[str] | None = None) -> int:
    """Command line: print the paired comparison of two ``--per-user`` files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="the first run's --per-user file (A); several: comma-separated")
    parser.add_argument("b", help="the second run's --per-user file (B); several: comma-separated")
    parser.add_argument("--model", default="kgrec", help="the model compared (default kgrec)")
    parser.add_argument(
        "--model-b", help="B's model, when it is another (kgrec of one run against sasrec of another)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--by-popularity", metavar="DATASET", help="also pair within buckets of held-out item popularity"
    )
    parser.add_argument(
        "--datasets-dir", "--data-dir", type=Path, default=Path("../shared/data"), help="where DATASET is"
    )
    parser.add_argument(
        "--edges", type=bucket_edges, default=[5.0, 20.0, 60.0], help="bucket edges (default 5,20,60)"
    )
    args = parser.parse_args(argv)
    buckets: list[Bucket] = []
    try:
        sides = [
            mean_of_runs([load_run(Path(p), model) for p in side.split(",")])
            for side, model in ((args.a, args.model), (args.b, args.model_b or args.model))
        ]
        result = paired_difference(*sides)
        if args.by_popularity:
            records = open_dataset(args.by_popularity, args.datasets_dir).interactions()
            popularity = held_out_item_popularity(sides[0][1], ((r.user_id, r.item_id) for r in records))
            buckets = by_popularity(*sides, popularity, args.edges)
    except (OSError, KeyError, PairingError) as error:
        print(f"paired_runs: {error}", file=sys.stderr)
        return 2
    if args.json:
        # with buckets, also what they were drawn from
        extra = {"a": args.a, "b": args.b, "dataset": args.by_popularity, "edges": args.edges}
        print(json.dumps({**result, **extra, "by_popularity": buckets} if args.by_popularity else result))
        return 0
    _print_table(result)
    for bucket in buckets:
        low, high = bucket["popularity"]
        span = f"{low:g} or more" if high is None else f"{low:g} to under {high:g}"
        print(f"\nheld-out items with {span} training interactions: {bucket['users']} users")
        if bucket["metrics"] is None:
            print("(too few users to pair)")
        else:
            _print_table(bucket["metrics"])
    return 0


def _print_table(result: dict[str, dict[str, float | list[float]]]) -> None:
    print(f"{'metric':<10} {'A':>8} {'B':>8} {'A - B':>8}  95% CI               p")
    for name, row in result.items():
        low, high = row["ci"]  # type: ignore[misc]
        means = f"{row['a']:8.4f} {row['b']:8.4f} {row['diff']:+8.4f}"
        print(f"{name:<10} {means}  [{low:+.4f}, {high:+.4f}]  {row['p']:.3g}")


if __name__ == "__main__":
    sys.exit(main())
