"""Business rules: block, pin, boost and bury, stored in the graph and applied after scoring.

A rule targets an item, a brand, a category (with its subcategories) or an
attribute value (items with a knowledge edge ``relation`` to ``value``):

- ``block``: the targets are never shown (they leave the ``allowed`` mask);
- ``boost`` / ``bury``: the targets' scores are multiplied by ``factor`` (> 1 boosts,
  < 1 buries; a negative score is divided instead, so both still move the right way);
- ``pin``: the target item is put at ``position`` (1 is the top) of the whole ranking,
  for requests matching ``when`` (the request's brand or category filter, for similar
  items also the source item's brand or category, or one of the user's 10 strongest
  interests), or for every request without ``when``.

A rule applies between ``starts_at`` and ``ends_at`` (either may be missing) on its
``surface``. Rules apply after scoring and before paging, to the top ``POOL`` items,
so every page of one ranking is cut from the same order. Serving processes hold a
:class:`RulesView`, re-checked like the catalogue (:mod:`kgrec.catalogue`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from graph_schema.allow_list import ATTRIBUTE_RELATIONS, Rel
from graph_schema.relation_names import RELATION_PATTERN
from graph_schema.statements.catalogue import CATALOGUE, CATALOGUE_REVISION
from graph_schema.statements.rules import (
    ALL_RULES,
    ATTRIBUTE_ITEMS,
    DELETE_RULE,
    RULES,
    UPSERT_RULE,
)
from kgrec.catalogue import CatalogueTime, field_reason
from kgrec.diversity import POOL
from kgrec.events.validation import FieldError
from kgrec.field_types import WHOLE_NUMBER, Id, shown
from kgrec.gateway import GraphGateway
from kgrec.item_facts import ItemFacts
from kgrec.limits import CATALOGUE_CHECK_S, MAX_RULE_FACTOR, MAX_SIDE_VERSIONS
from kgrec.ranking import Ranking
from kgrec.single_flight import RecentlyUsed, SingleFlight

LOG = logging.getLogger(__name__)

ACTIONS = ("block", "pin", "boost", "bury")
SURFACES = ("recommendations", "similar", "both")
TARGETS = ("item", "brand", "category", "attribute")
CONDITIONS = ("brand", "category", "interest")
WARM_MS = 60_000  # a new rule set is compiled ahead for models served within this time
# compiled (version, surface) pairs a rule set keeps: two surfaces of the active version and of
# the experiment variants' versions a serving process keeps loaded (MAX_SIDE_VERSIONS)
COMPILED_KEYS = 2 * (1 + MAX_SIDE_VERSIONS)
MIN_CHECK_S = 0.01  # the poller's shortest interval (0 would spin)
FAILURE_LOG_S = 60.0  # a failing re-read is logged at most this often
# Attribute targets are re-resolved when the catalogue revision moves (catalogue writes bump it);
# events and imports add attribute edges without bumping it, so also at most this long after them.
ATTRIBUTE_RECHECK_S = 30.0
# The boosts and buries on one item multiply: their product is kept within 10^±100, so that a score
# times (or, negative, over) it stays a finite number (a bury's product could reach 0, and -inf).
MAX_COMBINED_FACTOR = 1e100


class _Strict(BaseModel):
    # strict: a JSON body's "2" is not the number 2 (as for events and the catalogue)
    model_config = ConfigDict(extra="forbid", strict=True)


# The catalogue makes these attributes brands and categories (MADE_BY, IN_CATEGORY edges, with no
# relation): an attribute target of them would name no item.
_KIND_OF_ATTRIBUTE = {Rel.MADE_BY: "brand", Rel.IN_CATEGORY: "category"}


class AttributeValue(_Strict):
    """Items with a knowledge edge ``relation`` to ``value``."""

    relation: Annotated[
        str,
        Field(
            pattern=RELATION_PATTERN,
            description="a knowledge relation; not produced_by or belongs_to (target {brand} or {category})",
        ),
    ]
    value: Id

    @field_validator("relation")
    @classmethod
    def _not_a_brand_or_category(cls, relation: str) -> str:
        rel = ATTRIBUTE_RELATIONS.get(relation)
        if rel is not None:
            kind = _KIND_OF_ATTRIBUTE[rel]
            raise PydanticCustomError(
                "rule",
                "is stored as the item's {kind}: target {instead} instead",
                {"kind": kind, "instead": "{" + kind + "}"},
            )
        return relation


class ItemTarget(_Strict):
    item: Id = Field(description="one item")


class BrandTarget(_Strict):
    brand: Id = Field(description="every item of this brand")


class CategoryTarget(_Strict):
    category: Id = Field(description="every item in this category or below it")


class AttributeTarget(_Strict):
    attribute: AttributeValue = Field(description="every item with this attribute value")


Target = ItemTarget | BrandTarget | CategoryTarget | AttributeTarget


class WhenBrand(_Strict):
    brand: Id = Field(description="the request's brand filter (similar items: or the item's brand)")


class WhenCategory(_Strict):
    category: Id = Field(
        description="the request's category filter (similar items: or one of the item's categories)"
    )


class WhenInterest(_Strict):
    interest: Id = Field(description="a brand or category among the user's 10 strongest interests")


Condition = WhenBrand | WhenCategory | WhenInterest


class _RuleBase(_Strict):
    id: Id | None = Field(
        None,
        description=(
            "the rule's id; the same id replaces the rule. Default: `rule-` and a hash of the rule, "
            "so the same rule sent again (a retry) replaces itself instead of adding a second"
        ),
    )
    starts_at: CatalogueTime | None = None
    ends_at: CatalogueTime | None = Field(
        None, description="after starts_at, and in the future (a rule that has ended is refused)"
    )
    surface: Literal[SURFACES] = "both"  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _window(self) -> _RuleBase:
        if self.starts_at is not None and self.ends_at is not None and self.ends_at <= self.starts_at:
            raise _problem(
                "ends_at",
                f"must be after starts_at (got ends_at {self.ends_at} ms, starts_at {self.starts_at} ms)",
            )
        if self.ends_at is not None and self.ends_at <= time.time() * 1000:
            # stored, it would never apply: most likely seconds sent for milliseconds (1970)
            ended = datetime.fromtimestamp(self.ends_at / 1000, UTC).isoformat(timespec="seconds")
            raise _problem("ends_at", f"must be in the future (got {self.ends_at} ms, {ended}: already past)")
        return self


class BlockRule(_RuleBase):
    """Never show the target's items."""

    action: Literal["block"]
    target: Target


