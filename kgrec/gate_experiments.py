"""A retrained version the promotion gate would promote starts as an experiment variant instead.

With ``KGREC_GATE_EXPERIMENT=true`` (``Settings.gate_experiment``) the training job passes
:func:`candidate_experiment` as the gate's hook (:data:`kgrec.promotion_gate.CandidateHook`):
a candidate that passed the gate does not replace the active version; an experiment starts,
``control`` = the version the gate compared it with (pinned by id, so a promotion meanwhile
does not change the comparison) and ``candidate`` = the new version, 50/50. The operator reads
``GET /v1/experiments/{id}`` and promotes (or stops) it. A kept candidate, and the first version
of a graph (nothing to compare with), take the usual path. While another experiment runs the
candidate is not activated either: it stays a candidate, and the reason says why.

The hook only plans (no write): the training job records the gate's decision first, owner-checked
(:func:`workers.training.publish.record_gate_decision`), which settles the version, and only then
starts the experiment (:meth:`CandidateExperiment.start`). Started before the record, an
experiment could serve a version still open to its job's redelivery, which re-trained it and
replaced its artifact under the running variant (processes that loaded it earlier served another
model than later ones), or to a delivery that had taken the version over. The experiment's id is
fixed by the version (:func:`gate_experiment_id`), so a redelivery that finds the decision recorded
and no such experiment (its job died between the two) starts it (:meth:`CandidateExperiment.resume`),
and never a second one. Which experiment the hook took the version for is recorded with the decision,
in the same owner-checked statement (``ModelVersion.gate_experiment``, :func:`taken_experiment`):
the reason is a sentence for people, and a job or redelivery never reads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from kgrec.config import Settings
from kgrec.experiments import ACTIVE, ExperimentConflict, ExperimentStore, PromotionPending, Variant
from kgrec.impressions import ImpressionStore
from kgrec.promotion_gate import PROMOTED, CandidateHook, GateDecision

log = logging.getLogger(__name__)

CONTROL = "control"
CANDIDATE = "candidate"
SHARE = 0.5


def experiment_name(version: str) -> str:
    """The name of the experiment the gate starts for ``version``."""
    return f"gate: {version}"


# A stopped experiment's versions are kept this long after its stop, unless its promotion finished:
# the operator stops it, reads the results and promotes the winner (README, "Experiments").
STOPPED_KEPT_MS = 7 * 24 * 3600 * 1000


def protected_versions(settings: Settings, now_ms: int | None = None) -> set[str]:
    """The model versions garbage collection keeps for experiments: those of the running one, and of
    each stopped within :data:`STOPPED_KEPT_MS` whose promotion has not finished (none, or claimed
    and unfinished). Raises GraphUnavailable when the experiments cannot be read."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    store = ImpressionStore(settings)
    try:
        experiments = ExperimentStore(store)
        running = experiments.running_id()
        found = experiments.list_experiments()
    finally:
        store.close()
    kept = [
        x
        for x in found
        if x.id == running
        or x.status == "running"
        or (
            (x.promoted is None or not _promotion_finished(x.promoted))
            and (x.stopped_at or now) >= now - STOPPED_KEPT_MS
        )
    ]
    return {v.model_version for x in kept for v in x.variants if v.model_version != ACTIVE}


def _promotion_finished(promoted: dict[str, Any]) -> bool:
    # a promotion of the variant serving the active version ('active') activates nothing
    return promoted.get("activated_at") is not None or promoted.get("model_version") == ACTIVE


def gate_experiment_id(version: str) -> str:
    """The id of the experiment the gate starts for ``version`` (one per version, see the module)."""
    return "exp-" + hashlib.sha256(f"gate\x00{version}".encode()).hexdigest()[:12]


def taken_experiment(row: dict[str, Any]) -> str | None:
    """The experiment the gate's hook took the version of ``row`` (a MODEL_VERSIONS row) for, as its
    decision recorded it (``gate_experiment``; '' for none); None when it took it for none.

    Decisions recorded before 2026-12-07 have no ``gate_experiment``: for those (and only here) the
    reason tells, which then named the version's own experiment exactly when the hook planned it
    ("started as variant ... of experiment <id>"; "not activated" named only another one)."""
    recorded = row.get("gate_experiment")
    if recorded is None:  # recorded before the field: the one place the reason is read
        own = gate_experiment_id(row["id"])
        return own if own in (row.get("gate_reason") or "") else None
    return recorded or None


