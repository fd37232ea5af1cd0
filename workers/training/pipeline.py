"""Train a servable model from a pulled training graph.

1. Hold out each user's most recent interaction (users with at least 3) for validation.
2. Train the graph model (:mod:`workers.training.kg_model`) on the rest (with item
   text features), early-stopped on validation NDCG@10 of its own served score.
3. Fit the blend on the same validation hold-out (:mod:`workers.training.blend_fit`):
   the weight of every signal of :mod:`kgrec.signals` and of the graph model's score,
   and the recency decay. The variants of :data:`workers.training.config.VARIANTS`
   decide which features the fit may use.
   The topic-interest signal (:mod:`kgrec.topic_signal`) is one of them: topics are
   mined from the items' text (:mod:`workers.training.topics`) before the fit, when
   text is used, and the job writes them with the version. A tuned signal (EASE) has its
   parameter chosen on the same hold-out first (:func:`tune_signals`).
4. Rebuild the signals' item–item graphs on all interactions, retrain the graph model on all
   of them for the epoch count early stopping chose (``TrainConfig.refit_on_all``), and package
   the artifacts: the served model, like the signals, has seen each user's latest interaction.

With ``hold_gate_slice`` (a training the promotion gate will judge), steps 2 and 3 read only the
hold-out's tuning slice (:func:`~workers.training.holdout.tuning_targets`); the gate slice's
targets are cut from the graph all the same, and the gate scores on them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from kgrec.item_graphs import popularity
from kgrec.recommender import HistoryEntry, ModelArtifacts, Recommender
from kgrec.signals import EASE, EMBEDDING, build_signals
from kgrec.ties import interaction_ties
from kgrec.topic_signal import with_topics
from kgrec.training_graph import TrainingGraph
from workers.training.blend_fit import DECAYS, fit_blend
from workers.training.config import TrainConfig
from workers.training.ease import tune_ease_signal
from workers.training.holdout import (
    DEFAULT_GATE_MIN_USERS,
    MAX_TUNING_USERS,
    hold_out_latest,
    tuning_targets,
)
from workers.training.kg_model import TrainedEmbeddings, train_kg_model
from workers.training.metrics import ranking_metrics
from workers.training.text import TextEmbeddingCache
from workers.training.topics import TopicModel, compute_topics, topic_texts
from workers.training.validation import validation_set


@dataclass
class TrainingResult:
    """A trained model and what we know about it."""

    artifacts: ModelArtifacts
    embeddings: TrainedEmbeddings
    validation: dict[str, float]
    counts: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)
    text_vectors: np.ndarray | None = None  # (n_items, 384) item text embeddings, when text was used
    # The graph model the blend was fitted with (trained without the validation hold-out); the
    # served one (``embeddings``) is retrained on every interaction when config.refit_on_all.
    fit_embeddings: TrainedEmbeddings | None = None
    topics: TopicModel | None = None  # topics mined from the items' text, when text was used
    # Each tuned signal's matrix on the hold-out's graph: what the blend was fitted with.
    tuned_fit: dict[str, sp.csr_matrix] = field(default_factory=dict)
    # The users whose held-out targets early stopping, the blend fit or a tuned signal read: the
    # gate never scores them (workers.training.gate).
    tuning_users: frozenset[str] = frozenset()


def user_histories(graph: TrainingGraph) -> list[list[HistoryEntry]]:
    """Every user's history as the Recommender takes it."""
    result: list[list[HistoryEntry]] = [[] for _ in range(graph.n_users)]
    ties = interaction_ties(graph)
    for u, i, w, o, t in zip(
        graph.inter_user, graph.inter_item, graph.inter_weight, graph.inter_order, ties, strict=True
    ):
        result[int(u)].append(HistoryEntry(graph.item_ids[int(i)], float(w), int(o), int(t)))
    return result


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def evaluate_recommender(
    recommender: Recommender,
    histories: Sequence[Sequence[HistoryEntry]],
    targets: Sequence[set[str]],
    ks: Sequence[int],
    batch: int = 2_000,
) -> dict[str, float]:
    """Recall/NDCG/Hit at each k, ranking all items and excluding each user's history."""
    ranked: list[list[str]] = []
    for start in range(0, len(histories), batch):
        part = histories[start : start + batch]
        exclude = [[h.item_id for h in history] for history in part]
        ranked.extend([i for i, _ in row] for row in recommender.recommend(part, max(ks), exclude))
    return ranking_metrics(ranked, targets, ks)


