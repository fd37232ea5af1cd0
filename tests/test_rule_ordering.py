"""How boosts, buries and pins reorder a ranking (the pure functions behind the rules' HTTP tests)."""

from __future__ import annotations

import numpy as np

from kgrec.ranking import Ranking
from kgrec.rules import Compiled, RequestContext, Rule, apply_pins, apply_scores

ITEMS = [f"i{n}" for n in range(8)]
INDEX = {item: row for row, item in enumerate(ITEMS)}


def ranking(*entries: tuple[str, float]) -> Ranking:
    rows = [INDEX[item] for item, _ in entries]
    return Ranking(np.array(rows, dtype=np.int64), np.array([s for _, s in entries], dtype=np.float64))


RANKED = ranking(*[(item, 10.0 - row) for row, item in enumerate(ITEMS)])  # i0 first


def order(ranked: Ranking) -> list[str]:
    return [item for item, _ in ranked.pairs(ITEMS)]


def pin(rule_id: str, item: str, position: int, condition: tuple[str, str] | None = None) -> tuple[Rule, int]:
    kind, value = condition or (None, None)
    rule = Rule(rule_id, "pin", "item", item, None, position, None, kind, value, None, None, "both")
    return rule, INDEX[item]


def compiled(pins: list[tuple[Rule, int]] = (), factor: np.ndarray | None = None) -> Compiled:
    return Compiled(None, factor, {}, sorted(pins, key=lambda p: (p[0].position, p[0].id)), float("inf"))


def test_every_pin_lands_at_its_position_even_when_a_later_pin_moves_an_item_above_it() -> None:
    # i1 is pinned to 5 and sits above position 3, where i6 is pinned: placing one by one would
    # shift i6 up to 2 when i1 leaves its place.
    pinned_by: dict[int, list[str]] = {}
    rules = compiled([pin("to-3", "i6", 3), pin("to-5", "i1", 5)])
    ranked = order(apply_pins(RANKED, rules, RequestContext(), None, set(), pinned_by))
    assert ranked.index("i6") == 2 and ranked.index("i1") == 4
    assert sorted(ranked) == sorted(ITEMS)  # moved, never duplicated
    assert [i for i in ranked if i not in ("i1", "i6")] == ["i0", "i2", "i3", "i4", "i5", "i7"]
    assert pinned_by == {INDEX["i6"]: ["to-3"], INDEX["i1"]: ["to-5"]}


def test_two_pins_at_one_position_are_placed_in_rule_id_order() -> None:
    # the README's rule: the greater id holds the position, the other lands just below it
    pinned_by: dict[int, list[str]] = {}
    rules = compiled([pin("b", "i6", 1), pin("a", "i5", 1)])
    ranked = order(apply_pins(RANKED, rules, RequestContext(), None, set(), pinned_by))
    assert ranked[:3] == ["i6", "i5", "i0"]
    assert pinned_by == {INDEX["i5"]: ["a"], INDEX["i6"]: ["b"]}


def test_a_pinned_item_outside_the_ranking_is_brought_in_with_its_neighbours_score() -> None:
    pinned_by: dict[int, list[str]] = {}
    short = ranking(("i0", 3.0), ("i1", 2.0), ("i2", 1.0))
    ranked = apply_pins(short, compiled([pin("bring", "i7", 2)]), RequestContext(), None, set(), pinned_by)
    assert ranked.pairs(ITEMS) == [("i0", 3.0), ("i7", 2.0), ("i1", 2.0), ("i2", 1.0)]


def test_a_pin_on_a_page_before_the_ranking_is_not_placed_and_its_item_keeps_its_rank() -> None:
    # a new user's later page: 3 items were shown before this ranking's first. Pins within them
    # belong to that page; their items, not shown there (the pins came after it was served: what it
    # showed is excluded), keep their ranks rather than vanish from every later page
    pinned_by: dict[int, list[str]] = {}
    rules = compiled(
        [pin("at-2", "i6", 2), pin("at-3", "i7", 3), pin("at-5", "i5", 5), pin("again", "i4", 1)]
    )
    rules.pins.append((pin("later", "i4", 6)[0], INDEX["i4"]))  # i4 pinned twice: the later pin wins
    ranked = order(apply_pins(RANKED, rules, RequestContext(), None, set(), pinned_by, shown_before=3))
    assert ranked == ["i0", "i5", "i4", "i1", "i2", "i3", "i6", "i7"]  # positions 5 and 6 less 3
    assert pinned_by == {INDEX["i5"]: ["at-5"], INDEX["i4"]: ["later"]}


