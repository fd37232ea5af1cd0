"""Topics at serving and ingestion time: matching text to the active version's topics, and the
topic part of a user's served profile.

- **Matching.** Review, tag and search text is embedded with the bundled sentence-transformer
  (:mod:`kgrec.text_model`) and compared with the centroids of the active model version's
  topics (``HAS_TOPIC.centroid``). The topics with cosine at least :data:`MATCH_MIN_COSINE`,
  at most :data:`MAX_MATCHES`, share the event's weight in proportion to their cosine. When
  none reaches it, the nearest topic takes the event (short texts, such as a few tags, sit
  far from every centroid, and a text with no topic would leave a searching newcomer with
  nothing but popularity). A text in which the model reads no word
  (:func:`kgrec.text_model.has_meaning`: only unknown tokens, punctuation or symbols, such as
  Japanese or emoji for this English model) embeds as the zero vector: no topic, nothing added
  to the text vector; its event is recorded as any other.
- **Interests.** Each (user, topic) pair gets the sum of its shares, decayed to the latest
  event's time by :func:`kgrec.interests.interest_rows` (the same aggregation as brand and
  category interests), and the ingestion statement merges it into ``INTERESTED_IN``.
- **Text vector.** The same embeddings, summed per user with the event's weight and the
  interest decay, are kept on the user (``User.text_vector``, :func:`text_vector_rows`):
  what the user's language says, for a user without history
  (:mod:`kgrec.search_cold_start`).
- **Profile.** At request time a user's strongest topic interests bring each topic's most
  central items into the served profile (:func:`topic_history`), the way history is folded
  in, so a search changes the very next recommendations.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from graph_schema.behaviours import LANGUAGE_EVENT_WEIGHTS
from graph_schema.statements.models import ACTIVE_VERSION
from graph_schema.statements.topics import ACTIVE_TOPICS, TOPIC_DETAIL, USER_TOPIC_ITEMS
from kgrec.decay import decay_factor, shown_weight
from kgrec.errors import NotFound
from kgrec.interests import PairEvidence, interest_rows
from kgrec.recommender import HistoryEntry
from kgrec.single_flight import RecentlyUsed
from kgrec.text_model import DIMENSION, encode, has_meaning
from kgrec.ties import tie_keys

MATCH_MIN_COSINE = 0.25  # chosen on MovieLens validation users (bench/topics_cold_start.py)
MAX_MATCHES = 3
PROFILE_TOPICS = 5  # a user's strongest topics in the served profile
PROFILE_ITEMS = 10  # the most central items of each
TEXT_CACHE = 20_000  # recent texts' embeddings kept per process (tags and queries repeat)


@dataclass(frozen=True)
class TopicIndex:
    """The topics of one model version: ids, names and unit-length centroids (rows)."""

    version: str | None
    ids: tuple[str, ...]
    names: tuple[str, ...]
    centroids: np.ndarray

    @classmethod
    def empty(cls, version: str | None = None) -> TopicIndex:
        """No topics (no model yet, or a model trained without text)."""
        return cls(version, (), (), np.zeros((0, DIMENSION), dtype=np.float32))

    def match(
        self, vectors: np.ndarray, min_cosine: float = MATCH_MIN_COSINE
    ) -> list[list[tuple[str, float]]]:
        """For each text vector, its topics and their shares of the event (shares sum to 1).

        The topics at ``min_cosine`` or above (at most :data:`MAX_MATCHES`), else the nearest one;
        [] only for a zero vector (a text without meaning for the model) or an index without topics.
        """
        if not self.ids or len(vectors) == 0:
            return [[] for _ in range(len(vectors))]
        cosines = np.asarray(vectors, dtype=np.float32) @ self.centroids.T
        matches = []
        for row in cosines:
            order = np.argsort(-row, kind="stable")
            best = [int(j) for j in order[:MAX_MATCHES] if row[j] >= min_cosine] or [
                int(j) for j in order[:1] if row[j] > 0
            ]
            total = float(sum(row[j] for j in best))
            matches.append([(self.ids[j], float(row[j]) / total) for j in best])
        return matches


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class ActiveTopics:
    """The active version's topics, read again only when the active version changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._index = TopicIndex.empty()

    def get(self, gateway: Any) -> TopicIndex:
        """The topics of the version active now (one small read; the centroids when it changed)."""
        active = gateway.read(ACTIVE_VERSION)
        version = active[0]["id"] if active else None
        with self._lock:
            if version is not None and self._index.version == version:
                return self._index
        if version is None:
            return TopicIndex.empty()
        rows = [r for r in gateway.read(ACTIVE_TOPICS) if r["version"] == version and r["centroid"]]
        if not rows:
            return TopicIndex.empty(version)  # not cached: the topics may be written just after activation
        index = TopicIndex(
            version,
            tuple(r["id"] for r in rows),
            tuple(r["name"] or r["id"] for r in rows),
            _unit_rows(np.asarray([r["centroid"] for r in rows], dtype=np.float32)),
        )
        with self._lock:
            self._index = index
        return index