@dataclass(frozen=True)
class GatePlan:
    """What the hook planned for a candidate: the ``sentence`` for the recorded reason (None: the
    usual path) and the ``experiment`` it takes the candidate for (None: none, e.g. another runs)."""

    sentence: str | None
    experiment: str | None = None


def _started(version: str, active: str) -> str:
    return (
        f"started as variant '{CANDIDATE}' of experiment {gate_experiment_id(version)} against {active} "
        "instead of replacing it"
    )


def _not_started(running: str | None) -> str:
    return (
        f"not activated: experiment {running} is running, so it could not start as a variant "
        "(promote it by hand, or retrain after that experiment)"
    )


def _promotion_pending(promoting: str) -> str:
    return (
        f"not activated: the promotion of experiment {promoting} is under way, so it could not start "
        "as a variant (promote it by hand, or retrain after that promotion)"
    )


class CandidateExperiment:
    """The gate hook that takes a promotable candidate as an experiment variant (see the module):
    calling it plans (the sentence for the recorded reason), :meth:`start` starts the experiment
    once the decision is recorded."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self, version: str, decision: GateDecision) -> str | None:
        """The sentence for a candidate the experiment takes (or could not, another one running);
        None for the usual path: a kept candidate, or nothing to compare with."""
        return self.plan(version, decision).sentence

    def plan(self, version: str, decision: GateDecision) -> GatePlan:
        """The plan for ``version`` (see :class:`GatePlan`): its own experiment, the sentence that
        another one runs, or the usual path."""
        active = decision.scores.active_version
        if not decision.promoted or active is None:
            return GatePlan(None)
        store = ImpressionStore(self.settings)
        try:
            experiments = ExperimentStore(store)
            running, promoting = experiments.running_id(), experiments.promoting_id()
            # its own experiment, started before (a redelivery), is not started again: no conflict
            own = experiments.get(gate_experiment_id(version)) if promoting is not None else None
        finally:
            store.close()
        if running is not None and running != gate_experiment_id(version):
            return GatePlan(_not_started(running))
        if promoting is not None and own is None:
            return GatePlan(_promotion_pending(promoting))
        return GatePlan(_started(version, active), gate_experiment_id(version))

    def start(self, version: str, active: str) -> str | None:
        """Start ``version``'s experiment against ``active``; None when it runs (or ran: it is never
        started twice), else why not (another experiment started since the plan)."""
        store = ImpressionStore(self.settings)
        experiments = ExperimentStore(store)
        variants = [Variant(CONTROL, active, SHARE), Variant(CANDIDATE, version, 1.0 - SHARE)]
        experiment_id = gate_experiment_id(version)
        try:
            experiments.create(experiment_name(version), variants, experiment_id=experiment_id)
        except PromotionPending as pending:
            if experiments.get(experiment_id) is None:
                return _promotion_pending(pending.experiment_id)
        except ExperimentConflict:
            if experiments.get(experiment_id) is None:
                return _not_started(experiments.running_id())
        finally:
            store.close()
        return None

    def resume(self, row: dict[str, Any]) -> None:
        """Start the experiment a recorded decision (``row``: a MODEL_VERSIONS row) planned when its
        job died before starting it; nothing otherwise."""
        version = row["id"]
        if row["gate_decision"] != PROMOTED or not row["gate_taken"] or row["activated_at"] is not None:
            return
        if taken_experiment(row) != gate_experiment_id(version):
            return  # not taken for this version's experiment (another ran, or another hook took it)
        active = (json.loads(row["gate_metrics"] or "{}")).get("active_version")
        if not isinstance(active, str):
            return
        why = self.start(version, active)
        if why is not None:
            log.warning("model version %s: its experiment did not start: %s", version, why)


def candidate_experiment(settings: Settings) -> CandidateHook:
    """The gate hook that starts a promotable candidate as an experiment variant (see the module)."""
    return CandidateExperiment(settings)
