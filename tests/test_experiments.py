"""A/B experiments between two model versions, over a real API, graph server and Redis.

Two versions are trained on a small Amazon Beauty graph; an experiment splits users 50/50; a
simulated client clicks (and buys) only what the treatment shows, and the results must show the
treatment's higher CTR as significant; promoting it makes its version active.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from scipy import stats

from kgrec.attribution import attribute
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.events.validation import validate_batch
from kgrec.experiments import (
    PROMOTION_LEASE_MS,
    RATES,
    Experiment,
    ExperimentStore,
    PromotionPending,
    RunningExperiment,
    UserSums,
    UserTotals,
    Variant,
    ratio_difference,
    results,
    two_proportions,
    wilson,
)
from kgrec.gateway import GraphUnavailable, open_gateway
from kgrec.impressions import PER_USER_METRICS, ImpressionStore
from kgrec.limits import MAX_SIDE_VERSIONS
from kgrec.model_store import artifact_name, load_artifacts, models_dir
from kgrec.serving import Serving
from tests.conftest import SHARED_DATA, embedded_only, served_subset
from tests.processes import ApiProcess

KEY = "experiments-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
USERS = 160
PICKUP_S = 1.0  # every serving process applies an erasure to the versions it serves within this


def served_versions(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, prefix: str, users: int
) -> Iterator[tuple[ApiProcess, Path]]:
    """An API on a graph with two trained versions, "<prefix>-a" active and "<prefix>-b" a
    candidate, and the folder of the Amazon Beauty subset they hold."""
    if not settings.embedded:
        pytest.skip("runs its own API on the embedded graph")
    tmp = tmp_path_factory.mktemp(prefix)
    # trained last, "<prefix>-a" is the active one
    versions = (f"{prefix}-b", f"{prefix}-a")
    with served_subset(
        settings, SHARED_DATA, tmp, users=users, prefix=prefix, key=KEY, versions=versions
    ) as api:
        yield api, tmp / "beauty"


@pytest.fixture(scope="module")
def two_versions(
    settings: Settings, graph_server: EmbeddedServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """An API on a graph with two trained versions, "exp-a" active and "exp-b" a candidate."""
    for api, _ in served_versions(settings, tmp_path_factory, "exp", users=60):
        yield api


def create(api: ApiProcess, body: dict[str, Any], auth: dict[str, str] = AUTH) -> requests.Response:
    return requests.post(f"{api.url}/v1/experiments", json=body, headers=auth, timeout=30)


def promote_variant(api: ApiProcess, experiment_id: str, variant: str) -> requests.Response:
    return requests.post(
        f"{api.url}/v1/experiments/{experiment_id}/promote",
        json={"variant": variant},
        headers=AUTH,
        timeout=30,
    )


SPLIT = {
    "name": "b vs active",
    "variants": [
        {"name": "control", "model_version": "active", "traffic": 0.5},
        {"name": "treatment", "model_version": "exp-b", "traffic": 0.5},
    ],
}


@embedded_only
def test_an_experiment_splits_users_measures_them_and_promotes_the_winner(two_versions: ApiProcess) -> None:
    api = two_versions
    assert create(api, SPLIT, auth={}).status_code == 401
    bad_share = {**SPLIT, "variants": [{**v, "traffic": 0.6} for v in SPLIT["variants"]]}
    assert create(api, bad_share).json()["field"] == "variants"
    unknown = {**SPLIT, "variants": [SPLIT["variants"][0], {**SPLIT["variants"][1], "model_version": "nope"}]}
    refused = create(api, unknown)
    assert refused.status_code == 422 and refused.json()["field"] == "variants.1.model_version"
    as_text = {**SPLIT, "variants": [{**v, "traffic": "0.5"} for v in SPLIT["variants"]]}
    refused = create(api, as_text)  # a string is not a share
    assert refused.status_code == 422 and refused.json()["field"] == "variants.0.traffic"

    started = create(api, SPLIT)
    assert started.status_code == 200, started.text
    experiment = started.json()
    assert experiment["status"] == "running" and experiment["unit"] == "user"
    assert create(api, SPLIT).status_code == 409  # one at a time
    time.sleep(1.2)  # every process sees it within a second

    served: dict[str, int] = {"control": 0, "treatment": 0}
    clicked_treatment = 0
    for n in range(USERS):
        user = f"exp-user-{n}"
        pages = [
            requests.get(f"{api.url}/v1/users/{user}/recommendations", params={"k": 4}, timeout=30).json()
            for _ in range(2)
        ]
        assert {p["experiment"] for p in pages} == {experiment["id"]}
        assert pages[0]["variant"] == pages[1]["variant"]  # sticky
        variant = pages[0]["variant"]
        served[variant] += 2
        assert pages[0]["model_version"] == ("exp-b" if variant == "treatment" else "exp-a")
        recorded = requests.get(
            f"{api.url}/v1/impressions/{pages[0]['recommendation_id']}", timeout=30
        ).json()
        assert (recorded["experiment"], recorded["variant"]) == (experiment["id"], variant)
        if variant == "treatment":  # the planted preference: only the treatment's items appeal
            item = pages[0]["items"][0]["item_id"]
            events = [
                {"event_id": f"c-{uuid.uuid4().hex}", "user_id": user, "item_id": item, "type": "click",
                 "ts": int(time.time() * 1000), "recommendation_id": pages[0]["recommendation_id"]},
                {"event_id": f"p-{uuid.uuid4().hex}", "user_id": user, "item_id": item, "type": "purchase",
                 "ts": int(time.time() * 1000), "value": 20.0},
            ]  # fmt: skip
            answer = requests.post(f"{api.url}/v1/events", json=events, headers=AUTH, timeout=30).json()
            assert answer["attributed"] == 2
            clicked_treatment += 1
    assert 0.35 < served["treatment"] / (2 * USERS) < 0.65

    report = requests.get(f"{api.url}/v1/experiments/{experiment['id']}", timeout=30)
    assert report.status_code == 200, report.text
    control, treatment = report.json()["variants"]
    assert control["impressions"] == served["control"] and treatment["impressions"] == served["treatment"]
    assert treatment["users"] == pytest.approx(served["treatment"] / 2, abs=2)
    assert (control["clicks"], treatment["clicks"]) == (0, clicked_treatment)
    assert treatment["purchases"] == clicked_treatment
    assert treatment["ctr"]["value"] == pytest.approx(clicked_treatment / served["treatment"], abs=1e-6)
    assert treatment["ctr"]["ci_low"] > control["ctr"]["ci_high"]
    assert treatment["vs_control"]["ctr"]["p_value"] < 0.05
    assert treatment["revenue_per_impression"]["value"] == pytest.approx(
        20.0 * clicked_treatment / served["treatment"], abs=1e-4
    )
    assert treatment["vs_control"]["revenue_per_impression"]["p_value"] < 0.05

    promoted = promote_variant(api, experiment["id"], "treatment")
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["status"] == "stopped"
    assert promoted.json()["promoted"]["model_version"] == "exp-b"
    time.sleep(1.2)
    after = requests.get(f"{api.url}/v1/users/exp-user-0/recommendations", params={"k": 2}, timeout=30).json()
    assert after["model_version"] == "exp-b" and after["experiment"] is None
    stopped = requests.post(f"{api.url}/v1/experiments/{experiment['id']}/stop", headers=AUTH, timeout=30)
    assert stopped.status_code == 200 and stopped.json()["promoted"]["variant"] == "treatment"
    # a stopped experiment is not promoted again: its record and the active version stay
    again = requests.post(
        f"{api.url}/v1/experiments/{experiment['id']}/promote",
        json={"variant": "control"},
        headers=AUTH,
        timeout=30,
    )
    assert again.status_code == 409 and "was already promoted ('treatment')" in again.text
    assert again.json()["field"] == "experiment_id"
    record = requests.get(f"{api.url}/v1/experiments/{experiment['id']}", timeout=30).json()
    assert record["promoted"]["variant"] == "treatment"
    # a stopped, unpromoted experiment is not promoted while another one runs
    earlier = create(api, SPLIT).json()["id"]
    assert requests.post(f"{api.url}/v1/experiments/{earlier}/stop", headers=AUTH, timeout=30).ok
    later = create(api, SPLIT).json()["id"]
    try:
        blocked = requests.post(
            f"{api.url}/v1/experiments/{earlier}/promote",
            json={"variant": "control"},
            headers=AUTH,
            timeout=30,
        )
        assert blocked.status_code == 409 and f"experiment {later} is running" in blocked.text
        # two promotions of different variants at once (two operators): one goes on, the other is
        # refused (a second promotion of the same variant would carry out the first one's claim)
        with ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(
                    lambda name: requests.post(
                        f"{api.url}/v1/experiments/{later}/promote",
                        json={"variant": name},
                        headers=AUTH,
                        timeout=30,
                    ),
                    ["control", "treatment"],
                )
            )
        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
        (won,) = [a.json()["promoted"]["variant"] for a in answers if a.status_code == 200]
        record = requests.get(f"{api.url}/v1/experiments/{later}", timeout=30).json()
        assert record["status"] == "stopped" and record["promoted"]["variant"] == won
        # a stop after the promotion keeps its record
        kept = requests.post(f"{api.url}/v1/experiments/{later}/stop", headers=AUTH, timeout=30).json()
        assert kept["promoted"]["variant"] == won
    finally:
        requests.post(f"{api.url}/v1/experiments/{later}/stop", headers=AUTH, timeout=30)
    missing = requests.get(f"{api.url}/v1/experiments/no-such-experiment", timeout=30)
    assert missing.status_code == 404


@embedded_only
def test_an_experiment_is_not_started_on_a_version_whose_artifact_file_is_missing(
    two_versions: ApiProcess,
) -> None:
    # Only the version's status was checked: the experiment started, and every request of the
    # variant's users failed, where POST /v1/models/{version}/promote refuses such a version.
    api = two_versions
    artifact = models_dir(Path(api.env["KGREC_DATA_DIR"])) / artifact_name("exp-b")
    aside = artifact.with_name(f"{artifact.name}.aside")
    artifact.rename(aside)
    try:
        refused = create(api, SPLIT)
        assert refused.status_code == 409, refused.text
        assert refused.json()["field"] == "variants.1.model_version"
        assert f"no artifact file {artifact.name}" in refused.json()["detail"]
        promote = requests.post(f"{api.url}/v1/models/exp-b/promote", headers=AUTH, timeout=30)
        assert promote.status_code == 409 and f"no artifact file {artifact.name}" in promote.text
        listed = requests.get(f"{api.url}/v1/experiments", timeout=30).json()
        assert listed["running"] is None
    finally:
        aside.rename(artifact)


@embedded_only
def test_an_experiment_names_no_more_versions_than_a_serving_process_keeps_loaded(
    two_versions: ApiProcess,
) -> None:
    # 10 variants were allowed while each serving process keeps 4 versions loaded besides the
    # active one: 5 distinct variant versions evicted each other, and requests kept reading
    # artifacts of about 0.2 GB again. The active version, by name or as "active", is not counted.
    api = two_versions

    def split(versions: list[str]) -> dict[str, Any]:
        share = 1 / len(versions)
        variants = [{"name": f"v{n}", "model_version": v, "traffic": share} for n, v in enumerate(versions)]
        return {"name": "many versions", "variants": variants}

    side = ["exp-b", *(f"exp-never-{n}" for n in range(MAX_SIDE_VERSIONS))]  # one too many
    refused = create(api, split(["active", "exp-a", *side]))
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "variants"
    assert (
        f"{len(side)} distinct model versions besides the active one; at most {MAX_SIDE_VERSIONS}"
        in (refused.json()["detail"])
    )
    # within the bound (a version named twice counts once): refused only for the versions that do
    # not exist
    within = create(api, split(["active", "exp-a", *side[:-1], side[0]]))
    assert within.status_code == 422 and within.json()["field"] == "variants.3.model_version", within.text
    assert requests.get(f"{api.url}/v1/experiments", timeout=30).json()["running"] is None


@embedded_only
def test_promoting_a_variant_whose_version_was_collected_is_a_conflict_naming_the_variant(
    two_versions: ApiProcess, settings: Settings
) -> None:
    # The endpoint documents 404 as "no such experiment" and 409 for a version that cannot be
    # activated; a variant's version collected after its experiment stopped answered 404 on `version`.
    local = settings.with_overrides(graph_name=two_versions.graph_name)  # type: ignore[attr-defined]
    with closing(ImpressionStore(local)) as impressions:
        store = ExperimentStore(impressions)
        variants = [Variant("control", "active", 0.5), Variant("treatment", "exp-collected", 0.5)]
        experiment = store.stop(store.create("on a version collected since", variants))
        promote = promote_variant(two_versions, experiment.id, "treatment")
        assert promote.status_code == 409, promote.text
        assert promote.json()["field"] == "variant"
        assert "exp-collected no longer exists" in promote.json()["detail"]
        assert store.get(experiment.id) == experiment  # put back as it was: stopped, unpromoted


def active_and_other(api: ApiProcess) -> tuple[str, str]:
    """The active version and the other one, of the two the module's API holds."""
    versions = requests.get(f"{api.url}/v1/models", timeout=30).json()["versions"]
    active = next(v["version"] for v in versions if v["status"] == "active")
    return active, next(v["version"] for v in versions if v["version"] != active)


