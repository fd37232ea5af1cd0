"""Model versions: write-back, the atomic switch, crashes before it, garbage collection, redelivery."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from celery.result import AsyncResult

from graph_schema.statements.models import (
    ACTIVE_VERSION,
    CLEAR_VERSION_TOPICS,
    CREATE_VERSION,
    FOLDED_ITEMS,
    MODEL_VERSIONS,
    POPULARITY_ADJUSTMENTS,
    TRAINED_ITEMS,
    WRITE_FOLDED_ITEMS,
)
from graph_schema.statements.privacy import ERASE_USER
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.embedded import EmbeddedServer
from kgrec.erasure import user_hash
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.importer import import_dataset
from kgrec.job_queue import TRAIN, job_client
from kgrec.maintenance import clear_graph
from kgrec.migrations import migrate
from kgrec.model_store import ActiveModel, artifact_name, load_artifacts, models_dir
from kgrec.model_versions import VersionNotReady, lineage, promote, root_of
from kgrec.promotion_gate import PROMOTED, GateDecision, GateScores
from kgrec.recommender import HistoryEntry
from kgrec.topic_items import TopicItems, topic_items_path
from kgrec_cli.stack import worker_argv
from tests.conftest import embedded_only
from tests.processes import ApiProcess, background
from tests.subsets import amazon_beauty_subset
from workers.training.config import TrainConfig
from workers.training.job import publish, run_training, start_training, version_name
from workers.training.pipeline import train_model
from workers.training.publish import (
    UNSETTLED_GRACE_MS,
    VersionSuperseded,
    claim,
    clear_topics,
    collect_garbage,
    new_owner,
    record_gate_decision,
    remove_unused_topic_items,
    staged_path,
    write_back,
)
from workers.training.subgraph import pull
from workers.training.topics import write_topics

QUICK = TrainConfig(epochs=2, use_ease=False)


@pytest.fixture(scope="module")
def small_beauty(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return amazon_beauty_subset(shared_data / "amazon-beauty-kg", tmp_path_factory.mktemp("b100"), users=100)


@pytest.fixture
def loaded(gateway: GraphGateway, settings: Settings, small_beauty: Path, tmp_path: Path) -> Settings:
    import_dataset(gateway, open_dataset(str(small_beauty), settings.datasets_dir), settings)
    return replace(settings, data_dir=tmp_path)  # artifacts of this test only


def active(gateway: GraphGateway) -> str | None:
    rows = gateway.read(ACTIVE_VERSION)
    assert len(rows) <= 1
    return rows[0]["id"] if rows else None


def test_training_writes_back_and_activates_a_complete_version(
    gateway: GraphGateway, loaded: Settings
) -> None:
    summary = run_training(gateway, loaded, QUICK, device="cpu", version="v-first")
    assert active(gateway) == "v-first"
    counts = summary["counts"]
    written = gateway.run_query(
        "MATCH (:ModelVersion {id: 'v-first'})-[e:EMBEDDING]->(n) "
        "RETURN labels(n)[0] AS label, count(e) AS n, min(size(e.vector)) AS dim ORDER BY label",
        {},
    )
    assert {r["label"]: r["n"] for r in written} == {
        "Brand": counts["brands"],
        "Category": counts["categories"],
        "Item": counts["items"],
        "User": counts["users"],
    }
    assert {r["dim"] for r in written} == {QUICK.dim}
    model = ActiveModel(gateway, loaded.data_dir).get()
    assert model is not None and model.artifacts.version == "v-first"
    some_item = model.artifacts.item_ids[0]
    ranked = model.recommend([[HistoryEntry(some_item, 5.0, 1)]], k=10, exclude=[[some_item]])
    assert len(ranked[0]) == 10 and some_item not in {i for i, _ in ranked[0]}


def test_crash_before_the_switch_keeps_the_previous_version(gateway: GraphGateway, loaded: Settings) -> None:
    run_training(gateway, loaded, QUICK, device="cpu", version="v-old")
    serving = ActiveModel(gateway, loaded.data_dir, check_every_s=0)
    assert serving.get().artifacts.version == "v-old"
    graph = pull(gateway, int(time.time() * 1000), loaded.half_life_ms)
    result = train_model(graph, QUICK, version="v-crashed")

    def crash() -> None:
        raise RuntimeError("worker died")

    with pytest.raises(RuntimeError, match="worker died"):
        write_back(gateway, result, graph, models_dir(loaded.data_dir), before_activation=crash)
    assert active(gateway) == "v-old"
    assert serving.get().artifacts.version == "v-old"
    # The next successful job activates its version. The unsettled one (neither activated nor
    # gated) stays while its job might still be writing or gating it, and goes once it is old.
    summary = run_training(gateway, loaded, QUICK, device="cpu", version="v-new", keep=1)
    assert summary["removed_versions"] == ["v-old"]
    assert [v["id"] for v in gateway.read(MODEL_VERSIONS)] == ["v-new", "v-crashed"]
    assert serving.get().artifacts.version == "v-new"
    gateway.run_query(
        "MATCH (m:ModelVersion {id: 'v-crashed'}) SET m.created_at = m.created_at - $age",
        {"age": UNSETTLED_GRACE_MS},
    )

    # A redelivery of its job claims it (a new owner) after the collection read the versions: the
    # collection leaves the node, its edges and its files to it (it deleted them under the new owner)
    def claimed_meanwhile() -> frozenset[str]:
        gateway.run_query("MATCH (m:ModelVersion {id: 'v-crashed'}) SET m.owner = 'redelivered'", {})
        return frozenset()

    assert collect_garbage(gateway, models_dir(loaded.data_dir), keep=1, protected=claimed_meanwhile) == []
    assert [v["id"] for v in gateway.read(MODEL_VERSIONS)] == ["v-new", "v-crashed"]
    assert (
        gateway.run_query(
            "MATCH (:ModelVersion {id: 'v-crashed'})-[e:EMBEDDING]->() RETURN count(e) AS n", {}
        )[0]["n"]
        > 0
    )
    assert (models_dir(loaded.data_dir) / "v-crashed.npz").exists()
    assert collect_garbage(gateway, models_dir(loaded.data_dir), keep=1) == ["v-crashed"]
    assert [v["id"] for v in gateway.read(MODEL_VERSIONS)] == ["v-new"]
    assert not (models_dir(loaded.data_dir) / "v-crashed.npz").exists()


def test_garbage_collection_asks_the_protection_once_per_version(
    gateway: GraphGateway, tmp_path: Path
) -> None:
    # Each version's protection is asked again under the claim lock, right before its node and
    # files go. That answer is the next version's before its edges: asking again there would only
    # repeat it (nothing but the previous version's own node and files went in between).
    gateway.run_query(
        "UNWIND range(0, 3) AS k CREATE (:ModelVersion {id: 'v' + toString(k), status: 'ready', "
        "active: k = 3, created_at: k, activated_at: k, artifact: 'v' + toString(k) + '.npz', owner: 'o'})",
        {},
    )
    for k in range(4):
        (tmp_path / f"v{k}.npz").write_bytes(b"")
    asked: list[int] = []

    def protected() -> frozenset[str]:
        asked.append(1)
        return frozenset({"v1"}) if len(asked) > 1 else frozenset()  # v1's experiment starts meanwhile

    assert collect_garbage(gateway, tmp_path, keep=1, protected=protected) == ["v2", "v0"]
    # v2: before its edges and under the lock; v1: protected by v2's second answer; v0: both
    assert len(asked) == 4
    assert [v["id"] for v in gateway.read(MODEL_VERSIONS)] == ["v3", "v1"]
    assert sorted(path.name for path in tmp_path.glob("*.npz")) == ["v1.npz", "v3.npz"]


def gated_write_back(gateway: GraphGateway, result: Any, graph: Any, folder: Path, owner: str) -> None:
    """A gated job's write-back for ``owner``: its version and topics (unlinked), not activated."""
    version = result.artifacts.version
    write_back(
        gateway,
        result,
        graph,
        folder,
        activate_now=False,
        before_activation=lambda: write_topics(
            gateway, version, graph.item_ids, result.topics, folder=folder, link=False
        ),
        owner=owner,
    )


