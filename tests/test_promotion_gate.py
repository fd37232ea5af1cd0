"""The promotion gate: its rule, and real trainings on Amazon Beauty users behind it.

The graph: 150 real Amazon Beauty users, each user's latest interaction held back.
Version ``v1`` is trained on the rest and activated (no version was active). The
held-back interactions then arrive as events (newer than ``v1``): they are the
gate's hold-out, which neither ``v1`` nor a candidate has seen. A candidate trained
on the same graph with its interactions shuffled among users is kept as a
candidate, with the reason on its node; one trained on the real graph (as good as
``v1``: within the fixture's 10% tolerance) is promoted.
That training's tuning steps and its gate are watched: the gate scores only users
whose targets no tuning choice read.
Then ``GET /v1/models`` and ``POST /v1/models/{version}/promote`` are exercised
over real HTTP on that graph, and the promotion reaches serving.
"""

from __future__ import annotations

import gc
import json
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
import requests
from werkzeug.serving import make_server

import workers.training.gate as gate_module
import workers.training.pipeline as pipeline_module
from app import create_app
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway
from kgrec.model_versions import list_versions, promote
from kgrec.promotion_gate import KEPT, PROMOTED, GateScores, decide
from kgrec.serving import Serving
from kgrec.training_graph import TrainingGraph
from kgrec_cli.stack import worker_argv
from tests.openapi_check import undocumented
from tests.processes import ApiProcess, background
from tests.subsets import beauty_graph
from workers.training.config import TrainConfig
from workers.training.gate import Holdout, candidate_recommender
from workers.training.holdout import (
    MIN_TUNING_USERS,
    hold_out_latest,
    in_gate_slice,
    min_users_to_split,
    tuning_targets,
)
from workers.training.job import publish, run_training
from workers.training.pipeline import train_model
from workers.training.subgraph import pull
from workers.training.validation import validation_set

USERS = 150
CONFIG = TrainConfig(epochs=1)
API_KEY = "gate-test-key"


def scores(candidate: float, active: float | None, users: int = 100, tolerance: float = 0.02) -> GateScores:
    return GateScores(
        candidate={"ndcg@10": candidate},
        active=None if active is None else {"ndcg@10": active},
        active_version=None if active is None else "v-active",
        users=users,
        tolerance=tolerance,
        min_users=30,
    )


def test_gate_rule_at_the_tolerance_boundary() -> None:
    assert decide(scores(0.098, 0.1)).decision == PROMOTED  # exactly (1 - 2%) of the active score
    assert decide(scores(0.0979, 0.1)).decision == KEPT
    assert decide(scores(0.2, 0.1)).decision == PROMOTED
    kept = decide(scores(0.05, 0.1))
    assert kept.reason.startswith("validation NDCG@10 0.0500 is below 0.0980 (active v-active: 0.1000")
    assert decide(scores(0.0, None)).reason == "no version was active"
    assert decide(scores(0.0, None)).promoted
    too_few = decide(scores(0.5, 0.1, users=29))
    assert (too_few.decision, too_few.reason) == (
        KEPT,
        "only 29 users have an interaction newer than the active version v-active (the gate needs 30)",
    )
    assert decide(scores(0.1, 0.1, tolerance=0.0)).promoted


@dataclass
class GatedGraph:
    settings: Settings
    gateway: GraphGateway
    held_back: int
    summaries: dict[str, dict]
    built: dict[str, dict]  # every version as listed right after the three trainings
    watched: Watched  # what the "good" training's tuning steps and its gate read


@dataclass
class Watched:
    """The user ids whose held-out targets each tuning step was handed, and the gate's hold-out."""

    tuned: dict[str, set[str]] = field(default_factory=dict)
    gated: list[Holdout] = field(default_factory=list)


