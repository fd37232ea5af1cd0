"""``GET /metrics``: Prometheus text format.

Request counts and latency histograms per endpoint (the route template, so ids
do not explode the label set), graph errors, and the active model version.
Under gunicorn every worker is its own process, so the metrics use
prometheus_client's multiprocess mode when ``PROMETHEUS_MULTIPROC_DIR`` is set
(``kgrec serve`` sets it, see :mod:`kgrec_cli.gunicorn_conf`).
"""

from __future__ import annotations

import re
import time

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.openapi import api, responses
from graph_schema.statements.models import ACTIVE_VERSION
from kgrec.gateway import GraphUnavailable
from kgrec.supervision import restart_counts

bp = Blueprint("metrics", __name__)

REQUESTS = Counter("kgrec_http_requests_total", "HTTP requests answered", ["method", "endpoint", "status"])
LATENCY = Histogram(
    "kgrec_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
GRAPH_ERRORS = Counter("kgrec_graph_errors_total", "Requests that failed because the graph was unavailable")


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CONVERTER = re.compile(r"<(?:[^:>]+:)?([^>]+)>")


def _endpoint() -> str:
    """The route as the OpenAPI document writes it: /v1/users/{user_id}/recommendations."""
    return _CONVERTER.sub(r"{\1}", request.url_rule.rule) if request.url_rule is not None else "unmatched"


def install_metrics(app: Flask) -> None:
    """Time every request and count it by endpoint and status."""

    @app.before_request
    def _start_timer() -> None:
        g.kgrec_started = time.perf_counter()

    @app.after_request
    def _record(response: Response) -> Response:
        started = g.pop("kgrec_started", None)
        endpoint = _endpoint()
        if started is not None:
            LATENCY.labels(endpoint).observe(time.perf_counter() - started)
        method = request.method if request.method in KNOWN_METHODS else "other"  # any client can invent one
        REQUESTS.labels(method, endpoint, str(response.status_code)).inc()
        return response

    app.register_blueprint(bp)


def _model_lines() -> str:
    from app.graph import graph

    try:
        rows = graph().read(ACTIVE_VERSION)
    except GraphUnavailable:
        return "# graph unavailable: active model version unknown\n"
    lines = [
        "# HELP kgrec_model_info The active model version (value 1).",
        "# TYPE kgrec_model_info gauge",
    ]
    for row in rows:
        version = str(row["id"]).replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'kgrec_model_info{{version="{version}"}} 1')
        lines.append("# TYPE kgrec_model_activated_at_ms gauge")
        lines.append(f"kgrec_model_activated_at_ms {int(row['activated_at'] or 0)}")
    return "\n".join(lines) + "\n"


def _restart_lines() -> str:
    from app.graph import settings

    lines = [
        "# HELP kgrec_process_restarts_total Restarts of a process by its `kgrec up` supervisor.",
        "# TYPE kgrec_process_restarts_total counter",
    ]
    for process, count in sorted(restart_counts(settings().data_dir).items()):
        lines.append(f'kgrec_process_restarts_total{{process="{process}"}} {count}')
    return "\n".join(lines) + "\n"


@bp.get("/metrics")
@api.validate(resp=responses(None, "Prometheus text format"))
def metrics() -> Response:
    """All metrics of all worker processes, plus the active model version."""
    from app.graph import settings

    if settings().prometheus_multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        text = generate_latest(REGISTRY)
    # content_type, not mimetype: CONTENT_TYPE_LATEST carries its charset, which mimetype would repeat
    return Response(text.decode() + _model_lines() + _restart_lines(), content_type=CONTENT_TYPE_LATEST)
