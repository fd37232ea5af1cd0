"""Recommendations for a user, and why: the active model with the user's history folded in live."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.endpoints import read_endpoint
from app.experiment_schemas import ExperimentExplanation, ExperimentRecommendations
from app.graph import serving
from app.impressions import recorded, served_version
from app.schemas import Error, ExplanationQuery, RecommendationsQuery

bp = Blueprint("recommendations", __name__)


@read_endpoint(
    bp,
    "/v1/users/<user_id>/recommendations",
    ExperimentRecommendations,
    "ranked items",
    user_id="any user id; an unknown user gets decayed popularity",
)
def recommendations(user_id: str, query: RecommendationsQuery) -> Response:
    """Ranked items for a user, with the user's latest events folded in.

    An unknown user, or one with no history, gets decayed popularity (`cold_start: true`).
    The answer is recorded as an impression under its `recommendation_id` (`GET /v1/impressions/{id}`),
    unless `record=false`.
    While an experiment runs, the user's variant (sticky) picks the model version.
    """
    version, experiment = served_version(user_id)
    answer = serving().recommendations(
        user_id,
        k=query.k,
        offset=query.offset,
        exclude=query.exclude,
        filters=query.filters(),
        explain=query.explain,
        diversity=query.diversity(),
        model_version=version,
    )
    return jsonify(
        recorded({**answer, **experiment}, surface="recommendations", user_id=user_id, record=query.record)
    )


@read_endpoint(
    bp,
    "/v1/users/<user_id>/recommendations/<item_id>/explanation",
    ExperimentExplanation,
    "paths, best first",
    {"HTTP_404": (Error, "no such item")},
    user_id="the user",
    item_id="the item",
)
def explanation(user_id: str, item_id: str, query: ExplanationQuery) -> Response:
    """Why this item: the best typed graph paths (at most 3 hops) from the user to it.

    Scored by the model that serves the user's recommendations: their experiment variant's, if any
    (named in `experiment` and `variant`, as on the recommendations).
    """
    version, experiment = served_version(user_id)
    answer = serving().explanation(user_id, item_id, max_paths=query.max_paths, model_version=version)
    return jsonify({**answer, **experiment})
