"""What the API's endpoints do, without the web: the active model, a user's live history, and answers.

:class:`Serving` is built from :class:`~kgrec.config.Settings` once per process and
opens its graph gateway on first use. Each public method returns the JSON-ready
answer of one endpoint, or raises :class:`~kgrec.errors.NoActiveModel` or
:class:`~kgrec.errors.NotFound` for the adapter (Flask, the CLI, a test) to report.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from prometheus_client import Counter

from graph_schema.statements import admin
from graph_schema.statements.models import ACTIVE_VERSION
from graph_schema.statements.privacy import ERASE_USER, ERASURE_CLEANED_UP, ERASURE_CLEANUP_OWED
from graph_schema.statements.rules import USER_INTEREST_IDS
from graph_schema.statements.serving import ITEM_EXISTS, USER_HISTORY, USER_INTERESTS
from kgrec import catalogue, erasure, model_versions, rules
from kgrec.config import Settings
from kgrec.decay import decayed, shown_weight
from kgrec.diversity import POOL, Diversity, ItemGroups, diversify
from kgrec.errors import MigrationsPending, NoActiveModel, NotFound
from kgrec.events.ingest import IngestResult, ingest
from kgrec.events.validation import Event
from kgrec.explanations import (
    EntityCounts,
    PathScorer,
    co_purchase_pairs,
    co_user_bounds,
    co_users_can_rank,
    read_co_user_paths,
    read_paths,
)
from kgrec.exploration import Exploration
from kgrec.gateway import GraphGateway, GraphUnavailable
from kgrec.impressions import ErasedImpressions, ImpressionStore
from kgrec.item_facts import ItemFacts
from kgrec.job_queue import FOLD_IN_ITEMS, JobQueueUnavailable, job_client, withdraw_plans
from kgrec.limits import MAX_SIDE_VERSIONS
from kgrec.migrations import PendingMigrations
from kgrec.model_store import ActiveModel, ReadyVersion, artifact_name, models_dir
from kgrec.ranking import Ranking
from kgrec.recommender import HistoryEntry, Recommender
from kgrec.relation_sentences import load_sentences
from kgrec.runtime import ProcessGateway
from kgrec.search_cold_start import SearchRanking, search_ranking, text_vector, text_vector_read
from kgrec.single_flight import RecentlyUsed, SingleFlight
from kgrec.ties import tie_keys
from kgrec.topic_items import VersionTopicItems
from kgrec.topics import (
    TopicInterest,
    cold_start_reason,
    search_topics,
    topic_detail,
    topic_history,
    topic_interests,
    user_topics,
    user_topics_read,
)

log = logging.getLogger(__name__)

HISTORY_LIMIT = 200  # the user's most recent interactions folded in at request time
EXPLANATION_HUBS = 30  # the user's most recent items and strongest interests the graph searches from
PIN_INTERESTS = 10  # a pin's `interest` condition: among the user's strongest brands and categories
EXCLUSIONS = ("seen", "purchased", "none")  # which of the user's items recommendations leave out


NO_DIVERSITY = Diversity()

POST_COMMIT_FAILURES = Counter(
    "kgrec_post_commit_failures_total",
    "Best-effort steps after a committed write that failed (the write stands and was answered as such)",
    ["step"],
)
T = TypeVar("T")


def after_commit(step: str, work: Callable[[], T], otherwise: T) -> T:
    """Run ``work``, a best-effort step after a write committed: if it fails, log one line, count it in
    ``kgrec_post_commit_failures_total{step}`` and return ``otherwise``. An error here must not turn
    the committed write into an error answer: a client told "nothing was written" would send it
    again, and one that makes new ids would count it twice."""
    try:
        return work()
    except Exception as exc:  # any failure: the write is committed whatever went wrong here
        POST_COMMIT_FAILURES.labels(step).inc()
        log.warning(
            "after a committed write, %s failed (the write stands): %s: %s", step, type(exc).__name__, exc
        )
        return otherwise


def now_ms() -> float:
    """The current time in epoch milliseconds."""
    return time.time() * 1000


def _score(value: float) -> float:
    # Six significant digits: enough to rank, short on the wire.
    return float(f"{value:.6g}")


@dataclass(frozen=True)
class ItemFilters:
    """The catalogue filters shared by recommendations and similar items (None: not filtered)."""

    brand: str | None = None
    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None

    def as_dict(self) -> dict[str, object]:
        """The filters that were given."""
        return {k: v for k, v in self.__dict__.items() if v is not None}

    def mask(
        self, model: Recommender, snapshot: catalogue.CatalogueSnapshot | None = None
    ) -> np.ndarray | None:
        """Which of the model's items pass (None: all of them), hiding what the catalogue hides."""
        snapshot = snapshot if snapshot is not None else catalogue.CatalogueSnapshot()
        return catalogue.allowed_items(
            model, snapshot, now_ms(), self.brand, self.category, self.min_price, self.max_price
        )


