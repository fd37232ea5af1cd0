"""The API contract: the request and response models every view declares, and ``/openapi.json`` shows.

Query parameters are validated against these models (a bad value is a 400 naming
the parameter); bounds come from :mod:`kgrec.limits` through :mod:`kgrec.field_types`.
The event body is :class:`kgrec.events.validation.Event`, declared in the core
because ``kgrec events import`` validates with it too. Response models only
document: the tests check every response against them.
"""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    TypeAdapter,
    model_validator,
)
from pydantic_core import PydanticCustomError

from kgrec import erasure
from kgrec import serving as core
from kgrec.catalogue import CatalogueItem, ItemFields
from kgrec.diversity import Diversity
from kgrec.events.validation import Event
from kgrec.field_types import Id, OptionalId, PriceFilter, shown
from kgrec.limits import (
    MAX_AUDIENCE_CURSOR,
    MAX_AUDIENCE_PAGE,
    MAX_BATCH_ATTRIBUTE_RELATIONS,
    MAX_EVENTS_PER_BATCH,
    MAX_INTEREST_DRIVERS,
    MAX_INTERESTS,
    MAX_ITEMS_PER_BATCH,
    MAX_K,
    MAX_OFFSET,
    MAX_PATHS,
)
from kgrec.rules import RuleBody

# A query value is text, read with the grammar JSON gives the parameter's documented type, so
# each value has one spelling: "05", " 5", "1_0", "inf" and "TRUE" are refused, not read as 5,
# 10, infinity and true.
_GRAMMARS = {
    "integer": (
        re.compile(r"-?(0|[1-9][0-9]*)", re.ASCII),
        "an integer as JSON writes it (like 20 or -1: no leading zero, '+', space or '_')",
    ),
    "number": (
        re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?", re.ASCII),
        "a number as JSON writes it (like 9.99 or 1e3: no '+', space, '_', inf or nan)",
    ),
    "boolean": (re.compile(r"true|false"), "true or false"),
}


@functools.cache
def _typed_parameters(model: type[BaseModel]) -> dict[str, tuple[str, bool]]:
    """Each integer, number or boolean parameter of ``model``: its JSON type, and whether "" (not
    given, as an HTML form sends it) is one of its values."""
    typed = {}
    for name, schema in model.model_json_schema()["properties"].items():
        branches = schema.get("anyOf", [schema])
        kinds = [b["type"] for b in branches if b.get("type") in _GRAMMARS]
        if kinds:
            typed[name] = (kinds[0], any(b.get("const") == "" for b in branches))
    return typed


