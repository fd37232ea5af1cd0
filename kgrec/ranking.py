"""A ranking as arrays: the model's item rows and their scores, best first.

Serving keeps a ranking in this form from the model's top-N through rules and
diversity, and turns only the page it answers into item ids: element-wise work on
Python tuples of a 1,100-item pool cost more than the model's scoring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

NO_ROWS = np.zeros(0, dtype=np.int64)


class Ranking(NamedTuple):
    """Item rows (int64) and their scores (float64), best first; equal lengths."""

    rows: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.rows.size)

    def cut(self, start: int, stop: int) -> Ranking:
        """The entries from ``start`` to ``stop`` (a page)."""
        return Ranking(self.rows[start:stop], self.scores[start:stop])

    def pairs(self, item_ids: Sequence[str]) -> list[tuple[str, float]]:
        """``(item id, score)`` per entry, with whole-array conversions."""
        return list(zip([item_ids[r] for r in self.rows.tolist()], self.scores.tolist(), strict=True))


def top_of(scores: np.ndarray, k: int) -> Ranking:
    """The ``k`` best finite entries of one score row, best first (ties keep row order)."""
    k = min(k, scores.size)
    if k <= 0:
        return Ranking(NO_ROWS, np.zeros(0, dtype=np.float64))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    values = scores[top]
    finite = np.isfinite(values)
    return Ranking(top[finite].astype(np.int64, copy=False), values[finite].astype(np.float64))
