"""Remembered item neighbours answer exactly what scoring every item answers."""

from __future__ import annotations

import numpy as np
import pytest

from kgrec.item_facts import ItemFacts
from kgrec.nearest_items import NearestItems
from kgrec.ranking import top_of


def unit_rows(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def brute_force(embeddings: np.ndarray, index: int, k: int, allowed: np.ndarray | None) -> list[int]:
    scores = embeddings @ embeddings[index]
    if allowed is not None:
        scores = np.where(allowed, scores, -np.inf)
    scores[index] = -np.inf
    return top_of(scores, k).rows.tolist()


@pytest.mark.parametrize("share", [1.0, 0.5, 0.05, 0.0])
def test_masked_answers_match_scoring_every_item(share: float) -> None:
    """Masks that keep most items are answered from memory; sparse ones fall back to every item."""
    embeddings = unit_rows(2_000)
    nearest = NearestItems(embeddings, depth=50, items=100)
    rng = np.random.default_rng(1)
    for index in rng.integers(0, 2_000, size=60).tolist():
        allowed = None if share == 1.0 else rng.random(2_000) < share
        for k in (1, 10, 50):
            assert nearest.rank(index, k, allowed).rows.tolist() == brute_force(embeddings, index, k, allowed)
            assert nearest.rank(index, k, allowed).rows.tolist() == brute_force(embeddings, index, k, allowed)


def test_more_than_the_depth_scores_every_item() -> None:
    embeddings = unit_rows(500)
    nearest = NearestItems(embeddings, depth=20)
    assert nearest.rank(3, 40).rows.tolist() == brute_force(embeddings, 3, 40, None)


def test_a_catalogue_smaller_than_the_depth_is_answered_whole() -> None:
    embeddings = unit_rows(6)
    nearest = NearestItems(embeddings, depth=20)
    allowed = np.array([True, False, True, True, False, True])
    assert nearest.rank(0, 10, allowed).rows.tolist() == brute_force(embeddings, 0, 10, allowed)
    assert 0 not in nearest.rank(0, 10).rows.tolist()


def test_memory_is_bounded_least_recently_used_first() -> None:
    nearest = NearestItems(unit_rows(50), depth=5, items=3)
    for index in (1, 2, 3, 1, 4):
        nearest.rank(index, 5)
    assert list(nearest._known) == [3, 1, 4]


def test_categories_of_an_item() -> None:
    facts = ItemFacts(
        brand_ids=[],
        item_brand=np.full(4, -1),
        category_ids=["a", "b", "c"],
        item_category_pairs=np.array([[2, 0], [0, 1], [2, 2], [0, 0]]),
        category_parent_pairs=np.zeros((0, 2), dtype=np.int64),
        item_price=np.full(4, np.nan, dtype=np.float32),
    )
    assert [sorted(facts.categories_of(row)) for row in range(4)] == [[0, 1], [], [0, 2], []]