def tune(
    base: ModelArtifacts,
    histories: Sequence[Sequence[HistoryEntry]],
    targets: dict[int, int],
    item_ids: Sequence[str],
    *,
    candidates: Sequence[dict[str, float]],
    seed: int,
) -> tuple[dict[str, float], float, dict[str, float]]:
    """The (weights, decay) among ``candidates`` × :data:`~workers.training.blend_fit.DECAYS` with the
    best validation NDCG@10, and its metrics (for baselines with a fixed blend; kgrec's own blend
    is fitted by :func:`~workers.training.blend_fit.fit_blend`)."""
    users = sorted(targets)
    if len(users) > MAX_TUNING_USERS:
        users = sorted(np.random.default_rng(seed).choice(users, MAX_TUNING_USERS, replace=False).tolist())
    chosen_histories = [histories[u] for u in users]
    chosen_targets = [{item_ids[targets[u]]} for u in users]
    best: tuple[float, dict[str, float], float, dict[str, float]] | None = None
    for decay in DECAYS:
        for weights in candidates:
            recommender = Recommender(replace(base, weights=weights, recency_decay=decay))
            metrics = evaluate_recommender(recommender, chosen_histories, chosen_targets, (10,))
            if best is None or metrics["ndcg@10"] > best[0]:
                best = (metrics["ndcg@10"], weights, decay, metrics)
    assert best is not None
    return best[1], best[2], best[3]


def fit_features(components: Sequence[str], config: TrainConfig) -> list[str]:
    """The features the blend fit may weigh under ``config``'s variant switches."""
    if config.graph_model_only:
        return [EMBEDDING]
    return [*components, *([EMBEDDING] if config.use_graph_model else [])]


def train_model(
    graph: TrainingGraph,
    config: TrainConfig,
    *,
    device: str = "cpu",
    text_cache_dir: Path | None = None,
    version: str = "",
    on_progress: Callable[[str, float], None] | None = None,
    language: Mapping[str, str] | None = None,
    hold_gate_slice: bool = False,
    gate_min_users: int = DEFAULT_GATE_MIN_USERS,
) -> TrainingResult:
    """Train, fit the blend and package a model from ``graph`` (see the module docstring).

    ``language``: item id → user tags and review snippets
    (:func:`workers.training.topics.item_language`), added to the items' topic text.
    ``hold_gate_slice``: tune on the hold-out's tuning slice only, leaving the gate slice to the
    promotion gate; ``gate_min_users`` (``settings.gate_min_users``) sets when the hold-out is split.
    """
    timings: dict[str, float] = {}
    report = on_progress or (lambda _stage, _fraction: None)
    started = time.perf_counter()
    text = None
    if config.use_text and text_cache_dir is not None:
        text = TextEmbeddingCache(text_cache_dir, device).embed(graph.item_text)
    timings["text_s"] = time.perf_counter() - started
    topics = None
    if text is not None and text_cache_dir is not None:
        started = time.perf_counter()
        texts = topic_texts(graph, language)
        vectors = (
            text if texts == graph.item_text else TextEmbeddingCache(text_cache_dir, device).embed(texts)
        )
        topics = compute_topics(texts, vectors, config.seed)
        if topics is not None:
            # the topic-interest signal reads them (kgrec.topic_signal)
            graph = with_topics(graph, topics.item_topic, topics.item_score)
        timings["topics_s"] = time.perf_counter() - started
    report("text", 0.1)

    fit_graph, targets = hold_out_latest(graph)
    targets = tuning_targets(graph, targets, hold_gate_slice, gate_min_users)
    started = time.perf_counter()
    embeddings = train_kg_model(
        fit_graph,
        config,
        device,
        text,
        validation=targets,
        on_epoch=lambda epoch, _loss: report("train", 0.1 + 0.6 * (epoch + 1) / config.epochs),
    )
    timings["train_s"] = time.perf_counter() - started
    served = embeddings
    if config.refit_on_all and fit_graph.inter_user.size < graph.inter_user.size:
        # The early-stopped model never saw the validation interactions (each user's latest): the
        # served one is retrained on all of them for the chosen number of epochs, as the signals
        # are rebuilt on all interactions below.
        started = time.perf_counter()
        report("refit", 0.65)
        served = train_kg_model(graph, config, device, text, epochs=max(embeddings.best_epoch, 1))
        served.validation_ndcg = embeddings.validation_ndcg
        served.best_epoch = embeddings.best_epoch
        timings["refit_s"] = time.perf_counter() - started
    report("fit-blend", 0.7)
    result = fit_and_package(
        graph,
        embeddings,
        config,
        device=device,
        version=version,
        served=served,
        hold_gate_slice=hold_gate_slice,
        gate_min_users=gate_min_users,
    )
    result.timings = {**timings, **result.timings}
    result.text_vectors = text
    if text is not None and text_cache_dir is not None:
        result.topics = topics
        result.artifacts.parameters["topics"] = topics.quality if topics else {"topics": 0.0}
    report("done", 1.0)
    return result


