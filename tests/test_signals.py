"""The registry of model signals drives training, the artifact and the Recommender."""

from __future__ import annotations

import gc
import json
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from graph_schema.allow_list import KNOWLEDGE_RELATIONS
from kgrec import signals
from kgrec.ease import ease_neighbours
from kgrec.item_graphs import row_normalised
from kgrec.model_store import load_artifacts, save_artifacts
from kgrec.recommender import EMBEDDING, HistoryEntry, ModelArtifacts, Recommender
from kgrec.search_cold_start import model_rows_of, search_ranking
from kgrec.signals import (
    SIGNALS,
    Signal,
    SignalError,
    build_signals,
    co_purchase_names,
    signals_for,
)
from kgrec.topic_items import TopicItems
from kgrec.training_graph import TrainingGraph
from workers.training.config import TrainConfig, for_variant
from workers.training.pipeline import fit_features

# The hand-set blend of the knowledge model before the weights were fitted on validation
# (an artifact of that time stores these).
_KNOWLEDGE = {
    "cooccurrence": 1.0,
    "transitions": 2.0,
    "also_bought": 1.0,
    "also_viewed": 0.5,
    "bought_together": 2.0,
    "also_bought_directed": 0.5,
    "also_viewed_directed": 0.5,
    "same_brand": 0.1,
}
# The components training built before, in the order the blend summed them.
TODAY_COMPONENTS = [
    "cooccurrence",
    "transitions",
    "also_bought",
    "also_bought_directed",
    "also_viewed",
    "also_viewed_directed",
    "bought_together",
    "bought_together_directed",
    "same_brand",
]


def small_graph() -> TrainingGraph:
    """Three users, four items (a, b same brand), a few knowledge links."""
    return TrainingGraph(
        user_ids=["u0", "u1", "u2"],
        item_ids=["a", "b", "c", "d"],
        inter_user=np.array([0, 0, 1, 1, 2, 2]),
        inter_item=np.array([0, 1, 1, 2, 2, 3]),
        inter_weight=np.ones(6),
        inter_order=np.array([1, 2, 1, 2, 1, 2]),
        brand_ids=["acme"],
        item_brand=np.array([0, 0, -1, -1]),
        knowledge={
            "also_bought": np.array([[0, 2]]),
            "also_viewed": np.array([[1, 3]]),
            "bought_together": np.array([[3, 0]]),
        },
    )


def test_the_registry_sets_no_weights_and_each_variant_its_features() -> None:
    assert not any("weight" in f or "alternative" in f for f in Signal.__dataclass_fields__)
    assert not hasattr(signals, "default_weights") and not hasattr(signals, "candidate_weights")
    names = [s.name for s in signals_for(use_knowledge=True, use_topics=False)]
    assert names == [*TODAY_COMPONENTS, "last_item_transitions", "ease", "shared_entities"]
    # later signals come last, so that the others' sums stay bit-identical
    assert [s.name for s in signals_for(use_knowledge=True)] == [
        *TODAY_COMPONENTS,
        "topic_interests",
        "last_item_transitions",
        "ease",
        "shared_entities",
    ]
    assert [s.name for s in signals_for(True, use_order=False, use_topics=False)] == [
        *(n for n in TODAY_COMPONENTS if n != "transitions"),
        "ease",
        "shared_entities",
    ]
    config = TrainConfig()
    assert fit_features(names, config) == [*names, EMBEDDING]
    assert fit_features(names, for_variant(config, "no-graph-model")) == names
    assert fit_features(names, for_variant(config, "graph-model-only")) == [EMBEDDING]


def test_the_registry_builds_todays_components_in_todays_order() -> None:
    graph = small_graph()
    assert list(build_signals(graph, use_knowledge=True)) == [
        *TODAY_COMPONENTS,
        "last_item_transitions",
        "shared_entities",
    ]
    assert list(build_signals(graph, use_knowledge=False)) == [
        "cooccurrence",
        "transitions",
        "last_item_transitions",
    ]
    for name, matrix in build_signals(graph).items():
        assert matrix.shape == (4, 4) and matrix.dtype == np.float32, name
        assert abs(matrix - signals.signal(name).build(graph)).nnz == 0


