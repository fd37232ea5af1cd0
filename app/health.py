"""Liveness, readiness and graph statistics. The probes stay open even when reads need a key."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.endpoints import read_endpoint
from app.graph import serving
from app.openapi import api, responses
from app.schemas import Error, GraphStats, Readiness, Status

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@api.validate(resp=responses(Status, "up"))
def healthz() -> Response:
    """The process is up."""
    return jsonify(status="ok")


@bp.get("/readyz")
@api.validate(
    resp=responses(Readiness, "ready", HTTP_503=(Error, "the graph is unreachable or no model is active"))
)
def readyz() -> Response:
    """The graph is reachable and a model is active."""
    return jsonify(serving().readiness())


@read_endpoint(bp, "/v1/graph/stats", GraphStats, "counts")
def graph_stats() -> Response:
    """Node counts per label and relationship counts per type."""
    return jsonify(serving().graph_stats())