@embedded_only
def test_a_promotion_whose_process_died_is_carried_out_by_the_next_promotion_or_stop(
    two_versions: ApiProcess, settings: Settings
) -> None:
    # The promotion claims the experiment (stopped, promoted) in one script, then activates the
    # version, then finishes (the running id goes). A process that died between the claim and the
    # finish left the experiment running for good: the stop saw "stopped" and did nothing, a second
    # promotion was "already promoted", every new experiment a 409, and a version never activated.
    api = two_versions
    impressions = ImpressionStore(settings.with_overrides(graph_name=api.graph_name))  # type: ignore[attr-defined]
    store = ExperimentStore(impressions)
    graph = open_gateway(settings, api.graph_name)  # type: ignore[attr-defined]

    def post(path: str, body: dict[str, Any] | None = None) -> requests.Response:
        return requests.post(f"{api.url}/v1/experiments/{path}", json=body, headers=AUTH, timeout=30)

    def claimed_then_lost(other: str) -> str:
        """An experiment whose promotion of "treatment" (``other``) was claimed by a process that died."""
        body = {**SPLIT, "variants": [SPLIT["variants"][0], {**SPLIT["variants"][1], "model_version": other}]}
        started = create(api, body)
        assert started.status_code == 200, started.text
        experiment = store.get(started.json()["id"])
        assert experiment is not None
        promoted = {"variant": "treatment", "model_version": other, "activated_at": None}
        assert store.claim_promotion(experiment, promoted)[1] == 1
        # under way as far as anyone can tell: a double click's second request does not take it over
        under_way = post(f"{experiment.id}/promote", {"variant": "treatment"})
        assert under_way.status_code == 409 and "is being promoted" in under_way.text, under_way.text
        stop = post(f"{experiment.id}/stop")  # nor a stop: it would answer "stopped" while it runs
        assert stop.status_code == 409 and "is being promoted" in stop.text, stop.text
        # ... until the lease is over: the request that claimed it is gone. The lease passing is
        # simulated by moving the claim's time, and every activation before it, back by the lease.
        aged = PROMOTION_LEASE_MS + 1
        claimed_at = store.claimed_at(experiment.id)
        assert claimed_at is not None
        impressions.run(lambda client: client.zadd(store.promoting_key, {experiment.id: claimed_at - aged}))
        graph.run_query(
            "MATCH (m:ModelVersion) WHERE m.activated_at IS NOT NULL SET m.activated_at = m.activated_at - $aged",
            {"aged": aged},
        )
        return experiment.id

    try:
        # Died before activating: the next promotion of that variant activates it and ends the experiment.
        active, other = active_and_other(api)
        lost = claimed_then_lost(other)
        assert post(f"{lost}/promote", {"variant": "control"}).status_code == 409  # not another variant
        done = post(f"{lost}/promote", {"variant": "treatment"})
        assert done.status_code == 200, done.text
        assert done.json()["promoted"]["model_version"] == other
        assert done.json()["promoted"]["activated_at"] is not None
        assert active_and_other(api) == (other, active)
        assert store.running_id() is None
        again = post(f"{lost}/promote", {"variant": "treatment"})  # finished: once only, as before
        assert again.status_code == 409 and "already promoted" in again.text

        # Died after activating: a stop finishes it, without activating the version again.
        active, other = active_and_other(api)
        lost = claimed_then_lost(other)
        activated = requests.post(f"{api.url}/v1/models/{other}/promote", headers=AUTH, timeout=30)
        assert activated.status_code == 200, activated.text
        stopped = post(f"{lost}/stop")
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["status"] == "stopped"
        assert stopped.json()["promoted"]["activated_at"] == activated.json()["activated_at"]
        assert store.running_id() is None
        time.sleep(1.2)  # every process sees it within a second
        page = requests.get(f"{api.url}/v1/users/exp-user-0/recommendations", params={"k": 2}, timeout=30)
        assert page.json()["experiment"] is None and page.json()["model_version"] == other
        later = create(api, SPLIT)  # experiments can start again
        assert later.status_code == 200, later.text
        assert post(f"{later.json()['id']}/stop").status_code == 200

        # Died before activating, and a version was activated by hand since (a rollback): the
        # resumed promotion keeps it, and puts the experiment back unpromoted.
        active, other = active_and_other(api)
        lost = claimed_then_lost(other)
        rolled_back = requests.post(f"{api.url}/v1/models/{active}/promote", headers=AUTH, timeout=30)
        assert rolled_back.status_code == 200, rolled_back.text
        kept = post(f"{lost}/promote", {"variant": "treatment"})
        assert kept.status_code == 409 and "is kept" in kept.text, kept.text
        assert active_and_other(api) == (active, other)
        assert store.get(lost).promoted is None and store.running_id() == lost  # type: ignore[union-attr]
        assert post(f"{lost}/stop").status_code == 200
    finally:
        left = store.running()
        if left is not None and left.promoted:  # a claim this test left
            store.finish_promotion(left)
        elif left is not None:
            store.stop(left)
        impressions.close()
        graph.close()