def test_a_tuned_signal_is_built_only_with_its_validation_chosen_parameter() -> None:
    graph = small_graph()
    assert "ease" not in build_signals(graph)  # no λ, no signal: never a silent default
    built = build_signals(graph, tuned={"ease": 3.0})
    assert list(built)[-2:] == ["ease", "shared_entities"]
    assert abs(built["ease"] - ease_neighbours(graph, 3.0)).nnz == 0
    given = sp.csr_matrix(np.eye(4, dtype=np.float32))
    assert build_signals(graph, tuned={"ease": 3.0}, prebuilt={"ease": given})["ease"] is given


def test_every_knowledge_relation_has_its_signals_and_co_purchase_links() -> None:
    for relation in KNOWLEDGE_RELATIONS:
        assert not signals.signal(relation).directed and signals.signal(f"{relation}_directed").directed
    assert set(co_purchase_names()) == {f"{r}_directed" for r in KNOWLEDGE_RELATIONS}
    model = Recommender(artifacts(build_signals(small_graph())))
    links = model.co_purchase_links
    assert sorted(zip(*links.nonzero(), strict=True)) == [(0, 2), (1, 3), (3, 0)]
    # kept by the copies an erasure and a fold-in make, not summed again on a request (the items
    # folded in have no links)
    assert model.with_popularity(np.zeros(4, dtype=np.float32)).__dict__["co_purchase_links"] is links
    folded = model.with_items(
        ["e"], np.ones((1, 2), dtype=np.float32), model.facts.extended([None], [[]], [None])
    )
    carried = folded.__dict__["co_purchase_links"]
    assert carried.shape == (5, 5) and sorted(zip(*carried.nonzero(), strict=True)) == [
        (0, 2),
        (1, 3),
        (3, 0),
    ]
    del folded.__dict__["co_purchase_links"]
    assert abs(folded.co_purchase_links - carried).nnz == 0  # what summing again gives


def artifacts(
    components: dict[str, sp.csr_matrix], weights: dict[str, float] | None = None
) -> ModelArtifacts:
    return ModelArtifacts(
        version="v-test",
        item_ids=["a", "b", "c", "d"],
        item_embeddings=np.eye(4, 2, dtype=np.float32),
        components=components,
        weights={**{name: 1.0 for name in components}, EMBEDDING: 0.0} if weights is None else weights,
        recency_decay=1.0,
        popularity=np.ones(4, dtype=np.float32),
    )


def todays_components() -> dict[str, sp.csr_matrix]:
    """The components of :data:`TODAY_COMPONENTS` (what an artifact of that time stores)."""
    return {k: v for k, v in build_signals(small_graph()).items() if k in TODAY_COMPONENTS}


def test_a_signal_without_a_weight_is_an_error_naming_it(tmp_path: Path) -> None:
    components = build_signals(small_graph(), use_knowledge=False)
    missing = artifacts(components, {"cooccurrence": 1.0})
    with pytest.raises(SignalError, match="'transitions' has no blend weight"):
        Recommender(missing)
    with pytest.raises(SignalError, match="'transitions'"):
        save_artifacts(missing, tmp_path)
    with pytest.raises(SignalError, match="unknown model signal 'links'"):
        Recommender(artifacts({"links": components["cooccurrence"]}))
    # an explicit 0.0 is a weight: the signal is kept and scores nothing
    zero = Recommender(
        artifacts(components, {"cooccurrence": 1.0, "transitions": 0.0, "last_item_transitions": 0.0})
    )
    alone = Recommender(artifacts({"cooccurrence": components["cooccurrence"]}, {"cooccurrence": 1.0}))
    history = [[HistoryEntry("b", 1.0, 1)]]
    assert zero.recommend(history, 4) == alone.recommend(history, 4)


def test_the_artifact_round_trips_every_signal(tmp_path: Path) -> None:
    stored = artifacts(todays_components(), {**_KNOWLEDGE, "bought_together_directed": 0.0, EMBEDDING: 0.2})
    loaded = load_artifacts(tmp_path / save_artifacts(stored, tmp_path))
    assert list(loaded.components) == TODAY_COMPONENTS
    assert loaded.weights == stored.weights
    for name, matrix in stored.components.items():
        assert abs(loaded.components[name] - matrix).nnz == 0


