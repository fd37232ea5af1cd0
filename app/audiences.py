"""Audiences for marketing: ``GET /v1/audiences`` and ``POST /v1/audiences/export`` (CSV)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from flask import Blueprint, Response, current_app, jsonify, stream_with_context
from pydantic import ValidationError

from app.body import json_body
from app.catalogue import BODY_ERRORS
from app.endpoints import read_endpoint, write_endpoint
from app.errors import ApiError
from app.graph import serving
from app.schemas import Audience as AudienceView
from app.schemas import AudienceConditions, AudienceCsv, AudienceQuery, Error
from kgrec.audiences import CSV_COLUMNS, Audience, AudienceError, audience_page, iter_audience
from kgrec.catalogue import error_problems
from kgrec.field_types import shown
from kgrec.gateway import GraphUnavailable

bp = Blueprint("audiences", __name__)


def _refuse(exc: AudienceError) -> ApiError:
    named = exc.field if exc.value is None else f"{exc.field}={shown(exc.value)}"
    return ApiError(400, "invalid_parameter", f"{named}: {exc.detail}", field=exc.field)


def _audience(conditions: AudienceConditions) -> Audience:
    try:
        return Audience.from_conditions(
            conditions.model_dump(), conditions.min_weight, conditions.active_within_days
        )
    except AudienceError as exc:
        raise _refuse(exc) from exc


@read_endpoint(bp, "/v1/audiences", AudienceView, "one page of the audience", lists_users=True)
def audience(query: AudienceQuery) -> Response:
    """The users whose decayed interest in one brand, category, topic or item is strongest.

    Give exactly one of `brand`, `category`, `topic`, `item`. Weights are decayed to `as_of`, which
    the cursor keeps, so paging through an audience neither repeats nor skips a user. It lists users:
    once KGREC_ADMIN_KEYS is set, only an admin key reads it, as only one exports it.
    """
    core = serving()
    try:
        page = audience_page(
            core.gateway, core.settings, _audience(query), limit=query.limit, cursor=query.cursor
        )
    except AudienceError as exc:
        raise _refuse(exc) from exc
    return jsonify(page)


# A cell a spreadsheet would read as a formula (OWASP, "CSV injection"): quoted with a leading '.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """``value`` as an export cell: empty for None, a text that opens like a formula behind a '."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _csv_lines(members: Iterator[dict]) -> Iterator[str]:
    try:
        yield from _csv_chunks(members)
    except GraphUnavailable:
        # The 200 and part of the body are sent: re-raised, the server drops the connection without
        # the chunked body's last chunk, so the client sees an incomplete answer, never a short CSV
        # that looks whole. Counted here: the error handler that counts a 503 never sees it.
        from app.metrics import GRAPH_ERRORS  # app.metrics imports the views

        GRAPH_ERRORS.inc()
        current_app.logger.warning("audience export cut short: the graph became unavailable")
        raise


def _csv_chunks(members: Iterator[dict]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for member in members:
        writer.writerow([csv_cell(member[column]) for column in CSV_COLUMNS])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


@write_endpoint(
    bp,
    "POST",
    "/v1/audiences/export",
    AudienceCsv,
    "the whole audience as CSV (text/csv), streamed",
    {**BODY_ERRORS, "HTTP_400": (Error, "no target or several"), "HTTP_422": (Error, "an invalid condition")},
    body=AudienceConditions,
)
def export_audience() -> Response:
    """Stream every member of the audience as CSV, strongest first (an admin operation: it lists users).

    The graph is read for the size and the first page before the answer starts, so a graph that is
    down is a 503 with Retry-After. If it goes down during the export, the connection is dropped
    before the chunked body's end: an HTTP client reports an incomplete answer (curl: exit 18;
    requests: ChunkedEncodingError), so a cut export never passes for a whole one.
    """
    core = serving()
    try:
        conditions = AudienceConditions.model_validate(json_body())
    except ValidationError as exc:
        problems = error_problems(exc, indexed=False)
        raise ApiError(
            422,
            "validation_failed",
            f"{len(problems)} problem(s) in the conditions",
            errors=[p.as_dict() for p in problems],
        ) from exc
    target = _audience(conditions)
    members = iter_audience(core.gateway, core.settings, target)
    return Response(
        stream_with_context(_csv_lines(members)),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="audience.csv"'},
    )