class BoostRule(_RuleBase):
    """Multiply the target's items' scores by ``factor`` (above 1)."""

    action: Literal["boost"]
    target: Target
    factor: Annotated[float, Field(gt=1, le=MAX_RULE_FACTOR, allow_inf_nan=False)]


class BuryRule(_RuleBase):
    """Multiply the target's items' scores by ``factor`` (below 1)."""

    action: Literal["bury"]
    target: Target
    factor: Annotated[float, Field(ge=1 / MAX_RULE_FACTOR, lt=1, allow_inf_nan=False)]


class PinRule(_RuleBase):
    """Put one item at ``position`` (1 is the top) of the ranking, for requests matching ``when``."""

    action: Literal["pin"]
    item: Id
    position: Annotated[int, Field(ge=1, le=POOL), WHOLE_NUMBER]
    when: Condition | None = Field(None, description="only for requests matching this (default: every one)")


def _problem(field_name: str, message: str) -> PydanticCustomError:
    return PydanticCustomError("rule", message, {"field": field_name})


RuleBody = Annotated[BlockRule | BoostRule | BuryRule | PinRule, Field(discriminator="action")]
_RULE = TypeAdapter(RuleBody)


_MEMBERS = {"ItemTarget", "BrandTarget", "CategoryTarget", "AttributeTarget"} | {
    "WhenBrand",
    "WhenCategory",
    "WhenInterest",
}
_ONE_OF = {
    "target": "must be one object of {item}, {brand}, {category} or {attribute: {relation, value}}",
    "when": "must be one object of {brand}, {category} or {interest}",
}


