"""A searching newcomer: recommendations from their searches' topics, ordered by the searches.

A user without history whose searches (or reviews, or tags) matched topics is
still a cold start. Their page is ranked as follows (README, "Topics", "A searching
newcomer"):

1. **Candidates.** The items ``ABOUT`` any of the user's strongest topic interests
   (:data:`kgrec.topics.PROFILE_TOPICS`; an item is ABOUT up to three topics, the
   version's :class:`~kgrec.topic_items.TopicItems`).
2. **Order.** Each candidate by the cosine of the user's text vector (the decayed
   sum of their texts' embeddings, ``User.text_vector``) to the item's topic-text
   embedding, plus :data:`POPULARITY_WEIGHT` × the item's popularity
   (``log(1 + count) / log(1 + max count)``, the version's counts); score
   ``1 + cosine + that``, so every candidate scores above 0.
3. **The rest.** After the candidates, the usual ranking of the served profile
   (the topics' central items and the popularity prior), with scores below the
   last candidate's.

Without the version's topic items (a model trained before them, or without text) or
without a text vector, serving keeps the profile ranking. The weight was chosen on a
validation split of MovieLens (``bench/topics_cold_start.py``), never on its test users.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from graph_schema.statements.topics import USER_TEXT_VECTOR
from kgrec.ranking import Ranking, top_of
from kgrec.recommender import Recommender
from kgrec.topic_items import TopicItems

POPULARITY_WEIGHT = 0.2  # chosen on MovieLens validation users (bench/topics_cold_start.py)

Rank = Callable[[int, "np.ndarray | None"], Ranking]


def text_vector_read(user_id: str) -> tuple[Any, dict[str, Any]]:
    """The statement and parameters that read the user's text vector."""
    return USER_TEXT_VECTOR, {"user_id": user_id}


def text_vector(rows: Sequence[dict[str, Any]]) -> np.ndarray | None:
    """The unit text vector from :func:`text_vector_read`'s rows (None: the user has none)."""
    if not rows or not rows[0]["vector"]:
        return None
    vector = np.asarray(rows[0]["vector"], dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else None


@dataclass(frozen=True)
class SearchRanking:
    """One newcomer's candidates (model rows) and their scores."""

    rows: np.ndarray  # int64 model rows
    scores: np.ndarray  # float64, 1 + cosine + popularity term

    def shown(self, model: Recommender, items: Sequence[Mapping[str, Any]]) -> bool:
        """Whether any of a page's ``items`` is one of the candidates."""
        rows = [model.item_index[i["item_id"]] for i in items if i["item_id"] in model.item_index]
        return bool(np.isin(np.asarray(rows, dtype=np.int64), self.rows).any())

    def rank(self, fallback: Rank, excluded: Sequence[int] = ()) -> Rank:
        """A ranking function: the candidates best first, then ``fallback``'s other items below them."""

        def ranked(n: int, allowed: np.ndarray | None) -> Ranking:
            keep = np.ones(self.rows.size, dtype=bool)
            if allowed is not None:
                keep &= allowed[self.rows]
            if len(excluded):
                keep &= ~np.isin(self.rows, np.asarray(excluded, dtype=np.int64))
            scores = np.full(self.rows.size, -np.inf)
            scores[keep] = self.scores[keep]
            top = top_of(scores, n)
            first = Ranking(self.rows[top.rows], top.scores)
            if len(first) >= n:
                return first
            rest = fallback(n + len(first), allowed)
            others = ~np.isin(rest.rows, first.rows)
            rows = rest.rows[others][: n - len(first)]
            low = float(first.scores[-1]) if len(first) else 1.0
            # below the last candidate, in the fallback's order
            below = low * 0.5 * (1.0 - np.arange(rows.size) / (rows.size + 1.0))
            return Ranking(np.concatenate([first.rows, rows]), np.concatenate([first.scores, below]))

        return ranked


# model -> (the topic items last used with it, each of their rows' model row, -1 for none); both
# held weakly, so that the cache keeps neither a model nor the topic items of a version let go
_ROWS: weakref.WeakKeyDictionary[Recommender, tuple[weakref.ref[TopicItems], np.ndarray]] = (
    weakref.WeakKeyDictionary()
)


def model_rows_of(model: Recommender, items: TopicItems) -> np.ndarray:
    """Each row of ``items``' model row (-1 where the model does not know the item): built once per
    model and topic items, not per request (a topic of 100,000 items took 20-30 ms a search)."""
    held = _ROWS.get(model)
    if held is not None and held[0]() is items:
        return held[1]
    index = model.item_index
    rows = np.fromiter((index.get(i, -1) for i in items.item_ids), dtype=np.int64, count=len(items.item_ids))
    _ROWS[model] = (weakref.ref(items), rows)
    return rows


def search_ranking(
    model: Recommender,
    items: TopicItems,
    vector: np.ndarray,
    topic_ids: Sequence[str],
    popularity_weight: float = POPULARITY_WEIGHT,
) -> SearchRanking | None:
    """The candidates of ``topic_ids`` that ``model`` knows, scored by ``vector`` (None: no candidate)."""
    members = items.members(topic_ids)
    model_rows = model_rows_of(model, items)[members]
    known = model_rows >= 0
    members, model_rows = members[known], model_rows[known]
    if not members.size:
        return None
    cosine = items.vectors[members] @ np.asarray(vector, dtype=np.float32)
    scores = 1.0 + cosine.astype(np.float64)
    if popularity_weight:
        popularity = np.maximum(np.asarray(model.artifacts.popularity, dtype=np.float64), 0.0)
        top = np.log1p(popularity.max(initial=0.0))
        if top > 0:
            scores += popularity_weight * np.log1p(popularity[model_rows]) / top
    return SearchRanking(model_rows, scores)
