"""Fold-in over real HTTP: new events change a user's recommendations at once, without a retrain."""

from __future__ import annotations

import random
import string
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests

from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway
from kgrec.importer import import_dataset
from kgrec.job_queue import FOLD_IN_ITEMS, job_client
from kgrec_cli.stack import worker_argv
from tests.processes import ApiProcess, background
from tests.subsets import amazon_beauty_subset, beauty_graph
from workers.training import item_fold_in
from workers.training.config import TrainConfig
from workers.training.item_fold_in import BASIS_SUFFIX, FoldInBasis, embed_new_items, loaded_basis, sweep_page
from workers.training.job import run_training

KEY = "fold-in-key"


def categories_of(gateway: object, items: list[str]) -> dict[str, set[str]]:
    rows = gateway.run_query(  # type: ignore[attr-defined]
        "UNWIND $ids AS id MATCH (i:Item {id: id})-[:IN_CATEGORY]->(c:Category) "
        "RETURN id, collect(c.id) AS cats",
        {"ids": items},
    )
    return {r["id"]: set(r["cats"]) for r in rows}


def test_a_sudden_purchase_in_a_new_category_shows_up_without_retraining(
    settings: Settings, graph_server: object, shared_data: Path, tmp_path: Path
) -> None:
    if not settings.embedded:
        pytest.skip("runs its own API on the embedded graph")
    local, gateway = beauty_graph(settings, shared_data, tmp_path, users=300, prefix="fold")
    graph_name = local.graph_name
    version = run_training(
        gateway, local, TrainConfig(epochs=2, use_ease=False), device="cpu", version="fold-in"
    )["version"]

    # A user who never bought fragrance, and the catalogue's fragrance items.
    fragrance = [
        r["id"]
        for r in gateway.run_query(
            "MATCH (i:Item {listed: true})-[:IN_CATEGORY]->(:Category {id: 'Fragrance'}) "
            "MATCH (i)<-[:INTERACTED]-() RETURN DISTINCT i.id AS id ORDER BY id LIMIT 3",
            {},
        )
    ]
    user = gateway.run_query(
        "MATCH (u:User)-[:INTERACTED]->(:Item) WHERE NOT (u)-[:INTERACTED]->(:Item)-[:IN_CATEGORY]->"
        "(:Category {id: 'Fragrance'}) RETURN u.id AS id ORDER BY id LIMIT 1",
        {},
    )[0]["id"]
    assert len(fragrance) == 3

    api = ApiProcess(
        {"KGREC_DATA_DIR": str(local.data_dir), "KGREC_GRAPH": graph_name, "KGREC_API_KEYS": KEY},
        log=tmp_path / "api.log",
    ).start()
    try:
        url = f"{api.url}/v1/users/{user}/recommendations?k=20"
        before = requests.get(url, timeout=30).json()
        assert before["model_version"] == version and not before["cold_start"]
        before_items = [r["item_id"] for r in before["items"]]
        share_before = sum("Fragrance" in c for c in categories_of(gateway, before_items).values())

        now = int(time.time() * 1000)
        events = [
            {"event_id": f"buy-{i}", "user_id": user, "item_id": item, "type": "purchase", "ts": now + i}
            for i, item in enumerate(fragrance)
        ]
        posted = requests.post(
            f"{api.url}/v1/events", json=events, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
        )
        assert posted.json()["applied"] == 3

        after = requests.get(url, timeout=30).json()
        assert after["model_version"] == version  # no retraining happened
        after_items = [r["item_id"] for r in after["items"]]
        assert not set(fragrance) & set(after_items)  # bought items are excluded as seen
        share_after = sum("Fragrance" in c for c in categories_of(gateway, after_items).values())
        assert share_after >= 5 and share_after > share_before

        newcomer = requests.get(
            f"{api.url}/v1/users/nobody-{uuid.uuid4().hex}/recommendations?k=5", timeout=30
        ).json()
        assert newcomer["cold_start"] is True and len(newcomer["items"]) == 5
    finally:
        api.stop()
        gateway.close()


