"""Exploration for new users: a few slots of their first page from a Thompson-sampling bandit.

The rule (README, "Exploration for new users"):

- **Who.** A user with fewer than ``KGREC_EXPLORE_MAX_EVENTS`` events on items (default 5, every
  behaviour counted, from the history read serving does anyway) asking for the first page
  (``offset=0``).
- **How many slots.** ``max(1, round(KGREC_EXPLORE_SHARE × k))`` of the ``k`` slots (default share
  0.2: 2 of 10, 4 of 20, 1 of 1 to 7), spread evenly over the page (for ``k=10``: positions 5 and
  10; for ``k=20``: 5, 10, 15, 20). Items a business rule pinned or boosted keep their slots; the
  items an explored slot replaces are not shown on that page but lead the next one: the user's
  later pages are cut from the ranking without what their first page (same filters) and any
  explored slot showed them, at ``offset`` less the first page's length, so paging on shows no
  item twice and skips none (a later page settles the host's impression journals first: it may
  come a moment after the first page).
  ``KGREC_EXPLORE_SHARE=0`` switches exploration off: serving then does exactly what it did before.
- **Arms.** Every most specific category (``category:<id>``, as the catalogue's current item
  facts for the model have the items' categories) and every topic (``topic:<id>``: the model
  version's own, from its topic-items file, and for items folded in since, their ABOUT edges of
  that version, :class:`TopicMembers`) with at least :data:`MIN_ARM_ITEMS` items the model knows.
  An arm offers its most popular items (the model's popularity counts), skipping items outside
  the request's ``allowed`` mask (filters, unavailable or hidden items, block rules: the very mask
  the ranking used), the user's history, and the items already on the page, and preferring items
  no explored slot showed the user yet (so an arm tried again shows its next item); with
  diversity caps, also items over a cap.
- **Draw.** Each arm's click probability has a Beta(1 + clicks, 1 + shown − clicks) posterior;
  one sample per arm, and the slots go to the arms with the highest samples (one item per arm),
  each explored item's ``score`` being its arm's sample and its ``explore`` field the arm. The
  sampler is seeded by (user, number of the user's recorded impressions, the newest one's id), so
  one state always gives the same page and every request after a new impression draws afresh
  (the id too, since the count stops at the trimmed list's length).
- **Learning.** Nothing is kept in a serving process. The impression records which arm each
  explored item came from (field ``a`` of the stream entry, kgrec/impressions.py), and attribution
  (kgrec/attribution.py) adds a user's click, cart or purchase of a shown item to the impression.
  An explored item shown is one trial of its arm; it is a success when an event of the user was
  attributed to that impression's item. A new user's state is read in one Lua call over the
  user's newest impressions (at most ``USER_RECENT``, within the attribution window of the last
  one): one round trip, only for new users, the same for every process once shipped (about 0.1 s
  after the response, kgrec/impression_journal.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from graph_schema.statements.exploration import ITEM_TOPICS, VERSION_ITEM_TOPICS
from kgrec.config import Settings
from kgrec.diversity import CapCounter, Diversity, ItemGroups
from kgrec.gateway import GraphGateway, GraphUnavailable
from kgrec.impressions import ImpressionStore
from kgrec.item_facts import ItemFacts
from kgrec.limits import MAX_SIDE_VERSIONS
from kgrec.model_store import models_dir
from kgrec.recommender import Recommender
from kgrec.rules import Compiled
from kgrec.single_flight import RecentlyUsed, SingleFlight
from kgrec.topic_items import TopicItems, root_version, topic_items_path

log = logging.getLogger(__name__)

MIN_ARM_ITEMS = 3  # an arm with fewer items is too small to learn anything from
ARM_ITEMS = 100  # each arm's most popular items it offers
TOPICS_RETRY_S = 60.0  # a version without topics yet (written after activation) is asked again this late
TOPIC_READ_BATCH = 2_000  # items whose topics one graph read asks for
ARM_CACHE = 1 + MAX_SIDE_VERSIONS  # model versions whose arms a process keeps (the active one, variants')

R = TypeVar("R")

# KEYS: the user's impression list. ARGV: the stream, the attributed hashes' key prefix, and the
# filters (JSON) of a later page asking for its first page ('' for none).
# Field ``a`` of an impression is its explored items' arms (ImpressionStore.record's ``explored``),
# so an impression with it is a first page. Returns how many impressions the list holds, the newest
# one's id and the journal line of the newest one with explored items and these very filters (''
# when none is wanted or found), then for each one with explored items the JSON of its arms and
# the values of its attributed hash (events as JSON, and outcome flags).
_STATE = """
local function same(a, b)
  if type(a) ~= 'table' then return false end
  for key, value in pairs(a) do
    if b[key] ~= value then return false end
  end
  for key in pairs(b) do
    if a[key] == nil then return false end
  end
  return true
