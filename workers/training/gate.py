"""Score a newly trained version next to the active one, on the current validation hold-out.

The hold-out is training's own (:func:`~workers.training.holdout.hold_out_latest`:
each user's latest interaction, users with at least 3), restricted to users whose
held-out interaction is newer than the active version (its order key, the event
time in ms, is after the version's ``created_at``): the active version's item–item
signals were built on every interaction it saw, so an older target would be
scored by a model that has seen it. Users whose targets the candidate's tuning read
(``TrainingResult.tuning_users``: early stopping, the blend fit and decay, EASE's λ)
are left out too: the candidate was selected on them, so its score there is optimistic.
A gated training tunes on the tuning slice only
(:func:`~workers.training.holdout.tuning_targets`), which leaves the gate slice here;
a training that tuned on every user leaves the gate no user, and it keeps the candidate.
At most :data:`~workers.training.holdout.MAX_TUNING_USERS` users are drawn with the seed.

Both are ranked through the serving :class:`~kgrec.recommender.Recommender`, over
all items minus each user's remaining history, by
:func:`~workers.training.pipeline.evaluate_recommender`:

- the active version exactly as it serves (:class:`~kgrec.model_store.ActiveModel`,
  folded-in items and popularity adjustments included);
- the candidate with its trained weights, embeddings and blend, but its item–item
  signals and popularity rebuilt without the hold-out (as its blend was fitted), so
  neither side has trained on the targets, and neither was tuned on them.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from graph_schema.statements.models import ACTIVE_VERSION
from kgrec.config import Settings
from kgrec.gateway import GraphGateway
from kgrec.item_graphs import popularity
from kgrec.model_store import ActiveModel
from kgrec.promotion_gate import GateDecision, GateScores, decide
from kgrec.recommender import HistoryEntry, Recommender
from kgrec.signals import build_signals
from kgrec.topic_signal import with_topics
from kgrec.training_graph import TrainingGraph
from workers.training.config import TrainConfig
from workers.training.holdout import MAX_TUNING_USERS, hold_out_latest
from workers.training.pipeline import TrainingResult, evaluate_recommender, user_histories

GATE_KS = (10,)


@dataclass
class Holdout:
    """The users both versions are scored on: their histories without the target, and the target."""

    histories: list[list[HistoryEntry]]
    targets: list[set[str]]
    users: list[str]  # their ids


def holdout(
    graph: TrainingGraph,
    newer_than: int | None,
    seed: int,
    max_users: int = MAX_TUNING_USERS,
    *,
    tuned_on: Collection[str] = frozenset(),
) -> Holdout:
    """Training's hold-out of ``graph``, only targets with an order key above ``newer_than`` (None: all),
    without the users in ``tuned_on`` (user ids)."""
    fit, targets = hold_out_latest(graph)
    users = np.array(sorted(u for u in targets if graph.user_ids[u] not in tuned_on), dtype=np.int64)
    if newer_than is not None and users.size:
        target_item = np.full(graph.n_users, -1, dtype=np.int64)
        target_item[users] = [targets[int(u)] for u in users]
        is_target = graph.inter_item == target_item[graph.inter_user]
        order = np.full(graph.n_users, np.iinfo(np.int64).min, dtype=np.int64)
        order[graph.inter_user[is_target]] = graph.inter_order[is_target]
        users = users[order[users] > newer_than]
    if users.size > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    histories = user_histories(fit)
    return Holdout(
        [histories[int(u)] for u in users],
        [{graph.item_ids[targets[int(u)]]} for u in users],
        [graph.user_ids[int(u)] for u in users],
    )


def candidate_recommender(
    result: TrainingResult, trained_on: TrainingGraph, config: TrainConfig
) -> Recommender:
    """The candidate as its blend was fitted: its signals, popularity and graph-model embeddings
    without the hold-out (the served embeddings were refitted on every interaction, targets too)."""
    fit, _ = hold_out_latest(trained_on)
    if result.topics is not None and len(result.topics.item_topic) == fit.n_items:
        fit = with_topics(fit, result.topics.item_topic, result.topics.item_score)
    unseen = result.fit_embeddings or result.embeddings
    return Recommender(
        replace(
            result.artifacts,
            item_embeddings=unseen.items,
            item_context_embeddings=unseen.item_context,
            components=build_signals(
                fit,
                config.use_knowledge,
                config.use_recency,
                config.use_topics,
                result.artifacts.parameters.get("tuned_signals"),
                prebuilt=result.tuned_fit,
            ),
            popularity=popularity(fit),
        )
    )


def score(recommender: Recommender, held: Holdout) -> dict[str, float]:
    """Validation Recall/NDCG@10 of ``recommender`` on ``held`` (zeros when it is empty)."""
    if not held.targets:
        return {"recall@10": 0.0, "ndcg@10": 0.0}
    return {
        k: round(v, 6)
        for k, v in evaluate_recommender(recommender, held.histories, held.targets, GATE_KS).items()
    }


def gate_candidate(
    gateway: GraphGateway,
    settings: Settings,
    graph: TrainingGraph,
    result: TrainingResult,
    config: TrainConfig,
    *,
    trained_on: TrainingGraph | None = None,
) -> GateDecision:
    """Score the candidate in ``result`` next to the active version on ``graph``'s hold-out (without
    the users its tuning read), and decide.

    ``graph`` is the current graph; ``trained_on`` the one the candidate learnt
    from (default: ``graph``; a test trains one on shuffled interactions).
    """
    started = time.perf_counter()
    candidate = candidate_recommender(result, trained_on or graph, config)
    active_rows = [r for r in gateway.read(ACTIVE_VERSION) if r["id"] != result.artifacts.version]
    active_model = ActiveModel(gateway, Path(settings.data_dir)).get() if active_rows else None
    active = active_rows[0] if active_model is not None else None
    held = holdout(
        graph,
        None if active is None else int(active["created_at"]),
        config.seed,
        tuned_on=result.tuning_users,
    )
    scores = GateScores(
        candidate=score(candidate, held),
        active=None if active_model is None else score(active_model, held),
        active_version=None if active is None else active["id"],
        users=len(held.targets),
        tolerance=settings.gate_tolerance,
        min_users=settings.gate_min_users,
        seconds=round(time.perf_counter() - started, 3),
    )
    return decide(scores)
