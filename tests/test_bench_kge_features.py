"""bench/kge_features.py: the knowledge triples TransE learns from, and the item features it gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bench.kge_features as kge
from kgrec.training_graph import TrainingGraph
from tests.test_bench_relation_normalisation import run_main


def shop() -> TrainingGraph:
    """Six items bought by four users; items 0, 1, 3 and 4 are in category 0 or 1 by parity, item 0
    has a brand, items 0 and 1 an entity ``maker`` (made_by); items 2 and 5 have no knowledge."""
    return TrainingGraph(
        user_ids=[f"u{u}" for u in range(4)],
        item_ids=[f"i{i}" for i in range(6)],
        inter_user=np.array([0, 0, 1, 1, 2, 3]),
        inter_item=np.array([0, 4, 1, 5, 2, 3]),
        inter_weight=np.ones(6),
        inter_order=np.array([0, 1, 0, 1, 0, 0]),
        brand_ids=["acme"],
        item_brand=np.array([0, -1, -1, -1, -1, -1]),
        category_ids=["even", "odd"],
        item_category_pairs=np.array([[0, 0], [1, 1], [4, 0], [3, 1]]),
        entity_ids=["maker"],
        entity_kinds=["company"],
        relation_names=["made_by"],
        kg_triples=np.array([[0, 0, 6], [1, 0, 6]]),
    )


def test_the_triples_are_the_knowledge_edges_and_no_interaction() -> None:
    graph = shop()
    layout, triples = kge.knowledge_triples(graph)
    item, entity = layout.item_offset, layout.entity_offset
    edges = {(int(h), int(t)) for h, _, t in triples}
    assert edges == {
        (item + 0, layout.brand_offset),
        *((item + i, layout.category_offset + i % 2) for i in (0, 1, 3, 4)),
        (item + 0, entity),
        (item + 1, entity),
    }
    assert len(set(triples[:, 1])) == 3  # produced_by, belongs_to, made_by
    assert not np.isin(triples[:, [0, 2]], np.arange(layout.users)).any()


def test_items_with_knowledge_get_unit_features_and_the_others_none() -> None:
    features = kge.transe_item_features(shop(), seed=3)
    assert features.shape == (6, kge.KGE_DIM)
    np.testing.assert_allclose(np.linalg.norm(features[[0, 1, 3, 4]], axis=1), 1.0, rtol=1e-5)
    assert not features[[2, 5]].any()
    np.testing.assert_array_equal(features, kge.transe_item_features(shop(), seed=3))


def test_a_mode_is_a_graph_model_mode_with_or_without_transe_checked_before_any_data_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:  # used to fail after TransE had trained, at its turn
        run_main(kge, "joint:1+transe,bogus+transe", tmp_path, monkeypatch)
    assert exited.value.code == 2 and "'bogus'" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="movielens"):  # the data set, read after the options
        run_main(kge, "none,joint:1,joint:1+transe,none+transe", tmp_path, monkeypatch)
