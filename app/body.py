"""Strict JSON request bodies: UTF-8 only, no NaN/Infinity, bounded nesting."""

from __future__ import annotations

import json
from typing import Any

from flask import request

from app.errors import ApiError

MAX_INT_DIGITS = 4_300  # Python's own limit for converting text to an integer


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def has_body() -> bool:
    """Whether the request carries a body at all (a length, or chunks): an optional body may be left out."""
    return bool(request.content_length or request.headers.get("Transfer-Encoding"))


def json_body() -> Any:
    """The request's JSON document, or a 400/415 ApiError that says what is wrong."""
    if not (request.mimetype or "").endswith("json"):
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = request.get_data(cache=False)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_request", f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_int=_bounded_int)
    except RecursionError:
        raise ApiError(400, "bad_request", "the JSON document is nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {exc}") from None


def _bounded_int(digits: str) -> int:
    # Python refuses to convert an integer of over 4,300 digits, in its own words; say it in ours.
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"a number has {len(digits.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(digits)
