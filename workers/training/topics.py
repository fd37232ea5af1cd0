"""Topics mined from item text: a small, seeded scikit-learn equivalent of BERTopic.

1. **Text.** An item's topic text is its training text (title | brand | category path) plus
   its tags (MovieLens ``has_tag`` entities, user tags from events), the start of its
   description (:func:`description_snippet`) and review snippets. The description is read for
   topics only: the training text, and so the graph model's text features, leave it out.
   It is embedded with the bundled all-MiniLM-L6-v2 (the on-disk text cache is shared
   with training, so unchanged texts are not encoded again).
2. **Clusters.** k-means (scikit-learn ``MiniBatchKMeans``, seeded) over the unit-length
   embeddings, so clusters group by cosine; ``k = clamp(round(sqrt(n / 2)), 2, 100)`` for
   ``n`` items with text. Centroids are renormalised. An item is ``ABOUT`` its nearest
   topic when the cosine is at least :data:`ABOUT_MIN_COSINE`; topics with fewer than
   :data:`MIN_TOPIC_SIZE` such items are dropped. An item is also ``ABOUT`` its next nearest
   kept topics, up to :data:`ABOUT_TOPICS` in all, when their cosine is at least
   :data:`ABOUT_MIN_COSINE` too (each edge with its cosine as score): a film about a heist in
   space belongs to both, and a search for either finds it. The clustering and the
   topic-interest signal use the nearest topic only.
3. **Labels.** Class-based TF-IDF as BERTopic computes it: the items of a topic form one
   document, ``tf`` is a term's share of that document, ``idf = log(1 + A / f)`` with ``A``
   the mean number of words per topic and ``f`` the term's frequency over all topics.
   The top :data:`KEYWORDS` terms are the keywords, the top three the name.
4. **Stable ids.** :func:`assign_ids` matches the new centroids with the active version's
   by the Hungarian method on cosine; a pair with cosine at least :data:`STABLE_MIN_COSINE`
   keeps the old id, every other topic gets the next unused ``topic-<n>``. The match is one to
   one, so when topics merge, an old topic that kept no id but whose nearest new topic is that
   close is *absorbed* by it (:func:`absorbed_ids`, recorded on the new topic's ``HAS_TOPIC``
   edge as ``absorbs``): users' interests in it are served as interests in the absorbing topic
   while the version is active (``USER_TOPIC_ITEMS``).
5. **Quality.** Mean NPMI of each topic's top 10 keywords over the item texts (document
   co-occurrence) and the share of items with a topic, recorded with the version.
6. **Serving file.** :func:`write_topics` also writes ``<version>.topics.npz`` next to the
   artifact (:mod:`kgrec.topic_items`): every item's topic-text embedding and memberships, so
   serving can order a searching newcomer's topic items by the search itself.
"""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import MiniBatchKMeans
from sklearn.feature_extraction.text import CountVectorizer

from graph_schema.statements.topics import (
    ACTIVE_TOPICS,
    ALL_TOPIC_IDS,
    ITEM_REVIEWS,
    ITEM_TAGS,
    WRITE_ABOUT,
    WRITE_ITEM_TOPIC_VECTORS,
    WRITE_TOPICS,
)
from kgrec.gateway import GraphGateway
from kgrec.topic_items import (
    ABOUT_MIN_COSINE,
    ABOUT_TOPICS,
    AboutWrite,
    TopicItems,
    about_rows,
    memberships,
    write_about,
)
from kgrec.topics import ACTIVE
from kgrec.training_graph import TrainingGraph

MIN_TOPIC_SIZE = 3
MAX_TOPICS = 100
KEYWORDS = 8
NAME_WORDS = 3
STABLE_MIN_COSINE = 0.8
MIN_WORD_ITEMS = 5  # a keyword is in this many items' texts (2 below 1,000 items: n / 200)
TOPIC_BATCH = 100  # topics per write (each carries a 384-float centroid)
TAGS_PER_ITEM = 10
REVIEWS_PER_ITEM = 3
REVIEW_CHARS = 300
# The description's first characters, cut at a word: with the rest, the topic text stays within the
# 256 word pieces the text model reads, so a long description does not push out tags and reviews.
DESCRIPTION_CHARS = 500
TOKEN = r"(?u)\b[^\W\d_][^\W\d_]+\b"  # words of two letters or more, no digits
TAG_KIND = "tag"
ID_PATTERN = re.compile(r"^topic-(\d+)$")


