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


def best_k(values: np.ndarray, k: int, keys: np.ndarray | None = None) -> np.ndarray:
    """The positions of the ``k`` largest ``values``, largest first; equal values in ascending
    ``keys`` order (default: position), so which of several equal values make the cut, and their
    order, never depend on how the partition fell (nor on what else a mask removed)."""
    k = min(k, values.size)
    if k <= 0:
        return NO_ROWS
    top = np.argpartition(-values, k - 1)[:k]
    kth = values[top].min()
    if np.isfinite(kth):  # below that only non-finite values, which callers drop
        above = top[values[top] > kth]  # every value above the k-th is in the partition's top
        at = np.flatnonzero(values == kth)
        if at.size > k - above.size:  # more equal values than places: the lowest keys take them
            if keys is not None:
                at = at[np.argsort(keys[at], kind="stable")]
            top = np.concatenate([above, at[: k - above.size]])
    return top[np.lexsort((top if keys is None else keys[top], -values[top]))]


def top_of(scores: np.ndarray, k: int) -> Ranking:
    """The ``k`` best finite entries of one score row, best first (ties in row order)."""
    top = best_k(scores, k)
    values = scores[top]
    finite = np.isfinite(values)
    return Ranking(top[finite].astype(np.int64, copy=False), values[finite].astype(np.float64))
