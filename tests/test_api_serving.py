"""The read API over real HTTP: recommendations (filters, exclusion, cold start, pages), explanation
paths (each re-found in the graph and Neo4j-linted), similar items, interests, errors, metrics and
the OpenAPI document validated against every response the tests saw."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from openapi_spec_validator import validate

from app import create_app
from app.graph import warm_model
from kgrec import job_queue
from kgrec.config import Settings
from kgrec.events.ingest import ingest
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway
from kgrec.limits import MAX_PATHS
from tests.cypher_lint import lint
from tests.openapi_check import undocumented
from tests.processes import ApiProcess
from tests.subsets import beauty_graph
from workers.training.config import TrainConfig
from workers.training.job import run_training

KEY = "serving-key"
PRICED = 40  # items that get a price before training (Amazon Beauty has none)


@dataclass
class Served:
    """A trained model on a real-data subset, served by gunicorn."""

    api: ApiProcess
    gateway: GraphGateway
    version: str
    settings: Settings  # the served graph's and data directory's
    # (method, path, template, status, body) of every response, for the OpenAPI check
    seen: list[tuple[str, str, str, int, Any]] = field(default_factory=list)

    def call(
        self,
        method: str,
        path: str,
        template: str,
        headers: dict | None = None,
        body: Any = None,
        raw: bytes | None = None,
        **params: Any,
    ) -> requests.Response:
        """Send a request (``body`` as JSON, or ``raw`` bytes) and remember the response for the OpenAPI check."""
        response = requests.request(
            method,
            f"{self.api.url}{path}",
            params=params,
            headers=headers,
            json=body,
            data=raw,
            timeout=30,
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
    version = run_training(
        gateway, local, TrainConfig(epochs=2, use_ease=False), device="cpu", version="serving"
    )["version"]
    api = ApiProcess(
        {"KGREC_DATA_DIR": str(local.data_dir), "KGREC_GRAPH": graph_name, "KGREC_API_KEYS": KEY},
        log=tmp / "api.log",
    ).start()
    try:
        yield Served(api, gateway, version, local)
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


def test_the_first_paths_are_the_same_whether_or_not_co_users_are_read(served: Served) -> None:
    # max_paths=MAX_PATHS reads co-users for every item; fewer places skip the read where no co-user
    # path could reach them (kgrec.explanations.co_user_bounds): the places shown must not change.
    user = a_user(served, min_items=6)
    compared = co_user_seen = 0
    for item in ids(recommend(served, user, k=12)):
        full = [(p["cypher"], p["kind"]) for p in explanation_paths(served, user, item)]
        co_user_seen += any(kind == "co_user" for _, kind in full)
        for places in (1, 3):
            response = served.get(
                f"/v1/users/{user}/recommendations/{item}/explanation", EXPLANATION, max_paths=places
            )
            assert response.status_code == 200, response.text
            assert [(p["cypher"], p["kind"]) for p in response.json()["paths"]] == full[:places], (
                item,
                places,
            )
            compared += 1
    assert compared == 24 and co_user_seen > 0


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
    assert same["items"] and same["filters"] == {"brand": brand}
    found = served.cypher(
        "UNWIND $ids AS id MATCH (i:Item {id: id})-[:MADE_BY]->(b:Brand) RETURN i.id AS item, b.id AS brand",
        ids=ids(same),
    )
    assert sorted(r["item"] for r in found) == sorted(ids(same))  # every item has a brand ...
    assert {r["brand"] for r in found} == {brand}  # ... and it is the one asked for
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
    response = requests.get(f"{served.api.url}/metrics", timeout=10)
    assert response.headers["Content-Type"] == "text/plain; version=1.0.0; charset=utf-8"
    text = response.text
    assert (
        'kgrec_http_requests_total{endpoint="/v1/users/{user_id}/recommendations",method="GET",status="200"}'
        in text
    )
    assert "kgrec_http_request_duration_seconds_bucket" in text
    assert f'kgrec_model_info{{version="{served.version}"}} 1' in text
    # a method any client can make up counts as "other": no series per invented method
    for invented in ("FOO", "BARX1"):
        requests.request(invented, f"{served.api.url}/v1/users/{a_user(served)}/recommendations", timeout=10)
    text = requests.get(f"{served.api.url}/metrics", timeout=10).text
    assert 'method="FOO"' not in text and 'method="BARX1"' not in text
    assert 'kgrec_http_requests_total{endpoint="unmatched",method="other",status="405"}' in text


def test_a_worker_loads_the_active_model_before_its_first_request(served: Served) -> None:
    """gunicorn's post_worker_init calls warm_model: no request waits for a model load."""
    app = create_app(served.settings)
    assert app.extensions["kgrec"].held_model_version() is None
    warm_model(app)
    assert app.extensions["kgrec"].held_model_version() == served.version
    # and the version's exploration arms, which a new user's first page would otherwise build
    assert app.extensions["kgrec"].exploration.built_versions() == [served.version]
    # No model yet (another graph): nothing to load, and no error.
    empty = create_app(replace(served.settings, graph_name=f"{served.settings.graph_name}-none"))
    warm_model(empty)
    assert empty.extensions["kgrec"].held_model_version() is None


