"""Behaviour events: the contract, and its validation for ``POST /v1/events`` and ``kgrec events import``.

:class:`Event` (with :class:`ItemInfo`) is declared once with the types of
:mod:`kgrec.field_types`; pydantic validates raw JSON-like objects into it, and
the API's ``/openapi.json`` shows its JSON Schema. A batch is validated as a
whole: every invalid event is reported once, as ``{index, field, reason}``, and
a batch with any problem writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    Strict,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from graph_schema.behaviours import EVENT_TYPES
from graph_schema.relation_names import RELATION_PATTERN, relation_problem
from kgrec import field_types
from kgrec.category_tree import distinct_path
from kgrec.field_types import FiniteNumber, Id, Price, Title, one_brand_problem, shown, string_reason
from kgrec.impression_ids import Position, RecommendationIdField
from kgrec.limits import (
    MAX_ATTRIBUTE_RELATIONS,
    MAX_ATTRIBUTE_VALUES,
    MAX_BATCH_ATTRIBUTE_RELATIONS,
    MAX_CATEGORY_DEPTH,
    MAX_EVENTS_PER_BATCH,
    MAX_PRICE,
    MAX_QUERY_LENGTH,
    MAX_REVIEW_LENGTH,
    MAX_TAG_LENGTH,
    id_problem,
)

TIMESTAMP_RULE = "not before 1970 and not more than KGREC_MAX_CLOCK_SKEW_S ahead of the server's clock"


@dataclass(frozen=True)
class ValidationClock:
    """The server time an event's ``ts`` is checked against (pydantic's validation context)."""

    now_ms: int
    max_skew_ms: float

    def ahead(self, ts: int, of: str = "the server") -> str | None:
        """Why ``ts`` (epoch ms) is too far ahead of this clock, ``of`` whom it is, in the words
        that follow the time ("is in the future (more than 300s ahead of the server)"); None when
        it is not."""
        if ts > self.now_ms + self.max_skew_ms:
            return f"is in the future (more than {self.max_skew_ms / 1000:.0f}s ahead of {of})"
        return None


def _not_ahead(ts: int, info: ValidationInfo) -> int:
    clock: ValidationClock = info.context
    problem = clock.ahead(ts)
    if problem is not None:
        raise PydanticCustomError("timestamp", "{ts} {problem}", {"ts": ts, "problem": problem})
    return ts


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Timestamp = Annotated[
    field_types.api_time(latest=None),  # the API's one reading of a time; the clock bounds it
    AfterValidator(_not_ahead),
    Field(description=f"{field_types.TIME_FORMS}; {TIMESTAMP_RULE}"),
]
CategoryPath = Annotated[list[Id], Field(min_length=1, max_length=MAX_CATEGORY_DEPTH)]
Categories = Annotated[
    CategoryPath | None,
    BeforeValidator(_one_or_many, json_schema_input_type=Id | CategoryPath | None),
    AfterValidator(lambda path: tuple(distinct_path(path) or ())),
    Field(
        alias="category",
        description="a category id, or a path of distinct ids from general to specific",
        # The empty tuple stands for "none given"; as a JSON default it would break the schema.
        json_schema_extra=lambda schema: schema.pop("default", None),
    ),
]


def _attribute_error(relation: str, reason: str) -> PydanticCustomError:
    # The relation goes into the error's field (item.attributes.<relation>), see _first_problems;
    # a lone surrogate is written as its escape, since pydantic cannot report a context it cannot encode.
    shown = relation[:140].encode("utf-8", "backslashreplace").decode("utf-8")
    return PydanticCustomError("item_attributes", "{reason}", {"reason": reason, "relation": shown})


def _attributes(value: Any) -> dict[str, tuple[str, ...]] | None:
    """Validate ``{relation: [value ids]}``: relation names by the one rule, values by the id rule."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _attribute_error("", f"must be an object of relation: [value ids], not {_type_name(value)}")
    if len(value) > MAX_ATTRIBUTE_RELATIONS:
        raise _attribute_error("", f"at most {MAX_ATTRIBUTE_RELATIONS} relations (got {len(value)})")
    attributes: dict[str, tuple[str, ...]] = {}
    for relation, values in value.items():
        problem = relation_problem(relation)
        if problem is not None:
            raise _attribute_error(str(relation), f"relation {problem}")
        if not isinstance(values, list):
            raise _attribute_error(relation, f"must be a list of value ids, not {_type_name(values)}")
        if not 1 <= len(values) <= MAX_ATTRIBUTE_VALUES:
            raise _attribute_error(
                relation, f"must list 1 to {MAX_ATTRIBUTE_VALUES} value ids (got {len(values)})"
            )
        for item in values:
            problem = id_problem(item)
            if problem is not None:
                shown = repr(item[:80]) if isinstance(item, str) else repr(item)
                raise _attribute_error(relation, f"value {shown} {problem}")
        attributes[relation] = tuple(dict.fromkeys(values))
    return attributes


