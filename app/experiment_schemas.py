"""Request and response models of A/B experiments (in /openapi.json like app/schemas.py's)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas import Explanation, Query, Recommendations
from kgrec.experiments import SRM_ALPHA
from kgrec.field_types import Id
from kgrec.limits import MAX_ID_LENGTH, MAX_SIDE_VERSIONS

MAX_VARIANTS = 10
MAX_LISTED = 100
# A page's cursor: the last listed experiment's created_at (epoch ms), a colon, and its id.
CURSOR_PATTERN = r"^$|^[0-9]{1,20}:.+$"
MAX_CURSOR = 21 + MAX_ID_LENGTH
VariantName = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="1 to 64 of A-Z a-z 0-9 _ -")
]
ExperimentName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class NewVariant(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: VariantName
    model_version: Id = Field(description='a ready model version, or "active": whatever version is active')
    traffic: Annotated[float, Field(gt=0, le=1, description="share of users; the shares add up to 1")]


class NewExperiment(BaseModel):
    """An experiment: the first variant is the control; users are assigned by hashing (experiment, user)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: ExperimentName
    variants: Annotated[
        list[NewVariant],
        Field(
            min_length=2,
            max_length=MAX_VARIANTS,
            description=(
                "distinct names, traffic adding up to 1; the first is the control; at most "
                f"{MAX_SIDE_VERSIONS} distinct model versions besides the active one (what each serving "
                "process keeps loaded)"
            ),
        ),
    ]
    unit: Literal["user"] = "user"


class Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    variant: VariantName = Field(description="the variant whose model version becomes active")


class VariantView(BaseModel):
    name: str
    model_version: str
    traffic: float


class ExperimentView(BaseModel):
    id: str
    name: str
    unit: Literal["user"]
    variants: list[VariantView]
    status: Literal["running", "stopped"]
    created_at: int
    stopped_at: int | None
    promoted: dict[str, Any] | None = Field(
        description="variant, model_version and activated_at, once promoted"
    )
    per_user: bool = Field(
        False,
        description="per-user totals kept from the start (false: created before 2026-12-07, so the "
        "differences and the sample ratio check are null)",
    )
    per_user_sums: bool = Field(
        False,
        description="sums over users kept from the start, which the results read (false: created "
        "before they were, so each read of the results scans the per-user totals)",
    )


class Estimate(BaseModel):
    value: float
    ci_low: float = Field(description="95% interval, per impression (not clustered by user)")
    ci_high: float


class Difference(BaseModel):
    difference: float | None = Field(description="this variant minus the control")
    ci_low: float | None = Field(description="95% interval")
    ci_high: float | None
    p_value: float | None = Field(
        description="two-sided, with the user as the unit (delta method; same standard error as the "
        "interval); fixed-horizon: read once, at the planned sample size"
    )


class VersusControl(BaseModel):
    ctr: Difference
    add_to_cart_rate: Difference
    conversion: Difference
    revenue_per_impression: Difference


class VariantResults(VariantView):
    users: int = Field(description="distinct users served (HyperLogLog estimate)")
    impressions: int
    clicks: int = Field(description="impressions with at least one attributed click")
    carts: int
    purchases: int
    ctr: Estimate
    add_to_cart_rate: Estimate
    conversion: Estimate
    revenue_per_impression: Estimate = Field(description="attributed purchases' value (else item price)")
    vs_control: VersusControl | None = Field(None, description="every variant but the control")


class ExperimentListQuery(Query):
    status: Literal["", "running", "stopped"] = Field("", description="only these (empty: every one)")
    limit: Annotated[int, Field(ge=1, le=MAX_LISTED, description="how many, newest first")] = 50
    cursor: Annotated[
        str,
        Field(
            max_length=MAX_CURSOR,
            pattern=CURSOR_PATTERN,
            description="`next_cursor` of the previous page (empty: the newest)",
        ),
    ] = ""


class ExperimentList(BaseModel):
    experiments: list[ExperimentView] = Field(description="newest first")
    running: str | None = Field(description="the running experiment's id, if any")
    next_cursor: str | None = Field(
        None, description="pass as `cursor` for the next (older) page; null on the last page"
    )


class ExperimentResults(ExperimentView):
    control: str
    tests: str = Field(description="the statistical tests used")
    variants: list[VariantResults]  # type: ignore[assignment]
    sample_ratio_users: list[int] | None = Field(
        description="users per variant, counted exactly, in variant order (null without per-user totals)"
    )
    sample_ratio_p: float | None = Field(
        description="chi-squared p-value of the users per variant against the traffic shares"
    )
    sample_ratio_mismatch: bool = Field(
        description="sample_ratio_p < sample_ratio_alpha: the split is broken, distrust the results"
    )
    sample_ratio_alpha: float = Field(
        description=f"sample_ratio_mismatch's threshold for sample_ratio_p ({SRM_ALPHA})"
    )


class ExperimentRecommendations(Recommendations):
    experiment: str | None = Field(None, description="the running experiment this user is in")
    variant: str | None = Field(None, description="the user's variant (whose model_version served)")


class ExperimentExplanation(Explanation):
    experiment: str | None = Field(None, description="the running experiment this user is in")
    variant: str | None = Field(None, description="the user's variant (whose model_version scored the paths)")