def test_docs_page_and_its_assets_are_served(served: Served) -> None:
    page = requests.get(f"{served.api.url}/docs", timeout=10)
    assert page.status_code == 200 and "/openapi.json" in page.text
    assert requests.get(f"{served.api.url}/docs/static/swagger-ui-bundle.js", timeout=10).status_code == 200


EXPLANATION = "/v1/users/{user_id}/recommendations/{item_id}/explanation"


def explanation_paths(served: Served, user: str, item: str) -> list[dict[str, Any]]:
    """Every path (up to the maximum the API gives) from ``user`` to ``item``."""
    response = served.get(
        f"/v1/users/{user}/recommendations/{item}/explanation", EXPLANATION, max_paths=MAX_PATHS
    )
    assert response.status_code == 200, response.text
    return response.json()["paths"]


def co_user_paths(paths: list[dict[str, Any]], hub: str) -> list[dict[str, Any]]:
    """The co-user paths that go from the user's item ``hub`` to another user."""
    return [p for p in paths if p["kind"] == "co_user" and p["nodes"][1]["id"] == hub]


def a_path_through_someone(served: Served, spare: set[str]) -> tuple[str, str, dict[str, Any], str]:
    """(user, item, path, witness): a co-user path from user to item (user -> hub <- witness -> item)
    whose witness, not in ``spare`` and one the active model was trained on (not a user another test
    made), is the only user besides ``user`` with both the hub and the item. The path does not name
    the witness: the graph does."""
    candidates = served.cypher(
        "MATCH (v:User)-[:INTERACTED]->(h:Item)<-[:INTERACTED]-(u:User) "
        "WHERE u <> v AND NOT u.id IN $spare AND NOT v.id IN $spare "
        "MATCH (:ModelVersion {active: true})-[:EMBEDDING]->(v) "
        "MATCH (v)-[:INTERACTED]->(i:Item) WHERE i <> h AND NOT (u)-[:INTERACTED]->(i) "
        "MATCH (i)<-[:INTERACTED]-(w:User)-[:INTERACTED]->(h) WHERE w <> u "
        "WITH u, v, h, i, collect(DISTINCT w.id) AS witnesses WHERE size(witnesses) = 1 "
        "RETURN u.id AS user, i.id AS item, h.id AS hub, v.id AS witness "
        "ORDER BY witness DESC, user, item, hub LIMIT 30",
        spare=sorted(spare),
    )
    for row in candidates:  # the path must also rank among the paths the API returns
        for path in co_user_paths(explanation_paths(served, row["user"], row["item"]), row["hub"]):
            assert path["support"] == 1  # the witness is the only one there is
            return row["user"], row["item"], path, row["witness"]
    raise AssertionError(f"no explanation path ran through another user ({len(candidates)} candidates)")


