"""Diversity: at most N items of one brand or one category on a page, by a greedy reorder.

The ranked list is cut into pages of ``k`` from the top. Each page takes, in rank
order, the best remaining items that keep every brand (and every category) at
most ``max_per_brand`` (``max_per_category``) times on that page; if the remaining
items cannot fill the page that way, the best skipped ones fill it. An item a page
skipped stays at the front of the queue for the next page. The order depends only
on the ranked list, ``k`` and the caps, so every page of one ranking is cut from
the same order: no item is shown twice and none is lost between pages, as long as
the ranked list is the same fixed-size pool for every page (:data:`POOL`).

An item counts towards its brand and towards each of its most specific categories
(those of its categories that are not the parent of another of them), so a root
category such as "Beauty" does not count every item twice.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from kgrec.limits import MAX_K, MAX_OFFSET
from kgrec.ranking import Ranking

POOL = MAX_OFFSET + MAX_K  # ranked items reordered when a page is diversified or ruled


@dataclass(frozen=True)
class Diversity:
    """The caps of one request (None: no cap)."""

    max_per_brand: int | None = None
    max_per_category: int | None = None

    @property
    def active(self) -> bool:
        """Whether any cap is set."""
        return self.max_per_brand is not None or self.max_per_category is not None

    def as_dict(self) -> dict[str, int]:
        """The caps that were given."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


class ItemGroups:
    """Each item's brand and most specific categories (by item index) under one set of facts.

    Built at no cost: an item's most specific categories are worked out the first time a page
    asks for them (a binary search in the facts' pairs) and kept, so the facts serving lays the
    catalogue's changes over (:meth:`kgrec.catalogue.CatalogueSnapshot.facts`) get groups of their
    own without a pass over every item.
    """

    def __init__(self, facts: Any) -> None:
        self.facts = facts
        self.brand = np.asarray(facts.item_brand)
        self._categories: dict[int, tuple[int, ...]] = {}

    def categories_of(self, row: int) -> tuple[int, ...]:
        """Item ``row``'s most specific categories (indices; empty for none)."""
        cached = self._categories.get(row)
        if cached is None:
            categories = set(self.facts.categories_of(row)) if row < self.facts.n_items else set()
            parents = self.facts.parents
            above = {p for c in categories for p in parents.get(c, ())}
            cached = self._categories[row] = tuple(sorted(categories - above) or sorted(categories))
        return cached

    def specific_pairs(self) -> np.ndarray:
        """Every item's most specific categories at once, as (item row, category index) pairs by
        item, then category: :meth:`categories_of`'s rule in array operations (on a 64,160-item
        catalogue about 15 ms, against 245 ms item by item)."""
        facts = self.facts
        n_categories = max(len(facts.category_ids), 1)
        stored = np.asarray(facts.item_category_pairs, dtype=np.int64).reshape(-1, 2)
        keys = _sorted_unique(stored[:, 0] * n_categories + stored[:, 1])
        items, categories = keys // n_categories, keys % n_categories
        links = sorted((child, parent) for child, parents in facts.parents.items() for parent in parents)
        if links and keys.size:
            link_array = np.array(links, dtype=np.int64)
            # each (item, category) pair's (item, parent of that category) pairs: those are above
            counts = np.bincount(link_array[:, 0], minlength=n_categories)
            first = np.cumsum(counts) - counts
            per_pair = counts[categories]
            within = np.arange(int(per_pair.sum())) - np.repeat(np.cumsum(per_pair) - per_pair, per_pair)
            parents = link_array[np.repeat(first[categories], per_pair) + within, 1]
            above = _sorted_unique(np.repeat(items, per_pair) * n_categories + parents)
            specific = ~np.isin(keys, above, assume_unique=True)
            # an item whose categories are all above one another keeps them all (categories_of's
            # fallback; the walk leaves no loop, so this does not arise from stored data)
            has_specific = np.zeros(int(items.max()) + 1, dtype=bool)
            has_specific[items[specific]] = True
            keep = specific | ~has_specific[items]
            items, categories = items[keep], categories[keep]
        return np.stack([items, categories], axis=1)

    @property
    def categories(self) -> dict[int, tuple[int, ...]]:
        """Every item with a category → its most specific categories (:meth:`specific_pairs`)."""
        grouped: dict[int, list[int]] = {}
        for row, category in self.specific_pairs().tolist():
            grouped.setdefault(row, []).append(category)
        return {row: tuple(categories) for row, categories in grouped.items()}


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``keys`` sorted, each once (numpy's unique hashes int64 keys, several times slower here)."""
    keys = np.sort(keys)
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if keys.size else keys


class CapCounter:
    """The brands and most specific categories one page holds so far, against a request's caps."""

    def __init__(self, groups: ItemGroups, caps: Diversity) -> None:
        self.groups = groups
        self.caps = caps
        self.brands: Counter[int] = Counter()
        self.categories: Counter[int] = Counter()

    def _brand(self, row: int) -> int:
        brand = self.groups.brand
        return int(brand[row]) if row < brand.size else -1

    def fits(self, row: int) -> bool:
        """Whether item ``row`` can join the page without taking a brand or category over its cap."""
        caps = self.caps
        brand = self._brand(row)
        if caps.max_per_brand is not None and brand >= 0 and self.brands[brand] >= caps.max_per_brand:
            return False
        return caps.max_per_category is None or all(
            self.categories[c] < caps.max_per_category for c in self.groups.categories_of(row)
        )

    def add(self, row: int) -> None:
        """Count item ``row`` as on the page."""
        brand = self._brand(row)
        if brand >= 0:
            self.brands[brand] += 1
        self.categories.update(self.groups.categories_of(row))


def diversify(ranked: Ranking, groups: ItemGroups, k: int, caps: Diversity, upto: int) -> Ranking:
    """The first ``upto`` items of ``ranked`` reordered page by page (pages of ``k``) under ``caps``."""
    if not caps.active or not len(ranked):
        return ranked.cut(0, upto)
    queue = ranked.rows.tolist()
    ordered: list[int] = []  # positions in ``ranked``
    positions = list(range(len(queue)))
    while positions and len(ordered) < upto:
        counter = CapCounter(groups, caps)
        page: list[int] = []
        for position in positions:
            if len(page) == k:
                break
            row = queue[position]
            if counter.fits(row):
                page.append(position)
                counter.add(row)
        if len(page) < k:  # not enough diverse items left: the best skipped ones fill the page
            taken = set(page)
            page += [p for p in positions if p not in taken][: k - len(page)]
            page.sort()
        chosen = set(page)
        ordered += page
        positions = [p for p in positions if p not in chosen]
    order = np.array(ordered, dtype=np.int64)
    return Ranking(ranked.rows[order], ranked.scores[order])
