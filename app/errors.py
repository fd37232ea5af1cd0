"""JSON errors: ``{error, detail, field?}`` with the right status, never a traceback."""

from __future__ import annotations

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from kgrec.gateway import GraphUnavailable

RETRY_AFTER_S = 5


def error_response(status: int, error: str, detail: str, field: str | None = None) -> Response:
    """Build a JSON error response."""
    body = {"error": error, "detail": detail}
    if field is not None:
        body["field"] = field
    response = jsonify(body)
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    """Map graph outages to 503 + Retry-After and every HTTP error to JSON."""

    @app.errorhandler(GraphUnavailable)
    def graph_unavailable(exc: GraphUnavailable) -> Response:
        response = error_response(503, "graph_unavailable", "the graph database is unavailable; retry later")
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return error_response(
            exc.code or 500, (exc.name or "error").lower().replace(" ", "_"), exc.description or ""
        )

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error")
        return error_response(500, "internal_error", "an internal error occurred")
