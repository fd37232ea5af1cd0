"""Event file layouts for ``kgrec events import``: each turns one CSV row into an API-shaped event.

- ``rees46``: the public "eCommerce behavior data from multi-category store" columns
  ``event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session``;
  the dotted ``category_code`` becomes a category path (``electronics`` → ``electronics.smartphone``);
  ``event_time`` is UTC, as the data set states (``2019-10-01 00:00:00 UTC``; no offset reads as UTC).
- ``taobao``: Tianchi UserBehavior, no header: ``user_id,item_id,category_id,behavior,timestamp``
  (Unix seconds; behaviours pv, cart, fav, buy).
- ``csv``: a header naming kgrec's fields (``event_id,user_id,item_id,type,ts,value,session_id,
  brand,category,title,price,text,tag,query``; categories ``|``-separated, general to specific),
  renamed with ``--map column=field``; ``text`` (reviews), ``tag`` and ``query`` (searches, with an
  empty ``item_id``) carry language. ``ts`` is epoch milliseconds written as a number (a cell
  holds text, so digits here are the API's JSON number, :func:`kgrec.field_types.cell_time`) or the
  API's RFC 3339 date-time with an offset (:func:`kgrec.field_types.epoch_ms`); never Unix seconds.
- ``movielens-tags``: MovieLens ``tags.csv`` (``userId,movieId,tag,timestamp``, Unix seconds), one
  tag event per row.

Rows without an event id get a deterministic one from the file format and the row's
content, so importing the same file twice changes nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kgrec.datasets.records import parse_timestamp_ms, whole_seconds_ms
from kgrec.field_types import cell_time


class RowError(ValueError):
    """A row that cannot become an event (its reason is reported with the line number)."""


Converter = Callable[[Sequence[str]], dict[str, Any]]

REES46_COLUMNS = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)
TAOBAO_BEHAVIOURS = {"pv": "view", "cart": "cart", "fav": "fav", "buy": "purchase"}
CSV_FIELDS = (
    "event_id",
    "user_id",
    "item_id",
    "type",
    "ts",
    "value",
    "session_id",
    "brand",
    "category",
    "title",
    "price",
    "text",
    "tag",
    "query",
)
LANGUAGE_FIELDS = ("text", "tag", "query")
MOVIELENS_TAG_COLUMNS = ("userId", "movieId", "tag", "timestamp")


def row_event_id(prefix: str, fields: Sequence[str]) -> str:
    """A stable id for a row that has none: the same row always gets the same id."""
    digest = hashlib.blake2b("\x1f".join(fields).encode(), digest_size=12).hexdigest()
    return f"{prefix}:{digest}"


def _number(name: str, text: str) -> float | None:
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise RowError(f"{name} {text!r} is not a number") from None


def _timestamp(text: str) -> int:
    try:  # REES46 states its event_time is UTC ("2019-10-01 00:00:00 UTC")
        return parse_timestamp_ms(text, utc_without_offset=True)
    except ValueError as exc:
        raise RowError(f"time {exc}") from None


def _width(fields: Sequence[str], expected: int) -> None:
    if len(fields) != expected:
        raise RowError(f"expected {expected} fields, found {len(fields)}")


def rees46(fields: Sequence[str]) -> dict[str, Any]:
    """One rees46 row as an event."""
    _width(fields, len(REES46_COLUMNS))
    row = dict(zip(REES46_COLUMNS, fields, strict=True))
    code = row["category_code"].strip()
    parts = code.split(".") if code else []
    categories = [".".join(parts[: i + 1]) for i in range(len(parts))]
    if not categories and row["category_id"].strip():
        categories = [row["category_id"].strip()]
    item: dict[str, Any] = {"price": _number("price", row["price"])}
    if row["brand"].strip():
        item["brand"] = row["brand"].strip()
    if categories:
        item["category"] = categories
    event: dict[str, Any] = {
        "event_id": row_event_id("rees46", fields),
        "user_id": row["user_id"].strip(),
        "item_id": row["product_id"].strip(),
        "type": row["event_type"].strip(),
        "ts": _timestamp(row["event_time"]),
        "item": item,
    }
    if row["user_session"].strip():
        event["session_id"] = row["user_session"].strip()
    return event


def taobao(fields: Sequence[str]) -> dict[str, Any]:
    """One Tianchi UserBehavior row as an event."""
    _width(fields, 5)
    user_id, item_id, category_id, behaviour, timestamp = (f.strip() for f in fields)
    if behaviour not in TAOBAO_BEHAVIOURS:
        raise RowError(f"behavior {behaviour!r} is not one of {', '.join(TAOBAO_BEHAVIOURS)}")
    ts = whole_seconds_ms(timestamp)
    if ts is None:
        raise RowError(f"timestamp {timestamp!r} is not Unix seconds")
    event: dict[str, Any] = {
        "event_id": row_event_id("taobao", fields),
        "user_id": user_id,
        "item_id": item_id,
        "type": TAOBAO_BEHAVIOURS[behaviour],
        "ts": ts,
    }
    if category_id:
        event["item"] = {"category": [category_id]}
    return event


def movielens_tag(fields: Sequence[str]) -> dict[str, Any]:
    """One MovieLens ``tags.csv`` row as a tag event."""
    _width(fields, len(MOVIELENS_TAG_COLUMNS))
    user_id, movie_id, tag, timestamp = fields
    ts = whole_seconds_ms(timestamp)
    if ts is None:
        raise RowError(f"timestamp {timestamp!r} is not Unix seconds")
    return {
        "event_id": row_event_id("movielens-tag", fields),
        "user_id": user_id.strip(),
        "item_id": movie_id.strip(),
        "type": "tag",
        "ts": ts,
        "tag": tag,
    }


def csv_converter(header: Sequence[str], mapping: Mapping[str, str]) -> Converter:
    """A converter for kgrec's own CSV layout, after renaming columns with ``mapping``."""
    unknown = sorted(set(mapping.values()) - set(CSV_FIELDS))
    if unknown:
        raise ValueError(f"--map targets {', '.join(unknown)} are not kgrec fields ({', '.join(CSV_FIELDS)})")
    columns = [mapping.get(h.strip(), h.strip()) for h in header]
    missing = [f for f in ("user_id", "type", "ts") if f not in columns]
    if "item_id" not in columns and "query" not in columns:
        missing.append("item_id")
    if missing:
        raise ValueError(f"the CSV header lacks {', '.join(missing)} (use --map column=field)")

    def convert(fields: Sequence[str]) -> dict[str, Any]:
        _width(fields, len(columns))
        row = {c: v.strip() for c, v in zip(columns, fields, strict=True) if c in CSV_FIELDS}
        event: dict[str, Any] = {
            "event_id": row.get("event_id") or row_event_id("csv", fields),
            "user_id": row["user_id"],
            "type": row["type"],
            "ts": cell_time(row["ts"]),  # a number in the cell is epoch ms; text, the API's date-time
        }
        if row.get("item_id"):  # a search has none
            event["item_id"] = row["item_id"]
        event.update({name: row[name] for name in LANGUAGE_FIELDS if row.get(name)})
        if row.get("value"):
            event["value"] = _number("value", row["value"])
        if row.get("session_id"):
            event["session_id"] = row["session_id"]
        item: dict[str, Any] = {}
        if row.get("brand"):
            item["brand"] = row["brand"]
        if row.get("category"):
            item["category"] = [c.strip() for c in row["category"].split("|") if c.strip()]
        if row.get("title"):
            item["title"] = row["title"]
        if row.get("price"):
            item["price"] = _number("price", row["price"])
        if item:
            event["item"] = item
        return event

    return convert