def watch(monkeypatch: pytest.MonkeyPatch) -> Watched:
    """Record the arguments the pipeline's tuning steps and the gate's hold-out really get (each
    step still runs as it is)."""
    seen = Watched()
    user_ids: list[str] = []

    def keep(step: str, graph_users: list[str], users: Iterable[int]) -> None:
        seen.tuned.setdefault(step, set()).update(graph_users[int(u)] for u in users)

    def early_stopped(real: Callable) -> Callable:
        def wrapped(graph, *args, **kwargs):  # type: ignore[no-untyped-def]
            user_ids[:] = graph.user_ids
            if kwargs.get("validation"):
                keep("early stopping", graph.user_ids, kwargs["validation"])
            return real(graph, *args, **kwargs)

        return wrapped

    def blend(real: Callable) -> Callable:
        def wrapped(artifacts, names, histories, targets, **kwargs):  # type: ignore[no-untyped-def]
            keep("blend fit", user_ids, targets)  # indices of the graph early stopping was handed
            return real(artifacts, names, histories, targets, **kwargs)

        return wrapped

    def ease(real: Callable) -> Callable:
        def wrapped(validation, *args, **kwargs):  # type: ignore[no-untyped-def]
            keep("ease lambda", validation.graph.user_ids, validation.users)
            return real(validation, *args, **kwargs)

        return wrapped

    def gate(real: Callable) -> Callable:
        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            held = real(*args, **kwargs)
            seen.gated.append(held)
            return held

        return wrapped

    monkeypatch.setattr(pipeline_module, "train_kg_model", early_stopped(pipeline_module.train_kg_model))
    monkeypatch.setattr(pipeline_module, "fit_blend", blend(pipeline_module.fit_blend))
    monkeypatch.setattr(pipeline_module, "tune_ease_signal", ease(pipeline_module.tune_ease_signal))
    monkeypatch.setattr(gate_module, "holdout", gate(gate_module.holdout))
    return seen


def _hold_back_latest(gateway: GraphGateway) -> list[dict]:
    """Delete each user's latest interaction (by the data's sequence); returns the (user, item) rows."""
    rows = gateway.run_query(
        """
        MATCH (u:User)-[r:INTERACTED]->(i:Item)
        WITH u, r, i ORDER BY r.last_seq DESC
        WITH u, collect(r)[0] AS latest, collect(i.id)[0] AS item
        DELETE latest
        RETURN u.id AS user, item ORDER BY user
        """,
        {},
    )
    return rows


def _arrive(gateway: GraphGateway, settings: Settings, rows: list[dict]) -> None:
    """The held-back interactions arrive now, as purchase events."""
    now = int(time.time() * 1000)
    raw = [
        {
            "event_id": f"held-{k}",
            "user_id": r["user"],
            "item_id": r["item"],
            "type": "purchase",
            "ts": now,
        }
        for k, r in enumerate(rows)
    ]
    events, errors = validate_batch(raw, max_skew_s=300)
    assert errors == []
    ingest(gateway, events, settings)