@embedded_only
def test_an_explanation_is_scored_by_the_users_variant_as_explain_true_is(
    two_versions: ApiProcess, settings: Settings
) -> None:
    # The explanation endpoint scored paths with the active model while `explain=true` on the
    # user's recommendations used their variant's: the two answers told a treated user different
    # reasons for the same item.
    api = two_versions
    active, other = active_and_other(api)
    graph = open_gateway(settings, api.graph_name)  # type: ignore[attr-defined]
    rows = graph.run_query(
        "MATCH (u:User)-[r:INTERACTED]->() WITH u, count(r) AS n WHERE n >= 3 RETURN u.id AS id ORDER BY id",
        {},
    )
    body = {**SPLIT, "variants": [SPLIT["variants"][0], {**SPLIT["variants"][1], "model_version": other}]}
    started = create(api, body)
    assert started.status_code == 200, started.text
    experiment_id = started.json()["id"]
    try:
        time.sleep(1.2)  # every process sees it within a second

        def page(user: str) -> dict[str, Any]:
            params = {"k": 10, "explain": "true", "record": "false"}
            return requests.get(
                f"{api.url}/v1/users/{user}/recommendations", params=params, timeout=30
            ).json()

        treated = next(p for p in (page(r["id"]) for r in rows) if p["variant"] == "treatment")
        assert treated["model_version"] == other != active
        reasons = {i["item_id"]: i["reason"] for i in treated["items"] if i.get("reason")}
        assert reasons, treated
        for item_id, reason in reasons.items():
            explained = requests.get(
                f"{api.url}/v1/users/{treated['user_id']}/recommendations/{item_id}/explanation",
                params={"max_paths": 1},
                timeout=30,
            ).json()
            assert explained["model_version"] == other
            assert (explained["experiment"], explained["variant"]) == (experiment_id, "treatment")
            best = explained["paths"][0]
            assert (best["kind"], best["nodes"]) == (reason["kind"], reason["nodes"])
            assert best["score"] == pytest.approx(reason["score"], rel=1e-3)
    finally:
        stop = requests.post(f"{api.url}/v1/experiments/{experiment_id}/stop", headers=AUTH, timeout=30)
        assert stop.status_code == 200, stop.text


