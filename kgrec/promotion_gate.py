"""The promotion gate's rule: does a newly trained version replace the active one?

Both versions are scored on the same validation hold-out (each user's latest
interaction, where it arrived after the active version was trained, so the
active version has not seen it either, of users whose targets the candidate's
tuning never read; ``workers.training.gate`` builds it and
scores both through the serving :class:`~kgrec.recommender.Recommender`). This
module only decides, from those scores, and says why in one sentence that is
stored on the candidate's ``(:ModelVersion)`` as ``gate_reason``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

GATE_METRIC = "ndcg@10"
PROMOTED = "promoted"
KEPT = "kept"


@dataclass(frozen=True)
class GateScores:
    """What the gate compares: both versions' validation metrics on the same users."""

    candidate: dict[str, float]
    active: dict[str, float] | None  # None: no version is active
    active_version: str | None
    users: int  # validation users both were scored on
    tolerance: float
    min_users: int
    seconds: float = 0.0  # how long scoring both took


@dataclass(frozen=True)
class GateDecision:
    """The verdict, its reason, and the scores behind it (stored as ``gate_metrics`` JSON)."""

    decision: str  # PROMOTED or KEPT
    reason: str
    scores: GateScores

    @property
    def promoted(self) -> bool:
        """True when the candidate becomes the active version."""
        return self.decision == PROMOTED

    def metrics(self) -> dict[str, Any]:
        """The scores as stored on the version (JSON-ready)."""
        return {"metric": GATE_METRIC, **asdict(self.scores)}


# A hook the training job calls with every decision the gate makes, before it is recorded and
# before any activation, so it must not act on it yet (the version is still open to a redelivery).
# Returning a sentence means "the hook took the candidate" (for example, kgrec.gate_experiments
# plans it as an experiment variant, which the job starts once the decision is recorded): the
# sentence is appended to the recorded reason and the job leaves the active version alone even
# when the gate would promote. None: the usual path. See README, "Scheduled retraining".
CandidateHook = Callable[[str, GateDecision], str | None]


def decide(scores: GateScores) -> GateDecision:
    """Promote when the candidate's NDCG@10 is at least ``(1 - tolerance)`` × the active version's.

    With no active version the candidate is promoted. With fewer than ``min_users``
    comparable users the gate cannot tell and keeps the candidate.
    """
    if scores.active is None or scores.active_version is None:
        return GateDecision(PROMOTED, "no version was active", scores)
    if scores.users < scores.min_users:
        return GateDecision(
            KEPT,
            f"only {scores.users} users have an interaction newer than the active version "
            f"{scores.active_version} (the gate needs {scores.min_users})",
            scores,
        )
    candidate, active = scores.candidate[GATE_METRIC], scores.active[GATE_METRIC]
    floor = active * (1.0 - scores.tolerance)
    detail = (
        f"(active {scores.active_version}: {active:.4f}, tolerance {scores.tolerance:.1%}, "
        f"{scores.users} validation users)"
    )
    if candidate >= floor:
        return GateDecision(PROMOTED, f"validation NDCG@10 {candidate:.4f} ≥ {floor:.4f} {detail}", scores)
    return GateDecision(KEPT, f"validation NDCG@10 {candidate:.4f} is below {floor:.4f} {detail}", scores)