def test_new_items_are_folded_in_from_text_brand_and_categories_by_a_worker(
    broker_graph: tuple[dict[str, str], Settings, object], shared_data: Path, tmp_path: Path
) -> None:
    env, local, gateway = broker_graph
    subset = amazon_beauty_subset(shared_data / "amazon-beauty-kg", tmp_path / "beauty", users=300)
    import_dataset(gateway, open_dataset(str(subset), local.datasets_dir), local)  # type: ignore[arg-type]
    version = run_training(
        gateway, local, TrainConfig(epochs=2, use_ease=False), device="cpu", version="items"
    )["version"]  # type: ignore[arg-type]
    # A brand with several trained items, and the categories of one of them.
    chosen = gateway.run_query(  # type: ignore[attr-defined]
        "MATCH (i:Item {listed: true})-[:MADE_BY]->(b:Brand) WITH b, collect(i.id) AS items "
        "WHERE size(items) >= 3 RETURN b.id AS brand, items[0] AS item ORDER BY size(items) DESC, brand LIMIT 1",
        {},
    )[0]
    brand, model_item = chosen["brand"], chosen["item"]
    path = [
        r["id"]
        for r in gateway.run_query(  # type: ignore[attr-defined]
            "MATCH (:Item {id: $i})-[:IN_CATEGORY]->(c:Category) "
            "OPTIONAL MATCH (c)-[:SUBCATEGORY_OF*1..6]->(up:Category) "
            "RETURN c.id AS id, count(up) AS depth ORDER BY depth, id",
            {"i": model_item},
        )
    ]
    new_item = f"new-{uuid.uuid4().hex[:8]}"
    api = ApiProcess({**env, "KGREC_API_KEYS": KEY}, log=tmp_path / "api.log").start()
    try:
        with background(worker_argv(pool="solo"), env, tmp_path / "worker.log"):
            now = int(time.time() * 1000)
            event = {
                "event_id": f"launch-{new_item}",
                "user_id": "shopper-1",
                "item_id": new_item,
                "type": "view",
                "ts": now,
                "item": {"brand": brand, "category": path, "title": f"{brand} new arrival", "price": 12.5},
            }
            posted = requests.post(
                f"{api.url}/v1/events", json=[event], headers={"Authorization": f"Bearer {KEY}"}, timeout=30
            )
            assert posted.status_code == 200
            # The API enqueued the fold-in; the worker writes the embedding; serving picks it up.
            deadline = time.monotonic() + 120
            similar = requests.get(f"{api.url}/v1/items/{new_item}/similar?k=10", timeout=30)
            while similar.status_code == 404 and time.monotonic() < deadline:
                time.sleep(0.5)
                similar = requests.get(f"{api.url}/v1/items/{new_item}/similar?k=10", timeout=30)
            assert similar.status_code == 200, (tmp_path / "worker.log").read_text()[-3000:]
            assert similar.json()["model_version"] == version  # no retraining
            neighbours = [i["item_id"] for i in similar.json()["items"]]
            same_brand = gateway.run_query(  # type: ignore[attr-defined]
                "UNWIND $ids AS id MATCH (:Item {id: id})-[:MADE_BY]->(:Brand {id: $b}) RETURN count(*) AS n",
                {"ids": neighbours, "b": brand},
            )[0]["n"]
            assert same_brand >= 3  # its brand neighbours are its nearest items
            folded = gateway.run_query(  # type: ignore[attr-defined]
                "MATCH (:ModelVersion {id: $v, active: true})-[e:EMBEDDING]->(:Item {id: $i}) "
                "RETURN e.folded_at AS at, size(e.vector) AS dim",
                {"v": version, "i": new_item},
            )
            assert folded and folded[0]["at"] >= now and folded[0]["dim"] == TrainConfig().dim

            # It can be recommended, and the price and brand filters know it. Each gunicorn worker
            # re-reads the active version at most once a second, so a worker may still be stale
            # for a moment: wait until answers spanning two check intervals all agree.
            def filtered() -> list[str]:
                response = requests.get(
                    f"{api.url}/v1/users/shopper-1/recommendations",
                    params={"k": 100, "brand": brand, "exclude": "none", "min_price": 12, "max_price": 13},
                    timeout=30,
                )
                assert response.status_code == 200, response.text
                return [i["item_id"] for i in response.json()["items"]]

            deadline, agreeing, recommended = time.monotonic() + 10, 0, []
            while agreeing < 10 and time.monotonic() < deadline:
                recommended = filtered()
                agreeing = agreeing + 1 if recommended == [new_item] else 0
                time.sleep(0.2)
            assert agreeing == 10, recommended

            # Items that reached the graph without the API (an import) are found by the sweep.
            events, errors = validate_batch(
                [{**event, "event_id": "launch-2", "item_id": f"{new_item}-b", "user_id": "shopper-2"}],
                max_skew_s=300,
            )
            assert not errors
            ingest(gateway, events, local)  # type: ignore[arg-type]
            # An item an event made with no title, brand or category: folded in from its buyer's history.
            buyer = gateway.run_query(  # type: ignore[attr-defined]
                "MATCH (u:User)-[:INTERACTED]->(:Item)<-[:EMBEDDING]-(:ModelVersion {id: $v}) "
                "RETURN u.id AS id ORDER BY id LIMIT 1",
                {"v": version},
            )[0]["id"]
            bare = {"event_id": "bare-1", "user_id": buyer, "item_id": f"{new_item}-bare", "type": "purchase"}
            events, errors = validate_batch([{**bare, "ts": now}], max_skew_s=300)
            assert not errors
            ingest(gateway, events, local)  # type: ignore[arg-type]
            swept = job_client(local).send_task(FOLD_IN_ITEMS).get(timeout=120)
            assert swept["version"] == version and swept["folded"] >= 2 and swept["skipped"] == 0, swept
            # idempotent, and nothing is left for the next sweep to try again
            assert sweep_page(gateway, "", 10) == []  # type: ignore[arg-type]
            again = job_client(local).send_task(FOLD_IN_ITEMS).get(timeout=120)
            assert again["folded"] == 0
            similar = requests.get(f"{api.url}/v1/items/{new_item}-bare/similar?k=5", timeout=30)
            deadline = time.monotonic() + 10
            while similar.status_code == 404 and time.monotonic() < deadline:
                time.sleep(0.2)
                similar = requests.get(f"{api.url}/v1/items/{new_item}-bare/similar?k=5", timeout=30)
            assert similar.status_code == 200, similar.text

            # Items the sweep cannot fold in (no facts, and a buyer with no known history) sort
            # first; a sweep goes on after them, so they never hold back an item it can fold in.
            strays = [
                {
                    "event_id": f"stray-{n}",
                    "user_id": f"stranger-{n}",
                    "item_id": f"!stray-{n}",
                    "type": "view",
                }
                for n in (1, 2)
            ]
            late = {**event, "event_id": "launch-late", "item_id": f"{new_item}-late", "user_id": "shopper-3"}
            events, errors = validate_batch([{**e, "ts": now} for e in [*strays, late]], max_skew_s=300)
            assert not errors
            ingest(gateway, events, local)  # type: ignore[arg-type]
            sweeps = [
                job_client(local).send_task(FOLD_IN_ITEMS, kwargs={"limit": 1}).get(timeout=120)
                for _ in range(3)
            ]
            assert [(s["folded"], s["skipped"]) for s in sweeps] == [(0, 1), (0, 1), (1, 0)], sweeps
            assert sweep_page(gateway, "", 10) == [  # type: ignore[arg-type]
                "!stray-1",
                "!stray-2",
            ]
    finally:
        api.stop()


