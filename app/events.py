"""``POST /v1/events``: validated, atomic, idempotent ingestion of behaviour events."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.body import json_body
from app.endpoints import write_endpoint
from app.errors import ApiError
from app.graph import serving
from app.schemas import Error, EventBatch, IngestResult
from kgrec.events.validation import validate_batch
from kgrec.limits import MAX_BODY_BYTES

bp = Blueprint("events", __name__)


@write_endpoint(
    bp,
    "POST",
    "/v1/events",
    IngestResult,
    "applied",
    {
        "HTTP_400": (Error, "not UTF-8, not JSON, NaN/Infinity or nested too deeply"),
        "HTTP_413": (Error, f"the body is over {MAX_BODY_BYTES // (1024 * 1024)} MB"),
        "HTTP_415": (Error, "not application/json"),
        "HTTP_422": (Error, "invalid events, each in `errors`; nothing was written"),
    },
    body=EventBatch,
)
def post_events() -> Response:
    """Ingest a batch of behaviour events atomically and idempotently.

    Any invalid event rejects the whole batch (422, every problem as `{index, field, reason}`).
    """
    document = json_body()
    raw_events = document.get("events") if isinstance(document, dict) else document
    core = serving()
    events, errors = validate_batch(raw_events, max_skew_s=core.settings.max_clock_skew_s)
    if errors:
        raise ApiError(
            422,
            "validation_failed",
            f"{len(errors)} problem(s) in the batch; nothing was written",
            errors=[e.as_dict() for e in errors],
        )
    return jsonify(core.ingest_events(events))