def test_a_redelivered_job_activates_the_version_its_gate_promoted_before_the_job_died(
    gateway: GraphGateway, loaded: Settings
) -> None:
    # The gated job records the gate's decision, then activates. A job that died between the two
    # left a version decided "promoted" and never active, and its redelivery took it as published.
    run_training(gateway, loaded, QUICK, device="cpu", version="v-before")
    folder = models_dir(loaded.data_dir)
    graph = pull(gateway, int(time.time() * 1000), loaded.half_life_ms)
    scores = GateScores({"ndcg@10": 0.2}, {"ndcg@10": 0.1}, "v-before", 100, 0.02, 30)

    def gated_then_lost(job_id: str, taken: bool = False) -> str:
        """The job's steps up to the recorded decision (with its topics, unlinked, as gated jobs write them)."""
        version = version_name(job_id)
        result = train_model(graph, QUICK, version=version)
        gated_write_back(gateway, result, graph, folder, "lost-delivery")
        record_gate_decision(
            gateway, version, "lost-delivery", GateDecision(PROMOTED, "better", scores), taken=taken
        )
        return version  # the worker dies here

    def redelivered(job_id: str) -> dict[str, Any]:
        return start_training(gateway, loaded, QUICK, device="cpu", job_id=job_id, gate=True)

    lost = gated_then_lost("lost")
    assert active(gateway) == "v-before"
    again = redelivered("lost")
    assert again["already_published"] and again["active"] and again["gate"]["decision"] == PROMOTED
    assert active(gateway) == lost
    (row,) = [v for v in gateway.read(MODEL_VERSIONS) if v["id"] == lost]
    assert redelivered("lost") == again  # once: its activation stays as it was
    assert [v["activated_at"] for v in gateway.read(MODEL_VERSIONS) if v["id"] == lost] == [
        row["activated_at"]
    ]
    # a candidate a hook took (an experiment variant) is left as it is
    taken = gated_then_lost("taken", taken=True)
    assert not redelivered("taken")["active"] and active(gateway) == lost
    # and so is a promotion another activation overtook (a rollback, a newer version)
    overtaken = gated_then_lost("overtaken")
    promote(gateway, loaded.data_dir, "v-before")
    assert not redelivered("overtaken")["active"] and active(gateway) == "v-before"
    assert {taken, overtaken} <= {v["id"] for v in gateway.read(MODEL_VERSIONS)}


