"""The catalogue: item upserts and delisting, and what serving must hide or re-price at once.

Writes (``PUT``/``POST /v1/items``, ``DELETE /v1/items/{id}``, ``kgrec items import``)
validate a batch as a whole (every bad item reported as ``{index, field, reason}``,
nothing written) and apply it in one statement that also bumps the catalogue
revision (:mod:`graph_schema.statements.catalogue`). A field that is given is
written (``null`` removes it); a field that is left out keeps its stored value.

Serving processes hold a :class:`CatalogueView`: at most every
``CATALOGUE_CHECK_S`` it reads the revision (one node), and when it moved, the
items changed since (one indexed read). :func:`allowed_items` turns that into the
``allowed`` mask of the Recommender: unavailable, delisted and not-yet-listed items
are left out, and price filters use the catalogue's current prices.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Annotated, Any

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from graph_schema.allow_list import ATTRIBUTE_RELATIONS
from graph_schema.relation_names import relation_problem
from graph_schema.statements.catalogue import (
    CATALOGUE,
    CATALOGUE_CHANGES,
    CATALOGUE_ITEM,
    CATALOGUE_REVISION,
    DELIST_ITEM,
    upsert_catalogue_statement,
)
from graph_schema.statements.knowledge import KNOWN_ITEMS
from kgrec.category_tree import categories_above, check_paths, cycle_problems, distinct_path, path_links
from kgrec.events.ingest import attribute_links, attribute_params
from kgrec.events.validation import FieldError, ReplacingAttributes
from kgrec.field_types import (
    TIME_FORMS,
    WHOLE_NUMBER,
    Description,
    Id,
    Price,
    Title,
    api_time,
    one_brand_problem,
    shown,
    string_reason,
)
from kgrec.gateway import GraphGateway, retry_on_conflict
from kgrec.item_facts import ItemFacts
from kgrec.limits import (
    CATALOGUE_CHECK_S,
    CURRENCY_PATTERN,
    MAX_BATCH_ATTRIBUTE_RELATIONS,
    MAX_CATEGORY_DEPTH,
    MAX_DESCRIPTION_LENGTH,
    MAX_ITEMS_PER_BATCH,
    MAX_STOCK,
    id_problem,
)
from kgrec.single_flight import SingleFlight

CategoryIds = Annotated[list[Id], Field(min_length=1, max_length=MAX_CATEGORY_DEPTH)]


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


CategoryPath = Annotated[
    Annotated[list[Id], Field(min_length=1, max_length=MAX_CATEGORY_DEPTH)] | None,
    BeforeValidator(_one_or_many, json_schema_input_type=Id | CategoryIds | None),
    AfterValidator(distinct_path),
    Field(
        description="a category id, or a path of distinct ids from general to specific; replaces the "
        "stored ones"
    ),
]
Currency = Annotated[str, Field(pattern=CURRENCY_PATTERN, description="an ISO 4217 code, like EUR")]
Stock = Annotated[int, Field(ge=0, le=MAX_STOCK, description="units in stock"), WHOLE_NUMBER]
CatalogueTime = Annotated[
    api_time(),
    Field(description=f"{TIME_FORMS}, from 1970 to 9999 (may be in the future)"),
]


class ItemFields(BaseModel):
    """An item's catalogue fields: a field given is written (null removes it), one left out is kept."""

    model_config = ConfigDict(extra="forbid")

    title: Title | None = None
    description: Description | None = None
    brand: Id | None = Field(None, description="the brand's id; replaces the stored brand")
    categories: CategoryPath = None
    price: Price | None = None
    currency: Currency | None = None
    available: StrictBool | None = Field(None, description="false: never recommended until true again")
    stock: Stock | None = None
    # left out: kept (the default); never null, so the document shows no null default
    attributes: ReplacingAttributes = Field(
        None, json_schema_extra=lambda schema: schema.pop("default", None)
    )
    listed_at: CatalogueTime | None = Field(
        None, description="before this time the item is never recommended"
    )
    delisted_at: CatalogueTime | None = Field(
        None, description="from this time on the item is never recommended (DELETE sets it to now)"
    )


