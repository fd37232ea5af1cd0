"""Experiment, validation only: how the graph model normalises and starts its knowledge relations.

The graph model normalises its joint adjacency by every relation's degree together and starts
every relation at weight 1 (:func:`workers.training.kg_model.build_typed_graph`). On MovieLens
knowledge does not beat no knowledge, so these alternatives were tried:

- ``relation:W``: each relation (both directions) normalised by its own degrees, R-GCN style,
  so ``interacted`` is exactly LightGCN's; knowledge relations start at weight ``W`` (at 1,
  every relation starts as the code starts it);
- ``joint:W``: today's joint normalisation, knowledge relations starting at weight ``W``
  (``joint:1`` is the code as it is);
- ``damped:W``: today's joint normalisation, with what knowledge relations send into an item
  scaled by ``1 / sqrt(1 + its interactions)`` (:func:`damped_matrices`), so knowledge speaks
  where ratings are few; knowledge relations starting at weight ``W``. The joint degree still
  counts knowledge edges, so knowledge still dilutes what an item's ratings carry;
- ``gated:W``: today's joint normalisation, and each knowledge node (brand, category, entity)
  sends its message through a gate of its own, ``softplus(g_n)`` learnt with the model and
  starting at 1 (:func:`gated_forward`), so the model can silence a genre, tag or year that
  misleads and keep one that helps; knowledge relations starting at weight ``W``;
- ``none``: no knowledge relations (the item text is the full import's, as in every mode).

For each data set and seed it trains the graph model on the ``kgrec evaluate`` leave-last-out
split with each user's latest training interaction held out (the test items are never read),
and reports the best validation NDCG@10 of the model's own served score and its epoch.

    .venv/bin/python -m bench.relation_normalisation --dataset movielens --datasets-dir ../shared/data
        [--seeds 7,8,9] [--modes none,joint:1,relation:0.1,joint:0.1,damped:1,gated:1] [--save NAME]
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from bench.common import positive_number, print_and_save, seeded_experiment_parser, validation_hold_out
from kgrec.item_graphs import popularity
from kgrec.training_graph import TrainingGraph
from workers.training import kg_model
from workers.training.config import TrainConfig


def per_relation_graph(graph: TrainingGraph, use_knowledge: bool) -> kg_model.TypedGraph:
    """Each relation normalised by its own degrees (D_r^-½ A_r D_r^-½), both directions together."""
    layout, directed = kg_model.directed_relations(graph, use_knowledge)
    blocks = []
    # directed_relations lists each relation's forward matrix, then its inverse
    for (_, forward), (_, inverse) in zip(directed[::2], directed[1::2], strict=True):
        degree = np.asarray(forward.sum(axis=1)).ravel() + np.asarray(inverse.sum(axis=1)).ravel()
        scale = sp.diags((1.0 / np.sqrt(np.maximum(degree, 1.0))).astype(np.float32))
        blocks += [kg_model.relation_block((scale @ m @ scale).tocsr()) for m in (forward, inverse)]
    return kg_model.TypedGraph(layout, [name for name, _ in directed], blocks)


def damped_matrices(
    graph: TrainingGraph, use_knowledge: bool
) -> tuple[kg_model.NodeLayout, list[tuple[str, sp.csr_matrix]]]:
    """The joint normalisation (D^-½ A D^-½) of every directed relation, with the knowledge each
    item receives damped by its interactions: the knowledge relations' item rows scaled by
    ``1 / sqrt(1 + interactions)``."""
    layout, normalised = kg_model.joint_normalised(graph, use_knowledge)
    received = np.ones(layout.total, dtype=np.float32)
    received[layout.item_offset : layout.item_offset + layout.items] = 1.0 / np.sqrt(1.0 + popularity(graph))
    damp = sp.diags(received)
    return layout, [
        (name, (damp @ matrix).tocsr() if kg_model.is_knowledge(name) else matrix)
        for name, matrix in normalised
    ]


def damped_graph(graph: TrainingGraph, use_knowledge: bool) -> kg_model.TypedGraph:
    """:func:`damped_matrices` as the graph model's typed graph."""
    layout, matrices = damped_matrices(graph, use_knowledge)
    return kg_model.TypedGraph(
        layout, [name for name, _ in matrices], [kg_model.relation_block(m) for _, m in matrices]
    )


def gated_forward(
    self: kg_model.RelationalSequenceModel, typed: kg_model.TypedGraph, text: torch.Tensor | None
) -> torch.Tensor:
    """The graph model's forward pass with every knowledge node's message scaled by its gate:
    what a node sends at each layer is ``softplus(g_n) · x_n`` (users and items send as before)."""
    x = self.initial(text)
    out = x
    weights = self.relation_weights()
    start = self.layout.brand_offset
    for layer in range(self.layers):
        gate = torch.cat([x.new_ones(start), torch.nn.functional.softplus(self.knowledge_gate_logits)])
        x = typed.propagate(weights[layer], x * gate[:, None])
        out = out + x
    return out / (self.layers + 1)


# Each mode's typed graph (None: the code's own, kg_model.build_typed_graph).
NORMALISATIONS: dict[str, Callable[[TrainingGraph, bool], kg_model.TypedGraph] | None] = {
    "joint": None,
    "relation": per_relation_graph,
    "damped": damped_graph,
    "gated": None,
}


