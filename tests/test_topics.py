"""Topics mined by the training pipeline from real item text (an Amazon Beauty subset, the bundled
MiniLM): labels, stable ids across a retrain, and topic interests in the served profile."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from graph_schema.statements.incremental import ACTIVATE_CHILD_VERSION, COPY_TOPICS, CREATE_CHILD_VERSION
from graph_schema.statements.models import CREATE_VERSION, MARK_VERSION_READY
from graph_schema.statements.topics import ABOUT_WRITTEN, WRITE_ABOUT
from kgrec import topic_signal
from kgrec.audiences import Audience, audience_page
from kgrec.browse import item_neighbourhood, search
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.errors import NotFound
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.explanations import read_paths
from kgrec.gateway import GraphGateway
from kgrec.job_queue import RELINK_TOPICS, TOPIC_REPAIR_INTERVAL_S, celery_config
from kgrec.model_store import models_dir
from kgrec.model_versions import promote, relink_active_topics
from kgrec.recommender import Recommender
from kgrec.search_cold_start import POPULARITY_WEIGHT
from kgrec.serving import ItemFilters, Serving
from kgrec.signals import build_signals, signals_for
from kgrec.text_model import encode
from kgrec.topic_items import ABOUT_SETTLE_MS, AboutWrite, TopicItems, link_topic_items, topic_items_path
from kgrec.topic_signal import TOPIC_INTERESTS, same_topic, with_topics
from kgrec.topics import ACTIVE, ActiveTopics, topic_detail, user_topics
from kgrec.training_graph import TrainingGraph
from tests.subsets import beauty_graph
from workers.training.blend_fit import EVIDENCE_P
from workers.training.config import TrainConfig, for_variant
from workers.training.item_fold_in import embed_new_items
from workers.training.job import publish
from workers.training.pipeline import TrainingResult, train_model
from workers.training.publish import collect_garbage
from workers.training.subgraph import pull
from workers.training.topics import (
    STABLE_MIN_COSINE,
    TopicModel,
    about_new_items,
    absorbed_ids,
    assign_ids,
    class_tfidf,
    compute_topics,
    item_language,
    topic_texts,
    write_topics,
)


def _train(gateway: GraphGateway, settings: Settings, version: str, seed: int) -> TrainingResult:
    """What the training job does (:func:`workers.training.job.run_training`), under a fixed seed."""
    graph = pull(gateway, int(time.time() * 1000), settings.half_life_ms)
    config = TrainConfig(epochs=1, seed=seed)
    result = train_model(
        graph,
        config,
        text_cache_dir=Path(settings.data_dir) / "text-embeddings",
        version=version,
        language=item_language(gateway),
    )
    # as the training job publishes: fold-in basis and topics written, then the switch
    publish(gateway, settings, graph, result, config, gate=False)
    return result


@pytest.fixture(scope="module")
def trained(
    settings: Settings,
    graph_server: EmbeddedServer | None,
    shared_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Settings, GraphGateway, TrainingResult]]:
    """60 Amazon Beauty users, trained once with topics (version t1)."""
    local, gateway = beauty_graph(settings, shared_data, tmp_path_factory.mktemp("topics"), 60, "topics")
    with gateway:
        yield local, gateway, _train(gateway, local, "t1", seed=0)


def test_training_mines_named_topics_and_links_items(trained: tuple[Settings, GraphGateway, Any]) -> None:
    _, gateway, result = trained
    topics = result.topics
    assert topics is not None and topics.n_topics >= 2
    assert all(name and keywords for name, keywords in zip(topics.names, topics.keywords, strict=True))
    assert result.artifacts.parameters["topics"]["coverage"] > 0.5
    rows = gateway.run_query(
        "MATCH (:ModelVersion {id: 't1'})-[h:HAS_TOPIC]->(t:Topic) RETURN t.id AS id, t.name AS name, "
        "t.keywords AS keywords, size(h.centroid) AS dim, h.size AS size",
        {},
    )
    assert len(rows) == topics.n_topics
    assert {r["dim"] for r in rows} == {384}
    about = gateway.run_query(
        "MATCH (i:Item)-[a:ABOUT]->(t:Topic) RETURN count(a) AS n, min(a.score) AS low", {}
    )
    # an item is ABOUT its nearest topic and at most two more above the bar
    assert about[0]["n"] == int((topics.item_topics >= 0).sum()) and about[0]["low"] >= 0.3
    assert np.array_equal(topics.item_topics[:, 0], topics.item_topic)
    assert int((topics.item_topics >= 0).sum()) > int((topics.item_topic >= 0).sum())
    # the topic's size counts the items ABOUT it
    sizes = gateway.run_query(
        "MATCH (i:Item)-[:ABOUT]->(t:Topic) RETURN t.id AS id, count(i) AS n ORDER BY id", {}
    )
    assert {r["id"]: r["n"] for r in sizes} == {r["id"]: r["size"] for r in rows}


def test_class_tfidf_labels_a_topic_by_its_own_words() -> None:
    documents = ["red lipstick matte", "matte lipstick", "lipstick red gloss", "hair dye", "hair dye blonde"]
    documents += ["blonde hair dye", "lipstick", "hair", "dye", "matte", "red", "blonde"]
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1, 1, 0, 0, 1])
    keywords = class_tfidf(documents, labels, 2)
    assert keywords[0][0] == "lipstick" and "hair" not in keywords[0]
    assert set(keywords[1][:2]) == {"hair", "dye"}


def test_assign_ids_keeps_close_topics_and_numbers_new_ones_past_all_old_ids() -> None:
    rng = np.random.default_rng(0)
    old = rng.normal(size=(3, 16)).astype(np.float32)
    old /= np.linalg.norm(old, axis=1, keepdims=True)
    moved = old[[2, 0]] + 0.05 * rng.normal(size=(2, 16)).astype(np.float32)  # reordered, a little moved
    fresh = rng.normal(size=(1, 16)).astype(np.float32)
    centroids = np.vstack([moved, fresh])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    model = TopicModel(["a", "b", "c"], [[], [], []], centroids, [1, 1, 1], np.zeros(0), np.zeros(0))
    previous = [("topic-4", old[0]), ("topic-7", old[1]), ("topic-9", old[2])]
    assert assign_ids(model, previous, ["topic-4", "topic-7", "topic-9", "topic-12"]) == [
        "topic-9",
        "topic-4",
        "topic-13",
    ]
    # below the threshold nothing is kept
    far = TopicModel(["a"], [[]], fresh / np.linalg.norm(fresh), [1], np.zeros(0), np.zeros(0))
    assert float(far.centroids[0] @ old[0]) < STABLE_MIN_COSINE
    assert assign_ids(far, previous[:1], ["topic-4"]) == ["topic-5"]


def test_compute_topics_is_seeded_and_needs_enough_text() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    texts = [f"word{i % 3} common" for i in range(40)]
    first, second = compute_topics(texts, vectors, seed=3), compute_topics(texts, vectors, seed=3)
    assert first is not None and second is not None
    assert np.array_equal(first.item_topic, second.item_topic)
    assert compute_topics(texts[:3], vectors[:3]) is None


def test_topic_ids_survive_a_retrain(trained: tuple[Settings, GraphGateway, TrainingResult]) -> None:
    local, gateway, first = trained
    assert first.topics is not None
    before = dict(zip(first.topics.ids, first.topics.centroids, strict=True))
    second = _train(gateway, local, "t2", seed=1)
    assert second.topics is not None
    kept = [i for i in second.topics.ids if i in before]
    assert len(kept) >= second.topics.n_topics // 2  # a different seed, mostly the same topics
    for topic_id, centroid in zip(second.topics.ids, second.topics.centroids, strict=True):
        if topic_id in before:
            assert float(centroid @ before[topic_id]) >= STABLE_MIN_COSINE
    # ABOUT edges are the new version's only; t1 keeps its own HAS_TOPIC links
    versions = gateway.run_query("MATCH (:Item)-[a:ABOUT]->(:Topic) RETURN DISTINCT a.version AS v", {})
    assert versions == [{"v": "t2"}]
    t1 = gateway.run_query("MATCH (:ModelVersion {id: 't1'})-[h:HAS_TOPIC]->() RETURN count(h) AS n", {})
    assert t1 == [{"n": first.topics.n_topics}]
    assert graph_topics(gateway) == version_topics(gateway, "t2")

    # A candidate the gate keeps (here an experiment takes it) changes no served topic.
    graph = pull(gateway, int(time.time() * 1000), local.half_life_ms)
    config = TrainConfig(epochs=1, seed=2)
    result = train_model(graph, config, text_cache_dir=Path(local.data_dir) / "text-embeddings", version="t3")
    publish(gateway, local, graph, result, config, gate=True, on_decision=lambda _v, _d: "held for a test")
    assert ACTIVE.get(gateway).version == "t2"
    assert graph_topics(gateway) == version_topics(gateway, "t2")

    # A rollback brings back the version's own topics, names and ABOUT edges; promoting back, the other's.
    for version, own in (("t1", first), ("t2", second)):
        promote(gateway, Path(local.data_dir), version)
        assert graph_topics(gateway) == version_topics(gateway, version)
        about = gateway.run_query(
            "MATCH (i:Item)-[a:ABOUT]->(t:Topic) RETURN i.id AS i, t.id AS t, a.version AS v", {}
        )
        assert {r["v"] for r in about} == {version}
        assert len(about) == int((own.topics.item_topics >= 0).sum())


def graph_topics(gateway: GraphGateway) -> dict[str, tuple[str, list[str]]]:
    """Each topic some item is ABOUT, with the name and keywords its node shows."""
    rows = gateway.run_query(
        "MATCH (:Item)-[:ABOUT]->(t:Topic) RETURN DISTINCT t.id AS id, t.name AS name, t.keywords AS k", {}
    )
    return {r["id"]: (r["name"], list(r["k"])) for r in rows}


def version_topics(gateway: GraphGateway, version: str) -> dict[str, tuple[str, list[str]]]:
    """A version's own topics, as its HAS_TOPIC edges keep them."""
    rows = gateway.run_query(
        "MATCH (:ModelVersion {id: $v})-[h:HAS_TOPIC]->(t:Topic) RETURN t.id AS id, h.name AS name, h.keywords AS k",
        {"v": version},
    )
    return {r["id"]: (r["name"], list(r["k"])) for r in rows}


