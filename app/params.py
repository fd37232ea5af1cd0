"""Query and path parameters: how they are read from the URL, and the 400 that names a bad one."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from app.errors import ApiError
from app.schemas import PATH_ID
from kgrec.field_types import shown, string_reason
from kgrec.limits import stored_id_problem

_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _detail(name: str, error: ErrorDetails) -> str:
    kind, value, context = error["type"], error.get("input"), error.get("ctx") or {}
    if kind.startswith("string_"):
        return f"{name} {string_reason(error)}"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{name} must be an integer, not {shown(value)}"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"{name} must be a finite number, not {shown(value)}"
    if kind == "greater_than_equal":
        return f"{name} must be at least {context['ge']:g}, not {shown(value)}"
    if kind == "less_than_equal":
        return f"{name} must be at most {context['le']:g}, not {shown(value)}"
    if kind == "literal_error":
        return f"{name} must be one of {context['expected']}, not {shown(value)}"
    if kind == "extra_forbidden":
        return f"{name} is not a parameter of this endpoint (got {shown(value)})"
    if "field" in context:  # a rule over several parameters names the one to change
        return error["msg"]
    return f"{name} {error['msg']}, not {shown(value)}"


def _first_problem(errors: list[ErrorDetails]) -> tuple[str, ErrorDetails]:
    # An optional value is a union of "" (absent) and the real type: explain the real type's complaint.
    first = errors[0]
    name = str(first["loc"][0]) if first["loc"] else str((first.get("ctx") or {}).get("field", "query"))
    same = [e for e in errors if e["loc"][:1] == first["loc"][:1]]
    return name, same[-1]


def bad_parameter(exc: ValidationError) -> ApiError:
    """The 400 for the first invalid query parameter, naming it in ``field`` and ``detail``."""
    name, error = _first_problem(exc.errors(include_url=False))
    return ApiError(400, "bad_request", _detail(name, error), field=name)


def checked_path_id(name: str, value: str, *, stored: bool = False) -> str:
    """A path id that follows the id rule, or a 400 naming the path parameter and showing the value;
    ``stored``: any id the graph may hold (:func:`kgrec.limits.stored_id_problem`), for the routes that
    remove what is stored (:data:`app.raw_path.STORED_ID_ROUTES`: a user's erasure, an item's
    delisting, a rule's deletion)."""
    if stored and stored_id_problem(value) is None:
        return value
    try:
        return PATH_ID.validate_python(value)
    except ValidationError as exc:
        reason = string_reason(exc.errors(include_url=False)[0])
        raise ApiError(400, "bad_request", f"{name} {reason}", field=name) from None


def percent_decoded(raw: str, field: str, what: str | None = None, *, form: bool = False) -> str:
    """``raw`` percent-decoded as UTF-8 (``form``: "+" is a space, as HTML forms send it), or a 400
    naming ``field`` (``what`` in the detail, default ``field``) and showing ``raw`` as it was sent.

    Every text decodes one way: a "%" without two hex digits, or bytes that are no UTF-8, are
    refused rather than kept or replaced (which would read different texts as one id).
    """
    what = what or field
    if _BAD_ESCAPE.search(raw):
        detail = f"{what} has a '%' that is not followed by two hex digits (got {shown(raw)})"
        raise ApiError(400, "bad_request", detail, field=field)
    try:
        return unquote_to_bytes(raw.replace("+", " ") if form else raw).decode("utf-8")
    except UnicodeDecodeError:
        detail = f"{what} is not UTF-8 once percent-decoded (got {shown(raw)})"
        raise ApiError(400, "bad_request", detail, field=field) from None


def query_values(query_string: bytes) -> dict[str, str]:
    """The query string's parameters, percent-decoded; a 400 for one given twice or not UTF-8."""
    given: dict[str, list[str]] = {}
    for pair in query_string.decode("latin-1").split("&"):  # WSGI's raw bytes, ASCII in practice
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition("=")
        name = percent_decoded(raw_name, raw_name, "a query parameter's name", form=True)
        given.setdefault(name, []).append(percent_decoded(raw_value, name, form=True))
    for name, values in given.items():
        if len(values) > 1:
            listed = ", ".join(shown(v) for v in values)
            detail = f"{name} is given {len(values)} times ({listed}); give it once"
            raise ApiError(400, "bad_request", detail, field=name)
    return {name: values[0] for name, values in given.items()}
