"""JSON errors: ``{error, detail, field?}`` with the right status, never a traceback."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from kgrec.errors import MigrationsPending, NoActiveModel, NotFound
from kgrec.gateway import GraphTimeout, GraphUnavailable
from kgrec.impressions import ImpressionsUnavailable
from kgrec.job_queue import JobQueueUnavailable
from kgrec.migrations import MigrationError

RETRY_AFTER_S = 5


class ApiError(Exception):
    """An error the API reports to the client as JSON."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        field: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.field = field
        self.headers = headers or {}
        self.extra = extra


def error_response(status: int, error: str, detail: str, field: str | None = None, **extra: Any) -> Response:
    """Build a JSON error response."""
    body: dict[str, Any] = {"error": error, "detail": detail}
    if field is not None:
        body["field"] = field
    body.update(extra)
    response = jsonify(body)
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    """Map API errors, graph and impression-store outages (503 + Retry-After) and every HTTP error to JSON."""

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.error, exc.detail, exc.field, **exc.extra)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(NoActiveModel)
    def no_active_model(exc: NoActiveModel) -> Response:
        return error_response(503, "no_model", exc.detail)

    @app.errorhandler(NotFound)
    def not_found(exc: NotFound) -> Response:
        return error_response(404, "not_found", exc.detail, exc.field)

    def retry_later(error: str, detail: str) -> Response:
        response = error_response(503, error, detail)
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response

    @app.errorhandler(MigrationsPending)
    def migrations_pending(exc: MigrationsPending) -> Response:
        return retry_later("migrations_pending", exc.detail)

    @app.errorhandler(MigrationError)
    def migrations_changed(exc: MigrationError) -> Response:
        # An applied migration's file changed (or one is malformed): not ready, and waiting will not
        # mend it, so no Retry-After; the detail names the files.
        return error_response(503, "migrations_changed", str(exc))

    @app.errorhandler(GraphUnavailable)
    def graph_unavailable(exc: GraphUnavailable) -> Response:
        # Counted here, not from the 503: an impression-store outage is another error. Imported
        # here because app.metrics imports the views, which import this module.
        from app.metrics import GRAPH_ERRORS

        GRAPH_ERRORS.inc()
        if isinstance(exc, GraphTimeout):  # the server may still apply a write it did not confirm
            return retry_later(
                "graph_unavailable",
                f"{exc}; a write may still be applied, and sending the same request again is safe; "
                "retry later",
            )
        return retry_later(
            "graph_unavailable", "the graph database is unavailable; nothing was written, retry later"
        )

    @app.errorhandler(JobQueueUnavailable)
    def queue_unavailable(exc: JobQueueUnavailable) -> Response:
        return retry_later("queue_unavailable", f"{exc}; retry later")

    @app.errorhandler(ImpressionsUnavailable)
    def impressions_unavailable(exc: ImpressionsUnavailable) -> Response:
        return retry_later("impressions_unavailable", exc.answer)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        error = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, error, exc.description or "")
        # Keep the exception's own headers (Allow on a 405, for one), not its HTML body's.
        for name, value in exc.get_headers():
            if name.lower() not in ("content-type", "content-length"):
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        app.logger.exception("unhandled error")
        return error_response(500, "internal_error", "an internal error occurred")