def _search(gateway: GraphGateway, settings: Settings, user: str, query: str) -> None:
    now = int(time.time() * 1000)
    raw = [
        {"event_id": f"s-{uuid.uuid4().hex}", "user_id": user, "type": "search", "ts": now, "query": query}
    ]
    events, errors = validate_batch(raw, max_skew_s=300, now_ms=now)
    assert errors == []
    ingest(gateway, events, settings)


def _recommend(serving: Serving, user: str) -> dict[str, Any]:
    return serving.recommendations(user, k=10, offset=0, exclude="seen", filters=ItemFilters(), explain=False)


def test_a_search_changes_the_next_recommendations_and_drives_cold_start(
    trained: tuple[Settings, GraphGateway, TrainingResult],
) -> None:
    local, gateway, _ = trained
    active = ACTIVE.get(gateway)  # this version's topics (another test may have retrained)
    sizes = gateway.run_query("MATCH (:Item)-[:ABOUT]->(t:Topic) RETURN t.name AS name, count(*) AS n", {})
    query = max(sizes, key=lambda r: (r["n"], r["name"]))["name"]
    best = active.names[active.ids.index(active.match(encode([query]))[0][0][0])]
    # exploration (kgrec.exploration) would put random picks on a cold-start page: not what this compares
    serving = Serving(replace(local, explore_share=0.0))
    try:
        # a user with history: the next call after the search ranks differently
        user = gateway.run_query(
            "MATCH (u:User)-[:INTERACTED]->() RETURN u.id AS id ORDER BY id LIMIT 1", {}
        )[0]["id"]
        before = [i["item_id"] for i in _recommend(serving, user)["items"]]
        _search(gateway, local, user, query)
        after = [i["item_id"] for i in _recommend(serving, user)["items"]]
        assert after != before
        # a user whose only activity is one search: still a cold start, but not popularity
        popular = _recommend(serving, "nobody")
        assert popular["cold_start"] and "reason" not in popular
        _search(gateway, local, "searcher", query)
        cold = _recommend(serving, "searcher")
        assert cold["cold_start"] is True and f"'{best}'" in cold["reason"]
        interests = serving.interests("searcher", limit=5, items=2)
        assert interests["brands"] == [] and interests["topics"][0]["name"] == best
        assert interests["topics"][0]["events"] == 1 and len(interests["topics"][0]["items"]) == 2
        assert [i["item_id"] for i in cold["items"]] != [i["item_id"] for i in popular["items"]]
        # erasing the user removes their topic interests with them
        serving.erase_user("searcher")
        left = gateway.run_query(
            "MATCH (:User {id: 'searcher'})-[x:INTERESTED_IN]->() RETURN count(x) AS n", {}
        )
        assert left == [{"n": 0}]
        assert _recommend(serving, "searcher")["items"] == popular["items"]
    finally:
        serving.close()


def test_a_search_explains_recommendations_by_its_topic_and_the_path_is_in_the_graph(
    trained: tuple[Settings, GraphGateway, TrainingResult],
) -> None:
    local, gateway, _ = trained
    sizes = gateway.run_query("MATCH (:Item)-[:ABOUT]->(t:Topic) RETURN t.name AS name, count(*) AS n", {})
    query = max(sizes, key=lambda r: (r["n"], r["name"]))["name"]
    serving = Serving(local)
    try:
        _search(gateway, local, "explained-searcher", query)
        items = [i["item_id"] for i in _recommend(serving, "explained-searcher")["items"]]
        topic_paths = [
            path
            for item in items
            for path in serving.explanation("explained-searcher", item, max_paths=3)["paths"]
            if path["kind"] == "interest" and path["nodes"][1]["label"] == "Topic"
        ]
        assert topic_paths, "no recommended item was explained by the searched topic"
        for path in topic_paths:
            assert [r["type"] for r in path["relationships"]] == ["INTERESTED_IN", "ABOUT"]
            assert "is about it too" in path["sentence"]
            assert gateway.run_query(path["cypher"], {}), path["cypher"]
    finally:
        serving.erase_user("explained-searcher")
        serving.close()


def _own_words_target(items: TopicItems, active: Any, texts: dict[str, str]) -> tuple[str, str, list[str]]:
    """An item whose own topic text, searched, is the closest of its searched topics' items to the
    search by more than popularity can add, and is not their most central item: (text, id, topics)."""
    rows = [r for r, item_id in enumerate(items.item_ids) if texts.get(item_id)]
    vectors = encode([texts[items.item_ids[r]] for r in rows])
    for row, vector, found in zip(rows, vectors, active.match(vectors), strict=True):
        topic_ids = [t for t, _ in found]
        pool = items.members(topic_ids)
        cosine = items.vectors[pool] @ vector
        ordered = np.sort(cosine)[::-1]
        best = int(pool[int(np.argmax(cosine))])
        central = int(pool[int(np.argmax(items.item_scores[pool, 0]))])
        if best == row != central and len(pool) >= 10 and ordered[0] - ordered[1] > POPULARITY_WEIGHT + 0.02:
            return texts[items.item_ids[row]], items.item_ids[row], topic_ids
    raise AssertionError("no item is singled out by its own text")


