"""Request and response models of impressions and attribution (in /openapi.json like app/schemas.py's)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.schemas import Filters, IngestResult, Similar, SimilarQuery
from kgrec.attribution import ATTRIBUTED_TYPES
from kgrec.field_types import OptionalId


class SimilarForUserQuery(SimilarQuery):
    user_id: OptionalId = Field(
        "", description="the user the items are shown to: recorded with the impression, for attribution"
    )


class RecordedSimilar(Similar):
    user_id: str | None = Field(None, description="the user_id given, if any")
    recommendation_id: str = Field(
        json_schema_extra={"format": "uuid"},
        description="the impression's id: send it back with the user's events for attribution",
    )
    experiment: str | None = Field(None, description="the running experiment the user is in (needs user_id)")
    variant: str | None = Field(None, description="the user's variant (whose model_version served)")


class AttributedIngestResult(IngestResult):
    attributed: int = Field(description="click, cart and purchase events attributed to an impression now")


class ShownItem(BaseModel):
    item_id: str
    position: int = Field(description="rank in the whole ranking, 1 = the top")
    score: float
    explore: str | None = Field(None, description="only on explored slots: the arm that chose the item")


class AttributedEvent(BaseModel):
    event_id: str
    type: Literal[ATTRIBUTED_TYPES]  # type: ignore[valid-type]
    user_id: str
    item_id: str
    ts: int = Field(description="the event's time, epoch ms")
    value: float | None
    position: int = Field(description="the event's position, else where the impression showed the item")
    by: Literal["id", "window"] = Field(
        description="id: the event named this impression; window: the user's latest impression of the item"
    )
    attributed_at: int = Field(description="epoch ms")


class ImpressionView(BaseModel):
    """A recorded response and the events attributed to it."""

    recommendation_id: str = Field(json_schema_extra={"format": "uuid"})
    surface: Literal["recommendations", "similar"]
    user_id: str | None = Field(description="null: similar items asked for without a user")
    item_id: str | None = Field(description="similar items: the item they are similar to")
    model_version: str
    experiment: str | None
    variant: str | None
    filters: Filters
    created_at: int = Field(description="when it was recorded, epoch ms")
    items: list[ShownItem]
    attributed: list[AttributedEvent] = Field(description="oldest first; each event at most once")
