"""The served model: scores every item for a user from the user's recent history.

A user is folded in at request time: their profile is their interacted items,
weighted by decayed interaction weight (relative to their strongest item) and
by recency rank (``recency_decay ** rank``, rank 0 = most recent). An item's score is

    profile · S  +  last · S_last  +  w_emb · (profile · E_ctx) · Eᵀ  +  ε · popularity

where ``S`` blends the item–item graphs of :mod:`kgrec.signals` (co-occurrence,
sequential transitions, also_bought / also_viewed / bought_together, same brand),
each with its weight (a signal without one is an error; the weights are fitted
on validation, :mod:`workers.training.blend_fit`), ``S_last`` blends the signals
scored from the user's most recent item alone (``last`` is the profile's rank-0
entry; :attr:`kgrec.signals.Signal.last_item`), ``E`` holds the graph model's
item (target) embeddings and ``E_ctx`` its context embeddings (``E`` itself
when the model has none). Similar items and explanations use the cosine of
``E``'s rows. Everything that depends only on the model version (``S``, ``E``)
is built once per version.
The API and ``kgrec evaluate`` both call :meth:`Recommender.recommend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from kgrec.bounded_top import bounded_top
from kgrec.item_facts import ItemFacts
from kgrec.nearest_items import NearestItems
from kgrec.ranking import Ranking, top_of
from kgrec.signals import EMBEDDING, check_weights, co_purchase_names, last_item_names

__all__ = ["EMBEDDING", "HistoryEntry", "ModelArtifacts", "Recommender"]

POPULARITY_EPSILON = 1e-6


@dataclass
class ModelArtifacts:
    """Everything one model version needs to score."""

    version: str
    item_ids: list[str]
    item_embeddings: np.ndarray  # (n_items, dim) the graph model's item (target) embeddings
    components: dict[str, sp.csr_matrix]  # signal name (kgrec.signals) -> (n_items, n_items) matrix
    weights: dict[str, float]  # signal name (or "embedding") -> blend weight, one for every component
    recency_decay: float
    popularity: np.ndarray  # (n_items,) interaction counts, bots excluded
    parameters: dict[str, object] = field(default_factory=dict)
    facts: ItemFacts | None = None  # brand, categories and price per item, for the serving filters
    # (n_items, dim) embeddings of items as context (in a profile); None: item_embeddings
    item_context_embeddings: np.ndarray | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """One item in a user's history: its weight now and an order key (larger = more recent).

    ``tie`` orders entries with the same ``order`` (larger = more recent): the user's
    :func:`kgrec.ties.tie_keys`, the rule training's :func:`kgrec.item_graphs.history_order` uses.
    """

    item_id: str
    weight: float
    order: int
    tie: int = 0


class Recommender:
    """Ranks all items for users, for one model version."""

    def __init__(self, artifacts: ModelArtifacts) -> None:
        """Blend ``artifacts``' signals (:class:`kgrec.signals.SignalError` for one without a weight)."""
        check_weights(artifacts.components, artifacts.weights)
        self.artifacts = artifacts
        self.item_index = {item_id: k for k, item_id in enumerate(artifacts.item_ids)}
        n = len(artifacts.item_ids)
        self.trained_items = n  # the version's own items: rows no copy moves (fold-ins come after)
        last_only = last_item_names()
        blend = sp.csr_matrix((n, n), dtype=np.float32)
        last_blend = sp.csr_matrix((n, n), dtype=np.float32)
        for name, matrix in artifacts.components.items():
            weight = artifacts.weights[name]
            if weight and name in last_only:
                last_blend = last_blend + weight * matrix
            elif weight:
                blend = blend + weight * matrix
        self.blend = blend.tocsr().astype(np.float32)
        # None when no last-item signal has a weight: scoring then needs no last-item profile
        self.last_blend: sp.csr_matrix | None = (
            last_blend.tocsr().astype(np.float32) if last_blend.nnz else None
        )
        self.embedding_weight = float(artifacts.weights.get(EMBEDDING, 0.0))
        self._set_embeddings(artifacts)
        self.prior = self._prior(artifacts.popularity)
        self.facts = artifacts.facts if artifacts.facts is not None else ItemFacts.empty(self.n_items)

    @property
    def n_items(self) -> int:
        """Number of items the model knows."""
        return len(self.artifacts.item_ids)

    def profiles(self, histories: Sequence[Sequence[HistoryEntry]], last_only: bool = False) -> sp.csr_matrix:
        """One sparse profile row per user: relative weight × recency_decay ** rank.

        ``last_only``: the rank-0 entry alone (the most recent item, what last-item signals read).
        """
        rows: list[int] = []
        cols: list[int] = []
        values: list[float] = []
        decay = self.artifacts.recency_decay
        for row, history in enumerate(histories):
            known = [h for h in history if h.item_id in self.item_index]
            known.sort(key=lambda h: (h.order, h.tie), reverse=True)
            # Weights are relative to the user's strongest item: years-old data decayed
            # to now (2^-200 and smaller) would otherwise vanish in float32.
            strongest = max((h.weight for h in known), default=0.0)
            for rank, entry in enumerate(known[:1] if last_only else known):
                relative = max(entry.weight, 0.0) / strongest if strongest > 0 else 1.0
                rows.append(row)
                cols.append(self.item_index[entry.item_id])
                values.append(relative * decay**rank)
        return sp.csr_matrix(
            (np.asarray(values, dtype=np.float32), (rows, cols)), shape=(len(histories), self.n_items)
        )

    def score(self, profiles: sp.csr_matrix, last: sp.csr_matrix | None = None) -> np.ndarray:
        """Dense (users × items) scores; ``last`` (``profiles(..., last_only=True)``) is needed when
        a last-item signal has a weight (:attr:`last_blend`)."""
        return self._dense_scores(profiles, self.graph_scores(profiles, last))

    def graph_scores(self, profiles: sp.csr_matrix, last: sp.csr_matrix | None = None) -> sp.csr_matrix:
        """The item–item graphs' part of :meth:`score`, sparse: items the profiles reach."""
        scores = profiles @ self.blend
        if self.last_blend is not None:
            if last is None:
                raise ValueError("this model weighs a last-item signal: score() needs the last-item profiles")
            scores = scores + last @ self.last_blend
        return scores.tocsr()

    def _dense_scores(self, profiles: sp.csr_matrix, graph: sp.csr_matrix) -> np.ndarray:
        scores = np.asarray(graph.todense(), dtype=np.float32)
        if self.embedding_weight:
            scores += self.embedding_weight * ((profiles @ self.context) @ self.target.T)
        scores += self.prior
        return scores

    def recommend(
        self,
        histories: Sequence[Sequence[HistoryEntry]],
        k: int,
        exclude: Sequence[Sequence[str]] | None = None,
        allowed: np.ndarray | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Top-``k`` (item id, score) per user over all items, minus ``exclude`` and outside ``allowed``."""
        return [r.pairs(self.artifacts.item_ids) for r in self.rank(histories, k, exclude, allowed)]

    def rank(
        self,
        histories: Sequence[Sequence[HistoryEntry]],
        k: int,
        exclude: Sequence[Sequence[str]] | None = None,
        allowed: np.ndarray | None = None,
    ) -> list[Ranking]:
        """:meth:`recommend` as item rows and scores (what serving reorders before paging).

        One user (a served request) is ranked by :func:`kgrec.bounded_top.bounded_top` when its
        bound holds, which returns the same items without reading every embedding.
        """
        profiles = self.profiles(histories)
        last = self.profiles(histories, last_only=True) if self.last_blend is not None else None
        graph = self.graph_scores(profiles, last)
        if len(histories) == 1:
            excluded = None
            if exclude is not None:
                index = self.item_index
                excluded = np.fromiter((index[i] for i in exclude[0] if i in index), np.int64)
            query = np.asarray(profiles @ self.context, dtype=np.float32).ravel()
            bounded = bounded_top(
                graph,
                query,
                self.embedding_weight,
                self.target,
                self.norms,
                self.prior,
                self.maxima,
                k,
                allowed,
                excluded,
            )
            if bounded is not None:
                return [bounded]
        scores = self._dense_scores(profiles, graph)
        if allowed is not None:
            scores[:, ~allowed] = -np.inf
        if exclude is not None:
            for row, items in enumerate(exclude):
                index = [self.item_index[i] for i in items if i in self.item_index]
                scores[row, index] = -np.inf
        return [top_of(row, k) for row in scores]

    @cached_property
    def maxima(self) -> tuple[float, float]:
        """The largest embedding norm and prior, for :func:`kgrec.bounded_top.bounded_top`."""
        return float(self.norms.max(initial=0.0)), float(self.prior.max(initial=0.0))

    @cached_property
    def co_purchase_links(self) -> sp.csr_matrix:
        """Items → items linked by any co-purchase relation at training time (binary, directed).

        Built once per loaded model from its co-purchase signals (:func:`kgrec.signals.co_purchase_names`);
        items folded in after training have no links.
        """
        links = sp.csr_matrix((self.n_items, self.n_items), dtype=np.float32)
        for name in co_purchase_names():
            matrix = self.artifacts.components.get(name)
            if matrix is not None:
                matrix = sp.csr_matrix(matrix, dtype=np.float32)
                matrix.resize((self.n_items, self.n_items))
                links = links + matrix
        links = links.tocsr()
        links.data[:] = 1.0
        return links

    def similar(self, item_id: str, k: int, allowed: np.ndarray | None = None) -> list[tuple[str, float]]:
        """The ``k`` items closest (cosine of embeddings) to ``item_id``, itself excluded."""
        return self.rank_similar(item_id, k, allowed).pairs(self.artifacts.item_ids)

    def rank_similar(self, item_id: str, k: int, allowed: np.ndarray | None = None) -> Ranking:
        """:meth:`similar` as item rows and scores."""
        return self.nearest.rank(self.item_index[item_id], k, allowed)

    def with_items(self, item_ids: Sequence[str], vectors: np.ndarray, facts: ItemFacts) -> Recommender:
        """A copy that also scores ``item_ids`` (folded in after training) through their embeddings.

        The new items have no rows in the item–item graphs yet, so they are
        reached through the embedding term (and popularity zero).
        """
        known, n = self.n_items, self.n_items + len(item_ids)
        blend = self.blend.copy()
        blend.resize((n, n))
        last_blend = None
        if self.last_blend is not None:
            last_blend = self.last_blend.copy()
            last_blend.resize((n, n))
        vectors = np.asarray(vectors, dtype=np.float32)
        clone = self._clone(
            item_ids=[*self.artifacts.item_ids, *item_ids],
            item_embeddings=np.vstack([self.target, vectors]),
            item_context_embeddings=np.vstack([self.context, vectors]),
            popularity=np.concatenate([self.artifacts.popularity, np.zeros(len(item_ids), np.float32)]),
            facts=facts,
        )
        clone.item_index = {**self.item_index, **{i: known + k for k, i in enumerate(item_ids)}}
        clone.blend = blend.tocsr()
        clone.last_blend = None if last_blend is None else last_blend.tocsr()
        links = self.__dict__.get("co_purchase_links")
        if links is not None:  # the new items have none: the same rows, empty ones appended
            indptr = np.concatenate(
                [links.indptr, np.full(len(item_ids), links.indptr[-1], links.indptr.dtype)]
            )
            clone.__dict__["co_purchase_links"] = sp.csr_matrix(
                (links.data, links.indices, indptr), shape=(n, n)
            )
        return clone

    def with_popularity(self, popularity: np.ndarray) -> Recommender:
        """A copy with other popularity counts (after users were erased)."""
        return self._clone(popularity=np.asarray(popularity, dtype=np.float32))

    def _clone(self, **changes: object) -> Recommender:
        # Reuses the summed blend matrix: rebuilding it is the expensive part of __init__.
        clone = object.__new__(Recommender)
        clone.artifacts = replace(self.artifacts, **changes)  # type: ignore[arg-type]
        clone.item_index = self.item_index
        clone.trained_items = self.trained_items
        clone.blend = self.blend
        clone.last_blend = self.last_blend
        clone.embedding_weight = self.embedding_weight
        clone._set_embeddings(clone.artifacts)
        clone.prior = self._prior(clone.artifacts.popularity)
        clone.facts = clone.artifacts.facts if clone.artifacts.facts is not None else self.facts
        if "co_purchase_links" in self.__dict__:  # training-time links: no copy changes them
            clone.__dict__["co_purchase_links"] = self.__dict__["co_purchase_links"]
        return clone

    def _set_embeddings(self, artifacts: ModelArtifacts) -> None:
        self.target = np.asarray(artifacts.item_embeddings, dtype=np.float32)
        context = artifacts.item_context_embeddings
        self.context = self.target if context is None else np.asarray(context, dtype=np.float32)
        self.norms = np.linalg.norm(self.target, axis=1)
        self.embeddings = self.target / np.maximum(self.norms[:, None], 1e-12)  # unit rows: cosine
        self.nearest = NearestItems(self.embeddings)

    @staticmethod
    def _prior(popularity: np.ndarray) -> np.ndarray:
        popularity = np.maximum(popularity.astype(np.float32), 0.0)
        return POPULARITY_EPSILON * popularity / max(float(popularity.max(initial=0.0)), 1.0)