def test_a_searching_newcomer_gets_the_searched_topics_items_closest_to_the_search_first(
    trained: tuple[Settings, GraphGateway, TrainingResult],
) -> None:
    local, gateway, _ = trained
    active = ACTIVE.get(gateway)
    assert active.version is not None
    items = TopicItems.load(topic_items_path(models_dir(local.data_dir), active.version), active.version)
    # the version's topic items file holds the graph's ABOUT edges (up to three per item)
    about = gateway.run_query(
        "MATCH (i:Item)-[a:ABOUT]->(t:Topic) WHERE a.version = $v RETURN i.id AS i, t.id AS t",
        {"v": active.version},
    )
    listed = {
        (items.item_ids[r], items.topic_ids[int(items.item_topics[r, j])])
        for r, j in zip(*np.nonzero(items.item_topics >= 0), strict=True)
    }
    assert {(a["i"], a["t"]) for a in about} == listed
    graph = pull(gateway, int(time.time() * 1000), local.half_life_ms)
    texts = dict(zip(graph.item_ids, topic_texts(graph, item_language(gateway)), strict=True))
    query, target, topic_ids = _own_words_target(items, active, texts)
    serving = Serving(replace(local, explore_share=0.0))
    user = f"newcomer-{uuid.uuid4().hex[:6]}"
    try:
        _search(gateway, local, user, query)
        answer = _recommend(serving, user)
        assert answer["cold_start"] is True
        assert "closest to what they searched first" in answer["reason"]
        ranked = [i["item_id"] for i in answer["items"]]
        # ordered by the search: the item the search singles out first, not the topic's most central
        assert ranked[0] == target
        # from the search's topics: every item on the page is ABOUT one of them
        topical = gateway.run_query(
            "MATCH (:User {id: $u})-[:INTERESTED_IN]->(t:Topic)<-[:ABOUT]-(i:Item) RETURN DISTINCT i.id AS id",
            {"u": user},
        )
        assert set(ranked) <= {r["id"] for r in topical}
        interested = gateway.run_query(
            "MATCH (:User {id: $u})-[:INTERESTED_IN]->(t:Topic) RETURN t.id AS id", {"u": user}
        )
        assert {r["id"] for r in interested} == set(topic_ids)
        scores = [i["score"] for i in answer["items"]]
        assert scores == sorted(scores, reverse=True)
        # a brand none of the searched topics' items has: the page holds no candidate, so its reason
        # does not claim the search ordered it
        others = gateway.run_query(
            "MATCH (i:Item)-[:MADE_BY]->(b:Brand) WITH b, collect(i.id) AS ids "
            "WHERE none(x IN ids WHERE x IN $topical) RETURN b.id AS id, size(ids) AS n ORDER BY n DESC, id",
            {"topical": [r["id"] for r in topical]},
        )
        filtered = serving.recommendations(
            user, k=10, offset=0, exclude="seen", filters=ItemFilters(brand=others[0]["id"]), explain=False
        )
        assert filtered["items"] and not set(i["item_id"] for i in filtered["items"]) & {
            r["id"] for r in topical
        }
        assert filtered["reason"].startswith("no history yet: recommended from the topics")
        assert "closest to what they searched first" not in filtered["reason"]
    finally:
        serving.erase_user(user)
        serving.close()


def _events(gateway: GraphGateway, settings: Settings, raw: list[dict[str, Any]]) -> None:
    events, errors = validate_batch(raw, max_skew_s=300, now_ms=int(time.time() * 1000))
    assert errors == []
    ingest(gateway, events, settings)


def test_a_review_explains_items_of_the_reviewed_items_topic_and_the_path_is_in_the_graph(
    trained: tuple[Settings, GraphGateway, TrainingResult],
) -> None:
    local, gateway, _ = trained
    pair = gateway.run_query(
        "MATCH (h:Item)-[:ABOUT]->(t:Topic)<-[:ABOUT]-(i:Item) WHERE h.id < i.id "
        "RETURN h.id AS hub, i.id AS target, t.id AS topic, t.name AS name ORDER BY hub, target LIMIT 1",
        {},
    )[0]
    now = int(time.time() * 1000)
    base = {"item_id": pair["hub"], "ts": now}
    _events(
        gateway,
        local,
        [
            {**base, "event_id": f"r-{uuid.uuid4().hex}", "user_id": "reviewer", "type": "review",
             "text": "Lovely texture, I would buy it again"},
            {**base, "event_id": f"v-{uuid.uuid4().hex}", "user_id": "viewer", "type": "view"},
        ],
    )  # fmt: skip
    serving = Serving(local)
    try:
        paths = serving.explanation("reviewer", pair["target"], max_paths=50)["paths"]
        reviewed = [p for p in paths if p["kind"] == "reviewed_topic"]
        assert len(reviewed) == 1, [p["kind"] for p in paths]
        path = reviewed[0]
        assert [n["id"] for n in path["nodes"]] == ["reviewer", pair["hub"], pair["topic"], pair["target"]]
        assert [(r["type"], r["direction"]) for r in path["relationships"]] == [
            ("INTERACTED", "out"),
            ("ABOUT", "out"),
            ("ABOUT", "in"),
        ]
        hub, target = path["nodes"][1]["name"], path["nodes"][3]["name"]
        assert path["sentence"] == (
            f"You reviewed {hub}, which is about {pair['name']}, and {target} is about it too."
        )
        assert gateway.run_query(path["cypher"], {}), path["cypher"]
        # viewing the same item is no review: no such path
        viewed = serving.explanation("viewer", pair["target"], max_paths=50)["paths"]
        assert "reviewed_topic" not in {p["kind"] for p in viewed}
    finally:
        serving.erase_user("reviewer")
        serving.erase_user("viewer")
        serving.close()


def test_the_topic_interest_signal_spreads_a_topic_over_its_items_by_centrality() -> None:
    empty = np.zeros(0, dtype=np.int64)
    bare = TrainingGraph(["u"], ["a", "b", "c", "d"], empty, empty, np.zeros(0), empty)
    graph = with_topics(bare, np.array([0, 0, 1, 0]), np.array([0.9, 0.6, 0.7, 0.3]))
    links = same_topic(graph).toarray()
    assert links[0, 1] > links[0, 3] > 0  # b is more central to topic 0 than d
    assert links[0, 2] == 0 and links[2].sum() == 0  # c is alone in its topic
    assert np.diag(links).sum() == 0
    assert TOPIC_INTERESTS in build_signals(graph, use_knowledge=False)
    assert TOPIC_INTERESTS not in build_signals(graph, use_knowledge=False, use_topics=False)
    assert TOPIC_INTERESTS not in build_signals(bare, use_knowledge=False)  # no topics mined
    off = for_variant(TrainConfig(), "no-topics")
    assert TOPIC_INTERESTS not in {s.name for s in signals_for(True, use_topics=off.use_topics)}


def test_the_topic_interest_signal_links_only_a_topics_most_central_items(monkeypatch) -> None:
    """Links per item stay bounded however large a topic grows (they would grow as items²)."""
    monkeypatch.setattr(topic_signal, "TOPIC_LINKS", 2)
    empty = np.zeros(0, dtype=np.int64)
    bare = TrainingGraph(["u"], list("abcde"), empty, empty, np.zeros(0), empty)
    # topic 0: a (0.2), b (0.9), d (0.5), e (0.7); topic 1: c alone
    graph = with_topics(bare, np.array([0, 0, 1, 0, 0]), np.array([0.2, 0.9, 0.7, 0.5, 0.7]))
    links = same_topic(graph).toarray()
    assert set(np.flatnonzero(links[0])) == {1, 4}  # a: b and e, topic 0's two most central
    assert set(np.flatnonzero(links[3])) == {1, 4}
    assert set(np.flatnonzero(links[1])) == {4} and set(np.flatnonzero(links[4])) == {1}
    assert links[2].sum() == 0