def _rule_problem(exc: ValidationError) -> FieldError:
    """The rule's most telling problem: a union member's missing or unknown key names the union.
    The value refused is shown, as every refusal shows it."""
    ranked: list[tuple[int, FieldError]] = []
    for error in exc.errors(include_url=False):
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            given = error["input"].get("action") if isinstance(error["input"], dict) else None
            got = f" (got {shown(given)})" if error["type"] == "union_tag_invalid" else ""
            return FieldError(0, "action", f"must be one of {', '.join(ACTIONS)}{got}")
        loc = [str(part) for part in error["loc"]]
        loc = loc[1:] if loc and loc[0] in ACTIONS else loc
        in_member = any(part in _MEMBERS for part in loc)
        loc = [part for part in loc if part not in _MEMBERS]
        if in_member and error["type"] in ("missing", "extra_forbidden", "model_type") and loc[0] in _ONE_OF:
            # a missing key's or a wrong type's input is the whole target (when); an extra key's its value
            whole = error["type"] != "extra_forbidden"
            got = f" (got {shown(error['input'])})" if whole else ""
            ranked.append((1 if whole else 2, FieldError(0, loc[0], _ONE_OF[loc[0]] + got)))
            continue
        name = ".".join(loc) or str((error.get("ctx") or {}).get("field", "rule"))
        ranked.append((0, FieldError(0, name, field_reason(error, name))))
    if not ranked:
        return FieldError(0, "rule", "must be a rule object")
    return min(ranked, key=lambda entry: entry[0])[1]


def validate_rule(raw: Any) -> tuple[Any, list[FieldError]]:
    """The rule, or its problem (index 0) with field and reason."""
    try:
        return _RULE.validate_python(raw), []
    except ValidationError as exc:
        return None, [_rule_problem(exc)]


@dataclass(frozen=True)
class Rule:
    """A stored rule."""

    id: str
    action: str
    target_kind: str
    target: str
    relation: str | None
    position: int | None
    factor: float | None
    condition_kind: str | None
    condition: str | None
    starts_at: int | None
    ends_at: int | None
    surface: str
    created_at: int | None = None

    def live(self, surface: str, now_ms: float) -> bool:
        """Whether the rule applies on ``surface`` at ``now_ms``."""
        if self.surface not in ("both", surface):
            return False
        if self.starts_at is not None and now_ms < self.starts_at:
            return False
        return self.ends_at is None or now_ms < self.ends_at

    def next_change(self, now_ms: float) -> float:
        """When ``live`` next changes by the clock (inf: never)."""
        times = [t for t in (self.starts_at, self.ends_at) if t is not None and t > now_ms]
        return float(min(times)) if times else math.inf

    def as_dict(self, now_ms: float) -> dict[str, Any]:
        """The API's form."""
        body: dict[str, Any] = {"id": self.id, "action": self.action}
        if self.action == "pin":
            body["item"] = self.target
        elif self.target_kind == "attribute":
            body["target"] = {"attribute": {"relation": self.relation, "value": self.target}}
        else:
            body["target"] = {self.target_kind: self.target}
        if self.position is not None:
            body["position"] = self.position
        if self.factor is not None:
            body["factor"] = self.factor
        if self.condition_kind is not None:
            body["when"] = {self.condition_kind: self.condition}
        body.update(
            starts_at=self.starts_at,
            ends_at=self.ends_at,
            surface=self.surface,
            created_at=self.created_at,
            active=self.starts_at is None or self.starts_at <= now_ms,
            expired=self.ends_at is not None and self.ends_at <= now_ms,
        )
        return body


def stored_form(body: Any) -> tuple[str, dict[str, Any]]:
    """The rule's id and its node properties."""
    target = ItemTarget(item=body.item) if isinstance(body, PinRule) else body.target
    kind = next(iter(target.model_fields_set))
    value = getattr(target, kind)
    when = body.when if isinstance(body, PinRule) else None
    condition = next(iter(when.model_dump().items())) if when is not None else (None, None)
    props = {
        "action": body.action,
        "target_kind": kind,
        "target": value.value if isinstance(value, AttributeValue) else value,
        "relation": value.relation if isinstance(value, AttributeValue) else None,
        "position": getattr(body, "position", None),
        "factor": getattr(body, "factor", None),
        "condition_kind": condition[0],
        "condition": condition[1],
        "starts_at": body.starts_at,
        "ends_at": body.ends_at,
        "surface": body.surface,
    }
    return body.id or content_id(props), props


