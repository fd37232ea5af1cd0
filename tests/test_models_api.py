"""The model-version API over real HTTP on the shared small API: contract, access, validation.

(Promotion changing what serves, and the gate's decisions in the listing, are in
tests/test_promotion_gate.py, on a graph of their own with three versions.)
"""

from __future__ import annotations

import typing
import uuid

import requests

from app.model_schemas import Variant
from kgrec import job_queue
from kgrec.config import Settings
from tests.conftest import SMALL_API_KEY
from tests.openapi_check import undocumented
from tests.processes import ApiProcess
from workers.training.config import VARIANTS

KEY = {"Authorization": f"Bearer {SMALL_API_KEY}"}


def test_the_api_offers_every_training_variant() -> None:
    assert list(typing.get_args(Variant)) == list(VARIANTS)


def test_models_are_listed_as_documented(small_api: ApiProcess) -> None:
    document = requests.get(f"{small_api.url}/openapi.json", timeout=30).json()
    response = requests.get(f"{small_api.url}/v1/models", timeout=30)
    assert response.status_code == 200
    assert undocumented(document, "GET", "/v1/models", 200, response.json()) == []
    (small,) = [v for v in response.json()["versions"] if v["version"] == "small"]
    assert small["status"] == "active"
    assert small["gate"] is None  # trained without the gate
    assert small["parent"] is None  # a full training: no parent, and the time its graph was pulled
    assert small["data_until"] is not None and small["data_until"] <= small["created_at"]
    assert small["artifact_bytes"] > 0
    assert "validation_ndcg@10" in small["metrics"]
    promote = document["paths"]["/v1/models/{version}/promote"]["post"]
    assert promote["security"] == [{"apiKey": ["admin"]}]  # an admin key once KGREC_ADMIN_KEYS is set
    assert {"200", "401", "403", "404", "409"} <= set(promote["responses"])
    train = document["paths"]["/v1/models/train"]["post"]
    assert "requestBody" in train and train["security"] == [{"apiKey": ["admin"]}]


def test_promote_needs_a_key_and_a_version_that_exists(small_api: ApiProcess) -> None:
    document = requests.get(f"{small_api.url}/openapi.json", timeout=30).json()
    assert requests.post(f"{small_api.url}/v1/models/small/promote", timeout=30).status_code == 401
    missing = requests.post(f"{small_api.url}/v1/models/no-such/promote", headers=KEY, timeout=30)
    assert (missing.status_code, missing.json()["field"]) == (404, "version")
    assert undocumented(document, "POST", "/v1/models/{version}/promote", 404, missing.json()) == []
    again = requests.post(f"{small_api.url}/v1/models/small/promote", headers=KEY, timeout=30)
    assert again.status_code == 200  # promoting the active version keeps it active
    assert undocumented(document, "POST", "/v1/models/{version}/promote", 200, again.json()) == []
    assert again.json()["status"] == "active"


def test_train_refuses_bad_fields_naming_them(small_api: ApiProcess) -> None:
    url = f"{small_api.url}/v1/models/train"
    assert requests.post(url, json={}, timeout=30).status_code == 401
    bad = (
        ({"variant": "best"}, "variant"),
        ({"epochs": 0}, "epochs"),
        ({"gate": "x"}, "gate"),
        ({"epochs": "40"}, "epochs"),  # a string is not a number
        ({"gate": "yes"}, "gate"),
        ({"seed": 7.5}, "seed"),
    )
    for body, field in bad:
        refused = requests.post(url, json=body, headers=KEY, timeout=30)
        assert refused.status_code == 422, refused.text
        assert field in refused.text
    unknown = requests.post(url, json={"epoch": 3}, headers=KEY, timeout=30)
    assert unknown.status_code == 422 and "epoch" in unknown.text
    listed = requests.post(url, json=[{"epochs": 3}], headers=KEY, timeout=30)
    assert (listed.status_code, listed.json()["field"]) == (422, "body")


def test_a_queued_job_is_known_and_an_unknown_one_is_404(small_api: ApiProcess, settings: Settings) -> None:
    """Celery says PENDING for any id; the API tells a queued job from one never queued."""
    job_id = str(uuid.uuid4())
    url = f"{small_api.url}/v1/jobs/{job_id}"
    unknown = requests.get(url, timeout=30)
    assert unknown.status_code == 404 and unknown.json()["field"] == "job_id"
    assert job_id in unknown.json()["detail"]
    # what enqueue records before it sends the task (not sent here: no worker should run it)
    job_queue.record_queued(job_queue.job_client(settings), job_id)
    queued = requests.get(url, timeout=30)
    assert queued.status_code == 200 and queued.json() == {"id": job_id, "state": "PENDING"}