ACTIVE = ActiveTopics()


def _text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class TextVectors:
    """Embeds texts in one batch, each distinct text once, reusing the vectors of the latest
    :data:`TEXT_CACHE` texts. The cache is keyed by a digest of each text, so that a process holds
    none of its users' words (a digest and its vector, which an erasure does not reach, stay until
    evicted: someone guessing a text could still confirm it was embedded)."""

    def __init__(self, size: int = TEXT_CACHE) -> None:
        self._cache: RecentlyUsed[bytes, np.ndarray] = RecentlyUsed(size)

    def embed(self, texts: Sequence[str], device: str = "cpu", offline: bool = True) -> np.ndarray:
        """(len(texts), 384): unit rows, and zero rows for texts without meaning for the model
        (:func:`kgrec.text_model.has_meaning`), which so match no topic and add nothing to a
        user's text vector."""
        keys = [_text_key(t) for t in texts]
        found = {key: vector for key in set(keys) if (vector := self._cache.get(key)) is not None}
        missing = sorted({text for text, key in zip(texts, keys, strict=True) if key not in found})
        if missing:
            vectors = encode(missing, device, offline)
            vectors[~np.asarray(has_meaning(missing, device, offline))] = 0.0
            for text, vector in zip(missing, vectors, strict=True):
                found[_text_key(text)] = vector
                self._cache.put(_text_key(text), vector)
        return np.stack([found[key] for key in keys]) if texts else np.zeros((0, DIMENSION), dtype=np.float32)

    def held(self) -> list[bytes]:
        """The keys the cache holds, least recently used first."""
        return [key for key, _ in self._cache.items()]


TEXTS = TextVectors()


def language_weight(event_type: str, behaviour_weights: Mapping[str, float]) -> float:
    """What one language event adds to topic interests: a review its behaviour weight."""
    return LANGUAGE_EVENT_WEIGHTS.get(event_type, behaviour_weights.get(event_type, 0.0))


@dataclass(frozen=True)
class LanguageRows:
    """What a batch's text adds to the graph: ``$topic_interests`` and ``$text_vectors`` rows."""

    topic_interests: list[dict[str, Any]]
    text_vectors: list[dict[str, Any]]


def language_rows(
    events: Sequence[Any],
    index: TopicIndex,
    behaviour_weights: Mapping[str, float],
    half_life_ms: float,
    *,
    device: str = "cpu",
    offline: bool = True,
) -> LanguageRows:
    """The language rows of the ingestion statement for ``events`` (validated Events).

    Every event with text (:attr:`Event.language`) is embedded, in one batch, and matched
    to ``index``; nothing is embedded when the index has no topics.
    """
    speaking = [e for e in events if e.language is not None]
    if not speaking or not index.ids:
        return LanguageRows([], [])
    vectors = TEXTS.embed([e.language for e in speaking], device, offline)
    return LanguageRows(
        _topic_rows(speaking, index.match(vectors), behaviour_weights, half_life_ms),
        text_vector_rows(speaking, vectors, behaviour_weights, half_life_ms),
    )


def text_vector_rows(
    events: Sequence[Any], vectors: np.ndarray, behaviour_weights: Mapping[str, float], half_life_ms: float
) -> list[dict[str, Any]]:
    """One ``$text_vectors`` row per user: Σ weight · 2^(-(ref − ts) / half-life) · vector over the
    user's events with text (``vectors``: their unit embeddings), stamped ``ref_ts`` = the latest."""
    by_user: dict[str, list[int]] = {}
    for k, event in enumerate(events):
        by_user.setdefault(event.user_id, []).append(k)
    rows = []
    for user_id, ks in by_user.items():
        ref = max(events[k].ts for k in ks)
        total = np.zeros(vectors.shape[1], dtype=np.float64)
        for k in ks:
            weight = language_weight(events[k].type, behaviour_weights)
            total += weight * decay_factor(ref - events[k].ts, half_life_ms) * vectors[k]
        if np.any(total):
            rows.append({"user_id": user_id, "ref_ts": ref, "vector": [round(float(x), 6) for x in total]})
    return rows


def _topic_rows(
    speaking: Sequence[Any],
    matches: list[list[tuple[str, float]]],
    behaviour_weights: Mapping[str, float],
    half_life_ms: float,
) -> list[dict[str, Any]]:
    evidence: list[PairEvidence] = []
    targets: dict[str, list[str]] = {}
    for event, found in zip(speaking, matches, strict=True):
        weight = language_weight(event.type, behaviour_weights)
        for topic_id, share in found:
            key = f"{event.event_id}\x1f{topic_id}"  # one evidence per (event, topic)
            targets[key] = [topic_id]
            evidence.append(PairEvidence(event.user_id, key, weight * share, event.ts, 1, event.ts, event.ts))
    return [
        {
            "user_id": row["user_id"],
            "topic_id": row["target_id"],
            "weight": row["weight"],
            "ref_ts": row["weight_ts"],
            "events": row["count"],
            "first_ts": row["first_ts"],
        }
        for row in interest_rows(evidence, targets, half_life_ms)
    ]


