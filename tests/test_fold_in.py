"""Fold-in over real HTTP: new events change a user's recommendations at once, without a retrain."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import requests

from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.gateway import open_gateway
from kgrec.importer import import_dataset
from kgrec.migrations import migrate
from tests.processes import ApiProcess
from tests.subsets import amazon_beauty_subset
from workers.training.job import run_training
from workers.training.model import TrainConfig

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
    subset = amazon_beauty_subset(shared_data / "amazon-beauty-kg", tmp_path / "beauty", users=300)
    graph_name = f"fold_{uuid.uuid4().hex[:8]}"
    local = Settings(
        data_dir=settings.data_dir, graph_name=graph_name, shared_data_dir=settings.shared_data_dir
    )
    gateway = open_gateway(local, graph_name=graph_name)
    migrate(gateway)
    import_dataset(gateway, open_dataset(str(subset), local.shared_data_dir), local)
    version = run_training(gateway, local, TrainConfig(epochs=2), device="cpu", version="fold-in")["version"]

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
