"""The behaviour table: every kind of event kgrec records, and what each one means.

One entry per behaviour. The graph allow-list derives each behaviour's counter
property (``n_<behaviour>`` on INTERACTED edges) from it, the event and data-set
validators accept exactly these names, ``Settings`` starts from the default
weights (``KGREC_BEHAVIOUR_WEIGHTS`` overrides some), and pruning keeps the
edges of the behaviours marked as history. A new behaviour is one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Behaviour:
    """One kind of user–item event."""

    name: str
    default_weight: float  # interest weight one event adds (before decay)
    # Kept as history when the edge's weight has faded (exclusion and training need it).
    kept_when_faded: bool = False

    @property
    def counter(self) -> str:
        """The INTERACTED edge property that counts these events."""
        return f"n_{self.name}"


# In the order the API documents them.
BEHAVIOUR_TABLE: tuple[Behaviour, ...] = (
    Behaviour("view", 1.0),
    Behaviour("click", 1.0),
    Behaviour("cart", 3.0),
    Behaviour("remove_from_cart", 0.0),
    Behaviour("fav", 2.0),
    Behaviour("purchase", 5.0, kept_when_faded=True),
    Behaviour("rating", 4.0, kept_when_faded=True),
    Behaviour("review", 4.0),
)

BEHAVIOURS: tuple[str, ...] = tuple(b.name for b in BEHAVIOUR_TABLE)
DEFAULT_BEHAVIOUR_WEIGHTS: dict[str, float] = {b.name: b.default_weight for b in BEHAVIOUR_TABLE}
COUNTER_PROPERTIES: tuple[str, ...] = tuple(b.counter for b in BEHAVIOUR_TABLE)

# Events about language rather than one user–item behaviour: a user's tag on an item
# (an (:Item)-[:TAGGED]->(:Tag) count) and a search (no item). Their text is matched to
# topics; the weight each adds to the user's topic interests (kgrec.topics) is given here.
LANGUAGE_EVENT_WEIGHTS: dict[str, float] = {"tag": 2.0, "search": 3.0}
EVENT_TYPES: tuple[str, ...] = (*BEHAVIOURS, *LANGUAGE_EVENT_WEIGHTS)
