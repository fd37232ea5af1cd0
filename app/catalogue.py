"""The catalogue API: ``PUT``/``GET``/``DELETE /v1/items/{item_id}`` and ``POST /v1/items``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from app.body import json_body
from app.endpoints import read_endpoint, write_endpoint
from app.errors import ApiError
from app.graph import serving
from app.schemas import CatalogueItemView, CatalogueWrite, Delisted, Error, ItemBatch, ItemBody
from kgrec.catalogue import ItemsRefused, validate_items
from kgrec.events.validation import FieldError
from kgrec.field_types import shown
from kgrec.limits import MAX_BODY_BYTES

bp = Blueprint("catalogue", __name__)

BODY_ERRORS = {
    "HTTP_400": (Error, "not UTF-8, not JSON, NaN/Infinity or nested too deeply"),
    "HTTP_413": (Error, f"the body is over {MAX_BODY_BYTES // (1024 * 1024)} MB"),
    "HTTP_415": (Error, "not application/json"),
    "HTTP_422": (Error, "invalid items, each in `errors`; nothing was written"),
}


def _refuse(errors: list[FieldError]) -> ApiError:
    return ApiError(
        422,
        "validation_failed",
        f"{len(errors)} problem(s) in the batch; nothing was written",
        errors=[e.as_dict() for e in errors],
    )


def _write(raw_items: Any) -> Response:
    core = serving()
    items, errors = validate_items(raw_items)
    if errors:
        raise _refuse(errors)
    try:
        return jsonify(core.upsert_items(items))
    except ItemsRefused as refused:
        raise _refuse(refused.errors) from None


@write_endpoint(
    bp,
    "PUT",
    "/v1/items/<item_id>",
    CatalogueWrite,
    "written",
    BODY_ERRORS,
    body=ItemBody,
    item_id="the item",
)
def put_item(item_id: str) -> Response:
    """Create or update one item: a field given is written (null removes it), one left out is kept.

    Idempotent. An unavailable or delisted item leaves recommendations and similar items at once.
    """
    # no body at all: a bare listed item (or the item as it is)
    document = json_body(optional=True)
    if not isinstance(document, dict):
        raise _refuse([FieldError(-1, "item", "must be an object of item fields")])
    if "item_id" in document and document["item_id"] != item_id:
        reason = f"{shown(document['item_id'])} differs from the item_id in the path ({shown(item_id)})"
        raise _refuse([FieldError(0, "item_id", reason)])
    return _write([{**document, "item_id": item_id}])


@write_endpoint(bp, "POST", "/v1/items", CatalogueWrite, "written", BODY_ERRORS, body=ItemBatch)
def post_items() -> Response:
    """Create or update a batch of items in one atomic write.

    The batch is validated as a whole: any invalid item refuses it (422, every problem as
    `{index, field, reason}`) and nothing is written.
    """
    document = json_body()
    return _write(document.get("items") if isinstance(document, dict) else document)


@read_endpoint(
    bp,
    "/v1/items/<item_id>",
    CatalogueItemView,
    "the item",
    {"HTTP_404": (Error, "no such item")},
    item_id="the item",
)
def get_item(item_id: str) -> Response:
    """The item as the graph holds it: fields, brand, categories (general to specific), attributes."""
    return jsonify(serving().catalogue_item(item_id))


@write_endpoint(
    bp,
    "DELETE",
    "/v1/items/<item_id>",
    Delisted,
    "delisted",
    {"HTTP_404": (Error, "no such item")},
    item_id="the item",
)
def delete_item(item_id: str) -> Response:
    """Delist the item: it is never recommended again; its node, edges and history stay."""
    return jsonify(serving().delist_item(item_id))