class CatalogueItem(ItemFields):
    """One item of a batch: its id and its fields."""

    item_id: Id

    @model_validator(mode="after")
    def _one_brand(self) -> CatalogueItem:
        reason = one_brand_problem(
            "brand" in self.model_fields_set, (self.attributes or {}).get("produced_by")
        )
        if reason is None:
            return self
        raise PydanticCustomError("one_brand", reason, {"field": "attributes.produced_by"})


ITEM_FIELDS = tuple(CatalogueItem.model_fields)
_ITEMS = TypeAdapter(list[CatalogueItem])
_PROPERTIES = ("title", "description", "price", "currency", "available", "stock", "listed_at", "delisted_at")


def _field(error: ErrorDetails, indexed: bool) -> str:
    context = error.get("ctx") or {}
    # a list's positions are part of the name (``variants.0.traffic``); a union's member tags
    # (``literal['']``, ``function-after[...]``, ``constrained-str``) are not, but an unknown key
    # is named as sent
    tags = error["type"] != "extra_forbidden"
    names = [
        str(part)
        for part in error["loc"][1 if indexed else 0 :]
        if isinstance(part, int) or not (tags and ("[" in part or part.startswith("constrained-")))
    ]
    if not names and "field" in context:  # a rule over several fields names the one to change
        return str(context["field"])
    name = ".".join(names) if names else "item"
    relation = context.get("relation") if error["type"] == "item_attributes" else None
    return f"{name}.{relation}" if relation else name


def field_reason(error: ErrorDetails, field: str) -> str:
    """Why a field was refused, in kgrec's words and with the value (the id rule, the relation
    rule, ISO 4217, the field's bound)."""
    kind, value = error["type"], error.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if field == "description":
        got = f"{len(value)} characters" if isinstance(value, str) else repr(value)[:40]
        return f"must be a string of at most {MAX_DESCRIPTION_LENGTH} characters without NUL (got {got})"
    if kind == "string_pattern_mismatch" and field.endswith("currency"):
        return id_problem(value) or f"{str(value)[:40]!r} is not an ISO 4217 code like EUR"
    if kind == "string_pattern_mismatch" and field.endswith("relation"):
        return f"relation {relation_problem(value)}"
    if kind.startswith("string_"):
        return string_reason(error)
    if kind in ("float_type", "int_type", "bool_type") and isinstance(value, str):
        wanted = "a boolean" if kind == "bool_type" else "a number"
        return f"must be {wanted}, not a string (got {shown(value)})"
    message = error["msg"]
    # the attribute rules and some bounds name the value themselves; a rule over several fields
    # (``ctx.field``) has the whole object as its input
    if kind in ("item_attributes", "timestamp") or "(got " in message or "field" in (error.get("ctx") or {}):
        return message
    return f"{message} (got {shown(value)})"


def error_problems(exc: ValidationError, *, indexed: bool) -> list[FieldError]:
    """The first problem of each invalid object, as (index, field, reason).

    ``indexed``: the objects were a list (the first part of each location is the index);
    otherwise one object, reported as index 0.
    """
    first: dict[int, FieldError] = {}
    # A union's literal alternative (OptionalId's "") is the least telling reason: the id rule
    # says what is wrong with " x", "Input should be ''" does not.
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] == "literal_error")
    for error in errors:
        loc = error["loc"]
        index = (int(loc[0]) if loc and isinstance(loc[0], int) else -1) if indexed else 0
        name = _field(error, indexed)
        first.setdefault(index, FieldError(index, name, field_reason(error, name)))
    return [first[i] for i in sorted(first)]