def mode_parts(mode: str) -> tuple[str, float] | None:
    """``mode``'s normalisation and starting knowledge weight (None for ``none``), or a ValueError
    naming it: a command line is checked with this before any data is read."""
    if mode == "none":
        return None
    norm, _, weight = mode.partition(":")
    value = positive_number(weight)
    if norm not in NORMALISATIONS or value is None:  # the starting logit is log(expm1(W))
        raise ValueError(
            f"unknown mode {mode!r} (none, or NORM:WEIGHT with NORM one of {', '.join(NORMALISATIONS)} "
            "and WEIGHT above 0)"
        )
    return norm, value


@contextlib.contextmanager
def graph_model_mode(mode: str) -> Iterator[TrainConfig]:
    """The config for ``mode`` ("none" or "NORM:WEIGHT"), with the graph model patched for it meanwhile.

    ``joint:1`` is the code as it is; a knowledge weight of 1 leaves the starting weights alone.
    """
    parts = mode_parts(mode)
    if parts is None:
        yield TrainConfig(use_knowledge=False)
        return
    norm, weight = parts
    model = kg_model.RelationalSequenceModel
    build, init, forward = kg_model.build_typed_graph, model.__init__, model.forward
    logit = float(np.log(np.expm1(weight)))
    gated = norm == "gated"

    def knowledge_starts_at_weight(
        self: kg_model.RelationalSequenceModel,
        typed: kg_model.TypedGraph,
        dim: int,
        layers: int,
        text_dim: int | None,
        decay: float | None = 0.7,
    ) -> None:
        init(self, typed, dim, layers, text_dim, decay)
        with torch.no_grad():
            for r, name in enumerate(typed.relations):
                if kg_model.is_knowledge(name):
                    self.relation_logits[:, r] = logit
        if gated:
            knowledge_nodes = typed.layout.total - typed.layout.brand_offset
            # softplus(0.5413) = 1: every gate starts open, as the code propagates
            self.knowledge_gate_logits = torch.nn.Parameter(torch.full((knowledge_nodes,), 0.5413))

    kg_model.build_typed_graph = NORMALISATIONS[norm] or build
    if weight != 1.0 or gated:
        model.__init__ = knowledge_starts_at_weight
    if gated:
        model.forward = gated_forward
    try:
        yield TrainConfig(use_knowledge=True)
    finally:
        kg_model.build_typed_graph, model.__init__, model.forward = build, init, forward


def trained_row(
    name: str,
    seed: int,
    mode: str,
    graph: TrainingGraph,
    features: np.ndarray,
    validation: dict[int, int],
    model_mode: str | None = None,
) -> dict[str, Any]:
    """Train the graph model in ``model_mode`` (default: ``mode``) on ``graph`` with item
    ``features``; the row reported for ``mode``: its best validation NDCG@10, epoch and seconds."""
    started = time.perf_counter()
    with graph_model_mode(model_mode or mode) as config:
        config = replace(config, seed=seed)
        trained = kg_model.train_kg_model(graph, config, "cpu", features, validation=validation)
    return {
        "dataset": name,
        "seed": seed,
        "mode": mode,
        "best_validation_ndcg_at_10": round(max(trained.validation_ndcg), 5),
        "best_epoch": trained.best_epoch,
        "seconds": round(time.perf_counter() - started, 1),
    }


def run(name: str, datasets_dir: Path, seeds: list[int], modes: list[str]) -> list[dict[str, Any]]:
    """Every mode at every seed on one data set's validation hold-out."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="kgrec-relnorm-") as tmp:
        _, text, fit, validation = validation_hold_out(name, datasets_dir, Path(tmp))
        for seed in seeds:
            for mode in modes:
                rows.append(trained_row(name, seed, mode, fit, text, validation))
                print(json.dumps(rows[-1]), flush=True)
    return rows


def report(dataset: str, modes: list[str], rows: list[dict[str, Any]], kind: str, save: str | None) -> None:
    """Print each mode's mean best validation NDCG@10, then the JSON (saved as ``kind``-``save``)."""
    means = {
        mode: round(float(np.mean([r["best_validation_ndcg_at_10"] for r in rows if r["mode"] == mode])), 5)
        for mode in modes
    }
    for mode, mean in means.items():
        print(f"{mode:<16} mean best validation NDCG@10 {mean:.4f}")
    print_and_save({"dataset": dataset, "means": means, "rows": rows}, kind, save)


ModesRun = Callable[[str, Path, list[int], list[str]], list[dict[str, Any]]]


def modes_main(doc: str, kind: str, default_modes: str, run_modes: ModesRun, suffix: str = "") -> None:
    """A modes experiment's command line: parse the options, ``run_modes``, print the per-mode
    means and the rows (saved as ``kind``-``--save``). A mode is a graph-model mode
    (:func:`mode_parts`), optionally followed by ``suffix``; any other is refused before any work."""
    parser = seeded_experiment_parser(doc.splitlines()[0], kind)
    parser.add_argument("--modes", default=default_modes)
    args = parser.parse_args()
    modes = args.modes.split(",")
    for mode in modes:
        try:
            mode_parts(mode.removesuffix(suffix) if suffix else mode)
        except ValueError as exc:
            parser.error(f"--modes: {exc}{f', optionally followed by {suffix}' if suffix else ''}")
    rows = run_modes(args.dataset, args.datasets_dir, args.seeds, modes)
    report(args.dataset, modes, rows, kind, args.save)


def main() -> None:
    """Parse the options, run, print the per-mode means and the rows."""
    modes_main(__doc__, "relation-normalisation", "none,joint:1,relation:0.1,joint:0.1", run)


if __name__ == "__main__":
    main()