@dataclass(frozen=True)
class TopicInterest:
    """One of a user's topics, decayed to the read time, with its most central items."""

    topic_id: str
    name: str
    weight: float
    last_ts: int | None
    events: int
    items: tuple[dict[str, Any], ...]  # {id, title, score}, most central first

    def as_interest(self) -> dict[str, Any]:
        """The JSON form ``GET /v1/users/{id}/interests`` lists next to brands and categories."""
        return {
            "id": self.topic_id,
            "name": self.name,
            "weight": shown_weight(self.weight),
            "events": self.events,
            "last_ts": self.last_ts,
            "items": [{"item_id": i["id"], "title": i["title"], "weight": i["score"]} for i in self.items],
        }


def user_topics_read(
    user_id: str,
    now_ms: int,
    half_life_ms: float,
    *,
    topics: int = PROFILE_TOPICS,
    items: int = PROFILE_ITEMS,
) -> tuple[Any, dict[str, Any]]:
    """The statement and parameters of :func:`user_topics`' read (for a request's batched reads)."""
    limits = {"topics": topics, "items": items}
    return USER_TOPIC_ITEMS, {"user_id": user_id, "now": now_ms, "half_life_ms": half_life_ms, **limits}


def topic_interests(rows: Sequence[Mapping[str, Any]]) -> list[TopicInterest]:
    """The rows of :func:`user_topics_read` as topic interests, strongest first."""
    return [
        TopicInterest(
            r["topic_id"],
            r["name"] or r["topic_id"],
            float(r["weight"] or 0.0),
            r["last_ts"],
            int(r["events"] or 0),
            tuple(r["items"]),
        )
        for r in rows
    ]


def user_topics(
    gateway: Any,
    user_id: str,
    now_ms: int,
    half_life_ms: float,
    *,
    topics: int = PROFILE_TOPICS,
    items: int = PROFILE_ITEMS,
) -> list[TopicInterest]:
    """The user's strongest topic interests, each with its ``items`` most central items (one read)."""
    read = user_topics_read(user_id, now_ms, half_life_ms, topics=topics, items=items)
    return topic_interests(gateway.read(*read))


def topic_history(
    user_id: str, interests: Sequence[TopicInterest], history: Sequence[HistoryEntry]
) -> list[HistoryEntry]:
    """Profile entries for the topics: each topic's weight shared by its items, at the topic's time.

    Items already in ``history`` are left out (the history says more about them). A topic's
    items share its time; the user's tie keys order them, as they order any same-time items.
    """
    seen = {h.item_id for h in history}
    entries = []
    for topic in interests:
        items = [i["id"] for i in topic.items if i["id"] not in seen]
        ties = tie_keys(user_id, items)
        for item_id, tie in zip(items, ties, strict=True):
            entries.append(HistoryEntry(item_id, topic.weight / len(items), int(topic.last_ts or 0), tie))
            seen.add(item_id)
    return entries


def cold_start_reason(interests: Sequence[TopicInterest], by_search: bool = False) -> str:
    """Why a user without history gets what they get: the topics of their searches, reviews and tags
    (``by_search``: ordered by how close each item is to what they wrote, kgrec.search_cold_start)."""
    names = ", ".join(f"'{t.name}'" for t in interests[:3])
    reason = f"no history yet: recommended from the topics of the user's searches, reviews and tags ({names})"
    return f"{reason}, closest to what they searched first" if by_search else reason


def search_topics(gateway: Any, text: str, limit: int, *, offline: bool = True) -> dict[str, Any]:
    """The active version's topics by cosine of their centroid to ``text`` (best first)."""
    index = ACTIVE.get(gateway)
    if not text.strip() or not index.ids:
        return {"q": text, "model_version": index.version, "topics": []}
    vector = TEXTS.embed([text.strip()], offline=offline)[0]
    if not np.any(vector):  # no word the model reads: no topic is nearer than another
        return {"q": text, "model_version": index.version, "topics": []}
    cosines = index.centroids @ vector
    best = np.argsort(-cosines, kind="stable")[:limit]
    return {
        "q": text,
        "model_version": index.version,
        "topics": [
            {"id": index.ids[j], "name": index.names[j], "score": round(float(cosines[j]), 6)} for j in best
        ],
    }


def topic_detail(gateway: Any, topic_id: str, items: int) -> dict[str, Any]:
    """A topic's name, keywords, most central items and interested users; NotFound if there is none."""
    rows = gateway.read(TOPIC_DETAIL, {"topic_id": topic_id, "items": items})
    if not rows:
        raise NotFound("topic_id", topic_id, f"no topic with id {topic_id!r}")
    row = rows[0]
    return {
        "id": row["id"],
        "name": row["name"] or row["id"],
        "keywords": list(row["keywords"] or []),
        "items": [
            {"item_id": i["id"], "title": i["title"], "score": round(float(i["score"] or 0.0), 6)}
            for i in row["items"]
            if i is not None
        ],
        "interested_users": int(row["users"]),
    }