def test_a_redelivered_job_leaves_the_version_it_published(gateway: GraphGateway, loaded: Settings) -> None:
    first = start_training(gateway, loaded, QUICK, device="cpu", job_id="again")
    artifact = models_dir(loaded.data_dir) / artifact_name("job-again")
    written = artifact.stat().st_mtime_ns
    vectors = gateway.run_query(
        "MATCH (:ModelVersion {id: 'job-again'})-[e:EMBEDDING]->(n) RETURN n.id AS id, e.vector AS v ORDER BY id",
        {},
    )
    # the broker redelivers the job (its worker was lost before the ack): nothing is rewritten
    again = start_training(gateway, loaded, replace(QUICK, seed=8), device="cpu", job_id="again")
    assert first["version"] == again["version"] == "job-again"
    assert again == {"version": "job-again", "already_published": True, "active": True, "gate": None}
    assert artifact.stat().st_mtime_ns == written
    assert (
        gateway.run_query(
            "MATCH (:ModelVersion {id: 'job-again'})-[e:EMBEDDING]->(n) RETURN n.id AS id, e.vector AS v ORDER BY id",
            {},
        )
        == vectors
    )


@pytest.mark.parametrize("taken_over", ["writing embeddings", "before the switch"])
def test_a_delivery_a_redelivery_took_over_stops_and_the_redelivery_s_version_stands(
    gateway: GraphGateway, loaded: Settings, taken_over: str
) -> None:
    # The broker redelivers a training past its visibility timeout while the first delivery still
    # writes: the second delivery claims the version after the first (CREATE_VERSION) and publishes
    # it whole; the first's next write (an embedding batch, or its switch) is refused and it stops.
    folder = models_dir(loaded.data_dir)
    graph = pull(gateway, int(time.time() * 1000), loaded.half_life_ms)
    first = train_model(graph, QUICK, version="job-twice")
    second = train_model(graph, replace(QUICK, seed=8), version="job-twice")

    def stored() -> tuple:
        vectors = gateway.run_query(
            "MATCH (:ModelVersion {id: 'job-twice'})-[e:EMBEDDING]->(n) RETURN n.id AS id, e.vector AS v ORDER BY id",
            {},
        )
        (row,) = [v for v in gateway.read(MODEL_VERSIONS) if v["id"] == "job-twice"]
        return vectors, row, (folder / artifact_name("job-twice")).read_bytes()

    published: list[tuple] = []

    def redelivery(*_args: Any) -> None:
        if not published:  # once
            write_back(gateway, second, graph, folder)
            published.append(stored())

    hook = (
        {"on_progress": redelivery}
        if taken_over == "writing embeddings"
        else {"before_activation": redelivery}
    )
    with pytest.raises(VersionSuperseded):
        write_back(gateway, first, graph, folder, embedding_batch=20, **hook)
    assert published and stored() == published[0]
    assert active(gateway) == "job-twice"
    served = load_artifacts(folder / artifact_name("job-twice"))
    np.testing.assert_array_equal(served.item_embeddings, second.artifacts.item_embeddings)
    assert not list(folder.glob(".job-twice*"))  # no staged file is left behind


def test_a_gated_delivery_taken_over_while_its_gate_ran_leaves_none_of_its_topics(
    gateway: GraphGateway, loaded: Settings
) -> None:
    # A gated delivery writes its version and topics, then runs the gate for minutes; the broker
    # redelivers the job meanwhile, and the redelivery takes the version over and writes its own
    # topics, under new ids (an id is never reused). The version holds the redelivery's topics
    # only, and the first delivery's next step is refused.
    folder = models_dir(loaded.data_dir)
    graph = pull(gateway, int(time.time() * 1000), loaded.half_life_ms)
    texts = Path(loaded.data_dir) / "text-embeddings"  # topics are mined from the items' text
    first = train_model(graph, QUICK, version="job-gated", text_cache_dir=texts)
    second = train_model(graph, replace(QUICK, seed=8), version="job-gated", text_cache_dir=texts)

    def on_version() -> list[str]:
        rows = gateway.run_query(
            "MATCH (:ModelVersion {id: 'job-gated'})-[:HAS_TOPIC]->(t:Topic) RETURN t.id AS id", {}
        )
        return sorted(r["id"] for r in rows)

    gated_write_back(gateway, first, graph, folder, "first")
    first_topics = on_version()
    assert first_topics
    gated_write_back(gateway, second, graph, folder, "second")  # while the first delivery's gate runs
    assert on_version() == sorted(second.topics.ids)
    assert not set(first_topics) & set(second.topics.ids)
    scores = GateScores({"ndcg@10": 0.2}, None, None, 100, 0.02, 30)
    with pytest.raises(VersionSuperseded):
        record_gate_decision(gateway, "job-gated", "first", GateDecision(PROMOTED, "better", scores))
    # a delivery taken over between its `ready` mark and its topics writes none
    with pytest.raises(VersionSuperseded):
        clear_topics(gateway, "job-gated", "first")
    assert on_version() == sorted(second.topics.ids)


