"""The served graph model is retrained on every interaction; the blend is fitted with the held-out one."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kgrec.training_graph import TrainingGraph
from workers.training.config import TrainConfig
from workers.training.holdout import hold_out_latest
from workers.training.pipeline import train_model

N_USERS, N_ITEMS, LENGTH = 80, 24, 6


def sequences() -> TrainingGraph:
    """Users walk the item ring from a random start (item i is followed by i + 1)."""
    rng = np.random.default_rng(3)
    starts = rng.integers(0, N_ITEMS, N_USERS)
    items = (starts[:, None] + np.arange(LENGTH)[None, :]) % N_ITEMS
    return TrainingGraph(
        user_ids=[f"u{u}" for u in range(N_USERS)],
        item_ids=[f"i{i}" for i in range(N_ITEMS)],
        inter_user=np.repeat(np.arange(N_USERS), LENGTH),
        inter_item=items.ravel(),
        inter_weight=np.ones(N_USERS * LENGTH),
        inter_order=np.tile(np.arange(LENGTH), N_USERS),
    )


CONFIG = TrainConfig(dim=8, layers=1, epochs=3, use_knowledge=False, use_text=False, seed=5)


def test_the_served_model_is_retrained_on_all_interactions_for_the_chosen_epochs() -> None:
    graph = sequences()
    refit = train_model(graph, CONFIG)
    kept = train_model(graph, replace(CONFIG, refit_on_all=False))
    assert refit.fit_embeddings is not None and refit.embeddings is not refit.fit_embeddings
    best = refit.fit_embeddings.best_epoch
    assert 1 <= best <= CONFIG.epochs
    # retrained for exactly the epoch count early stopping chose, on more examples than the fit had
    assert len(refit.embeddings.seconds_per_epoch) == best
    assert hold_out_latest(graph)[0].inter_user.size < graph.inter_user.size
    assert np.array_equal(refit.artifacts.item_embeddings, refit.embeddings.items)
    assert not np.allclose(refit.artifacts.item_embeddings, refit.fit_embeddings.items)
    assert refit.artifacts.parameters["model_refit_on_all"] is True
    # the blend is fitted with the model that never saw the hold-out: the same fit either way
    assert refit.artifacts.weights == kept.artifacts.weights
    assert refit.artifacts.recency_decay == kept.artifacts.recency_decay
    assert refit.validation == kept.validation
    assert np.array_equal(kept.fit_embeddings.items, refit.fit_embeddings.items)
    assert kept.embeddings is kept.fit_embeddings
    assert kept.artifacts.parameters["model_refit_on_all"] is False
