"""Refusals name the field's real bound and quote the value (kgrec/field_types.py's string_reason,
the catalogue's and the event contract's field reasons)."""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from app import create_app
from app.body import json_body
from app.errors import ApiError
from app.openapi import openapi_document
from app.schemas import AudienceConditions
from graph_schema.relation_names import RelationNameError, relation_problem, relationship_type
from kgrec.catalogue import error_problems, validate_items
from kgrec.config import Settings
from kgrec.events.validation import validate_batch
from kgrec.field_types import Id, cell_time, epoch_ms, shown
from kgrec.impression_ids import RecommendationIdField
from kgrec.limits import (
    ID_PATTERN,
    ID_RULE,
    MAX_ID_LENGTH,
    MAX_TEXT_LENGTH,
    STORED_ID_PATTERN,
    STORED_ID_RULE,
    id_problem,
    kind_problem,
)
from kgrec.relation_sentences import SentenceTemplateError, load_sentences
from kgrec.rules import validate_rule


def item_reason(item: dict) -> tuple[str, str]:
    _, errors = validate_items([{"item_id": "i1", **item}])
    (error,) = errors
    return error.field, error.reason


@pytest.mark.parametrize(
    ("item", "field", "reason"),
    [
        # the title's own bound, not the id rule's 256
        (
            {"title": "y" * (MAX_TEXT_LENGTH + 1)},
            "title",
            f"is longer than {MAX_TEXT_LENGTH} characters (got {shown('y' * (MAX_TEXT_LENGTH + 1))})",
        ),
        ({"title": "a\x00b"}, "title", "must not contain NUL (U+0000) (got 'a\\x00b')"),
        ({"brand": " b"}, "brand", "must not start or end with white space (got ' b')"),
        ({"brand": "a\nb"}, "brand", "must not contain control characters (got 'a\\nb')"),
        ({"brand": ""}, "brand", "is empty"),
        (
            {"brand": "b" * (MAX_ID_LENGTH + 1)},
            "brand",
            f"is longer than {MAX_ID_LENGTH} characters (got {shown('b' * (MAX_ID_LENGTH + 1))})",
        ),
        ({"brand": 5}, "brand", "must be a string, not int"),
        ({"price": -1}, "price", "Input should be greater than or equal to 0 (got -1)"),
        ({"colour": "red"}, "colour", "is not a known field"),
        ({"stock": 3.5}, "stock", "must be a whole number (got 3.5)"),  # the value once
        (
            {"listed_at": "nope"},
            "listed_at",
            "'nope' is not epoch milliseconds or an RFC 3339 date-time with an offset, like 2023-11-14T22:13:20Z",
        ),
        # an integer Neo4j's driver could not send (2**63 and more)
        ({"delisted_at": 10**19}, "delisted_at", "10000000000000000000 is after 9999"),
        ({"listed_at": 1e19}, "listed_at", "10000000000000000000 is after 9999"),
        # an item has one brand, given once
        (
            {"brand": "X", "attributes": {"produced_by": ["Y"]}},
            "attributes.produced_by",
            "give the brand once: in brand or in attributes.produced_by, not both",
        ),
        (
            {"attributes": {"produced_by": ["Y", "Z"]}},
            "attributes.produced_by",
            "an item has one brand (got 2: ['Y', 'Z'])",
        ),
    ],
)
def test_a_catalogue_refusal_names_the_bound_and_the_value(item: dict, field: str, reason: str) -> None:
    assert item_reason(item) == (field, reason)


