"""The registry of model signals: every item–item graph the served model blends.

Each entry names a signal, says how to build its (items × items) matrix from a
:class:`~kgrec.training_graph.TrainingGraph`, and gives its default blend
weight. Training builds exactly these matrices and tunes around these weights
(:func:`candidate_weights`), the artifact stores them under these names, and
the :class:`~kgrec.recommender.Recommender` blends them, refusing one without a
weight. A new signal is one entry in :data:`SIGNALS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial

import scipy.sparse as sp

from graph_schema.allow_list import KNOWLEDGE_RELATIONS
from kgrec.item_graphs import cooccurrence_cosine, knowledge_links, same_brand, transitions
from kgrec.training_graph import TrainingGraph

Builder = Callable[[TrainingGraph], sp.csr_matrix]


@dataclass(frozen=True)
class Signal:
    """One item–item graph of the served model."""

    name: str  # its key in the artifact and in the blend weights
    build: Builder  # training graph -> (n_items, n_items) row-normalised float32 CSR matrix
    default_weight: float  # blend weight before tuning; 0.0 keeps it out of the scores
    directed: bool  # whether a link from a to b says nothing about b to a
    # Built from catalogue knowledge (relations, brands) rather than from interactions alone;
    # left out of a model trained without knowledge (TrainConfig.use_knowledge).
    uses_knowledge: bool = False
    # Its links back co-purchase explanations (directed links of a knowledge relation).
    co_purchase: bool = False
    # Other weights tuning tries for it (each with the others at their default).
    alternatives: tuple[float, ...] = field(default=())


class SignalError(ValueError):
    """A model names a signal that is not registered, or blends one without a weight."""


def _knowledge(relation: str, weight: float, *, directed: bool) -> Signal:
    if relation not in KNOWLEDGE_RELATIONS:
        raise SignalError(f"{relation!r} is not a knowledge relation of the graph allow-list")
    return Signal(
        name=f"{relation}_directed" if directed else relation,
        build=partial(knowledge_links, relation=relation, directed=directed),
        default_weight=weight,
        directed=directed,
        uses_knowledge=True,
        co_purchase=directed,
    )


# The order is the order the blend sums them in (kept, so that scores stay bit-identical).
SIGNALS: tuple[Signal, ...] = (
    Signal("cooccurrence", cooccurrence_cosine, 1.0, directed=False, alternatives=(0.5,)),
    Signal("transitions", transitions, 2.0, directed=True, alternatives=(1.0,)),
    _knowledge("also_bought", 1.0, directed=False),
    _knowledge("also_bought", 0.5, directed=True),
    _knowledge("also_viewed", 0.5, directed=False),
    _knowledge("also_viewed", 0.5, directed=True),
    _knowledge("bought_together", 2.0, directed=False),
    # Kept for the explanations' co-purchase links; its undirected twin already scores the relation.
    _knowledge("bought_together", 0.0, directed=True),
    Signal("same_brand", same_brand, 0.1, directed=False, uses_knowledge=True),
)

SIGNALS_BY_NAME: dict[str, Signal] = {s.name: s for s in SIGNALS}
COOCCURRENCE = "cooccurrence"

# The blend-weight key of the graph neural network's embedding term (not an item–item graph).
EMBEDDING = "embedding"

# The embedding term's weights tried in tuning; the alternatives above go with the middle one.
EMBEDDING_WEIGHTS: tuple[float, ...] = (0.0, 0.2, 0.5)
EMBEDDING_WEIGHT_WITH_ALTERNATIVES = 0.2


def signal(name: str) -> Signal:
    """The registered signal ``name``; raises :class:`SignalError` for an unknown one."""
    try:
        return SIGNALS_BY_NAME[name]
    except KeyError:
        known = ", ".join(SIGNALS_BY_NAME)
        raise SignalError(f"unknown model signal {name!r} (registered: {known})") from None


def signals_for(use_knowledge: bool) -> tuple[Signal, ...]:
    """The signals of a model trained with or without catalogue knowledge."""
    return tuple(s for s in SIGNALS if use_knowledge or not s.uses_knowledge)


def build_signals(graph: TrainingGraph, use_knowledge: bool = True) -> dict[str, sp.csr_matrix]:
    """Every signal's matrix for ``graph``, in registry order."""
    return {s.name: s.build(graph) for s in signals_for(use_knowledge)}


def default_weights(use_knowledge: bool) -> dict[str, float]:
    """Each signal's default weight."""
    return {s.name: s.default_weight for s in signals_for(use_knowledge)}


def candidate_weights(use_knowledge: bool) -> list[dict[str, float]]:
    """The blends tuning tries: the defaults with each embedding weight, then each signal's alternatives."""
    base = default_weights(use_knowledge)
    candidates = [{**base, EMBEDDING: e} for e in EMBEDDING_WEIGHTS]
    for s in signals_for(use_knowledge):
        candidates.extend(
            {**base, s.name: w, EMBEDDING: EMBEDDING_WEIGHT_WITH_ALTERNATIVES} for w in s.alternatives
        )
    return candidates


def check_weights(names: Iterable[str], weights: Mapping[str, float]) -> None:
    """Raise :class:`SignalError` unless every signal in ``names`` is registered and has a weight."""
    for name in names:
        signal(name)
        if name not in weights:
            raise SignalError(f"model signal {name!r} has no blend weight (an explicit 0.0 leaves it out)")
    unknown = [name for name in weights if name != EMBEDDING and name not in SIGNALS_BY_NAME]
    if unknown:
        signal(unknown[0])


def co_purchase_names() -> tuple[str, ...]:
    """The signals whose links back co-purchase explanations."""
    return tuple(s.name for s in SIGNALS if s.co_purchase)