@pytest.fixture(scope="module")
def gated(
    settings: Settings,
    graph_server: EmbeddedServer | None,
    shared_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[GatedGraph]:
    if not settings.embedded:
        pytest.skip("builds its own graph on the embedded server")
    local, gateway = beauty_graph(
        settings, shared_data, tmp_path_factory.mktemp("gate"), users=USERS, prefix="gate"
    )
    # "good" learns from the very interactions v1 did (the arrived ones are its hold-out), so the
    # two are about equally good: scored on targets its tuning never read, "good" lands within a
    # few per cent of v1 either way on this few users (0.1078 against 0.1116 on 67). The tolerance
    # lets an equal candidate through and still keeps the shuffled one (about a sixth of v1).
    local = replace(local, gate_tolerance=0.1)
    summaries: dict[str, dict] = {}
    with gateway:
        held = _hold_back_latest(gateway)
        summaries["v1"] = run_training(gateway, local, CONFIG, device="cpu", version="v1", gate=True)
        time.sleep(0.05)  # the held-back events are newer than v1
        _arrive(gateway, local, held)

        # A deliberately worse candidate: the same graph with every interaction's item shuffled.
        graph = pull(gateway, int(time.time() * 1000), local.half_life_ms)
        rng = np.random.default_rng(3)
        shuffled = replace(graph, inter_item=rng.permutation(graph.inter_item))
        result = train_model(
            shuffled,
            CONFIG,
            device="cpu",
            text_cache_dir=local.data_dir / "text-embeddings",
            version="shuffled",
            hold_gate_slice=True,
        )
        decision = publish(gateway, local, graph, result, CONFIG, gate=True, trained_on=shuffled)
        assert decision is not None
        summaries["shuffled"] = {"gate": {"decision": decision.decision, "reason": decision.reason}}

        with pytest.MonkeyPatch.context() as monkeypatch:
            watched = watch(monkeypatch)
            summaries["good"] = run_training(gateway, local, CONFIG, device="cpu", version="good", gate=True)
        built = {v["version"]: v for v in list_versions(gateway, local.data_dir)}
        yield GatedGraph(local, gateway, len(held), summaries, built, watched)


def versions(gated: GatedGraph) -> dict[str, dict]:
    """The versions as the three trainings left them (tests run in random order; some promote)."""
    return gated.built


def test_first_version_is_promoted_when_none_was_active(gated: GatedGraph) -> None:
    v1 = versions(gated)["v1"]
    assert v1["gate"]["decision"] == PROMOTED
    assert v1["gate"]["reason"] == "no version was active"
    assert v1["activated_at"] is not None


def test_shuffled_candidate_is_kept_with_its_reason(gated: GatedGraph) -> None:
    shuffled = versions(gated)["shuffled"]
    gate = shuffled["gate"]
    assert (shuffled["status"], gate["decision"]) == ("candidate", KEPT), gated.summaries
    assert shuffled["activated_at"] is None
    assert gate["reason"].startswith("validation NDCG@10 ")
    assert " is below " in gate["reason"]
    compared = gate["scores"]
    assert compared["active_version"] == "v1"
    # every held-back interaction is newer than v1: all users with enough history are compared
    assert 30 <= compared["users"] <= gated.held_back
    assert compared["candidate"]["ndcg@10"] < compared["active"]["ndcg@10"] * (1 - compared["tolerance"])


def test_good_candidate_is_promoted_over_the_active_version(gated: GatedGraph) -> None:
    listed = versions(gated)
    good = listed["good"]
    assert (good["status"], good["gate"]["decision"]) == ("active", PROMOTED), gated.summaries
    compared = good["gate"]["scores"]
    assert compared["active_version"] == "v1"
    assert compared["candidate"]["ndcg@10"] >= compared["active"]["ndcg@10"] * (1 - compared["tolerance"])
    assert listed["v1"]["status"] == "retired"
    assert listed["shuffled"]["status"] == "candidate"
    assert list(listed) == ["good", "shuffled", "v1"]  # newest first
    assert gated.summaries["good"]["gate"]["decision"] == PROMOTED


def test_the_candidate_is_scored_with_embeddings_that_never_saw_the_hold_out(gated: GatedGraph) -> None:
    # The served embeddings are refitted on every interaction, the gate's targets too.
    graph = pull(gated.gateway, int(time.time() * 1000), gated.settings.half_life_ms)
    result = train_model(
        graph, CONFIG, device="cpu", text_cache_dir=gated.settings.data_dir / "text-embeddings"
    )
    assert CONFIG.refit_on_all and result.fit_embeddings is not None
    assert not np.array_equal(result.artifacts.item_embeddings, result.fit_embeddings.items)
    candidate = candidate_recommender(result, graph, CONFIG)
    assert np.array_equal(candidate.artifacts.item_embeddings, result.fit_embeddings.items)


def test_the_gate_scores_only_users_no_tuning_choice_read(gated: GatedGraph) -> None:
    """Early stopping, the blend fit (weights and decay) and EASE's λ were chosen on some users'
    held-out targets: scored on those, the candidate would be graded on the answers it was
    selected by, and the gate would lean towards promoting it."""
    tuned, gated_on = gated.watched.tuned, gated.watched.gated
    assert set(tuned) == {"early stopping", "blend fit", "ease lambda"}, tuned
    assert all(tuned.values()), tuned
    (held,) = gated_on
    assert len(held.users) == len(held.targets) == gated.built["good"]["gate"]["scores"]["users"]
    assert len(held.users) >= 30  # enough for a decision (KGREC_GATE_MIN_USERS)
    for step, users in tuned.items():
        assert not users & set(held.users), (step, sorted(users & set(held.users))[:5])


def test_small_hold_outs_are_not_split(gated: GatedGraph) -> None:
    """Under twice KGREC_GATE_MIN_USERS validation users every user tunes (the gate then finds none
    it may score, and keeps the candidate); from there on, both slices hold a share of the users."""
    graph = pull(gated.gateway, int(time.time() * 1000), gated.settings.half_life_ms)
    _, targets = hold_out_latest(graph)
    split_at = min_users_to_split(gated.settings.gate_min_users)
    assert len(targets) >= split_at
    few = dict(list(targets.items())[: split_at - 1])
    assert tuning_targets(graph, few, hold_gate_slice=True) == few
    enough = dict(list(targets.items())[:split_at])
    tuning = tuning_targets(graph, enough, hold_gate_slice=True)
    assert 0.25 * len(enough) < len(tuning) < 0.75 * len(enough)
    assert tuning_targets(graph, targets, hold_gate_slice=False) == targets
    assert gate_module.holdout(graph, None, seed=1, tuned_on=set(graph.user_ids)).targets == []


def shoppers(user_ids: list[str]) -> TrainingGraph:
    """A graph where each of ``user_ids`` has three interactions (enough for a validation target)."""
    users = len(user_ids)
    return TrainingGraph(
        user_ids=user_ids,
        item_ids=[f"item-{i}" for i in range(5)],
        inter_user=np.repeat(np.arange(users, dtype=np.int64), 3),
        inter_item=np.array([(u + k) % 5 for u in range(users) for k in range(3)], dtype=np.int64),
        inter_weight=np.ones(3 * users, dtype=np.float32),
        inter_order=np.tile(np.arange(3, dtype=np.int64), users),
        knowledge={},
    )


def test_the_split_follows_the_shops_gate_min_users() -> None:
    """A shop with KGREC_GATE_MIN_USERS=10 and 30 validation users can be gated (the gate slice
    holds about 15): its hold-out is split, where the default's 30 leaves it whole."""
    users = 30
    graph = shoppers([f"shopper-{u}" for u in range(users)])
    _, targets = hold_out_latest(graph)
    assert len(targets) == users
    assert tuning_targets(graph, targets, hold_gate_slice=True) == targets
    tuning = tuning_targets(graph, targets, hold_gate_slice=True, gate_min_users=10)
    assert 0.25 * users < len(tuning) < 0.75 * users
    assert not any(in_gate_slice(graph.user_ids[u]) for u in tuning)
    held = validation_set(graph, seed=1, hold_gate_slice=True, gate_min_users=10)
    assert sorted(held.users.tolist()) == sorted(tuning)


def test_a_split_leaves_tuning_at_least_its_floor_however_low_the_gate_min_users() -> None:
    """KGREC_GATE_MIN_USERS=1 split a hold-out of two users, and tuned the epoch count, λ, blend
    weights and decay on about one. The tuning slice keeps :data:`MIN_TUNING_USERS` users: fewer
    validation users than twice that are not split, nor are more whose tuning slice the hash leaves
    under it; from there on the slice holds what the hash gives it."""
    assert MIN_TUNING_USERS >= 10
    names = [f"shopper-{u}" for u in range(400)]
    inside = [n for n in names if in_gate_slice(n)]
    outside = [n for n in names if not in_gate_slice(n)]
    split_at = 2 * MIN_TUNING_USERS
    assert min_users_to_split(1) == split_at
    for users in (2, 4, split_at - 1):
        graph = shoppers(outside[: users // 2] + inside[: users - users // 2])
        _, targets = hold_out_latest(graph)
        assert tuning_targets(graph, targets, hold_gate_slice=True, gate_min_users=1) == targets, users
    # enough users, but the hash puts all but MIN_TUNING_USERS - 1 in the gate slice
    graph = shoppers(outside[: MIN_TUNING_USERS - 1] + inside[:split_at])
    _, targets = hold_out_latest(graph)
    assert tuning_targets(graph, targets, hold_gate_slice=True, gate_min_users=1) == targets
    graph = shoppers(outside[:MIN_TUNING_USERS] + inside[:MIN_TUNING_USERS])
    _, targets = hold_out_latest(graph)
    tuning = tuning_targets(graph, targets, hold_gate_slice=True, gate_min_users=1)
    assert sorted(graph.user_ids[u] for u in tuning) == sorted(outside[:MIN_TUNING_USERS])


@pytest.fixture(scope="module")
def gated_api(gated: GatedGraph, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    env = {
        "KGREC_DATA_DIR": str(gated.settings.data_dir),
        "KGREC_GRAPH": gated.settings.graph_name,
        "KGREC_API_KEYS": API_KEY,
    }
    api = ApiProcess(env, log=tmp_path_factory.mktemp("gate-api") / "api.log").start()
    try:
        yield api
    finally:
        api.stop()


def served_version(api: ApiProcess, user: str) -> str:
    response = requests.get(f"{api.url}/v1/users/{user}/recommendations", params={"k": 5}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


def promote_over_http(api: ApiProcess, version: str) -> requests.Response:
    return requests.post(
        f"{api.url}/v1/models/{version}/promote", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    )


def active_version(gated: GatedGraph) -> str:
    (row,) = gated.gateway.run_query("MATCH (m:ModelVersion {active: true}) RETURN m.id AS id", {})
    return row["id"]


def test_models_listed_and_promoted_over_http(gated: GatedGraph, gated_api: ApiProcess) -> None:
    document = requests.get(f"{gated_api.url}/openapi.json", timeout=30).json()
    listed = requests.get(f"{gated_api.url}/v1/models", timeout=30)
    assert listed.status_code == 200, listed.text
    assert undocumented(document, "GET", "/v1/models", 200, listed.json()) == []
    body = {v["version"]: v for v in listed.json()["versions"]}
    for name in ("good", "shuffled", "v1"):
        assert body[name]["gate"]["decision"] == gated.built[name]["gate"]["decision"]
        assert body[name]["gate"]["reason"] == gated.built[name]["gate"]["reason"]
    assert body["shuffled"]["status"] == "candidate" and " is below " in body["shuffled"]["gate"]["reason"]
    assert body["shuffled"]["metrics"]["validation_ndcg@10"] >= 0
    for v in body.values():
        assert v["artifact_bytes"] == (gated.settings.data_dir / "models" / v["artifact"]).stat().st_size

    user = gated.gateway.run_query("MATCH (u:User) RETURN u.id AS id ORDER BY id LIMIT 1", {})[0]["id"]
    before = active_version(gated)
    assert served_version(gated_api, user) == before

    assert requests.post(f"{gated_api.url}/v1/models/shuffled/promote", timeout=30).status_code == 401
    missing = promote_over_http(gated_api, "nope")
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")

    # The operator overrides the gate: the kept candidate becomes active, in one statement.
    promoted = promote_over_http(gated_api, "shuffled")
    assert promoted.status_code == 200, promoted.text
    assert undocumented(document, "POST", "/v1/models/{version}/promote", 200, promoted.json()) == []
    assert (promoted.json()["version"], promoted.json()["status"]) == ("shuffled", "active")
    statuses = {v["version"]: v["status"] for v in list_versions(gated.gateway, gated.settings.data_dir)}
    assert statuses["shuffled"] == "active" and statuses[before] == "retired"
    assert [s for s in statuses.values() if s == "active"] == ["active"]
    # Every serving process (gunicorn runs two) checks the active version at most a second apart.
    time.sleep(1.1)
    assert [served_version(gated_api, user) for _ in range(6)] == ["shuffled"] * 6

    # Roll back to what was active: a retired version is promoted the same way.
    assert promote_over_http(gated_api, before).json()["status"] == "active"
    time.sleep(1.1)
    assert [served_version(gated_api, user) for _ in range(6)] == [before] * 6
    stored = gated.gateway.run_query("MATCH (m:ModelVersion {id: 'shuffled'}) RETURN m.gate_metrics AS g", {})
    assert json.loads(stored[0]["g"])["metric"] == "ndcg@10"


def test_the_process_that_promotes_serves_the_version_from_its_next_request(gated: GatedGraph) -> None:
    """Other processes notice a promotion within a second; the one that made it must not lag behind it.

    One process (the app behind werkzeug's HTTP server), so the request after the promotion
    reaches the process that took it.
    """
    app = create_app(replace(gated.settings, api_keys=(API_KEY,)))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    user = gated.gateway.run_query("MATCH (u:User) RETURN u.id AS id ORDER BY id LIMIT 1", {})[0]["id"]
    before = active_version(gated)
    try:
        # a retired version: promoting it and rolling back leaves every version's status as it was
        # (a candidate promoted and rolled back would be retired, which other tests read)
        versions = requests.get(f"{url}/v1/models", timeout=30).json()["versions"]
        other = next(v["version"] for v in versions if v["status"] == "retired")
        assert (
            requests.get(f"{url}/v1/users/{user}/recommendations", timeout=30).json()["model_version"]
            == before
        )
        for version in (other, before):  # promote, then roll back
            promoted = requests.post(
                f"{url}/v1/models/{version}/promote",
                headers={"Authorization": f"Bearer {API_KEY}"},
                timeout=30,
            )
            assert promoted.status_code == 200, promoted.text
            served = requests.get(f"{url}/v1/users/{user}/recommendations", timeout=30).json()
            assert served["model_version"] == version
    finally:
        server.shutdown()
        app.extensions["kgrec"].close()
        promote(gated.gateway, gated.settings.data_dir, before)


def test_a_promoted_variant_is_not_kept_loaded_beside_the_active_version(gated: GatedGraph) -> None:
    """A process loads an experiment's variant beside the active version; once the variant is
    promoted, the active model serves it, and the copy loaded beside it (a second model in memory)
    stayed until four other versions pushed it out."""
    serving = Serving(gated.settings)
    before = active_version(gated)
    try:
        listed = list_versions(gated.gateway, gated.settings.data_dir)
        other = next(v["version"] for v in listed if v["status"] == "retired")  # see the test above
        side = weakref.ref(serving.model(other))
        assert serving.model().artifacts.version == before
        serving.promote(other)
        assert serving.model(other) is serving.model() and serving.model().artifacts.version == other
        gc.collect()
        assert side() is None
    finally:
        serving.close()
        promote(gated.gateway, gated.settings.data_dir, before)


def test_train_endpoint_queues_a_gated_training_a_worker_runs(
    gated: GatedGraph, gated_api: ApiProcess, tmp_path: Path
) -> None:
    env = {**gated_api.env, "OMP_NUM_THREADS": "1"}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with background(worker_argv(pool="solo"), env, tmp_path / "worker.log"):
        queued = requests.post(
            f"{gated_api.url}/v1/models/train", json={"epochs": 1}, headers=headers, timeout=30
        )
        assert queued.status_code == 200, queued.text
        job_id = queued.json()["id"]
        assert queued.json()["status_url"] == f"/v1/jobs/{job_id}"
        deadline = time.monotonic() + 300
        job: dict = {}
        while time.monotonic() < deadline:
            job = requests.get(f"{gated_api.url}/v1/jobs/{job_id}", timeout=30).json()
            if job["state"] in ("SUCCESS", "FAILURE"):
                break
            time.sleep(1)
    assert job["state"] == "SUCCESS", (job, (tmp_path / "worker.log").read_text()[-3000:])
    version = f"job-{job_id}"
    assert job["result"]["version"] == version
    # "good" is active and every interaction is older than it: the gate cannot compare, so it keeps the new
    # version as a candidate (with the held-back events newer than v1, "good" itself was compared and promoted).
    assert job["result"]["gate"] == {
        "decision": KEPT,
        "reason": "only 0 users have an interaction newer than the active version good (the gate needs 30)",
    }
    listed = {v["version"]: v for v in list_versions(gated.gateway, gated.settings.data_dir)}
    assert (listed[version]["status"], listed["good"]["status"]) == ("candidate", "active")
