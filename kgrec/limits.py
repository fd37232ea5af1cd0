"""The id rules and every bound of kgrec's inputs, in one place.

The request models (and so ``/openapi.json``), event validation, the dataset
importers and the CLI all take their limits from here, so what the document
promises is what every entry point enforces.

Ids (users, items, brands, categories, sessions, events, jobs) are 1 to
``MAX_ID_LENGTH`` characters, with no control characters (U+0000 to U+001F and
U+007F) and no white space at either end (FalkorDB 4.16 crashes when a
uniquely-constrained ``id`` ends in white space, and " a" and "a" would read as
one id to people anyway), in Unicode NFC, with no format character (category
Cf), and not "." or "..": each of those looks the same as, or addresses the same
URL as, another id.
"""

from __future__ import annotations

import re
import unicodedata

MAX_ID_LENGTH = 256
# Where Unicode assigns anything but private use: planes 0 to 3 and 14. Scanning all 17 planes would
# cost every process 0.4 s at import; tests/test_field_reasons.py checks that no other plane holds a format
# character under this Python's Unicode database.
_ASSIGNED_PLANES = (range(0x40000), range(0xE0000, 0xF0000))


def _class_body(code_points: list[int]) -> str:
    """``code_points`` (ascending) as the inside of a regex character class, in ranges. Python,
    pydantic's Rust regex and ECMA 262 share the \\uXXXX escape but none above U+FFFF, so those
    characters are written as themselves (ECMA 262 reads each as one character under the u flag,
    ajv's default for patterns)."""
    ranges: list[list[int]] = []
    for code in code_points:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])

    def one(code: int) -> str:
        return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)

    return "".join(one(low) if low == high else f"{one(low)}-{one(high)}" for low, high in ranges)


