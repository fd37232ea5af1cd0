"""``GET /v1/items/{item_id}/similar``: nearest items by the active model's embeddings."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.endpoints import read_endpoint
from app.graph import serving
from app.schemas import Error, Similar, SimilarQuery

bp = Blueprint("items", __name__)


@read_endpoint(
    bp,
    "/v1/items/<item_id>/similar",
    Similar,
    "similar items",
    {"HTTP_404": (Error, "the model knows no such item")},
    item_id="the item",
)
def similar(item_id: str, query: SimilarQuery) -> Response:
    """Items closest to this one by the model's embeddings (cosine), with the catalogue filters.

    Items created after the last training are included once their embedding has
    been folded in from their text, brand and categories.
    """
    core = serving()
    return jsonify(core.similar(item_id, k=query.k, filters=query.filters(), diversity=query.diversity()))
