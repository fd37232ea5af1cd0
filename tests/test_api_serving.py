"""The read API over real HTTP: recommendations (filters, exclusion, cold start, pages), explanation
paths (each re-found in the graph and Neo4j-linted), similar items, interests, errors, metrics and
the OpenAPI document validated against every response the tests saw."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from kgrec.config import Settings
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway
from tests.cypher_lint import lint
from tests.processes import ApiProcess
from tests.subsets import beauty_graph
from workers.training.job import run_training
from workers.training.kg_lightgcn import TrainConfig

KEY = "serving-key"
PRICED = 40  # items that get a price before training (Amazon Beauty has none)


@dataclass
class Served:
    """A trained model on a real-data subset, served by gunicorn."""

    api: ApiProcess
    gateway: GraphGateway
    version: str
    # (method, path, template, status, body) of every response, for the OpenAPI check
    seen: list[tuple[str, str, str, int, Any]] = field(default_factory=list)

    def call(
        self, method: str, path: str, template: str, headers: dict | None = None, **params: Any
    ) -> requests.Response:
        """Send a request and remember the response for the OpenAPI check."""
        response = requests.request(
            method, f"{self.api.url}{path}", params=params, headers=headers, timeout=30
        )
        is_json = response.headers.get("Content-Type", "").startswith("application/json")
        self.seen.append(
            (method.lower(), path, template, response.status_code, response.json() if is_json else None)
        )
        return response

    def get(self, path: str, template: str, **params: Any) -> requests.Response:
        """GET and remember the response."""
        return self.call("GET", path, template, **params)

    def cypher(self, query: str, **params: Any) -> list[dict[str, Any]]:
        """An ad-hoc query against the served graph (tests only)."""
        return self.gateway.run_query(query, params)


@pytest.fixture(scope="module")
def served(
    settings: Settings, graph_server: object, shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    if not settings.embedded:
        pytest.skip("runs its own API on the embedded graph")
    tmp = tmp_path_factory.mktemp("serving")
    local, gateway = beauty_graph(settings, shared_data, tmp, users=300, prefix="serve")
    graph_name = local.graph_name
    # Prices for some items, through the events path (the data set has none).
    priced = [
        r["id"]
        for r in gateway.run_query(
            "MATCH (i:Item {listed: true})<-[:INTERACTED]-() RETURN DISTINCT i.id AS id ORDER BY id LIMIT $n",
            {"n": PRICED},
        )
    ]
    now = int(time.time() * 1000)
    events, errors = validate_batch(
        [
            {
                "event_id": f"price-{k}",
                "user_id": "pricing-bot",
                "item_id": item,
                "type": "view",
                "ts": now,
                "item": {"price": float(5 + k)},
            }
            for k, item in enumerate(priced)
        ],
        max_skew_s=300,
    )
    assert not errors
    ingest(gateway, events, local)
    version = run_training(gateway, local, TrainConfig(epochs=2), device="cpu", version="serving")["version"]
    api = ApiProcess(
        {"KGREC_DATA_DIR": str(local.data_dir), "KGREC_GRAPH": graph_name, "KGREC_API_KEYS": KEY},
        log=tmp / "api.log",
    ).start()
    try:
        yield Served(api, gateway, version)
    finally:
        api.stop()
        gateway.close()


def a_user(served: Served, min_items: int = 5) -> str:
    return served.cypher(
        "MATCH (u:User)-[r:INTERACTED]->() WHERE u.id <> 'pricing-bot' WITH u, count(r) AS n "
        "WHERE n >= $n RETURN u.id AS id ORDER BY id LIMIT 1",
        n=min_items,
    )[0]["id"]


def recommend(served: Served, user: str, **params: Any) -> dict[str, Any]:
    response = served.get(
        f"/v1/users/{user}/recommendations", "/v1/users/{user_id}/recommendations", **params
    )
    assert response.status_code == 200, response.text
    return response.json()


def ids(body: dict[str, Any]) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def test_recommendations_exclude_seen_and_page_consistently(served: Served) -> None:
    user = a_user(served)
    seen = {
        r["id"] for r in served.cypher("MATCH (:User {id: $u})-[:INTERACTED]->(i) RETURN i.id AS id", u=user)
    }
    body = recommend(served, user, k=20)
    assert body["model_version"] == served.version and not body["cold_start"]
    assert len(body["items"]) == 20 and not seen & set(ids(body))
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    first, second = recommend(served, user, k=10), recommend(served, user, k=10, offset=10)
    assert ids(first) + ids(second) == ids(body)
    assert body["recommendation_id"] != first["recommendation_id"]
    everything = recommend(served, user, k=100, exclude="none")
    assert seen & set(ids(everything))  # the user's own items are the strongest candidates


def test_exclude_purchased_leaves_out_only_purchases(served: Served) -> None:
    user = a_user(served, min_items=6)
    history = served.cypher(
        "MATCH (:User {id: $u})-[r:INTERACTED]->(i) RETURN i.id AS id, coalesce(r.n_purchase, 0) AS p", u=user
    )
    bought = {r["id"] for r in history if r["p"]}
    assert bought, "Amazon Beauty reviews import as purchases"
    body = recommend(served, user, k=100, exclude="purchased")
    assert not bought & set(ids(body))


def test_brand_category_and_price_filters(served: Served) -> None:
    user = a_user(served)
    brand = served.cypher(
        "MATCH (i:Item)-[:MADE_BY]->(b:Brand) WITH b, count(i) AS n ORDER BY n DESC, b.id LIMIT 1 RETURN b.id AS id"
    )[0]["id"]
    body = recommend(served, user, k=10, brand=brand)
    assert body["items"] and body["filters"] == {"brand": brand}
    brands = served.cypher(
        "UNWIND $ids AS id MATCH (:Item {id: id})-[:MADE_BY]->(b:Brand) RETURN DISTINCT b.id AS id",
        ids=ids(body),
    )
    assert [r["id"] for r in brands] == [brand]

    # A parent category matches items listed only under its subcategories.
    parent = served.cypher(
        "MATCH (c:Category)-[:SUBCATEGORY_OF]->(p:Category) WHERE p.id <> 'Beauty' "
        "WITH p, count(c) AS n ORDER BY n DESC, p.id LIMIT 1 RETURN p.id AS id"
    )[0]["id"]
    body = recommend(served, user, k=50, category=parent)
    assert body["items"]
    inside = served.cypher(
        "UNWIND $ids AS id MATCH (i:Item {id: id})-[:IN_CATEGORY]->(c:Category) "
        "WHERE c.id = $p OR (c)-[:SUBCATEGORY_OF*1..6]->(:Category {id: $p}) RETURN DISTINCT i.id AS id",
        ids=ids(body),
        p=parent,
    )
    assert {r["id"] for r in inside} == set(ids(body))

    body = recommend(served, user, k=100, min_price=10, max_price=20)
    prices = served.cypher("UNWIND $ids AS id MATCH (i:Item {id: id}) RETURN i.price AS price", ids=ids(body))
    assert body["items"] and all(10 <= r["price"] <= 20 for r in prices)
    assert len(body["items"]) <= 11  # prices 10..20 were given to 11 items

    assert recommend(served, user, brand="no-such-brand")["items"] == []


def test_cold_start_unknown_user_and_a_user_with_a_few_events(served: Served) -> None:
    stranger = f"nobody-{uuid.uuid4().hex}"
    cold = recommend(served, stranger, k=10)
    assert cold["cold_start"] is True and len(cold["items"]) == 10
    popular = served.cypher(
        "MATCH (i:Item)<-[r:INTERACTED]-(u:User) WHERE u.id <> 'pricing-bot' "
        "RETURN i.id AS id, count(r) AS n ORDER BY n DESC, id LIMIT 1"
    )[0]["id"]
    assert ids(cold)[0] == popular
    brand = served.cypher("MATCH (:Item {id: $i})-[:MADE_BY]->(b:Brand) RETURN b.id AS id", i=popular)[0][
        "id"
    ]
    filtered = recommend(served, stranger, k=5, brand=brand)
    assert filtered["cold_start"] and ids(filtered)[0] == popular

    newcomer = f"new-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    bought = [r for r in ids(recommend(served, a_user(served), k=40))][-2:]
    events = [
        {
            "event_id": f"{newcomer}-{k}",
            "user_id": newcomer,
            "item_id": item,
            "type": "purchase",
            "ts": now + k,
        }
        for k, item in enumerate(bought)
    ]
    posted = requests.post(
        f"{served.api.url}/v1/events", json=events, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    )
    assert posted.status_code == 200
    warm = recommend(served, newcomer, k=10)
    assert warm["cold_start"] is False and not set(bought) & set(ids(warm))
    assert ids(warm) != ids(recommend(served, stranger, k=10))


def test_every_explanation_path_exists_in_the_graph_and_passes_neo4j_lint(served: Served) -> None:
    user = a_user(served, min_items=6)
    body = recommend(served, user, k=20, explain="true")
    explained = [i for i in body["items"] if i["reason"]]
    assert len(explained) >= 0.9 * len(body["items"])
    cyphers: list[str] = []
    kinds: set[str] = set()
    for item in body["items"][:8]:
        template = "/v1/users/{user_id}/recommendations/{item_id}/explanation"
        response = served.get(f"/v1/users/{user}/recommendations/{item['item_id']}/explanation", template)
        assert response.status_code == 200
        paths = response.json()["paths"]
        assert 1 <= len(paths) <= 3
        assert [p["score"] for p in paths] == sorted((p["score"] for p in paths), reverse=True)
        if item["reason"]:  # the same best path (weights decay between the two requests)
            assert (item["reason"]["cypher"], item["reason"]["kind"]) == (
                paths[0]["cypher"],
                paths[0]["kind"],
            )
        for path in paths:
            kinds.add(path["kind"])
            nodes = path["nodes"]
            assert (
                nodes[0] == {"label": "User", "id": user, "name": user} and nodes[-1]["id"] == item["item_id"]
            )
            assert len(path["relationships"]) == len(nodes) - 1 <= 3
            assert path["sentence"].endswith(".")
            # The path's own Cypher finds exactly that path in the graph.
            found = served.cypher(path["cypher"])
            assert found, path["cypher"]
            cyphers.append(path["cypher"])
    assert kinds >= {"co_purchase"}
    diagnostics = lint([{"name": f"path{k}", "cypher": c, "params": {}} for k, c in enumerate(cyphers)])
    assert {name: d for name, d in diagnostics.items() if d} == {}


def test_explanation_of_an_unknown_item_is_404_and_a_stranger_gets_no_paths(served: Served) -> None:
    template = "/v1/users/{user_id}/recommendations/{item_id}/explanation"
    missing = served.get(f"/v1/users/{a_user(served)}/recommendations/no-such-item/explanation", template)
    assert missing.status_code == 404 and missing.json()["field"] == "item_id"
    item = ids(recommend(served, a_user(served), k=1))[0]
    stranger = served.get(f"/v1/users/nobody-{uuid.uuid4().hex}/recommendations/{item}/explanation", template)
    assert stranger.status_code == 200 and stranger.json()["paths"] == []


def test_similar_items_by_embedding_with_filters(served: Served) -> None:
    item = ids(recommend(served, a_user(served), k=1))[0]
    body = served.get(f"/v1/items/{item}/similar", "/v1/items/{item_id}/similar", k=10).json()
    assert len(body["items"]) == 10 and item not in ids(body)
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(-1.001 <= s <= 1.001 for s in scores)
    brand = served.cypher("MATCH (:Item {id: $i})-[:MADE_BY]->(b:Brand) RETURN b.id AS id", i=item)[0]["id"]
    same = served.get(f"/v1/items/{item}/similar", "/v1/items/{item_id}/similar", k=5, brand=brand).json()
    found = served.cypher(
        "UNWIND $ids AS id MATCH (:Item {id: id})-[:MADE_BY]->(b:Brand) RETURN DISTINCT b.id AS id",
        ids=ids(same),
    )
    assert all(r["id"] == brand for r in found)
    assert served.get("/v1/items/no-such-item/similar", "/v1/items/{item_id}/similar").status_code == 404


def test_interests_are_decayed_sorted_and_driven_by_the_users_items(served: Served) -> None:
    user = a_user(served, min_items=6)
    body = served.get(f"/v1/users/{user}/interests", "/v1/users/{user_id}/interests", k=5).json()
    assert body["brands"] and body["categories"] and len(body["categories"]) <= 5
    own = {
        r["id"] for r in served.cypher("MATCH (:User {id: $u})-[:INTERACTED]->(i) RETURN i.id AS id", u=user)
    }
    for group in (body["brands"], body["categories"]):
        weights = [g["weight"] for g in group]
        assert weights == sorted(weights, reverse=True) and all(w > 0 for w in weights)
        for interest in group:
            assert interest["items"] and {i["item_id"] for i in interest["items"]} <= own
    empty = served.get(
        f"/v1/users/nobody-{uuid.uuid4().hex}/interests", "/v1/users/{user_id}/interests"
    ).json()
    assert empty["brands"] == [] and empty["categories"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"k": 0}, "k"),
        ({"k": 101}, "k"),
        ({"k": "ten"}, "k"),
        ({"offset": -1}, "offset"),
        ({"exclude": "everything"}, "exclude"),
        ({"min_price": "-1"}, "min_price"),
        ({"max_price": "nan"}, "max_price"),
        ({"min_price": "inf"}, "min_price"),
        ({"min_price": 20, "max_price": 10}, "min_price"),
        ({"explain": "maybe"}, "explain"),
        ({"brand": "x" * 300}, "brand"),
    ],
)
def test_invalid_parameters_are_400_naming_the_parameter(served: Served, params: dict, field: str) -> None:
    response = served.get(
        f"/v1/users/{a_user(served)}/recommendations", "/v1/users/{user_id}/recommendations", **params
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "bad_request" and body["field"] == field and field in body["detail"]
    assert "Traceback" not in response.text


def test_metrics_count_requests_per_endpoint_and_name_the_model(served: Served) -> None:
    recommend(served, a_user(served), k=3)
    text = requests.get(f"{served.api.url}/metrics", timeout=10).text
    assert (
        'kgrec_http_requests_total{endpoint="/v1/users/{user_id}/recommendations",method="GET",status="200"}'
        in text
    )
    assert "kgrec_http_request_duration_seconds_bucket" in text
    assert f'kgrec_model_info{{version="{served.version}"}} 1' in text


def test_docs_page_and_its_assets_are_served(served: Served) -> None:
    page = requests.get(f"{served.api.url}/docs", timeout=10)
    assert page.status_code == 200 and "/openapi.json" in page.text
    assert requests.get(f"{served.api.url}/docs/static/swagger-ui-bundle.js", timeout=10).status_code == 200


def test_erasing_a_user_removes_them_their_paths_and_their_share_of_popularity(served: Served) -> None:
    victim = served.cypher(
        "MATCH (u:User)-[r:INTERACTED]->() WHERE u.id <> 'pricing-bot' WITH u, count(r) AS n "
        "WHERE n >= 5 RETURN u.id AS id, n ORDER BY id DESC LIMIT 1"
    )[0]
    user, interactions = victim["id"], victim["n"]
    item = served.cypher(
        # the victim's least popular item: not the most popular one, whose prior is 1 by definition
        "MATCH (:User {id: $u})-[:INTERACTED]->(i:Item)-[:MADE_BY]->(b:Brand) MATCH (i)<-[r:INTERACTED]-() "
        "RETURN i.id AS id, b.id AS brand, count(r) AS n ORDER BY n, id LIMIT 1",
        u=user,
    )[0]
    other = served.cypher(
        "MATCH (:User {id: $u})-[:INTERACTED]->(:Item)<-[:INTERACTED]-(v:User) WHERE v.id <> $u "
        "RETURN v.id AS id ORDER BY id LIMIT 1",
        u=user,
    )[0]["id"]
    stranger = f"nobody-{uuid.uuid4().hex}"

    def cold_score() -> float:
        body = recommend(served, stranger, k=100, brand=item["brand"])
        return next(i["score"] for i in body["items"] if i["item_id"] == item["id"])

    before = cold_score()
    template = "/v1/users/{user_id}"
    refused = served.call("DELETE", f"/v1/users/{user}", template)
    assert refused.status_code == 401
    assert served.cypher("MATCH (u:User {id: $u}) RETURN count(u) AS n", u=user)[0]["n"] == 1

    erased = served.call("DELETE", f"/v1/users/{user}", template, headers={"Authorization": f"Bearer {KEY}"})
    assert erased.status_code == 200, erased.text
    body = erased.json()
    assert body["erased"] and body["removed"]["user"] == 1
    assert body["removed"]["interactions"] == interactions and body["removed"]["embeddings"] == 1
    assert body["popularity_adjusted_items"] == interactions
    assert served.cypher("MATCH (u:User {id: $u}) RETURN count(u) AS n", u=user)[0]["n"] == 0

    time.sleep(1.2)  # serving processes look at the active version once a second
    assert cold_score() < before  # the erased user's purchase no longer counts
    for rec in recommend(served, other, k=20, explain="true")["items"]:
        assert all(node["id"] != user for node in (rec["reason"] or {"nodes": []})["nodes"])
    again = served.call("DELETE", f"/v1/users/{user}", template, headers={"Authorization": f"Bearer {KEY}"})
    assert again.status_code == 404


def test_z_openapi_document_is_valid_and_describes_every_response_seen(served: Served) -> None:
    """Runs last in this module: every response the other tests received must match the document."""
    document = requests.get(f"{served.api.url}/openapi.json", timeout=10).json()
    validate(document)
    assert len(served.seen) > 30
    checked = 0
    for method, path, template, status, body in served.seen:
        operation = document["paths"][template][method]
        response = operation["responses"].get(str(status))
        assert response is not None, f"{path}: status {status} is not documented"
        schema = {
            "components": document["components"],
            "allOf": [response["content"]["application/json"]["schema"]],
        }
        errors = [e.message for e in OAS31Validator(schema).iter_errors(body)]
        assert errors == [], f"{path} ({status}): {errors[:3]}"
        checked += 1
    assert checked == len(served.seen)