class TakenOverAfterClear:
    """The real gateway, on which a redelivery takes the version over and writes it whole (``then``)
    right after the first delivery's owner-checked clear of its topics, before that delivery writes
    them (paused there: a late reply, a descheduled process)."""

    def __init__(self, gateway: GraphGateway, then: Callable[[], None]) -> None:
        self.gateway, self.then, self.done = gateway, then, False

    def write(self, statement: Any, params: Any = None) -> Any:
        summary = self.gateway.write(statement, params)
        if statement is CLEAR_VERSION_TOPICS and not self.done:
            self.done = True
            self.then()
        return summary

    def __getattr__(self, name: str) -> Any:
        return getattr(self.gateway, name)


def test_a_delivery_taken_over_before_its_topics_leaves_the_new_owner_s_topics_file(
    gateway: GraphGateway, loaded: Settings
) -> None:
    # The topics file was written in place, not staged behind the claim as the version's other
    # files: a delivery taken over after its clear of the version's topics wrote its file over the
    # one of the delivery that owns the version now, which serving then read with the owner's model.
    folder = models_dir(loaded.data_dir)
    graph = pull(gateway, int(time.time() * 1000), loaded.half_life_ms)
    texts = Path(loaded.data_dir) / "text-embeddings"
    first = train_model(graph, QUICK, version="job-topics", text_cache_dir=texts)
    second = train_model(graph, replace(QUICK, seed=8), version="job-topics", text_cache_dir=texts)
    owners = TakenOverAfterClear(gateway, lambda: gated_write_back(gateway, second, graph, folder, "second"))
    with pytest.raises(VersionSuperseded):
        publish(owners, loaded, graph, first, QUICK, gate=True)  # type: ignore[arg-type]
    assert owners.done and second.topics is not None
    stored = TopicItems.load(topic_items_path(folder, "job-topics"), "job-topics", vectors=False)
    assert stored.topic_ids == list(second.topics.ids)
    on_version = gateway.run_query(
        "MATCH (:ModelVersion {id: 'job-topics'})-[:HAS_TOPIC]->(t:Topic) RETURN t.id AS id", {}
    )
    assert sorted(r["id"] for r in on_version) == sorted(second.topics.ids)
    assert not list(folder.glob(".job-topics*"))  # no staged file is left behind


def test_a_training_taken_over_by_its_redelivery_reports_that_it_was_superseded(
    gateway: GraphGateway, loaded: Settings
) -> None:
    # The redelivery claims the version while the first delivery writes its embeddings and
    # publishes it: the first reports that it was superseded, not that it published the version.
    settings = replace(loaded, embedding_batch=20)
    folder = models_dir(settings.data_dir)
    graph = pull(gateway, int(time.time() * 1000), settings.half_life_ms)
    second = train_model(graph, replace(QUICK, seed=8), version="job-over")
    taken: list[bool] = []

    def progress(stage: str, fraction: float) -> None:
        if stage == "write-back" and fraction > 0.8 and not taken:  # past the claim
            taken.append(True)
            write_back(gateway, second, graph, folder)

    summary = run_training(gateway, settings, QUICK, device="cpu", version="job-over", progress=progress)
    assert taken and summary == {"version": "job-over", "superseded": True}
    assert active(gateway) == "job-over"


def test_staged_files_a_killed_write_back_left_go_once_unsettled_versions_would(
    gateway: GraphGateway, loaded: Settings
) -> None:
    # A write-back killed while staging (or before its claim moved them) leaves its token-named
    # files, which no version node names: the garbage collection takes them once they are as old
    # as an unsettled version it would collect; younger ones may be a running write-back's.
    run_training(gateway, loaded, QUICK, device="cpu", version="v-now")
    folder = models_dir(loaded.data_dir)
    dead = [
        staged_path(folder / "job-dead.npz", "0123456789abcdef"),
        staged_path(folder / "job-dead.foldin.npz", "0123456789abcdef"),
    ]
    live = staged_path(folder / "job-live.npz", "fedcba9876543210")
    other = folder / ".notes.npz"  # not a staged name
    old = time.time() - UNSETTLED_GRACE_MS / 1000 - 60
    for path in (*dead, live, other):
        path.write_bytes(b"")
    for path in (*dead, other):
        os.utime(path, (old, old))
    collect_garbage(gateway, folder, keep=2)
    assert [path.exists() for path in (*dead, live, other)] == [False, False, True, True]
    assert (folder / "v-now.npz").exists() and (folder / "v-now.foldin.npz").exists()