def test_a_fold_in_request_for_a_trained_item_leaves_its_trained_vector(
    settings: Settings, graph_server: object, shared_data: Path, tmp_path: Path
) -> None:
    """The API asks for the fold-in of items unknown to the model it holds, which may be the version
    before the active one (for up to a second, or an artifact load). The worker folded them in under
    the active version whether or not it was trained on them: its trained vector was replaced by a
    folded one (and copied so into every incremental child)."""
    local, gateway = beauty_graph(settings, shared_data, tmp_path, users=60, prefix="trained")
    with gateway:
        version = run_training(
            gateway, local, TrainConfig(epochs=2, use_ease=False), device="cpu", version="trained"
        )["version"]
        item, brand = next(
            (r["id"], r["brand"])
            for r in gateway.run_query(
                "MATCH (:ModelVersion {id: $v})-[:EMBEDDING]->(i:Item)-[:MADE_BY]->(b:Brand) "
                "RETURN i.id AS id, b.id AS brand ORDER BY id LIMIT 1",
                {"v": version},
            )
        )

        def held() -> list[dict[str, object]]:
            return gateway.run_query(
                "MATCH (m:ModelVersion {id: $v})-[e:EMBEDDING]->(i:Item {id: $i}) "
                "OPTIONAL MATCH (i)-[a:ABOUT]->(t:Topic) "
                "RETURN e.vector AS vector, e.folded_at AS folded_at, m.folded_at AS stamp, "
                "collect([t.id, a.version, a.score]) AS about",
                {"v": version, "i": item},
            )

        before = held()
        assert before and before[0]["folded_at"] is None
        gateway.run_query(
            "MATCH (b:Brand {id: $b}) CREATE (:Item {id: 'brand-new', listed: true})-[:MADE_BY]->(b)",
            {"b": brand},
        )
        # the request a process still serving the version before would send for the trained item
        assert embed_new_items(gateway, local, [item, "brand-new"]) == {
            "version": version,
            "folded": 1,
            "skipped": 0,
        }
        assert held() == [{**before[0], "stamp": held()[0]["stamp"]}]  # vector, topics: as trained
        folded = gateway.run_query(
            "MATCH (:ModelVersion {id: $v})-[e:EMBEDDING]->(i:Item) WHERE e.folded_at IS NOT NULL RETURN i.id AS id",
            {"v": version},
        )
        assert folded == [{"id": "brand-new"}]


