"""The validation hold-out every tuning step uses: each user's latest training interaction.

Users with at least :data:`MIN_HISTORY_FOR_VALIDATION` interactions lose their most recent one
(same-time ties as :func:`kgrec.item_graphs.history_order` orders them); the graph model's
early stopping, the blend fit, the ``ease`` signal's λ and the baselines all tune on it, over at
most :data:`MAX_TUNING_USERS` users. The test interactions are never in the graph it is cut from.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kgrec.item_graphs import history_order
from kgrec.training_graph import TrainingGraph

MIN_HISTORY_FOR_VALIDATION = 3
MAX_TUNING_USERS = 5_000


def subset(graph: TrainingGraph, keep: np.ndarray) -> TrainingGraph:
    """The same graph with only the interactions where ``keep`` is true."""
    return replace(
        graph,
        inter_user=graph.inter_user[keep],
        inter_item=graph.inter_item[keep],
        inter_weight=graph.inter_weight[keep],
        inter_order=graph.inter_order[keep],
    )


def hold_out_latest(graph: TrainingGraph) -> tuple[TrainingGraph, dict[int, int]]:
    """Remove each user's most recent interaction (if they have enough); returns (rest, user → item)."""
    order = history_order(graph)
    users = graph.inter_user[order]
    last = np.flatnonzero(np.r_[users[1:] != users[:-1], True])
    sizes = np.diff(np.r_[-1, last])
    chosen = order[last[sizes >= MIN_HISTORY_FOR_VALIDATION]]
    keep = np.ones(graph.inter_user.size, dtype=bool)
    keep[chosen] = False
    targets = {int(graph.inter_user[i]): int(graph.inter_item[i]) for i in chosen}
    return subset(graph, keep), targets
