"""Experiment, validation only: knowledge-graph embeddings of items as graph-model input features.

The graph model reads knowledge by propagating over it (``kg_model.build_typed_graph``). The
issue names a second way: KG embeddings, learnt from the triples alone, as item features. Here a
TransE model (PyG's ``torch_geometric.nn.kge.TransE``) is trained on every knowledge triple of the
training graph (brands, categories, ``kg_triples``; no interaction), and each item's row,
scaled to unit length (zero for an item without knowledge), is appended to its text embedding,
which the graph model projects into its layer-0 features. The modes are those of
:mod:`bench.relation_normalisation` (``none``, ``joint:1`` = the code), each with ``+transe`` or not:

- ``joint:1+transe``: knowledge propagated and embedded;
- ``none+transe``: knowledge embedded only, no knowledge relations in the propagation.

For each data set and seed the graph model trains on the ``kgrec evaluate`` leave-last-out split
with each user's latest training interaction held out (the test items are never read); the
report is the best validation NDCG@10 of the model's own served score, as that bench's.

    .venv/bin/python -m bench.kge_features --dataset movielens --datasets-dir ../shared/data
        [--seeds 7,8,9] [--modes none,joint:1,joint:1+transe,none+transe] [--save NAME]
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.nn.kge import TransE

from bench.common import validation_hold_out
from bench.relation_normalisation import modes_main, trained_row
from kgrec.training_graph import TrainingGraph
from workers.training import kg_model

KGE_SUFFIX = "+transe"
KGE_DIM = 64
KGE_EPOCHS = 200
KGE_BATCH = 4_096
KGE_LR = 0.01


def knowledge_triples(graph: TrainingGraph) -> tuple[kg_model.NodeLayout, np.ndarray]:
    """The joint node layout and every knowledge triple, (head node, relation, tail node) rows."""
    layout, directed = kg_model.directed_relations(graph, True)
    parts = []
    # directed_relations lists each relation's forward matrix (rows receive: tail × head), then its inverse
    for r, (name, forward) in enumerate(directed[::2]):
        if kg_model.is_knowledge(name):
            coo = forward.tocoo()
            parts.append(np.stack([coo.col, np.full(coo.nnz, r), coo.row], axis=1))
    triples = np.concatenate(parts) if parts else np.zeros((0, 3), dtype=np.int64)
    return layout, triples.astype(np.int64)


def transe_item_features(graph: TrainingGraph, seed: int) -> np.ndarray:
    """(items, KGE_DIM) TransE embeddings of the items, each row unit length; zero without knowledge."""
    layout, triples = knowledge_triples(graph)
    features = np.zeros((graph.n_items, KGE_DIM), dtype=np.float32)
    if not triples.size:
        return features
    # Only nodes in some triple are embedded (and drawn as corrupted heads or tails).
    nodes, compact = np.unique(triples[:, [0, 2]], return_inverse=True)
    compact = compact.reshape(-1, 2)
    _, relation = np.unique(triples[:, 1], return_inverse=True)
    torch.manual_seed(seed)
    model = TransE(nodes.size, int(relation.max()) + 1, KGE_DIM, margin=1.0, p_norm=1.0)
    head, tail = torch.from_numpy(compact[:, 0]), torch.from_numpy(compact[:, 1])
    loader = model.loader(head, torch.from_numpy(relation), tail, batch_size=KGE_BATCH, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=KGE_LR)
    for _epoch in range(KGE_EPOCHS):
        for h, r, t in loader:
            optimizer.zero_grad()
            model.loss(h, r, t).backward()
            optimizer.step()
    embedded = model.node_emb.weight.detach().numpy()
    item = (nodes >= layout.item_offset) & (nodes < layout.item_offset + layout.items)
    rows = embedded[item]
    features[nodes[item] - layout.item_offset] = rows / np.maximum(
        np.linalg.norm(rows, axis=1, keepdims=True), 1e-12
    )
    return features


def run(name: str, datasets_dir: Path, seeds: list[int], modes: list[str]) -> list[dict[str, Any]]:
    """Every mode at every seed on one data set's validation hold-out."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="kgrec-kge-") as tmp:
        _, text, fit, validation = validation_hold_out(name, datasets_dir, Path(tmp))
        for seed in seeds:
            kge_seconds, kge = 0.0, None
            if any(mode.endswith(KGE_SUFFIX) for mode in modes):
                started = time.perf_counter()
                kge = transe_item_features(fit, seed)
                kge_seconds = time.perf_counter() - started
            for mode in modes:
                embedded = mode.endswith(KGE_SUFFIX)
                features = np.hstack([text, kge]) if embedded else text
                row = trained_row(
                    name, seed, mode, fit, features, validation, model_mode=mode.removesuffix(KGE_SUFFIX)
                )
                rows.append({**row, "transe_s": round(kge_seconds, 1) if embedded else 0.0})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    """Parse the options, run, print the per-mode means and the rows."""
    modes_main(__doc__, "kge-features", "none,joint:1,joint:1+transe,none+transe", run, KGE_SUFFIX)


if __name__ == "__main__":
    main()
