"""What the serving filters know about items: brand, categories (with the tree) and price.

Pulled from the graph with the training subgraph and stored in the model
artifact, so a serving process answers ``brand=`` / ``category=`` /
``min_price=`` / ``max_price=`` from numpy masks without a graph read. Items
folded in after training bring their own facts (:meth:`ItemFacts.extended`), and the
catalogue API's brand and category changes are laid over them per request
(:meth:`ItemFacts.replaced`, :meth:`kgrec.catalogue.CatalogueSnapshot.facts`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from kgrec.category_tree import acyclic_links, reached


def links_in_id_order(row: dict) -> dict:
    """A graph row of an item's facts with its ``brands`` and ``categories`` lists in id order.

    The engine lists an item's edges in its internal order, which changes when a graph is
    reloaded and node ids are reused; training, fold-in and serving read these lists through
    this one rule, so an item's text and its first brand do not depend on the graph's history.
    """
    return {**row, "brands": sorted(row["brands"]), "categories": sorted(row["categories"])}


class _Appending:
    """An id's index in ``ids``, appending an id that ``index`` (the ids' index so far) lacks."""

    def __init__(self, ids: list[str], index: Mapping[str, int]) -> None:
        self.ids, self.index, self.added = ids, index, dict[str, int]()

    def __call__(self, id_: str) -> int:
        found = self.index.get(id_, self.added.get(id_))
        if found is None:
            found = self.added[id_] = len(self.ids)
            self.ids.append(id_)
        return found


@dataclass
class ItemFacts:
    """Brand, categories and price per item index, plus the category tree."""

    brand_ids: list[str]
    item_brand: np.ndarray  # (n_items,) brand index, -1 for none
    category_ids: list[str]
    item_category_pairs: np.ndarray  # (m, 2) item index, category index
    category_parent_pairs: np.ndarray  # (p, 2) child category index, parent category index
    item_price: np.ndarray  # (n_items,) float32, NaN where unknown
    # ("brand" | "category", id) -> the rows of its items: proportional to the items, where a mask
    # per brand asked for made brands × items bytes (a client walking ?brand= filled it)
    _row_cache: dict[tuple[str, str], np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def empty(cls, n_items: int) -> ItemFacts:
        """Facts that know nothing (every filter then matches no item)."""
        return cls(
            brand_ids=[],
            item_brand=np.full(n_items, -1, dtype=np.int64),
            category_ids=[],
            item_category_pairs=np.zeros((0, 2), dtype=np.int64),
            category_parent_pairs=np.zeros((0, 2), dtype=np.int64),
            item_price=np.full(n_items, np.nan, dtype=np.float32),
        )

    @property
    def n_items(self) -> int:
        """Number of items described."""
        return int(self.item_brand.size)

    @cached_property
    def brand_index(self) -> dict[str, int]:
        """Brand id → brand index."""
        return {b: k for k, b in enumerate(self.brand_ids)}

    @cached_property
    def category_index(self) -> dict[str, int]:
        """Category id → category index."""
        return {c: k for k, c in enumerate(self.category_ids)}

    @cached_property
    def _children(self) -> dict[int, list[int]]:
        # a loop stored before paths were checked is left out: a category never contains its parents
        children: dict[int, list[int]] = {}
        for child, parent in acyclic_links(self.category_parent_pairs.tolist()):
            children.setdefault(parent, []).append(child)
        return children

    @cached_property
    def parents(self) -> dict[int, set[int]]:
        """Category index → its parents' indices (a stored loop left out, as for :meth:`subtree`)."""
        parents: dict[int, set[int]] = {}
        for child, parent in acyclic_links(self.category_parent_pairs.tolist()):
            parents.setdefault(child, set()).add(parent)
        return parents

    @cached_property
    def _categories_by_item(self) -> tuple[np.ndarray, np.ndarray]:
        pairs = self.item_category_pairs
        if np.all(pairs[1:, 0] >= pairs[:-1, 0]):  # already by item (as replaced() leaves them)
            return pairs[:, 0], pairs[:, 1]
        order = np.argsort(pairs[:, 0], kind="stable")
        return pairs[order, 0], pairs[order, 1]

    def categories_of(self, row: int) -> list[int]:
        """The category indices item ``row`` is listed under (a binary search, not a scan of every pair)."""
        items, categories = self._categories_by_item
        start, stop = np.searchsorted(items, [row, row + 1])
        return categories[start:stop].tolist()

    def subtree(self, category_id: str) -> list[int]:
        """The category and every category below it (indices); empty for an unknown id."""
        start = self.category_index.get(category_id)
        if start is None:
            return []
        return sorted(reached(self._children, [start]))

    def with_ancestors(self, category_ids: Iterable[str]) -> frozenset[str]:
        """The ids given and every category above any of them in the tree (ids these facts do not
        know are kept, with nothing above them)."""
        given = frozenset(category_ids)
        index = self.category_index
        above = reached(self.parents, [index[c] for c in given if c in index])
        return given | {self.category_ids[c] for c in above}

    def brand_rows(self, brand_id: str) -> np.ndarray:
        """The rows of the items made by ``brand_id``, ascending (read-only; empty for an unknown id)."""
        index = self.brand_index.get(brand_id)
        if index is None:  # never cached: unknown ids come from clients and would grow the cache
            return np.zeros(0, dtype=np.int64)
        return self._rows(("brand", brand_id), lambda: np.flatnonzero(self.item_brand == index))

    def category_rows(self, category_id: str) -> np.ndarray:
        """The rows of the items listed under ``category_id`` or any of its subcategories, ascending."""
        if category_id not in self.category_index:  # never cached, as for brands
            return np.zeros(0, dtype=np.int64)
        pairs = self.item_category_pairs
        return self._rows(
            ("category", category_id),
            lambda: np.unique(pairs[np.isin(pairs[:, 1], self.subtree(category_id)), 0]),
        )

    def _rows(self, key: tuple[str, str], find: Callable[[], np.ndarray]) -> np.ndarray:
        rows = self._row_cache.get(key)
        if rows is None:
            rows = np.asarray(find(), dtype=np.int64)
            rows.flags.writeable = False
            self._row_cache[key] = rows
        return rows

    def brand_mask(self, brand_id: str) -> np.ndarray:
        """Items made by ``brand_id`` (a new array)."""
        return self._mask_of(self.brand_rows(brand_id))

    def category_mask(self, category_id: str) -> np.ndarray:
        """Items listed under ``category_id`` or any of its subcategories (a new array)."""
        return self._mask_of(self.category_rows(category_id))

    def _mask_of(self, rows: np.ndarray) -> np.ndarray:
        mask = np.zeros(self.n_items, dtype=bool)
        mask[rows] = True
        return mask

    def mask(
        self,
        brand: str | None = None,
        category: str | None = None,
        min_price: float | None = None,
        max_price: float | None = None,
    ) -> np.ndarray | None:
        """Items that pass every given filter (None when no filter is given).

        An item with an unknown price fails any price filter.
        """
        masks: list[np.ndarray] = []
        if brand is not None:
            masks.append(self.brand_mask(brand))
        if category is not None:
            masks.append(self.category_mask(category))
        if min_price is not None or max_price is not None:
            price = self.item_price
            with np.errstate(invalid="ignore"):
                low = price >= min_price if min_price is not None else ~np.isnan(price)
                high = price <= max_price if max_price is not None else ~np.isnan(price)
            masks.append(low & high)
        if not masks:
            return None
        result = masks[0]  # each a new array
        for extra in masks[1:]:
            result &= extra
        return result

    def extended(
        self,
        brands: Sequence[str | None],
        categories: Sequence[Sequence[str]],
        prices: Sequence[float | None],
    ) -> ItemFacts:
        """These facts plus new items appended at the end (unknown brands and categories are added)."""
        brand_ids = list(self.brand_ids)
        brand_index = dict(self.brand_index)
        category_ids = list(self.category_ids)
        category_index = dict(self.category_index)
        new_brand = np.full(len(brands), -1, dtype=np.int64)
        for k, brand in enumerate(brands):
            if brand:
                if brand not in brand_index:
                    brand_index[brand] = len(brand_ids)
                    brand_ids.append(brand)
                new_brand[k] = brand_index[brand]
        pairs: list[tuple[int, int]] = []
        for k, item_categories in enumerate(categories):
            for category in item_categories:
                if category not in category_index:
                    category_index[category] = len(category_ids)
                    category_ids.append(category)
                pairs.append((self.n_items + k, category_index[category]))
        new_price = np.array([np.nan if p is None else float(p) for p in prices], dtype=np.float32)
        return ItemFacts(
            brand_ids=brand_ids,
            item_brand=np.concatenate([self.item_brand, new_brand]),
            category_ids=category_ids,
            item_category_pairs=np.concatenate(
                [self.item_category_pairs, np.array(pairs, dtype=np.int64).reshape(-1, 2)]
            ),
            category_parent_pairs=self.category_parent_pairs,
            item_price=np.concatenate([self.item_price, new_price]),
        )

    def brand_of(self, row: int) -> str | None:
        """Item ``row``'s brand id (None: none, or a row these facts do not describe)."""
        brand = int(self.item_brand[row]) if 0 <= row < self.n_items else -1
        return self.brand_ids[brand] if brand >= 0 else None

    def category_ids_of(self, row: int) -> frozenset[str]:
        """The ids of the categories item ``row`` is listed under."""
        return frozenset(self.category_ids[c] for c in self.categories_of(row))

    def replaced(
        self,
        items: Mapping[int, tuple[str | None, Sequence[str]]],
        links: Iterable[tuple[str, str]] = (),
    ) -> ItemFacts:
        """These facts with the brand and categories of the rows in ``items`` (row → (brand id or
        None, category ids)) replaced and the category links ``links`` ((child id, parent id), not
        already held) added; brand and category ids these facts lack are appended to their lists.

        Costs a copy of the per-item arrays, never a Python pass over every item.
        """
        brand_ids, category_ids = list(self.brand_ids), list(self.category_ids)
        brand_index = _Appending(brand_ids, self.brand_index)
        category_index = _Appending(category_ids, self.category_index)

        item_brand = self.item_brand.copy()
        new_pairs: list[tuple[int, int]] = []
        for row, (brand, item_categories) in items.items():
            item_brand[row] = -1 if brand is None else brand_index(brand)
            new_pairs += [(row, category_index(c)) for c in dict.fromkeys(item_categories)]
        # by item, so the new facts' categories_of needs no sort: the kept pairs, the new ones inserted
        by_item, by_category = self._categories_by_item
        pairs = np.stack([by_item, by_category], axis=1).astype(self.item_category_pairs.dtype, copy=False)
        if items:
            drop = np.zeros(self.n_items, dtype=bool)
            drop[np.fromiter(items, dtype=np.int64, count=len(items))] = True
            pairs = pairs[~drop[pairs[:, 0]]]
        added = np.array(sorted(new_pairs), dtype=pairs.dtype).reshape(-1, 2)
        pairs = np.insert(pairs, np.searchsorted(pairs[:, 0], added[:, 0], side="right"), added, axis=0)
        new_links = [(category_index(child), category_index(parent)) for child, parent in links]
        return ItemFacts(
            brand_ids=brand_ids,
            item_brand=item_brand,
            category_ids=category_ids,
            item_category_pairs=pairs,
            category_parent_pairs=np.concatenate(
                [
                    self.category_parent_pairs,
                    np.array(new_links, dtype=self.category_parent_pairs.dtype).reshape(-1, 2),
                ]
            )
            if new_links
            else self.category_parent_pairs,
            item_price=self.item_price,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The facts as named arrays, for the model artifact."""
        return {
            "facts.brand_ids": np.array(self.brand_ids, dtype=str),
            "facts.item_brand": self.item_brand,
            "facts.category_ids": np.array(self.category_ids, dtype=str),
            "facts.item_category_pairs": self.item_category_pairs,
            "facts.category_parent_pairs": self.category_parent_pairs,
            "facts.item_price": self.item_price,
        }

    @classmethod
    def from_arrays(cls, stored: object, n_items: int) -> ItemFacts:
        """Read facts written by :meth:`arrays` (empty facts for an artifact without them)."""
        if "facts.item_brand" not in stored.files:  # type: ignore[attr-defined]
            return cls.empty(n_items)
        get = stored.__getitem__  # type: ignore[attr-defined]
        return cls(
            brand_ids=get("facts.brand_ids").tolist(),
            item_brand=get("facts.item_brand"),
            category_ids=get("facts.category_ids").tolist(),
            item_category_pairs=get("facts.item_category_pairs").reshape(-1, 2),
            category_parent_pairs=get("facts.category_parent_pairs").reshape(-1, 2),
            item_price=get("facts.item_price").astype(np.float32),
        )