def test_a_too_long_string_and_a_too_large_number_are_quoted() -> None:
    """The length refusal and the number-beyond-range refusal quote the value, as every other does."""
    assert shown("b" * 300) == f"'{'b' * 59}… (300 characters)"
    event = {"event_id": "e1", "user_id": "u", "item_id": "i", "type": "purchase", "ts": 1_700_000_000_000}
    _, errors = validate_batch([{**event, "value": 10**400}], max_skew_s=300, now_ms=1_700_000_000_000)
    assert [(e.field, e.reason) for e in errors] == [("value", f"is too large (got {shown(10**400)})")]
    assert shown(10**400).startswith("1000") and shown(10**400).endswith("(401 characters)")
    _, errors = validate_batch([{**event, "user_id": "u" * 300}], max_skew_s=300, now_ms=1_700_000_000_000)
    assert [(e.field, e.reason) for e in errors] == [
        ("user_id", f"is longer than {MAX_ID_LENGTH} characters (got '{'u' * 59}… (300 characters))")
    ]
    assert shown(10**5000) == "an integer of 16610 bits"  # beyond the digits Python converts to text


def test_an_event_title_with_nul_is_refused_for_the_nul() -> None:
    event = {"event_id": "e1", "user_id": "u", "item_id": "i", "type": "view", "ts": 1_700_000_000_000}
    _, errors = validate_batch(
        [{**event, "item": {"title": "a\x00b"}}], max_skew_s=300, now_ms=1_700_000_000_000
    )
    assert [(e.field, e.reason) for e in errors] == [
        ("item.title", "must not contain NUL (U+0000) (got 'a\\x00b')")
    ]


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (
            {"brand": "X", "attributes": {"produced_by": ["Y"]}},
            "give the brand once: in brand or in attributes.produced_by, not both",
        ),
        ({"attributes": {"produced_by": ["Y", "Z"]}}, "an item has one brand (got 2: ['Y', 'Z'])"),
    ],
)
def test_an_event_names_one_brand_as_the_catalogue_does(item: dict, reason: str) -> None:
    event = {"event_id": "e1", "user_id": "u", "item_id": "i", "type": "view", "ts": 1_700_000_000_000}
    _, errors = validate_batch([{**event, "item": item}], max_skew_s=300, now_ms=1_700_000_000_000)
    assert [(e.field, e.reason) for e in errors] == [("item.attributes.produced_by", reason)]


@pytest.mark.parametrize(
    ("attributes", "field", "reason"),
    [
        (
            {"colour": ["red\ud800"]},
            "item.attributes.colour",
            "value 'red\\ud800' is not valid Unicode: a lone surrogate U+D800 at character 3",
        ),
        (
            {"col\udc00": ["red"]},
            "item.attributes.col\\udc00",
            "relation 'col\\udc00' must be 1 to 128 characters of letters, digits, '.', '_', '-', '/' and ':'",
        ),
    ],
)
def test_a_lone_surrogate_in_an_attribute_is_refused_naming_it(
    attributes: dict, field: str, reason: str
) -> None:
    # JSON's "\ud800" gives Python a lone surrogate, which has no UTF-8 for the graph server
    event = {"event_id": "e1", "user_id": "u", "item_id": "i", "type": "view", "ts": 1_700_000_000_000}
    _, errors = validate_batch(
        [{**event, "item": {"attributes": attributes}}], max_skew_s=300, now_ms=1_700_000_000_000
    )
    assert [(e.field, e.reason) for e in errors] == [(field, reason)]
    _, item_errors = validate_items([{"item_id": "i1", "attributes": attributes}])
    assert [(e.field, e.reason) for e in item_errors] == [(field.removeprefix("item."), reason)]


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"type": "purchase", "value": 1e200}, "must be between -1e+12 and 1e+12 (got 1e+200)"),
        ({"type": "rating", "value": -1e13}, "must be between -1e+12 and 1e+12 (got -1e+13)"),
        (
            {"type": "purchase", "value": -5},
            "a purchase's value is its revenue: must not be negative (got -5)",
        ),
    ],
)
def test_an_event_value_is_bounded_and_revenue_is_not_negative(event: dict, reason: str) -> None:
    base = {"event_id": "e1", "user_id": "u", "item_id": "i", "ts": 1_700_000_000_000}
    _, errors = validate_batch([{**base, **event}], max_skew_s=300, now_ms=1_700_000_000_000)
    assert [(e.field, e.reason) for e in errors] == [("value", reason)]


