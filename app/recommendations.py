"""Recommendations for a user, and why: the active model with the user's history folded in live."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, jsonify

from app.auth import read_access
from app.errors import ApiError
from app.graph import graph, settings
from app.params import ItemFilters, bool_arg, choice_arg, int_arg
from app.serving import active_model, now_ms, user_history
from graph_schema.statements.explanations import EXPLANATION_PATHS
from graph_schema.statements.serving import ITEM_EXISTS
from kgrec.explanations import PathScorer, co_purchase_pairs
from kgrec.recommender import Recommender

bp = Blueprint("recommendations", __name__)
MAX_K = 100
MAX_OFFSET = 1_000
MAX_PATHS = 10
EXPLANATION_HUBS = 30  # the user's most recent items and strongest interests the graph searches from
EXCLUDE = ("seen", "purchased", "none")


def explanation_paths(
    model: Recommender, user_id: str, item_ids: list[str], history_ids: list[str]
) -> dict[str, list[dict]]:
    """Scored paths (best first) from the user to each item: one graph read for all items.

    ``history_ids`` (the user's recent items, from :func:`user_history`) are the
    hubs whose co-purchase links the model proposes and the graph confirms.
    """
    if not item_ids:
        return {}
    forward, backward = co_purchase_pairs(model, history_ids, item_ids)
    rows = graph().read(
        EXPLANATION_PATHS,
        {
            "user_id": user_id,
            "item_ids": item_ids,
            "hubs": EXPLANATION_HUBS,
            "forward": forward,
            "backward": backward,
        },
    )
    return PathScorer(model, now_ms(), settings().half_life_ms).paths(rows)


@bp.get("/v1/users/<user_id>/recommendations")
@read_access
def recommendations(user_id: str) -> Response:
    """Top-k items for a user: history folded in at request time; decayed popularity for a new user."""
    k = int_arg("k", 20, 1, MAX_K)
    offset = int_arg("offset", 0, 0, MAX_OFFSET)
    exclude = choice_arg("exclude", "seen", EXCLUDE)
    filters = ItemFilters.from_request()
    explain = bool_arg("explain")
    model = active_model()
    history, rows = user_history(user_id)
    if exclude == "seen":
        excluded = [r["item_id"] for r in rows]
    elif exclude == "purchased":
        excluded = [r["item_id"] for r in rows if r["purchases"]]
    else:
        excluded = []
    allowed = model.facts.mask(filters.brand, filters.category, filters.min_price, filters.max_price)
    ranked = model.recommend([history], offset + k, [excluded], allowed)[0][offset:]
    items = [{"item_id": item_id, "score": float(f"{score:.6g}")} for item_id, score in ranked]
    if explain:
        paths = explanation_paths(model, user_id, [i["item_id"] for i in items], [r["item_id"] for r in rows])
        for item in items:
            best = paths.get(item["item_id"])
            item["reason"] = best[0] if best else None
    return jsonify(
        user_id=user_id,
        model_version=model.artifacts.version,
        recommendation_id=str(uuid.uuid4()),
        cold_start=not history,
        k=k,
        offset=offset,
        filters=filters.as_dict(),
        items=items,
    )


@bp.get("/v1/users/<user_id>/recommendations/<item_id>/explanation")
@read_access
def explanation(user_id: str, item_id: str) -> Response:
    """The best paths (at most 3 hops) from the user to the item through typed graph edges."""
    max_paths = int_arg("max_paths", 3, 1, MAX_PATHS)
    model = active_model()
    if item_id not in model.item_index and not graph().read(ITEM_EXISTS, {"item_id": item_id}):
        raise ApiError(404, "not_found", f"no item with id {item_id!r}", field="item_id")
    _, rows = user_history(user_id)
    paths = explanation_paths(model, user_id, [item_id], [r["item_id"] for r in rows]).get(item_id, [])
    return jsonify(
        user_id=user_id, item_id=item_id, model_version=model.artifacts.version, paths=paths[:max_paths]
    )