def fit_and_package(
    graph: TrainingGraph,
    embeddings: TrainedEmbeddings,
    config: TrainConfig,
    *,
    device: str = "cpu",
    version: str = "",
    served: TrainedEmbeddings | None = None,
    hold_gate_slice: bool = False,
    gate_min_users: int = DEFAULT_GATE_MIN_USERS,
) -> TrainingResult:
    """Fit the blend for ``config``'s variant on the validation hold-out and package the artifacts.

    ``embeddings`` is the graph model trained on ``graph`` minus the hold-out
    (:func:`hold_out_latest`); variants that train the same graph model share it.
    ``served``: the graph model the artifacts carry (retrained on all of ``graph``); by default
    ``embeddings`` itself. ``hold_gate_slice``: fit and tune on the tuning slice only (as
    :func:`train_model`, with its ``gate_min_users``; ``embeddings`` must have been early-stopped
    on it too).
    """
    served = embeddings if served is None else served
    fit_graph, targets = hold_out_latest(graph)
    targets = tuning_targets(graph, targets, hold_gate_slice, gate_min_users)
    started = time.perf_counter()
    use_order = config.use_recency
    tuned, tuned_fit, tuning = tune_signals(
        graph, config, device, hold_gate_slice=hold_gate_slice, gate_min_users=gate_min_users
    )
    tune_seconds = time.perf_counter() - started
    fit_components = build_signals(
        fit_graph, config.use_knowledge, use_order, config.use_topics, tuned, prebuilt=tuned_fit
    )
    fit_artifacts = ModelArtifacts(
        version=version,
        item_ids=graph.item_ids,
        item_embeddings=embeddings.items,
        components=fit_components,
        weights={name: 0.0 for name in fit_components},
        recency_decay=1.0,
        popularity=popularity(fit_graph),
        item_context_embeddings=embeddings.item_context,
    )
    histories = user_histories(fit_graph)
    fitted = fit_blend(
        fit_artifacts,
        fit_features(list(fit_components), config),
        histories,
        targets,
        # the grid, and the decay the graph model learnt on the training interactions
        decays=sorted({*DECAYS, round(embeddings.decay, 3)}) if use_order else (1.0,),
        seed=config.seed,
    )
    weights = {**{name: 0.0 for name in fit_components}, EMBEDDING: 0.0, **fitted.weights}
    validation = _validation_metrics(
        replace(fit_artifacts, weights=weights, recency_decay=fitted.recency_decay),
        histories,
        targets,
        graph.item_ids,
        config.seed,
    )
    fit_seconds = time.perf_counter() - started
    # One set of item–item graphs at a time: the fit's go before the served ones are built.
    del fit_artifacts, fit_components, histories

    artifacts = ModelArtifacts(
        version=version,
        item_ids=graph.item_ids,
        item_embeddings=served.items,
        components=build_signals(
            graph, config.use_knowledge, use_order, config.use_topics, tuned, device=device
        ),
        weights=weights,
        recency_decay=fitted.recency_decay,
        popularity=popularity(graph),
        parameters={
            **config.__dict__,
            "device": device,
            # when its graph was pulled: serving lays over only catalogue changes made after it
            "data_until": graph.pulled_at,
            "model_best_epoch": embeddings.best_epoch,
            "model_validation_ndcg": [round(x, 5) for x in embeddings.validation_ndcg],
            "model_decay": round(embeddings.decay, 4),
            "model_refit_on_all": served is not embeddings,
            "relation_weights": served.relation_weights,
            "single_feature_validation_ndcg": {k: round(v, 5) for k, v in fitted.single.items()},
            # the paired test's p for each signal that had to earn its place (kept when < 0.05)
            "signal_evidence_p": {k: round(v, 6) for k, v in fitted.evidence.items()},
            # each tuned signal's parameter (EASE's λ), and its validation NDCG@10 for every one tried
            "tuned_signals": tuned,
            "tuned_signal_validation_ndcg": tuning,
        },
        facts=graph.facts,
        item_context_embeddings=served.item_context,
    )
    return TrainingResult(
        artifacts,
        served,
        validation,
        graph.counts(),
        {"tune_signals_s": tune_seconds, "fit_blend_s": fit_seconds - tune_seconds},
        fit_embeddings=embeddings,
        tuned_fit=tuned_fit,
        tuning_users=frozenset(graph.user_ids[u] for u in targets),
    )


