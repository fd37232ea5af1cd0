"""``GET /v1/users/{user_id}/recommendations``: the active model, the user's history folded in live."""

from __future__ import annotations

import math
import threading
import time
import uuid

from flask import Blueprint, Response, current_app, jsonify, request

from app.auth import read_access
from app.errors import ApiError
from app.graph import graph, settings
from graph_schema.statements.serving import USER_HISTORY
from kgrec.model_store import ActiveModel
from kgrec.recommender import HistoryEntry, Recommender

bp = Blueprint("recommendations", __name__)
MAX_K = 100
MAX_OFFSET = 1_000
HISTORY_LIMIT = 200
EXCLUDE = ("seen", "purchased", "none")
_lock = threading.Lock()


def active_model() -> Recommender:
    """The process's active model (reloaded when the active version changes), or a 503."""
    with _lock:
        holder = current_app.extensions.get("kgrec.model")
        if holder is None:
            holder = current_app.extensions["kgrec.model"] = ActiveModel(graph(), settings().data_dir)
    model = holder.get()
    if model is None:
        raise ApiError(503, "no_model", "no model has been trained yet (run `kgrec train`)")
    return model


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be an integer, not {raw!r}", field=name) from None
    if not low <= value <= high:
        raise ApiError(
            400, "bad_request", f"{name} must be between {low} and {high}, not {value}", field=name
        )
    return value


@bp.get("/v1/users/<user_id>/recommendations")
@read_access
def recommendations(user_id: str) -> Response:
    """Top-k items for a user: history folded in at request time; popularity for a new user."""
    k = _int_arg("k", 20, 1, MAX_K)
    offset = _int_arg("offset", 0, 0, MAX_OFFSET)
    exclude = request.args.get("exclude", "seen")
    if exclude not in EXCLUDE:
        raise ApiError(400, "bad_request", f"exclude must be one of {', '.join(EXCLUDE)}", field="exclude")
    model = active_model()
    now = time.time() * 1000
    half_life = settings().half_life_ms
    rows = graph().read(USER_HISTORY, {"user_id": user_id, "limit": HISTORY_LIMIT})
    history = [
        HistoryEntry(
            r["item_id"],
            (r["weight"] or 0.0) * math.exp2(-(now - (r["weight_ts"] or now)) / half_life),
            int(r["position"]),
        )
        for r in rows
    ]
    if exclude == "seen":
        excluded = [r["item_id"] for r in rows]
    elif exclude == "purchased":
        excluded = [r["item_id"] for r in rows if r["purchases"]]
    else:
        excluded = []
    ranked = model.recommend([history], offset + k, [excluded])[0][offset:]
    return jsonify(
        user_id=user_id,
        model_version=model.artifacts.version,
        recommendation_id=str(uuid.uuid4()),
        cold_start=not history,
        items=[{"item_id": item_id, "score": round(score, 6)} for item_id, score in ranked],
    )
