"""Small statistics for side-by-side serving runs (bench/interleaved.py): per-round ratios summarised,
and the share of CPU time the hypervisor stole during a turn. No I/O beyond ``/proc/stat``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

BOOTSTRAP_SAMPLES = 10_000


def cpu_ticks() -> tuple[int, int]:
    """The machine's (stolen, total) CPU ticks so far, from ``/proc/stat``; (0, 0) where there is none."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user and nice]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def stolen_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The share of CPU time stolen by the hypervisor between two :func:`cpu_ticks` readings."""
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 4) if total > 0 else None


def ratio_summary(ratios: list[float], bound: float = 2.0, seed: int = 0) -> dict[str, Any]:
    """Per-round ratios summarised: geometric mean, its bootstrap 95% interval, count within ``bound``.

    The interval resamples rounds with replacement (percentile bootstrap over the mean of
    log ratios), so it says how far the typical ratio could lie given how much rounds differ.
    """
    logs = np.log(np.asarray([r for r in ratios if r and r > 0], dtype=np.float64))
    if logs.size == 0:
        return {"rounds": 0, "geometric_mean": None, "ci95": None, f"within_{bound:g}x": 0}
    rng = np.random.default_rng(seed)
    means = logs[rng.integers(0, logs.size, size=(BOOTSTRAP_SAMPLES, logs.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {
        "rounds": int(logs.size),
        "geometric_mean": round(math.exp(logs.mean()), 3),
        "ci95": [round(math.exp(low), 3), round(math.exp(high), 3)],
        f"within_{bound:g}x": int((logs <= math.log(bound)).sum()),
    }


def steal_adjusted_ratio(turns: list[tuple[bool, float, float]], seed: int = 0) -> dict[str, Any]:
    """The second side's p99 over the first's at equal stolen CPU, with a bootstrap 95% interval.

    ``turns``: one ``(second_side, stolen_share, p99_ms)`` per turn. Fits ``log p99 = a + b·second
    + c·stolen`` by least squares, so ``exp(b)`` is the size ratio with the hypervisor's theft held
    equal, and ``exp(100·c)`` what one percent of stolen CPU multiplies p99 by. The interval
    resamples turns with replacement, each side's turns apart, so every resample has both sides.
    """
    rows = np.asarray(
        [(1.0, float(second), stolen, math.log(p99)) for second, stolen, p99 in turns if p99 and p99 > 0]
    )
    empty = {"turns": int(rows.shape[0]), "ratio": None, "ci95": None, "per_stolen_percent": None}
    if rows.shape[0] < 4 or len(set(rows[:, 1])) < 2 or np.ptp(rows[:, 2]) == 0:
        return empty

    def fit(sample: np.ndarray) -> np.ndarray:
        return np.linalg.lstsq(sample[:, :3], sample[:, 3], rcond=None)[0]

    coef = fit(rows)
    rng = np.random.default_rng(seed)
    sides = [np.flatnonzero(rows[:, 1] == value) for value in (0.0, 1.0)]
    ratios = np.empty(BOOTSTRAP_SAMPLES)
    for k in range(BOOTSTRAP_SAMPLES):
        picked = np.concatenate([rng.choice(side, size=side.size) for side in sides])
        ratios[k] = fit(rows[picked])[1]
    low, high = np.percentile(ratios, [2.5, 97.5])
    return {
        "turns": int(rows.shape[0]),
        "ratio": round(math.exp(coef[1]), 3),
        "ci95": [round(math.exp(low), 3), round(math.exp(high), 3)],
        "per_stolen_percent": round(math.exp(coef[2] / 100), 3),
    }
