"""Infer a category hierarchy from which items carry which categories.

Real catalogues (Amazon's among them) list an item's categories as an
unordered set that merges several paths, so kgrec does not trust the order.
A category's parent is the smallest other category that covers at least
``coverage`` of its items. For clean general→specific paths this yields exactly
those paths; ties in size are broken by the order categories were first seen,
so the result is deterministic and acyclic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def infer_parents(item_categories: Mapping[str, Iterable[str]], coverage: float = 0.9) -> dict[str, str]:
    """Map each category to its inferred parent (root categories are absent)."""
    order: dict[str, int] = {}
    for categories in item_categories.values():
        for category in categories:
            order.setdefault(category, len(order))
    if not order:
        return {}
    names = list(order)
    incidence = np.zeros((len(names), len(item_categories)), dtype=np.float32)
    for column, categories in enumerate(item_categories.values()):
        for category in categories:
            incidence[order[category], column] = 1.0
    shared = incidence @ incidence.T  # shared[c, p] = items carrying both c and p
    size = np.diag(shared).copy()
    rank = np.arange(len(names))
    # p may be c's parent if it covers c and is bigger, or as big and seen earlier.
    covers = shared >= coverage * size[:, None]
    bigger = (size[None, :] > size[:, None]) | (
        (size[None, :] == size[:, None]) & (rank[None, :] < rank[:, None])
    )
    candidate = covers & bigger
    np.fill_diagonal(candidate, False)
    parents: dict[str, str] = {}
    for child in range(len(names)):
        options = np.flatnonzero(candidate[child])
        if options.size:
            # the smallest covering category; among equal sizes the best coverage, then the
            # one seen latest, which is the more specific of two categories with the same items
            best = min(options, key=lambda p: (size[p], -shared[child, p], -rank[p]))
            parents[names[child]] = names[best]
    return parents
