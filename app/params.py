"""Query-string parameters: parsed strictly, and refused with a 400 that names the parameter."""

from __future__ import annotations

import math
from dataclasses import dataclass

from flask import request

from app.errors import ApiError

MAX_ID_LENGTH = 256
MAX_PRICE = 1e12


def _bad(name: str, detail: str) -> ApiError:
    return ApiError(400, "bad_request", detail, field=name)


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """An integer in [low, high]."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad(name, f"{name} must be an integer, not {raw[:40]!r}") from None
    if not low <= value <= high:
        raise _bad(name, f"{name} must be between {low} and {high}, not {value}")
    return value


def float_arg(name: str, low: float = 0.0, high: float = MAX_PRICE) -> float | None:
    """A finite number in [low, high], or None when absent."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise _bad(name, f"{name} must be a number, not {raw[:40]!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise _bad(name, f"{name} must be a finite number between {low:g} and {high:g}, not {raw[:40]!r}")
    return value


def bool_arg(name: str, default: bool = False) -> bool:
    """``true``/``false`` (also 1/0, yes/no)."""
    raw = request.args.get(name)
    if raw is None:
        return default
    lowered = raw.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise _bad(name, f"{name} must be true or false, not {raw[:40]!r}")


def choice_arg(name: str, default: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``."""
    raw = request.args.get(name, default)
    if raw not in choices:
        raise _bad(name, f"{name} must be one of {', '.join(choices)}, not {raw[:40]!r}")
    return raw


def id_arg(name: str) -> str | None:
    """An id-like string (1..256 characters), or None when absent or empty."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    check_id(name, raw)
    return raw


def check_id(name: str, value: str) -> str:
    """Refuse ids that are too long or contain control characters."""
    if len(value) > MAX_ID_LENGTH:
        raise _bad(name, f"{name} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise _bad(name, f"{name} must not contain control characters")
    return value


@dataclass(frozen=True)
class ItemFilters:
    """The catalogue filters shared by recommendations and similar items."""

    brand: str | None
    category: str | None
    min_price: float | None
    max_price: float | None

    @classmethod
    def from_request(cls) -> ItemFilters:
        """Read ``brand``, ``category``, ``min_price`` and ``max_price``."""
        min_price, max_price = float_arg("min_price"), float_arg("max_price")
        if min_price is not None and max_price is not None and min_price > max_price:
            raise _bad("min_price", f"min_price ({min_price:g}) is above max_price ({max_price:g})")
        return cls(id_arg("brand"), id_arg("category"), min_price, max_price)

    def as_dict(self) -> dict[str, object]:
        """The filters that were given."""
        return {k: v for k, v in self.__dict__.items() if v is not None}
