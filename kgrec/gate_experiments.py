"""A retrained version the promotion gate would promote starts as an experiment variant instead.

With ``KGREC_GATE_EXPERIMENT=true`` (``Settings.gate_experiment``) the training job passes
:func:`candidate_experiment` as the gate's hook (:data:`kgrec.promotion_gate.CandidateHook`):
a candidate that passed the gate does not replace the active version; an experiment starts,
``control`` = the version the gate compared it with (pinned by id, so a promotion meanwhile
does not change the comparison) and ``candidate`` = the new version, 50/50. The operator reads
``GET /v1/experiments/{id}`` and promotes (or stops) it. A kept candidate, and the first version
of a graph (nothing to compare with), take the usual path. While another experiment runs the
candidate is not activated either: it stays a candidate, and the reason says why.

The hook is idempotent: a redelivered training job finds its version already in the running
experiment and reports that one.
"""

from __future__ import annotations

from kgrec.config import Settings
from kgrec.experiments import ExperimentConflict, ExperimentStore, Variant
from kgrec.impressions import ImpressionStore
from kgrec.promotion_gate import CandidateHook, GateDecision

CONTROL = "control"
CANDIDATE = "candidate"
SHARE = 0.5


def experiment_name(version: str) -> str:
    """The name of the experiment the gate starts for ``version``."""
    return f"gate: {version}"


def running_versions(settings: Settings) -> set[str]:
    """The model versions the running experiment serves (empty without one); garbage collection keeps them."""
    store = ImpressionStore(settings)
    try:
        running = ExperimentStore(store).running()
    finally:
        store.close()
    return set() if running is None else {v.model_version for v in running.variants}


def candidate_experiment(settings: Settings) -> CandidateHook:
    """The gate hook that starts a promotable candidate as an experiment variant (see the module)."""

    def start(version: str, decision: GateDecision) -> str | None:
        active = decision.scores.active_version
        if not decision.promoted or active is None:
            return None
        store = ImpressionStore(settings)
        experiments = ExperimentStore(store)
        try:
            running = experiments.running()
            if running is not None and any(v.model_version == version for v in running.variants):
                experiment = running  # this job ran before (a redelivery): its experiment is running
            else:
                variants = [Variant(CONTROL, active, SHARE), Variant(CANDIDATE, version, 1.0 - SHARE)]
                experiment = experiments.create(experiment_name(version), variants)
        except ExperimentConflict:
            return (
                f"not activated: experiment {experiments.running_id()} is running, so it could not start "
                "as a variant (promote it by hand, or retrain after that experiment)"
            )
        finally:
            store.close()
        return (
            f"started as variant '{CANDIDATE}' of experiment {experiment.id} against {active} "
            "instead of replacing it"
        )

    return start
