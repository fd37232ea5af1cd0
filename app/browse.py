"""Browsing: `/v1/search`, a user's `timeline`, an item's `neighbourhood`, and the job `queue` (all GET)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.browse_schemas import (
    Neighbourhood,
    NeighbourhoodQuery,
    QueueStatus,
    SearchQuery,
    SearchResults,
    Timeline,
    TimelineQuery,
)
from app.endpoints import read_endpoint
from app.graph import graph, settings
from app.schemas import Error
from kgrec import browse
from kgrec.queue_status import queue_status

bp = Blueprint("browse", __name__)


@read_endpoint(bp, "/v1/search", SearchResults, "matches, best first", lists_users=True)
def search(query: SearchQuery) -> Response:
    """Users, items, brands, categories and entities by id (exact or prefix) or by part of their name."""
    if query.q is None:
        return jsonify({"query": "", "results": []})
    kinds = [query.kind] if query.kind else []
    return jsonify(browse.search(graph(), query.q, kinds, query.limit))


@read_endpoint(
    bp, "/v1/users/<user_id>/timeline", Timeline, "latest interactions", lists_users=True, user_id="the user"
)
def timeline(user_id: str, query: TimelineQuery) -> Response:
    """The user's latest interactions, one per item, with event counts and the weight decayed to now."""
    return jsonify(browse.user_timeline(graph(), user_id, query.limit, settings().half_life_ms))


@read_endpoint(
    bp,
    "/v1/items/<item_id>/neighbourhood",
    Neighbourhood,
    "nodes and relationships up to two hops away",
    {"HTTP_404": (Error, "no such item")},
    lists_users=True,
    item_id="the item",
)
def neighbourhood(item_id: str, query: NeighbourhoodQuery) -> Response:
    """The item's knowledge-graph neighbourhood, two hops at most, capped (model versions left out)."""
    return jsonify(browse.item_neighbourhood(graph(), item_id, query.limit, query.per_node))


@read_endpoint(bp, "/v1/queue", QueueStatus, "broker and workers")
def queue() -> Response:
    """Whether the job queue's broker answers, and which workers answer a ping (waits half a second)."""
    return jsonify(queue_status(settings()))
