"""A user's interests, and erasure: ``GET /v1/users/{user_id}/interests``, ``DELETE /v1/users/{user_id}``."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.endpoints import read_endpoint, write_endpoint
from app.graph import serving
from app.impressions import impression_store
from app.schemas import Erasure, Error, Interests, InterestsQuery

bp = Blueprint("users", __name__)


@read_endpoint(bp, "/v1/users/<user_id>/interests", Interests, "interests", user_id="the user")
def interests(user_id: str, query: InterestsQuery) -> Response:
    """The user's strongest brands and categories, decayed to now, with the items that drove each."""
    return jsonify(serving().interests(user_id, limit=query.k, items=query.items))


@write_endpoint(
    bp,
    "DELETE",
    "/v1/users/<user_id>",
    Erasure,
    "what was removed",
    {
        "HTTP_400": (Error, "an invalid id"),
        "HTTP_404": (Error, "no such user"),
        "HTTP_503": (
            Error,
            "the graph or the impression store is unavailable before the deletion (`graph_unavailable`, "
            "`impressions_unavailable`; Retry-After); a job queue that does not answer is "
            "`removed.update_plans: null` in the 200",
        ),
    },
    access="erase",
    user_id="the user",  # and, as every STORED_ID_ROUTES id, kgrec.limits.STORED_ID_RULE (app.openapi)
)
def erase_user(user_id: str) -> Response:
    """Erase a user: node, edges, embeddings and their share of popularity (one statement), and
    their recorded impressions with the events attributed to them. A second erasure is a 404.

    It needs an erase key (KGREC_ERASE_KEYS) or an admin key once KGREC_ADMIN_KEYS is set."""
    return jsonify(serving().erase_user(user_id, impression_store()))