@pytest.fixture(scope="module")
def erasure_versions(
    settings: Settings, graph_server: EmbeddedServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ApiProcess, Path]]:
    """An API with "expe-a" active and "expe-b" a candidate, and the Amazon Beauty subset they hold."""
    yield from served_versions(settings, tmp_path_factory, "expe", users=40)


def ranked(page: dict[str, Any]) -> list[tuple[str, float]]:
    """The page's ranked items with their scores (explored slots left out)."""
    return [(i["item_id"], i["score"]) for i in page["items"] if "explore" not in i]


@embedded_only
def test_a_variant_serves_its_version_without_the_users_erased_after_it_was_loaded(
    erasure_versions: tuple[ApiProcess, Path],
) -> None:
    # An erasure takes the user's share out of every version trained on them, so that a version
    # served later serves without them: a variant's version too, in every process, within a second.
    api, subset = erasure_versions
    control, treatment = SPLIT["variants"]
    split = {"name": "erasure", "variants": [control, {**treatment, "model_version": "expe-b"}]}
    assert create(api, split).status_code == 200

    def page(user: str) -> dict[str, Any]:
        return requests.get(f"{api.url}/v1/users/{user}/recommendations", params={"k": 10}, timeout=30).json()

    newcomer = next(u for u in (f"expe-new-{n}" for n in range(64)) if page(u)["variant"] == "treatment")
    for _ in range(8):  # both workers load the variant's version before the erasure
        assert page(newcomer)["model_version"] == "expe-b"
    top = ranked(page(newcomer))[0][0]
    with gzip.open(subset / "interactions.csv.gz", "rt", newline="") as handle:
        buyers = sorted({r["user_id"] for r in csv.DictReader(handle) if r["item_id"] == top})
    for user in buyers:
        assert requests.delete(f"{api.url}/v1/users/{user}", headers=AUTH, timeout=60).status_code == 200
    time.sleep(PICKUP_S)
    as_variant = [ranked(page(newcomer)) for _ in range(8)]
    # the same version, served as the active one, reads the erasures' adjustments
    promoted = requests.post(f"{api.url}/v1/models/expe-b/promote", headers=AUTH, timeout=30)
    assert promoted.status_code == 200, promoted.text
    time.sleep(PICKUP_S)
    as_active = ranked(page(newcomer))
    assert all(ranked(page(newcomer)) == as_active for _ in range(4))
    assert all(r == as_active for r in as_variant), (as_variant, as_active)


@embedded_only
def test_loading_a_variants_version_leaves_the_other_requests_free(
    erasure_versions: tuple[ApiProcess, Path], settings: Settings
) -> None:
    # The first request for a variant's version reads its artifact (seconds on a large model).
    # Every request of the process takes the serving lock (the active model, the catalogue):
    # loaded under it, the load stalled them all, control users included.
    api, _ = erasure_versions
    local = settings.with_overrides(data_dir=Path(api.env["KGREC_DATA_DIR"]), graph_name=api.graph_name)  # type: ignore[attr-defined]
    serving = Serving(local)
    seen: dict[str, Any] = {"loads": 0}

    def others() -> None:
        seen["active"] = serving.active_model().artifacts.version
        serving.catalogue_view()
        seen["held"] = serving.held_model_version()

    def while_loading(frame: Any, event: str, _arg: Any) -> None:
        if event != "call" or frame.f_code is not load_artifacts.__code__:
            return
        seen["loads"] += 1
        seen["lock_held"] = serving._lock.locked()
        request = seen["request"] = threading.Thread(target=others, daemon=True)
        request.start()
        request.join(timeout=20)  # before: blocked until this load ended
        seen["answered"] = not request.is_alive()

    try:
        active = serving.active_model().artifacts.version
        side = next(v for v in ("expe-a", "expe-b") if v != active)
        sys.setprofile(while_loading)
        try:
            variant = serving.model(side)
        finally:
            sys.setprofile(None)
        seen["request"].join(timeout=60)
        assert variant.artifacts.version == side
        assert seen["loads"] == 1 and not seen["lock_held"] and seen["answered"], seen
        assert seen["active"] == seen["held"] == active
        # loaded once: the next request for it reads no artifact
        sys.setprofile(while_loading)
        try:
            assert serving.model(side).artifacts.version == side
        finally:
            sys.setprofile(None)
        assert seen["loads"] == 1
    finally:
        serving.close()


