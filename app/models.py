"""Model versions: ``GET /v1/models``, ``POST /v1/models/{version}/promote``, ``POST /v1/models/train``."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic import ValidationError

from app.body import json_body
from app.catalogue import BODY_ERRORS
from app.endpoints import read_endpoint, write_endpoint
from app.errors import ApiError
from app.graph import graph, serving, settings
from app.model_schemas import ModelVersionList, ModelVersionView, TrainJob, TrainRequest
from app.schemas import QUEUE_DOWN, Error
from kgrec import job_queue
from kgrec.catalogue import error_problems
from kgrec.model_versions import VersionNotReady, list_versions

bp = Blueprint("models", __name__)


@read_endpoint(bp, "/v1/models", ModelVersionList, "every model version, newest first")
def get_models() -> Response:
    """Model versions with status, validation metrics, promotion-gate decisions and artifact size."""
    return jsonify({"versions": list_versions(graph(), settings().data_dir)})


@write_endpoint(
    bp,
    "POST",
    "/v1/models/<version>/promote",
    ModelVersionView,
    "now active; this process serves it from its next request, every other within about a second",
    {
        "HTTP_404": (Error, "no such version"),
        "HTTP_409": (Error, "the version is still being written, or its artifact file is missing"),
    },
    version="the model version",
)
def promote_model(version: str) -> Response:
    """Make this version the active one, in one statement (a candidate, or a retired one to roll back)."""
    try:
        return jsonify(serving().promote(version))
    except VersionNotReady as exc:
        raise ApiError(409, "conflict", exc.detail, "version") from None


@write_endpoint(
    bp,
    "POST",
    "/v1/models/train",
    TrainJob,
    "queued",
    {
        **BODY_ERRORS,
        "HTTP_422": (Error, "an invalid field (named in `field`)"),
        "HTTP_503": (Error, QUEUE_DOWN),
    },
    body=TrainRequest,
)
def train_model() -> Response:
    """Queue a training job (as `kgrec train` does); by default behind the promotion gate.

    The body may be left out (the defaults). Follow the job at `GET /v1/jobs/{id}`; its
    result's `gate` says whether the new version was promoted, and why.
    """
    options = _train_request()
    job_id = job_queue.enqueue(job_queue.job_client(settings()), job_queue.TRAIN, **options.model_dump())
    return jsonify({"id": job_id, "state": "PENDING", "status_url": f"/v1/jobs/{job_id}"})


def _train_request() -> TrainRequest:
    document: Any = json_body(optional=True)
    if not isinstance(document, dict):
        raise _refused("body", "must be a JSON object")
    try:
        return TrainRequest.model_validate(document)
    except ValidationError as exc:
        problem = error_problems(exc, indexed=False)[0]
        raise _refused(problem.field, problem.reason) from None


def _refused(field: str, reason: str) -> ApiError:
    return ApiError(
        422,
        "validation_failed",
        f"{field}: {reason}; nothing was queued",
        field,
        errors=[{"index": 0, "field": field, "reason": reason}],
    )
