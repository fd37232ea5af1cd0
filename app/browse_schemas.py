"""The contract of the browsing endpoints (:mod:`app.browse`): their query and response models."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from app.schemas import Query
from kgrec.browse import SEARCH_KINDS, SEARCH_LABELS
from kgrec.field_types import OptionalId

MAX_SEARCH_RESULTS = 50
MAX_TIMELINE = 200
MAX_NEIGHBOURS = 100
MAX_PER_NEIGHBOUR = 10

SearchKind = Literal[("", *SEARCH_KINDS)]  # type: ignore[valid-type]


class SearchQuery(Query):
    q: OptionalId = Field(
        "", description="an id (or its start), or part of a name or title in any case; empty finds nothing"
    )
    kind: SearchKind = Field("", description="only this kind of node (empty: every kind)")
    limit: Annotated[int, Field(ge=1, le=MAX_SEARCH_RESULTS, description="how many results")] = 20


class TimelineQuery(Query):
    limit: Annotated[int, Field(ge=1, le=MAX_TIMELINE, description="how many items, newest first")] = 50


class NeighbourhoodQuery(Query):
    limit: Annotated[
        int,
        Field(
            ge=1,
            le=MAX_NEIGHBOURS,
            description="how many direct neighbours (brands, categories, entities first; then users, items)",
        ),
    ] = 40
    per_node: Annotated[
        int,
        Field(
            ge=0,
            le=MAX_PER_NEIGHBOUR,
            description="how many second-hop neighbours per direct neighbour (users are not expanded)",
        ),
    ] = 3


class SearchHit(BaseModel):
    label: Literal[tuple(SEARCH_LABELS)]  # type: ignore[valid-type]
    id: str
    name: str = Field(description="the name or title (the id when there is none)")


class SearchResults(BaseModel):
    query: str
    results: list[SearchHit] = Field(description="exact ids first, then id prefixes, then names")


class TimelineEntry(BaseModel):
    item_id: str
    title: str | None
    first_ts: int | None = Field(description="epoch ms of the first event (none in data without times)")
    last_ts: int | None = Field(description="epoch ms of the latest event")
    last_seq: int | None = Field(description="position in the user's history, in data without times")
    weight: float = Field(description="the interaction's weight, decayed to now")
    brands: list[str] = Field(description="the item's brands")
    categories: list[str] = Field(description="every category the item is listed under")
    counts: dict[str, int] = Field(description="events per behaviour (behaviours with none left out)")


class Timeline(BaseModel):
    user_id: str
    events: list[TimelineEntry] = Field(description="newest first; empty for an unknown user")


class GraphNode(BaseModel):
    key: str = Field(description="label:id, unique in the answer")
    label: str
    id: str
    name: str


class GraphRelationship(BaseModel):
    source: str = Field(description="the start node's key")
    target: str = Field(description="the end node's key")
    type: str
    relation: str | None = Field(description="a knowledge edge's exact relation name")
    weight: float | None = Field(description="an interaction or interest weight as stored (not decayed)")


class Neighbourhood(BaseModel):
    item_id: str
    nodes: list[GraphNode] = Field(description="the item first")
    relationships: list[GraphRelationship]


class QueueStatus(BaseModel):
    broker: bool = Field(description="the Celery broker answers")
    workers: list[str] = Field(description="the workers that answered a ping within half a second")
