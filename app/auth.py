"""API keys: ``Authorization: Bearer <key>``, compared in constant time, never logged."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from flask import current_app, request

from app.errors import ApiError
from app.graph import settings

F = TypeVar("F", bound=Callable[..., Any])


def _presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def key_is_valid(presented: str) -> bool:
    """Whether ``presented`` is one of the configured API keys (constant time)."""
    # Compare against every key so the time taken does not reveal which one matched.
    matched = False
    for key in settings().api_keys:
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    return matched


def check_api_key() -> None:
    """Raise a 401 ApiError unless the request carries a configured API key."""
    presented = _presented_key()
    if presented is None:
        raise ApiError(401, "unauthorized", "an API key is required: Authorization: Bearer <key>")
    if not key_is_valid(presented):
        current_app.logger.warning("request with an invalid API key refused")
        raise ApiError(401, "unauthorized", "the API key is not valid")


def write_access(view: F) -> F:
    """Decorator: the endpoint changes data and always needs an API key."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        check_api_key()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def read_access(view: F) -> F:
    """Decorator: open unless KGREC_READ_REQUIRES_KEY is set."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if settings().read_requires_key:
            check_api_key()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
