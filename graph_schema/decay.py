"""Interest decay in Cypher: the one spelling of kgrec.decay's formula that every statement uses.

Cypher cannot call Python, so the statements render the decayed weight with these helpers;
``tests/test_decay.py`` runs them on the graph against :mod:`kgrec.decay`.
"""

from __future__ import annotations

# As kgrec.decay._MAX_EXPONENT: a stamp more than one half-life ahead counts as one half-life ahead,
# so a weight stamped far in the future (an import before future times were refused) at most doubles
# instead of reading as Infinity, which JSON cannot carry. Cypher has no scalar min(): a CASE caps it.
MAX_EXPONENT = 1.0


def decay_factor(stamp: str, now: str = "$now", half_life: str = "$half_life_ms") -> str:
    """The Cypher expression for what one unit of weight stamped ``stamp`` is worth at ``now``:
    ``2 ^ (-(now - stamp) / half_life)``, the exponent capped at :data:`MAX_EXPONENT`."""
    exponent = f"(-({now} - {stamp}) / {half_life})"
    return f"2.0 ^ (CASE WHEN {exponent} > {MAX_EXPONENT} THEN {MAX_EXPONENT} ELSE {exponent} END)"


def decayed_weight(weight: str, stamp: str, now: str = "$now", half_life: str = "$half_life_ms") -> str:
    """The Cypher expression for ``weight`` stamped ``stamp`` decayed to ``now`` (:func:`decay_factor`)."""
    return f"({weight} * {decay_factor(stamp, now, half_life)})"
