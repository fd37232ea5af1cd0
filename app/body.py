"""Strict JSON request bodies: UTF-8 only, no NaN/Infinity, bounded nesting."""

from __future__ import annotations

import json
import sys
from typing import Any

from flask import request

from app.errors import ApiError


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_body(*, optional: bool = False) -> Any:
    """The request's JSON document, or a 400/415 ApiError that says what is wrong.

    ``optional``: a request without a body (none at all, or an empty one) reads as ``{}``.
    """
    raw = request.get_data(cache=False)
    if optional and not raw:
        return {}
    if not (request.mimetype or "").endswith("json"):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_request", f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_int=_bounded_int)
    except TooManyDigits as exc:
        raise ApiError(400, "bad_request", f"the body has {exc}") from None
    except RecursionError:
        raise ApiError(400, "bad_request", "the JSON document is nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {exc}") from None


class TooManyDigits(ValueError):
    """A JSON integer longer than Python converts (its message: "a number of N digits (at most M)")."""


def _bounded_int(digits: str) -> int:
    # Python refuses to convert a very long integer, in its own words; say it in ours.
    limit, size = sys.get_int_max_str_digits(), len(digits.lstrip("-"))
    if limit and size > limit:
        raise TooManyDigits(f"a number of {size} digits (at most {limit})")
    return int(digits)
