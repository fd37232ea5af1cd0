"""The one rule that orders same-time interactions: a seeded hash of (user id, item id).

Interactions with the same time (or, without times, the same sequence number) have no
order of their own, yet the recency profile and every order-aware signal need one.
Training, the validation hold-out and serving must agree on it, and serving sees one
user's history at a time, so the rule is a function of the user and the item alone;
the larger key counts as the more recent. Item order alone (MovieLens files list a
user's ratings by film) would order every user's ties the same way, a direction that
order-aware signals could learn; mixing in the user makes each user's order unrelated
to every other user's.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from kgrec.training_graph import TrainingGraph

TIE_SEED = 7

# splitmix64's finaliser (public-domain constants): a cheap, well-spread 64-bit mix.
_GOLDEN = 0x9E3779B97F4A7C15
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def _id_hashes(ids: Sequence[str]) -> np.ndarray:
    """CRC-32 of each id's UTF-8 bytes, as uint64 (stable across processes and machines)."""
    return np.fromiter((zlib.crc32(i.encode("utf-8")) for i in ids), dtype=np.uint64, count=len(ids))


def _mixed(user_hashes: np.ndarray, item_hashes: np.ndarray) -> np.ndarray:
    """Tie keys (uint64) of (user, item) pairs from their :func:`_id_hashes`, element-wise."""
    x = (user_hashes << np.uint64(32)) | item_hashes
    x = x + np.uint64(((TIE_SEED + 1) * _GOLDEN) % 2**64)  # arrays wrap silently; numpy scalars would warn
    x = (x ^ (x >> np.uint64(30))) * _MIX_1
    x = (x ^ (x >> np.uint64(27))) * _MIX_2
    return x ^ (x >> np.uint64(31))


def tie_keys(user_id: str, item_ids: Sequence[str]) -> list[int]:
    """One user's tie keys for ``item_ids``: what serving puts in each history entry."""
    if not item_ids:
        return []
    user = np.full(len(item_ids), zlib.crc32(user_id.encode("utf-8")), dtype=np.uint64)
    return [int(k) for k in _mixed(user, _id_hashes(item_ids))]


def interaction_ties(graph: TrainingGraph) -> np.ndarray:
    """Tie keys of ``graph``'s interactions, one per row: what training orders ties by."""
    return _mixed(_id_hashes(graph.user_ids)[graph.inter_user], _id_hashes(graph.item_ids)[graph.inter_item])