def test_an_artifact_from_before_the_registry_loads_with_its_dropped_signals_at_zero(tmp_path: Path) -> None:
    """Version 1 artifacts had no weight for bought_together_directed: it scored 0.0, and still does."""
    stored = artifacts(todays_components(), {**_KNOWLEDGE, EMBEDDING: 0.2})
    path = tmp_path / "old.npz"
    with np.load(
        tmp_path
        / save_artifacts(
            replace(stored, weights={**stored.weights, "bought_together_directed": 0.0}), tmp_path
        )
    ) as current:
        arrays = dict(current)
    meta = json.loads(str(arrays["meta"]))
    del meta["format"]
    meta["weights"] = stored.weights
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    assert load_artifacts(path).weights == {**stored.weights, "bought_together_directed": 0.0}


def test_a_new_signal_is_one_entry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Register one more signal: training builds it, the fit weighs it, the artifact and the scores carry it."""

    def same_user(graph: TrainingGraph) -> sp.csr_matrix:
        ratings = sp.csr_matrix((np.ones(graph.inter_user.size), (graph.inter_user, graph.inter_item)))
        return row_normalised(ratings.T @ ratings)

    extra = Signal("same_user", same_user, directed=False)
    monkeypatch.setattr(signals, "SIGNALS", (*SIGNALS, extra))
    monkeypatch.setattr(signals, "SIGNALS_BY_NAME", {s.name: s for s in (*SIGNALS, extra)})
    graph = small_graph()
    components = build_signals(graph, use_knowledge=False)
    assert list(components) == ["cooccurrence", "transitions", "last_item_transitions", "same_user"]
    assert "same_user" in fit_features(list(components), TrainConfig(use_knowledge=False))
    weights = {
        "cooccurrence": 1.0,
        "transitions": 2.0,
        "last_item_transitions": 0.0,
        "same_user": 0.7,
        EMBEDDING: 0.2,
    }
    stored = artifacts(components, weights)
    loaded = load_artifacts(tmp_path / save_artifacts(stored, tmp_path))
    assert loaded.weights["same_user"] == 0.7
    without = Recommender(artifacts(components, {**weights, "same_user": 0.0}))
    history = [[HistoryEntry("a", 1.0, 1)]]
    assert not np.allclose(
        Recommender(loaded).score(without.profiles(history)), without.score(without.profiles(history))
    )


def test_a_searching_newcomers_candidates_map_topic_rows_to_model_rows_once_per_model() -> None:
    """The topic items' rows were mapped to the model's rows per search request, one dict lookup per
    member (a topic of 100,000 items: 20-30 ms); now once per model object and topic items."""
    model = Recommender(artifacts(build_signals(small_graph())))
    items = TopicItems(
        version="v-test",
        item_ids=["c", "x", "a"],  # "x": an item the model does not know
        vectors=np.eye(3, 384, dtype=np.float32),
        topic_ids=["t"],
        item_topics=np.zeros((3, 1), dtype=np.int64),
        item_scores=np.ones((3, 1), dtype=np.float32),
    )
    rows = model_rows_of(model, items)
    assert rows.tolist() == [2, -1, 0] and model_rows_of(model, items) is rows
    ranked = search_ranking(
        model, items, np.eye(1, 384, 2, dtype=np.float32)[0], ["t"], popularity_weight=0.0
    )
    assert ranked is not None and sorted(ranked.rows.tolist()) == [0, 2]
    folded = model.with_items(
        ["x"], np.ones((1, 2), dtype=np.float32), model.facts.extended([None], [[]], [None])
    )
    assert model_rows_of(folded, items).tolist() == [2, 4, 0]  # a fold-in's copy: mapped anew
    # the mapping kept for a model does not keep its topic items alive (a version's, let go when
    # the version leaves the cache of topic items, while the model may still serve)
    held = weakref.ref(items)
    del items, ranked
    gc.collect()
    assert held() is None
