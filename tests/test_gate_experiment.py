"""``KGREC_GATE_EXPERIMENT``: a retrained version the gate would promote starts as an experiment variant.

Real trainings (the planted shop of :mod:`tests.planted`) on the session's embedded server, real
experiment store in its Redis. ``v1`` is the first version (promoted: nothing to compare with);
each shopper then buys one more item of their taste, so the gate has fresh users to compare on.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from graph_schema.statements.models import MODEL_VERSIONS
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.experiments import Experiment, ExperimentStore, Variant
from kgrec.gate_experiments import (
    CANDIDATE,
    CONTROL,
    STOPPED_KEPT_MS,
    CandidateExperiment,
    candidate_experiment,
    gate_experiment_id,
    protected_versions,
    taken_experiment,
)
from kgrec.gateway import GraphGateway
from kgrec.impressions import ImpressionStore
from kgrec.model_store import artifact_name, models_dir
from kgrec.model_versions import list_versions
from kgrec.promotion_gate import KEPT, PROMOTED, GateDecision, GateScores
from tests.conftest import embedded_only
from tests.planted import (
    BOUGHT,
    ITEMS_PER_TASTE,
    TASTES,
    TRAIN_USERS,
    event,
    item_id,
    planted_graph,
    train_knowing,
    train_shuffled,
)
from workers.training import job
from workers.training.publish import collect_garbage

pytestmark = embedded_only


@pytest.fixture
def graph(
    settings: Settings, graph_server: EmbeddedServer | None, tmp_path: Path
) -> Iterator[tuple[Settings, GraphGateway]]:
    """The planted shop with ``v1`` active, then one fresh purchase per shopper; the flag on."""
    local = Settings(
        data_dir=settings.data_dir,
        graph_name=f"gatexp_{uuid.uuid4().hex[:8]}",
        datasets_dir=settings.datasets_dir,
    )
    with planted_graph(local, tmp_path / "shop") as gateway:
        assert train_knowing(gateway, local, "v1", gate=True)["gate"]["decision"] == PROMOTED
        time.sleep(0.05)  # the purchases below are newer than v1
        owned = {
            (r["u"], r["i"])
            for r in gateway.run_query(
                "MATCH (u:User)-[:INTERACTED]->(i:Item) RETURN u.id AS u, i.id AS i", {}
            )
        }
        raw = []
        for user in range(TRAIN_USERS):
            shopper = f"shopper-{user}"
            fresh = next(
                item_id(user % TASTES, n)
                for n in range(ITEMS_PER_TASTE)
                if (shopper, item_id(user % TASTES, n)) not in owned
            )
            raw.append(event(f"fresh-{user}", shopper, fresh, "purchase"))
        events, errors = validate_batch(raw, max_skew_s=300)
        assert errors == [] and len(owned) == TRAIN_USERS * BOUGHT
        ingest(gateway, events, local)
        yield local.with_overrides(gate_experiment=True), gateway


@contextmanager
def experiment_store(settings: Settings) -> Iterator[ExperimentStore]:
    """The graph's experiments, in its impression store (closed after)."""
    store = ImpressionStore(settings)
    try:
        yield ExperimentStore(store)
    finally:
        store.close()


def running(settings: Settings) -> Experiment | None:
    with experiment_store(settings) as experiments:
        return experiments.running()