RelationName = Annotated[str, Field(pattern=RELATION_PATTERN)]
AttributeValues = Annotated[list[Id], Field(min_length=1, max_length=MAX_ATTRIBUTE_VALUES)]
AttributeMap = Annotated[
    dict[RelationName, AttributeValues],
    Field(max_length=MAX_ATTRIBUTE_RELATIONS, json_schema_extra={"additionalProperties": False}),
]
Attributes = Annotated[
    dict[str, tuple[str, ...]] | None,
    PlainValidator(_attributes, json_schema_input_type=AttributeMap | None),
    Field(
        description=(
            "knowledge about the item, as {relation: [value ids]} (for example "
            '{"material": ["cotton"], "origin": ["UK"]}): each value becomes a knowledge edge '
            "item -relation-> value, to an item when one has that id, else to an entity "
            "(produced_by values are brands, belongs_to values categories, as in kg_triples.csv)"
        )
    ),
]


def _replacing_attributes(value: Any) -> dict[str, tuple[str, ...]] | None:
    # The catalogue replaces attributes relation by relation; a null would read as "remove them
    # all", which nothing does (events only ever add attributes).
    if value is None:
        raise _attribute_error(
            "", "must not be null: give each relation with its values, which replace that relation's values"
        )
    return _attributes(value)


# Attributes in a body that replaces them (the catalogue): an object, never null.
ReplacingAttributes = Annotated[
    dict[str, tuple[str, ...]] | None,
    PlainValidator(_replacing_attributes, json_schema_input_type=AttributeMap),
    Field(description="as an event's attributes; the values of each relation given replace that relation's"),
]


@dataclass(frozen=True)
class ItemInfo:
    """Catalogue facts an event may carry about its item."""

    __pydantic_config__ = ConfigDict(extra="forbid", populate_by_name=True)

    brand: Id | None = None
    categories: Categories = ()  # type: ignore[assignment]
    title: Title | None = None
    price: Price | None = None
    attributes: Attributes = None


def _text_type(limit: int, description: str) -> Any:
    # No U+0000: FalkorDB reads parameters as C strings (see kgrec.field_types.Title).
    return Annotated[
        str,
        Strict(),
        StringConstraints(max_length=limit, pattern=r"^[^\x00]*$"),
        Field(description=f"{description}, at most {limit} characters"),
    ]


ReviewText = _text_type(MAX_REVIEW_LENGTH, "a review's text (type review only)")
QueryText = _text_type(MAX_QUERY_LENGTH, "a search query (type search only, which has no item_id)")
TagText = _text_type(MAX_TAG_LENGTH, "a tag the user gave the item (type tag only)")
TEXT_LIMITS = {"text": MAX_REVIEW_LENGTH, "query": MAX_QUERY_LENGTH, "tag": MAX_TAG_LENGTH}
# Which event type may (and, but for review, must) carry each language field.
TEXT_FIELD_OF = {"review": "text", "search": "query", "tag": "tag"}


# Language events are about no item (a search) or only name one (a tag): item facts ride on
# behaviours. A value is a rating or a revenue: language events and reviews have none.
WITHOUT_ITEM_FACTS = ("search", "tag")
WITHOUT_VALUE = ("search", "tag", "review")

# Characters that show nothing: format (zero-width space, joiners, BOM...), space separators, controls,
# line and paragraph separators. A text of only these is blank; str.strip keeps the format ones.
INVISIBLE_CATEGORIES = frozenset({"Cf", "Zs", "Cc", "Zl", "Zp"})


def _invisible(character: str) -> bool:
    return character.isspace() or unicodedata.category(character) in INVISIBLE_CATEGORIES


def _joins(character: str) -> bool:
    # the format characters that belong inside a word: joiners (emoji sequences, Indic scripts)
    # and the tag characters of subdivision flags
    return character in "\u200c\u200d" or "\U000e0020" <= character <= "\U000e007f"


