"""Recommendation ids, and the event fields that point back at an impression.

A ``recommendation_id`` is an RFC 9562 version-8 UUID that carries the impression's
place in the impression stream: the stream entry id ``<ms>-<seq>`` the server gave it,
and 44 random bits (the *tag*, stored with the entry). Looking an impression up is
then one ``XRANGE`` on the entry id, with no second index to write or trim; the tag
makes ids unguessable from their neighbours and is checked on every lookup.

Layout (most significant bit first): 48 bits ms | 4 bits version (8) | 12 tag bits |
2 bits variant (0b10) | 30 bits seq | 32 tag bits.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field, PlainValidator
from pydantic_core import PydanticCustomError

from kgrec.limits import MAX_K, MAX_OFFSET

TAG_BITS = 44
SEQ_BITS = 30
MAX_POSITION = MAX_OFFSET + MAX_K  # the deepest rank a page can show (1 = the top)
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_UUID = re.compile(UUID_PATTERN)
UUID_FORMAT = {"format": "uuid"}


@dataclass(frozen=True)
class StreamRef:
    """Where an impression lives: its stream entry id and its tag."""

    ms: int
    seq: int
    tag: int

    @property
    def entry_id(self) -> str:
        """The stream entry id, ``<ms>-<seq>``."""
        return f"{self.ms}-{self.seq}"

    @classmethod
    def from_entry(cls, entry_id: str, tag: int) -> StreamRef:
        """The reference of a stream entry id ``<ms>-<seq>`` with its tag."""
        ms, _, seq = entry_id.partition("-")
        return cls(int(ms), int(seq), tag)


def new_tag() -> int:
    """A fresh random tag."""
    return secrets.randbits(TAG_BITS)


def encode(ref: StreamRef) -> str:
    """The recommendation id of a stream entry (its seq must fit in 30 bits, as any real one does)."""
    if not (0 <= ref.ms < 1 << 48 and 0 <= ref.seq < 1 << SEQ_BITS and 0 <= ref.tag < 1 << TAG_BITS):
        raise ValueError(f"cannot encode {ref}")
    value = (
        ref.ms << 80 | 8 << 76 | (ref.tag >> 32) << 64 | 0b10 << 62 | ref.seq << 32 | (ref.tag & 0xFFFFFFFF)
    )
    return str(uuid.UUID(int=value))


def decode(recommendation_id: str) -> StreamRef | None:
    """The stream reference a recommendation id encodes; None if it is not one of ours."""
    try:
        value = uuid.UUID(recommendation_id).int
    except (ValueError, TypeError, AttributeError):
        return None
    if (value >> 76) & 0xF != 8 or (value >> 62) & 0b11 != 0b10:
        return None
    ms = value >> 80
    tag = ((value >> 64) & 0xFFF) << 32 | (value & 0xFFFFFFFF)
    seq = (value >> 32) & ((1 << SEQ_BITS) - 1)
    return StreamRef(ms, seq, tag)


def _recommendation_id(value: Any) -> str:
    if not isinstance(value, str) or not _UUID.match(value):
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
