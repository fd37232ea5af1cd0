"""bench/relation_normalisation.py's damped mode: knowledge reaches an item less the more it is rated."""

from __future__ import annotations

import numpy as np
import pytest

from bench.relation_normalisation import damped_graph, damped_matrices, graph_model_mode
from kgrec.item_graphs import popularity
from tests.test_kg_model import toy
from workers.training import kg_model


def test_damped_mode_scales_only_the_knowledge_items_receive() -> None:
    graph = toy()
    joint = kg_model.build_typed_graph(graph, use_knowledge=True)
    layout, damped = damped_matrices(graph, use_knowledge=True)
    assert joint.relations == [name for name, _ in damped]
    received = 1.0 / np.sqrt(1.0 + popularity(graph))
    items = np.arange(layout.item_offset, layout.item_offset + layout.items)
    knowledge = 0
    for block, (name, matrix) in zip(joint.blocks, damped, strict=True):
        plain = np.zeros(matrix.shape, dtype=np.float32)
        plain[block.rows.numpy()] = block.matrix.to_dense().numpy()
        factor = np.ones(layout.total, dtype=np.float32)
        if not name.startswith("interacted"):
            factor[items] = received
            knowledge += int(matrix[items].nnz > 0)
        np.testing.assert_allclose(matrix.toarray(), factor[:, None] * plain, rtol=1e-6, atol=1e-7)
    assert knowledge >= 2  # knowledge reached items (next, noise), and was damped there


def test_a_mode_patches_the_graph_model_only_meanwhile() -> None:
    code = kg_model.build_typed_graph
    with graph_model_mode("damped:1") as config:
        assert kg_model.build_typed_graph is damped_graph and config.use_knowledge
    assert kg_model.build_typed_graph is code
    with graph_model_mode("joint:1"):
        assert kg_model.build_typed_graph is code
    with pytest.raises(ValueError, match="'dampd:1'"), graph_model_mode("dampd:1"):
        pass
    assert kg_model.build_typed_graph is code