def visible_text(text: str) -> str:
    """``text`` without the invisible characters it starts or ends with ("" when it has nothing else)."""
    start, end = 0, len(text)
    while start < end and _invisible(text[start]):
        start += 1
    while end > start and _invisible(text[end - 1]) and not _joins(text[end - 1]):
        end -= 1  # a flag ends in tag characters (and its cancel tag): they stay
    return text[start:end]


def visible_words(text: str) -> list[str]:
    """The words of ``text``: split at invisible characters (white space, controls, zero-width
    spaces, direction marks); joiners and a flag's tag characters stay inside their word."""
    words, word = [], []
    for character in [*text, " "]:
        if _invisible(character) and not _joins(character):
            words.append(visible_text("".join(word)))
            word = []
        else:
            word.append(character)
    return [w for w in words if w]


# A rating, or a purchase's revenue: bounded, so that sums and sums of squares stay finite.
EventValue = Annotated[
    FiniteNumber,
    Field(
        ge=-MAX_PRICE,
        le=MAX_PRICE,
        description=f"a rating, or a purchase's revenue; not on {', '.join(WITHOUT_VALUE)} events",
    ),
]


@dataclass(frozen=True, kw_only=True)
class Event:
    """One valid event (ts in epoch milliseconds): a behaviour on an item, a tag, or a search."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    event_id: Id
    user_id: Id
    item_id: Id | None = None  # required, except for a search, which has none
    type: Literal[EVENT_TYPES]  # type: ignore[valid-type]
    ts: Timestamp
    value: EventValue | None = None
    session_id: Id | None = None
    item: Annotated[
        ItemInfo | None,
        Field(description=f"catalogue facts about item_id; not on {' or '.join(WITHOUT_ITEM_FACTS)} events"),
    ] = None
    text: ReviewText | None = None
    tag: TagText | None = None
    query: QueryText | None = None
    # Attribution to an impression (kgrec/attribution.py); neither is written to the graph.
    recommendation_id: RecommendationIdField | None = None
    position: Position | None = None

    def content_key(self) -> tuple[Any, ...]:
        """Everything but the event id and the attribution fields: two events with the same key
        are exact duplicates (item facts count: a copy that carries them is not one)."""
        item = self.item
        facts = (
            None
            if item is None
            else (
                item.brand,
                tuple(item.categories),
                item.title,
                item.price,
                tuple(sorted((k, tuple(v)) for k, v in (item.attributes or {}).items())),
            )
        )
        return (
            self.user_id,
            self.item_id,
            self.type,
            self.ts,
            self.value,
            self.session_id,
            self.text,
            self.tag,
            self.query,
            facts,
        )

    def content_hash(self) -> str:
        """A digest of :meth:`content_key`, stored with the event's id: a later event under the
        same id is a resend of this one only when its digest is the same (numbers compare as
        floats, as the key's tuples do: ``1000`` and ``1000.0`` are one value, as are ``0`` and
        ``-0.0``)."""
        text = json.dumps(_numbers_as_floats(self.content_key()), ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def language(self) -> str | None:
        """The event's text to match to topics (review text, tag or query), if any."""
        field_name = TEXT_FIELD_OF.get(self.type)
        value = getattr(self, field_name) if field_name else None
        return visible_text(value) or None if value else None


def _numbers_as_floats(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value) + 0.0  # -0.0 + 0.0 is 0.0: -0.0 == 0 in the key, so one digest
    return [_numbers_as_floats(v) for v in value]


EVENT = TypeAdapter(Event)
EVENTS = TypeAdapter(list[Event])
EVENT_FIELDS = tuple(Event.__dataclass_fields__)
ITEM_FIELDS = ("brand", "category", "title", "price", "attributes")