class PausedAfterWrite:
    """The real gateway, whose first write returns only once ``go`` is set (a delivery paused
    between its claim and what follows: its reply late, its process descheduled)."""

    def __init__(self, gateway: GraphGateway) -> None:
        self.gateway, self.written, self.go = gateway, threading.Event(), threading.Event()

    def write(self, statement: Any, params: Any = None) -> Any:
        done = self.gateway.write(statement, params)
        self.written.set()
        assert self.go.wait(30)
        return done


def test_a_delivery_paused_between_its_claim_and_its_move_leaves_the_new_owner_s_files(
    gateway: GraphGateway, tmp_path: Path
) -> None:
    # The first delivery's claim is written, then it pauses before moving its files into place; a
    # redelivery claims the version meanwhile. The first's files must not land over the
    # redelivery's: the version is the redelivery's, and it would be marked ready and served
    # with the first delivery's artifact and fold-in basis.
    first, second = new_owner(), new_owner()
    finals = [tmp_path / artifact_name("job-paused"), tmp_path / "job-paused.foldin.npz"]

    def staged(owner: str) -> dict[Path, Path]:
        files = {staged_path(final, owner): final for final in finals}
        for path in files:
            path.write_bytes(owner.encode())
        return files

    def params(owner: str) -> dict[str, Any]:
        return {**CREATE_VERSION.params, "id": "job-paused", "owner": owner, "now": int(time.time() * 1000)}

    paused = PausedAfterWrite(gateway)
    with ThreadPoolExecutor(2) as pool:
        held = pool.submit(claim, paused, CREATE_VERSION, params(first), staged(first))
        assert paused.written.wait(30)
        redelivery = pool.submit(claim, gateway, CREATE_VERSION, params(second), staged(second))
        with contextlib.suppress(FutureTimeout):  # alone, the claim and its moves take milliseconds
            redelivery.result(timeout=2)
        paused.go.set()
        held.result(timeout=30)
        redelivery.result(timeout=30)
    (row,) = gateway.run_query("MATCH (m:ModelVersion {id: 'job-paused'}) RETURN m.owner AS owner", {})
    assert row["owner"] == second
    assert [final.read_bytes() for final in finals] == [second.encode()] * 2
    assert not list(tmp_path.glob(".job-paused*"))  # no staged file is left behind


def test_a_user_erased_while_a_training_runs_is_not_counted_by_the_version_it_publishes(
    gateway: GraphGateway, loaded: Settings
) -> None:
    graph = pull(gateway, int(time.time() * 1000), loaded.half_life_ms)
    result = train_model(graph, QUICK, version="v-during")
    # the user with the most interactions is erased after the pull, before the write-back
    user_row = int(np.bincount(graph.inter_user).argmax())
    user = graph.user_ids[user_row]
    items = sorted(graph.item_ids[i] for i in graph.inter_item[graph.inter_user == user_row])
    gateway.write(
        ERASE_USER, {"user_id": user, "erasure_id": user_hash(user), "now": int(time.time() * 1000)}
    )
    # an event after the erasure made the user again: the vector of the erased history is not theirs
    gateway.run_query("MERGE (:User {id: $id})", {"id": user})
    write_back(gateway, result, graph, models_dir(loaded.data_dir))
    embedded = "MATCH (:ModelVersion {id: 'v-during'})-[:EMBEDDING]->(u:User {id: $id}) RETURN u.id AS id"
    assert gateway.run_query(embedded, {"id": user}) == []
    adjustments = gateway.read(POPULARITY_ADJUSTMENTS, {"version": "v-during"})
    assert sorted(r["id"] for r in adjustments) == items and {r["delta"] for r in adjustments} == {-1}
    served = ActiveModel(gateway, loaded.data_dir).get()
    assert served is not None and served.artifacts.version == "v-during"
    expected = np.bincount(graph.inter_item[graph.inter_user != user_row], minlength=graph.n_items)
    np.testing.assert_array_equal(served.artifacts.popularity, expected)


def flag_as_bot(gateway: GraphGateway, settings: Settings, user: str) -> int:
    """Flag ``user`` as a bot through the events path (a burst of views of new items over a limit of
    5 a minute); returns the batch's time (the user's ``flagged_at``)."""
    now = int(time.time() * 1000)
    burst = [
        {"event_id": f"{user}-{i}", "user_id": user, "item_id": f"burst-{i}", "type": "view", "ts": now + i}
        for i in range(6)
    ]
    valid, errors = validate_batch(burst, max_skew_s=300, now_ms=now)
    assert errors == []
    ingest(gateway, valid, replace(settings, bot_events_per_minute=5), now_ms=now)
    (row,) = gateway.run_query(
        "MATCH (u:User {id: $id}) RETURN u.flagged_bot AS bot, u.flagged_at AS at", {"id": user}
    )
    assert row == {"bot": True, "at": now}
    return now


