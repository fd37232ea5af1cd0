"""Validation of behaviour events, shared by ``POST /v1/events`` and ``kgrec events import``.

A batch is validated as a whole: every problem is reported as
``{index, field, reason}`` and a batch with any problem writes nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from graph_schema.allow_list import BEHAVIOURS
from kgrec.datasets.records import parse_timestamp_ms

MAX_BATCH = 1_000
MAX_ID_LENGTH = 256
MAX_TEXT_LENGTH = 1_000
MAX_CATEGORY_DEPTH = 10
EVENT_FIELDS = frozenset({"event_id", "user_id", "item_id", "type", "ts", "value", "session_id", "item"})
ITEM_FIELDS = frozenset({"brand", "category", "title", "price"})


@dataclass(frozen=True)
class ItemInfo:
    """Catalogue facts an event may carry about its item."""

    brand: str | None = None
    categories: tuple[str, ...] = ()
    title: str | None = None
    price: float | None = None


@dataclass(frozen=True)
class Event:
    """One valid behaviour event (ts in epoch milliseconds)."""

    event_id: str
    user_id: str
    item_id: str
    type: str
    ts: int
    value: float | None = None
    session_id: str | None = None
    item: ItemInfo | None = None

    def content_key(self) -> tuple[Any, ...]:
        """Everything but the event id: two events with the same key are exact duplicates."""
        return (self.user_id, self.item_id, self.type, self.ts, self.value, self.session_id)


@dataclass(frozen=True)
class FieldError:
    """One problem in a batch: which event, which field, why."""

    index: int
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the 422 response."""
        return {"index": self.index, "field": self.field, "reason": self.reason}


class _Invalid(Exception):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def _identifier(raw: Mapping[str, Any], field: str, required: bool = True) -> str | None:
    value = raw.get(field)
    if value is None:
        if required:
            raise _Invalid(field, "is required")
        return None
    if not isinstance(value, str):
        raise _Invalid(field, f"must be a string, not {type(value).__name__}")
    if not value.strip():
        raise _Invalid(field, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise _Invalid(field, f"must be at most {MAX_ID_LENGTH} characters (got {len(value)})")
    if any(ord(ch) < 32 for ch in value):
        raise _Invalid(field, "must not contain control characters")
    return value


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(field, f"must be a number, not {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise _Invalid(field, "is too large") from None
    if not math.isfinite(number):
        raise _Invalid(field, f"must be a finite number (got {value!r})")
    return number


def _timestamp(value: Any, now_ms: int, max_skew_ms: float) -> int:
    if value is None:
        raise _Invalid("ts", "is required")
    if isinstance(value, bool):
        raise _Invalid("ts", "must be epoch milliseconds or an ISO-8601 string")
    if isinstance(value, int):
        ts = value
    elif isinstance(value, str):
        try:
            ts = parse_timestamp_ms(value) if not value.strip().lstrip("-").isdigit() else int(value)
        except ValueError:
            raise _Invalid("ts", f"{value!r} is not epoch milliseconds or ISO-8601") from None
    else:
        raise _Invalid("ts", f"must be epoch milliseconds (integer), not {type(value).__name__}")
    if ts < 0:
        raise _Invalid("ts", f"{ts} is before 1970")
    if ts > now_ms + max_skew_ms:
        raise _Invalid(
            "ts", f"{ts} is in the future (more than {max_skew_ms / 1000:.0f}s ahead of the server)"
        )
    return ts


def _item_info(value: Any) -> ItemInfo | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _Invalid("item", f"must be an object, not {type(value).__name__}")
    unknown = sorted(set(value) - ITEM_FIELDS)
    if unknown:
        raise _Invalid(f"item.{unknown[0]}", "is not a known item field")
    brand = _identifier(value, "brand", required=False) if "brand" in value else None
    raw_category = value.get("category")
    if raw_category is None:
        categories: tuple[str, ...] = ()
    elif isinstance(raw_category, str):
        categories = (_identifier(value, "category"),)  # type: ignore[assignment]
    elif isinstance(raw_category, list):
        if not raw_category or len(raw_category) > MAX_CATEGORY_DEPTH:
            raise _Invalid("item.category", f"must list 1 to {MAX_CATEGORY_DEPTH} categories")
        categories = tuple(_identifier({"c": c}, "c") for c in raw_category)  # type: ignore[misc]
    else:
        raise _Invalid("item.category", "must be a category id or a list of ids, general to specific")
    title = value.get("title")
    if title is not None and (not isinstance(title, str) or len(title) > MAX_TEXT_LENGTH):
        raise _Invalid("item.title", f"must be a string of at most {MAX_TEXT_LENGTH} characters")
    price = value.get("price")
    if price is not None:
        price = _number(price, "item.price")
        if price < 0:
            raise _Invalid("item.price", f"must not be negative (got {price})")
    return ItemInfo(brand=brand, categories=categories, title=title, price=price)


def _event(raw: Any, now_ms: int, max_skew_ms: float) -> Event:
    if not isinstance(raw, Mapping):
        raise _Invalid("event", f"must be an object, not {type(raw).__name__}")
    unknown = sorted(set(raw) - EVENT_FIELDS)
    if unknown:
        raise _Invalid(unknown[0], "is not a known event field")
    event_id = _identifier(raw, "event_id")
    user_id = _identifier(raw, "user_id")
    item_id = _identifier(raw, "item_id")
    kind = raw.get("type")
    if kind not in BEHAVIOURS:
        raise _Invalid("type", f"{kind!r} is not one of {', '.join(BEHAVIOURS)}")
    ts = _timestamp(raw.get("ts"), now_ms, max_skew_ms)
    value = None if raw.get("value") is None else _number(raw["value"], "value")
    session_id = _identifier(raw, "session_id", required=False)
    try:
        item = _item_info(raw.get("item"))
    except _Invalid as exc:
        field = exc.field if exc.field.startswith("item") else f"item.{exc.field}"
        raise _Invalid(field, exc.reason) from None
    return Event(event_id, user_id, item_id, kind, ts, value, session_id, item)  # type: ignore[arg-type]


def validate_batch(
    raw_events: Any, *, max_skew_s: float, now_ms: int | None = None, max_batch: int = MAX_BATCH
) -> tuple[list[Event], list[FieldError]]:
    """Validate a whole batch; returns the events and every error (events are only usable if no errors)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if not isinstance(raw_events, Sequence) or isinstance(raw_events, (str, bytes)):
        return [], [FieldError(-1, "events", "must be a list of event objects")]
    if not raw_events:
        return [], [FieldError(-1, "events", "must contain at least one event")]
    if len(raw_events) > max_batch:
        return [], [FieldError(-1, "events", f"at most {max_batch} events per batch (got {len(raw_events)})")]
    checked = validate_each(raw_events, max_skew_s=max_skew_s, now_ms=now_ms)
    return (
        [c for c in checked if isinstance(c, Event)],
        [c for c in checked if isinstance(c, FieldError)],
    )


def validate_each(raw_events: Sequence[Any], *, max_skew_s: float, now_ms: int) -> list[Event | FieldError]:
    """Validate events one by one: the Event, or the FieldError at the same position."""
    checked: list[Event | FieldError] = []
    for index, raw in enumerate(raw_events):
        try:
            checked.append(_event(raw, now_ms, max_skew_s * 1000))
        except _Invalid as exc:
            checked.append(FieldError(index, exc.field, exc.reason))
    return checked
