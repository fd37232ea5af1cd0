"""Benchmark: what a catalogue write costs the next request, by how many items were ever changed.

In process, on a synthetic catalogue of ``--items`` items of which ``--changed`` were changed
through the catalogue API before: the first ``hidden`` + ``prices`` call on a snapshot built from
every changed item (what serving did after each write until 2026-12-05) against one derived from
the snapshot before it after a write of one item (what it does now). Median of ``--repeat`` runs.

    .venv/bin/python -m bench.catalogue_snapshot [--items 64160] [--changed 8138] [--repeat 50]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass

import numpy as np

from kgrec.catalogue import CatalogueSnapshot, ItemState
from kgrec.item_facts import ItemFacts

NOW = 1_700_000_000_000


@dataclass
class Items:
    """What a snapshot needs of a model: its item rows and the prices it learnt."""

    facts: ItemFacts
    item_index: dict[str, int]


def first_call_ms(snapshot: CatalogueSnapshot, model: Items) -> float:
    started = time.perf_counter()
    snapshot.hidden(model, NOW)
    snapshot.prices(model)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64_160)
    parser.add_argument("--changed", type=int, default=8_138)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    model = Items(ItemFacts.empty(args.items), {f"i{n}": n for n in range(args.items)})
    ids = [f"i{n}" for n in rng.choice(args.items, size=args.changed, replace=False)]
    items = {i: ItemState(float(rng.uniform(1, 50)), bool(rng.random() > 0.1), None, None) for i in ids}
    full, derived = [], []
    before = CatalogueSnapshot(1, dict(items))
    first_call_ms(before, model)
    for revision in range(2, args.repeat + 2):
        written = ids[revision % len(ids)]
        items[written] = ItemState(9.5, revision % 2 == 0, None, None)
        full.append(first_call_ms(CatalogueSnapshot(revision, dict(items)), model))
        before.previous = None
        after = CatalogueSnapshot(revision, dict(items), (written,), before)
        derived.append(first_call_ms(after, model))
        before = after
    result = {
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "items": args.items,
        "changed_items": args.changed,
        "rebuilt_ms_median": round(statistics.median(full), 3),
        "derived_ms_median": round(statistics.median(derived), 3),
        "ratio": round(statistics.median(full) / statistics.median(derived), 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