TWO_ARMS = (Variant("a", "active", 0.5), Variant("b", "v-x", 0.5))


@pytest.fixture
def experiments(settings: Settings, graph_server: EmbeddedServer | None) -> Iterator[ExperimentStore]:
    """The experiments of a graph of this test's own, in the real impression store."""
    store = ImpressionStore(settings.with_overrides(graph_name=f"exp_{uuid.uuid4().hex[:8]}"))
    try:
        yield ExperimentStore(store)
    finally:
        store.close()


def test_the_running_experiment_stays_known_while_the_impression_store_cannot_be_read(
    experiments: ExperimentStore, settings: Settings
) -> None:
    # Recommendations ask for the running experiment; an impression store that is restarting must
    # not turn them into 503s (they are journalled meanwhile), so the known experiment is served.
    started = experiments.create("outage", TWO_ARMS)
    try:
        running = RunningExperiment(experiments)
        assert running.get() == started
        with socket.socket() as probe:  # a port nothing listens on once the probe is closed
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        unreachable = ImpressionStore(settings.with_overrides(redis_url=f"redis://127.0.0.1:{port}/0"))
        running.store = ExperimentStore(unreachable)
        running.stale()
        assert running.get() == started
        # a process that never read it cannot tell: a 503, not every user served as if none ran
        with pytest.raises(GraphUnavailable):
            RunningExperiment(ExperimentStore(unreachable)).get()
        running.store = experiments
        experiments.stop(started)
        running.stale()
        assert running.get() is None
    finally:
        experiments.stop(started)


class HeldExperiments(ExperimentStore):
    """The real experiment store, whose reads of the running experiment, once ``held`` is set,
    wait for ``release`` before answering what they read (a read under way while this process
    writes)."""

    def __init__(self, impressions: ImpressionStore) -> None:
        super().__init__(impressions)
        self.held, self.reading, self.release = threading.Event(), threading.Event(), threading.Event()

    def running(self) -> Experiment | None:
        found = super().running()
        if self.held.is_set():
            self.reading.set()
            assert self.release.wait(timeout=60)
        return found


def test_a_stop_is_served_by_the_next_answer_whatever_read_was_under_way(
    experiments: ExperimentStore,
) -> None:
    # A request began reading the running experiment before this process stopped it; that read
    # ends after the stop and finds it running. Before, it was kept as fresh for a second, undoing
    # the stop's stale(): this process served the stopped experiment after answering the stop.
    held = HeldExperiments(experiments.impressions)
    started = held.create("undone", TWO_ARMS)
    try:
        running = RunningExperiment(held, check_every_s=60.0)
        assert running.get() == started  # a first read, so the later one runs while one is known
        running.stale()  # the next request reads again
        held.held.set()
        with ThreadPoolExecutor(1) as pool:
            under_way = pool.submit(running.get)
            assert held.reading.wait(timeout=60)
            held.held.clear()
            held.stop(started)
            running.stale()
            held.release.set()
            assert under_way.result(timeout=60) == started  # what it read, before the stop
        assert running.get() is None
    finally:
        experiments.stop(started)


def test_a_promotion_claim_holds_the_experiment_until_it_is_finished_or_undone(
    experiments: ExperimentStore,
) -> None:
    variants = TWO_ARMS
    started = experiments.create("claimed", variants)
    try:
        claimed, claim = experiments.claim_promotion(started, {"variant": "b", "model_version": "v-x"})
        assert claim == 1 and claimed.status == "stopped"
        assert experiments.running_id() == started.id  # nothing can start while the version is activated
        assert experiments.claim_promotion(started, {"variant": "a", "model_version": "active"})[1] == 0
        assert experiments.stop(started).promoted == {"variant": "b", "model_version": "v-x"}
        # the same variant's claim, never finished: under way within the lease, then taken over
        # (its process died), once: the take-over is a claim of its own
        assert experiments.claimed_at(started.id) is not None
        assert experiments.claim_promotion(started, {"variant": "b", "model_version": "v-x"})[1] == -2
        expired = int(time.time() * 1000) - PROMOTION_LEASE_MS - 1
        experiments.impressions.run(
            lambda client: client.zadd(experiments.promoting_key, {started.id: expired})
        )
        assert experiments.claim_promotion(started, {"variant": "b", "model_version": "v-x"}) == (claimed, 2)
        assert experiments.claim_promotion(started, {"variant": "b", "model_version": "v-x"})[1] == -2
        assert experiments.before_claim(claimed) == started
        experiments.undo_promotion(claimed, started)  # the version could not be activated
        assert experiments.get(started.id) == started and experiments.running_id() == started.id
        assert experiments.claimed_at(started.id) is None
        claimed, claim = experiments.claim_promotion(started, {"variant": "a", "model_version": "active"})
        experiments.finish_promotion(claimed)
        assert experiments.running_id() is None and experiments.get(started.id) == claimed
        assert experiments.claimed_at(started.id) is None
        assert experiments.claim_promotion(started, {"variant": "a", "model_version": "active"})[1] == 0
        # an unpromoted, stopped experiment is not claimed while another runs
        earlier = experiments.stop(experiments.create("earlier", variants))
        experiments.create("later", variants)  # running
        assert experiments.claim_promotion(earlier, {"variant": "a", "model_version": "active"})[1] == -1
        assert experiments.get(earlier.id) == earlier
    finally:
        if (left := experiments.running()) is not None:
            experiments.stop(left)


def test_no_experiment_starts_while_a_stopped_experiments_promotion_is_claimed(
    experiments: ExperimentStore,
) -> None:
    # A stopped experiment's claim leaves no running id; before, a new experiment started during it
    # and the promotion's activation then changed what its `active` variant served.
    stopped = experiments.stop(experiments.create("stopped first", TWO_ARMS))
    claimed, claim = experiments.claim_promotion(stopped, {"variant": "b", "model_version": "v-x"})
    try:
        assert claim == 1 and experiments.running_id() is None
        with pytest.raises(PromotionPending, match=f"the promotion of experiment {stopped.id} is under way"):
            experiments.create("second", TWO_ARMS)
        assert experiments.running_id() is None
        assert [x.name for x in experiments.list_experiments()].count("second") == 0
        experiments.finish_promotion(claimed)
        later = experiments.create("second", TWO_ARMS)  # the claim finished: experiments start again
        assert experiments.running_id() == later.id
    finally:
        if (left := experiments.running()) is not None:
            experiments.stop(left)
        experiments.finish_promotion(claimed)