def test_a_union_member_tag_is_not_part_of_the_field_name() -> None:
    with pytest.raises(ValidationError) as refused:
        AudienceConditions.model_validate({"brand": 5})
    fields = {problem.field for problem in error_problems(refused.value, indexed=False)}
    assert fields == {"brand"}


def test_a_long_value_is_quoted_cut() -> None:
    assert shown("x" * 10) == repr("x" * 10)
    assert shown("x" * 100) == f"{repr('x' * 100)[:60]}… (100 characters)"  # the value's length


def test_the_openapi_document_states_bounds_as_json_schema(settings: Settings) -> None:
    """Bounds are ``minimum`` / ``maximum`` / ``exclusive…`` keys, never pydantic's ``ge`` / ``le``
    leaking through a validator put before them (a client generator ignores those)."""
    document = json.dumps(openapi_document(create_app(settings)))
    leaked = sorted({key for key in ("ge", "le", "gt", "lt") if f'"{key}":' in document})
    assert leaked == []


def test_a_rule_over_two_fields_does_not_quote_the_whole_body() -> None:
    _, problems = validate_rule({"action": "block", "target": {"item": "x"}, "starts_at": 5, "ends_at": 3})
    assert [(p.field, p.reason) for p in problems] == [
        ("ends_at", "must be after starts_at (got ends_at 3 ms, starts_at 5 ms)")  # the two times, no more
    ]


def test_a_number_sent_as_a_string_is_named_so() -> None:
    assert item_reason({"price": "2"}) == ("price", "must be a number, not a string (got '2')")


def test_every_bad_item_is_reported_the_brand_rule_included() -> None:
    _, errors = validate_items(
        [{"item_id": "a", "price": -1}, {"item_id": "b", "brand": "X", "attributes": {"produced_by": ["Y"]}}]
    )
    assert [(e.index, e.field) for e in errors] == [(0, "price"), (1, "attributes.produced_by")]


@pytest.mark.parametrize("ts", ["inf", "-inf", "1e400"])
def test_an_overflowing_event_time_is_refused_not_raised(ts: str) -> None:
    event = {"event_id": "e1", "user_id": "u", "item_id": "i", "type": "view", "ts": ts}
    _, errors = validate_batch([event], max_skew_s=300, now_ms=1_700_000_000_000)
    assert [e.field for e in errors] == ["ts"]


@pytest.mark.parametrize(
    ("headers", "data"),
    [({"Transfer-Encoding": "chunked"}, b""), ({"Content-Length": "0"}, b""), ({}, None)],
    ids=["empty-chunked", "zero-length", "none"],
)
def test_an_optional_body_left_out_or_empty_reads_as_no_fields(
    settings: Settings, headers: dict[str, str], data: bytes | None
) -> None:
    app = create_app(settings)
    with app.test_request_context("/", method="PUT", headers=headers, data=data):
        assert json_body(optional=True) == {}


def test_a_very_long_integer_is_refused_in_kgrecs_words(settings: Settings) -> None:
    body = b'{"n": ' + b"9" * 5000 + b"}"
    app = create_app(settings)
    with (
        app.test_request_context("/", method="POST", data=body, content_type="application/json"),
        pytest.raises(ApiError) as refused,
    ):
        json_body()
    assert "a number of 5000 digits (at most 4300)" in str(refused.value.detail)


