"""``POST /v1/events``: validated, atomic, idempotent ingestion of behaviour events."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.body import json_body
from app.endpoints import write_endpoint
from app.errors import ApiError
from app.graph import serving
from app.impression_schemas import AttributedIngestResult
from app.impressions import impression_store
from app.schemas import Error, EventBatch
from kgrec.attribution import claim_attribution, find_attribution
from kgrec.errors import NoActiveModel
from kgrec.events.ingest import EventsRefused
from kgrec.events.validation import validate_batch
from kgrec.limits import MAX_BODY_BYTES
from kgrec.serving import Serving, now_ms

bp = Blueprint("events", __name__)


def model_price(core: Serving, item_id: str) -> float | None:
    """The item's price as the active model knows it (a purchase's revenue when it has no value)."""
    try:
        model = core.active_model()
    except NoActiveModel:
        return None
    row = model.item_index.get(item_id)
    return float(model.facts.item_price[row]) if row is not None and row < model.facts.n_items else None


@write_endpoint(
    bp,
    "POST",
    "/v1/events",
    AttributedIngestResult,
    "applied",
    {
        "HTTP_400": (Error, "not UTF-8, not JSON, NaN/Infinity or nested too deeply"),
        "HTTP_413": (Error, f"the body is over {MAX_BODY_BYTES // (1024 * 1024)} MB"),
        "HTTP_415": (Error, "not application/json"),
        "HTTP_422": (Error, "invalid events, each in `errors`; nothing was written"),
    },
    body=EventBatch,
    access="write",  # the storefront's own write: any API key, not only an admin key
)
def post_events() -> Response:
    """Ingest a batch of behaviour events atomically and idempotently.

    Any invalid event rejects the whole batch (422, every problem as `{index, field, reason}`).
    Clicks, carts and purchases are then attributed to the impression they came from: the one their
    `recommendation_id` names, else the user's latest impression of the item within the window.
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
    store = impression_store()
    # Before the commit, so that an impression store or graph that cannot answer leaves nothing
    # written: the impressions the clicks, carts and purchases came from, and their revenue.
    found = find_attribution(
        store,
        events,
        max_skew_ms=core.settings.max_clock_skew_s * 1000,
        price_of=lambda item_id: model_price(core, item_id),
    )
    try:
        result = core.ingest_events(events)
    except EventsRefused as refused:
        raise ApiError(
            422,
            "validation_failed",
            f"{len(refused.errors)} problem(s) in the batch; nothing was written",
            errors=[e.as_dict() for e in refused.errors],
        ) from None
    # After the commit, before the answer: an acknowledged batch is attributed (kgrec/attribution.py).
    # Claims that cannot be written are a 503 that says the events were written: the client's resend
    # is a duplicate for the graph, and is attributed then.
    # Not the events the graph left out: their user was erased after them (no trace of them is
    # kept), or their id was recorded with other content (another event: only a resend of the
    # recorded one, whose claims a crash may have cut off, is claimed again).
    attributed = claim_attribution(store, found.without(result.unapplied_ids), now_ms=int(now_ms()))
    return jsonify({**result.counts(), "attributed": attributed.attributed})
