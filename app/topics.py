"""Topics: ``GET /v1/topics?q=`` (search by meaning) and ``GET /v1/topics/{topic_id}``."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.endpoints import read_endpoint
from app.graph import serving
from app.schemas import Error
from app.topic_schemas import Topic, TopicMatches, TopicQuery, TopicSearchQuery

bp = Blueprint("topics", __name__)


@read_endpoint(bp, "/v1/topics", TopicMatches, "topics of the active model version, best match first")
def search_topics(query: TopicSearchQuery) -> Response:
    """The active version's topics closest in meaning to `q` (embedding cosine)."""
    return jsonify(serving().search_topics(query.q, limit=query.limit))


@read_endpoint(
    bp,
    "/v1/topics/<topic_id>",
    Topic,
    "the topic",
    {"HTTP_404": (Error, "no such topic")},
    topic_id="the topic",
)
def topic(topic_id: str, query: TopicQuery) -> Response:
    """A topic's keywords, its most central items and how many users are interested in it."""
    return jsonify(serving().topic(topic_id, items=query.items))