def test_a_user_flagged_as_a_bot_after_a_pull_loses_their_share_of_it_when_erased(
    gateway: GraphGateway, loaded: Settings
) -> None:
    """A version counted a user flagged as a bot only after its pull: erasing them takes their
    share off its served popularity as for any user; one flagged before it, left out, loses none."""
    users = "MATCH (u:User)-[:INTERACTED]->() RETURN DISTINCT u.id AS id ORDER BY id LIMIT 2"
    early, late = (r["id"] for r in gateway.run_query(users, {}))
    flag_as_bot(gateway, loaded, early)
    run_training(gateway, loaded, QUICK, device="cpu", version="v-bots")
    serving = ActiveModel(gateway, loaded.data_dir, check_every_s=0)
    before = serving.get()
    assert before is not None and before.artifacts.version == "v-bots"
    # imported before the pull, so counted (the burst's items come after it)
    held = "MATCH (:User {id: $id})-[:INTERACTED]->(i:Item) RETURN i.id AS id ORDER BY id"
    counted = [r["id"] for r in gateway.run_query(held, {"id": late})]
    trained = [item for item in counted if item in before.item_index]
    assert trained
    flag_as_bot(gateway, loaded, late)
    now = int(time.time() * 1000)
    erased = gateway.write(ERASE_USER, {"user_id": late, "erasure_id": user_hash(late), "now": now})
    assert erased.rows[0]["popularity_adjusted"] == len(counted)
    after = serving.get()
    assert after is not None
    expected = before.artifacts.popularity.copy()
    for item in trained:
        expected[before.item_index[item]] -= 1
    np.testing.assert_array_equal(after.artifacts.popularity, expected)
    # the bot flagged before the pull was never counted: nothing is taken off for them
    gone = gateway.write(ERASE_USER, {"user_id": early, "erasure_id": user_hash(early), "now": now + 1})
    assert gone.rows[0]["popularity_adjusted"] == 0 and gone.rows[0]["embeddings"] == 0
    adjustments = gateway.read(POPULARITY_ADJUSTMENTS, {"version": "v-bots"})
    assert sorted((r["id"], r["delta"]) for r in adjustments) == [(item, -1) for item in counted]
    latest = serving.get()
    assert latest is not None
    np.testing.assert_array_equal(latest.artifacts.popularity, expected)


class FoldedReads:
    """The real gateway, counting the reads of the folded-in items."""

    def __init__(self, gateway: GraphGateway) -> None:
        self.gateway, self.folded_reads = gateway, 0

    def read(self, statement: Any, params: Any = None) -> Any:
        self.folded_reads += statement is FOLDED_ITEMS
        return self.gateway.read(statement, params)


def test_an_erasure_lays_the_popularity_over_the_folded_items_held(
    gateway: GraphGateway, loaded: Settings
) -> None:
    """An erasure moves only the version's adjusted_at: the items folded in are not read again (a
    read of every folded item and a rebuild of the model, in every process, per erasure)."""
    run_training(gateway, loaded, QUICK, device="cpu", version="v-folded")
    gateway.run_query("CREATE (:Item {id: 'folded-new', listed: true})", {})
    now = int(time.time() * 1000)
    vector = [0.1] * QUICK.dim
    gateway.write(
        WRITE_FOLDED_ITEMS,
        {"version": "v-folded", "rows": [{"id": "folded-new", "vector": vector}], "now": now},
    )
    counting = FoldedReads(gateway)
    serving = ActiveModel(counting, loaded.data_dir, check_every_s=0)  # type: ignore[arg-type]
    before = serving.get()
    assert before is not None and "folded-new" in before.item_index and counting.folded_reads == 1
    trained = before.artifacts.item_ids[0]
    user = gateway.run_query(
        "MATCH (u:User)-[:INTERACTED]->(:Item {id: $item}) RETURN u.id AS id LIMIT 1", {"item": trained}
    )[0]["id"]
    gateway.write(ERASE_USER, {"user_id": user, "erasure_id": user_hash(user), "now": now + 1})
    after = serving.get()
    assert after is not None and after is not before and counting.folded_reads == 1
    assert "folded-new" in after.item_index
    # the co-purchase links, summed once when the version was loaded, go with every copy
    links = after.__dict__.get("co_purchase_links")
    assert (
        links is not None
        and links is before.__dict__["co_purchase_links"]
        and links.shape[0] == after.n_items
    )
    row = after.item_index[trained]
    assert after.artifacts.popularity[row] == before.artifacts.popularity[row] - 1
    # a later fold-in moves folded_at: read again
    gateway.run_query("CREATE (:Item {id: 'folded-later', listed: true})", {})
    gateway.write(
        WRITE_FOLDED_ITEMS,
        {"version": "v-folded", "rows": [{"id": "folded-later", "vector": vector}], "now": now + 2},
    )
    latest = serving.get()
    assert latest is not None and "folded-later" in latest.item_index and counting.folded_reads == 2
    assert latest.__dict__["co_purchase_links"].shape[0] == latest.n_items
    assert latest.artifacts.popularity[row] == after.artifacts.popularity[row]  # the erasure still applied


