"""``GET /v1/jobs/{id}``: the state and progress of a background job (training)."""

from __future__ import annotations

import threading

from celery import Celery
from celery.result import AsyncResult
from flask import Blueprint, Response, jsonify

from app.auth import read_access
from app.graph import settings

bp = Blueprint("jobs", __name__)
_client: Celery | None = None
_lock = threading.Lock()


def celery_client() -> Celery:
    """A Celery client on the configured broker and result backend (one per process)."""
    global _client
    with _lock:
        if _client is None:
            from workers.celery_app import redis_urls

            broker, backend = redis_urls(settings())
            _client = Celery("kgrec-api", broker=broker, backend=backend)
        return _client


@bp.get("/v1/jobs/<job_id>")
@read_access
def job_status(job_id: str) -> Response:
    """State (PENDING, STARTED, PROGRESS, SUCCESS, FAILURE), stage and percent of a job."""
    result = AsyncResult(job_id, app=celery_client())
    body: dict[str, object] = {"id": job_id, "state": result.state}
    info = result.info
    if result.state == "PROGRESS" and isinstance(info, dict):
        body.update(stage=info.get("stage"), percent=info.get("percent"))
    elif result.state == "SUCCESS":
        body.update(percent=100.0, result=info)
    elif result.state == "FAILURE":
        body["error"] = str(info)
    return jsonify(body)
