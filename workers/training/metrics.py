"""Top-k ranking metrics for full-ranking evaluation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def ranking_metrics(
    ranked: Sequence[Sequence[str]], targets: Sequence[set[str]], ks: Sequence[int]
) -> dict[str, float]:
    """Mean Recall@k, NDCG@k and HitRate@k over users (users without targets are skipped).

    Recall@k = |top-k ∩ targets| / |targets|; NDCG@k uses binary relevance with the
    ideal DCG of min(|targets|, k) hits; Hit@k = 1 if any target is in the top k.
    """
    discounts = 1.0 / np.log2(np.arange(2, max(ks) + 2))
    totals = {f"{name}@{k}": 0.0 for k in ks for name in ("recall", "ndcg", "hit")}
    users = 0
    for items, wanted in zip(ranked, targets, strict=True):
        if not wanted:
            continue
        users += 1
        hits = np.array([item in wanted for item in items[: max(ks)]], dtype=bool)
        for k in ks:
            top = hits[:k]
            found = int(top.sum())
            ideal = discounts[: min(len(wanted), k)].sum()
            totals[f"recall@{k}"] += found / len(wanted)
            totals[f"ndcg@{k}"] += float((discounts[: top.size] * top).sum() / ideal)
            totals[f"hit@{k}"] += float(found > 0)
    return {name: value / max(users, 1) for name, value in totals.items()}
