"""Query and path parameters: the 400 that names a bad one."""

from __future__ import annotations

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from app.errors import ApiError
from app.schemas import PATH_ID
from kgrec.field_types import shown, string_reason


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


def checked_path_id(name: str, value: str) -> str:
    """A path id that follows the id rule, or a 400 naming the path parameter and showing the value."""
    try:
        return PATH_ID.validate_python(value)
    except ValidationError as exc:
        reason = string_reason(exc.errors(include_url=False)[0])
        raise ApiError(400, "bad_request", f"{name} {reason}", field=name) from None