def validate_items(
    raw_items: Any, *, max_batch: int = MAX_ITEMS_PER_BATCH
) -> tuple[list[CatalogueItem], list[FieldError]]:
    """Validate a batch as a whole: the items, and each bad item's first problem (index, field, reason)."""
    if not isinstance(raw_items, list):
        return [], [FieldError(-1, "items", "must be a list of item objects")]
    if not raw_items:
        return [], [FieldError(-1, "items", "must contain at least one item")]
    if len(raw_items) > max_batch:
        return [], [FieldError(-1, "items", f"at most {max_batch} items per batch (got {len(raw_items)})")]
    try:
        items = _ITEMS.validate_python(raw_items)
    except ValidationError as exc:
        return [], error_problems(exc, indexed=True)
    relations = {r for item in items for r in item.attributes or ()}
    if len(relations) > MAX_BATCH_ATTRIBUTE_RELATIONS:
        reason = f"at most {MAX_BATCH_ATTRIBUTE_RELATIONS} distinct attribute relations per batch"
        return [], [FieldError(-1, "items", f"{reason} (got {len(relations)})")]
    return items, []


class ItemsRefused(ValueError):
    """Items valid on their own that the graph refuses (a category path that would loop); nothing written."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        super().__init__(f"{len(errors)} item(s) refused")
        self.errors = list(errors)


def _category_paths(items: Sequence[CatalogueItem]) -> list[tuple[int, Sequence[str]]]:
    return [(index, item.categories) for index, item in enumerate(items) if item.categories]


def _loop_errors(problems: Sequence[tuple[int, str]]) -> list[FieldError]:
    return [FieldError(index, "categories", reason) for index, reason in problems]


def category_loops(gateway: GraphGateway, items: Sequence[CatalogueItem]) -> list[FieldError]:
    """The items whose category path would close a loop with the stored tree or an earlier item's path."""
    return _loop_errors(cycle_problems(gateway, _category_paths(items)))


def _category_links(path: Sequence[str]) -> list[dict[str, str]]:
    return [{"child_id": c, "parent_id": p} for c, p in path_links(path)]


@dataclass
class _Merged:
    """One id's entries of a batch merged in order: what writing them one after the other leaves."""

    props: dict[str, Any] = field(default_factory=dict)
    brands: list[str] | None = None  # None: the stored brand stays
    categories: list[str] | None = None  # None: the stored categories stay
    attributes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # relation -> replacing values

    def add(self, item: CatalogueItem) -> None:
        """Lay a later entry over: the fields it gives replace, those it leaves out stay."""
        given = item.model_fields_set
        attributes = dict(item.attributes or {})
        extra_brands = list(attributes.pop("produced_by", ()))
        extra_categories = list(attributes.pop("belongs_to", ()))
        self.props.update({name: getattr(item, name) for name in _PROPERTIES if name in given})
        # produced_by / belongs_to attributes replace the brands / categories, as the fields do
        if "brand" in given or extra_brands:
            self.brands = ([item.brand] if "brand" in given and item.brand else []) + extra_brands
        if "categories" in given or extra_categories:
            categories = list(item.categories or ()) if "categories" in given else []
            self.categories = categories + extra_categories
        self.attributes.update(attributes)


def upsert_params(items: Sequence[CatalogueItem], known_items: set[str], now_ms: int) -> dict[str, Any]:
    """The upsert statement's parameters.

    Several entries for one id are merged in order (a later entry's given fields replace the
    earlier's, fields it leaves out keep theirs), so a batch writes what sending its entries one
    after the other would, wherever a file's batches are cut; every entry's category path is linked.
    """
    merged: dict[str, _Merged] = {}
    links: dict[tuple[str, str], dict[str, str]] = {}
    for item in items:
        merged.setdefault(item.item_id, _Merged()).add(item)
        if "categories" in item.model_fields_set:
            for link in _category_links(item.categories or ()):
                links[(link["child_id"], link["parent_id"])] = link
    rows = []
    replaced_brands, replaced_categories, replaced_attributes = [], [], []
    for item_id, state in merged.items():
        if state.brands is not None:
            replaced_brands.append({"id": item_id, "keep": state.brands})
        if state.categories is not None:
            replaced_categories.append({"id": item_id, "keep": state.categories})
        for relation, values in state.attributes.items():
            replaced_attributes.append({"id": item_id, "relation": relation, "keep": list(values)})
        rows.append(
            {
                "id": item_id,
                "props": state.props,
                "brands": list(dict.fromkeys(state.brands or ())),
                "categories": list(dict.fromkeys(state.categories or ())),
            }
        )
    # attribute_params reads events' item_id and item.attributes: hand it the items in that shape.
    shaped = [
        SimpleNamespace(item_id=item_id, item=SimpleNamespace(attributes=state.attributes))
        for item_id, state in merged.items()
        if state.attributes
    ]
    return {
        "now": now_ms,
        "items": rows,
        "category_links": list(links.values()),
        "replaced_brands": replaced_brands,
        "replaced_categories": replaced_categories,
        "replaced_attributes": replaced_attributes,
        **attribute_params(shaped, known_items | set(merged)),  # type: ignore[arg-type]
    }


