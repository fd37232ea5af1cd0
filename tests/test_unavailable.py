"""Readiness and the read endpoints over real HTTP when they cannot answer: 503 before the first model
and while the graph server is down (each answer as the OpenAPI document describes it), and back to 200
by themselves once a model is active and the server is back."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import requests

from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from tests.conftest import embedded_only
from tests.openapi_check import undocumented
from tests.processes import ApiProcess, graph_errors_total, wait_for
from tests.subsets import beauty_graph
from workers.training.config import TrainConfig
from workers.training.job import run_training

RECOMMENDATIONS = "/v1/users/{user_id}/recommendations"
EXPLANATION = "/v1/users/{user_id}/recommendations/{item_id}/explanation"
SIMILAR = "/v1/items/{item_id}/similar"
INTERESTS = "/v1/users/{user_id}/interests"
MODEL_READS = [RECOMMENDATIONS, EXPLANATION, SIMILAR]  # these need the model
GRAPH_READS = [INTERESTS, "/v1/graph/stats"]  # these only read the graph


def get(api: ApiProcess, document: dict, template: str, user: str, item: str) -> requests.Response:
    """GET one of the read endpoints; its answer must be one the document describes."""
    path = template.format(user_id=user, item_id=item)
    response = requests.get(f"{api.url}{path}", timeout=30)
    assert undocumented(document, "get", template, response.status_code, response.json()) == []
    return response


def refused(response: requests.Response, error: str) -> bool:
    return response.status_code == 503 and response.json()["error"] == error


@embedded_only
def test_reads_answer_503_without_a_model_and_while_the_graph_is_down(
    shared_data: Path, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "var", datasets_dir=shared_data)
    server = EmbeddedServer(settings.data_dir)
    server.start()
    api = None
    try:
        local, gateway = beauty_graph(settings, shared_data, tmp_path, users=50, prefix="down")
        user = gateway.run_query("MATCH (u:User) RETURN u.id AS id ORDER BY id LIMIT 1", {})[0]["id"]
        item = gateway.run_query(
            "MATCH (:User {id: $u})-[:INTERACTED]->(i:Item) RETURN i.id AS id ORDER BY id LIMIT 1",
            {"u": user},
        )[0]["id"]
        api = ApiProcess(
            {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_GRAPH": local.graph_name},
            log=tmp_path / "api.log",
        ).start()
        document = requests.get(f"{api.url}/openapi.json", timeout=30).json()

        # No model yet: the graph answers, but nothing can be ranked.
        ready = requests.get(f"{api.url}/readyz", timeout=30)
        assert refused(ready, "no_model"), ready.text
        assert undocumented(document, "get", "/readyz", 503, ready.json()) == []
        for template in MODEL_READS:
            assert refused(get(api, document, template, user, item), "no_model"), template
        for template in GRAPH_READS:
            assert get(api, document, template, user, item).status_code == 200, template

        with gateway:
            run_training(
                gateway, local, TrainConfig(epochs=1, use_ease=False), device="cpu", version="down-test"
            )
        assert wait_for(f"{api.url}/readyz").json()["model_version"] == "down-test"
        for template in MODEL_READS + GRAPH_READS:
            assert get(api, document, template, user, item).status_code == 200, template

        # The graph server dies: a loaded model does not hide it. Only the graph server: with the
        # impression store down too, a request that re-reads the running experiment from it first
        # is refused as impressions_unavailable (test_impressions_server.py covers that store).
        graph_errors = graph_errors_total(api)
        server.kill_graph()
        ready = requests.get(f"{api.url}/readyz", timeout=30)
        assert refused(ready, "graph_unavailable") and int(ready.headers["Retry-After"]) > 0
        assert undocumented(document, "get", "/readyz", 503, ready.json()) == []
        for template in [RECOMMENDATIONS, EXPLANATION, *GRAPH_READS]:  # they read the graph every time
            response = get(api, document, template, user, item)
            assert refused(response, "graph_unavailable"), f"{template}: {response.text}"
            assert int(response.headers["Retry-After"]) > 0
        # Similar items need only the loaded model, which each process re-checks about once a second.
        deadline = time.monotonic() + 30
        similar = get(api, document, SIMILAR, user, item)
        while not refused(similar, "graph_unavailable") and time.monotonic() < deadline:
            assert similar.status_code == 200, similar.text
            time.sleep(0.1)
            similar = get(api, document, SIMILAR, user, item)
        assert refused(similar, "graph_unavailable") and int(similar.headers["Retry-After"]) > 0
        stranger = get(api, document, RECOMMENDATIONS, f"nobody-{uuid.uuid4().hex}", item)
        assert refused(stranger, "graph_unavailable")  # not popularity from the loaded model
        assert graph_errors_total(api) >= graph_errors + len([RECOMMENDATIONS, EXPLANATION, *GRAPH_READS]) + 3
        assert requests.get(f"{api.url}/healthz", timeout=30).status_code == 200  # the process is alive

        # Back up: the API reconnects by itself.
        server.start()
        assert wait_for(f"{api.url}/readyz").json()["model_version"] == "down-test"
        assert get(api, document, RECOMMENDATIONS, user, item).status_code == 200
    finally:
        if api is not None:
            api.stop()
        server.stop()


@embedded_only
def test_an_audience_export_with_the_graph_down_is_a_503_before_any_byte(tmp_path: Path) -> None:
    """The export's first graph read happened while the body streamed: with the graph down the
    metrics counted a 200, graph_errors_total did not move, and gunicorn sent a bare 500."""
    settings = Settings(data_dir=tmp_path / "var")
    server = EmbeddedServer(settings.data_dir)
    server.start()
    api = None
    key = f"export-{uuid.uuid4().hex}"
    try:
        api = ApiProcess(
            {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_API_KEYS": key}, log=tmp_path / "api.log"
        ).start()
        url, auth = f"{api.url}/v1/audiences/export", {"Authorization": f"Bearer {key}"}
        document = requests.get(f"{api.url}/openapi.json", timeout=30).json()
        assert requests.post(url, json={"brand": "Acme"}, headers=auth, timeout=30).status_code == 200

        graph_errors = graph_errors_total(api)
        server.kill_graph()
        refused = requests.post(url, json={"brand": "Acme"}, headers=auth, timeout=30)
        assert refused.status_code == 503, refused.text[:300]
        assert refused.json()["error"] == "graph_unavailable" and int(refused.headers["Retry-After"]) > 0
        assert undocumented(document, "post", "/v1/audiences/export", 503, refused.json()) == []
        assert graph_errors_total(api) == graph_errors + 1
    finally:
        if api is not None:
            api.stop()
        server.stop()