end
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
local wanted = nil
if ARGV[3] ~= '' then wanted = cjson.decode(ARGV[3]) end
local out = {#ids, ids[1] or '', ''}
for _, id in ipairs(ids) do
  local rows = redis.call('XRANGE', ARGV[1], id, id, 'COUNT', 1)
  if #rows > 0 then
    local fields, arms, line = rows[1][2], nil, nil
    for j = 1, #fields, 2 do
      if fields[j] == 'a' then
        arms = fields[j + 1]
      elseif fields[j] == 'j' then
        line = fields[j + 1]
      end
    end
    if arms then
      out[#out + 1] = arms
      out[#out + 1] = redis.call('HVALS', ARGV[2] .. id)
      if wanted and out[3] == '' and line and same(cjson.decode(line).f, wanted) then
        out[3] = line
      end
    end
  end
end
return out
"""


def explored_slots(k: int, share: float) -> int:
    """How many of ``k`` slots are explored: ``max(1, round(share × k))``, none when share is 0."""
    return 0 if share <= 0 or k <= 0 else min(k, max(1, round(share * k)))


def spread(free: Sequence[int], n: int) -> list[int]:
    """``n`` of the ``free`` page positions, evenly spaced, the last one included."""
    n = min(n, len(free))
    return [free[(j + 1) * len(free) // n - 1] for j in range(n)]


@dataclass(frozen=True)
class TopicMembers:
    """One model version's topic arms over the model's first ``items`` items: each topic's item rows,
    and when they were read.

    The items of the version's topic-items file (its own, or its root's for an incremental version:
    :mod:`kgrec.topic_items`) are its topics' members as that file has them; the file never
    changes, so it is read once per version. The other items (folded in after training) are their
    ABOUT edges of the version whose topics they are (``topics_of``: the file's version), read
    again whenever the model's item count moves. So two processes serving one model hold the same
    arms, whichever version's ABOUT edges the graph held when each first asked (a variant's
    candidate leaves the active version's edges in place until it is promoted).
    """

    members: dict[str, np.ndarray]  # arm -> its item rows, each once, in order
    read_at: float
    items: int = 0  # the model's items they cover (a fold-in's copy of the model appends items)
    topics_of: str = ""  # the version whose topics they are (the file's, or else the root's or own)
    own: dict[str, np.ndarray] = field(default_factory=dict)  # the file's members
    in_file: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # by item row
    item_ids: Sequence[str] = ()  # those items' ids, as the model had them when they were read

    @classmethod
    def of_file(cls, model: Recommender, folder: Path) -> TopicMembers:
        """The members the version's topic-items file gives ``model``'s items (none without a file)."""
        version = model.artifacts.version
        root = root_version(model.artifacts.parameters)
        n = len(model.artifacts.item_ids)
        found = next(
            (
                TopicItems.load(topic_items_path(folder, v), v, vectors=False)
                for v in (version, root)
                if v is not None and topic_items_path(folder, v).is_file()
            ),
            None,
        )
        if found is None:
            return cls({}, time.monotonic(), 0, root or version, {}, np.zeros(n, dtype=bool))
        rows = np.array([model.item_index.get(i, -1) for i in found.item_ids], dtype=np.int64)
        known = rows >= 0
        in_file = np.zeros(n, dtype=bool)
        in_file[rows[known]] = True
        items, slots = np.nonzero((found.item_topics >= 0) & known[:, None])
        pairs = zip(rows[items].tolist(), found.item_topics[items, slots].tolist(), strict=True)
        own = _grouped((row, found.topic_ids[t]) for row, t in pairs)
        return cls(own, time.monotonic(), 0, found.version, own, in_file)

    def read(self, model: Recommender, gateway: GraphGateway) -> TopicMembers:
        """These members with those of ``model``'s items outside the file: one graph read per
        :data:`TOPIC_READ_BATCH` of them (the items folded in; once they were read, only the items
        appended since), none when there are none, and one read of the version's edges when there
        is no file."""
        item_ids = model.artifacts.item_ids
        # a fold-in's copy of the model appends items: those before were read (while any topic was)
        start = self.items if self.members and self.covers(model) else 0
        in_file = np.zeros(len(item_ids), dtype=bool)
        in_file[: self.in_file.size] = self.in_file[: len(item_ids)]
        in_file[:start] = True
        outside = [item_ids[row] for row in np.flatnonzero(~in_file).tolist()]
        if not self.own and not start:
            rows = gateway.read(VERSION_ITEM_TOPICS, {"version": self.topics_of})
        else:
            rows = [
                r
                for start in range(0, len(outside), TOPIC_READ_BATCH)
                for r in gateway.read(
                    ITEM_TOPICS, {"ids": outside[start : start + TOPIC_READ_BATCH], "version": self.topics_of}
                )
            ]
        pairs = [
            (row, r["topic_id"])
            for r in rows
            if (row := model.item_index.get(r["item_id"])) is not None and not in_file[row]
        ]
        members = _grouped(pairs, self.members if start else self.own)
        return replace(
            self, members=members, read_at=time.monotonic(), items=len(item_ids), item_ids=item_ids
        )

    def covers(self, model: Recommender) -> bool:
        """Whether ``model``'s items begin with the items read before, in their rows: a fold-in
        appends, but an item folded in again moves to the end of the folded items (their order is
        the time of their latest fold-in), and then every folded row must be read again. Only the
        folded rows are compared: the version's trained items are in their rows in every copy."""
        item_ids, n = model.artifacts.item_ids, self.items
        if n > len(item_ids):
            return False
        if item_ids is self.item_ids:
            return True
        start = min(model.trained_items, n)
        return list(item_ids[start:n]) == list(self.item_ids[start:n])


def _grouped(
    pairs: Iterable[tuple[int, str]], add_to: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Each ``topic:<id>`` arm's rows of (row, topic id) ``pairs``, with ``add_to``'s, each once, in order."""
    members: dict[str, list[int]] = {}
    for row, topic_id in pairs:
        members.setdefault(f"topic:{topic_id}", []).append(row)
    merged = dict(add_to or {})
    for arm, rows in members.items():
        found = np.asarray(rows, dtype=np.int64)
        merged[arm] = np.unique(found if arm not in merged else np.concatenate([merged[arm], found]))
    return merged


@dataclass(frozen=True)
class Arms:
    """One model version's arms under one set of item facts: ids, and each arm's item rows, most
    popular first."""

    ids: tuple[str, ...]
    rows: tuple[np.ndarray, ...]
    has_topics: bool
    built_at: float  # when the topics were read
    items: int  # the model's items the topics cover
    facts: ItemFacts | None = field(default=None, compare=False, repr=False)  # the categories' facts
    popularity: np.ndarray | None = field(default=None, compare=False, repr=False)  # what orders them
    # the model's item ids they were built for (the list object: a fold-in's copy has a new one)
    item_ids: Sequence[str] = field(default=(), compare=False, repr=False)

    @classmethod
    def build(cls, model: Recommender, topics: TopicMembers, facts: ItemFacts | None = None) -> Arms:
        """Categories (each item's most specific ones under ``facts``, by default the model's own)
        and topics, with their items by popularity."""
        facts = model.facts if facts is None else facts
        members = dict(topics.members)
        pairs = ItemGroups(facts).specific_pairs()  # by item, then category: each pair once
        if pairs.size:
            order = np.argsort(pairs[:, 1], kind="stable")
            rows, categories = pairs[order, 0], pairs[order, 1]
            starts = np.flatnonzero(np.concatenate([[True], categories[1:] != categories[:-1]]))
            for category, members_rows in zip(
                categories[starts].tolist(), np.split(rows, starts[1:]), strict=True
            ):
                members[f"category:{facts.category_ids[category]}"] = members_rows
        popularity = np.asarray(model.artifacts.popularity, dtype=np.float64)
        ids: list[str] = []
        arm_rows: list[np.ndarray] = []
        for arm in sorted(members):
            items = members[arm]  # each row once, in order
            items = items[items < popularity.size]
            if items.size >= MIN_ARM_ITEMS:
                ids.append(arm)
                arm_rows.append(items[np.argsort(-popularity[items], kind="stable")][:ARM_ITEMS])
        counts = model.artifacts.popularity
        return cls(
            tuple(ids),
            tuple(arm_rows),
            bool(topics.members),
            topics.read_at,
            topics.items,
            facts,
            counts,
            model.artifacts.item_ids,
        )

    def ordered_by(self, popularity: np.ndarray) -> bool:
        """Whether the arms' items are in the order of ``popularity``: the counts they were built
        from, or those with a fold-in's items appended (an erasure lowers them)."""
        own = self.popularity
        if own is popularity:
            return True
        return own is not None and popularity.size >= own.size and np.array_equal(own, popularity[: own.size])


@dataclass(frozen=True)
class ArmState:
    """What a user's impressions and their attributions say about each arm."""

    impressions: int  # the user's kept impressions (the sampler's sequence number)
    shown: dict[str, int]
    clicked: dict[str, int]
    items: frozenset[str] = frozenset()  # the items explored slots showed the user already
    newest: str = ""  # the id of the user's newest impression ("" before the first)
    first_page: tuple[str, ...] = ()  # what the newest explored first page with the asked filters showed


def parse_state(reply: Sequence[Any]) -> ArmState:
    """The :data:`_STATE` script's reply as counts per arm."""
    shown: dict[str, int] = {}
    clicked: dict[str, int] = {}
    items: set[str] = set()
    for arms_json, values in zip(reply[3::2], reply[4::2], strict=True):
        arms: dict[str, str] = json.loads(arms_json)
        engaged = set()
        for value in values:
            text = value.decode() if isinstance(value, bytes) else str(value)
            if text.startswith("{"):  # an attributed event; the other values are outcome flags
                engaged.add(json.loads(text).get("item_id"))
        for item_id, arm in arms.items():
            items.add(item_id)
            shown[arm] = shown.get(arm, 0) + 1
            if item_id in engaged:
                clicked[arm] = clicked.get(arm, 0) + 1
    newest = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
    first_page = tuple(item_id for item_id, _score in json.loads(reply[2])["i"]) if reply[2] else ()
    return ArmState(int(reply[0]), shown, clicked, frozenset(items), newest, first_page)


def seed_of(user_id: str, sequence: int, newest: str = "") -> int:
    """The sampler's seed for this user at this point of their impressions (their number, and the
    newest one's id: the number stops growing once the list is trimmed, the id never repeats)."""
    digest = hashlib.sha256(f"{user_id}\x1f{sequence}\x1f{newest}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def draw(arms: Arms, state: ArmState, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One Thompson draw: arm indices by sampled click probability (highest first), and the samples."""
    clicks = np.array([state.clicked.get(a, 0) for a in arms.ids], dtype=np.float64)
    shown = np.array([state.shown.get(a, 0) for a in arms.ids], dtype=np.float64)
    samples = np.random.default_rng(seed).beta(1.0 + clicks, 1.0 + np.maximum(shown - clicks, 0.0))
    return np.argsort(-samples, kind="stable"), samples


class Exploration:
    """A serving process's exploration: the arms of each model version, and the per-user state read."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = ImpressionStore(settings)
        self._lock = threading.Lock()
        # model version -> its arms (under the latest facts asked for), built by one thread at a
        # time: the ARM_CACHE versions built last, and apart from them (so that a version whose
        # build fails pushes no built one out) the latest ARM_CACHE never built, each holding its
        # last failure
        self._built: RecentlyUsed[str, SingleFlight[Arms]] = RecentlyUsed(ARM_CACHE, SingleFlight.loading)
        self._unbuilt: RecentlyUsed[str, SingleFlight[Arms]] = RecentlyUsed(ARM_CACHE, SingleFlight.loading)
        # model version -> its topic arms' members, for the ARM_CACHE versions read last
        self._topics: RecentlyUsed[str, TopicMembers] = RecentlyUsed(ARM_CACHE)
        self._models = models_dir(settings.data_dir)  # where the versions' topic-items files are
        self._script: Any = None

    def page(
        self,
        model: Recommender,
        user_id: str,
        history_rows: Sequence[Mapping[str, Any]],
        offset: int,
        k: int,
        diversity: Diversity,
        filters: Mapping[str, Any],
    ) -> Page:
        """The exploration of this request's page (:data:`NONE` when off or not a new user).

        No I/O here: ``history_rows`` are the rows of the history read serving made anyway. A new
        user's later page (``offset`` > 0) reads their state when cut (:meth:`Page.cut_at`), to
        leave out what their first page with the same ``filters`` (the answer's filters and caps)
        and explored slots showed them.
        """
        slots = explored_slots(k, self.settings.explore_share)
        if not slots:
            return NONE
        # An interaction without counters (data imported without event types) counts as one event.
        events = sum(max(1, int(r.get("events") or 0)) for r in history_rows)
        if events >= self.settings.explore_max_events:
            return NONE
        if offset != 0:
            return LaterPage(self, model, user_id, filters)
        history = frozenset(r["item_id"] for r in history_rows)
        return ExploredPage(self, user_id, slots, history, diversity)

    def arms(self, model: Recommender, gateway: GraphGateway, facts: ItemFacts | None = None) -> Arms:
        """The arms of ``model``'s version under ``facts``: the catalogue's current item facts for
        the model (:meth:`kgrec.catalogue.CatalogueSnapshot.facts`; by default the model's own).

        Built once per version and facts object, which stays the same until a catalogue write
        changes a brand, a category or the tree, and again when a fold-in added items; the topics
        are read once per version from its topic-items file, and the topics of items outside it
        (folded in) from the graph whenever the model's items change (:class:`TopicMembers`), the
        categories rebuilt from the facts in array operations (about 35 ms on a 64,160-item
        catalogue). One thread builds a version's arms while the others that need them wait for
        that build and share its graph failure (:mod:`kgrec.single_flight`): on that catalogue
        reading all 192,480 item–topic rows from the graph took about 2 s, and four threads that
        missed at once made a 10 s stall; on a stalled server each waited one bound more than the
        thread before it.
        """
        facts = model.facts if facts is None else facts
        version = model.artifacts.version
        with self._lock:
            # kept at once, so that the threads asking together share it; among the built ones
            # once built (_build)
            flight = self._built.peek(version) or self._unbuilt.setdefault(
                version, lambda: SingleFlight(math.inf)
            )
        arms = flight.get(
            lambda _held: self._build(model, gateway, facts, flight),
            lambda held: _usable(held, model, facts),
        )
        assert arms is not None  # a build returns arms or raises
        return arms

    def built_versions(self) -> list[str]:
        """The model versions whose arms this process holds, least recently built first."""
        return [version for version, flight in self._built.items() if flight.held() is not None]

    def _build(
        self, model: Recommender, gateway: GraphGateway, facts: ItemFacts, flight: SingleFlight[Arms]
    ) -> Arms:
        version = model.artifacts.version
        topics = self._topics.peek(version)
        if topics is None:
            topics = TopicMembers.of_file(model, self._models)
        item_ids = model.artifacts.item_ids
        if (
            topics.items != len(item_ids)
            or not topics.covers(model)
            or (not topics.members and time.monotonic() - topics.read_at >= TOPICS_RETRY_S)
        ):
            topics = topics.read(model, gateway)
        arms = Arms.build(model, topics, facts)
        self._topics.put(version, topics)
        with self._lock:
            self._unbuilt.pop(version)
            self._built.put(version, flight)
        return arms

    def state(self, user_id: str, filters: Mapping[str, Any] | None = None) -> ArmState:
        """What the user's impressions and attributions say about each arm (one round trip); with a
        later page's ``filters``, also what the user's newest explored first page with them showed."""
        store = self.store
        client = store.client()
        with self._lock:
            if self._script is None:
                self._script = client.register_script(_STATE)
            script = self._script
        keys = [store.user_key(user_id)]
        args = [store.stream, store.attributed_key(""), "" if filters is None else json.dumps(filters)]
        return parse_state(store.run(lambda c: script(keys=keys, args=args, client=c)))


def _usable(arms: Arms, model: Recommender, facts: ItemFacts) -> bool:
    # Held by version, not by model object: the category arms are those of the facts they were
    # built from, the topic arms those of the items they were built for (a fold-in's copy of the
    # model has other items, appended, or moved when folded in again: TopicMembers.covers; an
    # erasure's copy shares the list), and every arm's order that of the popularity counts (an
    # erasure's copy lowers them). Arms built before the version's topics were written are
    # rebuilt after TOPICS_RETRY_S.
    if arms.facts is not facts or arms.item_ids is not model.artifacts.item_ids:
        return False
    if not arms.ordered_by(model.artifacts.popularity):
        return False
    return arms.has_topics or time.monotonic() - arms.built_at < TOPICS_RETRY_S


class Page:
    """A page without exploration: the ranking and the items pass through unchanged."""

    def cut_at(self, offset: int) -> int:
        """Where in its ranking the page asked for at ``offset`` starts."""
        return offset

    def watch(self, rank: Callable[[int, np.ndarray | None], R]) -> Callable[[int, np.ndarray | None], R]:
        """The ranking function serving pages with."""
        return rank

    def shown_rows(self) -> list[int]:
        """The rows of the items earlier pages showed, which this page leaves out (pins included)."""
        return []

    def fill(
        self,
        model: Recommender,
        items: list[dict[str, Any]],
        gateway: GraphGateway,
        groups: ItemGroups | None = None,
        facts: ItemFacts | None = None,
        compiled: Compiled | None = None,
    ) -> list[dict[str, Any]]:
        """The page's items (``groups``: the brands and categories the page's caps count; ``facts``:
        the catalogue's current item facts for ``model``, by default the model's own; ``compiled``:
        the page's live rules)."""
        return items


NONE = Page()


class LaterPage(Page):
    """A new user's later page, cut from the ranking without what their first page showed (with the
    same filters) and without anything explored slots showed them, at ``offset`` less the first
    page's length. So the ranked items explored slots displaced lead the second page, and paging
    on shows no item twice."""

    def __init__(
        self, exploration: Exploration, model: Recommender, user_id: str, filters: Mapping[str, Any]
    ) -> None:
        self.exploration = exploration
        self.model = model
        self.user_id = user_id
        self.filters = filters
        self._shown: tuple[list[int], int] | None = None

    def _left_out(self) -> tuple[list[int], int]:
        """The rows of the items to leave out, and how many items the first page showed (read once)."""
        if self._shown is None:
            try:
                # The first page may have been answered a moment ago, by this worker or another
                # one of the host: its impression must be in the stream before the state is read.
                self.exploration.store.settle()
                state = self.exploration.state(self.user_id, self.filters)
            except GraphUnavailable as exc:  # the page still answers
                log.warning("explored items not left out of a later page: %s", exc)
                self._shown = ([], 0)
            else:
                index = self.model.item_index
                rows = [index[i] for i in state.items.union(state.first_page) if i in index]
                self._shown = (rows, len(state.first_page))
        return self._shown

    def cut_at(self, offset: int) -> int:
        """``offset`` less the first page's length (the first page's items are not ranked)."""
        return max(0, offset - self._left_out()[1])

    def shown_rows(self) -> list[int]:
        """The rows of the first page's items and of every item explored slots showed the user."""
        return self._left_out()[0]

    def watch(self, rank: Callable[[int, np.ndarray | None], R]) -> Callable[[int, np.ndarray | None], R]:
        """``rank`` with the first page's and the explored items taken out of its ``allowed`` mask."""

        def watched(n: int, allowed: np.ndarray | None) -> R:
            rows = self._left_out()[0]
            if not rows:
                return rank(n, allowed)
            mask = np.ones(self.model.facts.n_items, dtype=bool) if allowed is None else allowed.copy()
            mask[[r for r in rows if r < mask.size]] = False
            return rank(n, mask)

        return watched


class ExploredPage(Page):
    """One new user's first page: sees the ranking's ``allowed`` mask, then fills the explored slots."""

    def __init__(
        self,
        exploration: Exploration,
        user_id: str,
        slots: int,
        history: frozenset[str],
        diversity: Diversity,
    ) -> None:
        self.exploration = exploration
        self.user_id = user_id
        self.slots = slots
        self.history = history
        self.diversity = diversity
        self.allowed: np.ndarray | None = None
        self.factor: np.ndarray | None = None  # the live boosts' and buries' multiplier per item

    def watch(self, rank: Callable[[int, np.ndarray | None], R]) -> Callable[[int, np.ndarray | None], R]:
        """``rank`` that also keeps the mask it was given (filters, catalogue, block rules)."""

        def watched(n: int, allowed: np.ndarray | None) -> R:
            self.allowed = allowed
            return rank(n, allowed)

        return watched

    def fill(
        self,
        model: Recommender,
        items: list[dict[str, Any]],
        gateway: GraphGateway,
        groups: ItemGroups | None = None,
        facts: ItemFacts | None = None,
        compiled: Compiled | None = None,
    ) -> list[dict[str, Any]]:
        """``items`` with the explored slots filled (each marked ``explore: <arm>``), the arms'
        categories as ``facts`` (the catalogue's current ones for ``model``) have them.

        With diversity caps (and the page's ``groups``), an explored item keeps every brand and
        category within its cap; a slot no arm can fill that way keeps its ranked item, unless
        that one breaks a cap too (then the page cannot hold it, and the slot is explored).
        An item the ``compiled`` rules bury (a factor below 1) is not explored; an explored item
        lists the boosts that touched it in ``rules``.
        """
        self.factor = compiled.factor if compiled is not None else None
        free = [k for k, item in enumerate(items) if not item.get("rules")]
        positions = spread(free, self.slots)
        if not positions:
            return items
        arms = self.exploration.arms(model, gateway, facts)
        try:
            state = self.exploration.state(self.user_id)
        except GraphUnavailable as exc:  # the page still answers, without exploration
            log.warning("exploration skipped: %s", exc)
            return items
        order, samples = draw(arms, state, seed_of(self.user_id, state.impressions, state.newest))
        taken = {item["item_id"] for item in items}
        item_ids = model.artifacts.item_ids
        index = model.item_index
        counter = CapCounter(groups, self.diversity) if groups is not None and self.diversity.active else None
        if counter is not None:
            replaced = set(positions)
            for n, item in enumerate(items):
                if n not in replaced and item["item_id"] in index:
                    counter.add(index[item["item_id"]])
        filled = list(items)
        left = order.tolist()  # the arms in draw order, each one showing at most one item
        for position in positions:
            picked = self._choose(arms, left, item_ids, taken, state.items, counter)
            if picked is None and counter is not None:
                ranked = index.get(items[position]["item_id"])
                if ranked is not None and counter.fits(ranked):
                    counter.add(ranked)
                    continue
                picked = self._choose(arms, left, item_ids, taken, state.items, None)
            if picked is None:
                continue
            arm, row = picked
            taken.add(item_ids[row])
            if counter is not None:
                counter.add(row)
            filled[position] = {
                "item_id": item_ids[row],
                "score": float(f"{samples[arm]:.6g}"),
                "rules": compiled.rule_ids(row) if compiled is not None else [],
                "explore": arms.ids[arm],
            }
        return filled

    def _choose(
        self,
        arms: Arms,
        left: list[int],
        item_ids: Sequence[str],
        taken: set[str],
        shown: frozenset[str],
        counter: CapCounter | None,
    ) -> tuple[int, int] | None:
        """The first arm of ``left`` with an item the page may show, and that item's row; the arm
        leaves ``left``."""
        for n, arm in enumerate(left):
            row = self._pick(arms.rows[arm], item_ids, taken, shown, counter)
            if row is not None:
                del left[n]
                return arm, row
        return None

    def _pick(
        self,
        rows: np.ndarray,
        item_ids: Sequence[str],
        taken: set[str],
        shown: frozenset[str],
        counter: CapCounter | None = None,
    ) -> int | None:
        """The arm's most popular item the page may show that no explored slot showed the user yet,
        else its most popular one the page may show (an arm tried again shows its next item)."""
        allowed, factor = self.allowed, self.factor
        fallback = None
        for row in rows.tolist():
            item = item_ids[row]
            if allowed is not None and (row >= allowed.size or not allowed[row]):
                continue
            # a slot the ranking did not earn would undo a bury: buried items are not explored
            if factor is not None and row < factor.size and factor[row] < 1:
                continue
            if item in taken or item in self.history:
                continue
            if counter is not None and not counter.fits(row):
                continue
            if item not in shown:
                return row
            if fallback is None:
                fallback = row
        return fallback
