"""Equal scores rank in item-row order, whatever k and whatever else is masked: pages cut from
rankings of different lengths, or made after an item was hidden, neither repeat nor skip items."""

from __future__ import annotations

import numpy as np

from kgrec.ranking import best_k, top_of


def test_ties_rank_in_row_order_for_every_k_and_mask() -> None:
    rng = np.random.default_rng(3)
    for _ in range(60):
        n = int(rng.integers(50, 5_000))
        scores = rng.integers(0, 3, n).astype(np.float64)  # a few values: ties everywhere
        scores[rng.random(n) < 0.05] = -np.inf  # excluded items
        order = np.lexsort((np.arange(n), -scores))  # the whole ranking: score, then row
        order = order[np.isfinite(scores[order])]
        for k in (1, 7, 20, 33, 400):
            assert top_of(scores, k).rows.tolist() == order[:k].tolist()
        hidden = rng.choice(n, 10, replace=False)
        masked = scores.copy()
        masked[hidden] = -np.inf
        kept = [row for row in order.tolist() if row not in set(hidden.tolist())]
        assert top_of(masked, 20).rows.tolist() == kept[:20]


def test_ties_follow_the_keys_given() -> None:
    values = np.array([1.0, 2.0, 1.0, 1.0, 2.0])
    keys = np.array([40, 30, 10, 20, 0])
    assert best_k(values, 4, keys).tolist() == [4, 1, 2, 3]
    assert best_k(values, 4).tolist() == [1, 4, 0, 2]