def test_no_explanation_names_another_customer_and_its_cypher_still_finds_the_path(served: Served) -> None:
    spare = {a_user(served, 5), a_user(served, 6), "pricing-bot"}
    user, item, path, witness = a_path_through_someone(served, spare)
    assert path["nodes"][2] == {"label": "User", "id": None, "name": None, "anonymous": True}
    assert [r["weight"] is None for r in path["relationships"]] == [False, True, True]
    assert path["sentence"].startswith("1 other customer who interacted with ")
    found = served.cypher(path["cypher"])
    assert len(found) == 1, path["cypher"]
    # Every customer of the item, not only the witness: none is named, with or without a key.
    others = {
        r["id"]
        for r in served.cypher("MATCH (:Item {id: $i})<-[:INTERACTED]-(v:User) RETURN v.id AS id", i=item)
    } - {user}
    assert witness in others
    template = "/v1/users/{user_id}/recommendations/{item_id}/explanation"
    for headers in (None, {"Authorization": f"Bearer {KEY}"}):
        answers = [
            served.call(
                "GET",
                f"/v1/users/{user}/recommendations/{item}/explanation",
                template,
                headers=headers,
                max_paths=MAX_PATHS,
            ),
            served.call(
                "GET",
                f"/v1/users/{user}/recommendations",
                "/v1/users/{user_id}/recommendations",
                headers=headers,
                k=20,
                explain="true",
            ),
        ]
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert [o for o in others if o in answer.text] == []
        assert any(p["kind"] == "co_user" for p in answers[0].json()["paths"])


def test_erasing_a_user_removes_them_their_paths_and_their_share_of_popularity(served: Served) -> None:
    # Tests that pick "a user" keep theirs; the pricing bot keeps the prices.
    spare = {a_user(served, 5), a_user(served, 6), "pricing-bot"}
    other, target, path, user = a_path_through_someone(served, spare)
    hub = path["nodes"][1]["id"]
    interactions = served.cypher("MATCH (:User {id: $u})-[r:INTERACTED]->() RETURN count(r) AS n", u=user)[0][
        "n"
    ]
    item = served.cypher(
        # the victim's least popular item: not the most popular one, whose prior is 1 by definition
        "MATCH (:User {id: $u})-[:INTERACTED]->(i:Item)-[:MADE_BY]->(b:Brand) MATCH (i)<-[r:INTERACTED]-() "
        "RETURN i.id AS id, b.id AS brand, count(r) AS n ORDER BY n, id LIMIT 1",
        u=user,
    )[0]
    own = next(i for i in recommend(served, user, k=20, explain="true")["items"] if i["reason"])["item_id"]
    stranger = f"nobody-{uuid.uuid4().hex}"

    def cold_score() -> float:
        body = recommend(served, stranger, k=100, brand=item["brand"])
        return next(i["score"] for i in body["items"] if i["item_id"] == item["id"])

    # Before: a path of another user runs through the victim, and the victim has paths of their own.
    assert co_user_paths(explanation_paths(served, other, target), hub)
    assert explanation_paths(served, user, own)
    before = cold_score()

    template = "/v1/users/{user_id}"
    for headers in (None, {"Authorization": "Bearer not-the-key"}, {"Authorization": f"Basic {KEY}"}):
        refused = served.call("DELETE", f"/v1/users/{user}", template, headers=headers)
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    assert served.cypher("MATCH (u:User {id: $u}) RETURN count(u) AS n", u=user)[0]["n"] == 1
    assert co_user_paths(explanation_paths(served, other, target), hub)  # nothing erased

    erased = served.call("DELETE", f"/v1/users/{user}", template, headers={"Authorization": f"Bearer {KEY}"})
    assert erased.status_code == 200, erased.text
    body = erased.json()
    assert body["erased"] and body["removed"]["user"] == 1
    assert body["removed"]["interactions"] == interactions and body["removed"]["embeddings"] == 1
    assert body["popularity_adjusted_items"] == interactions
    assert served.cypher("MATCH (u:User {id: $u}) RETURN count(u) AS n", u=user)[0]["n"] == 0

    # After: no path runs through the victim (the hub had no other witness), nor any of their own.
    after_paths = explanation_paths(served, other, target)
    assert co_user_paths(after_paths, hub) == []
    assert explanation_paths(served, user, own) == []
    for rec in recommend(served, other, k=20, explain="true")["items"]:
        assert all(node["id"] != user for node in (rec["reason"] or {"nodes": []})["nodes"])
    # Serving processes re-read the active version (and its popularity) about once a second.
    deadline = time.monotonic() + 30
    after = cold_score()
    while after >= before and time.monotonic() < deadline:
        time.sleep(0.1)
        after = cold_score()
    assert after < before  # the erased user's purchase no longer counts
    again = served.call("DELETE", f"/v1/users/{user}", template, headers={"Authorization": f"Bearer {KEY}"})
    assert again.status_code == 404