def test_training_fits_the_topic_signal_weight_on_validation(
    trained: tuple[Settings, GraphGateway, TrainingResult],
) -> None:
    _, _, result = trained
    artifacts = result.artifacts
    assert result.topics is not None and TOPIC_INTERESTS in artifacts.components
    assert artifacts.components[TOPIC_INTERESTS].nnz > 0
    # fitted like every other signal, and its single-feature validation NDCG recorded; a weight
    # only with the paired test's evidence that it helps on validation (0 = off)
    assert TOPIC_INTERESTS in artifacts.parameters["single_feature_validation_ndcg"]
    evidence = artifacts.parameters["signal_evidence_p"]
    if artifacts.weights[TOPIC_INTERESTS] > 0.0:
        assert evidence[TOPIC_INTERESTS] < EVIDENCE_P
    else:
        assert artifacts.weights[TOPIC_INTERESTS] == 0.0
        assert evidence.get(TOPIC_INTERESTS, 1.0) >= EVIDENCE_P
    # the stored model blends it (a signal without a weight would be refused)
    Recommender(artifacts)


def test_new_items_get_their_topic_without_a_retrain(
    trained: tuple[Settings, GraphGateway, TrainingResult],
) -> None:
    local, gateway, _ = trained
    active = ACTIVE.get(gateway)
    name = active.names[0]
    gateway.run_query("CREATE (:Item {id: 'new-item', title: $t, listed: true})", {"t": name})
    gateway.run_query("CREATE (:Item {id: 'blank-item', listed: true})", {})
    # what the fold-in task (workers.tasks.fold_in_items) runs for items created after training
    folded = embed_new_items(gateway, local, ["new-item", "blank-item"])
    assert folded == {"version": active.version, "folded": 1, "skipped": 1}
    rows = gateway.run_query(
        "MATCH (i:Item)-[a:ABOUT]->(t:Topic) WHERE i.id IN ['new-item', 'blank-item'] "
        "RETURN i.id AS i, t.id AS t, a.version AS v, a.score AS s",
        {},
    )
    # its nearest topic first, and at most two more, all above the bar (as training links items);
    # an item without text gets none
    assert rows, "the fold-in gave the new item no topic"
    rows.sort(key=lambda r: -r["s"])
    best = active.ids[int(np.argmax(active.centroids @ encode([name])[0]))]
    assert (rows[0]["i"], rows[0]["t"], rows[0]["v"]) == ("new-item", best, active.version)
    assert 1 <= len(rows) <= 3 and {r["i"] for r in rows} == {"new-item"}
    assert min(r["s"] for r in rows) >= 0.3
    # only the active version's topics are given out
    assert about_new_items(gateway, "not-active", ["new-item"], encode([name])) == 0
    # under an incremental version the edges carry its root, whose topics they are
    gateway.run_query("CREATE (:Item {id: 'child-item', title: $t, listed: true})", {"t": name})
    assert about_new_items(gateway, active.version, ["child-item"], encode([name]), topics_of="the-root") == 1
    tagged = gateway.run_query(
        "MATCH (:Item {id: 'child-item'})-[a:ABOUT]->() RETURN DISTINCT a.version AS v", {}
    )
    assert tagged == [{"v": "the-root"}]
    gateway.run_query("MATCH (i:Item {id: 'child-item'}) DETACH DELETE i", {})


def test_topics_are_searched_by_meaning_and_shown_with_items_and_users(
    trained: tuple[Settings, GraphGateway, TrainingResult],
) -> None:
    local, gateway, _ = trained
    active = ACTIVE.get(gateway)
    serving = Serving(local)
    try:
        text = active.names[-1]
        found = serving.search_topics(text, limit=3)
        cosines = active.centroids @ encode([text])[0]
        assert found["model_version"] == active.version and len(found["topics"]) == min(3, len(active.ids))
        assert found["topics"][0]["id"] == active.ids[int(np.argmax(cosines))]
        scores = [t["score"] for t in found["topics"]]
        assert scores == sorted(scores, reverse=True)
        assert serving.search_topics("  ", limit=3)["topics"] == []
        topic_id = found["topics"][0]["id"]
        _search(gateway, local, "topic-fan", text)
        detail = serving.topic(topic_id, items=4)
        interested = gateway.run_query(
            "MATCH (u:User)-[:INTERESTED_IN]->(:Topic {id: $t}) RETURN count(u) AS n", {"t": topic_id}
        )[0]["n"]
        assert detail["interested_users"] == interested >= 1
        assert detail["keywords"] and 1 <= len(detail["items"]) <= 4
        item_scores = [i["score"] for i in detail["items"]]
        assert item_scores == sorted(item_scores, reverse=True)
        with pytest.raises(NotFound):
            serving.topic("topic-none", items=4)
    finally:
        serving.close()


def test_absorbed_ids_hand_retired_topics_to_their_nearest_close_topic_and_pass_absorptions_on() -> None:
    rng = np.random.default_rng(2)
    old = rng.normal(size=(4, 16)).astype(np.float32)
    old /= np.linalg.norm(old, axis=1, keepdims=True)
    old[1] = old[0] + 0.3 * old[1]  # topic-2 lies close to topic-1: a retrain merges them
    old[1] /= np.linalg.norm(old[1])
    merged = old[0] + old[1]
    centroids = np.vstack(
        [merged / np.linalg.norm(merged), old[2], rng.normal(size=(1, 16)).astype(np.float32)]
    )
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    model = TopicModel(["a", "b", "c"], [[], [], []], centroids, [1, 1, 1], np.zeros(0), np.zeros(0))
    previous = [(f"topic-{k + 1}", old[k]) for k in range(4)]
    model.ids = assign_ids(model, previous, [i for i, _ in previous])
    assert model.ids[1] == "topic-3" and model.ids[2] == "topic-5"
    kept, retired = ("topic-1", "topic-2") if model.ids[0] == "topic-1" else ("topic-2", "topic-1")
    assert float(centroids[0] @ old[int(retired[-1]) - 1]) >= STABLE_MIN_COSINE
    # the retired twin goes to the merged topic with what it had absorbed, and so does what the kept
    # one had; topic-4 is far from every new topic: dropped, with what it had absorbed
    inherited = {kept: ["topic-0"], retired: ["topic-9"], "topic-3": ["topic-8"], "topic-4": ["topic-7"]}
    assert absorbed_ids(model, previous, inherited) == [
        sorted(["topic-0", retired, "topic-9"]),
        ["topic-8"],
        [],
    ]
    assert absorbed_ids(model, [], {}) == [[], [], []]


_LIPS, _GLOSS, _HAIR, _SUN = (
    "red matte lipstick",
    "pink glossy lipstick",
    "shampoo for dry damaged hair",
    "sunscreen lotion spf 50",
)


def _hand_model(centroids: np.ndarray) -> TopicModel:
    """Topics with these centroids, three items on each (their text vector the centroid itself)."""
    centroids = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    n = len(centroids)
    item_topic = np.repeat(np.arange(n), 3)
    item_topics = np.full((3 * n, 3), -1, dtype=np.int64)
    item_topics[:, 0] = item_topic
    item_scores = np.zeros((3 * n, 3), dtype=np.float32)
    item_scores[:, 0] = 1.0
    names = [f"topic {t}" for t in range(n)]
    return TopicModel(
        names,
        [[name] for name in names],
        centroids.astype(np.float32),
        [3] * n,
        item_topic,
        np.ones(3 * n, dtype=np.float32),
        item_topics=item_topics,
        item_scores=item_scores,
        vectors=np.repeat(centroids, 3, axis=0).astype(np.float32),
    )