def test_assignment_is_deterministic_and_follows_the_shares() -> None:
    variants = (Variant("a", "active", 0.2), Variant("b", "v2", 0.8))
    experiment = Experiment("exp-1", "x", "user", variants, "running", 0)
    picks = [experiment.variant_for(f"user-{i}").name for i in range(5_000)]
    assert picks == [experiment.variant_for(f"user-{i}").name for i in range(5_000)]
    assert 0.18 < picks.count("a") / len(picks) < 0.22
    other = Experiment("exp-2", "x", "user", variants, "running", 0)
    assert picks != [other.variant_for(f"user-{i}").name for i in range(5_000)]  # re-drawn per experiment


def test_intervals_and_tests_match_known_values() -> None:
    low, high = wilson(10, 100)
    assert (round(low, 4), round(high, 4)) == (0.0552, 0.1744)
    diff = two_proportions(30, 200, 15, 200)
    assert diff["difference"] == pytest.approx(0.075)
    # unpooled: se = sqrt(.15 x .85 / 200 + .075 x .925 / 200) = 0.031375, z = 2.390
    assert diff["p_value"] == pytest.approx(0.016827, abs=1e-5)
    assert (diff["ci_low"], diff["ci_high"]) == (
        pytest.approx(0.013507, abs=1e-5),
        pytest.approx(0.136493, abs=1e-5),
    )
    experiment = Experiment(
        "e", "x", "user", (Variant("a", "active", 0.5), Variant("b", "v", 0.5)), "running", 0
    )
    empty = results(experiment, {"a": {"users": 0}, "b": {"users": 0}})
    assert empty["variants"][1]["vs_control"]["ctr"]["p_value"] is None
    assert empty["sample_ratio_p"] is None and empty["sample_ratio_mismatch"] is False
    # the per-variant intervals count impressions as independent: the method says so
    assert "95% intervals per impression, not clustered by user" in empty["tests"]


def _sums(n: np.ndarray, clicks: np.ndarray) -> UserSums:
    """The sums over users of per-user impressions and clicks."""
    zeros = np.zeros(len(n))
    return UserSums.of(UserTotals(n, clicks, zeros, zeros, zeros))


def test_a_difference_interval_and_its_p_value_agree() -> None:
    # before, the interval used the unpooled standard error and the p-value the pooled one: this
    # interval, [-0.584, -0.016], excluded 0 while p was 0.060
    diff = two_proportions(0, 10, 3, 10)
    assert diff["ci_high"] < 0 and diff["p_value"] < 0.05
    assert diff["p_value"] == pytest.approx(0.038434, abs=1e-5)
    # the per-user test too: over a grid of small outcomes, 0 is outside the interval iff p < 0.05
    rng = np.random.default_rng(7)
    for _ in range(300):
        n1, n0 = rng.integers(1, 6, 8).astype(float), rng.integers(1, 6, 8).astype(float)
        x1, x0 = (
            rng.binomial(n1.astype(int), 0.3).astype(float),
            rng.binomial(n0.astype(int), 0.5).astype(float),
        )
        d = ratio_difference(_sums(n1, x1), _sums(n0, x0), "click")
        assert d["p_value"] is not None and d["ci_low"] is not None and d["ci_high"] is not None
        assert (d["p_value"] < 0.05) == (d["ci_low"] > 0 or d["ci_high"] < 0)


def test_the_revenue_difference_takes_the_user_as_the_unit() -> None:
    # one impression per user: the delta method is the z-test of two means with per-user variances
    treatment, control = [20.0, 25.0, 0.0, 30.0], [0.0, 0.0, 0.0, 1.0]
    ones = np.ones(4)
    diff = ratio_difference(_sums(ones, np.array(treatment)), _sums(ones, np.array(control)), "click")
    se = math.sqrt(np.var(treatment, ddof=1) / 4 + np.var(control, ddof=1) / 4)
    assert diff["difference"] == pytest.approx(18.5)
    assert diff["p_value"] == pytest.approx(2 * stats.norm.sf(18.5 / se))
    assert (diff["ci_low"], diff["ci_high"]) == (
        pytest.approx(18.5 - 1.959964 * se),
        pytest.approx(18.5 + 1.959964 * se),
    )
    # a user with many impressions counts once: two users, one who saw 9 impressions and spent
    # nothing, one who saw 1 and spent 10, against the same again, is no difference at all
    n = np.array([9.0, 1.0])
    same = ratio_difference(_sums(n, np.array([0.0, 10.0])), _sums(n, np.array([0.0, 10.0])), "click")
    assert same["difference"] == 0 and same["p_value"] == 1.0


def _store_user_totals(
    experiments: ExperimentStore, experiment: Experiment, variant: str, users: dict[str, tuple[int, int]]
) -> None:
    """Per-user impressions and clicks of one variant, as the impression and claim scripts leave them."""
    store = experiments.impressions

    def write(client: Any) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.hset(
            store.experiment_user_key(experiment.id, variant, "impressions"),
            mapping={u: n for u, (n, _) in users.items()},
        )
        clicked = {u: x for u, (_, x) in users.items() if x}
        if clicked:
            pipe.hset(store.experiment_user_key(experiment.id, variant, "click"), mapping=clicked)
        pipe.hset(
            experiments.counters_key(experiment.id, variant),
            mapping={
                "impressions": sum(n for n, _ in users.values()),
                "click": sum(x for _, x in users.values()),
            },
        )
        pipe.execute()

    store.run(write)


@embedded_only
def test_an_aa_experiment_with_clustered_users_is_significant_about_one_time_in_twenty(
    experiments: ExperimentStore,
) -> None:
    """400 A/A experiments, 100 users per variant, each user with their own CTR (Beta(0.5, 2), mean
    0.2) and 1 + Poisson(10) impressions; the results read back from the store. Treating every
    impression as independent (the test before) gave p < 0.05 in about 30% of them."""
    rng = np.random.default_rng(20261207)
    runs, significant = 400, 0
    for run in range(runs):
        experiment = Experiment(f"aa-{run}", "aa", "user", TWO_ARMS, "running", 0, per_user=True)
        for arm in TWO_ARMS:
            shown = rng.poisson(10, 100) + 1
            clicks = rng.binomial(shown, rng.beta(0.5, 2.0, 100))
            totals = {
                f"{arm.name}-u{i}": (int(n), int(x))
                for i, (n, x) in enumerate(zip(shown, clicks, strict=True))
            }
            _store_user_totals(experiments, experiment, arm.name, totals)
        report = results(experiment, experiments.counters(experiment), experiments.user_sums(experiment))
        p_value = report["variants"][1]["vs_control"]["ctr"]["p_value"]
        assert p_value is not None
        significant += p_value < 0.05
    assert 0.02 <= significant / runs <= 0.08, significant


