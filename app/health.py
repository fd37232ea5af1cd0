"""Liveness, readiness and graph statistics. The probes stay open even when reads need a key."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.auth import read_access
from app.errors import ApiError
from app.graph import graph
from graph_schema.statements import admin
from graph_schema.statements.models import ACTIVE_VERSION

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """The graph answers and a model is active (an unreachable graph is a 503 through the error handler)."""
    gateway = graph()
    gateway.read(admin.PING)
    active = gateway.read(ACTIVE_VERSION)
    if not active:
        raise ApiError(503, "no_model", "the graph answers, but no model is active yet (run `kgrec train`)")
    return jsonify(status="ready", engine=gateway.engine, model_version=active[0]["id"])


@bp.get("/v1/graph/stats")
@read_access
def graph_stats() -> Response:
    """Node counts per label and relationship counts per type."""
    gateway = graph()
    return jsonify(
        nodes={r["label"]: int(r["count"]) for r in gateway.read(admin.NODE_COUNTS)},
        relationships={r["type"]: int(r["count"]) for r in gateway.read(admin.RELATIONSHIP_COUNTS)},
    )