def _hand_version(
    gateway: GraphGateway, data_dir: Path, version: str, centroids: np.ndarray, *, activate: bool = True
) -> TopicModel:
    """A version written by the real statements with hand-made topics (MiniLM centroids), then
    promoted (unless not ``activate``: a candidate)."""
    model = _hand_model(centroids)
    items = [f"{version}-item-{k}" for k in range(len(model.item_topic))]
    gateway.run_query("UNWIND $ids AS id CREATE (:Item {id: id, title: id, listed: true})", {"ids": items})
    gateway.write(
        CREATE_VERSION,
        {
            "id": version,
            "owner": version,
            "now": int(time.time() * 1000),
            "data_until": 0,
            "parameters": "{}",
            "counts": "{}",
            "metrics": "{}",
            "artifact": None,
        },
    )
    gateway.write(
        MARK_VERSION_READY, {"id": version, "owner": version, "erased": [], "now": int(time.time() * 1000)}
    )
    write_topics(gateway, version, items, model, folder=models_dir(data_dir), link=False)
    if activate:
        promote(gateway, data_dir, version)
    return model


def _lipsticks(data_dir: Path) -> tuple[str, np.ndarray]:
    """A run id for version ids (ACTIVE caches topics by version id, across graphs) and the
    MiniLM vectors of the four hand-made topics; the models folder made."""
    models_dir(data_dir).mkdir(parents=True, exist_ok=True)
    return uuid.uuid4().hex[:8], encode([_LIPS, _GLOSS, _HAIR, _SUN])


def test_interests_in_merged_topics_survive_a_retrain_and_a_rollback_serves_the_old_topics(
    settings: Settings, gateway: GraphGateway, tmp_path: Path
) -> None:
    run, (lips, gloss, hair, sun) = _lipsticks(tmp_path)
    first = _hand_version(gateway, tmp_path, f"m1-{run}", np.stack([lips, gloss, hair]))
    # the user's searches, matched to m1's topics by the real ingestion: both lipstick topics
    _search(gateway, settings, "glossy", _GLOSS)
    _search(gateway, settings, "glossy", _HAIR)
    now, half = int(time.time() * 1000) + 3_600_000, settings.half_life_ms
    under_first = user_topics(gateway, "glossy", now, half)
    edges = {
        r["t"]: r
        for r in gateway.run_query(
            "MATCH (:User {id: 'glossy'})-[x:INTERESTED_IN]->(t:Topic) RETURN t.id AS t, x.weight AS w, "
            "x.weight_ts AS ts, x.count AS n, x.last_ts AS last",
            {},
        )
    }
    lips_id, gloss_id, hair_id = first.ids
    assert {lips_id, gloss_id, hair_id} <= set(edges)
    assert {t.topic_id for t in under_first} == {lips_id, gloss_id, hair_id}

    # a retrain merges the two lipstick topics (a growing catalogue, a new sunscreen topic)
    merged = lips + 0.9 * gloss
    second = _hand_version(gateway, tmp_path, f"m2-{run}", np.stack([merged, hair, sun]))
    # the merged topic keeps one lipstick topic's id (which one is the Hungarian match's choice); the
    # other lipstick topic is retired, its users' interests with it unless it is absorbed
    kept_id = second.ids[0]
    (retired_id,) = {lips_id, gloss_id} - {kept_id}
    assert kept_id in (lips_id, gloss_id) and second.ids[1] == hair_id and second.ids[2] not in first.ids
    absorbs = gateway.run_query(
        "MATCH (:ModelVersion {id: $v})-[h:HAS_TOPIC]->(t:Topic) RETURN t.id AS t, h.absorbs AS a",
        {"v": f"m2-{run}"},
    )
    assert {r["t"]: r["a"] for r in absorbs} == {kept_id: [retired_id], hair_id: None, second.ids[2]: None}

    def weight(topic_id: str) -> float:
        e = edges[topic_id]
        return e["w"] * 2 ** (-(now - e["ts"]) / half)

    def merged_view() -> dict[str, tuple[float, int, Any]]:
        return {
            t.topic_id: (round(t.weight, 9), t.events, t.last_ts)
            for t in user_topics(gateway, "glossy", now, half)
        }

    expected = {
        kept_id: (
            round(weight(lips_id) + weight(gloss_id), 9),
            edges[lips_id]["n"] + edges[gloss_id]["n"],
            max(edges[lips_id]["last"], edges[gloss_id]["last"]),
        ),
        hair_id: (round(weight(hair_id), 9), edges[hair_id]["n"], edges[hair_id]["last"]),
    }
    assert merged_view() == expected
    # GET /v1/topics/{id} and the topic's audience count the retired topic's users as the absorbing
    # topic's (each user once, their two edges one interest); a user of the retired topic only too
    gateway.run_query(
        "MATCH (t:Topic {id: $t}) MERGE (u:User {id: 'retired-only'}) "
        "CREATE (u)-[:INTERESTED_IN {weight: 1.0, weight_ts: $now, count: 1, first_ts: $now, last_ts: $now}]->(t)",
        {"t": retired_id, "now": now},
    )
    # a flagged bot interested in the topic is counted by neither (the audience leaves bots out)
    gateway.run_query(
        "MATCH (t:Topic {id: $t}) CREATE (:User {id: 'topic-bot', flagged_bot: true})"
        "-[:INTERESTED_IN {weight: 1.0, weight_ts: $now, count: 1, first_ts: $now, last_ts: $now}]->(t)",
        {"t": kept_id, "now": now},
    )
    assert topic_detail(gateway, kept_id, 3)["interested_users"] == 2
    assert topic_detail(gateway, retired_id, 3)["interested_users"] == 2  # its own, as before
    page = audience_page(gateway, settings, Audience("topic", kept_id), limit=10)
    members = {m["user_id"]: m for m in page["users"]}
    assert page["size"] == 2 and set(members) == {"glossy", "retired-only"}
    assert members["glossy"]["events"] == expected[kept_id][1]
    assert members["glossy"]["last_ts"] == expected[kept_id][2]
    # served with the absorbing topic's own items
    (top,) = [t for t in user_topics(gateway, "glossy", now, half) if t.topic_id == kept_id]
    assert {i["id"] for i in top.items} == {f"m2-{run}-item-{k}" for k in range(3)}

    # a rollback serves the older version's own topics and the interests in them, as before
    promote(gateway, tmp_path, f"m1-{run}")
    assert user_topics(gateway, "glossy", now, half) == under_first
    assert topic_detail(gateway, kept_id, 3)["interested_users"] == 1  # its own users only again
    # activating a version again (twice) doubles nothing
    promote(gateway, tmp_path, f"m2-{run}")
    promote(gateway, tmp_path, f"m2-{run}")
    assert merged_view() == expected
    assert topic_detail(gateway, kept_id, 3)["interested_users"] == 2
    # the next retrain keeps the merged topic: what it absorbed passes on with it
    third = _hand_version(gateway, tmp_path, f"m3-{run}", np.stack([merged, hair, sun]))
    assert third.ids == second.ids
    passed = gateway.run_query(
        "MATCH (:ModelVersion {id: $v})-[h:HAS_TOPIC]->(:Topic {id: $t}) RETURN h.absorbs AS a",
        {"v": f"m3-{run}", "t": kept_id},
    )
    assert passed == [{"a": [retired_id]}]
    assert merged_view() == expected


