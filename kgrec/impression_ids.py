"""Recommendation ids, and the event fields that point back at an impression.

A ``recommendation_id`` is an RFC 9562 version-7 UUID made by the serving process when it
records the impression (kgrec/impressions.py): 48 bits of epoch milliseconds, then 74 random
bits, so ids cannot be guessed from their neighbours. The stream keeps the id with the
impression and ``kgrec:<graph>:impression:<id>`` names its entry.

Ids made by kgrec before the impression journal are version-8 UUIDs that encode the stream
entry id ``<ms>-<seq>`` and 44 random bits (the *tag*, stored with the entry): 48 bits ms |
4 bits version (8) | 12 tag bits | 2 bits variant (0b10) | 30 bits seq | 32 tag bits. They are
still looked up by their entry, the tag checked, until they pass retention.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from typing import Annotated, Any

from pydantic import Field, PlainValidator
from pydantic_core import PydanticCustomError

from kgrec.limits import MAX_K, MAX_OFFSET

TAG_BITS = 44
SEQ_BITS = 30
RANDOM_BITS = 74
POOL_BYTES = 1 << 16  # random bytes read at a time (about 6,500 ids)
MAX_POSITION = MAX_OFFSET + MAX_K  # the deepest rank a page can show (1 = the top)
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_UUID = re.compile(UUID_PATTERN)
UUID_FORMAT = {"format": "uuid"}


_random_pool = bytearray()
_random_lock = threading.Lock()


def _after_fork_in_child() -> None:
    """A child must never reuse its parent's random bytes, nor inherit its lock held."""
    global _random_lock
    _random_pool.clear()
    _random_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _random_bits() -> int:
    """74 random bits, from a pool refilled :data:`POOL_BYTES` at a time: ``os.urandom`` is a system
    call, which releases the GIL in the request path (see kgrec/impression_journal.py); once per
    6,500 ids that costs nothing at p99."""
    with _random_lock:
        if len(_random_pool) < 10:
            _random_pool.extend(os.urandom(POOL_BYTES))
        chunk = bytes(_random_pool[:10])
        del _random_pool[:10]
    return int.from_bytes(chunk, "big") >> (80 - RANDOM_BITS)


def new_id(ms: int) -> str:
    """A fresh recommendation id made at ``ms`` (epoch milliseconds)."""
    rand = _random_bits()
    low = rand & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 7 << 76 | (rand >> 62) << 64 | 0b10 << 62 | low
    return str(uuid.UUID(int=value))


def encode_legacy(ms: int, seq: int, tag: int) -> str:
    """The id an older kgrec gave stream entry ``<ms>-<seq>`` with its tag."""
    if not (0 <= ms < 1 << 48 and 0 <= seq < 1 << SEQ_BITS and 0 <= tag < 1 << TAG_BITS):
        raise ValueError(f"cannot encode entry {ms}-{seq} with tag {tag}")
    value = ms << 80 | 8 << 76 | (tag >> 32) << 64 | 0b10 << 62 | seq << 32 | (tag & 0xFFFFFFFF)
    return str(uuid.UUID(int=value))


def decode_legacy(recommendation_id: str) -> tuple[str, int] | None:
    """The stream entry id and tag an older kgrec's id encodes; None if it is not one."""
    try:
        value = uuid.UUID(recommendation_id).int
    except (ValueError, TypeError, AttributeError):
        return None
    if (value >> 76) & 0xF != 8 or (value >> 62) & 0b11 != 0b10:
        return None
    tag = ((value >> 64) & 0xFFF) << 32 | (value & 0xFFFFFFFF)
    seq = (value >> 32) & ((1 << SEQ_BITS) - 1)
    return f"{value >> 80}-{seq}", tag


def _recommendation_id(value: Any) -> str:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        shown = repr(value[:80]) if isinstance(value, str) else type(value).__name__
        reason = "must be the recommendation_id of a response (a UUID), not {shown}"
        raise PydanticCustomError("recommendation_id", reason, {"shown": shown})
    return value.lower()


def _position(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_POSITION:
        raise PydanticCustomError(
            "position",
            "must be an integer from 1 (the top) to {most}, not {shown}",
            {"most": MAX_POSITION, "shown": repr(value)[:80]},
        )
    return value


RecommendationIdField = Annotated[
    str,
    PlainValidator(
        _recommendation_id,
        json_schema_input_type=Annotated[str, Field(pattern=UUID_PATTERN, json_schema_extra=UUID_FORMAT)],
    ),
    Field(
        description=(
            "the recommendation_id of the recommendations or similar-items response the user acted on: "
            "the event is attributed to that impression (see README, Impressions and attribution)"
        )
    ),
]
Position = Annotated[
    int,
    PlainValidator(_position, json_schema_input_type=Annotated[int, Field(ge=1, le=MAX_POSITION)]),
    Field(description="where the item was shown: its rank in the whole ranking, 1 = the top"),
]
