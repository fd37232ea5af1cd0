"""kgrec's id rule and bounds (:mod:`kgrec.limits`) spelled as pydantic types.

The request models of the API, the event contract and so ``/openapi.json``
declare their fields with these types: a bound written here is enforced by
validation and shown in the document, from the same constant.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, PlainValidator, Strict, StringConstraints
from pydantic_core import ErrorDetails, PydanticCustomError

from kgrec.limits import (
    ID_PATTERN,
    MAX_DESCRIPTION_LENGTH,
    MAX_EPOCH_MS,
    MAX_ID_LENGTH,
    MAX_PRICE,
    MAX_TEXT_LENGTH,
    id_problem,
)

SHOWN_CHARACTERS = 60  # how much of a refused value an error message quotes


def _id_rule(value: str) -> str:
    # What ID_PATTERN does not state (Unicode NFC, "." and ".."): the rest of the one id rule,
    # kgrec.limits.id_problem.
    if (problem := id_problem(value)) is not None:
        raise PydanticCustomError("string_id_rule", "{problem}", {"problem": problem})
    return value


# 1..MAX_ID_LENGTH characters, not only white space, no control or format characters, in NFC, not
# "." or ".." (see kgrec.limits.id_problem).
Id = Annotated[
    str,
    Strict(),
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN),
    AfterValidator(_id_rule),
]

# An HTML form sends an empty field for "no filter": "" reads as None.
OptionalId = Annotated[Literal[""] | Id, AfterValidator(lambda value: value or None)]

FiniteNumber = Annotated[float, Strict(), Field(allow_inf_nan=False)]


def whole_number(value: object) -> object:
    """JSON Schema's integer: 3 or 3.0 (as 3), never "3" or true; raises a pydantic error otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError(
            "int_type", "must be an integer, not {kind}", {"kind": type(value).__name__}
        )
    if isinstance(value, float) and not value.is_integer():
        raise PydanticCustomError("int_from_float", "must be a whole number (got {value})", {"value": value})
    return int(value)


# An integer in a JSON body: a whole number, as the OpenAPI document's ``integer`` allows, not text.
# With bounds, put them first (``Annotated[int, Field(ge=1), WHOLE_NUMBER]``), or the document
# shows them as unknown keys instead of ``minimum`` / ``maximum``.
WHOLE_NUMBER = BeforeValidator(whole_number)
WholeNumber = Annotated[int, WHOLE_NUMBER]
Price = Annotated[FiniteNumber, Field(ge=0, le=MAX_PRICE)]
PriceFilter = Annotated[
    Literal[""] | Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)],
    AfterValidator(lambda value: None if value == "" else value),
]
# No U+0000: FalkorDB reads a query and its parameters as one C string, so a NUL ends it early.
Title = Annotated[str, Strict(), StringConstraints(max_length=MAX_TEXT_LENGTH, pattern=r"^[^\x00]*$")]
Description = Annotated[
    str,
    Strict(),
    StringConstraints(max_length=MAX_DESCRIPTION_LENGTH, pattern=r"^[^\x00]*$"),
    Field(description=f"plain text, at most {MAX_DESCRIPTION_LENGTH} characters; read for topics only"),
]


TIME_FORMS = (
    "epoch milliseconds as a JSON number (never seconds, never a string of digits), or an RFC 3339 "
    "date-time with an offset (Z or ±hh:mm), like 2023-11-14T22:13:20Z; a fraction of a second "
    "finer than a millisecond is truncated (…20.0019Z reads as …20.001Z); a leap second (:60) only at "
    "23:59 UTC, read as :59"
)
# RFC 3339's date-time (section 5.6), upper case T and Z: what the document's pattern states and
# epoch_ms reads. Without an offset a time is no instant (the sender's local time?), and a date
# alone is no time of day, so both are refused rather than guessed as UTC.
DATE_TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
)
_DATE_TIME = re.compile(DATE_TIME_PATTERN, re.ASCII)
_LEAP = re.compile(r"^([0-9-]{10}T[0-9]{2}:[0-9]{2}:)60", re.ASCII)
_LOCAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?", re.ASCII)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
# A number as text: digits, an optional sign, fraction and exponent (ASCII only: no "1_000", no "١٢").
_NUMBER_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?", re.ASCII)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_MS, _MINUTE_MS, _LAST_MINUTE = 86_400_000, 60_000, 23 * 60 + 59


def _refused_text(value: str, problem: str) -> PydanticCustomError:
    return PydanticCustomError("timestamp", "{value} {problem}", {"value": shown(value), "problem": problem})


