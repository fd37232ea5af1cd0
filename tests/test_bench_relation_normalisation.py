"""bench/relation_normalisation.py's modes: the damped mode (knowledge reaches an item less the more it
is rated) and the gated mode (each knowledge node's message through a learnt gate)."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from bench import relation_normalisation
from bench.relation_normalisation import damped_graph, damped_matrices, graph_model_mode
from kgrec.item_graphs import popularity
from tests.test_kg_model import toy
from workers.training import kg_model
from workers.training.config import TrainConfig


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
    model = kg_model.RelationalSequenceModel
    init, forward = model.__init__, model.forward
    with graph_model_mode("gated:1"):
        assert model.__init__ is not init and model.forward is not forward
    assert (model.__init__, model.forward, kg_model.build_typed_graph) == (init, forward, code)


def test_gated_mode_starts_as_the_code_and_learns_a_gate_per_knowledge_node() -> None:
    graph = toy()
    typed = kg_model.build_typed_graph(graph, use_knowledge=True)
    node = typed.layout.brand_offset  # the first knowledge node
    # The same joint normalisation with the node's outgoing edges cut: it receives, never sends.
    layout, normalised = kg_model.joint_normalised(graph, use_knowledge=True)
    keep = np.ones(layout.total, dtype=np.float32)
    keep[node] = 0.0
    cut_blocks = []
    for _, matrix in normalised:
        cut = (matrix @ sp.diags(keep)).tocsr()
        cut.eliminate_zeros()
        cut_blocks.append(kg_model.relation_block(cut))
    cut_graph = kg_model.TypedGraph(layout, [name for name, _ in normalised], cut_blocks)
    layers = 3  # several layers, so that a gate must hold at every one of them
    torch.manual_seed(0)
    plain = kg_model.RelationalSequenceModel(typed, 8, layers, None)
    with torch.no_grad():
        code, silent = plain(typed, None), plain(cut_graph, None)
    with graph_model_mode("gated:1"):
        torch.manual_seed(0)
        gated = kg_model.RelationalSequenceModel(typed, 8, layers, None)
        knowledge_nodes = typed.layout.total - typed.layout.brand_offset
        assert gated.knowledge_gate_logits.shape == (knowledge_nodes,) and knowledge_nodes >= 2
        # a parameter of the model: the optimiser trains it, and the best epoch's state keeps it
        assert "knowledge_gate_logits" in dict(gated.named_parameters())
        assert "knowledge_gate_logits" in gated.state_dict()
        # every gate open at 1 (softplus(0.5413) = 1 - 2e-5): the code's embeddings
        opened = gated(typed, None)
        torch.testing.assert_close(opened, code, rtol=1e-4, atol=1e-6)
        # the gate reaches the loss, so training moves it
        opened[typed.layout.item_offset].sum().backward()
        assert gated.knowledge_gate_logits.grad[0].abs() > 0
        # a closed gate: at every layer the node sends nothing, as if its outgoing edges were cut
        with torch.no_grad():
            gated.knowledge_gate_logits[0] = -40.0
            closed = gated(typed, None)
        torch.testing.assert_close(closed, silent, rtol=1e-4, atol=1e-6)
        assert not torch.allclose(closed, code)  # the node did send something
        config = replace(TrainConfig(use_knowledge=True, use_text=False), seed=3)
        trained = kg_model.train_kg_model(graph, config, "cpu", epochs=2)
    assert trained.items.shape[0] == graph.n_items and np.isfinite(trained.items).all()


def run_main(module: object, modes: str, empty: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``module``'s main on MovieLens in an empty data sets folder: reading the data set fails."""
    argv = ["bench", "--dataset", "movielens", "--datasets-dir", str(empty), "--modes", modes]
    monkeypatch.setattr(sys, "argv", argv)
    module.main()  # type: ignore[attr-defined]


@pytest.mark.parametrize("modes", ["none,joint", "none,relaton:0.1", "joint:0", "damped:x"])
def test_a_mode_it_cannot_run_is_refused_before_any_data_is_read(
    modes: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # it used to be refused (or fail unpacking) only at its turn: after the import, the text
    # embedding and every earlier mode's training
    with pytest.raises(SystemExit) as exited:
        run_main(relation_normalisation, modes, tmp_path, monkeypatch)
    assert exited.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert "--modes" in error and repr(modes.split(",")[-1]) in error


def test_every_mode_it_can_run_gets_past_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(FileNotFoundError, match="movielens"):  # the data set, read after the options
        run_main(
            relation_normalisation,
            "none,joint:1,relation:0.1,joint:0.1,damped:1,gated:1",
            tmp_path,
            monkeypatch,
        )