@dataclass
class TopicModel:
    """The topics of one training run (local indices; ids come from :func:`assign_ids`)."""

    names: list[str]
    keywords: list[list[str]]
    centroids: np.ndarray  # (topics, 384), unit rows
    sizes: list[int]
    item_topic: np.ndarray  # (items,) topic index, -1: none
    item_score: np.ndarray  # (items,) cosine to that topic's centroid
    quality: dict[str, float] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    # (items, ABOUT_TOPICS) every topic an item is ABOUT (nearest first, -1: none) and its cosine
    item_topics: np.ndarray = field(default_factory=lambda: np.zeros((0, ABOUT_TOPICS), dtype=np.int64))
    item_scores: np.ndarray = field(default_factory=lambda: np.zeros((0, ABOUT_TOPICS), dtype=np.float32))
    vectors: np.ndarray | None = None  # (items, 384) the unit topic-text embeddings (zero: no text)

    @property
    def n_topics(self) -> int:
        """Number of topics."""
        return len(self.names)


def topic_count(n_items: int) -> int:
    """How many clusters k-means looks for among ``n_items`` items with text."""
    return int(min(MAX_TOPICS, max(2, round(math.sqrt(n_items / 2)))))


def kg_tags(graph: TrainingGraph) -> dict[int, list[str]]:
    """Each item's tag entities (kind ``tag``) from the knowledge graph, by item index."""
    tags: dict[int, list[str]] = defaultdict(list)
    n_items = graph.n_items
    for head, _relation, tail in graph.kg_triples.tolist():
        entity = tail - n_items
        if head < n_items and 0 <= entity < graph.n_entities and graph.entity_kinds[entity] == TAG_KIND:
            name = graph.entity_ids[entity].split(":", 1)[-1]
            if len(tags[head]) < TAGS_PER_ITEM:
                tags[head].append(name)
    return tags


def description_snippet(description: str | None) -> str:
    """The first :data:`DESCRIPTION_CHARS` characters of ``description``, cut at a word boundary."""
    text = " ".join((description or "").split())
    if len(text) <= DESCRIPTION_CHARS:
        return text
    cut = text[: DESCRIPTION_CHARS + 1]
    return cut[: cut.rfind(" ")] if " " in cut else text[:DESCRIPTION_CHARS]


def with_description(text: str, description: str | None) -> str:
    """A folded-in item's topic text: ``text`` (its training text) and its :func:`description_snippet`."""
    return " | ".join(part for part in (text, description_snippet(description)) if part)


def topic_texts(graph: TrainingGraph, language: Mapping[str, str] | None = None) -> list[str]:
    """Every item's topic text: training text, knowledge-graph tags, description snippet and
    ``language`` (tags, reviews)."""
    tags = kg_tags(graph)
    extra = language or {}
    descriptions = graph.item_description
    texts = []
    for k, item_id in enumerate(graph.item_ids):
        base = graph.item_text[k] if k < len(graph.item_text) else ""
        description = description_snippet(descriptions[k] if k < len(descriptions) else None)
        parts = [base, ", ".join(tags.get(k, [])), description, extra.get(item_id, "")]
        texts.append(" | ".join(p for p in parts if p))
    return texts


