"""How user–item evidence adds up into a user's brand and category interests.

An interest edge (user → brand or category) sums what the user's interactions
with the target's items add: their weights decayed to the latest of their
stamps, their event counts, and their first and last times. ``kgrec import``
sets the edges to these sums. Event ingestion adds a batch's sums to the stored
edges (both decayed to the later stamp) inside ``INGEST_EVENTS``, which spells
this aggregation out in Cypher, because only the graph knows the targets of
every item without another read; ``tests/test_decay.py`` checks the two agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from kgrec.decay import decay_factor


class PairEvidence(NamedTuple):
    """What one user–item pair adds to the interests in the item's brands and categories."""

    user_id: str
    item_id: str
    weight: float  # decayed to weight_ts
    weight_ts: int
    events: int
    first_ts: int | None
    last_ts: int | None


def interest_rows(
    pairs: Iterable[PairEvidence], targets: Mapping[str, Sequence[str]], half_life_ms: float
) -> list[dict[str, Any]]:
    """One row per (user, target) that ``pairs`` reach through ``targets`` (item id → target ids).

    Rows: ``user_id``, ``target_id``, ``weight`` (decayed to ``weight_ts``, the latest
    pair stamp), ``count`` (events), ``first_ts`` and ``last_ts`` (None when no pair has one).
    """
    grouped: dict[tuple[str, str], list[PairEvidence]] = {}
    for pair in pairs:
        for target in targets.get(pair.item_id, ()):
            grouped.setdefault((pair.user_id, target), []).append(pair)
    rows = []
    for (user_id, target), members in grouped.items():
        reference = max(m.weight_ts for m in members)
        firsts = [m.first_ts for m in members if m.first_ts is not None]
        lasts = [m.last_ts for m in members if m.last_ts is not None]
        rows.append(
            {
                "user_id": user_id,
                "target_id": target,
                "weight": sum(
                    m.weight * decay_factor(reference - m.weight_ts, half_life_ms) for m in members
                ),
                "weight_ts": reference,
                "count": sum(m.events for m in members),
                "first_ts": min(firsts) if firsts else None,
                "last_ts": max(lasts) if lasts else None,
            }
        )
    return rows