def test_a_promotable_candidate_starts_as_an_experiment_variant_instead_of_replacing_the_active_one(
    graph: tuple[Settings, GraphGateway],
) -> None:
    settings, gateway = graph
    assert running(settings) is None
    summary = train_knowing(gateway, settings, "v2", gate=True)
    assert summary["gate"]["decision"] == PROMOTED
    experiment = running(settings)
    assert experiment is not None
    assert experiment.variants == (Variant(CONTROL, "v1", 0.5), Variant(CANDIDATE, "v2", 0.5))
    assert summary["gate"]["reason"].endswith(
        f"; started as variant 'candidate' of experiment {experiment.id} against v1 instead of replacing it"
    )
    listed = {v["version"]: v for v in list_versions(gateway, settings.data_dir)}
    assert (listed["v1"]["status"], listed["v2"]["status"]) == ("active", "candidate")
    assert listed["v2"]["gate"]["reason"] == summary["gate"]["reason"]  # recorded on the version
    # a redelivered job leaves the candidate the hook took a candidate (its promotion is the experiment's)
    assert train_knowing(gateway, settings, "v2", gate=True)["active"] is False
    assert {v["version"]: v["status"] for v in list_versions(gateway, settings.data_dir)}["v2"] == "candidate"

    # A redelivered job finds its experiment running: the same one, no conflict.
    scores = GateScores({"ndcg@10": 0.2}, {"ndcg@10": 0.1}, "v1", 100, 0.02, 30)
    again = candidate_experiment(settings)("v2", GateDecision(PROMOTED, "r", scores))
    assert again is not None and experiment.id in again and running(settings) == experiment

    # A worse candidate is kept as usual: no experiment for it.
    train_shuffled(gateway, settings, "shuffled", gate=True)
    listed = {v["version"]: v for v in list_versions(gateway, settings.data_dir)}
    assert (
        listed["shuffled"]["gate"]["decision"] == KEPT
        and "experiment" not in listed["shuffled"]["gate"]["reason"]
    )
    assert running(settings) == experiment

    # Another good one while the experiment runs: not activated either, and garbage collection keeps
    # the experiment's versions even when it keeps only one candidate.
    summary = train_knowing(gateway, settings, "v3", gate=True, keep=1)
    assert summary["gate"]["decision"] == PROMOTED
    assert summary["gate"]["reason"].endswith(
        f"; not activated: experiment {experiment.id} is running, so it could not start as a variant "
        "(promote it by hand, or retrain after that experiment)"
    )
    assert summary["removed_versions"] == ["shuffled"]
    listed = {v["version"]: v for v in list_versions(gateway, settings.data_dir)}
    assert {name: v["status"] for name, v in listed.items()} == {
        "v3": "candidate",
        "v2": "candidate",
        "v1": "active",
    }
    assert (settings.data_dir / "models" / listed["v2"]["artifact"]).is_file()


def test_without_the_flag_the_gate_promotes_as_before(graph: tuple[Settings, GraphGateway]) -> None:
    settings, gateway = graph
    plain = settings.with_overrides(gate_experiment=False)
    assert train_knowing(gateway, plain, "v2", gate=True)["gate"]["reason"].startswith("validation NDCG@10 ")
    assert running(plain) is None
    assert {v["version"]: v["status"] for v in list_versions(gateway, plain.data_dir)}["v2"] == "active"


class WorkerDied(Exception):
    """The training's worker is killed here."""


