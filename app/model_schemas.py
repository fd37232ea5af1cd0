"""The model-version API's request and response models (``/v1/models``), in :mod:`app.schemas`' style."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kgrec.field_types import WholeNumber
from kgrec.limits import MAX_EPOCHS

# The training variants of workers/training/config.py (VARIANTS); the app may not import workers,
# so tests/test_models_api.py checks that the two lists agree.
Variant = Literal[
    "full",
    "interactions",
    "no-knowledge",
    "no-text",
    "no-graph-model",
    "graph-model-only",
    "graph-model-only-no-knowledge",
    "no-recency",
    "no-topics",
    "no-ease",
]
VersionStatus = Literal["writing", "active", "retired", "candidate"]


class GateScores(BaseModel):
    metric: str = Field(description="the metric compared: ndcg@10")
    candidate: dict[str, float] = Field(description="the new version's validation metrics")
    active: dict[str, float] | None = Field(description="the then-active version's, on the same users")
    active_version: str | None
    users: int = Field(description="validation users both were scored on")
    tolerance: float = Field(description="relative: promoted if candidate ≥ (1 - tolerance) × active")
    min_users: int = Field(description="fewer comparable users than this: kept")
    seconds: float = Field(description="how long scoring both versions took")


class GateView(BaseModel):
    decision: Literal["promoted", "kept"]
    reason: str
    scores: GateScores | None
    decided_at: int = Field(description="epoch ms")


class ModelVersionView(BaseModel):
    version: str
    status: VersionStatus = Field(
        description="active: serving; candidate: written, never active (kept by the gate, or awaiting "
        "promotion); retired: active before; writing: write-back unfinished"
    )
    created_at: int = Field(description="epoch ms")
    activated_at: int | None = Field(description="epoch ms of its latest activation")
    metrics: dict[str, Any] = Field(description="validation metrics recorded by training")
    counts: dict[str, Any] = Field(description="sizes of the graph it was trained on")
    gate: GateView | None = Field(description="the promotion gate's decision (gated trainings only)")
    parent: str | None = Field(
        description="the version an incremental update started from (null for a full training)"
    )
    data_until: int | None = Field(
        description=(
            "epoch ms: the newest interaction an incremental update read; for a full training, when "
            "its graph was pulled (null for one trained before this was recorded)"
        )
    )
    artifact: str | None = Field(description="the artifact file under var/models/")
    artifact_bytes: int | None = Field(description="its size (null where the API cannot see the file)")


class ModelVersionList(BaseModel):
    versions: list[ModelVersionView] = Field(description="newest first")


class TrainRequest(BaseModel):
    """A training job; every field is optional (`{}` trains the full model behind the gate)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    epochs: WholeNumber = Field(
        40, ge=1, le=MAX_EPOCHS, description="the graph model's epoch cap (it stops early)"
    )
    variant: Variant = "full"
    seed: WholeNumber = Field(7, ge=0, le=2**31 - 1)
    gate: bool = Field(
        True, description="activate only if the promotion gate lets it through (false: activate at once)"
    )


class TrainJob(BaseModel):
    id: str = Field(description="the job id; follow it at GET /v1/jobs/{id}")
    state: str
    status_url: str
