"""A catalogue snapshot derived from the one before it (re-reading only the items a write changed)
hides and prices exactly as one built from every changed item."""

from __future__ import annotations

import random
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


def some_state(rng: random.Random) -> ItemState:
    def when() -> int | None:
        return rng.choice([None, NOW - 5_000, NOW + 5_000, NOW + 9_000])

    return ItemState(rng.choice([None, 1.0, 2.5]), rng.choice([None, True, False]), when(), when())


def test_a_derived_snapshot_hides_and_prices_as_a_fresh_one() -> None:
    rng = random.Random(7)
    facts = ItemFacts.empty(50)
    facts.item_price[:] = np.arange(50, dtype=np.float32)
    model = Items(facts, {f"i{n}": n for n in range(50)})
    other = Items(facts, {f"i{n}": 49 - n for n in range(50)})  # another version's rows
    items: dict[str, ItemState] = {}
    snapshot = CatalogueSnapshot()
    for revision in range(1, 40):
        # a write changes a few items, some the models do not know
        changed = [f"i{rng.randrange(60)}" for _ in range(rng.randrange(1, 4))]
        for item_id in changed:
            items[item_id] = some_state(rng)
        snapshot.previous = None
        snapshot = CatalogueSnapshot(revision, dict(items), tuple(changed), snapshot)
        fresh = CatalogueSnapshot(revision, dict(items))
        for served in rng.sample([model, other], rng.randrange(1, 3)):  # not every model every time
            index = served.item_index
            for now in (NOW, NOW + 6_000, NOW + 10_000):
                expected = sorted(index[i] for i, s in items.items() if i in index and s.hidden_at(now))
                assert snapshot.hidden(served, now).tolist() == fresh.hidden(served, now).tolist() == expected
            prices = facts.item_price.astype(np.float64)
            for item_id, state in items.items():
                if item_id in index:
                    prices[index[item_id]] = np.nan if state.price is None else state.price
            np.testing.assert_array_equal(snapshot.prices(served), prices)
            np.testing.assert_array_equal(fresh.prices(served), prices)
    assert len(items) > 20
