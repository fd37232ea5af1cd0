"""Benchmark: what a catalogue write costs the next request, by how many items were ever changed.

In process, on a synthetic catalogue of ``--items`` items (in ``--categories`` categories under 20
roots, ``--brands`` brands) of which ``--changed`` were changed through the catalogue API before:
the first ``hidden`` + ``prices`` + ``facts`` call on a snapshot built from every changed item
(what serving did after each write until 2026-12-05) against one derived from the snapshot before
it after a write of one item (what it does now), for a write of a price and for a write of a brand
and a category path (a new category under an existing one); then a brand filter, a category
filter and one diversity page's groups on the new facts (a block rule on a brand costs what the
brand filter does), and the request path when nothing changed. Medians of ``--repeat`` runs.

    .venv/bin/python -m bench.catalogue_snapshot [--items 64160] [--changed 8138] [--repeat 50]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from kgrec.catalogue import CatalogueSnapshot, ItemState
from kgrec.diversity import POOL, ItemGroups
from kgrec.item_facts import ItemFacts

NOW = 1_700_000_000_000
ROOTS = 20  # top-level categories; every item has a leaf below one of them


@dataclass
class Items:
    """What a snapshot needs of a model: its item rows, the facts it learnt and its parameters."""

    facts: ItemFacts
    item_index: dict[str, int]
    artifacts: Any = field(default_factory=lambda: SimpleNamespace(parameters={}))


def first_call_ms(snapshot: CatalogueSnapshot, model: Items) -> float:
    started = time.perf_counter()
    snapshot.hidden(model, NOW)
    snapshot.prices(model)
    snapshot.facts(model)
    return (time.perf_counter() - started) * 1000


def synthetic_facts(rng: np.random.Generator, n: int, n_brands: int, n_categories: int) -> ItemFacts:
    """Items in one leaf and its root each (about 2 pairs an item, as in Amazon Beauty)."""
    roots = ROOTS
    parents = [(c, c % roots) for c in range(roots, n_categories)]
    leaf = rng.integers(roots, n_categories, size=n)
    pairs = np.concatenate([np.stack([np.arange(n), leaf], 1), np.stack([np.arange(n), leaf % roots], 1)])
    return ItemFacts(
        brand_ids=[f"b{k}" for k in range(n_brands)],
        item_brand=rng.integers(-1, n_brands, size=n),
        category_ids=[f"c{k}" for k in range(n_categories)],
        item_category_pairs=pairs[np.argsort(pairs[:, 0], kind="stable")],
        category_parent_pairs=np.array(parents, dtype=np.int64).reshape(-1, 2),
        item_price=np.ones(n, dtype=np.float32),
    )


def state(rng: np.random.Generator, brand: str, categories: tuple[str, ...]) -> ItemState:
    price, available = float(rng.uniform(1, 50)), bool(rng.random() > 0.1)
    return ItemState(price, available, None, None, brand, categories)


def median_ms(times: list[float]) -> float:
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64_160)
    parser.add_argument("--changed", type=int, default=8_138)
    parser.add_argument("--brands", type=int, default=3_000)
    parser.add_argument("--categories", type=int, default=800)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    if args.repeat < 2:  # the runs alternate a price write and a brand and category write
        parser.error(f"--repeat must be at least 2 (one write of each kind), not {args.repeat}")
    if not 0 < args.changed <= args.items:
        parser.error(f"--changed must be between 1 and --items ({args.items}), not {args.changed}")
    if args.categories <= ROOTS:
        parser.error(f"--categories must be above the {ROOTS} roots, not {args.categories}")
    rng = np.random.default_rng(7)
    facts = synthetic_facts(rng, args.items, args.brands, args.categories)
    model = Items(facts, {f"i{n}": n for n in range(args.items)})
    rows = rng.choice(args.items, size=args.changed, replace=False)
    ids = [f"i{n}" for n in rows]
    # the changed items as the catalogue reads them: the brand and categories the model has
    items = {
        f"i{r}": state(rng, facts.brand_of(int(r)) or "b0", tuple(sorted(facts.category_ids_of(int(r)))))
        for r in rows
    }
    for item_id in items:
        if facts.brand_of(model.item_index[item_id]) is None:  # a brand the model lacks: laid over
            items[item_id] = state(rng, "b0", items[item_id].categories or ())
    times: dict[str, list[float]] = {name: [] for name in ("full", "price", "brand_category")}
    reads: dict[str, list[float]] = {name: [] for name in ("brand", "category", "groups", "unchanged")}
    before = CatalogueSnapshot(1, dict(items))
    first_call_ms(before, model)
    for revision in range(2, args.repeat + 2):
        written = ids[revision % len(ids)]
        kind = "price" if revision % 2 else "brand_category"
        old = items[written]
        if kind == "price":
            items[written] = ItemState(9.5, revision % 3 != 0, None, None, old.brand, old.categories)
        else:  # a new brand, and a new category under an existing one
            new = f"new{revision}"
            items[written] = ItemState(9.5, True, None, None, new, ("c21", new), ((new, "c21"),))
        links = frozenset(link for item in items.values() for link in item.category_links)
        times["full"].append(first_call_ms(CatalogueSnapshot(revision, dict(items), links=links), model))
        before.previous = None
        after = CatalogueSnapshot(revision, dict(items), (written,), before, links)
        times[kind].append(first_call_ms(after, model))
        if kind == "brand_category":
            laid = after.facts(model)
            started = time.perf_counter()
            laid.mask(brand=f"new{revision}")
            reads["brand"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            laid.mask(category="c1")
            reads["category"].append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            groups = ItemGroups(laid)
            for row in range(POOL):
                groups.categories_of(row)
            reads["groups"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        after.facts(model)  # the next request: nothing changed since
        reads["unchanged"].append((time.perf_counter() - started) * 1000)
        before = after
    result = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "items": args.items,
        "changed_items": args.changed,
        "rebuilt_ms_median": median_ms(times["full"]),
        "derived_price_write_ms_median": median_ms(times["price"]),
        "derived_brand_category_write_ms_median": median_ms(times["brand_category"]),
        "then_brand_filter_ms_median": median_ms(reads["brand"]),
        "then_category_filter_ms_median": median_ms(reads["category"]),
        "then_diversity_groups_ms_median": median_ms(reads["groups"]),
        "unchanged_facts_ms_median": round(statistics.median(reads["unchanged"]), 4),
        "ratio": round(statistics.median(times["full"]) / statistics.median(times["price"]), 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