def content_id(props: dict[str, Any]) -> str:
    """The id of a rule sent without one: ``rule-`` and a hash of its stored properties, so that
    resending it after a timeout whose first attempt committed replaces it rather than storing a
    second rule (two ×1,000 boosts would multiply to ×1,000,000)."""
    canonical = json.dumps(props, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "rule-" + hashlib.sha256(canonical.encode("ascii")).hexdigest()[:24]


def save_rule(gateway: GraphGateway, body: Any, now_ms: int) -> Rule:
    """Create or replace a rule (one atomic write that bumps the rules' revision)."""
    rule_id, props = stored_form(body)
    row = gateway.write(UPSERT_RULE, {"id": rule_id, "now": now_ms, "rule": props}).rows[0]
    return Rule(id=rule_id, created_at=row["created_at"], **props)


def delete_rule(gateway: GraphGateway, rule_id: str, now_ms: int) -> bool:
    """Delete a rule; False if there is none with that id."""
    return bool(gateway.write(DELETE_RULE, {"id": rule_id, "now": now_ms}).rows)


def read_attribute_items(gateway: GraphGateway, rules: list[Rule]) -> dict[tuple[str, str], list[str]]:
    """The items each attribute target of ``rules`` names now: one read, none without attribute rules."""
    pairs = sorted({(r.relation or "", r.target) for r in rules if r.target_kind == "attribute"})
    attribute_items: dict[tuple[str, str], list[str]] = {}
    if not pairs:
        return attribute_items
    params = {"pairs": [{"relation": rel, "value": value} for rel, value in pairs]}
    for row in gateway.read(ATTRIBUTE_ITEMS, params):
        attribute_items.setdefault((row["relation"], row["value"]), []).append(row["item_id"])
    return {key: sorted(ids) for key, ids in attribute_items.items()}


def target_items(gateway: GraphGateway, rules: list[Rule], model: Any, facts: Any) -> dict[str, int]:
    """How many of ``model``'s items each rule's target names under ``facts``: the items serving
    applies it to now. A rule on a misspelt brand, category or attribute value names none."""
    rule_set = RuleSet(0, rules, read_attribute_items(gateway, rules))
    return {rule.id: len(rule_set.targets(model, facts, rule)) for rule in rules}


def load_rules(gateway: GraphGateway) -> list[Rule]:
    """Every stored rule, by id."""
    return [Rule(**row) for row in gateway.read(ALL_RULES)]


# --- applying rules -----------------------------------------------------------------------------


def no_interests() -> set[str]:
    """No interests: a request without a user (an interest condition never holds)."""
    return set()


@dataclass(frozen=True)
class RequestContext:
    """What a pin's condition is matched against.

    A category condition holds for the request's category and the item's categories and for every
    category above them in ``facts``' tree (a pin on a category applies under its subcategories, as
    a category filter and a block or boost do); without ``facts``, for those ids only."""

    brand: str | None = None
    category: str | None = None
    item_brands: tuple[str, ...] = ()
    item_categories: tuple[str, ...] = ()
    interests: Callable[[], set[str]] = no_interests
    facts: ItemFacts | None = field(default=None, repr=False, compare=False)
    # the user's interest ids, read on the first interest condition and then kept for the request
    _interest_ids: list[set[str]] = field(default_factory=list, init=False, repr=False, compare=False)
    # the request's and the item's categories with their ancestors, walked on the first category
    # condition and then kept for the request (every pin with one asked again)
    _category_ids: list[set[str]] = field(default_factory=list, init=False, repr=False, compare=False)

    def matches(self, kind: str | None, value: str | None) -> bool:
        """Whether a condition holds for this request (no condition: always)."""
        if kind is None:
            return True
        if kind == "brand":
            return value == self.brand or value in self.item_brands
        if kind == "category":
            if not self._category_ids:
                named = {*self.item_categories, *(() if self.category is None else (self.category,))}
                named = named if self.facts is None else set(self.facts.with_ancestors(named))
                self._category_ids.append(named)
            return value in self._category_ids[0]
        if not self._interest_ids:
            self._interest_ids.append(self.interests())
        return value in self._interest_ids[0]


@dataclass
class Compiled:
    """The live rules of one surface for one model, as arrays over its items."""

    blocked: np.ndarray | None  # bool per item
    factor: np.ndarray | None  # score multiplier per item
    # each boost/bury rule's id and its target rows, ascending: looked up for a page's rows only
    # (a dict per item was a Python loop over every target, at each compile: 0.5 s a rule on a
    # 1M-item category)
    scored_by: list[tuple[str, np.ndarray]]
    pins: list[tuple[Rule, int]]  # (rule, item index), by position
    until: float  # valid until this time (a rule starts or ends)

    @property
    def reorders(self) -> bool:
        """Whether the ranking must be reordered (so cut from the fixed pool)."""
        return self.factor is not None or bool(self.pins)

    def rule_ids(self, row: int, pinned_by: list[str] | None = None) -> list[str]:
        """The ids of the rules that moved one item: its boosts and buries, then its pins."""
        scored = [rule_id for rule_id, rows in self.scored_by if _holds(rows, row)]
        return [*scored, *pinned_by] if pinned_by else scored


def _holds(rows: np.ndarray, row: int) -> bool:
    """Whether the ascending ``rows`` hold ``row``."""
    at = int(np.searchsorted(rows, row))
    return at < rows.size and int(rows[at]) == row


@dataclass
class _Held:
    """Rules compiled for one model object and facts, and when a request last asked for them."""

    model: Any
    facts: Any
    result: Compiled
    used_ms: float


@dataclass
class RuleSet:
    """Every rule at one revision, with the items their attribute targets name."""

    revision: int = 0
    rules: list[Rule] = field(default_factory=list)
    attribute_items: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    # (model version, surface) -> what was compiled for it: one entry per version, so the copy a
    # fold-in or an erasure makes replaces its version's entry and no superseded model is kept
    # alive while the rules do not change (request threads compile while the poller warms the
    # next set)
    _compiled: RecentlyUsed[tuple[str, str], _Held] = field(
        default_factory=lambda: RecentlyUsed(COMPILED_KEYS), repr=False, compare=False
    )

    def targets(self, model: Any, facts: Any, rule: Rule) -> np.ndarray:
        """The rows of ``model``'s items that ``rule``'s target names under ``facts``."""
        index = model.item_index
        if rule.target_kind == "item":
            return np.array([index[rule.target]] if rule.target in index else [], dtype=np.int64)
        if rule.target_kind == "brand":
            return facts.brand_rows(rule.target)
        if rule.target_kind == "category":
            return facts.category_rows(rule.target)
        ids = self.attribute_items.get((rule.relation or "", rule.target), [])
        return np.array([index[i] for i in ids if i in index], dtype=np.int64)

    def compiled(self, model: Any, surface: str, now_ms: float, facts: Any = None) -> Compiled:
        """The live rules for ``model`` on ``surface``, brand and category targets resolved by
        ``facts`` (default the model's; serving passes the catalogue's,
        :meth:`kgrec.catalogue.CatalogueSnapshot.facts`). Cached until a rule starts or ends or
        other facts are given: one identity check when nothing changed."""
        facts = model.facts if facts is None else facts
        key = (model.artifacts.version, surface)
        held = self._compiled.get(key)
        if held is not None:
            held.used_ms = now_ms
            if held.model is model and held.facts is facts and now_ms < held.result.until:
                return held.result
        n = facts.n_items
        live = [r for r in self.rules if r.live(surface, now_ms)]
        until = min((r.next_change(now_ms) for r in self.rules), default=math.inf)
        blocked = factor = None
        scored_by: list[tuple[str, np.ndarray]] = []
        pins: list[tuple[Rule, int]] = []
        for rule in live:
            targets = self.targets(model, facts, rule)
            if rule.action == "block":
                blocked = np.zeros(n, dtype=bool) if blocked is None else blocked
                blocked[targets] = True
            elif rule.action in ("boost", "bury"):
                factor = np.ones(n, dtype=np.float64) if factor is None else factor
                factor[targets] *= float(rule.factor or 1.0)
                scored_by.append((rule.id, np.sort(targets)))
            elif targets.size:
                pins.append((rule, int(targets[0])))
        if factor is not None:
            np.clip(factor, 1 / MAX_COMBINED_FACTOR, MAX_COMBINED_FACTOR, out=factor)
        pins.sort(key=lambda pin: (pin[0].position or 0, pin[0].id))
        result = Compiled(blocked, factor, scored_by, pins, until)
        self._compiled.put(key, _Held(model, facts, result, now_ms))
        return result

    def warm(self, previous: RuleSet, now_ms: float) -> None:
        """Compile for the models and surfaces ``previous`` served in the last :data:`WARM_MS`."""
        for key, served in previous._compiled.items():  # least recently used first, as it keeps them
            if now_ms - served.used_ms <= WARM_MS:
                self.compiled(served.model, key[1], now_ms, served.facts)
                warmed = self._compiled.peek(key)
                if warmed is not None:
                    warmed.used_ms = served.used_ms  # warming is not a use


def apply_scores(ranked: Ranking, compiled: Compiled) -> Ranking:
    """Boosts and buries: rescored and re-sorted (stable); :meth:`Compiled.rule_ids` names the rules."""
    if compiled.factor is None or not len(ranked):
        return ranked
    rows, scores = ranked
    factors = np.ones(rows.size, dtype=np.float64)
    known = rows < compiled.factor.size  # items folded in after the rules were compiled have none
    factors[known] = compiled.factor[rows[known]]
    # A negative score is divided, so a boost always moves an item up.
    rescored = np.where(scores >= 0, scores * factors, scores / factors)
    order = np.argsort(-rescored, kind="stable")
    return Ranking(rows[order], rescored[order])


def apply_pins(
    ranked: Ranking,
    compiled: Compiled,
    context: RequestContext,
    allowed: np.ndarray | None,
    excluded: set[int],
    pinned_by: dict[int, list[str]],
    shown_before: int = 0,
) -> Ranking:
    """Pinned items moved (or brought) to their positions, for requests their condition matches.

    ``excluded`` holds item rows the request leaves out; ``pinned_by`` receives the ids of the
    pins applied to each item row. ``shown_before`` items were shown ahead of ``ranked`` (a new
    user's first page, left out of a later page's ranking): a pin's position counts them, and a
    pin within them belongs to that earlier page and is not placed. Its item, when that page
    showed it, is in ``excluded`` (and not in ``ranked``); otherwise (the pin came after that page
    was served) it keeps its rank here rather than vanish from every later page.

    Pins are placed in order of position (then rule id); an item pinned twice takes the later
    pin's position. Every pinned item leaves the ranking first, so each pin lands exactly at its
    position whatever the others moved, unless another pin takes the same position: then the one
    placed later (the greater rule id) holds it and the other lands just below.
    """
    placed: dict[int, int] = {}  # item row -> 0-based position, in placing order
    for rule, row in compiled.pins:
        if (allowed is not None and not allowed[row]) or row in excluded:
            continue
        if not context.matches(rule.condition_kind, rule.condition):
            continue
        at = (rule.position or 1) - 1 - shown_before
        if at < 0:  # on an earlier page; pins come by position: a later pin of the item still places it
            continue
        placed.pop(row, None)
        placed[row] = at
        pinned_by.setdefault(row, []).append(rule.id)
    if not placed:
        return ranked
    rows, scores = ranked
    targets = np.fromiter(placed, dtype=np.int64, count=len(placed))
    member = np.zeros(int(max(rows.max(initial=-1), targets.max())) + 1, dtype=bool)
    member[targets] = True
    moved = member[rows]
    own_scores = dict(zip(rows[moved].tolist(), scores[moved].tolist(), strict=True))
    rest_rows, rest_scores = rows[~moved], scores[~moved]
    # Pins only touch the top of the ranking: insert into that head and keep the tail as it is.
    reach = max(placed.values(), default=-1) + 1
    head_rows, head_scores = rest_rows[:reach].tolist(), rest_scores[:reach].tolist()
    for row, at in placed.items():
        score = own_scores.get(row)
        if score is None:
            score = head_scores[min(at, len(head_scores) - 1)] if head_scores else 0.0
        head_rows.insert(min(at, len(head_rows)), row)
        head_scores.insert(min(at, len(head_scores)), score)
    return Ranking(
        np.concatenate([np.array(head_rows, dtype=np.int64), rest_rows[reach:]]),
        np.concatenate([np.array(head_scores, dtype=np.float64), rest_scores[reach:]]),
    )


class RulesView:
    """A serving process's rules, kept current by a background poller.

    The poller reads the rules' revision every ``check_every_s``; a change is loaded there and
    compiled for the models and surfaces this process served lately, while requests keep the
    previous rules. So no request waits for a thousand rules to compile, and a request after a
    quiet spell already has every change older than ``check_every_s`` plus one load. Only the
    first load, and a reload after this process changed a rule (:meth:`stale`, so that its own
    next response shows the change), run in the caller's thread.
    """

    def __init__(self, gateway: GraphGateway, check_every_s: float = CATALOGUE_CHECK_S) -> None:
        """A view of ``gateway``'s rules. One per process and gateway: after a fork the serving
        code makes a new one for the child's gateway (threads do not survive a fork)."""
        self._gateway = gateway
        self._check_every_s = max(check_every_s, MIN_CHECK_S)
        self._lock = threading.Lock()
        # One load at a time; a request that finds no rules held (or that follows its own change)
        # waits for that load and shares its graph failure, instead of making its own after it.
        self._view: SingleFlight[RuleSet] = SingleFlight(math.inf)
        self._polling = False
        self._closed = threading.Event()
        self._failed_at = -math.inf  # when a failed check was last logged
        self._catalogue_revision = -1  # the catalogue revision the attribute targets were resolved at
        self._resolved_at = -math.inf  # when they were (monotonic)

    def stale(self) -> None:
        """Reload now: this process just changed a rule (its next answer must show it)."""
        self._view.stale()
        self._view.get(self._next)

    def attributes_changed(self) -> None:
        """Re-resolve attribute targets at the next poll: this process just wrote attribute edges
        that bump no revision (events)."""
        self._resolved_at = -math.inf

    def rules(self) -> RuleSet:
        """The rules as of the latest revision loaded."""
        rules = self._view.held()
        if rules is None:
            rules = self._view.get(self._next)
        assert rules is not None  # a load returns rules or raises
        self._start_polling()
        return rules

    def close(self) -> None:
        """Stop the poller (its gateway is being closed)."""
        self._closed.set()

    def _start_polling(self) -> None:
        with self._lock:
            if self._polling or self._closed.is_set():
                return
            self._polling = True
        # The poller holds the view weakly: it ends when the view is gone, or at close().
        threading.Thread(
            target=_poll_rules,
            args=(weakref.ref(self), self._closed, self._check_every_s),
            name="kgrec-rules",
            daemon=True,
        ).start()

    def _refresh_quietly(self) -> None:
        try:
            self._refresh()
        except Exception:  # the graph may be away: keep the rules we have, the next poll tries again
            if self._closed.is_set():
                return  # closed meanwhile: its gateway is gone on purpose
            now = time.monotonic()
            if now - self._failed_at >= FAILURE_LOG_S:
                self._failed_at = now
                LOG.warning("rules: could not re-read the rules; serving the ones loaded", exc_info=True)

    def _refresh(self) -> None:
        self._view.refresh(self._next)

    def _next(self, current: RuleSet | None) -> RuleSet:
        """The rules after ``current`` (None before the first load): loaded anew when their
        revision moved, else ``current`` with its attribute targets re-resolved if they need it."""
        rows = self._gateway.read(CATALOGUE_REVISION, {"id": RULES})
        revision = int(rows[0]["revision"]) if rows else 0
        if current is None or revision != current.revision:
            fresh = self._load(revision)
            if current is not None:
                fresh.warm(current, time.time() * 1000)
            return fresh
        return self._reresolved(current)

    def _load(self, revision: int) -> RuleSet:
        rules = load_rules(self._gateway)
        return RuleSet(revision, rules, self._attribute_items(rules))

    def _attribute_items(self, rules: list[Rule]) -> dict[tuple[str, str], list[str]]:
        """The items each attribute target names now, and the catalogue revision they were read at."""
        if any(r.target_kind == "attribute" for r in rules):
            # the revision first: a catalogue write after it moves it again, and the next poll re-reads
            rows = self._gateway.read(CATALOGUE_REVISION, {"id": CATALOGUE})
            self._catalogue_revision = int(rows[0]["revision"]) if rows else 0
            self._resolved_at = time.monotonic()
        return read_attribute_items(self._gateway, rules)

    def _reresolved(self, current: RuleSet) -> RuleSet:
        """``current``, or its rules with their attribute targets read again when the catalogue
        revision moved (or :data:`ATTRIBUTE_RECHECK_S` passed); one node read when nothing did."""
        if not any(r.target_kind == "attribute" for r in current.rules):
            return current
        if time.monotonic() - self._resolved_at < ATTRIBUTE_RECHECK_S:
            rows = self._gateway.read(CATALOGUE_REVISION, {"id": CATALOGUE})
            if (int(rows[0]["revision"]) if rows else 0) == self._catalogue_revision:
                return current
        attribute_items = self._attribute_items(current.rules)
        if attribute_items == current.attribute_items:
            return current
        fresh = RuleSet(current.revision, current.rules, attribute_items)
        fresh.warm(current, time.time() * 1000)
        return fresh


def _poll_rules(view_ref: weakref.ref[RulesView], closed: threading.Event, every_s: float) -> None:
    """Re-check the rules' revision every ``every_s`` while the view lives and is open."""
    while not closed.wait(every_s):
        view = view_ref()
        if view is None:
            return
        view._refresh_quietly()
        del view  # hold the view only while checking
