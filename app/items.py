"""``GET /v1/items/{item_id}/similar``: nearest items by the active model's embeddings."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.auth import read_access
from app.errors import ApiError
from app.params import ItemFilters, int_arg
from app.serving import active_model

bp = Blueprint("items", __name__)
MAX_K = 100


@bp.get("/v1/items/<item_id>/similar")
@read_access
def similar(item_id: str) -> Response:
    """Items closest to ``item_id`` (cosine over embeddings), with the catalogue filters.

    Items created after the last training are included once their embedding has
    been folded in from their text, brand and categories.
    """
    k = int_arg("k", 20, 1, MAX_K)
    filters = ItemFilters.from_request()
    model = active_model()
    if item_id not in model.item_index:
        raise ApiError(404, "not_found", f"the model knows no item with id {item_id!r}", field="item_id")
    allowed = model.facts.mask(filters.brand, filters.category, filters.min_price, filters.max_price)
    ranked = model.similar(item_id, k, allowed)
    return jsonify(
        item_id=item_id,
        model_version=model.artifacts.version,
        k=k,
        filters=filters.as_dict(),
        items=[{"item_id": i, "score": float(f"{score:.6g}")} for i, score in ranked],
    )
