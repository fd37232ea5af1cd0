"""A catalogue snapshot derived from the one before it (re-reading only the items a write changed)
hides and prices exactly as one built from every changed item."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from kgrec.catalogue import CatalogueSnapshot, ItemState
from kgrec.item_facts import ItemFacts

NOW = 1_700_000_000_000


@dataclass
class Trained:
    """A model's parameters: when its graph was pulled (none for models trained before that was
    recorded)."""

    parameters: dict = field(default_factory=dict)


@dataclass
class Items:
    """What a snapshot needs of a model: its item rows, the prices it learnt and its parameters."""

    facts: ItemFacts
    item_index: dict[str, int]
    artifacts: Trained = field(default_factory=Trained)


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


BRANDS = ["Acme", "Tami", "Zed"]
CATEGORIES = ["Beauty", "Makeup", "Lips", "Hair", "Skin"]
TREE = [("Makeup", "Beauty"), ("Lips", "Makeup"), ("Hair", "Beauty")]  # Skin: a root


def trained_facts(n: int) -> ItemFacts:
    """A model's facts: item k of brand k % 3 (none for every seventh), in one or two categories."""
    index = {c: k for k, c in enumerate(CATEGORIES)}
    pairs = [(k, k % 5) for k in range(n)] + [(k, 0) for k in range(0, n, 4)]
    return ItemFacts(
        brand_ids=list(BRANDS),
        item_brand=np.array([-1 if k % 7 == 0 else k % 3 for k in range(n)], dtype=np.int64),
        category_ids=list(CATEGORIES),
        item_category_pairs=np.array(pairs, dtype=np.int64),
        category_parent_pairs=np.array([(index[c], index[p]) for c, p in TREE], dtype=np.int64),
        item_price=np.zeros(n, dtype=np.float32),
    )


def facts_by_id(facts: ItemFacts) -> tuple[list[str | None], list[frozenset[str]], set[tuple[str, str]]]:
    """Facts as ids: each row's brand and categories, and the tree's links (index orders aside)."""
    ids = facts.category_ids
    links = {(ids[c], ids[p]) for c, p in facts.category_parent_pairs.tolist()}
    rows = range(facts.n_items)
    return [facts.brand_of(r) for r in rows], [facts.category_ids_of(r) for r in rows], links


def below(category: str, links: set[tuple[str, str]]) -> set[str]:
    found, frontier = {category}, {category}
    while frontier:
        frontier = {c for c, p in links if p in frontier} - found
        found |= frontier
    return found


def test_a_derived_snapshot_lays_brands_and_categories_over_as_a_fresh_one() -> None:
    """Random writes of brands, categories and category paths (new ids among them): the facts a
    derived snapshot lays over each model equal those built from every changed item, and what the
    graph then holds; a write that changes no brand or category keeps the very same facts."""
    rng = random.Random(11)
    n = 40
    model = Items(trained_facts(n), {f"i{k}": k for k in range(n)})
    other = Items(trained_facts(n), {f"i{k}": n - 1 - k for k in range(n)})  # another version's rows
    graph_links = set(TREE)  # what the graph's tree holds (the catalogue API only adds links)
    truth: dict[str, dict[str, tuple[str | None, frozenset[str]]]] = {"model": {}, "other": {}}
    for served, name in ((model, "model"), (other, "other")):
        for item_id, row in served.item_index.items():
            truth[name][item_id] = (served.facts.brand_of(row), served.facts.category_ids_of(row))
    items: dict[str, ItemState] = {}
    read_links: set[tuple[str, str]] = set()
    snapshot = CatalogueSnapshot()
    kept = 0
    for revision in range(1, 60):
        changed = [f"i{rng.randrange(n + 5)}" for _ in range(rng.randrange(1, 4))]
        facts_only_prices = rng.random() < 0.3 and all(item_id in items for item_id in changed)
        for item_id in changed:
            if facts_only_prices and item_id in items:  # a price change: brand and categories as read
                items[item_id] = ItemState(rng.random(), True, None, None, *_facts_of(items[item_id]))
                continue
            brand = rng.choice([None, *BRANDS, "New1", "New2"])
            path = rng.sample([*CATEGORIES, "N1", "N2", "N3"], rng.randrange(0, 4))
            graph_links.update(
                (child, parent)
                for child, parent in zip(path[1:], path, strict=False)
                if parent not in below(child, graph_links)  # the API refuses a path that loops
            )
            state_links = tuple(sorted((c, p) for c, p in graph_links if c in path))
            items[item_id] = ItemState(1.0, True, None, None, brand, tuple(sorted(path)), state_links)
            for name in truth:
                truth[name][item_id] = (brand, frozenset(path))
        for item_id in changed:
            read_links.update(items[item_id].category_links)
        snapshot.previous = None
        before = snapshot
        snapshot = CatalogueSnapshot(revision, dict(items), tuple(changed), before, frozenset(read_links))
        fresh = CatalogueSnapshot(revision, dict(items), links=frozenset(read_links))
        for served in rng.sample([model, other], rng.randrange(1, 3)):
            derived, built = snapshot.facts(served), fresh.facts(served)
            assert facts_by_id(derived) == facts_by_id(built)
            name = "model" if served is model else "other"
            by_row = {row: truth[name][item_id] for item_id, row in served.item_index.items()}
            assert facts_by_id(derived)[:2] == (
                [by_row[r][0] for r in range(n)],
                [by_row[r][1] for r in range(n)],
            )
            links = facts_by_id(derived)[2]
            assert links == graph_links & (set(TREE) | read_links)
            for brand in [*BRANDS, "New1", "New2"]:
                expected = [r for r in range(n) if by_row[r][0] == brand]
                assert np.flatnonzero(derived.brand_mask(brand)).tolist() == expected
            for category in [*CATEGORIES, "N1", "N2", "N3"]:
                under = below(category, links)
                expected = [r for r in range(n) if by_row[r][1] & under]
                assert np.flatnonzero(derived.category_mask(category)).tolist() == expected
                assert np.flatnonzero(built.category_mask(category)).tolist() == expected
            if facts_only_prices and id(served) in {id(s.model) for s in before._states.values()}:
                assert derived is before.facts(served)  # nothing to lay over anew: same object
                kept += 1
    assert kept > 0


