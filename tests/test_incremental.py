"""Incremental updates: a child version with exactly the touched rows refreshed, partitioned over Celery.

A small synthetic shop (300 users, 120 items, timestamps) is imported into a graph of its
own and ``v1`` is trained on it (graph model capped at 2 epochs). New purchases by a few
users then arrive as events, and:

- the update makes a child of ``v1`` (``parent``) that is served, with new rows for the
  touched items and users and every other row (embeddings, signal rows, user vectors)
  bit-identical to ``v1``'s, and a touched user's recommendations change;
- two partitions give the rows one partition gives;
- the chord on a real worker with two processes publishes the child; a chord whose partition
  fails publishes nothing and the active version stays;
- the drift the children record decides between another update and a full retraining.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import redis
from celery import Celery, chord

from graph_schema.statements.incremental import ITEM_INTERACTION_COUNTS
from graph_schema.statements.models import MODEL_VERSIONS, POPULARITY_ADJUSTMENTS
from graph_schema.statements.privacy import ERASE_USER
from graph_schema.statements.training import INTERACTIONS_OF_USERS
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.demo_shop import ShopSpec, generate_shop
from kgrec.embedded import EmbeddedServer
from kgrec.erasure import ERASURE_TIME_MARGIN_MS, user_hash
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.importer import import_dataset
from kgrec.job_queue import (
    INCREMENTAL_MERGE,
    INCREMENTAL_PARTITION,
    INCREMENTAL_UPDATE,
    PLAN_KEY,
    PLANS,
    PlanWithdrawn,
    drop_plan,
    job_client,
    load_plan,
    store_plan,
)
from kgrec.maintenance import clear_graph
from kgrec.migrations import migrate
from kgrec.model_store import ActiveModel, artifact_name, load_artifacts, models_dir
from kgrec.model_versions import list_versions
from kgrec.recommender import HistoryEntry, ModelArtifacts, Recommender
from kgrec.retrain_schedule import next_update, update_kind
from kgrec.ties import tie_keys
from kgrec_cli.stack import worker_argv
from tests.processes import background, kgrec_cli
from workers.training.config import TrainConfig
from workers.training.incremental import (
    PartitionRows,
    UpdatePlan,
    claim_child,
    copy_parent,
    finish_update,
    load_parent,
    merge,
    plan_update,
    publish_child,
    run_incremental,
    run_partition,
    write_child,
)
from workers.training.job import run_training
from workers.training.publish import VersionPublished, VersionSuperseded, activate, mark_ready, new_owner

TOUCHED_USERS = 6


@pytest.fixture(scope="module")
def shop(
    settings: Settings, graph_server: EmbeddedServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, str], Settings, GraphGateway]]:
    """A graph of its own with the shop and ``v1`` active; the env a worker needs for it."""
    if not settings.embedded:
        pytest.skip("uses the embedded redis-server as the Celery broker")
    folder = tmp_path_factory.mktemp("incremental-shop")
    generate_shop(ShopSpec(users=300, items=120, seed=5), folder)
    graph_name = f"inc_{uuid.uuid4().hex[:10]}"
    env = {**os.environ, "KGREC_DATA_DIR": str(settings.data_dir), "KGREC_GRAPH": graph_name}
    local = Settings.from_env(env)
    gateway = open_gateway(local, graph_name=graph_name)
    migrate(gateway)
    import_dataset(gateway, open_dataset(str(folder), local.datasets_dir), local)
    run_training(gateway, local, TrainConfig(epochs=2, use_ease=False), device="cpu", version="v1")
    yield env, local, gateway
    clear_graph(gateway)
    gateway.close()


def artifact_path(settings: Settings, gateway: GraphGateway, version: str) -> Path:
    (row,) = gateway.run_query("MATCH (m:ModelVersion {id: $v}) RETURN m.artifact AS a", {"v": version})
    return models_dir(settings.data_dir) / row["a"]


def artifacts(settings: Settings, gateway: GraphGateway, version: str) -> ModelArtifacts:
    return load_artifacts(artifact_path(settings, gateway, version))


def active(gateway: GraphGateway) -> str:
    (row,) = gateway.run_query("MATCH (m:ModelVersion {active: true}) RETURN m.id AS id", {})
    return row["id"]


def buy(gateway: GraphGateway, settings: Settings, tag: str, model: ModelArtifacts) -> tuple[set, set]:
    """Purchases now by TOUCHED_USERS users of items they never had; returns (users, items) touched."""
    users = [r["id"] for r in gateway.run_query("MATCH (u:User) RETURN u.id AS id ORDER BY id", {})]
    chosen = users[5 : 5 + TOUCHED_USERS]
    raw, touched_items = [], set()
    now = int(time.time() * 1000)
    for k, user in enumerate(chosen):
        had = {r["item_id"] for r in gateway.read(INTERACTIONS_OF_USERS, {"ids": [user]})}
        fresh = [i for i in model.item_ids if i not in had][k * 3 : k * 3 + 2]
        for j, item in enumerate(fresh):
            raw.append(
                {
                    "event_id": f"{tag}-{user}-{j}",
                    "user_id": user,
                    "item_id": item,
                    "type": "purchase",
                    "ts": now,
                }
            )
            touched_items.add(item)
    events, errors = validate_batch(raw, max_skew_s=300)
    assert errors == []
    ingest(gateway, events, settings)
    return set(chosen), touched_items


def history(gateway: GraphGateway, user: str) -> list[HistoryEntry]:
    rows = gateway.read(INTERACTIONS_OF_USERS, {"ids": [user]})
    ties = tie_keys(user, [r["item_id"] for r in rows])
    return [
        HistoryEntry(r["item_id"], float(r["weight"] or 0.0), int(r["last_ts"] or 0), tie)
        for r, tie in zip(rows, ties, strict=True)
    ]


def rows_equal(a: object, b: object) -> bool:
    return bool((a != b).nnz == 0) if hasattr(a, "nnz") else bool(np.array_equal(a, b))


def test_update_refreshes_exactly_the_touched_rows_and_is_served(shop: tuple) -> None:
    _env, settings, gateway = shop
    parent = artifacts(settings, gateway, active(gateway))
    users, items = buy(gateway, settings, "a", parent)

    plan = plan_update(gateway, partitions=2)
    assert plan is not None and plan.parent == parent.version
    assert (set(plan.users), set(plan.items)) == (users, items)
    # it reads what changed since the parent's data_until: for a full training, when its graph was
    # pulled, before its write-back, so what arrived while it trained is read too
    (row,) = gateway.run_query(
        "MATCH (m:ModelVersion {id: $v}) RETURN m.data_until AS d, m.created_at AS c", {"v": parent.version}
    )
    assert plan.since == row["d"] and row["d"] < row["c"]
    # two partitions give what one gives (each seed's rows read only the parent and its own neighbourhood)
    one = merge(
        parent,
        replace(plan, partitions=1),
        [run_partition(gateway, settings, replace(plan, partitions=1), 0)],
        "x",
    )
    two = merge(parent, plan, [run_partition(gateway, settings, plan, k) for k in range(2)], "x")
    np.testing.assert_allclose(one[0].item_embeddings, two[0].item_embeddings, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        one[0].item_context_embeddings, two[0].item_context_embeddings, rtol=1e-5, atol=1e-6
    )
    for name, matrix in one[0].components.items():
        assert abs(matrix - two[0].components[name]).max() < 1e-6, name
    assert set(one[1]) == set(two[1]) == users
    for user in users:
        np.testing.assert_allclose(one[1][user], two[1][user], rtol=1e-5, atol=1e-6)

    summary = run_incremental(gateway, settings, "v2", partitions=2)
    assert summary["activated"] is True and summary["parent"] == parent.version
    (node,) = [v for v in list_versions(gateway, settings.data_dir) if v["version"] == "v2"]
    assert (node["parent"], node["status"]) == (parent.version, "active")
    assert node["data_until"] == plan.data_until

    child = artifacts(settings, gateway, "v2")
    index = {i: k for k, i in enumerate(parent.item_ids)}
    touched = np.zeros(len(parent.item_ids), dtype=bool)
    touched[[index[i] for i in items]] = True
    # untouched rows: bit-identical; touched rows: new
    assert np.array_equal(child.item_embeddings[~touched], parent.item_embeddings[~touched])
    assert np.array_equal(child.item_context_embeddings[~touched], parent.item_context_embeddings[~touched])
    assert not np.array_equal(child.item_embeddings[touched], parent.item_embeddings[touched])
    refreshed = {"cooccurrence", "transitions", "last_item_transitions"} & set(parent.components)
    assert "cooccurrence" in refreshed
    for name, matrix in parent.components.items():
        assert rows_equal(child.components[name][~touched], matrix[~touched]), name
        if name not in refreshed:
            assert rows_equal(child.components[name], matrix), name
    assert not rows_equal(
        child.components["cooccurrence"][touched], parent.components["cooccurrence"][touched]
    )
    assert child.parameters["incremental"]["parent"] == parent.version
    assert child.parameters["incremental"]["new_interactions"] == 2 * TOUCHED_USERS

    # EMBEDDING rows: the touched users' and items' new, every other one copied as it was
    def vectors(version: str) -> dict[str, list[float]]:
        rows = gateway.run_query(
            "MATCH (:ModelVersion {id: $v})-[e:EMBEDDING]->(n) RETURN n.id AS id, e.vector AS vector",
            {"v": version},
        )
        return {r["id"]: r["vector"] for r in rows}

    before, after = vectors(parent.version), vectors("v2")
    assert set(after) == set(before)
    changed = {i for i in after if after[i] != before[i]}
    assert changed <= users | items and users <= changed
    assert gateway.run_query(
        "MATCH (:ModelVersion {id: 'v2'})-[h:HAS_TOPIC]->() RETURN count(h) AS n", {}
    ) == gateway.run_query(
        f"MATCH (:ModelVersion {{id: '{parent.version}'}})-[h:HAS_TOPIC]->() RETURN count(h) AS n", {}
    )

    # served: the active model is the child, and a touched user's recommendations change
    served = ActiveModel(gateway, settings.data_dir, check_every_s=0.0).get()
    assert served is not None and served.artifacts.version == "v2"
    old = Recommender(parent)
    differs = [
        user
        for user in sorted(users)
        if old.recommend([history(gateway, user)], 20)[0] != served.recommend([history(gateway, user)], 20)[0]
    ]
    assert differs, "no touched user's recommendations changed"

    # nothing new since v2: no update
    assert plan_update(gateway, partitions=2) is None


def stored_bytes(client: redis.Redis, key: bytes) -> bytes:
    """Everything a key of the result backend holds, as bytes (strings, lists, sets, hashes)."""
    kind = client.type(key)
    if kind == b"string":
        return client.get(key) or b""
    if kind == b"list":
        return b"".join(client.lrange(key, 0, -1))
    if kind == b"set":
        return b"".join(client.smembers(key))
    if kind == b"hash":
        return b"".join(k + v for k, v in client.hgetall(key).items())
    return b""


@contextlib.contextmanager
def worker(env: dict[str, str], log: Path, processes: int) -> Iterator[Celery]:
    """A real Celery worker with ``processes`` processes, and a client for its broker."""
    with background(worker_argv(concurrency=processes), {**env, "OMP_NUM_THREADS": "1"}, log):
        yield job_client(Settings.from_env(env))


def test_chord_on_two_worker_processes_publishes_and_a_failed_partition_publishes_nothing(
    shop: tuple, tmp_path: Path
) -> None:
    env, settings, gateway = shop
    parent = artifacts(settings, gateway, active(gateway))
    users, _items = buy(gateway, settings, "b", parent)
    log = tmp_path / "worker.log"
    with worker(env, log, processes=2) as client:
        # a partition that fails (its parent artifact cannot be read): the chord never publishes
        plan = plan_update(gateway, partitions=2)
        assert plan is not None
        broken = {**plan.to_json(), "parent_artifact": "missing.npz"}
        header = [
            client.signature(INCREMENTAL_PARTITION, args=(plan.to_json(), 0)),
            client.signature(INCREMENTAL_PARTITION, args=(broken, 1)),
        ]
        failed = chord(header, app=client)(
            client.signature(INCREMENTAL_MERGE, args=(plan.to_json(), "job-broken"))
        )
        with pytest.raises(Exception):  # noqa: B017 - the chord's error is the partition's
            failed.get(timeout=300, propagate=True)
        assert active(gateway) == parent.version
        assert gateway.run_query("MATCH (m:ModelVersion {id: 'job-broken'}) RETURN count(m) AS n", {}) == [
            {"n": 0}
        ]

        results = client.backend.client
        before = set(results.keys("*"))
        job = client.send_task(INCREMENTAL_UPDATE, kwargs={"partitions": 2})
        planned = job.get(timeout=300)
        assert planned["partitions"] == 2 and planned["parent"] == parent.version
        done = client.AsyncResult(planned["merge_job"]).get(timeout=300)
        # The update's records (kept a day) name none of the users it refreshed, and its plan is gone.
        records = {key: stored_bytes(results, key) for key in set(results.keys("*")) - before}
        assert records and not [
            key for key, value in records.items() if any(u.encode() in value for u in users)
        ]
        assert not results.smembers(PLANS)
        # a partition whose plan an erasure withdrew fails, and publishes nothing
        with pytest.raises(PlanWithdrawn):
            client.send_task(INCREMENTAL_PARTITION, args=(f"{PLAN_KEY}gone", 0)).get(timeout=60)
    assert done["activated"] is True, log.read_text()[-3000:]
    assert active(gateway) == done["version"] == f"job-{job.id}"
    (node,) = gateway.run_query(
        "MATCH (m:ModelVersion {id: $v}) RETURN m.parent AS parent", {"v": done["version"]}
    )
    assert node == {"parent": parent.version}
    assert done["users"] == len(users)


def test_drift_above_the_threshold_schedules_a_full_retraining(shop: tuple) -> None:
    _env, settings, gateway = shop
    on = replace(settings, incremental_updates=True)
    assert update_kind(None, on) == "incremental"  # a full version
    # The test makes the child whose drift it reads: the active version may still be the fully
    # trained v1 (no lineage in its parameters) when no other test has run an update before it.
    buy(gateway, settings, "drift", artifacts(settings, gateway, active(gateway)))
    assert run_incremental(gateway, settings, "v-drift", partitions=1)["activated"] is True
    (row,) = gateway.run_query("MATCH (m:ModelVersion {id: 'v-drift'}) RETURN m.parameters AS p", {})
    parameters = json.loads(row["p"])
    drift = parameters["incremental"]["drift"]
    assert drift > 0
    # the same parameters without the lineage are a fully trained version's: drift 0
    full = {k: v for k, v in parameters.items() if k != "incremental"}
    assert update_kind(json.dumps(full), replace(on, incremental_drift_threshold=drift)) == "incremental"
    assert next_update(gateway, replace(on, incremental_drift_threshold=drift * 2)) == "incremental"
    assert next_update(gateway, replace(on, incremental_drift_threshold=drift)) == "full"
    assert next_update(gateway, replace(on, incremental_drift_threshold=drift / 2)) == "full"
    assert next_update(gateway, replace(on, incremental_updates=False)) == "full"


def test_kgrec_update_sync_publishes_a_child_or_says_nothing_changed(shop: tuple) -> None:
    env, settings, gateway = shop
    parent = active(gateway)
    nothing = kgrec_cli("update", "--sync", env=env)
    assert nothing.returncode == 0, nothing.stderr
    assert json.loads(nothing.stdout.splitlines()[-1])["version"] is None
    buy(gateway, settings, "c", artifacts(settings, gateway, parent))
    done = kgrec_cli("update", "--sync", "--partitions", "3", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["activated"] is True and summary["parent"] == parent
    assert active(gateway) == summary["version"]
    # its stages show as a progress bar on stderr (on a terminal as they run; elsewhere the last)
    (bar,) = done.stderr.strip().splitlines()
    assert bar.startswith("done") and "100.0%" in bar, done.stderr


def test_an_update_with_only_new_users_on_new_items_publishes_nothing_and_a_failure_is_one_line(
    shop: tuple,
) -> None:
    env, settings, gateway = shop
    parent = active(gateway)
    now = int(time.time() * 1000)
    raw = [
        {
            "event_id": "new-1",
            "user_id": "newbie3",
            "item_id": "another-new-item",
            "type": "purchase",
            "ts": now,
        }
    ]
    events, errors = validate_batch(raw, max_skew_s=300)
    assert errors == []
    ingest(gateway, events, settings)
    # nothing the parent knows was touched: no row to refresh, so no child, and the result says why
    done = kgrec_cli("update", "--sync", "--partitions", "2", env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["version"] is None and summary["parent"] == parent
    assert summary["reason"].startswith("nothing to train on") and summary["new_interactions"] == 1
    assert active(gateway) == parent

    # with a known user's purchase beside it, the child has new rows, and none for the new user
    buy(gateway, settings, "d", artifacts(settings, gateway, parent))
    summary = run_incremental(gateway, settings, "v-mixed", partitions=2)
    assert summary["activated"] is True and summary["users"] == TOUCHED_USERS + 1
    assert gateway.run_query(
        "MATCH (:ModelVersion {id: 'v-mixed'})-[e:EMBEDDING]->(:User {id: 'newbie3'}) RETURN count(e) AS n",
        {},
    ) == [{"n": 0}]

    # an update that fails is one line naming why, not a traceback
    path = artifact_path(settings, gateway, "v-mixed")
    kept = path.read_bytes()
    buy(gateway, settings, "e", artifacts(settings, gateway, "v-mixed"))
    try:
        path.write_bytes(kept[: len(kept) // 2])  # a truncated artifact
        failed = kgrec_cli("update", "--sync", env=env)
    finally:
        path.write_bytes(kept)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    errors = [line for line in failed.stderr.splitlines() if line.startswith("kgrec: error: ")]
    assert len(errors) == 1 and failed.stderr.rstrip().endswith(errors[0]), failed.stderr
    assert active(gateway) == "v-mixed"
    # the failed update's purchases are taken by the next one, so that the module's other tests
    # (in any order) see only their own
    assert run_incremental(gateway, settings, "v-after-failure", partitions=2)["activated"] is True


def test_a_redelivered_update_keeps_the_plan_its_first_partitions_were_given(shop: tuple) -> None:
    """A worker lost after queuing the chord redelivers ``incremental_update`` (acks_late) while
    the first chord's partitions run; its plan must not replace the one they encoded their rows for
    (the merge maps each user vector to the plan's seed users by position)."""
    env, settings, gateway = shop
    parent = artifacts(settings, gateway, active(gateway))
    buy(gateway, settings, "redelivered", parent)
    first = plan_update(gateway, partitions=2)
    assert first is not None
    client = job_client(Settings.from_env(env))
    update_id = f"redelivered-{uuid.uuid4().hex[:8]}"
    key, _kept = store_plan(client, update_id, first.to_json())
    try:
        encoded = run_partition(gateway, settings, first, 0).encode(first.seeds(0)[1])
        # an event by a user who sorts before every touched one arrives before the redelivery plans
        (user,) = gateway.run_query("MATCH (u:User) RETURN u.id AS id ORDER BY id LIMIT 1", {})
        events, errors = validate_batch(
            [
                {
                    "event_id": f"{update_id}-late",
                    "user_id": user["id"],
                    "item_id": parent.item_ids[0],
                    "type": "purchase",
                    "ts": int(time.time() * 1000),
                }
            ],
            max_skew_s=300,
        )
        assert errors == []
        ingest(gateway, events, settings)
        second = plan_update(gateway, partitions=2)
        assert second is not None and second.seeds(0)[1] != first.seeds(0)[1]
        again, kept_json = store_plan(client, update_id, second.to_json())  # the redelivery
        kept = UpdatePlan.from_json(kept_json)
        assert again == key and kept == first == UpdatePlan.from_json(load_plan(client, key))
        expected = PartitionRows.decode(encoded, first.seeds(0)[1]).user_ids
        assert PartitionRows.decode(encoded, kept.seeds(0)[1]).user_ids == expected
    finally:
        drop_plan(client, key)
    # this test's purchases are taken here, so that the module's other tests see only their own
    assert run_incremental(gateway, settings, "v-after-redelivery", partitions=2)["activated"] is True


def erase_a_user_of(gateway: GraphGateway, item: str, touched_users: set[str]) -> None:
    """Erase a user of ``item`` who is not touched (so no update's plan names them)."""
    (user,) = gateway.run_query(
        "MATCH (u:User)-[:INTERACTED]->(:Item {id: $item}) "
        "WHERE coalesce(u.flagged_bot, false) = false AND NOT u.id IN $touched "
        "RETURN u.id AS id ORDER BY id LIMIT 1",
        {"item": item, "touched": sorted(touched_users)},
    )
    gateway.write(
        ERASE_USER,
        {"user_id": user["id"], "erasure_id": user_hash(user["id"]), "now": int(time.time() * 1000)},
    )


def assert_serves_the_count(
    gateway: GraphGateway, settings: Settings, version: str, item: str, until: int
) -> None:
    """``version`` is active and serves ``item``'s popularity as its users now count it."""
    (count,) = gateway.read(ITEM_INTERACTION_COUNTS, {"ids": [item], "until": until})
    served = ActiveModel(gateway, settings.data_dir).get()
    assert served is not None and served.artifacts.version == version
    assert served.artifacts.popularity[served.item_index[item]] == count["interactions"]


def test_a_user_erased_while_an_update_runs_is_not_counted_by_its_child(shop: tuple) -> None:
    _env, settings, gateway = shop
    parent = artifacts(settings, gateway, active(gateway))
    touched_users, touched_items = buy(gateway, settings, "erased-meanwhile", parent)
    plan = plan_update(gateway, partitions=1)
    assert plan is not None
    parts = [run_partition(gateway, settings, plan, 0)]
    item = sorted(touched_items)[0]
    erase_a_user_of(gateway, item, touched_users)  # after planning, before the merge
    assert finish_update(gateway, settings, plan, parts, "v-erased-meanwhile")["activated"] is True
    assert_serves_the_count(gateway, settings, "v-erased-meanwhile", item, plan.data_until)


def test_a_planned_user_erased_and_made_again_before_the_merge_gets_no_vector(shop: tuple) -> None:
    """An erasure whose job queue did not answer withdraws no plan: the update then runs with the
    user's id. Their history is deleted, but an event after the erasure makes the user again (a
    new history), and the partition's vector, read before, must not be written onto that user."""
    _env, settings, gateway = shop
    parent = artifacts(settings, gateway, active(gateway))
    touched_users, _items = buy(gateway, settings, "erased-planned", parent)
    plan = plan_update(gateway, partitions=1)
    assert plan is not None and plan.planned_at > 0
    parts = [run_partition(gateway, settings, plan, 0)]
    user = sorted(touched_users)[0]
    assert user in parts[0].user_ids
    time.sleep(2.0)  # the erasure, dated back below, still comes after the partition's read
    now = int(time.time() * 1000)
    # Dated back past the tombstone's margin (what a client clock ahead may date before the
    # erasure), so that a view at `now` is a new history: a view dated ahead instead made the next
    # updates' data_until minutes ahead, and the module's later tests found nothing to update.
    erased_at = now - ERASURE_TIME_MARGIN_MS - 1_000
    gateway.write(ERASE_USER, {"user_id": user, "erasure_id": user_hash(user), "now": erased_at})
    later = {"event_id": f"after-erasure-{user}", "user_id": user, "item_id": parent.item_ids[0]}
    events, errors = validate_batch([{**later, "type": "view", "ts": now}], max_skew_s=300)
    assert errors == []
    ingest(gateway, events, settings)
    assert finish_update(gateway, settings, plan, parts, "v-erased-planned")["activated"] is True
    vectors = gateway.run_query(
        "MATCH (:ModelVersion {id: $version})-[e:EMBEDDING]->(u:User) WHERE u.id IN $users RETURN u.id AS id",
        {"version": "v-erased-planned", "users": sorted(touched_users)},
    )
    assert {r["id"] for r in vectors} == touched_users - {user}  # the others' vectors are written
    # The module's other tests see only their own: the tombstone goes (within its margin, every
    # update of the next minutes would write no vector for the user, whom their purchases touch),
    # and the view after the erasure is taken here.
    gateway.run_query("MATCH (gone:Erasure {id: $id}) DELETE gone", {"id": user_hash(user)})
    assert run_incremental(gateway, settings, "v-after-erased-planned", partitions=1)["activated"] is True
    time.sleep(0.01)  # the next test's events are newer than this update's data


def test_a_rerun_merge_drops_the_adjustments_of_the_child_it_rewrites(shop: tuple) -> None:
    """A merge killed after the child's EMBEDDING copy and run again: a user erased in between
    adjusted the half-written child, and the rewritten child counts without them already."""
    _env, settings, gateway = shop
    other = active(gateway)
    buy(gateway, settings, "before-rerun", artifacts(settings, gateway, other))
    parent = run_incremental(gateway, settings, "v-before-rerun", partitions=1)["version"]
    touched_users, touched_items = buy(gateway, settings, "rerun", artifacts(settings, gateway, parent))
    plan = plan_update(gateway, partitions=1)
    assert plan is not None
    parts = [run_partition(gateway, settings, plan, 0)]
    # the first run: its child written, not switched to (the parent was not active then, as if it
    # had been killed before the switch)
    activate(gateway, other)
    assert finish_update(gateway, settings, plan, parts, "v-rerun")["activated"] is False
    item = sorted(touched_items)[0]
    erase_a_user_of(gateway, item, touched_users)
    activate(gateway, parent)
    assert finish_update(gateway, settings, plan, parts, "v-rerun")["activated"] is True
    assert_serves_the_count(gateway, settings, "v-rerun", item, plan.data_until)


def test_a_merge_run_again_beside_one_that_activated_its_child_leaves_the_child(shop: tuple) -> None:
    """Two runs of one merge (a redelivered chord callback that passed the early check while the
    first still ran): the first activates the child and an erasure adjusts it; the second's write
    of the child node is refused, so the child stays active and ready with its artifact and
    adjustments, and the second stops before writing anything."""
    _env, settings, gateway = shop
    touched_users, touched_items = buy(
        gateway, settings, "settled", artifacts(settings, gateway, active(gateway))
    )
    plan = plan_update(gateway, partitions=1)
    assert plan is not None
    parts = [run_partition(gateway, settings, plan, 0)]
    late, users = merge(load_parent(settings, plan), plan, parts, "v-settled", {})  # the second run's
    assert finish_update(gateway, settings, plan, parts, "v-settled")["activated"] is True
    erase_a_user_of(gateway, sorted(touched_items)[0], touched_users)

    def stored() -> tuple:
        (row,) = [v for v in gateway.read(MODEL_VERSIONS) if v["id"] == "v-settled"]
        adjusted = gateway.read(POPULARITY_ADJUSTMENTS, {"version": "v-settled"})
        return row, adjusted, (models_dir(settings.data_dir) / artifact_name("v-settled")).read_bytes()

    before = stored()
    assert before[0]["active"] and before[1]
    with pytest.raises(VersionPublished):
        publish_child(gateway, settings, plan, late, users)
    assert stored() == before
    assert not list(models_dir(settings.data_dir).glob(".v-settled*"))  # its staged files are gone


def test_a_merge_taken_over_before_its_copy_step_copies_nothing_onto_the_child(shop: tuple) -> None:
    """A merge run again (a redelivered chord callback) claims the child while the first run writes
    it: the first run's copy of its parent's EMBEDDING and HAS_TOPIC edges is refused before any
    edge is copied, and the run that took the child over publishes it whole."""
    _env, settings, gateway = shop
    buy(gateway, settings, "taken-over", artifacts(settings, gateway, active(gateway)))
    plan = plan_update(gateway, partitions=1)
    assert plan is not None
    parts = [run_partition(gateway, settings, plan, 0)]
    child, users = merge(load_parent(settings, plan), plan, parts, "v-taken-over", {})
    first, second = new_owner(), new_owner()
    claim_child(gateway, settings, plan, child, first)
    claim_child(gateway, settings, plan, child, second)  # the second run takes the child over

    def on_child() -> int:
        (row,) = gateway.run_query(
            "MATCH (:ModelVersion {id: 'v-taken-over'})-[r:EMBEDDING|HAS_TOPIC]->() RETURN count(r) AS n", {}
        )
        return row["n"]

    with pytest.raises(VersionSuperseded):
        copy_parent(gateway, plan.parent, "v-taken-over", first, {}, settings.embedding_batch)
    assert on_child() == 0
    with pytest.raises(VersionSuperseded):  # nor can it mark the child ready
        mark_ready(gateway, "v-taken-over", first, [])
    # the second run publishes the child (and so takes this test's purchases for the module's others)
    assert write_child(gateway, settings, plan, child, users, second) is True
    assert active(gateway) == "v-taken-over"

    def targets(version: str) -> set[tuple[str, str]]:
        rows = gateway.run_query(
            "MATCH (:ModelVersion {id: $v})-[r:EMBEDDING|HAS_TOPIC]->(n) RETURN type(r) AS r, n.id AS id",
            {"v": version},
        )
        return {(r["r"], r["id"]) for r in rows}

    assert targets("v-taken-over") == targets(plan.parent) | {("EMBEDDING", u) for u in users}
