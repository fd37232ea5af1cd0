"""EASE with side information (bench/ease_side_information.py): entities as extra rows of the matrix."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from bench import ease_side_information
from bench.ease_side_information import side_information_weights
from kgrec.ease import ease_weights

# Four users over four items; items 2 and 3 are never held by the same user.
MATRIX = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [1, 1, 1, 0]], dtype=np.float32))
GRAM = (MATRIX.T @ MATRIX).tocsr()
# Items × entities: items 2 and 3 share entity 0; item 0 alone has entity 1.
INCIDENCE = sp.csr_matrix(np.array([[0, 1], [0, 0], [1, 0], [1, 0]], dtype=np.float32))


def test_without_entity_rows_it_is_plain_ease() -> None:
    for weighting in ("flat", "inverse-sqrt-size"):
        weights = side_information_weights(GRAM, INCIDENCE, 2.0, 0.0, weighting)
        np.testing.assert_allclose(weights, ease_weights(MATRIX, 2.0), rtol=1e-5, atol=1e-6)


def test_a_shared_entity_links_items_no_user_holds_together() -> None:
    plain = ease_weights(MATRIX, 2.0)
    linked = side_information_weights(GRAM, INCIDENCE, 2.0, 1.0, "flat")
    assert plain[2, 3] <= 0 and plain[3, 2] <= 0
    assert linked[2, 3] > 0 and linked[3, 2] > 0
    assert np.all(np.diagonal(linked) == 0)
    # Scaled by 1/√(its items), an entity of two items pulls them together less than flat rows do.
    by_size = side_information_weights(GRAM, INCIDENCE, 2.0, 1.0, "inverse-sqrt-size")
    assert 0 < by_size[2, 3] < linked[2, 3]


def test_alphas_that_are_not_numbers_are_refused_before_any_data_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # they were read only after the import and the λ walk (minutes), between the fits
    argv = ["bench", "--dataset", "movielens", "--datasets-dir", str(tmp_path), "--alphas", "0.3,x"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exited:
        ease_side_information.main()
    assert exited.value.code == 2 and "--alphas" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", [*argv[:-1], "0.3,1"])
    with pytest.raises(FileNotFoundError, match="movielens"):  # the data set, read after the options
        ease_side_information.main()