def test_an_experiment_serves_a_candidate_only_once_its_decision_is_recorded(
    graph: tuple[Settings, GraphGateway], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hook started the experiment before the owner-checked record of the gate's decision: a job
    # that died between the two left the version open (no decision), so its redelivery re-claimed
    # it, trained and wrote a new artifact, and reused the running experiment: processes that had
    # loaded the first artifact served another model than later ones under the same variant.
    settings, gateway = graph
    folder = models_dir(settings.data_dir)

    def dies(*_args: object, **_kwargs: object) -> None:
        raise WorkerDied

    with monkeypatch.context() as patch:
        patch.setattr(job, "record_gate_decision", dies)
        with pytest.raises(WorkerDied):
            train_knowing(gateway, settings, "v2", gate=True)
    assert running(settings) is None  # nothing serves a version its redelivery may write again
    summary = train_knowing(gateway, settings, "v2", gate=True)  # the redelivery
    experiment = running(settings)
    assert experiment is not None and experiment.id == gate_experiment_id("v2")
    assert experiment.id in summary["gate"]["reason"]

    # Killed after the record, before the experiment started: the redelivery starts it (the one
    # the reason names) without training the version again; later ones change nothing.
    with experiment_store(settings) as experiments:
        experiments.stop(experiment)
    with monkeypatch.context() as patch:
        patch.setattr(CandidateExperiment, "start", dies)
        with pytest.raises(WorkerDied):
            train_knowing(gateway, settings, "v3", gate=True)
    assert running(settings) is None
    artifact = folder / artifact_name("v3")
    written = artifact.stat().st_mtime_ns
    again = train_knowing(gateway, settings, "v3", gate=True)
    assert again["already_published"] and gate_experiment_id("v3") in again["gate"]["reason"]
    resumed = running(settings)
    assert resumed is not None and resumed.id == gate_experiment_id("v3")
    assert resumed.variants == (Variant(CONTROL, "v1", 0.5), Variant(CANDIDATE, "v3", 0.5))
    assert artifact.stat().st_mtime_ns == written
    assert train_knowing(gateway, settings, "v3", gate=True) == again and running(settings) == resumed
    # once stopped it stays stopped: a redelivery never starts it again
    with experiment_store(settings) as experiments:
        experiments.stop(resumed)
    train_knowing(gateway, settings, "v3", gate=True)
    assert running(settings) is None


def test_a_redelivery_starts_the_experiment_the_decision_recorded_not_one_its_reason_names(
    graph: tuple[Settings, GraphGateway],
) -> None:
    # The job and its redelivery decided whether the gate planned the version's own experiment by
    # finding its id in the recorded reason, a sentence: another hook's sentence that named it made
    # a redelivery start an experiment nobody planned. They read the recorded experiment now.
    settings, gateway = graph

    def own_hook(version: str, decision: GateDecision) -> str | None:
        return (
            f"held for review (no experiment {gate_experiment_id(version)} started)"
            if decision.promoted
            else None
        )

    summary = train_knowing(gateway, settings, "v2", gate=True, on_decision=own_hook)
    assert summary["gate"]["decision"] == PROMOTED and gate_experiment_id("v2") in summary["gate"]["reason"]
    assert running(settings) is None
    again = train_knowing(gateway, settings, "v2", gate=True)  # a redelivery
    assert again["already_published"] and again["active"] is False
    assert running(settings) is None
    (row,) = [v for v in gateway.read(MODEL_VERSIONS) if v["id"] == "v2"]
    assert row["gate_taken"] and taken_experiment(row) is None

    # A decision recorded before `gate_experiment` existed: its reason named the experiment the hook
    # planned (the one place it is still read), so the redelivery starts that one.
    with pytest.raises(WorkerDied), pytest.MonkeyPatch.context() as patch:
        patch.setattr(CandidateExperiment, "start", _dies)
        train_knowing(gateway, settings, "v3", gate=True)
    gateway.run_query("MATCH (m:ModelVersion {id: 'v3'}) REMOVE m.gate_experiment", {})
    (row,) = [v for v in gateway.read(MODEL_VERSIONS) if v["id"] == "v3"]
    assert row["gate_experiment"] is None and taken_experiment(row) == gate_experiment_id("v3")
    train_knowing(gateway, settings, "v3", gate=True)
    resumed = running(settings)
    assert resumed is not None and resumed.id == gate_experiment_id("v3")


def _dies(*_args: object, **_kwargs: object) -> None:
    raise WorkerDied


def stop(settings: Settings, experiment: Experiment, days_ago: float = 0.0) -> None:
    """Stop ``experiment`` (``days_ago``: as if stopped that long ago)."""
    with experiment_store(settings) as experiments:
        stopped = experiments.stop(experiment)
        assert stopped.stopped_at is not None
        aged = json.dumps({**stopped.as_dict(), "stopped_at": stopped.stopped_at - days_ago * 86_400_000})
        experiments.impressions.run(lambda client: client.hset(experiments.definitions, experiment.id, aged))


def test_garbage_collection_keeps_a_stopped_experiments_versions_until_they_are_acted_on(
    graph: tuple[Settings, GraphGateway],
) -> None:
    # Only the running experiment's versions were kept: stopped, its variant's version (a gated
    # candidate past the kept ones) went with the next training, and "stop, read the results,
    # promote the winner" found no version to promote. The protection was also read once before
    # the deletions, so an experiment started meanwhile on a version could see it deleted.
    settings, gateway = graph
    folder = models_dir(settings.data_dir)
    train_knowing(gateway, settings, "v2", gate=True)
    second = running(settings)
    assert second is not None
    stop(settings, second)
    summary = train_knowing(gateway, settings, "v3", gate=True, keep=1)  # starts v3's experiment
    assert summary["removed_versions"] == []
    assert (folder / artifact_name("v2")).is_file()
    assert {"v2", "v3"} <= {v["version"] for v in list_versions(gateway, settings.data_dir)}

    third = running(settings)
    assert third is not None and third.id == gate_experiment_id("v3")
    stop(settings, third, days_ago=STOPPED_KEPT_MS / 86_400_000 + 1)
    stop(settings, second, days_ago=STOPPED_KEPT_MS / 86_400_000 + 1)
    assert protected_versions(settings) == set()  # neither was promoted within the time they are kept

    # An experiment started on the two while the first's edges are being deleted keeps both: the
    # protection is asked again just before each node and its files go.
    started: list[Experiment] = []

    def protected() -> frozenset[str]:
        found = frozenset(protected_versions(settings))
        if not started:
            with experiment_store(settings) as experiments:
                variants = [Variant("a", "v2", 0.5), Variant("b", "v3", 0.5)]
                started.append(experiments.create("started meanwhile", variants))
        return found

    removed = collect_garbage(gateway, folder, keep=0, protected=protected)
    assert removed == [] and started
    for left in ("v2", "v3"):
        assert (folder / artifact_name(left)).is_file()
        assert left in {v["version"] for v in list_versions(gateway, settings.data_dir)}


def test_a_finished_promotion_of_the_control_frees_the_experiments_versions(
    graph: tuple[Settings, GraphGateway],
) -> None:
    # the control ('active') won: its promotion activates nothing, so it has no activated_at, and
    # its versions were kept for a week as if the promotion were unfinished
    settings, _ = graph
    with experiment_store(settings) as experiments:
        current = experiments.running()
        if current is not None:
            experiments.stop(current)
        variants = [Variant("control", "active", 0.5), Variant("other", "v-lost", 0.5)]
        experiment = experiments.create(f"control wins {uuid.uuid4().hex[:6]}", variants)
        assert "v-lost" in protected_versions(settings)
        promoted = {"variant": "control", "model_version": "active", "activated_at": None}
        claimed, claim = experiments.claim_promotion(experiment, promoted)
        assert claim == 1
        assert "v-lost" in protected_versions(settings)  # claimed, not finished
        experiments.finish_promotion(claimed)
    assert "v-lost" not in protected_versions(settings)


def test_a_candidate_held_back_by_a_pending_promotion_names_the_experiment_being_promoted(
    settings: Settings, graph_server: EmbeddedServer | None
) -> None:
    # A stopped experiment's claimed promotion leaves no running id; the reason recorded before
    # read "experiment None is running".
    local = settings.with_overrides(graph_name=f"gatexp_{uuid.uuid4().hex[:8]}", gate_experiment=True)
    arms = (Variant(CONTROL, "v1", 0.5), Variant(CANDIDATE, "v-x", 0.5))
    with experiment_store(local) as experiments:
        stopped = experiments.stop(experiments.create("stopped", arms))
        claimed, claim = experiments.claim_promotion(stopped, {"variant": CANDIDATE, "model_version": "v-x"})
        assert claim == 1 and experiments.running_id() is None
        try:
            hook = CandidateExperiment(local)
            scores = GateScores({"ndcg@10": 0.2}, {"ndcg@10": 0.1}, "v1", 100, 0.02, 30)
            plan = hook.plan("v9", GateDecision(PROMOTED, "r", scores))
            pending = f"not activated: the promotion of experiment {stopped.id} is under way"
            assert plan.experiment is None and plan.sentence is not None and plan.sentence.startswith(pending)
            why = hook.start("v9", "v1")  # the claim made between the plan and the start
            assert why is not None and why.startswith(pending)
        finally:
            experiments.finish_promotion(claimed)