@dataclass(frozen=True)
class UserHistory:
    """A user's latest interactions: decayed for the Recommender, and the rows they came from."""

    entries: list[HistoryEntry]
    rows: list[Mapping[str, Any]]

    @property
    def item_ids(self) -> list[str]:
        """The items, most recent first."""
        return [r["item_id"] for r in self.rows]

    def holds_hubs(self, hubs: int) -> bool:
        """Whether these rows surely hold the user's ``hubs`` most recent items, whatever order ties take.

        They do unless the read was cut (``HISTORY_LIMIT`` rows) inside a run of equal
        recency that reaches back to the ``hubs``-th row.
        """
        rows = self.rows
        if len(rows) < HISTORY_LIMIT or len(rows) <= hubs:
            return True
        return rows[hubs - 1]["position"] != rows[-1]["position"]

    def excluded(self, exclude: str) -> list[str]:
        """The items to leave out of recommendations: ``seen``, ``purchased`` or ``none`` (see EXCLUSIONS)."""
        if exclude == "seen":
            return self.item_ids
        if exclude == "purchased":
            return [r["item_id"] for r in self.rows if r["purchases"]]
        return []


def _no_artifact(version: str) -> NotFound:
    return NotFound("model_version", version, f"no artifact for model version {version!r}")


def _ready_version(version: str, path: Path) -> ReadyVersion:
    """``version`` loaded from ``path``; NotFound when its artifact is gone (collected meanwhile)."""
    try:
        return ReadyVersion(path)
    except FileNotFoundError:
        raise _no_artifact(version) from None


def _log_rewritten(server: str, rewrite: Callable[[], str]) -> str:
    """An erasure's log rewrite on ``server``: its status, ``unavailable`` when the server fails or
    does not answer. The user is erased by then, so that is no 503 ("nothing was written", and a
    resend would be a 404): the answer says the log still holds the deleted data."""
    try:
        return rewrite()
    except GraphUnavailable as exc:  # the impression store's failures are GraphUnavailable too
        log.warning("erasure: the %s server's log was not rewritten: %s", server, exc)
        return erasure.UNAVAILABLE