@embedded_only
def test_a_split_unlike_the_traffic_shares_is_flagged(experiments: ExperimentStore) -> None:
    for name, (a, b), mismatch in [("srm", (600, 400), True), ("even", (510, 490), False)]:
        experiment = Experiment(name, name, "user", TWO_ARMS, "running", 0, per_user=True)
        _store_user_totals(experiments, experiment, "a", {f"a{i}": (2, 0) for i in range(a)})
        _store_user_totals(experiments, experiment, "b", {f"b{i}": (2, 1) for i in range(b)})
        report = results(experiment, experiments.counters(experiment), experiments.user_sums(experiment))
        assert report["sample_ratio_users"] == [a, b]
        assert report["sample_ratio_mismatch"] is mismatch
        assert report["sample_ratio_p"] == pytest.approx(stats.chisquare([a, b]).pvalue, rel=1e-5)


@embedded_only
def test_an_experiment_from_before_per_user_totals_answers_null_differences_and_sample_ratio(
    experiments: ExperimentStore,
) -> None:
    # An experiment running across the 2026-12-07 upgrade has per-user totals only from the deploy
    # on: its differences would compare the later users only, so none is answered.
    started = experiments.create("new", TWO_ARMS)
    experiments.stop(started)
    assert started.per_user and experiments.get(started.id) is not None
    assert experiments.get(started.id).per_user  # type: ignore[union-attr]
    old = {**started.as_dict(), "id": "exp-old"}
    del old["per_user"], old["per_user_sums"]  # a definition stored before the fields existed
    experiment = Experiment.from_json(json.dumps(old))
    assert experiment.per_user is False and experiment.per_user_sums is False
    _store_user_totals(experiments, experiment, "a", {f"a{i}": (5, 1) for i in range(50)})
    _store_user_totals(experiments, experiment, "b", {f"b{i}": (5, 3) for i in range(50)})
    report = results(experiment, experiments.counters(experiment), experiments.user_sums(experiment))
    assert report["per_user"] is False and report["variants"][1]["ctr"]["value"] == 0.6
    assert all(d["difference"] is None for d in report["variants"][1]["vs_control"].values())
    assert report["sample_ratio_users"] is None and report["sample_ratio_p"] is None
    assert report["sample_ratio_mismatch"] is False
    counted = results(started, experiments.counters(experiment), experiments.user_sums(experiment))
    assert counted["variants"][1]["vs_control"]["ctr"]["difference"] == pytest.approx(0.4)
    assert counted["sample_ratio_users"] == [50, 50]


@embedded_only
def test_per_user_totals_are_written_once_with_the_counters_and_erased_with_the_user(
    experiments: ExperimentStore,
) -> None:
    store = experiments.impressions
    experiment = experiments.create("per user", TWO_ARMS)
    try:
        at = int(time.time() * 1000)
        ids = {
            user: [
                store.record(
                    surface="recommendations", user_id=user, items=[("i1", 0.9), ("i2", 0.5)], model_version="v",
                    filters={}, experiment=experiment.id, variant="b", now_ms=at + k,
                )
                for k in range(3)
            ]
            for user in ("u1", "u2")
        }  # fmt: skip
        raw = [
            {"event_id": f"c-{uuid.uuid4().hex}", "user_id": "u1", "item_id": "i1", "type": "click",
             "ts": at + 10, "recommendation_id": ids["u1"][0]},
            {"event_id": f"p-{uuid.uuid4().hex}", "user_id": "u1", "item_id": "i1", "type": "purchase",
             "ts": at + 11, "recommendation_id": ids["u1"][0], "value": 7.5},
        ]  # fmt: skip
        events, errors = validate_batch(raw, max_skew_s=300)
        assert not errors
        store.settle()
        assert attribute(store, events, max_skew_ms=0, now_ms=at + 20).attributed == 2
        assert attribute(store, events, max_skew_ms=0, now_ms=at + 20).attributed == 0  # a resend
        totals = experiments.user_totals(experiment)["b"]
        assert totals.users == 2 and list(totals.impressions) == [3, 3]
        assert (
            list(totals.click) == [1, 0]
            and list(totals.purchase) == [1, 0]
            and list(totals.revenue) == [7.5, 0]
        )
        assert experiments.user_totals(experiment)["a"].users == 0
        # per-user hashes hold user ids: they expire the impression retention after their last write
        for metric in ("impressions", "click", "purchase", "revenue"):
            key = store.experiment_user_key(experiment.id, "b", metric)
            ttl = store.run(lambda client, key=key: client.pttl(key))
            assert store.retention_ms - 60_000 < ttl <= store.retention_ms, (metric, ttl)

        store.erase_user("u1", int(time.time() * 1000))
        totals = experiments.user_totals(experiment)["b"]
        assert totals.users == 1 and list(totals.impressions) == [3] and list(totals.revenue) == [0]
        for metric in PER_USER_METRICS:
            key = store.experiment_user_key(experiment.id, "b", metric)
            assert not store.run(lambda client, key=key: client.hexists(key, "u1"))

        # A variant's per-user hashes share one lifetime, so none outlives the totals its sums go
        # with: a claim renews the impressions hash, an impression the outcome hashes.
        def shortened(metric: str) -> str:
            key = store.experiment_user_key(experiment.id, "b", metric)
            store.run(lambda client: client.pexpire(key, 5_000))
            return key

        def renewed(key: str) -> bool:
            return store.run(lambda client: client.pttl(key)) > store.retention_ms - 60_000

        impressions_key = shortened("impressions")
        later = int(time.time() * 1000)
        events, errors = validate_batch(
            [{"event_id": f"k-{uuid.uuid4().hex}", "user_id": "u2", "item_id": "i1", "type": "cart",
              "ts": later, "recommendation_id": ids["u2"][0]}],
            max_skew_s=300,
        )  # fmt: skip
        assert not errors and attribute(store, events, max_skew_ms=0, now_ms=later + 1).attributed == 1
        assert renewed(impressions_key)
        click_key = shortened("click")
        store.record(
            surface="recommendations", user_id="u2", items=[("i1", 0.9)], model_version="v", filters={},
            experiment=experiment.id, variant="b", now_ms=later + 2,
        )  # fmt: skip
        store.settle()
        assert renewed(click_key)
    finally:
        experiments.stop(experiment)