@embedded_only
def test_the_folded_items_are_read_through_the_index_not_the_versions_embeddings(
    settings: Settings, graph_server: EmbeddedServer
) -> None:
    """FOLDED_ITEMS walked every EMBEDDING edge of the version (a scan per model load in every
    serving process); it now seeks the version's folded edges in the index on folded_version."""
    name = f"folded_{uuid.uuid4().hex[:10]}"
    gateway = open_gateway(settings, graph_name=name)
    try:
        migrate(gateway)
        gateway.run_query(
            "CREATE (m:ModelVersion {id: 'v-plan', active: true}), (:ModelVersion {id: 'v-next'})"
            " WITH m UNWIND range(1, 50) AS n"
            " CREATE (m)-[:EMBEDDING {vector: [1.0]}]->(:Item {id: 'trained-' + toString(n)})",
            {},
        )
        gateway.run_query("CREATE (:Item {id: 'new-1'}), (:Item {id: 'new-2'})", {})
        for version, item, now in (("v-plan", "new-2", 1), ("v-plan", "new-1", 2), ("v-next", "new-1", 3)):
            rows = [{"id": item, "vector": [0.5]}]
            gateway.write(WRITE_FOLDED_ITEMS, {"version": version, "rows": rows, "now": now})
        rows = gateway.read(FOLDED_ITEMS, {"version": "v-plan"})
        assert [(r["id"], r["vector"]) for r in rows] == [("new-2", [0.5]), ("new-1", [0.5])]
        info = graph_server.running()
        assert info is not None
        plan = info.client().execute_command(
            "GRAPH.EXPLAIN", name, "CYPHER version='v-plan' " + FOLDED_ITEMS.cypher
        )
        steps = [(step.decode() if isinstance(step, bytes) else step).strip() for step in plan]
        # the only step over EMBEDDING edges is the index's (before: a traverse of all of them)
        assert [step for step in steps if "EMBEDDING" in step] == ["Edge By Index Scan | [e:EMBEDDING]"], (
            steps
        )
        # fold-in's check of which ids a version was trained on starts at the items, not the version
        ids = ["trained-3", "new-1", "nowhere"]
        trained = gateway.read(TRAINED_ITEMS, {"version": "v-plan", "ids": ids})
        assert [r["id"] for r in trained] == ["trained-3"]
        plan = info.client().execute_command(
            "GRAPH.EXPLAIN", name, "CYPHER version='v-plan' ids=['x'] " + TRAINED_ITEMS.cypher
        )
        steps = [(step.decode() if isinstance(step, bytes) else step).strip() for step in plan]
        assert not any("Scan" in step and ":ModelVersion" in step for step in steps), steps
    finally:
        clear_graph(gateway)
        gateway.close()


def test_a_version_without_its_artifact_file_is_not_promoted(gateway: GraphGateway, loaded: Settings) -> None:
    run_training(gateway, loaded, QUICK, device="cpu", version="v-gone")
    run_training(gateway, loaded, QUICK, device="cpu", version="v-here")
    (models_dir(loaded.data_dir) / artifact_name("v-gone")).unlink()
    with pytest.raises(VersionNotReady, match=r"v-gone has no artifact file v-gone\.npz"):
        promote(gateway, loaded.data_dir, "v-gone")
    assert active(gateway) == "v-here"


def test_old_versions_are_garbage_collected(gateway: GraphGateway, loaded: Settings) -> None:
    # The default, as the train task and `kgrec train` use it: the active version and two before it.
    removed = [
        start_training(gateway, loaded, QUICK, device="cpu", job_id=str(n))["removed_versions"]
        for n in range(4)
    ]
    assert removed == [[], [], [], ["job-0"]]
    assert [v["id"] for v in gateway.read(MODEL_VERSIONS)] == ["job-3", "job-2", "job-1"]
    assert active(gateway) == "job-3"
    assert artifacts(gateway, loaded) == {"job-3", "job-2", "job-1"}

    # A smaller keep collects more.
    summary = run_training(gateway, loaded, QUICK, device="cpu", version="v-4", keep=2)
    assert sorted(summary["removed_versions"]) == ["job-1", "job-2"]
    assert [v["id"] for v in gateway.read(MODEL_VERSIONS)] == ["v-4", "job-3"]
    assert active(gateway) == "v-4"
    assert artifacts(gateway, loaded) == {"v-4", "job-3"}
    assert sorted(p.name for p in models_dir(loaded.data_dir).glob("*.npz")) == [
        "job-3.foldin.npz",
        "job-3.npz",
        "job-3.topics.npz",
        "v-4.foldin.npz",
        "v-4.npz",
        "v-4.topics.npz",
    ]