# The API's one reading of a time (events' ts, the catalogue's and rules' times): a JSON number is
# epoch milliseconds and must be whole (never seconds); a string is an RFC 3339 date-time with an offset.
TIMES = [
    (1_796_482_476, 1_796_482_476),  # milliseconds (1970-01-21), never seconds
    (1_700_000_000_000.0, 1_700_000_000_000),
    ("2023-11-14T22:13:20Z", 1_700_000_000_000),
    ("2023-11-14T23:13:20+01:00", 1_700_000_000_000),
    ("2023-11-14T22:13:20.0019Z", 1_700_000_000_001),  # finer than a millisecond: truncated
    ("2016-12-31T23:59:60Z", 1_483_228_799_000),  # RFC 3339's leap second: read as the second before
    ("2016-12-31T18:59:60-05:00", 1_483_228_799_000),  # 23:59 UTC once the offset is applied
]
NOT_TIMES = [
    (1.5, "1.5 is not a whole number of epoch milliseconds"),
    (-5, "-5 is before 1970"),
    (
        "1796482476",
        "'1796482476' is a string: send epoch milliseconds as a JSON number, or an RFC 3339 date-time",
    ),
    (
        "1_000",
        "'1_000' is not epoch milliseconds or an RFC 3339 date-time with an offset, like 2023-11-14T22:13:20Z",
    ),
    (
        "2023-11-14T22:13:20.001",
        "'2023-11-14T22:13:20.001' has no offset: add Z (UTC) or ±hh:mm, as RFC 3339 requires",
    ),
    ("1969-12-31T23:59:59Z", "'1969-12-31T23:59:59Z' is before 1970"),
    # a leap second ends a UTC day: at any other minute :60 is no time (it was read as :59)
    (
        "2023-11-14T10:15:60Z",
        "'2023-11-14T10:15:60Z' has second 60, a leap second: RFC 3339 allows it only at 23:59 UTC",
    ),
    (
        "2016-12-31T23:59:60+01:00",
        "'2016-12-31T23:59:60+01:00' has second 60, a leap second: RFC 3339 allows it only at 23:59 UTC",
    ),
    (  # 00:59 UTC in the year 10000, which a datetime cannot hold
        "9999-12-31T23:59:60-01:00",
        "'9999-12-31T23:59:60-01:00' has second 60, a leap second: RFC 3339 allows it only at 23:59 UTC",
    ),
]


def test_an_event_time_is_epoch_milliseconds_or_a_date_time_with_an_offset() -> None:
    for raw, ms in TIMES:
        event = {"event_id": "e1", "user_id": "u", "item_id": "i", "type": "view", "ts": raw}
        events, errors = validate_batch([event], max_skew_s=300, now_ms=1_800_000_000_000)
        assert (errors, events[0].ts if events else None) == ([], ms), raw


def test_a_catalogue_and_rule_time_is_read_as_an_event_time() -> None:
    for raw, ms in TIMES:
        items, errors = validate_items([{"item_id": "i1", "listed_at": raw, "delisted_at": raw}])
        assert errors == [] and (items[0].listed_at, items[0].delisted_at) == (ms, ms), raw
        rule, problems = validate_rule({"action": "block", "target": {"item": "x"}, "starts_at": raw})
        assert problems == [] and rule.starts_at == ms, raw


def test_a_time_the_api_does_not_read_is_refused_naming_the_value() -> None:
    for raw, reason in NOT_TIMES:
        event = {"event_id": "e1", "user_id": "u", "item_id": "i", "type": "view", "ts": raw}
        _, errors = validate_batch([event], max_skew_s=300, now_ms=1_800_000_000_000)
        assert [(e.field, e.reason) for e in errors] == [("ts", reason)]
        assert item_reason({"listed_at": raw}) == ("listed_at", reason)


def test_a_name_ending_in_a_newline_is_refused_everywhere(tmp_path: Path) -> None:
    """``$`` matches before a final newline, so each rule must match the whole value."""
    assert relation_problem("origin\n") is not None
    with pytest.raises(RelationNameError, match=r"'origin\\n'"):
        relationship_type("origin\n")
    assert kind_problem("genre\n") is not None
    with pytest.raises(ValidationError):
        TypeAdapter(RecommendationIdField).validate_python("12345678-1234-1234-1234-123456789012\n")
    field, reason = item_reason({"attributes": {"origin\n": ["x"]}})
    assert field.startswith("attributes") and "'origin\\n' must be 1 to 128 characters" in reason
    event = {"event_id": "e1", "user_id": "u", "item_id": "i", "type": "view", "ts": 1_700_000_000_000}
    _, errors = validate_batch(
        [{**event, "item": {"attributes": {"origin\n": ["x"]}}}], max_skew_s=300, now_ms=1_700_000_000_000
    )
    assert [e.field for e in errors] and "'origin\\n' must be 1 to 128" in errors[0].reason
    path = tmp_path / "sent.toml"
    path.write_text('[item_entity]\n"origin\\n" = "{target} {entity}"\n', encoding="utf-8")
    with pytest.raises(SentenceTemplateError, match="origin"):
        load_sentences(path)