def test_pins_skip_excluded_unavailable_and_unmatched_items() -> None:
    allowed = np.ones(len(ITEMS), dtype=bool)
    allowed[INDEX["i5"]] = False
    rules = compiled(
        [
            pin("seen", "i7", 1),
            pin("gone", "i5", 1),
            pin("other", "i4", 1, ("brand", "Acme")),
            pin("ok", "i3", 2),
        ]
    )
    pinned_by: dict[int, list[str]] = {}
    context = RequestContext(brand="Other")
    ranked = apply_pins(RANKED, rules, context, allowed, {INDEX["i7"]}, pinned_by)
    assert order(ranked)[:3] == ["i0", "i3", "i1"]
    assert pinned_by == {INDEX["i3"]: ["ok"]}


def test_boosts_and_buries_rescore_and_keep_ties_in_order() -> None:
    factor = np.ones(len(ITEMS) - 1)  # i7 was folded in after the rules were compiled: no factor
    factor[INDEX["i6"]] = 4.0  # 4 -> 16: first
    factor[INDEX["i0"]] = 0.5  # 10 -> 5: ties with i5, stays before it (stable)
    ranked = apply_scores(RANKED, compiled(factor=factor))
    assert order(ranked)[:3] == ["i6", "i1", "i2"]
    assert order(ranked)[5:7] == ["i0", "i5"]
    assert ranked.pairs(ITEMS)[-1] == ("i7", 3.0)


def test_a_boost_moves_a_negative_score_up() -> None:
    factor = np.ones(len(ITEMS))
    factor[INDEX["i1"]] = 2.0
    ranked = apply_scores(ranking(("i0", -1.0), ("i1", -2.0)), compiled(factor=factor))
    assert ranked.pairs(ITEMS) == [("i0", -1.0), ("i1", -1.0)]


def test_pins_match_the_plain_rule_on_random_rankings() -> None:
    """Every pinned item leaves the list, then each is inserted at its position in placing order."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        size = int(rng.integers(0, 8))
        rows = rng.permutation(len(ITEMS))[:size]
        ranked = Ranking(rows.astype(np.int64), np.sort(rng.normal(size=size))[::-1].copy())
        chosen = rng.choice(len(ITEMS), size=int(rng.integers(1, 4)), replace=False)
        pins = [pin(f"p{n}", ITEMS[row], int(rng.integers(1, 10))) for n, row in enumerate(chosen)]
        rules = compiled(pins)
        got = apply_pins(ranked, rules, RequestContext(), None, set(), {})
        plain = list(zip(ranked.rows.tolist(), ranked.scores.tolist(), strict=True))
        placed = {row: rule.position - 1 for rule, row in rules.pins}
        own = dict(plain)
        rest = [entry for entry in plain if entry[0] not in placed]
        for row, at in placed.items():
            score = own.get(row, rest[min(at, len(rest) - 1)][1] if rest else 0.0)
            rest.insert(min(at, len(rest)), (row, score))
        assert list(zip(got.rows.tolist(), got.scores.tolist(), strict=True)) == rest


def test_interest_conditions_read_the_users_interests_once_per_request() -> None:
    reads: list[int] = []

    def interests() -> set[str]:
        reads.append(1)
        return {"Acme"}

    rules = compiled(
        [pin(f"p{n}", ITEMS[n], n + 1, ("interest", "Acme" if n % 2 else "Other")) for n in range(1, 7)]
    )
    pinned_by: dict[int, list[str]] = {}
    ranked = apply_pins(RANKED, rules, RequestContext(interests=interests), None, set(), pinned_by)
    assert len(reads) == 1  # one graph read, however many pins have an interest condition
    assert sorted(pinned_by) == [1, 3, 5]
    assert order(ranked)[1] == "i1"
