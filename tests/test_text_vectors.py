"""The text-embedding cache of a serving process: reuse without keeping anyone's words."""

from __future__ import annotations

import numpy as np

from kgrec.text_model import encode
from kgrec.topics import TextVectors


def test_the_cache_reuses_vectors_and_holds_no_text() -> None:
    review = "my sister's wedding: this lipstick lasted all night"
    vectors = TextVectors(size=2)
    first = vectors.embed([review, "red matte lipstick", review])
    assert np.allclose(first[0], encode([review])[0], atol=1e-5)
    assert np.array_equal(first[0], first[2])
    again = vectors.embed([review])
    assert np.array_equal(again[0], first[0])
    held = vectors.held()
    assert len(held) == 2
    # an erased user's review must not stay readable in the process: only digests are kept
    assert all(isinstance(key, bytes) and review.encode() not in key for key in held)
    vectors.embed(["a", "b", "c"])
    assert len(vectors.held()) == 2
    assert vectors.embed([]).shape == (0, first.shape[1])