class Serving:
    """The process's serving state: one graph gateway and the active model, both opened on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._gateway = ProcessGateway(settings, timeout_s=settings.serving_timeout_s)
        self._lock = threading.Lock()
        self._active: ActiveModel | None = None
        self._active_gateway: GraphGateway | None = None
        self._catalogue: catalogue.CatalogueView | None = None
        self._catalogue_gateway: GraphGateway | None = None
        # by id of the facts they group: the groups keep their facts alive, so an id held is never
        # another object's; the active version's, and each side version's
        self._groups: RecentlyUsed[int, ItemGroups] = RecentlyUsed(MAX_SIDE_VERSIONS + 1)
        self._rules: rules.RulesView | None = None
        self._rules_gateway: GraphGateway | None = None
        # experiment variants' versions (kgrec/experiments.py), each loaded by one thread; the most
        # recently used MAX_SIDE_VERSIONS, and any whose load is under way
        self._versions: RecentlyUsed[str, SingleFlight[ReadyVersion]] = RecentlyUsed(
            MAX_SIDE_VERSIONS, SingleFlight.loading
        )
        # Read now, so a bad template file stops start-up rather than failing requests.
        self.sentences = load_sentences(settings.relation_sentences)
        self.entity_counts = EntityCounts()
        self.exploration = Exploration(settings)
        self.topic_items = VersionTopicItems(models_dir(settings.data_dir))  # kgrec/search_cold_start.py
        self.migrations = PendingMigrations(settings.migrations_dir)

    @property
    def gateway(self) -> GraphGateway:
        """This process's graph gateway."""
        return self._gateway.get()

    def close(self) -> None:
        """Release the graph connection (for short-lived users such as the CLI), and stop the rules'
        poller, which would otherwise read through it again."""
        with self._lock:
            view, self._rules = self._rules, None
        if view is not None:
            view.close()
        self._gateway.close()

    def active_model(self) -> Recommender:
        """The active model (re-checked at most once a second); raises NoActiveModel before the first."""
        gateway = self.gateway
        with self._lock:
            # A new gateway (after a fork) needs a holder that reads through it.
            if self._active is None or self._active_gateway is not gateway:
                self._active = ActiveModel(gateway, self.settings.data_dir)
                self._active_gateway = gateway
            holder = self._active
        model = holder.get()
        if model is None:
            raise NoActiveModel()
        # A variant promoted is served by the active model now: its copy loaded beside it would stay
        # in memory, unused, until four other versions pushed it out.
        self._versions.pop(model.artifacts.version)
        return model

    def promote(self, version: str) -> dict[str, Any]:
        """Make ``version`` the active one (:func:`kgrec.model_versions.promote`); this process serves
        it from its next request, the others within about a second."""
        view = model_versions.promote(self.gateway, self.settings.data_dir, version)
        with self._lock:
            holder = self._active
        if holder is not None:
            holder.stale()
        return view

    def warm(self) -> Recommender:
        """Load the active model and build what its first requests would otherwise build.

        That is the catalogue's facts for it and, with exploration on, the exploration arms: on a
        64,160-item catalogue the arms take about 3 s of CPU, which a request would wait for.
        Raises NoActiveModel before the first model.
        """
        model = self.active_model()
        facts = self.catalogue_view().snapshot().facts(model)
        if self.settings.explore_share > 0:
            self.exploration.arms(model, self.gateway, facts)
        return model

    def held_model_version(self) -> str | None:
        """The active model's version as this process loaded it (no graph read); None before any load."""
        with self._lock:
            holder = self._active
        return None if holder is None else holder.held_version()

    def model(self, version: str | None = None) -> Recommender:
        """The active model, or another ready version (an experiment's variant), loaded once per process.

        At most ``MAX_SIDE_VERSIONS`` other versions stay loaded; items folded in after their
        training are not added to them (the active version gets them), erasures are, within about
        a second (:class:`~kgrec.model_store.ReadyVersion`).
        """
        active = self.active_model()
        if version is None or version == active.artifacts.version:
            return active
        path = models_dir(self.settings.data_dir) / artifact_name(version)
        flight = self._versions.peek(version)
        if (flight is None or flight.held() is None) and not path.is_file():
            raise _no_artifact(version)
        # kept at once, so that the threads asking together share it
        flight = self._versions.setdefault(version, lambda: SingleFlight(math.inf))
        # Loaded outside the process's lock, which every request takes (the active model, the
        # catalogue, the rules): reading a large artifact takes seconds.
        loaded = flight.get(lambda _held: _ready_version(version, path))
        assert loaded is not None  # a load answers a version or raises
        return loaded.get(self.gateway)

    def catalogue_view(self) -> catalogue.CatalogueView:
        """This process's view of the catalogue (hidden items, current prices)."""
        gateway = self.gateway
        with self._lock:
            if self._catalogue is None or self._catalogue_gateway is not gateway:
                self._catalogue = catalogue.CatalogueView(gateway)
                self._catalogue_gateway = gateway
            return self._catalogue

    def catalogue(self) -> catalogue.CatalogueSnapshot:
        """The catalogue as this process last saw it; a request takes it once and reads the facts
        (brands, categories, tree), prices and hidden items of every model from it."""
        return self.catalogue_view().snapshot()

    def allowed(
        self, model: Recommender, filters: ItemFilters, snapshot: catalogue.CatalogueSnapshot | None = None
    ) -> np.ndarray | None:
        """The ``allowed`` mask for ``model``: the filters, with the catalogue's hidden items, brands,
        categories and prices."""
        return filters.mask(model, self.catalogue() if snapshot is None else snapshot)

    # --- reads -----------------------------------------------------------------------------------

    def user_history(self, user_id: str) -> UserHistory:
        """The user's latest interactions, decayed to now (one read)."""
        return self._history(user_id, self.gateway.read(*self._history_read(user_id)), now_ms())

    def _history_read(self, user_id: str) -> tuple[Any, dict[str, Any]]:
        return USER_HISTORY, {"user_id": user_id, "limit": HISTORY_LIMIT}

    def _history(self, user_id: str, rows: list[dict[str, Any]], at: float) -> UserHistory:
        half_life = self.settings.half_life_ms
        ties = tie_keys(user_id, [r["item_id"] for r in rows])
        entries = [
            HistoryEntry(
                r["item_id"], decayed(r["weight"], r["weight_ts"], at, half_life), int(r["position"]), tie
            )
            for r, tie in zip(rows, ties, strict=True)
        ]
        return UserHistory(entries, rows)

    def explanation_paths(
        self,
        model: Recommender,
        user_id: str,
        item_ids: Sequence[str],
        history: UserHistory,
        places: int,
        facts: ItemFacts | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """The best ``places`` scored paths (best first) from the user to each item; brand and
        category paths weighted by their rarity in ``facts`` (the request's catalogue facts for
        ``model``; by default the latest).

        One round trip reads every path kind but co-users for all items; the
        user's recent items (``history``) are the hubs whose co-purchase links
        the model proposes and the graph confirms. Co-user paths, the costliest
        read (one statement per item), are read in a second round trip only for
        the items where one could reach the first ``places``
        (:func:`kgrec.explanations.co_user_bounds`).
        """
        if not item_ids:
            return {}
        forward, backward = co_purchase_pairs(model, history.item_ids, item_ids)
        active_version = self.held_model_version() or model.artifacts.version
        known = self.entity_counts.known(active_version)
        now = now_ms()
        rows = read_paths(
            self.gateway,
            user_id,
            item_ids,
            hubs=EXPLANATION_HUBS,
            now_ms=now,
            half_life_ms=self.settings.half_life_ms,
            forward=forward,
            backward=backward,
            counted=list(known),
        )
        scorer = PathScorer(
            model,
            now,
            self.settings.half_life_ms,
            self.sentences,
            self.entity_counts,
            known,
            self.catalogue().facts(model) if facts is None else facts,
            active_version,
        )
        paths = scorer.paths(rows, places=places)
        bounds = co_user_bounds(
            model, history.entries, item_ids, complete=history.holds_hubs(EXPLANATION_HUBS)
        )
        wanted = [i for i in bounds if co_users_can_rank(paths.get(i, []), bounds[i], places)]
        if wanted:
            co_users = read_co_user_paths(self.gateway, user_id, wanted, hubs=EXPLANATION_HUBS)
            scorer.paths(co_users, into=paths, places=places)
        return paths

    def groups(self, facts: ItemFacts) -> ItemGroups:
        """Each item's brand and most specific categories under ``facts``, for diversity (one per
        facts object: its items' groups are worked out as pages ask for them)."""
        return self._groups.setdefault(id(facts), lambda: ItemGroups(facts))

    def rules_view(self) -> rules.RulesView:
        """This process's business rules."""
        gateway = self.gateway
        with self._lock:
            if self._rules is None or self._rules_gateway is not gateway:
                self._rules = rules.RulesView(gateway)
                self._rules_gateway = gateway
            return self._rules

    def user_interest_ids(self, user_id: str) -> set[str]:
        """The ids of the user's strongest brands and categories (pin conditions)."""
        params = {
            "user_id": user_id,
            "now": int(now_ms()),
            "half_life_ms": self.settings.half_life_ms,
            "limit": PIN_INTERESTS,
        }
        return {row["id"] for row in self.gateway.read(USER_INTEREST_IDS, params)}

    def _page(
        self,
        model: Recommender,
        rank: Callable[[int, np.ndarray | None], Ranking],
        *,
        surface: str,
        k: int,
        offset: int,
        filters: ItemFilters,
        diversity: Diversity,
        context: rules.RequestContext,
        excluded: Sequence[str] = (),
        snapshot: catalogue.CatalogueSnapshot | None = None,
        shown_before: int = 0,
        shown_rows: Sequence[int] = (),
    ) -> list[dict[str, Any]]:
        """One page of a ranking: catalogue mask and blocks, boosts and buries, diversity, pins, paging.

        ``rank(n, allowed)`` returns the top ``n``. A reordered ranking is always cut from the same
        ``POOL`` top items, so its pages stay consistent. Filters, rules and diversity read the
        brands and categories of one catalogue ``snapshot`` (default: the latest).
        ``shown_before`` items come before this ranking's first (a new user's first page, which a
        later page's ranking leaves out), so a pin's position counts them; ``shown_rows``, the
        items earlier pages showed, are pinned no more than ranked.
        """
        at = now_ms()
        snapshot = self.catalogue() if snapshot is None else snapshot
        facts = snapshot.facts(model)
        compiled = self.rules_view().rules().compiled(model, surface, at, facts)
        allowed = self.allowed(model, filters, snapshot)
        if compiled.blocked is not None:
            allowed = ~compiled.blocked if allowed is None else allowed & ~compiled.blocked
        pinned_by: dict[int, list[str]] = {}
        if not (diversity.active or compiled.reorders):
            ranked = rank(offset + k, allowed)
        else:
            ranked = rules.apply_scores(rank(POOL, allowed), compiled)
            if diversity.active:
                upto = offset + k + len(compiled.pins)
                ranked = diversify(ranked, self.groups(facts), k, diversity, upto)
            if compiled.pins:
                index = model.item_index
                left_out = {index[i] for i in excluded if i in index}.union(shown_rows)
                ranked = rules.apply_pins(
                    ranked, compiled, context, allowed, left_out, pinned_by, shown_before
                )
        page = ranked.cut(offset, offset + k)
        ids = model.artifacts.item_ids
        return [
            {"item_id": ids[row], "score": _score(score), "rules": compiled.rule_ids(row, pinned_by.get(row))}
            for row, score in zip(page.rows.tolist(), page.scores.tolist(), strict=True)
        ]

    def recommendations(
        self,
        user_id: str,
        *,
        k: int,
        offset: int,
        exclude: str,
        filters: ItemFilters,
        explain: bool,
        diversity: Diversity = NO_DIVERSITY,
        model_version: str | None = None,
    ) -> dict[str, Any]:
        """Top-k items for a user: history folded in at request time; decayed popularity for a new user."""
        model = self.model(model_version)
        at = now_ms()
        history_rows, topic_rows = self.gateway.read_many(
            [self._history_read(user_id), user_topics_read(user_id, int(at), self.settings.half_life_ms)]
        )
        history = self._history(user_id, history_rows, at)
        # Topic interests (searches, reviews, tags) join the profile as their topics' central items.
        topics = topic_interests(topic_rows)
        profile = [*history.entries, *topic_history(user_id, topics, history.entries)]
        excluded = [history.excluded(exclude)]

        def rank(n: int, allowed: np.ndarray | None) -> Ranking:
            return model.rank([profile], n, excluded, allowed)[0]

        searched = self.searching_newcomer(model, user_id, topics) if topics and not history.entries else None
        if searched is not None:  # their topics' items by their searches (kgrec/search_cold_start.py)
            rank = searched.rank(rank, [model.item_index[i] for i in excluded[0] if i in model.item_index])
        snapshot = self.catalogue()
        context = rules.RequestContext(
            brand=filters.brand,
            category=filters.category,
            interests=lambda: self.user_interest_ids(user_id),
            facts=snapshot.facts(model),
        )
        # new users: explored slots on their first page (kgrec/exploration.py)
        answer_filters = {**filters.as_dict(), **diversity.as_dict()}
        explore = self.exploration.page(model, user_id, history.rows, offset, k, diversity, answer_filters)
        cut = explore.cut_at(offset)
        items = self._page(
            model,
            explore.watch(rank),
            surface="recommendations",
            k=k,
            offset=cut,
            shown_before=offset - cut,
            shown_rows=explore.shown_rows(),
            filters=filters,
            diversity=diversity,
            context=context,
            excluded=excluded[0],
            snapshot=snapshot,
        )
        facts = snapshot.facts(model)
        groups = self.groups(facts) if diversity.active else None
        # the live rules, as the ranking had them (compiled once per change, then the same object)
        compiled = self.rules_view().rules().compiled(model, "recommendations", now_ms(), facts)
        items = explore.fill(model, items, self.gateway, groups, facts, compiled)
        if explain:
            paths = self.explanation_paths(
                model, user_id, [i["item_id"] for i in items], history, places=1, facts=facts
            )
            for item in items:
                best = paths.get(item["item_id"])
                item["reason"] = best[0] if best else None
        return {
            "user_id": user_id,
            "model_version": model.artifacts.version,
            "recommendation_id": str(uuid.uuid4()),
            "cold_start": not history.entries,
            "k": k,
            "offset": offset,
            "filters": answer_filters,
            "items": items,
            **(
                {"reason": cold_start_reason(topics, searched is not None and searched.shown(model, items))}
                if topics and not history.entries
                else {}
            ),
        }

    def searching_newcomer(
        self, model: Recommender, user_id: str, topics: Sequence[TopicInterest]
    ) -> SearchRanking | None:
        """For a user without history: their topics' items scored by their text vector (one read);
        None when the version has no topic items or the user no text vector."""
        items = self.topic_items.for_model(model.artifacts.version, model.artifacts.parameters)
        if items is None:
            return None
        vector = text_vector(self.gateway.read(*text_vector_read(user_id)))
        if vector is None:
            return None
        return search_ranking(model, items, vector, [t.topic_id for t in topics])

    def explanation(
        self, user_id: str, item_id: str, *, max_paths: int, model_version: str | None = None
    ) -> dict[str, Any]:
        """The best paths (at most 3 hops) from the user to the item, scored by ``model_version``'s
        model (None: the active one; an experiment's variant serves its own); NotFound for an
        unknown item."""
        model = self.model(model_version)
        if item_id not in model.item_index and not self.gateway.read(ITEM_EXISTS, {"item_id": item_id}):
            raise NotFound("item_id", item_id, f"no item with id {item_id!r}")
        history = self.user_history(user_id)
        paths = self.explanation_paths(model, user_id, [item_id], history, max_paths).get(item_id, [])
        return {
            "user_id": user_id,
            "item_id": item_id,
            "model_version": model.artifacts.version,
            "paths": paths,
        }

    def similar(
        self,
        item_id: str,
        *,
        k: int,
        filters: ItemFilters,
        diversity: Diversity = NO_DIVERSITY,
        model_version: str | None = None,
        user_id: str | None = None,
    ) -> dict[str, Any]:
        """Items closest to ``item_id`` by the model's embeddings; NotFound if the model cannot place it.

        With ``user_id``, a pin whose ``when`` names an interest applies when it is one of that
        user's (read once, only if such a pin is live); without, it does not apply."""
        model = self.model(model_version)
        if item_id not in model.item_index:
            raise NotFound("item_id", item_id, f"the model knows no item with id {item_id!r}")
        snapshot = self.catalogue()
        facts, row = snapshot.facts(model), model.item_index[item_id]
        brand = facts.brand_of(row)
        context = rules.RequestContext(
            brand=filters.brand,
            category=filters.category,
            item_brands=(brand,) if brand is not None else (),
            item_categories=tuple(sorted(facts.category_ids_of(row))),
            interests=rules.no_interests if user_id is None else partial(self.user_interest_ids, user_id),
            facts=facts,
        )
        items = self._page(
            model,
            lambda n, allowed: model.rank_similar(item_id, n, allowed),
            surface="similar",
            k=k,
            offset=0,
            filters=filters,
            diversity=diversity,
            context=context,
            excluded=(item_id,),  # never similar to itself, even when a pin names it
            snapshot=snapshot,
        )
        return {
            "item_id": item_id,
            "model_version": model.artifacts.version,
            "k": k,
            "filters": {**filters.as_dict(), **diversity.as_dict()},
            "items": items,
        }

    def interests(self, user_id: str, *, limit: int, items: int) -> dict[str, Any]:
        """Top brands and categories with decayed weights and the items that drove each (one read), and
        the top topics with their most central items (one read)."""
        rows = self.gateway.read(
            USER_INTERESTS,
            {
                "user_id": user_id,
                "now": int(now_ms()),
                "half_life_ms": self.settings.half_life_ms,
                "limit": limit,
                "items": items,
            },
        )
        grouped: dict[str, list[dict[str, Any]]] = {"Brand": [], "Category": []}
        for row in rows:
            grouped[row["kind"]].append(
                {
                    "id": row["id"],
                    "name": row["name"],
                    "weight": shown_weight(row["weight"]),
                    "events": int(row["events"] or 0),
                    "last_ts": row["last_ts"],
                    "items": [
                        {
                            "item_id": d["id"],
                            "title": d["title"],
                            "weight": shown_weight(d["weight"]),
                        }
                        for d in row["drivers"]
                        if d["id"] is not None
                    ],
                }
            )
        for entries in grouped.values():
            entries.sort(key=lambda e: (-e["weight"], e["id"]))
        at, half_life = int(now_ms()), self.settings.half_life_ms
        topics = user_topics(self.gateway, user_id, at, half_life, topics=limit, items=items)
        return {
            "user_id": user_id,
            "brands": grouped["Brand"],
            "categories": grouped["Category"],
            "topics": [t.as_interest() for t in topics],
        }

    def search_topics(self, text: str, *, limit: int) -> dict[str, Any]:
        """The active version's topics closest in meaning to ``text``."""
        return search_topics(self.gateway, text, limit, offline=self.settings.hf_hub_offline)

    def topic(self, topic_id: str, *, items: int) -> dict[str, Any]:
        """One topic with its most central items; NotFound if there is none."""
        return topic_detail(self.gateway, topic_id, items)

    def catalogue_item(self, item_id: str) -> dict[str, Any]:
        """The item as the graph holds it; NotFound if there is none."""
        item = catalogue.read_item(self.gateway, item_id)
        if item is None:
            raise NotFound("item_id", item_id, f"no item with id {item_id!r}")
        return item

    def readiness(self) -> dict[str, Any]:
        """The graph answers, holds every migration and a model is active (GraphUnavailable if down,
        MigrationsPending while ``kgrec migrate`` has not run, NoActiveModel before the first model)."""
        gateway = self.gateway
        gateway.read(admin.PING)
        # A process started before `kgrec migrate` reads by what the migrations add (folded items by
        # an indexed property, for one) and would miss data without an error: not ready until done.
        missing = self.migrations.ids(gateway)
        if missing:
            raise MigrationsPending(missing)
        active = gateway.read(ACTIVE_VERSION)
        if not active:
            raise NoActiveModel("the graph answers, but no model is active yet (run `kgrec train`)")
        return {"status": "ready", "engine": gateway.engine, "model_version": active[0]["id"]}

    def graph_stats(self) -> dict[str, Any]:
        """Node counts per label and relationship counts per type."""
        gateway = self.gateway
        return {
            "nodes": {r["label"]: int(r["count"]) for r in gateway.read(admin.NODE_COUNTS)},
            "relationships": {r["type"]: int(r["count"]) for r in gateway.read(admin.RELATIONSHIP_COUNTS)},
        }

    # --- writes ----------------------------------------------------------------------------------

    def erase_user(self, user_id: str, impressions: ImpressionStore | None = None) -> dict[str, Any]:
        """Erase a user: node, edges, embeddings, their share of popularity, (given the store) their
        impressions and this host's journal lines of them, and the incremental-update plans that
        name them; leave a tombstone (``(:Erasure)``: events and imports dated up to now do not
        bring the user back), also when the answer is NotFound; then rewrite the servers'
        append-only files, so that none keeps the deleted data. NotFound if none of it was there
        (so a repeated erasure is a 404)."""
        now = int(now_ms())
        erased = impressions.erase_user(user_id, now) if impressions is not None else ErasedImpressions(0, 0)
        erasure_id = erasure.user_hash(user_id)
        summary = self.gateway.write(ERASE_USER, {"user_id": user_id, "erasure_id": erasure_id, "now": now})
        if not summary.rows and not erased.impressions:
            if impressions is not None and erased.compacted:  # a rebuild an earlier erasure owed
                _log_rewritten("impressions", impressions.rewrite_log)  # failing, still the 404
            owed = self.gateway.read(ERASURE_CLEANUP_OWED, {"erasure_id": erasure_id})
            if owed:  # the erasure that deleted the user never answered (timed out, or died)
                self._clean_up_erasure(user_id, erasure_id, owed[0]["owed"])  # failing, still the 404
            raise NotFound("user_id", user_id, f"no user with id {user_id!r}")
        plans, graph_log = self._clean_up_erasure(user_id, erasure_id, now if summary.rows else None)
        logs = {"graph": graph_log}
        if impressions is not None:
            logs["impressions"] = _log_rewritten("impressions", impressions.rewrite_log)
            if erased.compacted is False:  # the stream, so the rewrite too, still holds deleted bytes
                logs["impressions"] = erasure.FAILED
        row = summary.rows[0] if summary.rows else {}
        return {
            "user_id": user_id,
            "erased": True,
            "removed": {
                "user": summary.nodes_deleted,
                "relationships": summary.relationships_deleted,
                "interactions": int(row.get("interactions", 0)),
                "interests": int(row.get("interests", 0)),
                "embeddings": int(row.get("embeddings", 0)),
                "impressions": erased.impressions,
                "journal_lines": erased.journal_lines,
                "update_plans": plans,
            },
            "popularity_adjusted_items": int(row.get("popularity_adjusted", 0)),
            "logs": logs,
        }

    def _clean_up_erasure(self, user_id: str, erasure_id: str, owed: int | None) -> tuple[int | None, str]:
        """What an erasure does after its statement: withdraw the update plans naming the user and
        rewrite the graph server's log; then, when both are done, clear the tombstone's
        ``cleanup_owed`` (``owed``: the value the erasure set, None when it deleted no user), so that
        a resend of an erasure that never answered does them. The plans withdrawn and the log's status."""
        plans = self._withdrawn_plans(user_id)
        graph_log = _log_rewritten("graph", self.gateway.rewrite_log)
        if owed is not None and plans is not None and graph_log in erasure.LOG_DONE:
            try:
                self.gateway.write(ERASURE_CLEANED_UP, {"erasure_id": erasure_id, "owed": owed})
            except GraphUnavailable as exc:  # the user is erased: a resend does the cleanup again
                log.warning("erasure: the tombstone's cleanup mark was not cleared: %s", exc)
        return plans, graph_log

    def _withdrawn_plans(self, user_id: str) -> int | None:
        """How many incremental-update plans naming the user the erasure withdrew; None when the
        job queue did not answer, or the embedded graph server (its broker) was not running when
        the process's job-queue client was first built. The user is erased by then, so that is no
        503 (a resend would be a 404): an update planned before the erasure writes no vector for
        them anyway (``workers.training.incremental.finish_update`` reads the tombstones), and the
        plan, a list of ids, expires with the result store's day."""
        if not self._has_job_queue():
            return 0
        try:
            return withdraw_plans(job_client(self.settings), user_id)
        except (JobQueueUnavailable, GraphUnavailable) as exc:  # job_client's: no embedded broker
            log.warning("erasure: the update plans naming the user were not withdrawn: %s", exc)
            return None

    def _has_job_queue(self) -> bool:
        """Whether a Celery broker is configured (REDIS_URL, or the embedded server's)."""
        return bool(self.settings.redis_url) or self.settings.embedded

    def upsert_items(self, items: Sequence[catalogue.CatalogueItem]) -> dict[str, Any]:
        """Upsert validated catalogue items atomically; new items are queued for fold-in."""
        revision = catalogue.write_items(self.gateway, items, int(now_ms()))
        self.catalogue_view().stale()
        if any(item.attributes for item in items):
            # attribute targets: this process's next answer has them (else the poller's, within a second)
            after_commit("rules_reload", self.rules_view().stale, None)
        self.request_fold_in(i.item_id for i in items)
        return {"received": len(items), "items": len({i.item_id for i in items}), "revision": revision}

    def delist_item(self, item_id: str) -> dict[str, Any]:
        """Delist an item (history kept); NotFound if the graph has no such item."""
        row = catalogue.delist_item(self.gateway, item_id, int(now_ms()))
        if row is None:
            raise NotFound("item_id", item_id, f"no item with id {item_id!r}")
        self.catalogue_view().stale()
        return {"item_id": item_id, "delisted_at": row["delisted_at"], "revision": row["revision"]}

    def save_rule(self, body: rules.RuleBody) -> dict[str, Any]:
        """Create or replace a business rule; every process applies it within a second."""
        rule = rules.save_rule(self.gateway, body, int(now_ms()))
        after_commit("rules_reload", self.rules_view().stale, None)
        counts = after_commit("rule_target_items", lambda: self._target_items([rule]), None)
        return {**rule.as_dict(now_ms()), "target_items": None if counts is None else counts[rule.id]}

    def list_rules(self) -> dict[str, Any]:
        """Every stored rule, with whether it has started, whether it has ended and how many items
        its target names now."""
        at = now_ms()
        stored = rules.load_rules(self.gateway)
        try:
            counts = self._target_items(stored) or {}
        except Exception as exc:  # a count is extra information: it fails no listing
            log.warning(
                "rules: could not count the items their targets name: %s: %s", type(exc).__name__, exc
            )
            counts = {}
        return {"rules": [{**rule.as_dict(at), "target_items": counts.get(rule.id)} for rule in stored]}

    def _target_items(self, stored: list[rules.Rule]) -> dict[str, int] | None:
        """How many items of the active model each rule's target names under the catalogue now;
        None before the first model."""
        try:
            model = self.active_model()
        except NoActiveModel:
            return None
        return rules.target_items(self.gateway, stored, model, self.catalogue().facts(model))

    def delete_rule(self, rule_id: str) -> dict[str, Any]:
        """Delete a rule; NotFound if there is none."""
        if not rules.delete_rule(self.gateway, rule_id, int(now_ms())):
            raise NotFound("rule_id", rule_id, f"no rule with id {rule_id!r}")
        after_commit("rules_reload", self.rules_view().stale, None)
        return {"rule_id": rule_id, "deleted": True}

    def ingest_events(self, events: Sequence[Event]) -> IngestResult:
        """Apply a validated batch atomically, then ask for the fold-in of items the model cannot score."""
        result = ingest(self.gateway, events, self.settings)
        if any(e.item is not None and e.item.attributes for e in events):
            self.rules_view().attributes_changed()  # events bump no revision: re-resolve at the next poll
        self.request_fold_in(
            e.item_id for e in events if e.item_id is not None and e.event_id not in result.erased_ids
        )
        return result

    def request_fold_in(self, item_ids: Iterable[str]) -> list[str]:
        """Enqueue the fold-in of unknown items; returns them. Never fails the write that asked.

        It follows a committed write, so it is best-effort (:func:`after_commit`): if the active
        model cannot be read or the broker cannot take the task, beat's periodic sweep folds the
        items in later.
        """
        return after_commit("fold_in", lambda: self._enqueue_fold_in(set(item_ids)), [])

    def _enqueue_fold_in(self, item_ids: set[str]) -> list[str]:
        try:
            model = self.active_model()
        except NoActiveModel:
            return []  # no model yet: the first training will include these items
        unknown = sorted(i for i in item_ids if i not in model.item_index)
        if unknown:
            job_client(self.settings).send_task(FOLD_IN_ITEMS, args=[unknown], retry=False)
        return unknown