# Format characters (Unicode category Cf: the soft hyphen, U+200B to U+200F, direction overrides,
# U+FEFF, the tag characters...) from this Python's Unicode database, so ID_PATTERN and id_problem
# read one list: invisible, so an id holding one looks the same as an id without it.
_FORMAT = _class_body(
    [c for plane in _ASSIGNED_PLANES for c in plane if unicodedata.category(chr(c)) == "Cf"]
)
# The same rule as a regular expression that JSON Schema (ECMA 262) and Python both read the same way.
# White space is spelled out rather than written \s: regex engines disagree on what \s holds
# (U+0085, U+FEFF), and this set is exactly what Python's str.strip() removes.
_EDGE = r"\x00-\x20\x7f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Unicode NFC and "." / ".." are checked by id_problem alone, and stated in each id's description
# (ID_RULE): no pattern states NFC without look-around, which pydantic's regex engine lacks, and
# spelling out "not . or .." would repeat each of the pattern's character classes (README, "Bad input").
ID_PATTERN = rf"^[^{_EDGE}{_FORMAT}](?:[^\x00-\x1f\x7f{_FORMAT}]*[^{_EDGE}{_FORMAT}])?$"
# The rule before the lookalike checks (stored_id_problem): what the graph may hold, so what the
# routes that must reach every stored id (an erasure) publish.
STORED_ID_PATTERN = rf"^[^{_EDGE}](?:[^\x00-\x1f\x7f]*[^{_EDGE}])?$"
# The id rule in words, for each id's description in /openapi.json, with what the pattern does not state.
ID_RULE = (
    "an id: besides the pattern (no white space at either end, no control or format characters), "
    "in Unicode NFC ('é' as U+00E9, not 'e' + U+0301) and not '.' or '..'"
)
# What the path id of a route that removes what is stored (app.raw_path.STORED_ID_ROUTES) takes besides
# today's ids, appended to its description in /openapi.json.
STORED_ID_RULE = (
    "also an id stored before 2026-12-07 that today's id rule refuses (not NFC, a format character, "
    "'.' or '..'), so that everything stored can be removed"
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FORMAT_CHARACTER = re.compile(f"[{_FORMAT}]")
_SURROGATE = re.compile("[\ud800-\udfff]")

# POST /v1/events and the bulk importers
MAX_EVENTS_PER_BATCH = 1_000
MAX_BODY_BYTES = 4 * 1024 * 1024  # 1,000 events with item details fit comfortably
MAX_TEXT_LENGTH = 1_000  # item titles carried by events
MAX_DESCRIPTION_LENGTH = 2_000  # an item's description (catalogue API, items.csv)
MAX_REVIEW_LENGTH = 5_000  # a review event's text
MAX_QUERY_LENGTH = 500  # a search event's query
MAX_TAG_LENGTH = 100  # a tag event's tag
MAX_CATEGORY_DEPTH = 10  # categories in one path, general to specific
MAX_PRICE = 1e12
MAX_IMPORT_BATCH = 10_000

# Knowledge-graph entities and item attributes (relation names follow graph_schema.relation_names)
MAX_KIND_LENGTH = 64
KIND_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # an entity's kind: brand, artist, genre, country...
_KIND = re.compile(KIND_PATTERN)
MAX_ATTRIBUTE_RELATIONS = 32  # relations in one event's item.attributes
MAX_ATTRIBUTE_VALUES = 32  # values per relation there
# Distinct attribute relations in one batch: the batch's write statement has one stage per
# relationship type, so this bounds its size.
MAX_BATCH_ATTRIBUTE_RELATIONS = 256

# The catalogue API (PUT/POST /v1/items), `kgrec items import` and business rules
MAX_ITEMS_PER_BATCH = 1_000
MAX_STOCK = 1_000_000_000
# the end of 9999 in epoch ms: a catalogue or rule time beyond it is refused (Neo4j's driver cannot
# send an integer of 2**63 or more, and FalkorDB would store a clipped one)
MAX_EPOCH_MS = 253_402_300_799_999
MAX_GRAPH_INTEGER = 2**63 - 1  # the largest integer both engines store (a seq_index, a KGAT index)
CURRENCY_PATTERN = r"^[A-Z]{3}$"  # an ISO 4217 code: EUR, USD, GBP
MAX_RULE_FACTOR = 1_000.0  # a boost's or bury's score multiplier
CATALOGUE_CHECK_S = 0.5  # how often a serving process asks whether the catalogue changed

# read endpoints
MAX_K = 100
MAX_OFFSET = 1_000
MAX_PATHS = 10
MAX_INTERESTS = 50
# Model versions besides the active one that an experiment's variants may name (POST
# /v1/experiments), and that each serving process keeps loaded with their topic items, exploration
# arms and compiled rules: one bound, so a running experiment's versions never evict each other
# (each reload reads an artifact of about 0.2 GB for Amazon Beauty).
MAX_SIDE_VERSIONS = 4
MAX_AUDIENCE_PAGE = 1_000  # users in one page of GET /v1/audiences
# An audience cursor: base64 of compact UTF-8 JSON with the last user's id (at most 4 bytes a
# character, or 2 for an escaped quote or backslash) and at most 109 bytes of the rest.
MAX_AUDIENCE_CURSOR = 4 * -(-(4 * MAX_ID_LENGTH + 128) // 3)
MAX_INTEREST_DRIVERS = 10

# CLI
MAX_EVAL_K = 1_000
MAX_EPOCHS = 500


def id_problem(value: object) -> str | None:
    """Why ``value`` is not a valid id, worded to follow the id's name ("user_id is empty"); None if valid."""
    if (problem := stored_id_problem(value)) is not None:
        return problem
    # An id is an opaque key the client sends again, so it is refused rather than normalised: a
    # stored id silently changed would no longer be the one the client holds. Each of these looks
    # the same as, or addresses the same URL as, another id.
    assert isinstance(value, str)
    if not unicodedata.is_normalized("NFC", value):
        return "must be in Unicode normalization form NFC (composed: 'é' as U+00E9, not 'e' + U+0301)"
    if found := _FORMAT_CHARACTER.search(value):
        code = ord(found[0])
        return f"must not contain invisible format characters (U+{code:04X} at character {found.start()})"
    if value in (".", ".."):
        return "must not be '.' or '..': browsers and HTTP clients collapse those URL path segments"
    return None


def without_format_characters(text: str) -> str:
    """``text`` without the format characters (category Cf) the id rule refuses, in NFC again (a joiner
    taken out may leave a letter and its combining mark apart): for an id kgrec makes from text."""
    return unicodedata.normalize("NFC", _FORMAT_CHARACTER.sub("", text))


def stored_id_problem(value: object) -> str | None:
    """Why ``value`` cannot be an id the graph holds, as :func:`id_problem` words it; None if it can.

    The id rule before 2026-12-07 (no NFC, format-character or dot checks): the graph may hold ids
    that only this allows, and the routes that remove what is stored must still reach them
    (:data:`app.raw_path.STORED_ID_ROUTES`: ``DELETE /v1/users/{user_id}``, ``DELETE
    /v1/items/{item_id}`` and ``DELETE /v1/rules/{rule_id}``)."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not value:
        return "is empty"
    if not value.strip():
        return "is blank: white space only"
    if len(value) > MAX_ID_LENGTH:
        return f"is longer than {MAX_ID_LENGTH} characters (got {len(value)})"
    if _CONTROL.search(value):
        return "must not contain control characters"
    if found := _SURROGATE.search(value):  # "\ud83d" in JSON: no character, and no UTF-8 for the graph
        return f"is not valid Unicode: a lone surrogate U+{ord(found[0]):04X} at character {found.start()}"
    if value != value.strip():
        return "must not start or end with white space"
    return None


def kind_problem(value: object) -> str | None:
    """Why ``value`` is not a valid entity kind (worded to follow "kind"); None if valid."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not _KIND.fullmatch(value):
        return f"{value[:80]!r} must be 1 to {MAX_KIND_LENGTH} characters of letters, digits, '_' and '-'"
    return None