def _text_problem(value: str, numbers: str) -> str:
    """Why a string is not a time the API reads, in the words that follow the quoted value; ``numbers``:
    what a number is read as where the string came from."""
    text = value.strip()
    if is_number_text(text):
        return f"is a string: send {numbers} as a JSON number, or an RFC 3339 date-time"
    if _DATE.fullmatch(text):
        return (
            "is a date without a time of day: send an RFC 3339 date-time with an offset, "
            f"like {text}T00:00:00Z"
        )
    if _LOCAL_TIME.fullmatch(text):
        return "has no offset: add Z (UTC) or ±hh:mm, as RFC 3339 requires"
    return f"is not {numbers} or an RFC 3339 date-time with an offset, like 2023-11-14T22:13:20Z"


def epoch_ms(value: object) -> int:
    """A time in an API body as epoch milliseconds: the one reading of ``ts`` (events) and of the
    catalogue's and rules' times; raises a pydantic ``timestamp`` error naming the value otherwise.

    A JSON number is epoch milliseconds and must be whole (never seconds; the data set files' ``ts``
    is, :func:`kgrec.datasets.records.parse_timestamp_ms`). A string must be an RFC 3339 date-time
    with an offset (:data:`DATE_TIME_PATTERN`): a string of digits, a time without an offset and a
    date alone are refused, each with its own reason. A fraction finer than a millisecond is
    truncated. From 1970 to 9999. (A :class:`~decimal.Decimal` is a number too: an import file's
    number, :func:`cell_time`, which messages quote as the cell has it.) A leap second (``:60``) is
    read as the second before, and only at 23:59 UTC, where RFC 3339 allows one.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        raise PydanticCustomError(
            "timestamp",
            "must be epoch milliseconds or an RFC 3339 date-time, not {kind}",
            {"kind": type(value).__name__},
        )
    if not isinstance(value, str):
        number = Decimal(value)  # exact: no float rounding
        # a JSON number's digits can be shown (the body parser bounds them); a cell's number is quoted
        # as written and cut (its Decimal prints all of 100,000 digits, '15e-1' as 1.5)
        written = shown(value.text) if isinstance(value, CellNumber) else str(value)
        if not number.is_finite() or number != number.to_integral_value():
            raise PydanticCustomError(
                "timestamp", "{value} is not a whole number of epoch milliseconds", {"value": written}
            )
        label = int(number) if isinstance(value, int | float) else written
        if number < 0:
            raise PydanticCustomError("timestamp", "{ts} is before 1970", {"ts": label})
        if number > MAX_EPOCH_MS:  # compared before int(): 1e999999999 must not become an integer
            raise PydanticCustomError("timestamp", "{ts} is after 9999", {"ts": label})
        return int(number)
    return date_time_ms(value)


def date_time_ms(value: str, numbers: str = "epoch milliseconds") -> int:
    """A time written as text (:func:`epoch_ms`'s reading of a string; :func:`kgrec.datasets.records.
    parse_timestamp_ms`'s of one that is no number) as epoch milliseconds, or a pydantic ``timestamp``
    error naming the value; ``numbers``: what the caller reads a number as, for the message."""
    try:
        # RFC 3339 allows a leap second (:60), which datetime cannot hold: read as the second before
        moment = datetime.fromisoformat(_LEAP.sub(r"\g<1>59", value)) if _DATE_TIME.fullmatch(value) else None
    except ValueError:  # the shape of one, but no such time: month 13, 25 o'clock
        moment = None
    if moment is None:
        raise _refused_text(value, _text_problem(value, numbers))
    ts = (moment - _EPOCH) // timedelta(milliseconds=1)  # floor: the fraction below a ms is cut
    # A leap second ends a UTC day: 10:15:60Z is no time, not 10:15:59Z. Read from ts, as the minute
    # of the UTC day: moment.astimezone(UTC) overflows past 9999 (…23:59:60-01:00).
    if _LEAP.match(value) and ts % _DAY_MS // _MINUTE_MS != _LAST_MINUTE:
        raise _refused_text(value, "has second 60, a leap second: RFC 3339 allows it only at 23:59 UTC")
    if ts < 0:
        raise PydanticCustomError("timestamp", "{ts} is before 1970", {"ts": shown(value)})
    if ts > MAX_EPOCH_MS:
        raise PydanticCustomError("timestamp", "{ts} is after 9999", {"ts": shown(value)})
    return ts


class CellNumber(Decimal):
    """A number written in an import file's cell (:func:`cell_time`), keeping the cell's text for
    messages: the Decimal's own would show 100,000 digits whole, '15e-1' as 1.5, '1e99999' as 1E+99999."""

    text: str

    def __new__(cls, text: str) -> CellNumber:
        """The number ``text`` spells, with ``text`` kept as :attr:`text`."""
        number = super().__new__(cls, text)
        number.text = text
        return number


_WHOLE_NUMBER_TEXT = re.compile(r"[0-9]+", re.ASCII)


def whole_number(text: str, most: int) -> int | None:
    """``text`` as a whole number from 0 to ``most`` when it is ASCII digits alone (``007`` is 7);
    None for any other text. ``int()`` also takes signs, ``1_000`` and other scripts' digits, and
    raises ValueError past 4,300 digits: a file's cell must not abort its import."""
    if not _WHOLE_NUMBER_TEXT.fullmatch(text) or len(text.lstrip("0")) > len(str(most)):
        return None
    value = int(text)
    return value if value <= most else None


def is_number_text(text: str) -> bool:
    """Whether ``text`` spells a number in ASCII digits (sign, fraction, exponent): what a time
    written as a number may be; ``float()`` also takes ``1_000``, other scripts' digits and ``inf``."""
    return _NUMBER_TEXT.fullmatch(text) is not None


def cell_time(text: str) -> object:
    """An import file's time cell (``kgrec events import --format csv``'s ``ts``, ``kgrec items
    import``'s ``listed_at`` / ``delisted_at``) as the JSON value it stands for: a cell holds text
    only, so a number written in it (digits, sign, fraction, exponent) is that number, epoch
    milliseconds (a :class:`CellNumber`), and any other text stays text, read by :func:`epoch_ms`
    as a date-time."""
    stripped = text.strip()
    return CellNumber(stripped) if is_number_text(stripped) else stripped


IsoTime = Annotated[str, Field(json_schema_extra={"format": "date-time", "pattern": DATE_TIME_PATTERN})]


def api_time(latest: int | None = MAX_EPOCH_MS) -> Any:
    """A time in a body, validated by :func:`epoch_ms`; /openapi.json shows what a client may send,
    up to ``latest`` (None: a bound the schema cannot state, such as the clock's)."""
    epoch = Annotated[int, Field(ge=0, le=latest)]
    return Annotated[int, PlainValidator(epoch_ms, json_schema_input_type=epoch | IsoTime)]


def shown(value: object) -> str:
    """A refused value as an error message quotes it: its repr, cut to :data:`SHOWN_CHARACTERS`."""
    try:
        text = repr(value)
    except ValueError:  # an integer beyond Python's limit on the digits it converts to text
        return f"an integer of {value.bit_length()} bits" if isinstance(value, int) else type(value).__name__
    if len(text) <= SHOWN_CHARACTERS:
        return text
    size = len(value) if isinstance(value, str) else len(text)
    return f"{text[:SHOWN_CHARACTERS]}… ({size} characters)"


def one_brand_problem(brand_given: bool, produced_by: tuple[str, ...] | list[str] | None) -> str | None:
    """Why an item's ``brand`` and ``produced_by`` attribute break "an item has one brand", or None."""
    if produced_by is None:
        return None
    if brand_given:
        return "give the brand once: in brand or in attributes.produced_by, not both"
    if len(produced_by) > 1:
        return f"an item has one brand (got {len(produced_by)}: {shown(list(produced_by))})"
    return None


def string_reason(error: ErrorDetails) -> str:
    """Why a string field of these types was refused (a ``string_*`` error), with the value: the id
    rule's words for an id, the length bound the field has, or the NUL a text may not hold."""
    kind, value, context = error["type"], error.get("input"), error.get("ctx") or {}
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    surrogates = [(i, c) for i, c in enumerate(value) if 0xD800 <= ord(c) <= 0xDFFF][:1]
    if kind == "string_unicode" and surrogates:  # a lone surrogate ("\ud83d" in JSON) is no character
        ((at, surrogate),) = surrogates
        return (
            f"is not valid Unicode: a lone surrogate U+{ord(surrogate):04X} at character {at} "
            f"(got {shown(value)})"
        )
    if kind == "string_too_long":
        return f"is longer than {context['max_length']} characters (got {shown(value)})"
    if kind == "string_too_short" or (
        kind == "string_pattern_mismatch" and context.get("pattern") == ID_PATTERN
    ):
        problem = id_problem(value) or f"is shorter than {context.get('min_length', 1)} characters"
        return problem if problem == "is empty" else f"{problem} (got {shown(value)})"
    if kind == "string_pattern_mismatch" and "\x00" in value:
        return f"must not contain NUL (U+0000) (got {shown(value)})"
    return f"{error['msg']} (got {shown(value)})"
