"""What one training run is asked to do: hyper-parameters, and which signals it may use.

``kgrec train --variant`` and ``kgrec evaluate --variant`` name a row of
:data:`VARIANTS`; the ablation table in the README has one column per variant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

# What `--device` takes: `auto` (CUDA when a GPU is present), `cpu`, `cuda` or `cuda:N`.
DEVICE_NAME = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def check_device(name: str) -> str:
    """``name`` if it is a device `--device` takes; a ValueError naming it otherwise."""
    if not DEVICE_NAME.fullmatch(name):
        raise ValueError(f"--device {name!r}: must be auto, cpu, cuda or cuda:N")
    return name


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (recorded on the model version)."""

    dim: int = 64
    layers: int = 3
    # The graph model's epoch cap: it stops earlier when validation NDCG@10 has not improved
    # for ``patience`` epochs, and keeps its best epoch (workers.training.kg_model).
    epochs: int = 40
    batch_size: int = 8192
    lr: float = 0.005
    l2: float = 1e-4
    seed: int = 7
    # The graph model's early-stopping patience, batch and step size
    patience: int = 3
    model_batch_size: int = 8192
    model_lr: float = 0.03
    # Knowledge triples, brands and categories (graph model and signals). `kgrec evaluate` imports a
    # data set without them for a model without knowledge, so that their names do not reach the item
    # text or the topics either (workers/training/evaluate.py: SplitDataset).
    use_knowledge: bool = True
    use_text: bool = True  # item text embeddings
    use_graph_model: bool = True  # the graph neural network's score in the blend
    graph_model_only: bool = False  # the graph neural network's score alone, no other signal
    use_recency: bool = True  # order-aware parts: recency-weighted profile, transitions
    use_topics: bool = True  # the topic-interest signal (topics mined from item text; needs use_text)
    use_ease: bool = True  # the EASE signal (kgrec/ease.py; its λ tuned on validation)
    # Retrain the graph model on every training interaction (the validation hold-out included) for
    # the epoch count early stopping chose, and serve that one (workers.training.pipeline)
    refit_on_all: bool = True


# variant name -> what it changes from the full model
VARIANTS: dict[str, dict[str, bool]] = {
    "full": {},
    "interactions": {"use_knowledge": False, "use_text": False},
    "no-knowledge": {"use_knowledge": False},
    "no-text": {"use_text": False},
    "no-graph-model": {"use_graph_model": False},
    "graph-model-only": {"graph_model_only": True},
    # the graph model alone, trained without knowledge: what knowledge adds to the model itself
    "graph-model-only-no-knowledge": {"graph_model_only": True, "use_knowledge": False},
    "no-recency": {"use_recency": False},
    "no-topics": {"use_topics": False},
    "no-ease": {"use_ease": False},
}


def for_variant(config: TrainConfig, variant: str) -> TrainConfig:
    """``config`` with the switches of ``variant`` (a key of :data:`VARIANTS`) applied."""
    try:
        changes = VARIANTS[variant]
    except KeyError:
        raise ValueError(f"variant {variant!r} is not one of {', '.join(VARIANTS)}") from None
    return replace(config, **changes)