def artifacts(gateway: GraphGateway, settings: Settings) -> set[str]:
    """Versions that still have embeddings in the graph; each must also have its three files."""
    embedded = {
        r["id"]
        for r in gateway.run_query("MATCH (m:ModelVersion)-[e:EMBEDDING]->() RETURN DISTINCT m.id AS id", {})
    }
    files = {p.name for p in models_dir(settings.data_dir).glob("*.npz")}
    assert files == {f"{v}{suffix}" for v in embedded for suffix in (".npz", ".foldin.npz", ".topics.npz")}
    return embedded


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(c) for c in text)
    return found


@pytest.fixture
def worker_graph(broker_graph: tuple[dict[str, str], Settings, GraphGateway], small_beauty: Path) -> tuple:
    env, settings, gateway = broker_graph
    import_dataset(gateway, open_dataset(str(small_beauty), settings.datasets_dir), settings)
    env = {**env, "KGREC_EMBEDDING_BATCH": "20", "KGREC_API_KEYS": "k"}
    return env, Settings.from_env(env), gateway


def test_worker_killed_mid_write_back_is_redelivered_and_old_model_serves(
    worker_graph: tuple[dict[str, str], Settings, GraphGateway], tmp_path: Path
) -> None:
    env, settings, gateway = worker_graph
    run_training(gateway, settings, QUICK, device="cpu", version="v-before")
    worker_log = tmp_path / "worker.log"
    api = ApiProcess({k: env[k] for k in ("KGREC_DATA_DIR", "KGREC_GRAPH", "KGREC_API_KEYS")}).start()
    try:
        with background(worker_argv(concurrency=1, pool="prefork"), env, worker_log) as worker:
            celery = job_client(settings)
            job = celery.send_task(TRAIN, kwargs={"epochs": 2, "device": "cpu"})
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                info = AsyncResult(job.id, app=celery)
                # past 80 %: the write-back has written its first rows (it reports 80 % before any)
                if (
                    info.state == "PROGRESS"
                    and info.info.get("stage") == "write-back"
                    and info.info["percent"] > 80
                ):
                    break
                time.sleep(0.02)
            else:
                raise AssertionError(f"never saw the write-back stage: {worker_log.read_text()[-3000:]}")
            status = requests.get(f"{api.url}/v1/jobs/{job.id}", timeout=10).json()
            assert status["state"] == "PROGRESS" and status["stage"] == "write-back"
            assert 0 < status["percent"] < 100
            for child in _children(worker.pid):
                os.kill(child, signal.SIGKILL)
            assert active(gateway) == "v-before"  # the half-written version is not served
            summary = job.get(timeout=300)  # redelivered to a fresh pool process, and completed
        assert summary["version"] == f"job-{job.id}"
        assert active(gateway) == f"job-{job.id}"
        done = requests.get(f"{api.url}/v1/jobs/{job.id}", timeout=10).json()
        assert done["state"] == "SUCCESS" and done["result"]["version"] == f"job-{job.id}"
        output = worker_log.read_text()
        assert "WorkerLostError" in output or "exited with 'signal 9" in output
    finally:
        api.stop()


def test_one_version_naming_scheme() -> None:
    """A queued job names its version after the job (redelivery rewrites it); an in-process run by time."""
    assert version_name("7f3c") == "job-7f3c"
    before = int(time.time() * 1000)
    name = version_name()
    assert name.startswith("v") and before <= int(name[1:]) <= int(time.time() * 1000)


def test_an_incremental_versions_lineage_reaches_its_recorded_root() -> None:
    # c1 was collected: the parent chain stops there, and the root recorded on c3 is still named
    root = json.dumps({"incremental": {"root": "r", "parent": "c2"}})
    rows = {"c3": {"parent": "c2", "parameters": root}, "c2": {"parent": "c1", "parameters": root}}
    assert lineage(rows, "c3") == ["c3", "c2", "c1", "r"]
    assert root_of(rows["c3"]) == "r" and root_of({"parameters": None}) is None
    assert lineage({"r": {"parent": None, "parameters": "{}"}}, "r") == ["r"]


def test_topic_items_files_go_when_no_listed_version_uses_them(tmp_path: Path) -> None:
    child = {"id": "c2", "parameters": json.dumps({"incremental": {"root": "r"}})}
    hour_ago = time.time() - 3700
    for name in ("r", "c2", "gone", "fresh"):
        path = topic_items_path(tmp_path, name)
        path.write_bytes(b"")
        if name != "fresh":
            os.utime(path, (hour_ago, hour_ago))
    assert remove_unused_topic_items(tmp_path, [child]) == ["gone"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c2.topics.npz", "fresh.topics.npz", "r.topics.npz"]
