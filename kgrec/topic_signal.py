"""The topic-interest signal: a user's topics, read from their profile, scored on every item.

Training mines topics from the items' text (:mod:`workers.training.topics`) and
puts each item's topic and its cosine to the topic's centroid (the ABOUT score)
on the :class:`~kgrec.training_graph.TrainingGraph`. The signal's item–item
matrix links an item to the other items among its topic's :data:`TOPIC_LINKS`
most central ones, weighted by how central each is:

    S[a, b] = about(b) / (Σ about(c) over those items c ≠ a + 1)   for b ≠ a among them

so ``profile · S`` is the user's interest in each topic (the profile's weight on
the topic's items) spread over the topic's central items, most central first. The
served profile also holds the central items of the topics the user's searches,
reviews and tags point to (:func:`kgrec.topics.topic_history`), so language
interests reach the score through this signal too. Its blend weight is fitted on
validation like every other signal's, and is 0 (the signal off) where it does
not help.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from kgrec.item_graphs import row_normalised
from kgrec.training_graph import TrainingGraph

TOPIC_INTERESTS = "topic_interests"
# Links per item at most: a topic's most central items. Topics grow with the catalogue (their
# number is capped), so linking every item of a topic would grow as items².
TOPIC_LINKS = 200


def with_topics(graph: TrainingGraph, item_topic: np.ndarray, item_score: np.ndarray) -> TrainingGraph:
    """``graph`` with each item's topic index (-1: none) and ABOUT score set."""
    if len(item_topic) != graph.n_items or len(item_score) != graph.n_items:
        raise ValueError("item topics must have one entry per item of the graph")
    return replace(
        graph,
        item_topic=np.asarray(item_topic, dtype=np.int64),
        item_topic_score=np.asarray(item_score, dtype=np.float32),
    )


def same_topic(graph: TrainingGraph) -> sp.csr_matrix:
    """Items → their topic's most central other items, weighted by ABOUT score, row-normalised."""
    n = graph.n_items
    topic = graph.item_topic
    if topic is None or not (topic >= 0).any():
        return sp.csr_matrix((n, n), dtype=np.float32)
    score = np.maximum(np.asarray(graph.item_topic_score, dtype=np.float32), 0.0)
    has = np.flatnonzero(topic >= 0)
    n_topics = int(topic[has].max()) + 1
    membership = sp.csr_matrix((np.ones(has.size, dtype=np.float32), (has, topic[has])), shape=(n, n_topics))
    by_topic = has[np.lexsort((-score[has], topic[has]))]  # by topic, most central first
    first = np.searchsorted(topic[by_topic], topic[by_topic])  # where each one's topic starts
    central = by_topic[np.arange(by_topic.size) - first < TOPIC_LINKS]
    centrality = sp.csr_matrix((score[central], (topic[central], central)), shape=(n_topics, n))
    linked = (membership @ centrality).tocsr()
    linked.setdiag(0)
    linked.eliminate_zeros()
    return row_normalised(linked)