def tune_signals(
    graph: TrainingGraph,
    config: TrainConfig,
    device: str = "cpu",
    *,
    hold_gate_slice: bool = False,
    gate_min_users: int = DEFAULT_GATE_MIN_USERS,
) -> tuple[dict[str, float], dict[str, sp.csr_matrix], dict[str, dict[str, float]]]:
    """Choose each tuned signal's parameter on the validation hold-out of ``graph`` (its tuning
    slice with ``hold_gate_slice``, split for a gate that needs ``gate_min_users``).

    Returns (signal -> parameter, signal -> its matrix on the hold-out's graph, signal -> the
    validation NDCG@10 of each parameter tried). A model without the blend's signals tunes none.
    """
    if config.graph_model_only or not config.use_ease:
        return {}, {}, {}
    held = validation_set(graph, config.seed, hold_gate_slice=hold_gate_slice, gate_min_users=gate_min_users)
    fit = tune_ease_signal(held, device=device)
    return (
        {EASE: fit.lam},
        {EASE: fit.fit_matrix},
        {EASE: {str(k): round(v, 5) for k, v in fit.validation.items()}},
    )


def _validation_metrics(
    artifacts: ModelArtifacts,
    histories: Sequence[Sequence[HistoryEntry]],
    targets: dict[int, int],
    item_ids: Sequence[str],
    seed: int,
) -> dict[str, float]:
    """The fitted blend's validation Recall/NDCG@10, through the Recommender (full ranking)."""
    users = sorted(targets)
    if len(users) > MAX_TUNING_USERS:
        users = sorted(np.random.default_rng(seed).choice(users, MAX_TUNING_USERS, replace=False).tolist())
    return evaluate_recommender(
        Recommender(artifacts), [histories[u] for u in users], [{item_ids[targets[u]]} for u in users], (10,)
    )
