"""``GET /v1/jobs/{id}``: the state and progress of a background job (training)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.endpoints import read_endpoint
from app.graph import settings
from app.schemas import QUEUE_DOWN, Error, Job
from kgrec import job_queue

bp = Blueprint("jobs", __name__)


@read_endpoint(
    bp,
    "/v1/jobs/<job_id>",
    Job,
    "the job",
    {
        "HTTP_404": (Error, "no job was queued under this id (or its record expired)"),
        "HTTP_503": (Error, QUEUE_DOWN),
    },
    job_id="the job id `kgrec train` printed",
)
def job_status(job_id: str) -> Response:
    """State (PENDING, STARTED, PROGRESS, SUCCESS, FAILURE), stage and percent of a job."""
    return jsonify(job_queue.job_status(job_queue.job_client(settings()), job_id))