def item_language(gateway: GraphGateway) -> dict[str, str]:
    """User tags (most used first) and the first review snippets of every item that has any (two reads)."""
    tags: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for row in gateway.read(ITEM_TAGS):
        tags[row["item_id"]].append((-int(row["count"] or 0), row["tag"]))
    reviews: dict[str, list[str]] = defaultdict(list)
    for row in gateway.read(ITEM_REVIEWS):
        if len(reviews[row["item_id"]]) < REVIEWS_PER_ITEM:
            reviews[row["item_id"]].append(str(row["text"])[:REVIEW_CHARS])
    result = {}
    for item_id in sorted(set(tags) | set(reviews)):
        named = [t for _, t in sorted(tags.get(item_id, []))[:TAGS_PER_ITEM]]
        result[item_id] = " | ".join(
            p for p in (", ".join(named), " ".join(sorted(reviews.get(item_id, [])))) if p
        )
    return result


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def class_tfidf(documents: Sequence[str], labels: np.ndarray, n_topics: int) -> list[list[str]]:
    """The top :data:`KEYWORDS` terms of each topic by class-based TF-IDF (BERTopic's formula)."""
    joined = [" ".join(documents[i] for i in np.flatnonzero(labels == t)) for t in range(n_topics)]
    # Words of at least MIN_WORD_ITEMS items: one film's cast or one product's code name is no label.
    common = CountVectorizer(
        stop_words="english",
        token_pattern=TOKEN,
        lowercase=True,
        min_df=min(len(documents), max(2, min(MIN_WORD_ITEMS, len(documents) // 200))),
    )
    try:
        common.fit(documents)
    except ValueError:  # no words at all
        return [[] for _ in range(n_topics)]
    vectorizer = CountVectorizer(vocabulary=common.vocabulary_, token_pattern=TOKEN, lowercase=True)
    counts = vectorizer.fit_transform(joined).astype(np.float64)
    terms = vectorizer.get_feature_names_out()
    words_per_class = np.asarray(counts.sum(axis=1)).ravel()
    term_frequency = np.asarray(counts.sum(axis=0)).ravel()
    idf = np.log1p(words_per_class.mean() / np.maximum(term_frequency, 1.0))
    tf = counts.multiply(1.0 / np.maximum(words_per_class, 1.0)[:, None]).tocsr()
    scores = tf.multiply(idf[None, :]).tocsr()
    keywords = []
    for t in range(n_topics):
        row = scores.getrow(t).toarray().ravel()
        top = [int(j) for j in np.argsort(-row, kind="stable")[:KEYWORDS] if row[j] > 0]
        keywords.append([str(terms[j]) for j in top])
    return keywords


def npmi_coherence(documents: Sequence[str], keywords: Sequence[Sequence[str]], top: int = 10) -> float:
    """Mean NPMI over the keyword pairs of each topic, by document co-occurrence in ``documents``."""
    vocabulary = sorted({w for words in keywords for w in words[:top]})
    if not vocabulary or not documents:
        return float("nan")
    vectorizer = CountVectorizer(vocabulary=vocabulary, token_pattern=TOKEN, lowercase=True, binary=True)
    present = vectorizer.transform(documents).tocsc().astype(np.float64)
    n = present.shape[0]
    p_word = np.asarray(present.sum(axis=0)).ravel() / n
    joint = (present.T @ present).toarray() / n
    column = {w: j for j, w in enumerate(vocabulary)}
    per_topic = []
    for words in keywords:
        cols = [column[w] for w in words[:top]]
        values = []
        for a in range(len(cols)):
            for b in range(a + 1, len(cols)):
                i, j = cols[a], cols[b]
                p_ij = joint[i, j]
                if p_ij <= 0 or p_word[i] <= 0 or p_word[j] <= 0:
                    values.append(-1.0)
                elif p_ij >= 1.0:
                    values.append(1.0)
                else:
                    values.append(math.log(p_ij / (p_word[i] * p_word[j])) / -math.log(p_ij))
        if values:
            per_topic.append(float(np.mean(values)))
    return float(np.mean(per_topic)) if per_topic else float("nan")


def compute_topics(
    texts: Sequence[str], vectors: np.ndarray, seed: int = 0, *, about_topics: int = ABOUT_TOPICS
) -> TopicModel | None:
    """Cluster items into topics and label them (None when fewer than two topics' worth of text).

    ``about_topics``: how many topics an item can be ABOUT (:data:`ABOUT_TOPICS`).
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    has_text = np.flatnonzero(np.linalg.norm(vectors, axis=1) > 0)
    if has_text.size < 2 * MIN_TOPIC_SIZE:
        return None
    unit = _unit(vectors[has_text])
    k = topic_count(has_text.size)
    kmeans = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=2048, max_iter=100)
    kmeans.fit(unit)
    centroids = _unit(kmeans.cluster_centers_)
    cosines = unit @ centroids.T
    nearest = cosines.argmax(axis=1)
    score = cosines[np.arange(len(unit)), nearest]
    nearest = np.where(score >= ABOUT_MIN_COSINE, nearest, -1)
    sizes = np.bincount(nearest[nearest >= 0], minlength=k)
    kept = [t for t in range(k) if sizes[t] >= MIN_TOPIC_SIZE]
    if len(kept) < 2:
        return None
    remap = np.full(k + 1, -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    local = remap[nearest]  # no topic (-1) reads the extra last slot, -1
    item_topic = np.full(len(vectors), -1, dtype=np.int64)
    item_score = np.zeros(len(vectors), dtype=np.float32)
    item_topic[has_text] = local
    item_score[has_text] = np.where(local >= 0, score, 0.0)
    documents = [texts[i] for i in has_text]
    keywords = class_tfidf(documents, local, len(kept))
    names = [", ".join(words[:NAME_WORDS]) or f"topic {t}" for t, words in enumerate(keywords)]
    # An item with a topic has its nearest topic among the kept ones first (it is its nearest of
    # all); an item whose nearest topic was dropped, or too far, has none (as before).
    index, value = memberships(cosines[:, kept], topics=max(1, about_topics))
    item_topics = np.full((len(vectors), index.shape[1]), -1, dtype=np.int64)
    item_scores = np.zeros((len(vectors), index.shape[1]), dtype=np.float32)
    item_topics[has_text] = np.where(local[:, None] >= 0, index, -1)  # no topic: no other either
    item_scores[has_text] = np.where(item_topics[has_text] >= 0, value, 0.0)
    all_vectors = np.zeros((len(vectors), unit.shape[1]), dtype=np.float32)
    all_vectors[has_text] = unit
    model = TopicModel(
        names=names,
        keywords=keywords,
        centroids=centroids[kept],
        sizes=np.bincount(item_topics[item_topics >= 0], minlength=len(kept)).astype(int).tolist(),
        item_topic=item_topic,
        item_score=item_score,
        item_topics=item_topics,
        item_scores=item_scores,
        vectors=all_vectors,
    )
    model.quality = {
        "topics": float(len(kept)),
        "coverage": float((item_topic >= 0).sum() / max(len(vectors), 1)),
        "memberships": round(float((item_topics >= 0).sum() / max((item_topic >= 0).sum(), 1)), 4),
        "npmi": round(npmi_coherence(list(texts), keywords), 4),
    }
    return model


def assign_ids(
    model: TopicModel, previous: Sequence[tuple[str, np.ndarray]], used: Sequence[str]
) -> list[str]:
    """Stable ids: the Hungarian match on cosine with ``previous`` (id, centroid) keeps ids of pairs
    at or above :data:`STABLE_MIN_COSINE`; other topics get ``topic-<n>`` past every id in ``used``."""
    ids: list[str | None] = [None] * model.n_topics
    if previous:
        old = _unit(np.stack([np.asarray(c, dtype=np.float32) for _, c in previous]))
        cosine = model.centroids @ old.T
        rows, cols = linear_sum_assignment(-cosine)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            if cosine[r, c] >= STABLE_MIN_COSINE:
                ids[r] = previous[c][0]
    numbers = [int(m.group(1)) for i in used if (m := ID_PATTERN.fullmatch(i))]
    next_number = max(numbers, default=0) + 1
    for t in range(model.n_topics):
        if ids[t] is None:
            ids[t] = f"topic-{next_number}"
            next_number += 1
    return [i for i in ids if i is not None]


def absorbed_ids(
    model: TopicModel,
    previous: Sequence[tuple[str, np.ndarray]],
    previous_absorbs: Mapping[str, Sequence[str]] | None = None,
) -> list[list[str]]:
    """For each of ``model``'s topics (ids set by :func:`assign_ids`), the retired topics it absorbs.

    An old topic (``previous``: the active version's id and centroid) whose id no new topic kept
    is absorbed by its nearest new topic when their cosine is at least :data:`STABLE_MIN_COSINE`
    (its content survives there, merged with another's); one further from every new topic is
    dropped. What an old topic absorbed (``previous_absorbs``) passes on with it: to the new
    topic that keeps its id, or to the one that absorbs it. So every retired topic is absorbed by
    at most one topic of a version, and never by one whose version still has it.
    """
    absorbs: list[list[str]] = [[] for _ in range(model.n_topics)]
    if not previous or model.n_topics == 0:
        return absorbs
    inherited = previous_absorbs or {}
    kept = {topic_id: t for t, topic_id in enumerate(model.ids)}
    old = _unit(np.stack([np.asarray(c, dtype=np.float32) for _, c in previous]))
    cosine = model.centroids @ old.T  # (new, old)
    for c, (old_id, _) in enumerate(previous):
        if old_id in kept:
            absorbs[kept[old_id]].extend(inherited.get(old_id, ()))
            continue
        best = int(np.argmax(cosine[:, c]))
        if cosine[best, c] >= STABLE_MIN_COSINE:
            absorbs[best].extend([old_id, *inherited.get(old_id, ())])
    own = set(model.ids)
    return [sorted(set(a) - own) for a in absorbs]


def write_topics(
    gateway: GraphGateway,
    version: str,
    item_ids: Sequence[str],
    model: TopicModel | None,
    *,
    batch: int = 2_000,
    on_progress: Callable[[float], None] | None = None,
    folder: Path | None = None,
    link: bool = True,
    save: Callable[[TopicItems], object] | None = None,
) -> dict[str, Any]:
    """Give ``model``'s topics stable ids and write them under ``version`` (which must exist):
    Topic nodes (named when new), HAS_TOPIC edges with centroids, names and keywords; with
    ``link`` (the version is about to become active) also the topics' names and the ABOUT
    edges, dropping every other version's ABOUT edges. A version the gate may keep as a
    candidate is written with ``link`` false and linked when it is activated
    (:func:`kgrec.topic_items.link_topic_items`).
    With ``folder`` (the models folder) also the version's serving file, ``<version>.topics.npz``
    (:class:`kgrec.topic_items.TopicItems`), before any edge: written by ``save`` (a training
    job's write-back: :func:`workers.training.publish.save_topic_items`, staged and moved only
    while it owns the version), else in place.

    Returns ``{topic index: id}`` as ``ids`` and the counts written.
    """
    if model is None:
        return {"ids": [], "topics": 0, "about": 0}
    active = [r for r in gateway.read(ACTIVE_TOPICS) if r["centroid"]]
    previous = [(r["id"], np.asarray(r["centroid"])) for r in active]
    used = [r["id"] for r in gateway.read(ALL_TOPIC_IDS)]
    model.ids = assign_ids(model, previous, used)
    absorbs = absorbed_ids(model, previous, {r["id"]: r["absorbs"] or [] for r in active})
    if folder is not None and model.vectors is not None:
        # a mark that the graph holds this version's edges would name the file this one replaces
        AboutWrite.forget(gateway, [version])
        items = TopicItems(
            version, list(item_ids), model.vectors, list(model.ids), model.item_topics, model.item_scores
        )
        if save is None:
            items.save(folder)
        else:
            save(items)
    now = int(time.time() * 1000)
    rows = [
        {
            "id": model.ids[t],
            "name": model.names[t],
            "keywords": model.keywords[t],
            "centroid": [round(float(x), 6) for x in model.centroids[t]],
            "size": model.sizes[t],
            "absorbs": absorbs[t] or None,
        }
        for t in range(model.n_topics)
    ]
    for start in range(0, len(rows), TOPIC_BATCH):
        gateway.write(
            WRITE_TOPICS, {"version": version, "now": now, "rows": rows[start : start + TOPIC_BATCH]}
        )
    about = about_rows(item_ids, model.ids, model.item_topics, model.item_scores)
    if link:  # the names too (write_about)
        # with the items folded in since the pull, inside the writer (a repair waits for it)
        write_about(gateway, version, about, batch=batch, on_progress=on_progress, trained=item_ids)
    return {"ids": list(model.ids), "topics": model.n_topics, "about": len(about)}


def about_new_items(
    gateway: GraphGateway,
    version: str,
    item_ids: Sequence[str],
    text_vectors: np.ndarray,
    topics_of: str | None = None,
) -> int:
    """Link items folded in after training to the active version's nearest topics (cosine ≥
    :data:`ABOUT_MIN_COSINE`, at most :data:`ABOUT_TOPICS`), as training links its items; returns
    how many items got a topic. The edges carry ``topics_of``, the version whose topics they are
    (an incremental version's root; default ``version``), as training's edges do. Each item's
    topic-text vector is kept on it (``Item.topic_vector``): a version that becomes active later
    (a rollback) links the item to its own topics the same way (:func:`link_topic_items`)."""
    index = ACTIVE.get(gateway)
    if index.version != version or not index.ids or len(item_ids) == 0:
        return 0
    cosines = _unit(np.asarray(text_vectors, dtype=np.float32)) @ index.centroids.T
    topics, scores = memberships(cosines)
    rows = [
        {"item_id": item_ids[k], "topic_id": index.ids[int(topics[k, j])], "score": round(float(s), 6)}
        for k, j in zip(*np.nonzero(topics >= 0), strict=True)
        for s in (scores[k, j],)
        if np.any(text_vectors[k])
    ]
    vectors = [
        {"item_id": item_ids[k], "vector": [round(float(x), 6) for x in text_vectors[k]]}
        for k in range(len(item_ids))
        if np.any(text_vectors[k])
    ]
    if vectors:  # kept, so that another version becoming active links them too (link_topic_items)
        gateway.write(WRITE_ITEM_TOPIC_VECTORS, {"rows": vectors})
    if rows:
        gateway.write(WRITE_ABOUT, {"version": topics_of or version, "rows": rows})
    return len({row["item_id"] for row in rows})