def write_items(gateway: GraphGateway, items: Sequence[CatalogueItem], now_ms: int | None = None) -> int:
    """Upsert validated items in one atomic write; returns the new catalogue revision.

    Raises :class:`ItemsRefused` (nothing written) for a category path that would close a loop,
    with the stored tree when the write commits: a write whose check another writer's links
    outdated before it committed is rolled back and checked again.
    """
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    values = sorted(
        {
            value
            for item in items
            for relation, vals in (item.attributes or {}).items()
            if relation not in ATTRIBUTE_RELATIONS
            for value in vals
        }
    )

    def attempt(_: int) -> int:
        tree = check_paths(gateway, _category_paths(items))
        if tree.problems:
            raise ItemsRefused(_loop_errors(tree.problems))
        known = {row["id"] for row in gateway.read(KNOWN_ITEMS, {"ids": values})} if values else set()
        params = {**upsert_params(items, known, now_ms), **tree.params()}
        # rolled back whole (a GraphConflict) if another writer stored links above the paths since the check
        summary = gateway.write(upsert_catalogue_statement(attribute_links(params)), params)
        return int(summary.rows[0]["revision"]) if summary.rows else 0

    return retry_on_conflict(attempt, "items")


def delist_item(gateway: GraphGateway, item_id: str, now_ms: int | None = None) -> dict[str, Any] | None:
    """Delist an item (its node, edges and history stay); None if the graph has no such item."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    summary = gateway.write(DELIST_ITEM, {"item_id": item_id, "now": now_ms})
    return dict(summary.rows[0]) if summary.rows else None


def _category_path(categories: Sequence[Mapping[str, Any]]) -> list[str]:
    """The item's categories, general to specific (by their depth among the item's own categories)."""
    parents = {c["id"]: set(c["parents"] or ()) for c in categories if c["id"] is not None}

    def depth(category: str, seen: frozenset[str] = frozenset()) -> int:
        above = [p for p in parents.get(category, ()) if p in parents and p not in seen]
        return 1 + max((depth(p, seen | {category}) for p in above), default=0)

    return sorted(parents, key=lambda c: (depth(c), c))


def read_item(gateway: GraphGateway, item_id: str) -> dict[str, Any] | None:
    """The item as the graph holds it, or None."""
    rows = gateway.read(CATALOGUE_ITEM, {"item_id": item_id})
    if not rows:
        return None
    row = rows[0]
    attributes: dict[str, list[str]] = {}
    for pair in row["attributes"]:
        if pair["relation"] is not None:
            attributes.setdefault(pair["relation"], []).append(pair["value"])
    brands = sorted(b for b in row["brands"] if b is not None)
    categories = _category_path(row["categories"])
    return {
        "item_id": row["id"],
        "title": row["title"],
        "description": row["description"],
        "brand": brands[0] if brands else None,
        "brands": brands,
        "categories": categories,
        "categories_above": categories_above(gateway, categories),
        "price": row["price"],
        "currency": row["currency"],
        "available": row["available"] is not False,
        "stock": row["stock"],
        "attributes": {relation: sorted(values) for relation, values in sorted(attributes.items())},
        "listed": bool(row["listed"]),
        "listed_at": row["listed_at"],
        "delisted_at": row["delisted_at"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


# --- what serving hides and re-prices -------------------------------------------------------------


@dataclass(frozen=True)
class ItemState:
    """What the catalogue says about one changed item.

    ``categories`` None: its brand and categories were not read (the model's stay); otherwise
    ``brand`` (the first of its brands by id, as training keeps it) and ``categories`` replace
    the model's, and ``category_links`` are the stored links from its categories to their parents.
    """

    price: float | None
    available: bool | None
    listed_at: int | None
    delisted_at: int | None
    brand: str | None = None
    categories: tuple[str, ...] | None = None
    category_links: tuple[tuple[str, str], ...] = ()
    updated_at: int | None = None  # when the catalogue API last wrote the item (epoch ms)

    def hidden_at(self, now_ms: float) -> bool:
        """Unavailable, delisted by ``now_ms``, or not listed yet."""
        if self.available is False:
            return True
        if self.delisted_at is not None and self.delisted_at <= now_ms:
            return True
        return self.listed_at is not None and self.listed_at > now_ms

    def next_change(self, now_ms: float) -> float:
        """When hidden_at next changes by the clock alone (inf: never)."""
        times = [t for t in (self.listed_at, self.delisted_at) if t is not None and t > now_ms]
        return float(min(times)) if times else math.inf


def _link_ids(facts: ItemFacts) -> frozenset[tuple[str, str]]:
    ids = facts.category_ids
    return frozenset((ids[c], ids[p]) for c, p in facts.category_parent_pairs.tolist())


def _laid_facts(
    facts: ItemFacts,
    link_ids: frozenset[tuple[str, str]],
    model: Any,
    items: Mapping[str, ItemState],
    ids: Iterable[str],
    links: Iterable[tuple[str, str]],
) -> tuple[ItemFacts, frozenset[tuple[str, str]]]:
    """``facts`` with the brand and categories of the items ``ids`` as ``items`` has them, and the
    category ``links`` they lack; the very same object when that changes nothing."""
    index = model.item_index
    replaced: dict[int, tuple[str | None, tuple[str, ...]]] = {}
    # A model trained on a graph pulled after the item's last catalogue write learnt its brand and
    # categories from the graph, events and imports since then included: the model's are the fresher.
    trained_after = model.artifacts.parameters.get("data_until")
    for item_id in ids:
        row = index.get(item_id)
        item = items[item_id]
        if row is None or row >= facts.n_items or item.categories is None:
            continue
        if trained_after is not None and item.updated_at is not None and item.updated_at <= trained_after:
            continue
        if item.brand != facts.brand_of(row) or set(item.categories) != facts.category_ids_of(row):
            replaced[row] = (item.brand, item.categories)
    new_links = [link for link in dict.fromkeys(links) if link not in link_ids and link[0] != link[1]]
    if not replaced and not new_links:
        return facts, link_ids
    return facts.replaced(replaced, new_links), link_ids | frozenset(new_links)


@dataclass
class _ModelState:
    """The catalogue's changes laid over one model's items: one array per field, by item row, and
    the model's facts with the changed brands and categories."""

    model: Any
    price: np.ndarray  # float64, NaN: unknown
    available: np.ndarray  # bool
    listed_at: np.ndarray  # float64, NaN: none
    delisted_at: np.ndarray  # float64, NaN: none
    facts: ItemFacts
    link_ids: frozenset[tuple[str, str]]  # the facts' category links, by id

    @classmethod
    def of(cls, model: Any, items: Mapping[str, ItemState], links: Iterable[tuple[str, str]]) -> _ModelState:
        """Built from every changed item and every category link the catalogue API wrote."""
        n = model.facts.n_items
        facts, link_ids = _laid_facts(model.facts, _link_ids(model.facts), model, items, items, links)
        state = cls(
            model,
            model.facts.item_price.astype(np.float64, copy=True),
            np.ones(n, dtype=bool),
            np.full(n, np.nan),
            np.full(n, np.nan),
            facts,
            link_ids,
        )
        state.apply(items, items.keys())
        return state

    def derived(self, items: Mapping[str, ItemState], changed: Sequence[str]) -> _ModelState:
        """A copy with the items ``changed`` since this state re-read from ``items``."""
        copies = (self.price, self.available, self.listed_at, self.delisted_at)
        links = [link for item_id in changed for link in items[item_id].category_links]
        facts, link_ids = _laid_facts(self.facts, self.link_ids, self.model, items, changed, links)
        state = _ModelState(self.model, *(array.copy() for array in copies), facts, link_ids)
        state.apply(items, changed)
        return state

    def apply(self, items: Mapping[str, ItemState], ids: Iterable[str]) -> None:
        index = self.model.item_index
        for item_id in ids:
            row = index.get(item_id)
            if row is None or row >= self.price.size:
                continue
            item = items[item_id]
            self.price[row] = np.nan if item.price is None else item.price
            self.available[row] = item.available is not False
            self.listed_at[row] = np.nan if item.listed_at is None else item.listed_at
            self.delisted_at[row] = np.nan if item.delisted_at is None else item.delisted_at


MODEL_STATES = 4  # models whose arrays a snapshot keeps (the active one and experiment variants)


def _same_items(held: Any, model: Any) -> bool:
    """Whether ``model`` is ``held`` or a copy of it with the same items and facts (the copy an
    erasure makes, with other popularity counts), whose catalogue state is the same."""
    return held is model or (held.item_index is model.item_index and held.facts is model.facts)


def _held_for(states: Mapping[int, _ModelState], model: Any) -> _ModelState | None:
    """The state ``states`` hold for ``model`` or a copy of it with the same items: an erasure's
    copy of the served model then lays nothing over again (a Python pass over every item the
    catalogue API changed: 1.3 s at 1M items)."""
    state = states.get(id(model))
    if state is not None and state.model is model:
        return state
    return next((held for held in list(states.values()) if _same_items(held.model, model)), None)


@dataclass
class CatalogueSnapshot:
    """The catalogue changes as of one revision, laid over each model's items.

    A snapshot made from the one before (``previous``, and the ids ``changed`` since) derives
    each model's arrays and facts from that one's by re-reading only the changed items, so a
    write costs the next request the items it changed, not every item the catalogue API ever
    changed. ``links``: every category link (child id, parent id) read with a changed item.
    """

    revision: int = 0
    items: dict[str, ItemState] = field(default_factory=dict)
    changed: tuple[str, ...] = ()
    previous: CatalogueSnapshot | None = None
    links: frozenset[tuple[str, str]] = frozenset()
    _states: dict[int, _ModelState] = field(default_factory=dict)
    _hidden: dict[int, tuple[Any, np.ndarray, float, float]] = field(default_factory=dict)

    def _state(self, model: Any) -> _ModelState:
        state = self._states.get(id(model))
        if state is not None and state.model is model:
            return state
        twin = _held_for(self._states, model)
        previous = self.previous  # read once: another thread may drop it meanwhile (CatalogueView)
        before = _held_for(previous._states, model) if previous is not None else None
        if twin is not None:
            state = replace(twin, model=model)
        elif before is not None:
            state = replace(before.derived(self.items, self.changed), model=model)
        else:
            state = _ModelState.of(model, self.items, self.links)
        states = {k: v for k, v in self._states.items() if not _same_items(v.model, model)}
        states[id(model)] = state
        while len(states) > MODEL_STATES:
            states.pop(next(iter(states)))
        self._states = states
        return state

    def facts(self, model: Any) -> ItemFacts:
        """The model's brand, categories and category tree with the catalogue API's changes laid
        over: what every filter, rule, diversity cap and pin condition reads. The same object
        until a write changes a brand, a category or the tree (caches may key on it)."""
        return self._state(model).facts

    def hidden(self, model: Any, now_ms: float) -> np.ndarray:
        """The model's item indices that must not be shown now."""
        cached = self._hidden.get(id(model))
        if cached is not None and cached[0] is model and cached[2] <= now_ms < cached[3]:
            return cached[1]
        state = self._state(model)
        with np.errstate(invalid="ignore"):
            hidden = ~state.available | (state.delisted_at <= now_ms) | (state.listed_at > now_ms)
            later = np.concatenate(
                [state.listed_at[state.listed_at > now_ms], state.delisted_at[state.delisted_at > now_ms]]
            )
        array = np.flatnonzero(hidden).astype(np.int64)
        until = float(later.min()) if later.size else math.inf
        self._hidden = {id(model): (model, array, now_ms, until)}
        return array

    def prices(self, model: Any) -> np.ndarray:
        """The model's item prices with the catalogue's current ones laid over (NaN: unknown)."""
        return self._state(model).price


def allowed_items(
    model: Any,
    snapshot: CatalogueSnapshot,
    now_ms: float,
    brand: str | None = None,
    category: str | None = None,
    min_price: float | None = None,
    max_price: float | None = None,
) -> np.ndarray | None:
    """The Recommender's ``allowed`` mask: the filters (with current brands, categories and
    prices), minus hidden items."""
    mask = snapshot.facts(model).mask(brand, category)
    if min_price is not None or max_price is not None:
        price = snapshot.prices(model)
        with np.errstate(invalid="ignore"):
            low = price >= min_price if min_price is not None else ~np.isnan(price)
            high = price <= max_price if max_price is not None else ~np.isnan(price)
        mask = (low & high) if mask is None else (mask & low & high)
    hidden = snapshot.hidden(model, now_ms)
    if hidden.size:
        mask = np.ones(model.facts.n_items, dtype=bool) if mask is None else mask.copy()
        mask[hidden] = False
    return mask


class CatalogueView:
    """A serving process's view of the catalogue: re-checked at most every ``check_every_s``."""

    def __init__(self, gateway: GraphGateway, check_every_s: float = CATALOGUE_CHECK_S) -> None:
        self._gateway = gateway
        self._view: SingleFlight[CatalogueSnapshot] = SingleFlight(check_every_s)

    def stale(self) -> None:
        """Check on the next call (this process just wrote to the catalogue)."""
        self._view.stale()

    def snapshot(self) -> CatalogueSnapshot:
        """The catalogue changes as of the latest revision seen (or the snapshot held, while another
        thread checks: :mod:`kgrec.single_flight`)."""
        snapshot = self._view.get(self._load)
        assert snapshot is not None  # the load always answers a snapshot
        return snapshot

    def _load(self, held: CatalogueSnapshot | None) -> CatalogueSnapshot:
        rows = self._gateway.read(CATALOGUE_REVISION, {"id": CATALOGUE})
        revision = int(rows[0]["revision"]) if rows else 0
        current = held if held is not None else CatalogueSnapshot()
        if revision == current.revision:
            return current
        # A lower revision means a new graph (cleared or restored): read everything again.
        since, items = (current.revision, dict(current.items)) if revision > current.revision else (0, {})
        changed = []
        links = set(current.links) if since else set()
        for row in self._gateway.read(CATALOGUE_CHANGES, {"since": since}):
            changed.append(row["id"])
            items[row["id"]] = state = change_state(row)
            links.update(state.category_links)
        if since == 0:
            return CatalogueSnapshot(revision, items, links=frozenset(links))
        current.previous = None  # a snapshot derives from the one before it, no further
        return CatalogueSnapshot(revision, items, tuple(changed), current, frozenset(links))


def change_state(row: Mapping[str, Any]) -> ItemState:
    """An item as :data:`CATALOGUE_CHANGES` reads it."""
    categories = [c for c in row["categories"] if c["id"] is not None]
    brands = sorted(b for b in row["brands"] if b is not None)
    return ItemState(
        None if row["price"] is None else float(row["price"]),
        row["available"],
        row["listed_at"],
        row["delisted_at"],
        brands[0] if brands else None,
        tuple(sorted({c["id"] for c in categories})),
        tuple(sorted({(c["id"], p) for c in categories for p in c["parents"] or () if p is not None})),
        row["updated_at"],
    )


__all__ = [
    "CatalogueItem",
    "CatalogueSnapshot",
    "CatalogueTime",
    "CatalogueView",
    "ItemFields",
    "ItemsRefused",
    "allowed_items",
    "category_loops",
    "delist_item",
    "error_problems",
    "field_reason",
    "read_item",
    "validate_items",
    "write_items",
]