def test_a_rollback_links_items_folded_in_under_another_version_to_its_own_topics(
    settings: Settings, gateway: GraphGateway, tmp_path: Path
) -> None:
    run, (lips, gloss, hair, sun) = _lipsticks(tmp_path)
    first = _hand_version(gateway, tmp_path, f"f1-{run}", np.stack([lips, gloss, hair]))
    second = _hand_version(gateway, tmp_path, f"f2-{run}", np.stack([lips + 0.9 * gloss, hair, sun]))
    # an item created after f2 was trained, folded in under it (what embed_new_items runs for topics)
    gateway.run_query("CREATE (:Item {id: 'late', title: $t, listed: true})", {"t": _GLOSS})
    vector = encode([_GLOSS])
    assert about_new_items(gateway, f"f2-{run}", ["late"], vector) == 1

    def about() -> list[tuple[str, str, float]]:
        rows = gateway.run_query(
            "MATCH (:Item {id: 'late'})-[a:ABOUT]->(t:Topic) RETURN t.id AS t, a.version AS v, a.score AS s",
            {},
        )
        return sorted((r["t"], r["v"], round(r["s"], 4)) for r in rows)

    def expected(model: TopicModel, version: str) -> list[tuple[str, str, float]]:
        cosines = model.centroids @ (vector[0] / np.linalg.norm(vector[0]))
        return sorted(
            (model.ids[t], version, round(float(cosines[t]), 4))
            for t in np.argsort(-cosines)[:3]
            if cosines[t] >= 0.3
        )

    assert about() == expected(second, f"f2-{run}")
    # the rollback links it to f1's own nearest topics, as fold-in would have; twice changes nothing
    for _ in range(2):
        promote(gateway, tmp_path, f"f1-{run}")
        assert about() == expected(first, f"f1-{run}")
    assert {t for t, _, _ in about()} == {first.ids[0], first.ids[1]}  # both lipstick topics, not hair
    # and promoting the newer version again gives it its topics back
    promote(gateway, tmp_path, f"f2-{run}")
    assert about() == expected(second, f"f2-{run}")


def _child_version(
    gateway: GraphGateway, parent: str, child: str, root: str | None = None, now: int | None = None
) -> None:
    """An incremental child of ``parent`` (of ``root``: default ``parent``), as an incremental
    update writes one: ready, no topic-items file of its own, its parent's topics copied."""
    now = int(time.time() * 1000) if now is None else now
    gateway.write(
        CREATE_CHILD_VERSION,
        {
            "parent": parent,
            "id": child,
            "owner": child,
            "now": now,
            "data_until": now,
            "parameters": json.dumps({"incremental": {"depth": 1, "root": root or parent}}),
            "counts": "{}",
            "metrics": "{}",
            "artifact": None,
        },
    )
    gateway.write(COPY_TOPICS, {"parent": parent, "id": child, "owner": child})
    gateway.write(MARK_VERSION_READY, {"id": child, "owner": child, "erased": [], "now": now})