class Query(BaseModel):
    """Query parameters: only the model's own (another is a 400 naming it), each value in the
    JSON grammar of its type; defaults are checked like given values."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _json_grammar(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name, (kind, empty_allowed) in _typed_parameters(cls).items():
            raw = data.get(name)
            pattern, wanted = _GRAMMARS[kind]
            if isinstance(raw, str) and not (raw == "" and empty_allowed) and not pattern.fullmatch(raw):
                raise PydanticCustomError(
                    "query_grammar",
                    "{field} must be {wanted}, not {value}",
                    {"field": name, "wanted": wanted, "value": shown(raw)},
                )
        return data


# Every id a route captures (user_id, item_id, job_id) is checked against this before any view runs.
PATH_ID = TypeAdapter(Id)


# --- queries -----------------------------------------------------------------------------------


DiversityCap = Annotated[
    Literal[""] | Annotated[int, Field(ge=1, le=MAX_K)],
    AfterValidator(lambda value: None if value == "" else value),
]


class ItemFilterQuery(Query):
    """The catalogue filters of recommendations and similar items (empty: not filtered)."""

    brand: OptionalId = Field("", description="only items of this brand (its id)")
    category: OptionalId = Field(
        "", description="only items in this category or any of its subcategories (its id)"
    )
    min_price: PriceFilter = Field(
        "", description="only items with a known price of at least this; at most max_price"
    )
    max_price: PriceFilter = Field("", description="only items with a known price of at most this")

    @model_validator(mode="after")
    def _price_range(self) -> ItemFilterQuery:
        low, high = self.min_price, self.max_price
        if isinstance(low, float) and isinstance(high, float) and low > high:
            raise PydanticCustomError(
                "price_range",
                "min_price ({low}) is above max_price ({high})",
                {"field": "min_price", "low": f"{low:g}", "high": f"{high:g}"},
            )
        return self

    max_per_brand: DiversityCap = Field(
        "", description="at most this many items of one brand on the page (a greedy reorder)"
    )
    max_per_category: DiversityCap = Field(
        "", description="at most this many items of one (most specific) category on the page"
    )

    def filters(self) -> core.ItemFilters:
        """The filters for the serving core (an empty filter has become None)."""
        return core.ItemFilters(self.brand, self.category, self.min_price, self.max_price)  # type: ignore[arg-type]

    def diversity(self) -> Diversity:
        """The diversity caps (none given: no reorder)."""
        return Diversity(self.max_per_brand, self.max_per_category)  # type: ignore[arg-type]


ItemCount = Annotated[int, Field(ge=1, le=MAX_K, description="how many items")]
# `record=false`: a look at the answer that no shopper sees (the operator console, a preview).
Record = Annotated[
    bool,
    Field(
        description="record the answer as an impression (`true` or `false`); `false` for an answer no "
        "shopper sees (the operator console, a preview): no experiment exposure, no exploration step, "
        "nothing to attribute events to, and a `recommendation_id` that is never stored"
    ),
]


class RecommendationsQuery(ItemFilterQuery):
    k: ItemCount = 20
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET, description="how many ranked items to skip")] = 0
    exclude: Literal[core.EXCLUSIONS] = Field(  # type: ignore[valid-type]
        "seen", description="which of the user's items to leave out"
    )
    explain: bool = Field(False, description="attach each item's best path (`true` or `false`)")
    record: Record = True


class SimilarQuery(ItemFilterQuery):
    k: ItemCount = 20
    record: Record = True


class ExplanationQuery(Query):
    max_paths: Annotated[int, Field(ge=1, le=MAX_PATHS, description="how many paths, best first")] = 3


class InterestsQuery(Query):
    k: Annotated[int, Field(ge=1, le=MAX_INTERESTS, description="how many brands and categories each")] = 10
    items: Annotated[
        int, Field(ge=0, le=MAX_INTEREST_DRIVERS, description="how many driving items per interest")
    ] = 3


# --- bodies ------------------------------------------------------------------------------------

EventList = Annotated[
    list[Event],
    Field(
        min_length=1,
        max_length=MAX_EVENTS_PER_BATCH,
        description=(
            f"at most {MAX_BATCH_ATTRIBUTE_RELATIONS} distinct relations in the items' attributes "
            "of one batch"
        ),
    ),
]


class EventEnvelope(BaseModel):
    """The batch as an object: other keys are ignored."""

    events: EventList


class EventBatch(RootModel[EventList | EventEnvelope]):
    """A batch of events (see maxItems): a list, or an object with the list in ``events``."""


ItemList = Annotated[
    list[CatalogueItem],
    Field(
        min_length=1,
        max_length=MAX_ITEMS_PER_BATCH,
        description=f"at most {MAX_BATCH_ATTRIBUTE_RELATIONS} distinct relations in the items' attributes",
    ),
]


class ItemEnvelope(BaseModel):
    """The batch as an object: other keys are ignored."""

    items: ItemList


class ItemBatch(RootModel[ItemList | ItemEnvelope]):
    """A batch of catalogue items (see maxItems): a list, or an object with the list in ``items``."""


class PutItemFields(ItemFields):
    """One item's catalogue fields, and optionally its id, which must be the path's."""

    # Optional but never null: a default of None would show in the document as one a client may send.
    item_id: Id = Field(
        None,
        description="may be left out; when given it must equal the item_id in the path (another id is a "
        "422 naming both)",
        json_schema_extra=lambda schema: schema.pop("default", None),
    )


class ItemBody(RootModel[PutItemFields]):
    """One item's catalogue fields (the id is in the path; the body may repeat it); no body at all
    makes a bare listed item."""


# --- responses ---------------------------------------------------------------------------------


class FieldProblem(BaseModel):
    index: int = Field(description="the event's position in the batch; -1: the batch itself")
    field: str = Field(description='the field at fault, like "item.price" or "item.attributes.origin"')
    reason: str


# The 503 of an endpoint that uses the job queue (embedded, its broker is the graph server).
QUEUE_DOWN = (
    "the graph server is not running (`graph_unavailable`), or the job queue's broker or result store "
    "does not answer (`queue_unavailable`); with Retry-After"
)


class Error(BaseModel):
    """Every error: a code, a sentence, and the parameter or field at fault."""

    error: str = Field(description="a short machine-readable code")
    detail: str = Field(description="what went wrong, for people")
    field: str | None = Field(None, description="the parameter or field at fault")
    errors: list[FieldProblem] | None = Field(None, description="with 422: every invalid event")


class Status(BaseModel):
    status: str


class Readiness(Status):
    engine: str
    model_version: str


class GraphStats(BaseModel):
    nodes: dict[str, int] = Field(description="node counts per label")
    relationships: dict[str, int] = Field(description="relationship counts per type")


class PathNode(BaseModel):
    label: Literal["User", "Item", "Brand", "Category", "Entity", "Topic"]
    id: str | None = Field(description="null only on an anonymous node")
    name: str | None = Field(description="null only on an anonymous node")
    anonymous: bool | None = Field(
        None,
        description="true on a co-user path's other customers (label User, id and name null, their "
        "edges without weight): another customer is never named; only on such nodes",
    )
    kind: str | None = Field(
        None, description="an Entity node's kind (artist, genre, ...); only on Entity nodes"
    )


class PathRelationship(BaseModel):
    type: str
    relation: str | None = Field(
        None, description="a knowledge edge's exact relation name (only on knowledge edges)"
    )
    direction: Literal["out", "in"]
    weight: float | None = Field(description="decayed to now")


class Path(BaseModel):
    """One explanation path from the user to an item, with the Cypher that finds it."""

    kind: Literal[
        "co_purchase",
        "related_item",
        "shared_attribute",
        "same_brand",
        "interest",
        "co_user",
        "reviewed_topic",
    ]
    score: float
    sentence: str
    nodes: Annotated[list[PathNode], Field(min_length=3, max_length=4)]
    relationships: list[PathRelationship]
    support: Annotated[int, Field(ge=1)]
    cypher: str = Field(description="a Cypher query showing this path in Neo4j Browser")


class ScoredItem(BaseModel):
    item_id: str
    score: float
    reason: Path | None = Field(None, description="with explain=true")
    rules: list[str] = Field([], description="the ids of the business rules that moved or pinned this item")
    explore: str | None = Field(
        None,
        description="only on a new user's explored slots: the bandit arm (`category:<id>` or `topic:<id>`) "
        "that chose the item; `score` is then the arm's sampled click probability",
    )


class Filters(BaseModel):
    """The filters that were given."""

    brand: str | None = None
    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    max_per_brand: int | None = None
    max_per_category: int | None = None


class Recommendations(BaseModel):
    user_id: str
    model_version: str
    recommendation_id: str = Field(json_schema_extra={"format": "uuid"})
    cold_start: bool = Field(description="true when the user has no history")
    k: int
    offset: int
    filters: Filters
    items: list[ScoredItem]
    reason: str | None = Field(
        default=None,
        description="only for a cold start from topics: the user's searches, reviews or tags chose the items",
    )


class Explanation(BaseModel):
    user_id: str
    item_id: str
    model_version: str
    paths: list[Path] = Field(description="best first")


class Similar(BaseModel):
    item_id: str
    model_version: str
    k: int
    filters: Filters
    items: list[ScoredItem]


class InterestDriver(BaseModel):
    item_id: str
    title: str | None
    weight: float


class Interest(BaseModel):
    id: str
    name: str
    weight: float = Field(description="decayed to now")
    events: int
    last_ts: int | None
    items: list[InterestDriver]


class Interests(BaseModel):
    user_id: str
    brands: list[Interest]
    categories: list[Interest]
    topics: list[Interest] = Field(
        default_factory=list,
        description="topics of the user's searches, reviews and tags; items: the topic's most central items",
    )


class Removed(BaseModel):
    user: int
    relationships: int
    interactions: int
    interests: int
    embeddings: int
    impressions: int = Field(
        description="recommendations and similar-items answers recorded for the user, deleted with the "
        "events attributed to them"
    )
    journal_lines: int = Field(
        description="the user's lines blanked in the impression journals of the host that answered (other "
        "hosts blank theirs within 10 s)"
    )
    update_plans: int | None = Field(
        description="incremental-update plans in flight that named the user, withdrawn; null when the job "
        "queue did not answer (those updates then write no vector for the user, and the plans expire "
        "within a day)"
    )


class Erasure(BaseModel):
    user_id: str
    erased: bool
    removed: Removed
    popularity_adjusted_items: int
    logs: dict[str, Literal[erasure.LOG_STATUSES]] = Field(  # type: ignore[valid-type]
        description="per server (`graph`, `impressions`), what became of its append-only file: `rewritten` "
        "(a rewrite started after the erasure is on disk, the old files deleted), `running` (started after "
        "it, not finished within the wait; the server finishes it), `held` (not rewritten: the snapshot "
        "guard holds rewrites off), `no_aof` (the server keeps none: Neo4j), `refused` (the server refuses "
        "BGREWRITEAOF), `failed` (see the server's log), `unavailable` (the server failed or did not answer "
        "the rewrite; the user is erased, the log holds the deleted data until the server's next rewrite)"
    )


class IngestResult(BaseModel):
    received: int
    applied: int
    duplicates: int
    erased: int = Field(
        description="events left out because their user was erased at or after their `ts`, or less than "
        "5 minutes (KGREC_MAX_CLOCK_SKEW_S if longer) before it, for client clocks running ahead "
        "(not recorded: sent again, they are left out again)"
    )


class CatalogueWrite(BaseModel):
    received: int = Field(description="items in the request")
    items: int = Field(
        description="distinct item ids written (several entries of one id are merged in order: a later "
        "entry's given fields replace the earlier's, fields it leaves out keep theirs)"
    )
    revision: int = Field(description="the catalogue revision after the write")


class Delisted(BaseModel):
    item_id: str
    delisted_at: int = Field(description="epoch ms; a second DELETE keeps the first time")
    revision: int


class CatalogueItemView(BaseModel):
    """An item as the graph holds it."""

    item_id: str
    title: str | None
    description: str | None = Field(None, description="plain text, read for topics only")
    brand: str | None
    brands: list[str] = Field(description="every brand the graph links (usually one)")
    categories: list[str] = Field(description="general to specific")
    categories_above: list[str] = Field(
        description="every category above those in the stored tree (a category filter or rule on one "
        "reaches the item; links on a loop left out), by id"
    )
    price: float | None
    currency: str | None
    available: bool
    stock: int | None
    attributes: dict[str, list[str]] = Field(description="knowledge edges from the item, per relation")
    listed: bool = Field(description="part of the catalogue (false: only a co-purchase target)")
    listed_at: int | None
    delisted_at: int | None
    created_at: int | None
    updated_at: int | None


class RuleView(BaseModel):
    """A stored rule, in the form it was posted, with its state now."""

    id: str
    action: Literal["block", "pin", "boost", "bury"]
    target: dict[str, Any] | None = Field(None, description="block, boost, bury: what they apply to")
    item: str | None = Field(None, description="pin: the pinned item")
    position: int | None = None
    factor: float | None = None
    when: dict[str, str] | None = None
    starts_at: int | None
    ends_at: int | None
    surface: Literal["recommendations", "similar", "both"]
    created_at: int | None
    active: bool = Field(description="it has started (starts_at is past or missing)")
    expired: bool = Field(description="it has ended (ends_at is past)")
    target_items: int | None = Field(
        description="how many items of the active model its target names now (0: a misspelt or not yet "
        "listed brand, category, item or attribute value); null before the first model, or when it "
        "could not be counted"
    )


class RuleList(BaseModel):
    rules: list[RuleView]


class RuleDeleted(BaseModel):
    rule_id: str
    deleted: bool


class NewRule(RootModel[RuleBody]):
    """A business rule (see the fields' descriptions for which fields each action takes)."""


class AudienceConditions(BaseModel):
    """Exactly one target (brand, category, topic or item) and optional thresholds."""

    model_config = ConfigDict(extra="forbid")

    brand: OptionalId = ""
    category: OptionalId = ""
    topic: OptionalId = ""
    item: OptionalId = ""
    min_weight: Annotated[
        float, Field(ge=0, le=1e9, allow_inf_nan=False, description="decayed weight at least this")
    ] = 0.0
    active_within_days: Annotated[
        int | None, Field(ge=1, le=3650, description="the user's latest event on the target is this recent")
    ] = None


class AudienceQuery(Query, AudienceConditions):
    limit: Annotated[int, Field(ge=1, le=MAX_AUDIENCE_PAGE, description="users per page")] = 100
    cursor: Annotated[
        str, Field(max_length=MAX_AUDIENCE_CURSOR, description="`next_cursor` of the previous page")
    ] = ""


class AudienceMember(BaseModel):
    user_id: str
    weight: float = Field(description="decayed interest weight in the target at `as_of`")
    events: int = Field(description="events of the user on the target")
    last_ts: int | None = Field(None, description="the user's latest event on the target (epoch ms)")


class Audience(BaseModel):
    brand: str | None = None
    category: str | None = None
    topic: str | None = None
    item: str | None = None
    min_weight: float
    active_within_days: int | None
    as_of: int = Field(description="the instant weights are decayed to (epoch ms); fixed across pages")
    size: int = Field(
        description="users matching the conditions, counted for the first page; later pages repeat that count"
    )
    users: list[AudienceMember] = Field(description="strongest first; ties by user id")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class AudienceCsv(RootModel[str]):
    """text/csv: a header `user_id,weight,events,last_ts`, then one line per user, strongest first."""


# Answers that are not JSON: model name -> media type (the OpenAPI document says so).
NON_JSON_ANSWERS = {"AudienceCsv": "text/csv"}
# Request bodies an operation may go without (the OpenAPI document says so).
OPTIONAL_BODIES = {"ItemBody", "TrainRequest"}


class OpenApiDocument(RootModel[dict[str, Any]]):
    """An OpenAPI 3.1 document."""


class Job(BaseModel):
    id: str
    state: str = Field(description="PENDING, STARTED, PROGRESS, SUCCESS or FAILURE")
    stage: str | None = None
    percent: float | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