@dataclass(frozen=True)
class FieldError:
    """One problem in a batch: which event (-1: the batch itself), which field, why."""

    index: int
    field: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the 422 response."""
        return {"index": self.index, "field": self.field, "reason": self.reason}


def _field(loc: tuple[int | str, ...]) -> str:
    # Positions inside a category path name the path: "item.category".
    names = [str(part) for part in loc if isinstance(part, str)]
    return ".".join(names) if names else "event"


def _type_name(value: Any) -> str:
    return type(value).__name__


def _number_reason(value: Any, _field: str) -> str:
    # pydantic reports an integer beyond float range as "not a valid number"
    too_large = isinstance(value, int) and not isinstance(value, bool)
    return f"is too large (got {shown(value)})" if too_large else f"must be a number, not {_type_name(value)}"


def _depth_reason(value: Any) -> str:
    got = len(value) if isinstance(value, (list, tuple)) else shown(value)
    return f"must list 1 to {MAX_CATEGORY_DEPTH} categories (got {got})"


# pydantic's error type -> why, in kgrec's words: fn(input, field) -> reason
_REASONS: dict[str, Callable[[Any, str], str]] = {
    "missing": lambda _value, _field: "is required",
    "unexpected_keyword_argument": lambda _value, field: (
        f"is not a known {'item' if field.startswith('item.') else 'event'} field"
    ),
    "dataclass_type": lambda value, _field: f"must be an object, not {_type_name(value)}",
    "literal_error": lambda value, _field: f"{shown(value)} is not one of {', '.join(EVENT_TYPES)}",
    "float_type": _number_reason,
    "finite_number": lambda value, _field: f"must be a finite number (got {value!r})",
    "greater_than_equal": lambda value, _field: f"must not be negative (got {value})",
    "less_than_equal": lambda value, _field: f"must be at most {MAX_PRICE:g} (got {value})",
    "too_short": lambda value, _field: _depth_reason(value),
    "too_long": lambda value, _field: _depth_reason(value),
    "list_type": lambda _value, _field: "must be a category id or a list of ids, general to specific",
}


def _reason(error: ErrorDetails, field: str) -> str:
    kind, value = error["type"], error.get("input")
    if field == "value" and kind in ("greater_than_equal", "less_than_equal"):
        return f"must be between {-MAX_PRICE:g} and {MAX_PRICE:g} (got {value:g})"
    if field in TEXT_LIMITS and kind in ("string_type", "string_too_long", "string_pattern_mismatch"):
        got = f"{len(value)} characters" if isinstance(value, str) else _type_name(value)
        return f"must be a string of at most {TEXT_LIMITS[field]} characters without NUL (got {got})"
    if kind.startswith("string_"):
        return string_reason(error)  # the id rule or the field's bound, with the value
    if kind in _REASONS:
        return _REASONS[kind](value, field)
    return error["msg"]  # the timestamp's own words, or pydantic's


def _rank(location: tuple[int | str, ...]) -> tuple[int, int]:
    # The first problem of an event, in the order a reader checks: unknown fields, then fields in order.
    loc = [part for part in location if isinstance(part, str)]
    top = EVENT_FIELDS.index(loc[0]) if loc and loc[0] in EVENT_FIELDS else -1
    inner = ITEM_FIELDS.index(loc[1]) if len(loc) > 1 and loc[1] in ITEM_FIELDS else -1
    return top, inner


def _first_problems(exc: ValidationError) -> dict[int, FieldError]:
    """The first problem of each invalid event, by the event's position."""
    first: dict[int, tuple[tuple[int, int], FieldError]] = {}
    for error in exc.errors(include_url=False):
        index, *rest = error["loc"]
        position, location = int(index), tuple(rest)
        field = _field(location)
        relation = (error.get("ctx") or {}).get("relation") if error["type"] == "item_attributes" else None
        if relation:
            field = f"{field}.{relation}"
        rank = _rank(location)
        if position not in first or rank < first[position][0]:
            first[position] = (rank, FieldError(position, field, _reason(error, field)))
    return {position: problem for position, (_, problem) in first.items()}


def value_problem(event_type: str, value: float | None) -> str | None:
    """Why an event of ``event_type`` may not carry ``value`` (none on :data:`WITHOUT_VALUE`
    events, no negative revenue on a purchase), to follow the field's name; None when it may.
    ``kgrec import``'s loaders apply it too."""
    if value is None:
        return None
    if event_type in WITHOUT_VALUE:
        return f"a {event_type} event carries no value (got {value:g}): a value is a rating's or a purchase's"
    if event_type == "purchase" and value < 0:
        return f"a purchase's value is its revenue: must not be negative (got {value:g})"
    return None