def test_activating_a_version_whose_file_the_graph_holds_writes_no_about_edge(
    settings: Settings, gateway: GraphGateway, tmp_path: Path
) -> None:
    run, (lips, gloss, hair, sun) = _lipsticks(tmp_path)
    root, child = f"p1-{run}", f"p1c-{run}"
    first = _hand_version(gateway, tmp_path, root, np.stack([lips, gloss, hair]))
    own = {(f"{root}-item-{k}", first.ids[k // 3], 1.0, root) for k in range(9)}  # its file's rows

    def about(prefix: str) -> set[tuple[str, str, float, str]]:
        rows = gateway.run_query(
            "MATCH (i:Item)-[a:ABOUT]->(t:Topic) WHERE i.id STARTS WITH $p "
            "RETURN i.id AS i, t.id AS t, a.score AS s, a.version AS v",
            {"p": prefix},
        )
        return {(r["i"], r["t"], round(r["s"], 4), r["v"]) for r in rows}

    def scribble() -> None:  # a score no write from the file gives: any rewrite of the edges resets it
        gateway.run_query(
            "MATCH (i:Item)-[a:ABOUT]->() WHERE i.id STARTS WITH $p SET a.score = -1.0", {"p": root}
        )

    scribbled = {(i, t, -1.0, v) for i, t, _, v in own}
    assert about(f"{root}-") == own
    scribble()
    # its incremental child (same file), activating the root again, and a rollback to it write no edge
    _child_version(gateway, root, child)
    promote(gateway, tmp_path, child)
    assert about(f"{root}-") == scribbled
    promote(gateway, tmp_path, root)
    promote(gateway, tmp_path, child)
    assert about(f"{root}-") == scribbled
    # an item folded in under the child (its root's topics) stays linked as fold-in linked it
    gateway.run_query("CREATE (:Item {id: $id, title: $t, listed: true})", {"id": f"late-{run}", "t": _GLOSS})
    assert about_new_items(gateway, child, [f"late-{run}"], encode([_GLOSS]), topics_of=root) == 1
    folded = about(f"late-{run}")
    assert {v for *_, v in folded} == {root} and {t for _, t, _, _ in folded} >= {first.ids[1]}
    promote(gateway, tmp_path, root)
    assert about(f"{root}-") == scribbled and about(f"late-{run}") == folded
    # an edge of another version (a fold-in under the version before the switch) is deleted, and
    # then the file's edges are all written again: one of them may have been the deleted one
    gateway.run_query("MATCH (i:Item {id: $i})-[a:ABOUT]->() SET a.version = 'gone'", {"i": f"{root}-item-0"})
    promote(gateway, tmp_path, child)
    assert about(f"{root}-") == own and about(f"late-{run}") == folded
    # another full version's edges, then the root's again: written from its file
    _hand_version(gateway, tmp_path, f"p2-{run}", np.stack([lips + 0.9 * gloss, hair, sun]))
    assert about(f"{root}-") == set()
    scribble()
    promote(gateway, tmp_path, root)
    assert about(f"{root}-") == own and about(f"late-{run}") == folded
    # training writing the version's file again (a redelivered job) forgets the mark: the next
    # activation writes the new file's edges
    again = _hand_model(np.stack([gloss, lips, hair]))
    items = [f"{root}-item-{k}" for k in range(9)]
    write_topics(gateway, root, items, again, folder=models_dir(tmp_path), link=False)
    promote(gateway, tmp_path, root)
    assert about(f"{root}-") >= {(i, again.ids[k // 3], 1.0, root) for k, i in enumerate(items)}
    # A full write with another writer beside it (another process's promotion, which deletes
    # what it does not keep) marks nothing, so the next activation writes every edge again.
    beside = AboutWrite.begin(gateway)
    other = _hand_version(gateway, tmp_path, f"p3-{run}", np.stack([hair, sun, lips]))
    assert gateway.read(ABOUT_WRITTEN, {"file": f"p3-{run}"}) == [{"marked": 0}]
    assert not beside.end(gateway, f"p3-{run}", f"p3-{run}", complete=True)  # another began after it
    gateway.run_query(
        "MATCH (i:Item)-[a:ABOUT]->() WHERE i.id STARTS WITH $p SET a.score = -1.0", {"p": "p3-"}
    )
    promote(gateway, tmp_path, f"p3-{run}")
    third = {(f"p3-{run}-item-{k}", other.ids[k // 3], 1.0, f"p3-{run}") for k in range(9)}
    assert about(f"p3-{run}-") == third
    assert gateway.read(ABOUT_WRITTEN, {"file": f"p3-{run}"}) == [{"marked": 1}]  # alone this time


def test_incremental_updates_keep_the_mark_when_the_marked_version_is_collected(
    settings: Settings, gateway: GraphGateway, tmp_path: Path
) -> None:
    # A chain of incremental children, each switched to by the merge's own statement, until
    # garbage collection (two older activated versions kept) deletes the root, the version its
    # promotion marked: beat's topic check still finds the graph's edges known and writes nothing.
    run, (lips, gloss, hair, _sun) = _lipsticks(tmp_path)
    root = f"g0-{run}"
    _hand_version(gateway, tmp_path, root, np.stack([lips, gloss, hair]))
    gateway.run_query("MATCH (i:Item)-[a:ABOUT]->() SET a.score = -1.0", {})  # a rewrite resets it
    start = int(time.time() * 1000)
    parent = root
    for k in range(1, 5):
        child = f"g{k}-{run}"
        _child_version(gateway, parent, child, root=root, now=start + k)
        switch = {"id": child, "parent": parent, "owner": child, "now": start + k}
        assert gateway.write(ACTIVATE_CHILD_VERSION, switch).rows == [{"activated": 1, "owned": 1}]
        parent = child
    assert set(collect_garbage(gateway, models_dir(tmp_path), keep=3)) == {root, f"g1-{run}"}
    assert topic_items_path(models_dir(tmp_path), root).is_file()  # the children's topics' file stays
    later = int(time.time() * 1000) + 10 * ABOUT_SETTLE_MS
    assert relink_active_topics(gateway, tmp_path, now_ms=later) is None
    assert gateway.read(ABOUT_WRITTEN, {"file": root}) == [{"marked": 3}]  # g2, g3 and the active g4
    scores = gateway.run_query("MATCH (:Item)-[a:ABOUT]->() RETURN collect(DISTINCT a.score) AS s", {})
    assert scores == [{"s": [-1.0]}]  # no edge written again


def test_items_folded_in_under_another_version_are_linked_inside_the_writer(
    settings: Settings, gateway: GraphGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An item folded in under another version (a topic-text vector kept, ABOUT nothing) is linked
    # while the promotion's writer of ABOUT edges is still in flight, on both the full write and
    # the write skipped for a marked file: after the writer's end, beat's repair may claim.
    run, (lips, gloss, hair, _sun) = _lipsticks(tmp_path)
    root, late = f"f1-{run}", f"late-{run}"
    vector = [round(float(x), 6) for x in encode([_GLOSS])[0]]
    gateway.run_query(
        "CREATE (:Item {id: $id, title: $t, listed: true, topic_vector: $v})",
        {"id": late, "t": _GLOSS, "v": vector},
    )
    running: list[int] = []
    write = gateway.write

    def watched(statement: Any, params: Any = None) -> Any:  # the real write, noting writers in flight
        if statement is WRITE_ABOUT and any(r["item_id"] == late for r in params["rows"]):
            rows = gateway.run_query("MATCH (r:Revision {id: 'about'}) RETURN r.running AS n", {})
            running.append(rows[0]["n"])
        return write(statement, params)

    monkeypatch.setattr(gateway, "write", watched)
    _hand_version(gateway, tmp_path, root, np.stack([lips, gloss, hair]))  # every edge written
    gateway.run_query("MATCH (:Item {id: $id})-[a:ABOUT]->() DELETE a", {"id": late})
    promote(gateway, tmp_path, root)  # its file marked: no edge of the file written
    assert running == [1, 1]
    assert gateway.read(ABOUT_WRITTEN, {"file": root}) == [{"marked": 1}]
    linked = gateway.run_query("MATCH (:Item {id: $id})-[a:ABOUT]->() RETURN a.version AS v", {"id": late})
    assert linked and {r["v"] for r in linked} == {root}


def test_a_promotion_that_died_before_its_switch_gets_the_active_versions_topics_back(
    settings: Settings, gateway: GraphGateway, tmp_path: Path
) -> None:
    def about() -> set[tuple[str, str, str]]:
        rows = gateway.run_query(
            "MATCH (i:Item)-[a:ABOUT]->(t:Topic) RETURN i.id AS i, t.id AS t, a.version AS v", {}
        )
        return {(r["i"], r["t"], r["v"]) for r in rows}

    run, (lips, gloss, hair, sun) = _lipsticks(tmp_path)
    active, candidate = f"d1-{run}", f"d2-{run}"
    _hand_version(gateway, tmp_path, active, np.stack([lips, gloss, hair]))
    own = about()  # nine items, each ABOUT one of its three topics
    assert len(own) == 9 and {v for *_, v in own} == {active}
    assert graph_topics(gateway) == version_topics(gateway, active)
    _hand_version(gateway, tmp_path, candidate, np.stack([lips + 0.9 * gloss, hair, sun]), activate=False)
    assert about() == own  # a candidate changes nothing served
    # promote() up to the switch: the candidate's topics are written, then the process dies
    assert link_topic_items(gateway, models_dir(tmp_path), [candidate])
    assert {v for *_, v in about()} == {candidate}
    assert graph_topics(gateway) == version_topics(gateway, candidate) != version_topics(gateway, active)
    # beat's check leaves a write that just ended alone (its switch would follow it at once) ...
    assert relink_active_topics(gateway, tmp_path) is None
    assert {v for *_, v in about()} == {candidate}
    # ... and a writer in flight (another promotion)
    later = int(time.time() * 1000) + ABOUT_SETTLE_MS + 1_000
    beside = AboutWrite.begin(gateway)
    assert relink_active_topics(gateway, tmp_path, now_ms=later + 1_000) is None
    beside.end(gateway, candidate, candidate, complete=False)
    # once the settle time has passed with no writer, the active version's topics are back
    later = int(time.time() * 1000) + ABOUT_SETTLE_MS + 1_000
    assert relink_active_topics(gateway, tmp_path, now_ms=later) == active
    assert about() == own and graph_topics(gateway) == version_topics(gateway, active)
    assert gateway.read(ABOUT_WRITTEN, {"file": active}) == [{"marked": 1}]
    assert relink_active_topics(gateway, tmp_path, now_ms=later + 2 * ABOUT_SETTLE_MS) is None  # right now
    # beat runs the check every minute: repaired within about two minutes of the dead write's end
    schedule = celery_config(settings)["beat_schedule"]
    entry = schedule["relink-topics"]  # type: ignore[index]
    assert (entry["task"], entry["schedule"]) == (RELINK_TOPICS, TOPIC_REPAIR_INTERVAL_S)


def test_item_reviews_leave_out_bots_and_keep_the_newest_in_a_stable_order(gateway: GraphGateway) -> None:
    item = f"reviewed-{uuid.uuid4().hex[:6]}"
    # five users' reviews (user, review time, bot?): the newest is a flagged bot's; two share a time
    reviews = [
        ("r-a", 10, False),
        ("r-b", 40, False),
        ("r-c", 30, False),
        ("r-d", 30, False),
        ("r-bot", 50, True),
    ]
    gateway.run_query(
        "CREATE (i:Item {id: $item}) WITH i UNWIND $rows AS row "
        "CREATE (:User {id: row[0] + $item, flagged_bot: row[2]})"
        "-[:INTERACTED {review_text: 'by ' + row[0], review_ts: row[1]}]->(i)",
        {"item": item, "rows": [list(r) for r in reviews]},
    )
    # the newest three of the people: r-b, then r-c before r-d by user id (not r-a, not the bot)
    assert item_language(gateway)[item] == "by r-b by r-c by r-d"


def test_active_topic_names_are_the_versions_own_not_a_dead_promotions(gateway: GraphGateway) -> None:
    # The active version named topic-1 'lip care'; a candidate's promotion wrote its name 'sunscreen'
    # onto the shared Topic node and died before its switch: the active version's name is served.
    gateway.run_query(
        "CREATE (m:ModelVersion {id: 'v1', active: true}), (c:ModelVersion {id: 'v2', active: false}),"
        "       (t:Topic {id: 'topic-1', name: 'sunscreen'}), (u:Topic {id: 'topic-2', name: 'hair'}),"
        "       (m)-[:HAS_TOPIC {name: 'lip care', centroid: [1.0, 0.0]}]->(t),"
        "       (c)-[:HAS_TOPIC {name: 'sunscreen', centroid: [0.0, 1.0]}]->(t),"
        "       (m)-[:HAS_TOPIC {centroid: [0.0, 1.0]}]->(u)",
        {},
    )
    index = ActiveTopics().get(gateway)
    # an edge written without a name falls back to the Topic's
    assert dict(zip(index.ids, index.names, strict=True)) == {"topic-1": "lip care", "topic-2": "hair"}


def _two_versions_naming_topic_1(gateway: GraphGateway) -> None:
    # v1 (active) and v2 both have topic-1 and name it differently; the shared Topic node holds the
    # other version's name (a dead promotion's, or the one before a rollback's relink).
    gateway.run_query(
        "CREATE (m1:ModelVersion {id: 'v1', active: true}), (m2:ModelVersion {id: 'v2', active: false}),"
        "       (t:Topic {id: 'topic-1', name: 'sunscreen', keywords: ['spf']}),"
        "       (m1)-[:HAS_TOPIC {name: 'lip care', keywords: ['lip'], centroid: [1.0, 0.0]}]->(t),"
        "       (m2)-[:HAS_TOPIC {name: 'sunscreen', keywords: ['spf'], centroid: [0.0, 1.0]}]->(t),"
        "       (u:User {id: 'u1'}), (seen:Item {id: 'seen', title: 'balm'}), (i:Item {id: 'i1', title: 'gloss'}),"
        "       (seen)-[:ABOUT {score: 0.9, version: 'v1'}]->(t), (i)-[:ABOUT {score: 0.8, version: 'v1'}]->(t),"
        "       (u)-[:INTERACTED {n_review: 1, weight: 1.0, weight_ts: 1000, last_ts: 1000}]->(seen),"
        "       (u)-[:INTERESTED_IN {weight: 1.0, weight_ts: 1000, last_ts: 1000, count: 1}]->(t)",
        {},
    )


def _activate_v2(gateway: GraphGateway) -> None:
    # v2 becomes active; the Topic node still holds v1's name
    gateway.run_query(
        "MATCH (m:ModelVersion) SET m.active = (m.id = 'v2') WITH count(*) AS n "
        "MATCH (t:Topic {id: 'topic-1'}) SET t.name = 'lip care', t.keywords = ['lip']",
        {},
    )


def test_two_versions_naming_one_topic_each_serve_their_own_name(gateway: GraphGateway) -> None:
    # A topic's detail, a user's topics and the explanation paths through it all give the active
    # version's name.
    _two_versions_naming_topic_1(gateway)

    def served() -> tuple[str, list[str], str, dict[str, str]]:
        detail = topic_detail(gateway, "topic-1", 3)
        (interest,) = user_topics(gateway, "u1", 1000, 1e9)
        paths = read_paths(gateway, "u1", ["i1"], hubs=30, now_ms=1000, half_life_ms=1e9)
        names = {
            row["kind"]: node["name"] for row in paths for node in row["nodes"] if node["label"] == "Topic"
        }
        return detail["name"], detail["keywords"], interest.name, names

    both = {"interest", "reviewed_topic"}
    assert served() == ("lip care", ["lip"], "lip care", dict.fromkeys(both, "lip care"))
    _activate_v2(gateway)
    assert served() == ("sunscreen", ["spf"], "sunscreen", dict.fromkeys(both, "sunscreen"))


def test_an_items_neighbourhood_and_search_name_topics_as_the_active_version_does(
    gateway: GraphGateway,
) -> None:
    # The console's item graph names a topic as GET /v1/topics/{id} does, one hop away (seen's
    # topic) or two (the topic of the item bought with near). topic-9 is one the active version
    # lacks (a dead promotion's new topic, until the repair): its Topic node's name, the only one.
    _two_versions_naming_topic_1(gateway)
    gateway.run_query(
        "MATCH (seen:Item {id: 'seen'}) "
        "CREATE (near:Item {id: 'near', title: 'tube'})-[:ALSO_BOUGHT]->(seen),"
        "       (seen)-[:ABOUT {score: 0.5, version: 'v3'}]->(:Topic {id: 'topic-9', name: 'candidate'})",
        {},
    )

    def named(item_id: str) -> dict[str, str]:
        graph = item_neighbourhood(gateway, item_id, first=40, per_node=3)
        return {n["id"]: n["name"] for n in graph["nodes"] if n["label"] == "Topic"}

    def found(query: str) -> dict[str, str]:
        return {hit["id"]: hit["name"] for hit in search(gateway, query, ["topic"], 10)["results"]}

    assert named("seen") == named("near") == {"topic-1": "lip care", "topic-9": "candidate"}
    # search finds and names a topic by the active version's name too (GET /v1/search?kind=topic)
    assert found("lip") == {"topic-1": "lip care"} and found("sunscreen") == {}
    assert found("topic-") == {"topic-1": "lip care", "topic-9": "candidate"}
    _activate_v2(gateway)
    assert topic_detail(gateway, "topic-1", 3)["name"] == "sunscreen"
    assert named("seen") == named("near") == {"topic-1": "sunscreen", "topic-9": "candidate"}
    assert found("sun") == {"topic-1": "sunscreen"} and found("lip") == {}


def test_a_neighbourhood_keeps_the_lowest_second_neighbours_and_names_them_as_the_active_version(
    gateway: GraphGateway,
) -> None:
    # near's neighbours: a brand with no other item, a user, and seen, which has five neighbours
    # besides near and two users (a0 sorts first, u1 among them): c1, m2 and topic-1 (the lowest
    # ids) are kept, topic-1 named by the active version; the brand and the user keep their row
    # with no second neighbour.
    _two_versions_naming_topic_1(gateway)
    gateway.run_query(
        "MATCH (seen:Item {id: 'seen'}), (u1:User {id: 'u1'}) "
        "CREATE (near:Item {id: 'near', title: 'tube'})-[:ALSO_BOUGHT]->(seen),"
        "       (near)-[:MADE_BY]->(:Brand {id: 'lonely', name: 'Lonely'}),"
        "       (a0:User {id: 'a0'})-[:INTERACTED {weight: 1.0, weight_ts: 1000}]->(seen),"
        "       (a0)-[:INTERACTED {weight: 1.0, weight_ts: 1000}]->(near),"
        "       (seen)-[:ALSO_BOUGHT]->(:Item {id: 'z9', title: 'z'}),"
        "       (:Item {id: 'x9', title: 'x'})-[:ALSO_BOUGHT]->(seen),"
        "       (seen)-[:ALSO_BOUGHT]->(:Item {id: 'm2', title: 'mascara'}),"
        "       (seen)-[:IN_CATEGORY]->(:Category {id: 'c1', name: 'Lips'})",
        {},
    )

    def hops() -> dict[str, list[tuple[str, str]]]:
        graph = item_neighbourhood(gateway, "near", first=40, per_node=3)
        names = {n["key"]: n["name"] for n in graph["nodes"]}
        by_node: dict[str, list[tuple[str, str]]] = {}
        for edge in graph["relationships"]:  # in the read's order, each first neighbour's hops in turn
            ends = (edge["source"], edge["target"])
            if "Item:near" in ends:
                by_node.setdefault(next(end for end in ends if end != "Item:near"), [])
            else:  # a second hop: only seen has any
                other = next(end for end in ends if end != "Item:seen")
                by_node.setdefault("Item:seen", []).append((other, names[other]))
        return by_node

    kept = [("Category:c1", "Lips"), ("Item:m2", "mascara"), ("Topic:topic-1", "lip care")]
    assert hops() == {"Brand:lonely": [], "User:a0": [], "Item:seen": kept}
    _activate_v2(gateway)
    assert hops() == {
        "Brand:lonely": [],
        "User:a0": [],
        "Item:seen": [*kept[:2], ("Topic:topic-1", "sunscreen")],
    }
