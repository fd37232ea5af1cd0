"""The relation-aware sequence model: reproducible, learns which relation carries signal, trains where asked."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from kgrec.training_graph import TrainingGraph
from workers.training import kg_model
from workers.training.config import TrainConfig
from workers.training.kg_model import (
    build_typed_graph,
    next_item_examples,
    resolve_device,
    train_kg_model,
    user_sequences,
    validation_ndcg,
)

N_ITEMS = 40
CONFIG = TrainConfig(dim=16, layers=2, epochs=4, model_batch_size=256, model_lr=0.05, seed=3)


def toy(seed: int = 0) -> TrainingGraph:
    """Users walk items i → i+1 → i+2 …; ``next`` links each item to its successor, ``noise`` at random.

    Item 0 also has an entity (``maker``) and a brand, so every node type is present.
    """
    rng = np.random.default_rng(seed)
    users, items, order = [], [], []
    for u in range(300):
        start = int(rng.integers(0, N_ITEMS - 5))
        for step in range(5):
            users.append(u)
            items.append(start + step)
            order.append(step)
    heads = np.arange(N_ITEMS - 1)
    noise = rng.integers(0, N_ITEMS, size=(N_ITEMS, 2))
    triples = np.vstack(
        [
            np.c_[heads, np.zeros_like(heads), heads + 1],
            np.c_[noise[:, 0], np.ones(N_ITEMS, dtype=np.int64), noise[:, 1]],
            [[0, 2, N_ITEMS]],  # item 0 -[made_by]-> entity 0
        ]
    ).astype(np.int64)
    return TrainingGraph(
        user_ids=[f"u{u}" for u in range(300)],
        item_ids=[f"i{i}" for i in range(N_ITEMS)],
        inter_user=np.array(users),
        inter_item=np.array(items),
        inter_weight=np.ones(len(users)),
        inter_order=np.array(order),
        brand_ids=["acme"],
        item_brand=np.r_[0, np.full(N_ITEMS - 1, -1)],
        entity_ids=["maker"],
        entity_kinds=["company"],
        relation_names=["next", "noise", "made_by"],
        kg_triples=triples,
    )


def test_every_relation_is_typed_in_both_directions() -> None:
    typed = build_typed_graph(toy(), use_knowledge=True)
    assert typed.relations == [
        "interacted",
        "interacted^-1",
        "produced_by",
        "produced_by^-1",
        "kg:next",
        "kg:next^-1",
        "kg:noise",
        "kg:noise^-1",
        "kg:made_by",
        "kg:made_by^-1",
    ]
    assert typed.layout.entities == 1
    plain = build_typed_graph(toy(), use_knowledge=False)
    assert plain.relations == ["interacted", "interacted^-1"]


def test_propagation_is_the_relation_weighted_sum_with_its_gradients() -> None:
    """Each relation multiplied on the rows it reaches gives Σ_r w_r A_r x and its exact gradients."""
    typed = build_typed_graph(toy(), use_knowledge=True)
    total = typed.layout.total
    dense = []  # each relation's full (total × total) matrix, from its block
    for block in typed.blocks:
        full = torch.zeros(total, total)
        full[block.rows] = block.matrix.to_dense()
        transposed = torch.zeros(total, total)
        transposed[block.sources[:, None], block.rows[None, :]] = block.transpose.to_dense()
        assert torch.equal(transposed, full.T)  # each block carries its own transpose
        dense.append(full)
    assert len({tuple(b.rows.shape) for b in typed.blocks}) > 1  # relations reach different nodes
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(total, 6, generator=generator, requires_grad=True)
    weights = torch.rand(len(dense), generator=generator, requires_grad=True)
    upstream = torch.randn(total, 6, generator=generator)
    out = typed.propagate(weights, x)
    grad_x, grad_w = torch.autograd.grad(out, [x, weights], upstream)
    x_ref = x.detach().clone().requires_grad_()
    w_ref = weights.detach().clone().requires_grad_()
    reference = sum(w_ref[r] * (matrix @ x_ref) for r, matrix in enumerate(dense))
    ref_x, ref_w = torch.autograd.grad(reference, [x_ref, w_ref], upstream)
    torch.testing.assert_close(out, reference)
    torch.testing.assert_close(grad_x, ref_x)
    torch.testing.assert_close(grad_w, ref_w)


def test_training_examples_are_earlier_items_most_recent_first() -> None:
    examples = next_item_examples(toy(), window=3)
    # a user's third item is predicted from their second and first (most recent first)
    row = 1
    assert examples.target[row] == examples.context[row, 0] + 1
    assert examples.context[row, 1] == examples.context[row, 0] - 1
    assert examples.context[row, 2] == -1


def test_the_same_seed_gives_the_same_embeddings() -> None:
    graph = toy()
    first = train_kg_model(graph, CONFIG)
    second = train_kg_model(graph, CONFIG)
    other = train_kg_model(graph, replace(CONFIG, seed=4))
    assert np.array_equal(first.items, second.items)
    assert np.array_equal(first.item_context, second.item_context)
    assert first.relation_weights == second.relation_weights
    assert not np.allclose(first.items, other.items)


def test_large_catalogues_train_on_sampled_negatives_reproducibly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kg_model, "FULL_SOFTMAX_MAX_ITEMS", 10)
    monkeypatch.setattr(kg_model, "SAMPLED_NEGATIVES", 16)
    first = train_kg_model(toy(), replace(CONFIG, epochs=3))
    second = train_kg_model(toy(), replace(CONFIG, epochs=3))
    assert np.array_equal(first.items, second.items)
    assert np.all(np.isfinite(first.losses)) and first.losses[-1] < first.losses[0]


def test_an_epoch_takes_a_bounded_number_of_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each step propagates the whole graph: beyond the cap the batch grows, the steps do not."""
    assert kg_model.epoch_batch_size(1_000, 256, max_steps=32) == 256
    assert kg_model.epoch_batch_size(100_000, 256, max_steps=32) == 3_125
    steps = 0
    step = torch.optim.Adam.step

    def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal steps
        steps += 1
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counted)
    examples = next_item_examples(toy()).target.size  # 300 users x 4 later items
    train_kg_model(toy(), replace(CONFIG, epochs=2))
    assert steps == 2 * -(-examples // CONFIG.model_batch_size)  # 5 steps of 256 per epoch
    steps = 0
    monkeypatch.setattr(kg_model, "MAX_STEPS_PER_EPOCH", 2)
    capped = train_kg_model(toy(), replace(CONFIG, epochs=2))
    assert steps == 2 * 2
    assert np.all(np.isfinite(capped.losses))


def test_the_informative_relation_outweighs_the_noise() -> None:
    trained = train_kg_model(toy(), replace(CONFIG, epochs=30, use_text=False))
    weights = trained.relation_weights

    def mean(relation: str) -> float:
        return float(np.mean(weights[relation] + weights[f"{relation}^-1"]))

    assert mean("kg:next") > mean("kg:noise") + 0.1


def test_early_stopping_keeps_the_best_validation_epoch() -> None:
    graph = toy()
    validation = {u: int(graph.inter_item[graph.inter_user == u][-1]) + 1 for u in range(0, 300, 3)}
    validation = {u: i for u, i in validation.items() if i < N_ITEMS}
    trained = train_kg_model(graph, replace(CONFIG, epochs=6, patience=2), validation=validation)
    assert 1 <= trained.best_epoch <= len(trained.validation_ndcg) <= 6
    assert trained.validation_ndcg[trained.best_epoch - 1] == max(trained.validation_ndcg)


def test_the_validation_score_counts_ties_against_the_held_out_item() -> None:
    graph = toy()
    users = np.arange(0, 300, 3)
    targets = {int(u): N_ITEMS - 1 for u in users}
    sequences = user_sequences(graph)
    flat = np.ones((N_ITEMS, 4), dtype=np.float32)  # every item scores the same for everyone
    assert validation_ndcg(flat, flat, 0.7, sequences, targets, users) == 0.0
    # the held-out item tied with one other item at the top: second place
    context = np.ones((N_ITEMS, 4), dtype=np.float32)
    target = np.zeros((N_ITEMS, 4), dtype=np.float32)
    target[:, 0] = 1.0
    target[[N_ITEMS - 1, N_ITEMS - 2], 1] = 5.0
    kept = users[[N_ITEMS - 2 not in sequences[u][0] and N_ITEMS - 1 not in sequences[u][0] for u in users]]
    assert kept.size > 10
    score = validation_ndcg(target, context, 0.7, sequences, targets, kept)
    assert score == pytest.approx(1 / np.log2(3))


def test_device_auto_is_the_cpu_without_a_gpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected


def test_a_sampled_softmax_corrects_for_how_often_an_item_is_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """logQ: a popular item, drawn as the chunk's targets more often, is not penalised for it;
    another row's copy of a row's own target is not one of its negatives."""
    monkeypatch.setattr(kg_model, "SAMPLED_NEGATIVES", 4)
    n_items = 10
    share = torch.full((n_items,), 0.02)
    share[0] = 0.82  # item 0 is the target of most examples
    targets = torch.tensor([[0, 0, 3]])  # one chunk of three rows
    contexts = torch.zeros(1, 3, 2)  # every raw logit 0: what is left is the correction
    table = torch.randn(n_items, 2)
    logits, labels = kg_model.sampled_logits(
        contexts, table, targets, share, torch.Generator().manual_seed(1)
    )
    assert logits.shape == (1, 3, 3 + 4) and labels.tolist() == [[0, 1, 2]]
    logits = logits[0]
    popular = -math.log(3 * 0.82 + 4 / n_items)
    rare = -math.log(3 * 0.02 + 4 / n_items)
    assert logits[2, 0].item() == pytest.approx(popular) and logits[2, 2].item() == pytest.approx(rare)
    # rows 0 and 1 share a target: each sees its own column, and not the other's
    assert logits[0, 1].item() == -math.inf and logits[1, 0].item() == -math.inf
    assert logits[0, 0].item() == pytest.approx(popular) and logits[1, 1].item() == pytest.approx(popular)
    assert torch.isfinite(logits[2]).all()


def test_a_padded_chunk_scores_its_own_rows_as_if_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stacked with a full chunk, a short chunk's padding is neither a row nor a candidate."""
    monkeypatch.setattr(kg_model, "LOSS_CHUNK", 3)
    passes = kg_model.loss_passes(torch.arange(5), per_pass=2)
    assert [p.tolist() for p in passes] == [[[0, 1, 2], [3, 4, -1]]]
    assert [p.tolist() for p in kg_model.loss_passes(torch.arange(5), per_pass=1)] == [[[0, 1, 2]], [[3, 4]]]

    monkeypatch.setattr(kg_model, "SAMPLED_NEGATIVES", 4)
    n_items = 10
    share = torch.full((n_items,), 0.1)
    table = torch.randn(n_items, 2)
    contexts = torch.randn(2, 3, 2)
    stacked, labels = kg_model.sampled_logits(
        contexts, table, torch.tensor([[1, 2, 3], [4, 5, -1]]), share, torch.Generator().manual_seed(2)
    )
    generator = torch.Generator().manual_seed(2)
    first, _ = kg_model.sampled_logits(contexts[:1], table, torch.tensor([[1, 2, 3]]), share, generator)
    short, short_labels = kg_model.sampled_logits(
        contexts[1:, :2], table, torch.tensor([[4, 5]]), share, generator
    )
    assert labels.tolist() == [[0, 1, 2], [0, 1, -1]] and short_labels.tolist() == [[0, 1]]
    assert torch.allclose(stacked[0], first[0])
    # the short chunk: its two rows, its two targets and its own negatives; the padding column is off
    assert torch.allclose(stacked[1, :2, [0, 1, 3, 4, 5, 6]], short[0])
    assert torch.isinf(stacked[1, :, 2]).all()


@pytest.mark.parametrize("sampled", [False, True])
def test_stacked_loss_passes_train_the_same_model(monkeypatch: pytest.MonkeyPatch, sampled: bool) -> None:
    """A GPU scores a step's chunks in one pass: the same model as one chunk at a time, to rounding."""
    monkeypatch.setattr(kg_model, "LOSS_CHUNK", 100)  # 1,200 examples in batches of 256: 3 chunks a step
    if sampled:
        monkeypatch.setattr(kg_model, "FULL_SOFTMAX_MAX_ITEMS", 10)
        monkeypatch.setattr(kg_model, "SAMPLED_NEGATIVES", 16)
    one = train_kg_model(toy(), replace(CONFIG, epochs=2))
    passes = kg_model.loss_passes
    shapes: list[tuple[int, ...]] = []

    def recorded(batch: torch.Tensor, per_pass: int) -> list[torch.Tensor]:
        shapes.extend(tuple(p.shape) for p in passes(batch, per_pass))
        return passes(batch, per_pass)

    monkeypatch.setattr(kg_model, "chunks_per_pass", lambda device: 16)
    monkeypatch.setattr(kg_model, "loss_passes", recorded)
    stacked = train_kg_model(toy(), replace(CONFIG, epochs=2))
    assert (3, 100) in shapes  # whole steps went through as one stacked (and padded) pass
    # float32 rounding only: the tables' entries are about 1.5 in size
    assert np.abs(one.items - stacked.items).max() < 5e-5
    assert np.abs(one.item_context - stacked.item_context).max() < 5e-5
    assert np.allclose(one.losses, stacked.losses, rtol=1e-6, atol=0)


def test_row_look_ups_match_embedding_values_and_gradient_bits() -> None:
    """``rows_of`` (index_select, for the GPU's sake) changes nothing on the CPU: the same rows,
    and the same gradient, bit for bit, with indices repeated many times over."""
    generator = torch.Generator().manual_seed(0)
    table = torch.randn(500, 17, generator=generator, requires_grad=True)
    index = torch.randint(0, 500, (64, 30), generator=generator)
    upstream = torch.randn(64, 30, 17, generator=generator)
    looked_up = kg_model.rows_of(table, index)
    (looked_up * upstream).sum().backward()
    ours, table.grad = table.grad, None
    embedded = torch.nn.functional.embedding(index, table)
    (embedded * upstream).sum().backward()
    assert looked_up.shape == (64, 30, 17) and torch.equal(looked_up, embedded)
    assert torch.equal(ours, table.grad)
