"""``GET /v1/items/{item_id}/similar``: nearest items by the model's embeddings, recorded as an impression."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.endpoints import read_endpoint
from app.graph import serving
from app.impression_schemas import RecordedSimilar, SimilarForUserQuery
from app.impressions import recorded, served_version
from app.schemas import Error

bp = Blueprint("items", __name__)


@read_endpoint(
    bp,
    "/v1/items/<item_id>/similar",
    RecordedSimilar,
    "similar items",
    {"HTTP_404": (Error, "the model knows no such item")},
    item_id="the item",
)
def similar(item_id: str, query: SimilarForUserQuery) -> Response:
    """Items closest to this one by the model's embeddings (cosine), with the catalogue filters.

    Items created after the last training are included once their embedding has
    been folded in from their text, brand and categories. The answer is recorded as an
    impression (with `user_id` when given) under its `recommendation_id`, unless `record=false`;
    with a `user_id`, a running experiment's variant picks the model version, and a pin's
    `when: {interest}` is that user's.
    """
    version, experiment = served_version(query.user_id)
    answer = serving().similar(
        item_id,
        k=query.k,
        filters=query.filters(),
        diversity=query.diversity(),
        model_version=version,
        user_id=query.user_id or None,
    )
    answer = {**answer, "user_id": query.user_id, **experiment}
    return jsonify(
        recorded(answer, surface="similar", user_id=query.user_id, item_id=item_id, record=query.record)
    )
