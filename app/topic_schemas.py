"""The contract of the topic endpoints (:mod:`app.topics`): their query and response models."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from app.schemas import Query
from kgrec.limits import MAX_QUERY_LENGTH

MAX_TOPIC_RESULTS = 50
MAX_TOPIC_ITEMS = 100


class TopicSearchQuery(Query):
    q: Annotated[str, Field(max_length=MAX_QUERY_LENGTH, pattern=r"^[^\x00]*$")] = Field(
        "", description="text to match by meaning (the bundled sentence-transformer); empty finds nothing"
    )
    limit: Annotated[int, Field(ge=1, le=MAX_TOPIC_RESULTS, description="how many topics")] = 10


class TopicQuery(Query):
    items: Annotated[
        int, Field(ge=0, le=MAX_TOPIC_ITEMS, description="how many of its most central items")
    ] = 10


class TopicMatch(BaseModel):
    id: str
    name: str
    score: float = Field(description="cosine of the text to the topic's centroid")


class TopicMatches(BaseModel):
    q: str
    model_version: str | None = Field(
        description="the version whose topics were searched (null: none active)"
    )
    topics: list[TopicMatch] = Field(description="best first")


class TopicItem(BaseModel):
    item_id: str
    title: str | None
    score: float = Field(description="the item's ABOUT score (cosine to the centroid)")


class Topic(BaseModel):
    id: str
    name: str
    keywords: list[str]
    items: list[TopicItem] = Field(description="most central first")
    interested_users: int = Field(description="users with an interest edge to the topic")