def _reference_difference(
    x1: np.ndarray, n1: np.ndarray, x0: np.ndarray, n0: np.ndarray
) -> tuple[float, float]:
    """Σx/Σn of one variant minus the control's, and its standard error, from per-user totals as
    the results computed them before the sums over users were kept (the residuals' variance)."""

    def variance(x: np.ndarray, n: np.ndarray) -> float:
        return float(np.var(x - x.sum() / n.sum() * n, ddof=1) / (len(n) * n.mean() ** 2))

    return float(x1.sum() / n1.sum() - x0.sum() / n0.sum()), math.sqrt(variance(x1, n1) + variance(x0, n0))


def _serve_and_attribute(
    store: ImpressionStore, experiment: Experiment, rng: np.random.Generator, at: int, users: list[str]
) -> None:
    """Each user is shown 1 to 4 impressions of their variant ("a" or "b", their id's first letter);
    some are clicked (a few twice), carted or bought (some twice, with revenue); all attributed."""
    raw = []
    for user in users:
        for k in range(int(rng.integers(1, 5))):
            rid = store.record(
                surface="recommendations", user_id=user, items=[("i1", 0.9), ("i2", 0.5)], model_version="v",
                filters={}, experiment=experiment.id, variant=user[0], now_ms=at + k,
            )  # fmt: skip
            for kind, chance, times in (("click", 0.5, 2), ("cart", 0.3, 1), ("purchase", 0.25, 2)):
                if rng.random() < chance:
                    for _ in range(int(rng.integers(1, times + 1))):
                        event = {"event_id": f"{kind}-{uuid.uuid4().hex}", "user_id": user, "item_id": "i1",
                                 "type": kind, "ts": at + 10 + len(raw), "recommendation_id": rid}  # fmt: skip
                        if kind == "purchase":
                            event["value"] = round(float(rng.uniform(1, 80)), 2)
                        raw.append(event)
    events, errors = validate_batch(raw, max_skew_s=300)
    assert not errors
    store.settle()
    assert attribute(store, events, max_skew_ms=0, now_ms=at + 20).attributed == len(raw)


@embedded_only
def test_results_read_sums_over_users_equal_to_those_of_the_per_user_totals(
    experiments: ExperimentStore,
) -> None:
    # The results read a few sums per variant, kept by the scripts that write the per-user totals,
    # not the totals (a scan of every user's on each read): after impressions, attributed outcomes
    # with revenue (then more impressions of users with outcomes) and erasures, they are the sums of
    # the totals, and the differences are those computed from the totals.
    rng = np.random.default_rng(20261207)
    users = [f"{arm}{i}" for arm in "ab" for i in range(12)]
    store, experiment = experiments.impressions, experiments.create("sums", TWO_ARMS)
    assert experiment.per_user_sums and experiments.get(experiment.id).per_user_sums  # type: ignore[union-attr]
    try:
        _serve_and_attribute(store, experiment, rng, int(time.time() * 1000), users)
        _serve_and_attribute(store, experiment, rng, int(time.time() * 1000), users[::2])
        for user in ("a0", "b1", "b2"):
            store.erase_user(user, int(time.time() * 1000))
        sums, totals = experiments.user_sums(experiment), experiments.user_totals(experiment)
        assert [totals[arm].users for arm in "ab"] == [11, 10]
        for arm in "ab":
            one, n = sums[arm], totals[arm].impressions
            assert (one.users, one.n, one.n_sq) == (totals[arm].users, n.sum(), n @ n)
            for metric in PER_USER_METRICS[1:]:
                x = getattr(totals[arm], metric)
                assert x.sum() > 0, (arm, metric)
                assert one.metrics[metric] == pytest.approx((x.sum(), x @ x, x @ n), rel=1e-9)
                if metric != "revenue":  # counts are exact
                    assert one.metrics[metric] == (x.sum(), x @ x, x @ n)

        report = results(experiment, experiments.counters(experiment), sums)
        assert report["sample_ratio_users"] == [11, 10]
        b, a = totals["b"], totals["a"]
        for name, metric in {**RATES, "revenue_per_impression": "revenue"}.items():
            difference, se = _reference_difference(
                getattr(b, metric), b.impressions, getattr(a, metric), a.impressions
            )
            got = report["variants"][1]["vs_control"][name]
            assert got["difference"] == pytest.approx(round(difference, 6), abs=1e-6), name
            assert got["ci_high"] - got["ci_low"] == pytest.approx(2 * 1.959964 * se, abs=1e-5), name
            assert got["p_value"] == pytest.approx(2 * stats.norm.sf(abs(difference) / se), rel=1e-4), name

        # A user's outcome totals deleted behind the sums' back (as no script does) leave the results
        # as they were: they are not read.
        def drop(client: Any) -> None:
            for metric in PER_USER_METRICS[1:]:
                client.hdel(store.experiment_user_key(experiment.id, "b", metric), "b3")

        store.run(drop)
        assert sum(experiments.user_totals(experiment)["b"].click) < sum(totals["b"].click)
        assert (
            results(experiment, experiments.counters(experiment), experiments.user_sums(experiment)) == report
        )
        # A user's impressions written without the sums (an older kgrec's script, mid-upgrade): the
        # users counted beside the totals are not the users holding one, so the totals are read.
        impressions_key = store.experiment_user_key(experiment.id, "b", "impressions")
        store.run(lambda client: client.hset(impressions_key, "b99", 2))
        scanned = {name: UserSums.of(one) for name, one in experiments.user_totals(experiment).items()}
        assert scanned["b"].users == 11 and experiments.user_sums(experiment) == scanned
    finally:
        experiments.stop(experiment)
