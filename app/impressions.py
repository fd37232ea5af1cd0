"""``GET /v1/impressions/{recommendation_id}``, and the per-app impression store the views record into."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from app.endpoints import read_endpoint
from app.graph import settings
from app.impression_schemas import ImpressionView
from app.schemas import Error
from kgrec.errors import NotFound
from kgrec.experiments import ACTIVE, ExperimentStore, RunningExperiment, assignment
from kgrec.impressions import ImpressionStore
from kgrec.serving import now_ms

bp = Blueprint("impressions", __name__)

_EXTENSION = "kgrec_impressions"
_RUNNING = "kgrec_running_experiment"


def impression_store() -> ImpressionStore:
    """The app's impression store (built on first use; its client is per process)."""
    store = current_app.extensions.get(_EXTENSION)
    if store is None:
        store = current_app.extensions.setdefault(_EXTENSION, ImpressionStore(settings()))
    return store


def running_experiment() -> RunningExperiment:
    """The app's view of the running experiment."""
    running = current_app.extensions.get(_RUNNING)
    if running is None:
        running = current_app.extensions.setdefault(
            _RUNNING, RunningExperiment(ExperimentStore(impression_store()))
        )
    return running


def served_version(user_id: str | None) -> tuple[str | None, dict[str, str | None]]:
    """The model version to serve this user (None: the active one) and the answer's experiment fields."""
    assigned = assignment(running_experiment(), user_id)
    if assigned is None:
        return None, {"experiment": None, "variant": None}
    experiment, variant = assigned
    version = None if variant.model_version == ACTIVE else variant.model_version
    return version, {"experiment": experiment.id, "variant": variant.name}


def recorded(
    answer: dict[str, Any],
    *,
    surface: str,
    user_id: str | None,
    item_id: str | None = None,
    record: bool = True,
) -> dict[str, Any]:
    """Record a recommendations or similar-items answer and stamp its id.

    Nothing is recorded while recording is off, nor for a HEAD or a request that says
    ``record=false`` (the operator console): no shopper sees its answer, and a recorded one would
    count as an exposure, move the user's exploration seed and collect window-attributed events.
    """
    if not (settings().record_impressions and record) or request.method == "HEAD":
        answer.setdefault("recommendation_id", str(uuid.uuid4()))  # as before recording: never stored
        return answer
    answer["recommendation_id"] = impression_store().record(
        surface=surface,
        user_id=user_id,
        items=[(item["item_id"], item["score"]) for item in answer["items"]],
        model_version=answer["model_version"],
        filters=answer["filters"],
        offset=answer.get("offset", 0),
        source_item_id=item_id,
        experiment=answer.get("experiment"),
        variant=answer.get("variant"),
        explored={item["item_id"]: item["explore"] for item in answer["items"] if "explore" in item},
        now_ms=int(now_ms()),
    )
    return answer


@read_endpoint(
    bp,
    "/v1/impressions/<recommendation_id>",
    ImpressionView,
    "the impression",
    {"HTTP_404": (Error, "no impression with this id (never recorded, or past retention)")},
    recommendation_id="the recommendation_id of a recommendations or similar-items response",
)
def impression(recommendation_id: str) -> Response:
    """What one response showed (items, positions, scores, model version, filters) and what it led to.

    `attributed` lists the clicks, carts and purchases attributed to it, each event at most once.
    """
    store = impression_store()
    found = store.get(recommendation_id)
    if found is None:
        raise NotFound("recommendation_id", recommendation_id, f"no impression with id {recommendation_id!r}")
    return jsonify({**found.as_dict(), "attributed": store.attributed(found.entry_id)})