def exercise_every_operation(served: Served) -> list[tuple[str, str, int]]:
    """One request for each answer of each operation this module can provoke; returns (method, template,
    status) of each."""
    first = len(served.seen)
    user = a_user(served)
    item = ids(recommend(served, user, k=1))[0]
    recommendations = "/v1/users/{user_id}/recommendations"
    similar = "/v1/items/{item_id}/similar"
    interests = "/v1/users/{user_id}/interests"
    blank = quote(" ")  # not an id
    served.get("/healthz", "/healthz")
    served.get("/readyz", "/readyz")
    served.get("/v1/graph/stats", "/v1/graph/stats")
    served.get("/openapi.json", "/openapi.json")
    served.get("/metrics", "/metrics")
    served.get(f"/v1/jobs/{uuid.uuid4()}", "/v1/jobs/{job_id}")  # never queued: 404
    queued = str(uuid.uuid4())
    job_queue.record_queued(job_queue.job_client(served.settings), queued)  # as enqueue does; not sent
    served.get(f"/v1/jobs/{queued}", "/v1/jobs/{job_id}")
    served.get(f"/v1/jobs/{blank}", "/v1/jobs/{job_id}")
    served.get(f"/v1/users/{user}/recommendations", recommendations, k=5, explain="true")
    served.get(f"/v1/users/{user}/recommendations", recommendations, k=0)
    served.get(f"/v1/users/{user}/recommendations/{item}/explanation", EXPLANATION)
    served.get(f"/v1/users/{user}/recommendations/no-such-item/explanation", EXPLANATION)
    served.get(f"/v1/users/{user}/recommendations/{item}/explanation", EXPLANATION, max_paths=0)
    served.get(f"/v1/items/{item}/similar", similar, k=5)
    served.get("/v1/items/no-such-item/similar", similar)
    served.get(f"/v1/items/{item}/similar", similar, k=0)
    served.get(f"/v1/users/{user}/interests", interests)
    served.get(f"/v1/users/{user}/interests", interests, k=0)
    brand = served.get(f"/v1/users/{user}/interests", interests).json()["brands"][0]["id"]
    served.get("/v1/audiences", "/v1/audiences", brand=brand, limit=5)
    served.get("/v1/audiences", "/v1/audiences")  # no target
    impression = "/v1/impressions/{recommendation_id}"
    shown = served.get(f"/v1/users/{user}/recommendations", recommendations, k=2).json()
    served.get(f"/v1/impressions/{shown['recommendation_id']}", impression)
    served.get(f"/v1/impressions/{uuid.uuid4()}", impression)
    served.get("/v1/search", "/v1/search", q=user)
    served.get("/v1/search", "/v1/search", q=user, limit=0)
    timeline, neighbourhood = "/v1/users/{user_id}/timeline", "/v1/items/{item_id}/neighbourhood"
    served.get(f"/v1/users/{user}/timeline", timeline)
    served.get(f"/v1/users/{user}/timeline", timeline, limit=0)
    served.get(f"/v1/items/{item}/neighbourhood", neighbourhood)
    served.get("/v1/items/no-such-item/neighbourhood", neighbourhood)
    served.get(f"/v1/items/{item}/neighbourhood", neighbourhood, limit=0)
    served.get("/v1/queue", "/v1/queue")
    topics = served.get("/v1/topics", "/v1/topics", q="lipstick").json()["topics"]
    served.get("/v1/topics", "/v1/topics", limit=0)
    served.get(f"/v1/topics/{quote(topics[0]['id'], safe='')}", "/v1/topics/{topic_id}")
    served.get("/v1/topics/no-such-topic", "/v1/topics/{topic_id}")
    served.get("/v1/models", "/v1/models")

    auth = {"Authorization": f"Bearer {KEY}"}
    probe = f"openapi-probe-{uuid.uuid4().hex[:8]}"  # a user of its own, erased at the end
    now = int(time.time() * 1000)
    event = {"event_id": probe, "user_id": probe, "item_id": f"{probe}-item", "type": "view", "ts": now}
    served.call("POST", "/v1/events", "/v1/events", headers=auth, body=[event])
    served.call("POST", "/v1/events", "/v1/events", body=[event])
    served.call("POST", "/v1/events", "/v1/events", headers=auth, body=[{**event, "type": "teleport"}])
    json_header = {**auth, "Content-Type": "application/json"}
    served.call("POST", "/v1/events", "/v1/events", headers=json_header, raw=b'{"events": [')
    form = {**auth, "Content-Type": "application/x-www-form-urlencoded"}
    served.call("POST", "/v1/events", "/v1/events", headers=form, raw=b"event_id=1")
    erase = "/v1/users/{user_id}"
    served.call("DELETE", f"/v1/users/{probe}", erase)
    served.call("DELETE", f"/v1/users/{probe}", erase, headers=auth)
    served.call("DELETE", f"/v1/users/{probe}", erase, headers=auth)
    served.call("DELETE", f"/v1/users/{blank}", erase, headers=auth)
    catalogue, rules_path = "/v1/items/{item_id}", "/v1/rules/{rule_id}"
    served.call(
        "PUT", f"/v1/items/{probe}-item", catalogue, headers=auth, body={"title": "Probe", "stock": 2}
    )
    served.call("PUT", f"/v1/items/{probe}-item", catalogue, headers=auth, body={"stock": -1})
    served.call("PUT", f"/v1/items/{probe}-item", catalogue, body={"title": "x"})
    served.call(
        "POST", "/v1/items", "/v1/items", headers=auth, body=[{"item_id": f"{probe}-item", "price": 3.0}]
    )
    served.get(f"/v1/items/{probe}-item", catalogue)
    served.get("/v1/items/no-such-item", catalogue)
    served.call("DELETE", f"/v1/items/{probe}-item", catalogue, headers=auth)
    served.call("DELETE", "/v1/items/no-such-item", catalogue, headers=auth)
    rule = {"id": probe, "action": "boost", "target": {"item": item}, "factor": 1.5, "surface": "similar"}
    served.call("POST", "/v1/rules", "/v1/rules", headers=auth, body=rule)
    served.call("POST", "/v1/rules", "/v1/rules", headers=auth, body={**rule, "factor": 0.5})
    served.get("/v1/rules", "/v1/rules")
    promote = "/v1/models/{version}/promote"
    served.call("POST", f"/v1/models/{served.version}/promote", promote, headers=auth)
    served.call("POST", "/v1/models/no-such-version/promote", promote, headers=auth)
    # A queued training (200) would be run by a later test's worker on its own graph: the 200 answer
    # is checked against the document in tests/test_promotion_gate.py, with a real worker.
    served.call("POST", "/v1/models/train", "/v1/models/train", body={})
    served.call("POST", "/v1/models/train", "/v1/models/train", headers=auth, body={"epochs": 0})
    experiment = "/v1/experiments/{experiment_id}"
    split = {
        "name": "probe",
        "variants": [
            {"name": "a", "model_version": "active", "traffic": 0.5},
            {"name": "b", "model_version": "active", "traffic": 0.5},
        ],
    }
    created = served.call("POST", "/v1/experiments", "/v1/experiments", headers=auth, body=split).json()
    served.get(f"/v1/experiments/{created['id']}", experiment)
    served.get(f"/v1/experiments/{uuid.uuid4()}", experiment)
    served.get("/v1/experiments?status=running", "/v1/experiments")
    served.get("/v1/experiments?limit=0", "/v1/experiments")
    served.call(
        "POST",
        f"/v1/experiments/{created['id']}/promote",
        f"{experiment}/promote",
        headers=auth,
        body={"variant": "a"},
    )
    served.call("POST", f"/v1/experiments/{created['id']}/stop", f"{experiment}/stop", headers=auth)
    export = "/v1/audiences/export"
    served.call("POST", export, export, headers=auth, body={"brand": brand})
    served.call("POST", export, export, body={"brand": brand})
    served.call("POST", export, export, headers=auth, body={"brand": brand, "category": brand})
    served.call("POST", export, export, headers=auth, body={"brand": brand, "limit": 3})
    served.call("DELETE", f"/v1/rules/{probe}", rules_path, headers=auth)
    served.call("DELETE", f"/v1/rules/{probe}", rules_path, headers=auth)
    return [(method, template, status) for method, _, template, status, _ in served.seen[first:]]


