"""How boosts, buries and pins reorder a ranking (the pure functions behind the rules' HTTP tests)."""

from __future__ import annotations

import numpy as np

from kgrec.rules import Compiled, RequestContext, Rule, apply_pins, apply_scores

ITEMS = [f"i{n}" for n in range(8)]
INDEX = {item: row for row, item in enumerate(ITEMS)}
RANKED = [(item, 10.0 - row) for row, item in enumerate(ITEMS)]  # i0 first


def pin(rule_id: str, item: str, position: int, condition: tuple[str, str] | None = None) -> tuple[Rule, int]:
    kind, value = condition or (None, None)
    rule = Rule(rule_id, "pin", "item", item, None, position, None, kind, value, None, None, "both")
    return rule, INDEX[item]


def compiled(pins: list[tuple[Rule, int]] = (), factor: np.ndarray | None = None) -> Compiled:
    return Compiled(None, factor, {}, sorted(pins, key=lambda p: (p[0].position, p[0].id)), float("inf"))


def test_every_pin_lands_at_its_position_even_when_a_later_pin_moves_an_item_above_it() -> None:
    # i1 is pinned to 5 and sits above position 3, where i6 is pinned: placing one by one would
    # shift i6 up to 2 when i1 leaves its place.
    pinned_by: dict[str, list[str]] = {}
    rules = compiled([pin("to-3", "i6", 3), pin("to-5", "i1", 5)])
    ranked = apply_pins(list(RANKED), ITEMS, rules, RequestContext(), None, set(), pinned_by)
    order = [item for item, _ in ranked]
    assert order.index("i6") == 2 and order.index("i1") == 4
    assert sorted(order) == sorted(ITEMS)  # moved, never duplicated
    assert [i for i in order if i not in ("i1", "i6")] == ["i0", "i2", "i3", "i4", "i5", "i7"]
    assert pinned_by == {"i6": ["to-3"], "i1": ["to-5"]}


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
    pinned_by: dict[str, list[str]] = {}
    ranked = apply_pins(list(RANKED), ITEMS, rules, RequestContext(brand="Other"), allowed, {"i7"}, pinned_by)
    assert [item for item, _ in ranked][:3] == ["i0", "i3", "i1"]
    assert pinned_by == {"i3": ["ok"]}


def test_boosts_and_buries_rescore_and_keep_ties_in_order() -> None:
    factor = np.ones(len(ITEMS))
    factor[INDEX["i7"]] = 4.0  # 3 -> 12: first
    factor[INDEX["i0"]] = 0.5  # 10 -> 5: ties with i5, stays before it (stable)
    ranked = apply_scores([*RANKED, ("unknown", 0.5)], INDEX, compiled(factor=factor))
    assert [item for item, _ in ranked][:3] == ["i7", "i1", "i2"]
    assert [item for item, _ in ranked][5:7] == ["i0", "i5"]
    assert ranked[-1] == ("unknown", 0.5)


def test_a_boost_moves_a_negative_score_up() -> None:
    factor = np.ones(len(ITEMS))
    factor[INDEX["i1"]] = 2.0
    ranked = apply_scores([("i0", -1.0), ("i1", -2.0)], INDEX, compiled(factor=factor))
    assert ranked == [("i0", -1.0), ("i1", -1.0)]
