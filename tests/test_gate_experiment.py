"""``KGREC_GATE_EXPERIMENT``: a retrained version the gate would promote starts as an experiment variant.

Real trainings (the planted shop of :mod:`tests.planted`) on the session's embedded server, real
experiment store in its Redis. ``v1`` is the first version (promoted: nothing to compare with);
each shopper then buys one more item of their taste, so the gate has fresh users to compare on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.experiments import Experiment, ExperimentStore, Variant
from kgrec.gate_experiments import (
    CANDIDATE,
    CONTROL,
    CandidateExperiment,
    candidate_experiment,
    gate_experiment_id,
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


def running(settings: Settings) -> Experiment | None:
    store = ImpressionStore(settings)
    try:
        return ExperimentStore(store).running()
    finally:
        store.close()


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
    store = ImpressionStore(settings)
    try:
        ExperimentStore(store).stop(experiment)
    finally:
        store.close()
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
    store = ImpressionStore(settings)
    try:
        ExperimentStore(store).stop(resumed)
    finally:
        store.close()
    train_knowing(gateway, settings, "v3", gate=True)
    assert running(settings) is None