def _type_problem(index: int, event: Event) -> FieldError | None:
    """What an event's type needs: an item but for a search, its own language field only, item
    facts only on behaviours and a value only where one is kept (:data:`WITHOUT_VALUE`)."""
    if event.type == "search" and event.item_id is not None:
        return FieldError(index, "item_id", "a search has no item")
    if event.type != "search" and event.item_id is None:
        return FieldError(index, "item_id", "is required")
    for name in TEXT_LIMITS:
        value = getattr(event, name)
        if value is not None and TEXT_FIELD_OF.get(event.type) != name:
            owner = next(t for t, f in TEXT_FIELD_OF.items() if f == name)
            return FieldError(index, name, f"only a {owner} event carries {name} (this is a {event.type})")
    misplaced = {
        "item": (
            event.type in WITHOUT_ITEM_FACTS and event.item is not None,
            "carries no item facts: send them with a behaviour on the item or through the catalogue API",
        ),
    }
    for name, (refused, why) in misplaced.items():
        if refused:
            return FieldError(index, name, f"a {event.type} event {why}")
    problem = value_problem(event.type, event.value)
    if problem is not None:
        return FieldError(index, "value", problem)
    own = TEXT_FIELD_OF.get(event.type)
    if own is not None and event.type != "review" and getattr(event, own) is None:
        return FieldError(index, own, f"is required for a {event.type} event")
    if own is not None and getattr(event, own) is not None and event.language is None:
        return FieldError(index, own, f"must not be empty (got {getattr(event, own)!r})")
    return None


def _item_problem(index: int, event: Event) -> FieldError | None:
    """The item facts' own rule: one brand, given once (as the catalogue API has it)."""
    if event.item is None:
        return None
    produced_by = (event.item.attributes or {}).get("produced_by")
    reason = one_brand_problem(event.item.brand is not None, produced_by)
    return FieldError(index, "item.attributes.produced_by", reason) if reason else None


def validate_each(raw_events: Sequence[Any], *, max_skew_s: float, now_ms: int) -> list[Event | FieldError]:
    """Validate events one by one: the Event, or the FieldError at the same position (an id the
    batch repeats with other content is a FieldError at the repeat)."""
    clock = ValidationClock(now_ms, max_skew_s * 1000)
    try:
        checked: list[Event | FieldError] = list(EVENTS.validate_python(raw_events, context=clock))
    except ValidationError as exc:
        problems = _first_problems(exc)
        checked = [
            problems[index] if index in problems else EVENT.validate_python(raw, context=clock)
            for index, raw in enumerate(raw_events)
        ]
    checked = [
        (_type_problem(index, c) or _item_problem(index, c) or c) if isinstance(c, Event) else c
        for index, c in enumerate(checked)
    ]
    return _repeated_ids(checked)


def _repeated_ids(checked: list[Event | FieldError]) -> list[Event | FieldError]:
    """Refuse an event id repeated in the batch with other content than its first valid event.

    An exact repeat (the same :meth:`Event.content_key`) stays: ingestion counts it as a duplicate.
    """
    first: dict[str, tuple[int, tuple[Any, ...]]] = {}
    for index, event in enumerate(checked):
        if not isinstance(event, Event):
            continue
        seen = first.setdefault(event.event_id, (index, event.content_key()))
        if seen[0] != index and seen[1] != event.content_key():
            checked[index] = FieldError(
                index,
                "event_id",
                f"{shown(event.event_id)} is repeated with other content than event {seen[0]} of the batch "
                "(an id names one event; resending it must send the same content)",
            )
    return checked


def validate_batch(
    raw_events: Any, *, max_skew_s: float, now_ms: int | None = None, max_batch: int = MAX_EVENTS_PER_BATCH
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
    events = [c for c in checked if isinstance(c, Event)]
    relations = {r for e in events if e.item is not None and e.item.attributes for r in e.item.attributes}
    if len(relations) > MAX_BATCH_ATTRIBUTE_RELATIONS:
        reason = f"at most {MAX_BATCH_ATTRIBUTE_RELATIONS} distinct item attribute relations per batch"
        return [], [FieldError(-1, "events", f"{reason} (got {len(relations)})")]
    return events, [c for c in checked if isinstance(c, FieldError)]


# The bounds of the facts a data set file gives field by field (``kgrec import``'s loaders): the
# event contract's own types, so that a file and the API refuse the same values.
_FIELD_TYPES: dict[str, TypeAdapter[Any]] = {
    "title": TypeAdapter(Title),
    "description": TypeAdapter(field_types.Description),
    "price": TypeAdapter(Price),
    "categories": TypeAdapter(CategoryPath),
    "value": TypeAdapter(EventValue),
}


def field_problem(name: str, value: Any) -> str | None:
    """Why ``value`` breaks the API's bound on the field ``name`` (``title``, ``description``,
    ``price``, ``categories`` as a list of ids, or an event's ``value``), worded as the API's 422
    words it, to follow the field's name; None when it is within them."""
    try:
        _FIELD_TYPES[name].validate_python(value)
    except ValidationError as exc:
        return _reason(exc.errors(include_url=False)[0], name)
    return None
