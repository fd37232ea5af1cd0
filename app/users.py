"""``GET /v1/users/{user_id}/interests``: the user's strongest brands and categories, decayed to now."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.auth import read_access, write_access
from app.errors import ApiError
from app.graph import graph, settings
from app.params import int_arg
from app.serving import now_ms
from graph_schema.statements.privacy import ERASE_USER
from graph_schema.statements.serving import USER_INTERESTS

bp = Blueprint("users", __name__)
MAX_INTERESTS = 50
MAX_DRIVERS = 10


@bp.get("/v1/users/<user_id>/interests")
@read_access
def interests(user_id: str) -> Response:
    """Top brands and top categories with decayed weights, and the items that drove each (one read)."""
    limit = int_arg("k", 10, 1, MAX_INTERESTS)
    items = int_arg("items", 3, 0, MAX_DRIVERS)
    rows = graph().read(
        USER_INTERESTS,
        {
            "user_id": user_id,
            "now": int(now_ms()),
            "half_life_ms": settings().half_life_ms,
            "limit": limit,
            "items": items,
        },
    )
    grouped: dict[str, list[dict[str, object]]] = {"Brand": [], "Category": []}
    for row in rows:
        grouped[row["kind"]].append(
            {
                "id": row["id"],
                "name": row["name"],
                "weight": round(float(row["weight"] or 0.0), 6),
                "events": int(row["events"] or 0),
                "last_ts": row["last_ts"],
                "items": [
                    {"item_id": d["id"], "title": d["title"], "weight": round(float(d["weight"] or 0.0), 6)}
                    for d in row["drivers"]
                    if d["id"] is not None
                ],
            }
        )
    for entries in grouped.values():
        entries.sort(key=lambda e: (-e["weight"], e["id"]))  # type: ignore[operator]
    return jsonify(user_id=user_id, brands=grouped["Brand"], categories=grouped["Category"])


@bp.delete("/v1/users/<user_id>")
@write_access
def erase_user(user_id: str) -> Response:
    """Erase a user: the node, every edge and embedding, and their share of popularity (one statement)."""
    summary = graph().write(ERASE_USER, {"user_id": user_id, "now": int(now_ms())})
    if not summary.rows:
        raise ApiError(404, "not_found", f"no user with id {user_id!r}", field="user_id")
    row = summary.rows[0]
    return jsonify(
        user_id=user_id,
        erased=True,
        removed={
            "user": summary.nodes_deleted,
            "relationships": summary.relationships_deleted,
            "interactions": int(row["interactions"]),
            "interests": int(row["interests"]),
            "embeddings": int(row["embeddings"]),
        },
        popularity_adjusted_items=int(row["popularity_adjusted"]),
    )