def test_z_openapi_document_is_valid_and_describes_every_response_seen(served: Served) -> None:
    """Every response this test provokes, and every one the module's other tests saw, matches the
    document; its own requests cover every documented operation, so it needs no other test."""
    document = requests.get(f"{served.api.url}/openapi.json", timeout=10).json()
    validate(document)
    own = exercise_every_operation(served)
    read = ("/v1/users/{user_id}/recommendations", EXPLANATION, "/v1/items/{item_id}/similar")
    assert set(own) == {
        ("get", "/healthz", 200),
        ("get", "/readyz", 200),
        ("get", "/v1/graph/stats", 200),
        ("get", "/openapi.json", 200),
        ("get", "/metrics", 200),
        ("get", "/v1/jobs/{job_id}", 200),
        ("get", "/v1/jobs/{job_id}", 404),  # no job was queued under a random id
        ("get", "/v1/jobs/{job_id}", 400),
        *(("get", template, status) for template in read for status in (200, 400)),
        ("get", EXPLANATION, 404),
        ("get", "/v1/items/{item_id}/similar", 404),
        ("get", "/v1/users/{user_id}/interests", 200),
        ("get", "/v1/users/{user_id}/interests", 400),
        *(("post", "/v1/events", status) for status in (200, 400, 401, 415, 422)),
        *(("delete", "/v1/users/{user_id}", status) for status in (200, 400, 401, 404)),
        *(("put", "/v1/items/{item_id}", s) for s in (200, 401, 422)),
        ("post", "/v1/items", 200),
        *(("get", "/v1/items/{item_id}", s) for s in (200, 404)),
        *(("delete", "/v1/items/{item_id}", s) for s in (200, 404)),
        *(("post", "/v1/rules", s) for s in (200, 422)),
        ("get", "/v1/rules", 200),
        *(("delete", "/v1/rules/{rule_id}", s) for s in (200, 404)),
        *(("get", "/v1/audiences", s) for s in (200, 400)),
        *(("get", "/v1/impressions/{recommendation_id}", s) for s in (200, 404)),
        *(("get", "/v1/search", s) for s in (200, 400)),
        *(("get", "/v1/users/{user_id}/timeline", s) for s in (200, 400)),
        *(("get", "/v1/items/{item_id}/neighbourhood", s) for s in (200, 400, 404)),
        ("get", "/v1/queue", 200),
        *(("get", "/v1/topics", s) for s in (200, 400)),
        *(("get", "/v1/topics/{topic_id}", s) for s in (200, 404)),
        ("get", "/v1/models", 200),
        *(("post", "/v1/models/{version}/promote", s) for s in (200, 404)),
        *(("post", "/v1/models/train", s) for s in (401, 422)),
        ("post", "/v1/experiments", 200),
        *(("get", "/v1/experiments", s) for s in (200, 400)),
        *(("get", "/v1/experiments/{experiment_id}", s) for s in (200, 404)),
        ("post", "/v1/experiments/{experiment_id}/promote", 200),
        ("post", "/v1/experiments/{experiment_id}/stop", 200),
        *(("post", "/v1/audiences/export", s) for s in (200, 400, 401, 422)),
    }
    documented = {(method, template) for template, ops in document["paths"].items() for method in ops}
    answered = {(method, template) for method, template, status in own if status == 200}
    assert documented == answered | {("post", "/v1/models/train")}
    for method, path, template, status, body in served.seen:
        problems = undocumented(document, method, template, status, body)
        assert problems == [], f"{method} {path} ({status}): {problems[:3]}"
