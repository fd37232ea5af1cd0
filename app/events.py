"""``POST /v1/events``: validated, atomic, idempotent ingestion of behaviour events."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.auth import write_access
from app.body import json_body
from app.errors import ApiError
from app.fold_in import request_fold_in
from app.graph import graph, settings
from kgrec.events.ingest import ingest
from kgrec.events.validation import MAX_BATCH, validate_batch

bp = Blueprint("events", __name__)


@bp.post("/v1/events")
@write_access
def post_events() -> Response:
    """Apply a batch of up to 1,000 events; any invalid event rejects the whole batch (422)."""
    document = json_body()
    raw_events = document.get("events") if isinstance(document, dict) else document
    config = settings()
    events, errors = validate_batch(raw_events, max_skew_s=config.max_clock_skew_s, max_batch=MAX_BATCH)
    if errors:
        raise ApiError(
            422,
            "validation_failed",
            f"{len(errors)} problem(s) in the batch; nothing was written",
            errors=[e.as_dict() for e in errors],
        )
    result = ingest(graph(), events, config)
    request_fold_in(e.item_id for e in events)
    return jsonify(result.as_dict())
