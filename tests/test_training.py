"""Learning on real data: the pull, text embeddings, training, evaluation and reproducibility."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from graph_schema.statements.training import ITEM_FACTS
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway
from kgrec.importer import import_dataset
from tests.subsets import amazon_beauty_subset
from workers.training.config import TrainConfig
from workers.training.evaluate import evaluate
from workers.training.pipeline import train_model
from workers.training.subgraph import pull
from workers.training.text import TextEmbeddingCache


@pytest.fixture(scope="module")
def beauty_subset(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 1,500 users of Amazon Beauty, their items and those items' triples."""
    return amazon_beauty_subset(
        shared_data / "amazon-beauty-kg", tmp_path_factory.mktemp("b1500"), users=1500
    )


@pytest.fixture(scope="module")
def beauty_small(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 400 users of Amazon Beauty: enough for every stage of a training to have work."""
    return amazon_beauty_subset(shared_data / "amazon-beauty-kg", tmp_path_factory.mktemp("b400"), users=400)


def test_pull_leaves_flagged_bots_out(gateway: GraphGateway, settings: Settings) -> None:
    now = int(time.time() * 1000)
    raw = [
        {"event_id": f"bot-{i}", "user_id": "bot", "item_id": f"i{i}", "type": "view", "ts": now - 1000 + i}
        for i in range(5)
    ] + [{"event_id": "human-1", "user_id": "human", "item_id": "i1", "type": "purchase", "ts": now}]
    events, errors = validate_batch(raw, max_skew_s=300)
    assert errors == []
    ingest(gateway, events, replace(settings, bot_events_per_minute=3))
    graph = pull(gateway, int(time.time() * 1000), settings.half_life_ms)  # after the events arrived
    assert graph.user_ids == ["human"]
    assert graph.inter_user.size == 1
    assert set(graph.item_ids) == {f"i{i}" for i in range(5)}  # the items themselves stay


def test_pull_does_not_depend_on_the_order_the_engine_keeps_edges_in(
    gateway: GraphGateway, settings: Settings
) -> None:
    """An item's brands and categories come back in the engine's internal order, which a reload
    changes; the item text, the brand kept and the category pairs must not follow it."""
    now = int(time.time() * 1000)
    events, errors = validate_batch(
        [{"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "purchase", "ts": now}], max_skew_s=300
    )
    assert errors == []
    ingest(gateway, events, settings)
    link = (
        "MATCH (i:Item {id: 'i1'}) UNWIND $ids AS id "
        "MERGE (c:Category {id: id}) SET c.name = 'name of ' + id MERGE (i)-[:IN_CATEGORY]->(c) "
        "MERGE (b:Brand {id: 'brand ' + id}) MERGE (i)-[:MADE_BY]->(b)"
    )
    # the order follows the nodes' internal ids: new nodes (or reused ids) give another
    unlink = "MATCH (n) WHERE n:Category OR n:Brand DETACH DELETE n"
    pulls, engine_orders = [], []
    for ids in (["c1", "c2", "c3"], ["c2", "c3", "c1"]):
        gateway.run_query(unlink, {})
        gateway.run_query(link, {"ids": ids})
        engine_orders.append(gateway.read(ITEM_FACTS, {"ids": ["i1"]})[0]["categories"])
        pulls.append(pull(gateway, int(time.time() * 1000), settings.half_life_ms))
    assert engine_orders[0] != engine_orders[1]  # the engine did keep another order
    first, second = pulls
    assert (
        first.item_text
        == second.item_text
        == ["brand c1, brand c2, brand c3 | name of c1, name of c2, name of c3"]
    )
    assert first.brand_ids[first.item_brand[0]] == second.brand_ids[second.item_brand[0]] == "brand c1"
    assert first.item_category_pairs.tolist() == second.item_category_pairs.tolist()


def test_text_embeddings_are_offline_normalised_and_cached(tmp_path: Path) -> None:
    cache = TextEmbeddingCache(tmp_path)
    texts = [
        "Red matte lipstick | Acme | Makeup > Lips",
        "Crimson lip colour | Acme | Makeup > Lips",
        "Anti-dandruff shampoo | Head | Hair Care > Shampoos",
    ]
    vectors = cache.embed(texts)
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]  # the model, not noise
    again = cache.embed([texts[0], "Volumising mascara | Acme | Makeup > Eyes"])
    assert cache.encoded_last_call == 1  # only the new text was encoded
    assert np.allclose(again[0], vectors[0])


def test_small_real_training_run_beats_popularity_clearly(
    settings: Settings, graph_server: object, beauty_subset: Path
) -> None:
    report = evaluate(
        settings,
        str(beauty_subset),
        settings.datasets_dir,
        "leave-last-out",
        (10, 20),
        TrainConfig(epochs=3),
        # the other baselines' fits are tested in test_baselines and test_cli's evaluate
        baseline_set="itemknn,popularity",
    )
    kgrec, popularity = report.metrics["kgrec"], report.metrics["popularity"]
    assert report.protocol["test_users"] == 1500
    assert kgrec["recall@10"] > 2 * popularity["recall@10"]
    assert kgrec["ndcg@10"] > 2 * popularity["ndcg@10"]
    assert kgrec["recall@10"] >= report.metrics["itemknn"]["recall@10"]
    assert set(report.metrics) == {"kgrec", "itemknn", "popularity"}
    assert set(report.protocol["kgrec_weights"]) >= {"cooccurrence", "transitions", "embedding"}


def test_training_is_reproducible_with_a_fixed_seed(
    gateway: GraphGateway, settings: Settings, beauty_small: Path, tmp_path: Path
) -> None:
    import_dataset(gateway, open_dataset(str(beauty_small), settings.datasets_dir), settings)
    graph = pull(gateway, int(time.time() * 1000), settings.half_life_ms)
    config = TrainConfig(epochs=2, seed=11)
    first = train_model(graph, config, text_cache_dir=tmp_path)
    second = train_model(graph, config, text_cache_dir=tmp_path)
    assert np.array_equal(first.artifacts.item_embeddings, second.artifacts.item_embeddings)
    assert first.validation == second.validation
    assert first.artifacts.weights == second.artifacts.weights
    assert first.artifacts.recency_decay == second.artifacts.recency_decay
    ease_first, ease_second = first.artifacts.components["ease"], second.artifacts.components["ease"]
    assert ease_first.nnz > 0 and (ease_first != ease_second).nnz == 0
    assert first.artifacts.parameters["tuned_signals"] == second.artifacts.parameters["tuned_signals"]