def test_the_id_pattern_refuses_every_format_character_the_id_rule_refuses() -> None:
    """The pattern /openapi.json publishes states the format-character part of the id rule, so a
    client (or a fuzzer) that follows it never sends an id the service refuses for one. All 17
    planes are scanned here, though kgrec.limits reads only those Unicode assigns."""
    pattern, adapter = re.compile(ID_PATTERN), TypeAdapter(Id)
    formats = [chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"]
    assert {"\u00ad", "\u200b", "\u202e", "\ufeff", "\U000e0067"} <= set(formats)
    for character in formats:
        for value in (f"{character}a", f"a{character}b", f"a{character}"):
            assert pattern.fullmatch(value) is None, ascii(value)
            assert "invisible format characters" in (id_problem(value) or ""), ascii(value)
            with pytest.raises(ValidationError) as refused:  # pydantic's own regex engine agrees
                adapter.validate_python(value)
            assert refused.value.errors()[0]["type"] == "string_pattern_mismatch", ascii(value)
    for value in ("café", "😀", "👍🏽", "日本語", "a.b", "..."):
        assert pattern.fullmatch(value) and id_problem(value) is None, value


def test_every_id_in_the_openapi_document_states_what_its_pattern_does_not(settings: Settings) -> None:
    """NFC and "." / ".." are in each id's description, the field's own description kept."""
    found: list[dict] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            found.extend([node] if node.get("pattern") == ID_PATTERN else [])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    document = openapi_document(create_app(settings))
    walk(document)
    assert len(found) > 50 and "NFC" in ID_RULE and "'..'" in ID_RULE
    assert [node for node in found if ID_RULE not in node.get("description", "")] == []
    brand = document["components"]["schemas"]["BrandTarget"]["properties"]["brand"]
    assert brand["description"] == f"every item of this brand; {ID_RULE}"
    # the routes that remove what is stored publish the rule they check: any id the graph may hold,
    # as a pattern and in words
    for path, method, what in (
        ("/v1/users/{user_id}", "delete", "the user"),
        ("/v1/rules/{rule_id}", "delete", "the rule"),
        ("/v1/items/{item_id}", "delete", "the item"),
    ):
        (parameter,) = [p for p in document["paths"][path][method]["parameters"] if p["in"] == "path"]
        assert parameter["schema"]["pattern"] == STORED_ID_PATTERN, path
        assert parameter["description"] == f"{what}: {STORED_ID_RULE}", path
    assert "stored before 2026-12-07" in STORED_ID_RULE
    assert re.search(STORED_ID_PATTERN, "u1\u200b") and not re.search(ID_PATTERN, "u1\u200b")


def test_an_import_cells_time_is_read_with_its_surrounding_spaces_cut() -> None:
    for raw, ms in TIMES:
        assert epoch_ms(cell_time(f" {raw} ")) == ms, raw


def test_a_refused_time_cell_is_quoted_as_written_and_cut() -> None:
    # A number in a cell is read exactly (a Decimal), but quoted as the cell has it: the Decimal
    # printed 100,000 digits whole, '15e-1' as 1.5 and '1e99999' as 1E+99999.
    cells = [
        (
            "1" * 100_000 + ".5",
            f"'{'1' * 59}… (100002 characters) is not a whole number of epoch milliseconds",
        ),
        (" 15e-1 ", "'15e-1' is not a whole number of epoch milliseconds"),
        ("1e99999", "'1e99999' is after 9999"),
        ("-5e0", "'-5e0' is before 1970"),
    ]
    for cell, reason in cells:
        with pytest.raises(PydanticCustomError) as refused:
            epoch_ms(cell_time(cell))
        assert refused.value.message() == reason, cell[:20]
    assert epoch_ms(cell_time("17e11")) == 1_700_000_000_000
