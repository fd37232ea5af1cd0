"""A tiny synthetic shop with a planted taste, and two model versions that do or do not know it.

The shop: :data:`TASTES` tastes of :data:`ITEMS_PER_TASTE` items each (``t<taste>-item-<n>``) and
:data:`TRAIN_USERS` shoppers; shopper ``n`` has taste ``n % TASTES`` and bought
:data:`BOUGHT` of its items. Nothing else (no brands, categories, titles): the taste is in the
interactions only, so a version trained on them learns it and a version trained on the same
interactions with their items shuffled among the shoppers (the same popularity, no taste) cannot.
"""

from __future__ import annotations

import csv
import gzip
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.importer import import_dataset
from kgrec.migrations import migrate
from workers.training.config import TrainConfig
from workers.training.job import publish, run_training
from workers.training.pipeline import train_model
from workers.training.subgraph import pull

TASTES = 12
ITEMS_PER_TASTE = 8
TRAIN_USERS = 240
BOUGHT = 5
CONFIG = TrainConfig(epochs=1, use_ease=False)


def item_id(taste: int, n: int) -> str:
    """The ``n``-th item of a taste."""
    return f"t{taste}-item-{n}"


def taste_of(item: str) -> int:
    """The taste an item belongs to."""
    return int(item.split("-", 1)[0][1:])


def write_shop(folder: Path, seed: int = 11) -> Path:
    """Write the shop's ``interactions.csv.gz`` (kgrec layout, purchases in ``seq_index`` order)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with gzip.open(folder / "interactions.csv.gz", "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "item_id", "seq_index"])
        for user in range(TRAIN_USERS):
            picks = rng.choice(ITEMS_PER_TASTE, BOUGHT, replace=False)
            for seq, n in enumerate(picks):
                writer.writerow([f"shopper-{user}", item_id(user % TASTES, int(n)), seq])
    return folder


def planted_graph(settings: Settings, folder: Path) -> GraphGateway:
    """The shop imported into ``settings``' graph (migrated first); the caller closes the gateway."""
    gateway = open_gateway(settings)
    migrate(gateway)
    import_dataset(gateway, open_dataset(str(write_shop(folder)), settings.datasets_dir), settings)
    return gateway


def train_knowing(gateway: GraphGateway, settings: Settings, version: str, **kwargs: object) -> dict:
    """The real training job on the graph as it is: the version learns the taste."""
    return run_training(gateway, settings, CONFIG, device="cpu", version=version, **kwargs)  # type: ignore[arg-type]


def train_shuffled(gateway: GraphGateway, settings: Settings, version: str, *, gate: bool = False) -> None:
    """The training pipeline and write-back on the graph with every interaction's item shuffled
    among the shoppers: the taste is gone, popularity is kept. Without ``gate`` it becomes active."""
    graph = pull(gateway, int(time.time() * 1000), settings.half_life_ms)
    shuffled = replace(graph, inter_item=np.random.default_rng(3).permutation(graph.inter_item))
    result = train_model(
        shuffled,
        CONFIG,
        device="cpu",
        text_cache_dir=Path(settings.data_dir) / "text-embeddings",
        version=version,
        hold_gate_slice=gate,
        gate_min_users=settings.gate_min_users,
    )
    publish(gateway, settings, graph, result, CONFIG, gate=gate, trained_on=shuffled)


def event(event_id: str, user: str, item: str, kind: str, **extra: object) -> dict[str, object]:
    """One behaviour event as a client posts it, timed now (``extra``: recommendation_id, position...)."""
    return {
        "event_id": event_id,
        "user_id": user,
        "item_id": item,
        "type": kind,
        "ts": int(time.time() * 1000),
        **extra,
    }