def _facts_of(state: ItemState) -> tuple[str | None, tuple[str, ...] | None, tuple[tuple[str, str], ...]]:
    return state.brand, state.categories, state.category_links


def test_a_model_trained_after_a_catalogue_write_keeps_the_brand_and_categories_it_learnt() -> None:
    # i0 was written by the catalogue API at NOW, then an event added a category (no revision
    # moves for events): a model pulled after both learnt the graph's, and the stale state read
    # at NOW must not be laid over it; a write after the pull is.
    facts = trained_facts(4)
    pulled = NOW + 1_000
    fresh_model = Items(facts, {f"i{k}": k for k in range(4)}, Trained({"data_until": pulled}))
    old_model = Items(facts, {f"i{k}": k for k in range(4)})  # trained before models recorded it
    stale = ItemState(1.0, True, None, None, "Zed", ("Skin",), (), NOW)
    later = ItemState(1.0, True, None, None, "Zed", ("Skin",), (), pulled + 1)
    assert CatalogueSnapshot(1, {"i0": stale}).facts(fresh_model) is facts
    for model, state in ((fresh_model, later), (old_model, stale)):
        laid = CatalogueSnapshot(1, {"i0": state}).facts(model)
        assert laid.brand_of(0) == "Zed" and laid.category_ids_of(0) == frozenset({"Skin"})


def test_brand_and_category_filters_keep_rows_not_a_mask_per_id() -> None:
    """A client walking ``?brand=`` over every brand made the facts keep one catalogue-long mask per
    brand (brands × items bytes); the rows kept now add up to the items, and each mask is new."""
    n, brands = 5_000, 500
    facts = ItemFacts(
        brand_ids=[f"b{k}" for k in range(brands)],
        item_brand=np.arange(n, dtype=np.int64) % brands,
        category_ids=list(CATEGORIES),
        item_category_pairs=trained_facts(n).item_category_pairs,
        category_parent_pairs=trained_facts(n).category_parent_pairs,
        item_price=np.zeros(n, dtype=np.float32),
    )
    for k in range(brands):
        mask = facts.brand_mask(f"b{k}")
        assert np.flatnonzero(mask).tolist() == list(range(k, n, brands))
        mask[:] = True  # a caller's change reaches no other caller
        assert facts.brand_mask(f"b{k}").sum() == n // brands
    makeup = facts.category_mask("Makeup")  # Makeup and Lips below it
    assert np.flatnonzero(makeup).tolist() == [k for k in range(n) if k % 5 in (1, 2)]
    assert facts.category_rows("Makeup").tolist() == np.flatnonzero(makeup).tolist()
    kept = sum(rows.nbytes for rows in facts._row_cache.values())
    assert kept <= 8 * (n + len(facts.item_category_pairs))  # before: 500 × 5,000 bytes for the brands
    assert not facts.brand_mask("no-such-brand").any() and ("brand", "no-such-brand") not in facts._row_cache


def test_an_erasures_copy_of_the_model_takes_the_catalogue_state_held() -> None:
    """An erasure's copy of the served model has the same items and facts: its catalogue state is
    the one held, not laid over again from every item the catalogue API ever changed (a Python
    pass: 1.3 s at 1M items, in every process, after every erasure)."""
    rng = random.Random(5)
    n = 40
    model = Items(trained_facts(n), {f"i{k}": k for k in range(n)})
    items = {f"i{k}": some_state(rng) for k in range(0, n, 3)}
    snapshot = CatalogueSnapshot(1, items, tuple(items))
    facts, hidden = snapshot.facts(model), snapshot.hidden(model, NOW).tolist()
    prices = snapshot._state(model).price
    copy = Items(model.facts, model.item_index)  # what with_popularity makes: other counts only
    assert snapshot.facts(copy) is facts and snapshot._state(copy).price is prices
    assert snapshot.hidden(copy, NOW).tolist() == hidden
    assert len(snapshot._states) == 1  # the copy's state replaces the model's
    # the next snapshot derives the copy's state from the one held, re-reading the changed item
    after = CatalogueSnapshot(2, {**items, "i4": ItemState(9.0, True, None, None)}, ("i4",), snapshot)
    again = Items(model.facts, model.item_index)
    assert after._state(again).price[4] == 9.0 and after._state(again).price[0] == prices[0]
    fresh = CatalogueSnapshot(2, after.items, tuple(after.items))
    np.testing.assert_array_equal(after._state(again).price, fresh._state(again).price)