def test_the_sweep_pages_reach_every_item_whatever_its_id(gateway: GraphGateway) -> None:
    """A page was a keyset range on Item.id, which FalkorDB answers from its index and, over ids
    mixing cases, digits and punctuation, answers wrongly: 1,241 of these 3,000 were never swept."""
    rng = random.Random(3)
    alphabet = string.ascii_letters + string.digits + "-_."
    ids = sorted({"".join(rng.choices(alphabet, k=rng.randint(3, 12))) for _ in range(3000)})
    gateway.run_query("UNWIND $ids AS id CREATE (:Item {id: id, listed: true})", {"ids": ids})
    gateway.run_query("CREATE (:ModelVersion {id: 'sweep', active: true})", {})
    swept: list[str] = []
    after = ""
    while page := sweep_page(gateway, after, 500):
        swept += page
        after = page[-1]
    assert swept == ids


def test_a_worker_reads_each_fold_in_basis_once(tmp_path: Path) -> None:
    """Each fold-in task read its version's basis from disk (the trained items' text vectors:
    about 0.1 GB at 64,000 items); a worker process now keeps the last BASES_KEPT it read."""
    rng = np.random.default_rng(0)

    def written(name: str) -> Path:
        path = tmp_path / f"{name}{BASIS_SUFFIX}"
        FoldInBasis(
            item_embeddings=rng.normal(size=(50, 8)).astype(np.float32),
            text_vectors=rng.normal(size=(50, 384)).astype(np.float32),
            brand_ids=["acme"],
            brand_vectors=np.ones((1, 8), dtype=np.float32),
            category_ids=["lips"],
            category_vectors=np.ones((1, 8), dtype=np.float32),
        ).save(path)
        return path

    first, second, third = (written(f"v-basis-{k}-{uuid.uuid4().hex}") for k in range(3))
    basis = loaded_basis(first)
    assert loaded_basis(first) is basis
    assert basis.typical_norm() == pytest.approx(np.median(np.linalg.norm(basis.item_embeddings, axis=1)))
    assert loaded_basis(second) is not basis and loaded_basis(first) is basis  # both kept
    loaded_basis(third)  # the least recently used, the second, goes
    assert loaded_basis(first) is basis
    assert [p for p in (first, second, third) if p in item_fold_in._bases] == [first, third]
