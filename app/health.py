"""Liveness, readiness and graph statistics. The probes stay open even when reads need a key."""

from __future__ import annotations

from typing import Literal

from flask import Blueprint, Response, jsonify
from pydantic import Field

from app.endpoints import read_endpoint
from app.graph import serving, settings
from app.impressions import impression_store
from app.openapi import api, responses
from app.schemas import Error, GraphStats, Readiness, Status
from kgrec.migrations import PENDING_RECHECK_S

bp = Blueprint("health", __name__)


class ReadinessWithImpressions(Readiness):
    impressions: Literal["ok", "off"] = Field(
        description="the impression store answers (`off`: recording is switched off, not checked)"
    )


@bp.get("/healthz")
@api.validate(resp=responses(Status, "up"))
def healthz() -> Response:
    """The process is up."""
    return jsonify(status="ok")


@bp.get("/readyz")
@api.validate(
    resp=responses(
        ReadinessWithImpressions,
        "ready",
        HTTP_503=(
            Error,
            "the graph (`graph_unavailable`) or the impression store (`impressions_unavailable`) is "
            "unreachable, the graph lacks migrations this version reads by (`migrations_pending`, "
            f"naming them: run `kgrec migrate`; re-checked every {PENDING_RECHECK_S:g} s until none is "
            "left), an applied migration's file has changed (`migrations_changed`, naming it: restore "
            "it), or no model is active (`no_model`)",
        ),
    )
)
def readyz() -> Response:
    """The graph answers and is migrated, a model is active, and (recording) the impression store answers."""
    ready = serving().readiness()
    if settings().record_impressions:
        # Not ready while the store is down, although recommendations are still journalled: impression
        # lookups, attribution and experiment results fail, and a process that never read the running
        # experiment cannot serve a user. The 503 says which store (impressions_unavailable).
        impression_store().ping()
    return jsonify({**ready, "impressions": "ok" if settings().record_impressions else "off"})


@read_endpoint(bp, "/v1/graph/stats", GraphStats, "counts")
def graph_stats() -> Response:
    """Node counts per label and relationship counts per type."""
    return jsonify(serving().graph_stats())
