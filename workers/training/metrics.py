"""Top-k ranking metrics for full-ranking evaluation, per user and averaged, with confidence.

Confidence (``kgrec evaluate``): every model's metric is a mean over the same
test users, so each gets a 95% percentile-bootstrap interval over users, and
kgrec is compared with every baseline user by user: the mean paired difference,
its own bootstrap interval (the same resampled users for both models) and the
two-sided p-value of a paired t-test (``scipy.stats.ttest_rel``). With tens of
thousands of users the t-test's normal approximation holds even though each
user's NDCG is mostly zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

METRIC_NAMES = ("recall", "ndcg", "hit")
BOOTSTRAP_SAMPLES = 1_000
CONFIDENCE = 0.95


def per_user_metrics(
    ranked: Sequence[Sequence[str]], targets: Sequence[set[str]], ks: Sequence[int]
) -> dict[str, np.ndarray]:
    """Recall@k, NDCG@k and Hit@k for each user with targets (users without targets are skipped).

    Recall@k = |top-k ∩ targets| / |targets|; NDCG@k uses binary relevance with the
    ideal DCG of min(|targets|, k) hits; Hit@k = 1 if any target is in the top k.
    """
    discounts = 1.0 / np.log2(np.arange(2, max(ks) + 2))
    values: dict[str, list[float]] = {f"{name}@{k}": [] for k in ks for name in METRIC_NAMES}
    for items, wanted in zip(ranked, targets, strict=True):
        if not wanted:
            continue
        hits = np.array([item in wanted for item in items[: max(ks)]], dtype=bool)
        for k in ks:
            top = hits[:k]
            found = int(top.sum())
            ideal = discounts[: min(len(wanted), k)].sum()
            values[f"recall@{k}"].append(found / len(wanted))
            values[f"ndcg@{k}"].append(float((discounts[: top.size] * top).sum() / ideal))
            values[f"hit@{k}"].append(float(found > 0))
    return {name: np.asarray(v, dtype=np.float64) for name, v in values.items()}


def means(per_user: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The mean of each per-user metric (0.0 for no users)."""
    return {name: float(v.mean()) if v.size else 0.0 for name, v in per_user.items()}


def ranking_metrics(
    ranked: Sequence[Sequence[str]], targets: Sequence[set[str]], ks: Sequence[int]
) -> dict[str, float]:
    """Mean Recall@k, NDCG@k and HitRate@k over users (see :func:`per_user_metrics`)."""
    return means(per_user_metrics(ranked, targets, ks))


def _resamples(n: int, seed: int, samples: int = BOOTSTRAP_SAMPLES) -> np.ndarray:
    """Bootstrap user indices, (samples, n); drawn once so every model sees the same resamples."""
    return np.random.default_rng(seed).integers(0, n, size=(samples, n), dtype=np.int64)


def _interval(resampled_means: np.ndarray) -> list[float]:
    tail = (1.0 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(resampled_means, [tail, 100 - tail])
    return [float(low), float(high)]


def confidence(
    per_user: Mapping[str, Mapping[str, np.ndarray]],
    names: Sequence[str],
    *,
    reference: str,
    seed: int = 7,
) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, dict[str, float | list[float]]]]]:
    """Bootstrap intervals per model and metric, and ``reference`` paired with every other model.

    Returns ``(intervals, paired)``: ``intervals[model][metric] = [low, high]`` and
    ``paired[baseline][metric] = {"diff", "ci", "t", "p"}`` for ``reference − baseline``.
    Models whose arrays are not over the same users as ``reference`` are not paired.
    """
    first = per_user[reference][names[0]]
    index = _resamples(first.size, seed) if first.size else np.zeros((0, 0), dtype=np.int64)
    intervals: dict[str, dict[str, list[float]]] = {}
    paired: dict[str, dict[str, dict[str, float | list[float]]]] = {}
    for model, arrays in per_user.items():
        intervals[model] = {}
        for name in names:
            values = arrays[name]
            if values.size == 0 or values.size != first.size:
                intervals[model][name] = [float("nan"), float("nan")]
                continue
            intervals[model][name] = _interval(values[index].mean(axis=1))
        if model == reference:
            continue
        paired[model] = {}
        for name in names:
            ours, theirs = per_user[reference][name], arrays[name]
            if ours.size != theirs.size or ours.size < 2:
                continue
            difference = ours - theirs
            if np.allclose(difference, difference[0]):
                t, p = (0.0, 1.0) if difference[0] == 0 else (float("inf"), 0.0)
            else:
                test = stats.ttest_rel(ours, theirs)
                t, p = float(test.statistic), float(test.pvalue)
            paired[model][name] = {
                "diff": float(difference.mean()),
                "ci": _interval(difference[index].mean(axis=1)),
                "t": t,
                "p": p,
            }
    return intervals, paired
