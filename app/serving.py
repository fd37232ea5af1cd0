"""What the read endpoints share: the process's active model and a user's live history."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from typing import Any

from flask import current_app

from app.errors import ApiError
from app.graph import graph, settings
from graph_schema.statements.serving import USER_HISTORY
from kgrec.model_store import ActiveModel
from kgrec.recommender import HistoryEntry, Recommender

HISTORY_LIMIT = 200
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


def now_ms() -> float:
    """The current time in epoch milliseconds."""
    return time.time() * 1000


def decayed(weight: float | None, weight_ts: int | None, at_ms: float) -> float:
    """A stored weight decayed to ``at_ms`` with the configured half-life."""
    if weight is None:
        return 0.0
    stamp = weight_ts if weight_ts is not None else at_ms
    return float(weight) * math.exp2(-(at_ms - stamp) / settings().half_life_ms)


def user_history(user_id: str) -> tuple[list[HistoryEntry], list[Mapping[str, Any]]]:
    """The user's latest interactions as the Recommender takes them, and the raw rows (one read)."""
    at = now_ms()
    rows = graph().read(USER_HISTORY, {"user_id": user_id, "limit": HISTORY_LIMIT})
    history = [
        HistoryEntry(r["item_id"], decayed(r["weight"], r["weight_ts"], at), int(r["position"])) for r in rows
    ]
    return history, rows
