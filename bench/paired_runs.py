"""Compare two ``kgrec evaluate`` runs user by user: a paired interval and test for each metric.

Two variants (full and no-knowledge, say) are evaluated in separate runs. Each run's own interval
overlaps the other's long before their difference is uncertain, because most of the spread is the
users, who are the same in both. This pairs them::

    kgrec evaluate --dataset movielens ... --variant full --per-user /tmp/full.npz
    kgrec evaluate --dataset movielens ... --variant no-knowledge --per-user /tmp/nk.npz
    python -m bench.paired_runs /tmp/full.npz /tmp/nk.npz [--model kgrec] [--model-b sasrec] [--json]

For each metric it prints A's mean, B's mean, A − B, its 95% bootstrap interval over users and the
paired t-test p (``workers.training.metrics.confidence``). A side may be several runs, comma-separated
(the same variant at several seeds): each user's metric is then the mean over those runs. The runs
must have held out the same test items for the same users; otherwise it stops with a one-line reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

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
    args = parser.parse_args(argv)
    try:
        sides = [
            mean_of_runs([load_run(Path(p), model) for p in side.split(",")])
            for side, model in ((args.a, args.model), (args.b, args.model_b or args.model))
        ]
        result = paired_difference(*sides)
    except (OSError, KeyError, PairingError) as error:
        print(f"paired_runs: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'metric':<10} {'A':>8} {'B':>8} {'A - B':>8}  95% CI               p")
    for name, row in result.items():
        low, high = row["ci"]  # type: ignore[misc]
        means = f"{row['a']:8.4f} {row['b']:8.4f} {row['diff']:+8.4f}"
        print(f"{name:<10} {means}  [{low:+.4f}, {high:+.4f}]  {row['p']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
