"""The registry of model signals: every item–item graph the served model blends.

Each entry names a signal and says how to build its (items × items) matrix from
a :class:`~kgrec.training_graph.TrainingGraph`. Training builds exactly these
matrices and fits every weight on the validation hold-out
(:mod:`workers.training.blend_fit`; there are no hand-set weights), the
artifact stores them under these names, and the
:class:`~kgrec.recommender.Recommender` blends them, refusing one without a
weight. A new signal is one entry in :data:`SIGNALS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import scipy.sparse as sp

from graph_schema.allow_list import KNOWLEDGE_RELATIONS
from kgrec.ease import ease_neighbours
from kgrec.item_graphs import (
    cooccurrence_cosine,
    knowledge_links,
    same_brand,
    shared_entities,
    successors,
    transitions,
)
from kgrec.topic_signal import TOPIC_INTERESTS, same_topic
from kgrec.training_graph import TrainingGraph

# training graph (and, for a tuned signal, its parameter) -> (n_items, n_items) float32 CSR matrix
Builder = Callable[..., sp.csr_matrix]
LAST_ITEM_TRANSITIONS = "last_item_transitions"
EASE = "ease"
SHARED_ENTITIES = "shared_entities"


@dataclass(frozen=True)
class Signal:
    """One item–item graph of the served model."""

    name: str  # its key in the artifact and in the blend weights
    build: Builder  # training graph -> (n_items, n_items) float32 CSR matrix
    directed: bool  # whether a link from a to b says nothing about b to a
    # Built from catalogue knowledge (relations, brands) rather than from interactions alone;
    # left out of a model trained without knowledge (TrainConfig.use_knowledge).
    uses_knowledge: bool = False
    # Its links back co-purchase explanations (directed links of a knowledge relation).
    co_purchase: bool = False
    # Reads the order of a user's interactions; left out of a model trained without recency.
    uses_order: bool = False
    # Reads the topics training mined from item text (TrainingGraph.item_topic); built only when
    # the graph has them, and left out of a model trained without topics (TrainConfig.use_topics).
    uses_topics: bool = False
    # Scored from the user's most recent item alone (``last · S``, the rank-0 entry of the profile)
    # instead of the whole recency-decayed profile: what the latest item leads to next.
    last_item: bool = False
    # Kept in the blend only when the fit shows, on the validation users, that it helps: a paired
    # one-sided test of the blend with it against the blend refitted without it
    # (workers/training/blend_fit.py, EVIDENCE_P). Topic interests are mined from text and are
    # meant to be off where they do not help (issue 11), not on for a gain within noise.
    needs_evidence: bool = False
    # Built with a parameter chosen on the validation hold-out (``build(graph, parameter)``;
    # workers/training/pipeline.py tunes it): built only where that parameter is given.
    tuned: bool = False


class SignalError(ValueError):
    """A model names a signal that is not registered, or blends one without a weight."""


def _knowledge(relation: str, *, directed: bool) -> Signal:
    if relation not in KNOWLEDGE_RELATIONS:
        raise SignalError(f"{relation!r} is not a knowledge relation of the graph allow-list")
    return Signal(
        name=f"{relation}_directed" if directed else relation,
        build=partial(knowledge_links, relation=relation, directed=directed),
        directed=directed,
        uses_knowledge=True,
        co_purchase=directed,
    )


# The order is the order the blend sums them in (kept, so that scores stay bit-identical).
SIGNALS: tuple[Signal, ...] = (
    Signal("cooccurrence", cooccurrence_cosine, directed=False),
    Signal("transitions", transitions, directed=True, uses_order=True),
    _knowledge("also_bought", directed=False),
    _knowledge("also_bought", directed=True),
    _knowledge("also_viewed", directed=False),
    _knowledge("also_viewed", directed=True),
    _knowledge("bought_together", directed=False),
    # Also backs the explanations' co-purchase links.
    _knowledge("bought_together", directed=True),
    Signal("same_brand", same_brand, directed=False, uses_knowledge=True),
    # The user's topic interests (kgrec.topic_signal), last so that the others' sums stay as they were.
    Signal(TOPIC_INTERESTS, same_topic, directed=False, uses_topics=True, needs_evidence=True),
    # The transitions out of the user's latest item only, on top of the decayed profile's: lets
    # the fit weigh the next step after the last item apart from the rest of the history.
    Signal(LAST_ITEM_TRANSITIONS, successors, directed=True, uses_order=True, last_item=True),
    # EASE's item–item weights (kgrec/ease.py), bounded to the most popular items and the top
    # weights of each row; λ is chosen on validation (workers/training/ease.py).
    Signal(EASE, ease_neighbours, directed=True, tuned=True),
    # Items sharing knowledge entities or categories (any relation: colour, artist, tag, genre),
    # IDF-weighted; kept only with evidence, since many data sets' entities say little about taste.
    Signal(SHARED_ENTITIES, shared_entities, directed=False, uses_knowledge=True, needs_evidence=True),
)

SIGNALS_BY_NAME: dict[str, Signal] = {s.name: s for s in SIGNALS}
COOCCURRENCE = "cooccurrence"

# The blend-weight key of the graph neural network's embedding term (not an item–item graph).
EMBEDDING = "embedding"


def signal(name: str) -> Signal:
    """The registered signal ``name``; raises :class:`SignalError` for an unknown one."""
    try:
        return SIGNALS_BY_NAME[name]
    except KeyError:
        known = ", ".join(SIGNALS_BY_NAME)
        raise SignalError(f"unknown model signal {name!r} (registered: {known})") from None


def signals_for(use_knowledge: bool, use_order: bool = True, use_topics: bool = True) -> tuple[Signal, ...]:
    """The signals of a model trained with or without catalogue knowledge (interaction order, topics)."""
    return tuple(
        s
        for s in SIGNALS
        if (use_knowledge or not s.uses_knowledge)
        and (use_order or not s.uses_order)
        and (use_topics or not s.uses_topics)
    )


def build_signals(
    graph: TrainingGraph,
    use_knowledge: bool = True,
    use_order: bool = True,
    use_topics: bool = True,
    tuned: Mapping[str, Any] | None = None,
    prebuilt: Mapping[str, sp.csr_matrix] | None = None,
    device: str = "cpu",
) -> dict[str, sp.csr_matrix]:
    """Every signal's matrix for ``graph``, in registry order (topic signals only if it has topics).

    ``tuned``: the validation-chosen parameter of each tuned signal; one without it is left out.
    ``prebuilt``: matrices already built for ``graph`` (a tuned signal's, from its tuning).
    ``device``: where a tuned signal's fit runs (EASE's inversion; ``cuda`` on a GPU worker).
    """
    has_topics = use_topics and graph.item_topic is not None
    tuned, prebuilt = tuned or {}, prebuilt or {}
    matrices: dict[str, sp.csr_matrix] = {}
    for s in signals_for(use_knowledge, use_order, has_topics):
        if s.name in prebuilt:
            matrices[s.name] = prebuilt[s.name]
        elif not s.tuned:
            matrices[s.name] = s.build(graph)
        elif s.name in tuned:
            matrices[s.name] = s.build(graph, tuned[s.name], device=device)
    return matrices


def check_weights(names: Iterable[str], weights: Mapping[str, float]) -> None:
    """Raise :class:`SignalError` unless every signal in ``names`` is registered and has a weight."""
    for name in names:
        signal(name)
        if name not in weights:
            raise SignalError(f"model signal {name!r} has no blend weight (an explicit 0.0 leaves it out)")
    unknown = [name for name in weights if name != EMBEDDING and name not in SIGNALS_BY_NAME]
    if unknown:
        signal(unknown[0])


def last_item_names() -> frozenset[str]:
    """The signals scored from a user's most recent item alone (:attr:`Signal.last_item`)."""
    return frozenset(s.name for s in SIGNALS if s.last_item)


def evidence_names() -> frozenset[str]:
    """The signals the fit keeps only on a significant validation gain (:attr:`Signal.needs_evidence`)."""
    return frozenset(s.name for s in SIGNALS if s.needs_evidence)


def co_purchase_names() -> tuple[str, ...]:
    """The signals whose links back co-purchase explanations."""
    return tuple(s.name for s in SIGNALS if s.co_purchase)
