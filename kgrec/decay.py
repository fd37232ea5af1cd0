"""Interest decay: the one definition of how a stored weight fades with time.

A weight ``w`` stamped ``weight_ts`` is worth ``w · 2^(-(t - weight_ts) / half_life)``
at time ``t`` (epoch milliseconds). Graph edges store ``(weight, weight_ts)`` and
are decayed on read; adding an event decays the stored weight to the new stamp
first. The Cypher statements in ``graph_schema/statements`` spell the same
formula out (Cypher cannot call Python); ``tests/test_decay.py`` runs them on the
graph and checks them against this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

# A stamp ahead of the clock grows a weight (the API accepts clocks up to KGREC_MAX_CLOCK_SKEW_S
# ahead, minutes against a half-life of days). One stored far ahead (an import before future times
# were refused) counts as one half-life ahead: its weight at most doubles, so a read never raises
# OverflowError nor answers Infinity, which JSON cannot carry and which turns profile weights NaN.
# The cap is defined with the Cypher spelling (graph_schema.decay), so both cap alike.
from graph_schema.decay import MAX_EXPONENT as _MAX_EXPONENT

DAY_MS = 86_400_000


def half_life_ms(half_life_days: float) -> float:
    """A half-life given in days, in milliseconds."""
    return half_life_days * float(DAY_MS)


def decay_factor(age_ms: float, half_life_ms: float) -> float:
    """What one unit of weight is worth ``age_ms`` after it was stamped (a stamp more than one
    half-life ahead, a negative age, counts as one half-life ahead: at most 2)."""
    return math.exp2(min(-age_ms / half_life_ms, _MAX_EXPONENT))


def decayed(weight: float | None, weight_ts: int | None, at_ms: float, half_life_ms: float) -> float:
    """A stored weight decayed to ``at_ms``; no weight is 0, no stamp counts as stamped at ``at_ms``."""
    if weight is None:
        return 0.0
    stamp = weight_ts if weight_ts is not None else at_ms
    return float(weight) * decay_factor(at_ms - stamp, half_life_ms)


def shown_weight(weight: float | None) -> float:
    """A weight as an answer shows it: six decimals, six significant digits below 1, no weight as 0.
    Decayed weights span many orders of magnitude (an interest of a year ago at a 14-day
    half-life is about 1e-8), so six decimals alone would show every old interest as 0 and hide
    the order they are listed in."""
    value = float(weight or 0.0)
    return round(value, 6) if abs(value) >= 1.0 else float(f"{value:.6g}")


def decayed_array(weights: np.ndarray, stamps: np.ndarray, at_ms: float, half_life_ms: float) -> np.ndarray:
    """:func:`decayed` over arrays (float64); NaN weights count as 0, NaN stamps as ``at_ms``."""
    weights = np.nan_to_num(np.asarray(weights, dtype=np.float64), nan=0.0)
    stamps = np.asarray(stamps, dtype=np.float64)
    stamps = np.where(np.isnan(stamps), at_ms, stamps)
    return weights * np.exp2(np.minimum(-(at_ms - stamps) / half_life_ms, _MAX_EXPONENT))


def merged(
    weight: float | None, weight_ts: int | None, added: float, added_ts: int, half_life_ms: float
) -> tuple[float, int]:
    """A stored ``(weight, weight_ts)`` plus new evidence ``added`` stamped ``added_ts``.

    Both are decayed to the later stamp, which becomes the new one, so evidence
    arriving out of order adds up to the same weight. Returns ``(weight, weight_ts)``.
    """
    at = added_ts if weight_ts is None or added_ts > weight_ts else weight_ts
    return decayed(weight, weight_ts, at, half_life_ms) + decayed(added, added_ts, at, half_life_ms), at


def decayed_sum(
    events: Iterable[tuple[float, int | None]], half_life_ms: float, now_ms: int
) -> tuple[float, int]:
    """Sum event weights decayed to the latest event time; returns ``(weight, weight_ts)``.

    Events without a time count as happening at that reference time (or at
    ``now_ms`` when no event has a time).
    """
    events = list(events)
    times = [ts for _, ts in events if ts is not None]
    reference = max(times) if times else now_ms
    total = 0.0
    for weight, ts in events:
        total += weight * decay_factor(0 if ts is None else reference - ts, half_life_ms)
    return total, reference
