"""One training job: pull → train and tune → write back → (gate →) switch → garbage-collect.

Every training starts at :func:`start_training` (``kgrec train --sync``, the
Celery ``train`` task, ``kgrec up --train``, the benchmarks), which names the
version; :func:`run_training` does the work under a given name. With ``gate``
the new version is activated only when the promotion gate
(:mod:`workers.training.gate`) lets it through; otherwise it stays a candidate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from graph_schema.statements.models import ONE_MODEL_VERSION
from kgrec.config import Settings
from kgrec.gate_experiments import (
    CandidateExperiment,
    GatePlan,
    candidate_experiment,
    protected_versions,
)
from kgrec.gateway import GraphGateway, GraphUnavailable
from kgrec.impressions import has_impression_store
from kgrec.model_store import models_dir
from kgrec.promotion_gate import CandidateHook, GateDecision
from kgrec.topic_items import link_topic_items
from kgrec.training_graph import TrainingGraph
from workers.training.config import TrainConfig
from workers.training.gate import gate_candidate
from workers.training.item_fold_in import FoldInBasis, unit_rows
from workers.training.kg_model import resolve_device
from workers.training.pipeline import TrainingResult, train_model
from workers.training.publish import (
    VersionPublished,
    VersionSuperseded,
    activate,
    already_published,
    collect_garbage,
    new_owner,
    promotion_unfinished,
    record_gate_decision,
    save_topic_items,
    write_back,
)
from workers.training.subgraph import pull
from workers.training.topics import item_language, write_topics

KEEP_VERSIONS = 3
log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]


def version_name(job_id: str | None = None) -> str:
    """The name of a new model version; the one naming scheme.

    - ``job-<job id>`` for a queued job (the Celery task id): a redelivered task
      trains under the same name and rewrites that version rather than adding one;
    - ``v<epoch milliseconds>`` for a training run in the caller's own process.
    """
    return f"job-{job_id}" if job_id else f"v{int(time.time() * 1000)}"


def start_training(
    gateway: GraphGateway,
    settings: Settings,
    config: TrainConfig,
    *,
    device: str = "auto",
    job_id: str | None = None,
    progress: Progress | None = None,
    keep: int = KEEP_VERSIONS,
    gate: bool = False,
    on_decision: CandidateHook | None = None,
) -> dict[str, Any]:
    """Train a new version named by :func:`version_name` and make it active; returns a summary.

    ``device`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``job_id`` is the id of
    the queued job this training runs for, if any. With ``gate``, it becomes active
    only if the promotion gate promotes it (``on_decision``: see :func:`publish`).
    """
    return run_training(
        gateway,
        settings,
        config,
        device=resolve_device(device),
        version=version_name(job_id),
        progress=progress,
        keep=keep,
        gate=gate,
        on_decision=on_decision,
    )


def run_training(
    gateway: GraphGateway,
    settings: Settings,
    config: TrainConfig,
    *,
    device: str,
    version: str,
    progress: Progress | None = None,
    keep: int = KEEP_VERSIONS,
    gate: bool = False,
    on_decision: CandidateHook | None = None,
) -> dict[str, Any]:
    """Train version ``version`` from the live graph and make it active (``gate``: if the gate
    promotes it); returns a summary.

    Commands and tasks call :func:`start_training`, which names the version; tests
    call this directly to train under a fixed name.
    """
    published = already_published(gateway, version)
    if published is not None and promotion_unfinished(gateway, version):
        # an earlier delivery recorded the gate's "promoted" and died before the activation
        log.warning("model version %s was promoted by the gate but never activated: activating it", version)
        carry_out_promotion(gateway, settings, version)
        published = already_published(gateway, version)
    if published is not None:
        if settings.gate_experiment:  # an earlier delivery may have died before starting its experiment
            row = next(iter(gateway.read(ONE_MODEL_VERSION, {"version": version})), None)
            if row is not None:
                CandidateExperiment(settings).resume(row)
        return published
    report = progress or (lambda _stage, _fraction: None)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    report("pull", 0.0)
    graph = pull(gateway, int(time.time() * 1000), settings.half_life_ms)
    if graph.inter_user.size == 0:
        raise ValueError("the graph holds no interactions to train on (import data or post events first)")
    timings["pull_s"] = time.perf_counter() - started

    started = time.perf_counter()
    result = train_model(
        graph,
        config,
        device=device,
        text_cache_dir=Path(settings.data_dir) / "text-embeddings",
        version=version,
        on_progress=lambda stage, fraction: report(stage, 0.05 + 0.75 * fraction),
        language=item_language(gateway),
        # the gate scores it on the hold-out's gate slice, which no tuning choice may read
        hold_gate_slice=gate,
        gate_min_users=settings.gate_min_users,
    )
    timings["train_and_tune_s"] = time.perf_counter() - started

    started = time.perf_counter()
    report("write-back", 0.8)  # before the first write: a caller may stop between steps up to here
    try:
        decision = publish(
            gateway,
            settings,
            graph,
            result,
            config,
            gate=gate,
            on_decision=on_decision,
            progress=lambda f: report("write-back", 0.8 + 0.18 * f),
        )
    except VersionSuperseded:  # a redelivery took the version over and reports it
        return {"version": version, "superseded": True}
    except VersionPublished:
        return already_published(gateway, version) or {"version": version, "already_published": True}
    timings["write_back_and_gate_s"] = time.perf_counter() - started
    removed = collect_unused_versions(gateway, settings, keep)
    report("done", 1.0)
    return {
        "version": version,
        "counts": result.counts,
        "validation": result.validation,
        "weights": result.artifacts.weights,
        "recency_decay": result.artifacts.recency_decay,
        "timings": {**timings, **result.timings},
        "seconds_per_epoch": result.embeddings.seconds_per_epoch,
        "removed_versions": removed,
        "gate": None if decision is None else {"decision": decision.decision, "reason": decision.reason},
    }


def collect_unused_versions(gateway: GraphGateway, settings: Settings, keep: int) -> list[str]:
    """Garbage-collect old versions, never those an experiment may still serve or promote (the
    running one's, and a recently stopped one's: :func:`kgrec.gate_experiments.protected_versions`,
    read again before each deletion); returns the removed ids.

    When the experiments cannot be read (their store restarting or unreachable), collection stops
    there: a version they name might otherwise go. The next training collects.
    """

    def protected() -> frozenset[str] | None:
        try:
            return frozenset(protected_versions(settings))
        except GraphUnavailable as exc:
            if has_impression_store(settings):
                log.warning("could not read the experiments (%s); no more versions collected this time", exc)
                return None
            return frozenset()  # no impression store at all (Neo4j without REDIS_URL): no experiment

    return collect_garbage(gateway, models_dir(settings.data_dir), keep, protected=protected)


def publish(
    gateway: GraphGateway,
    settings: Settings,
    graph: TrainingGraph,
    result: TrainingResult,
    config: TrainConfig,
    *,
    gate: bool,
    trained_on: TrainingGraph | None = None,
    on_decision: CandidateHook | None = None,
    progress: Callable[[float], None] | None = None,
) -> GateDecision | None:
    """Write the trained version back; activate it at once, or (``gate``) only if the gate promotes it.

    ``graph`` is the current graph (its hold-out is the gate's), ``trained_on`` the
    graph the model learnt from (default ``graph``). ``on_decision(version, decision)``
    is the experiment hook of :data:`kgrec.promotion_gate.CandidateHook`: when it
    returns a sentence it has taken the candidate, the sentence joins the recorded
    reason, and nothing is activated here.
    """
    learnt_from = trained_on or graph
    version = result.artifacts.version
    folder = models_dir(settings.data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    owner = new_owner()  # this delivery's claim on the version: every write below checks it
    basis = FoldInBasis(
        item_embeddings=result.artifacts.item_embeddings,
        text_vectors=result.text_vectors,
        brand_ids=learnt_from.brand_ids,
        brand_vectors=unit_rows(result.embeddings.brands),
        category_ids=learnt_from.category_ids,
        category_vectors=unit_rows(result.embeddings.categories),
    )
    write_back(
        gateway,
        result,
        learnt_from,
        folder,
        on_progress=progress,
        embedding_batch=settings.embedding_batch,
        activate_now=not gate,
        owner=owner,
        basis=basis,
        # Topic ids are matched to the active version's, so they are written before any switch.
        before_activation=lambda: write_topics(
            gateway,
            version,
            learnt_from.item_ids,
            result.topics,
            batch=settings.embedding_batch,
            folder=folder,
            link=not gate,
            save=lambda items: save_topic_items(gateway, folder, items, owner),
        ),
    )
    if not gate:
        return None
    decision = gate_candidate(gateway, settings, graph, result, config, trained_on=learnt_from)
    if on_decision is None and settings.gate_experiment:
        on_decision = candidate_experiment(settings)
    experiments = on_decision if isinstance(on_decision, CandidateExperiment) else None
    if experiments is not None:
        plan = experiments.plan(version, decision)
    else:
        plan = GatePlan(on_decision(version, decision) if on_decision is not None else None)
    taken = plan.sentence
    gated = decision
    if taken:
        decision = replace(decision, reason=f"{decision.reason}; {taken}")
    # The owner-checked record settles the version before an experiment serves it: started first,
    # the experiment served a version its redelivery could still re-claim and re-train (a new
    # artifact under the running variant). A job that dies between the two leaves the experiment
    # to its redelivery (CandidateExperiment.resume), which reads the experiment recorded here.
    record_gate_decision(
        gateway, version, owner, decision, taken=bool(taken), experiment=plan.experiment or ""
    )
    active = decision.scores.active_version
    if experiments is not None and plan.experiment is not None and active is not None:
        why = experiments.start(version, active)
        if why is not None:  # another experiment started since the hook planned this one
            decision = replace(gated, reason=f"{gated.reason}; {why}")
            record_gate_decision(gateway, version, owner, decision, taken=True)
    if decision.promoted and not taken:
        carry_out_promotion(gateway, settings, version, owner)
    return decision


def carry_out_promotion(
    gateway: GraphGateway, settings: Settings, version: str, owner: str | None = None
) -> None:
    """Activate ``version``, which the gate promoted: its topics' ABOUT edges, then the switch (with
    ``owner``, the write-back's token, only while it owns the version; without, a promotion its dead
    predecessor recorded)."""
    link_topic_items(gateway, models_dir(settings.data_dir), [version], batch=settings.embedding_batch)
    activate(gateway, version, owner)
