"""The validation hold-out every tuning step uses: each user's latest training interaction.

Users with at least :data:`MIN_HISTORY_FOR_VALIDATION` interactions lose their most recent one
(same-time ties as :func:`kgrec.item_graphs.history_order` orders them); the graph model's
early stopping, the blend fit, the ``ease`` signal's λ and the baselines all tune on it, over at
most :data:`MAX_TUNING_USERS` users. The test interactions are never in the graph it is cut from.

A training the promotion gate will judge keeps part of that hold-out out of every tuning step
(:func:`tuning_targets`): the gate slice, the validation users a salted hash of the user id puts
there (:func:`in_gate_slice`, half of them, the same users in every run and graph). Its targets
are still cut from the graph the tuned model learns from, but no tuning choice reads them, so the
gate (:mod:`workers.training.gate`) can score the candidate on targets it was not selected on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from kgrec.config import Settings
from kgrec.datasets import InteractionRecord
from kgrec.item_graphs import history_order
from kgrec.ties import tie_keys
from kgrec.training_graph import TrainingGraph

MIN_HISTORY_FOR_VALIDATION = 3
MAX_TUNING_USERS = 5_000
# Changing the salt moves users between the slices: a version tuned under one salt and gated
# under another would again be scored on targets it was tuned on (the gate excludes the users a
# version's result says it tuned on, so it stays sound, but it would find fewer users).
GATE_SLICE_SALT = b"kgrec-gate-slice-1"
# The gate's minimum users (KGREC_GATE_MIN_USERS) when a caller does not pass the shop's own.
DEFAULT_GATE_MIN_USERS = Settings.gate_min_users
# The fewest users a split leaves to tuning, whatever KGREC_GATE_MIN_USERS is (README: "Promotion
# gate"): with fewer, one user's target moves the tuned NDCG@10 by a tenth or more, and the epoch
# count, λ, blend weights and decay would follow a couple of users.
MIN_TUNING_USERS = 10


def min_users_to_split(gate_min_users: int) -> int:
    """Below this many validation users the hold-out is not split: twice ``gate_min_users``, and
    at least twice :data:`MIN_TUNING_USERS`.

    A split under it could not give the gate its ``gate_min_users`` users anyway (the gate slice
    holds about half), nor the tuning slice its :data:`MIN_TUNING_USERS`: every user tunes instead,
    the gate finds no user it may score and keeps the candidate as "not enough evidence".
    """
    return 2 * max(gate_min_users, MIN_TUNING_USERS)


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


def validation_pairs(interactions: Iterable[InteractionRecord]) -> set[tuple[str, str]]:
    """The (user, item) pairs :func:`hold_out_latest` takes out of the graph an import of
    ``interactions`` makes: a split rebuilds the knowledge derived from interactions
    (:func:`kgrec.datasets.training_triples`) without them as well as without its test pairs, so
    the tuning never sees its targets through a co-occurrence link.

    A pair's order key is the graph's: the import merges its records into one edge with their
    latest ``ts`` and latest ``seq``, and the pull orders by the ``ts``, else the ``seq``, else 0;
    equal keys go by :mod:`kgrec.ties`' rule. Users with fewer than
    :data:`MIN_HISTORY_FOR_VALIDATION` distinct items have no pick. Bots the import flags are not
    pulled, so their picks are held out needlessly: a superset, never a miss.
    """
    last_ts: dict[tuple[str, str], int] = {}
    last_seq: dict[tuple[str, str], int] = {}
    items_of: dict[str, dict[str, None]] = {}
    for record in interactions:
        pair = (record.user_id, record.item_id)
        items_of.setdefault(record.user_id, {})[record.item_id] = None
        if record.ts is not None:
            last_ts[pair] = max(last_ts.get(pair, record.ts), record.ts)
        if record.seq is not None:
            last_seq[pair] = max(last_seq.get(pair, record.seq), record.seq)
    picks: set[tuple[str, str]] = set()
    for user, listed in items_of.items():
        if len(listed) < MIN_HISTORY_FOR_VALIDATION:
            continue
        items = list(listed)
        keys = [last_ts.get((user, i), last_seq.get((user, i), 0)) for i in items]
        ties = tie_keys(user, items)
        picks.add((user, items[max(range(len(items)), key=lambda k: (keys[k], ties[k]))]))
    return picks


def in_gate_slice(user_id: str) -> bool:
    """Whether ``user_id``'s validation target is in the gate slice (half the users, by a salted hash)."""
    return hashlib.blake2b(user_id.encode(), key=GATE_SLICE_SALT, digest_size=8).digest()[0] & 1 == 1


def tuning_targets(
    graph: TrainingGraph,
    targets: dict[int, int],
    hold_gate_slice: bool,
    gate_min_users: int = DEFAULT_GATE_MIN_USERS,
) -> dict[int, int]:
    """The targets of :func:`hold_out_latest` that tuning may read: with ``hold_gate_slice``, those of
    users outside the gate slice, when there are at least :func:`min_users_to_split` of
    ``gate_min_users`` (the shop's ``KGREC_GATE_MIN_USERS``) and at least :data:`MIN_TUNING_USERS`
    of them (the hash may give the gate slice more than half); all otherwise."""
    if not hold_gate_slice or len(targets) < min_users_to_split(gate_min_users):
        return targets
    tuning = {u: i for u, i in targets.items() if not in_gate_slice(graph.user_ids[u])}
    return tuning if len(tuning) >= MIN_TUNING_USERS else targets
