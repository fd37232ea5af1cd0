"""The bounds ``/openapi.json`` documents are exactly the bounds the server enforces.

Every numeric, length and size bound of every operation's parameters and request
body is read from the served document (nothing is written down here). For each,
the boundary value must be accepted and the value one step beyond it refused
with a 400 (parameters) or 422 (events) that names the field. And the id rule
(no control characters, not only white space) holds at every entry point:
paths, queries, events and the dataset importer.
"""

from __future__ import annotations

import csv
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from jsonschema import Draft202012Validator

from graph_schema.statements.audiences import AUDIENCE_TARGETS
from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.gateway import open_gateway
from tests.conftest import SMALL_API_KEY
from tests.processes import ApiProcess

AUTH = {"Authorization": f"Bearer {SMALL_API_KEY}"}
BOUNDS = {
    "minimum": -1,
    "maximum": +1,
    "minLength": -1,
    "maxLength": +1,
    "minItems": -1,
    "maxItems": +1,
}


@dataclass(frozen=True)
class Probe:
    """One value to send for one field: at a documented bound, or one step beyond it."""

    field: str
    keyword: str
    value: Any
    beyond: bool

    def __str__(self) -> str:
        where = "beyond" if self.beyond else "at"
        return f"{self.field} {where} {self.keyword}"


@dataclass
class Contract:
    """The served document, and ids that exist in the served graph."""

    api: ApiProcess
    document: dict[str, Any]
    user: str
    item: str

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        """``schema`` with its top-level ``$ref`` followed."""
        while "$ref" in schema:
            schema = self.document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def allows(self, schema: dict[str, Any], value: Any) -> bool:
        """Whether the document's ``schema`` admits ``value`` (JSON Schema 2020-12, as OpenAPI 3.1)."""
        root = {"components": self.document["components"], "allOf": [schema]}
        return Draft202012Validator(root).is_valid(value)


@pytest.fixture(scope="module")
def contract(small_api: ApiProcess, settings: Settings) -> Iterator[Contract]:
    graph_name = small_api.graph_name  # type: ignore[attr-defined]
    with open_gateway(settings.with_overrides(graph_name=graph_name), graph_name=graph_name) as gateway:
        user = gateway.run_query(
            "MATCH (u:User)-[:INTERACTED]->() RETURN u.id AS id ORDER BY id LIMIT 1", {}
        )[0]["id"]
        item = gateway.run_query(
            "MATCH (i:Item {listed: true})<-[:INTERACTED]-() RETURN i.id AS id ORDER BY id LIMIT 1", {}
        )[0]["id"]
    document = requests.get(f"{small_api.url}/openapi.json", timeout=30).json()
    yield Contract(small_api, document, user, item)


def _example(schema: dict[str, Any], size: int) -> Any:
    """A value of ``schema``'s type with ``size`` characters or items (ids need no more than letters)."""
    if schema.get("type") == "array":
        return [f"c{i}" for i in range(size)]
    return "x" * size


def _step(schema: dict[str, Any], bound: float, direction: int) -> float:
    if schema.get("type") == "integer":
        return int(bound) + direction
    return math.nextafter(bound, math.inf * direction)


def probes(contract: Contract, field: str, schema: dict[str, Any]) -> Iterator[Probe]:
    """The boundary and the one-beyond value of every bound in ``schema`` (each alternative of an anyOf)."""
    schema = contract.resolve(schema)
    for branch in schema.get("anyOf", schema.get("oneOf", [schema])):
        branch = contract.resolve(branch)
        for keyword, direction in BOUNDS.items():
            if keyword not in branch:
                continue
            bound = branch[keyword]
            if keyword in ("minimum", "maximum"):
                at, beyond = bound, _step(branch, bound, direction)
            elif bound + direction >= 0:
                at, beyond = _example(branch, bound), _example(branch, bound + direction)
            else:  # nothing is shorter than empty
                at, beyond = _example(branch, bound), None
            yield Probe(field, keyword, at, beyond=False)
            if beyond is not None and not contract.allows(schema, beyond):
                yield Probe(field, keyword, beyond, beyond=True)


def accepted(response: requests.Response, operation: dict[str, Any]) -> bool:
    """Past validation: answered, or "not found" where the operation documents it (an unknown id)."""
    return response.status_code < 400 or (response.status_code == 404 and "404" in operation["responses"])


def refused(response: requests.Response, status: int, field: str) -> bool:
    """Refused with ``status``, naming ``field`` (in ``field``, or in one of the batch's ``errors``)."""
    body = response.json()
    named = [body.get("field")] + [e["field"] for e in body.get("errors", [])]
    return response.status_code == status and field in named


def parameter_probes(contract: Contract) -> Iterator[tuple[str, str, dict[str, Any], Probe]]:
    """(method, path template, operation, probe) for every bounded path and query parameter."""
    for template, operations in contract.document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                for probe in probes(contract, parameter["name"], parameter["schema"]):
                    yield method, template, operation, probe


def send_parameter(
    contract: Contract, method: str, template: str, operation: dict[str, Any], probe: Probe
) -> requests.Response:
    """The operation with known ids in its path, and the probe's value in its place."""
    path_values = {
        "user_id": contract.user,
        "item_id": contract.item,
        "job_id": "contract-job",
        "topic_id": "contract-topic",  # unknown: a documented 404 is past validation
        "recommendation_id": "00000000-0000-8000-8000-000000000000",
        "experiment_id": "contract-experiment",
        "version": "contract-version",
    }
    query: dict[str, Any] = {}
    # An audience needs exactly one target: a known brand, unless the probe is a target itself.
    if template == "/v1/audiences" and probe.field not in AUDIENCE_TARGETS:
        query["brand"] = "contract-brand"
    located = {p["name"]: p["in"] for p in operation["parameters"]}
    if located[probe.field] == "path":
        path_values[probe.field] = probe.value
    else:
        query[probe.field] = probe.value
    path = template.format(**{k: quote(str(v), safe="") for k, v in path_values.items()})
    body = {} if "requestBody" in operation else None
    return requests.request(
        method.upper(), f"{contract.api.url}{path}", params=query, headers=AUTH, json=body, timeout=60
    )


def test_every_parameter_bound_is_enforced_exactly(contract: Contract) -> None:
    checked, wrong = 0, []
    for method, template, operation, probe in parameter_probes(contract):
        response = send_parameter(contract, method, template, operation, probe)
        located = {p["name"]: p["in"] for p in operation["parameters"]}[probe.field]
        if probe.beyond and located == "path" and probe.value == "":
            # An empty path segment never reaches a route: refused by routing.
            ok = response.status_code == 404
        elif probe.field == "cursor" and template in ("/v1/audiences", "/v1/experiments"):
            # The probe within the length bounds ("x" * n) is still no cursor: an audience cursor is
            # only valid as the service issued it, and an experiments cursor must match its pattern
            # (digits:id; any well-formed one is accepted, issued or not).
            ok = refused(response, 400, "cursor")
        else:
            ok = refused(response, 400, probe.field) if probe.beyond else accepted(response, operation)
        if not ok:
            wrong.append(
                f"{method.upper()} {template}: {probe} -> {response.status_code} {response.text[:200]}"
            )
        checked += 1
    assert checked >= 40, "the document should bound k, offset, prices, ids and more"
    assert wrong == []


def event(contract: Contract, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": f"contract-{uuid.uuid4().hex}",
        "user_id": "contract-user",
        "item_id": contract.item,
        "type": "view",
        "ts": int(time.time() * 1000),
        **fields,
    }


# Each language field belongs to one event type; a search has no item.
LANGUAGE_TYPES = {"text": "review", "tag": "tag", "query": "search"}


def language_event(raw: dict[str, Any], field: str) -> dict[str, Any]:
    """``raw`` made the event type that carries ``field`` (unchanged for other fields)."""
    if field not in LANGUAGE_TYPES:
        return raw
    typed = {**raw, "type": LANGUAGE_TYPES[field]}
    return {k: v for k, v in typed.items() if not (k == "item_id" and typed["type"] == "search")}


def body_probes(contract: Contract) -> Iterator[tuple[Probe, Any]]:
    """(probe, request body) for every bound of the event batch, the event and its item facts."""
    post = contract.document["paths"]["/v1/events"]["post"]
    batch = contract.resolve(post["requestBody"]["content"]["application/json"]["schema"])
    for shape in map(contract.resolve, batch["anyOf"]):
        wrapped = shape.get("type") != "array"  # {"events": [...]} rather than [...]
        events = contract.resolve(shape["properties"]["events"]) if wrapped else shape
        for keyword in ("minItems", "maxItems"):
            for beyond in (False, True):
                count = events[keyword] + (BOUNDS[keyword] if beyond else 0)
                listed = [event(contract) for _ in range(count)]
                body = {"events": listed} if wrapped else listed
                if not (beyond and contract.allows(batch, body)):
                    yield Probe("events", keyword, count, beyond), body
    event_schema = contract.resolve(events["items"])
    for name, schema in event_schema["properties"].items():
        for probe in probes(contract, name, schema):
            yield probe, [language_event(event(contract, **{name: probe.value}), name)]
    item_schema = next(
        contract.resolve(s) for s in event_schema["properties"]["item"]["anyOf"] if "$ref" in s
    )
    for name, schema in item_schema["properties"].items():
        for probe in probes(contract, name, schema):
            inside = Probe(f"item.{name}", probe.keyword, probe.value, probe.beyond)
            yield inside, [event(contract, item={name: probe.value})]


def test_every_event_bound_is_enforced_exactly(contract: Contract) -> None:
    checked, wrong = 0, []
    for probe, body in body_probes(contract):
        response = requests.post(f"{contract.api.url}/v1/events", json=body, headers=AUTH, timeout=120)
        ok = refused(response, 422, probe.field) if probe.beyond else response.status_code == 200
        if not ok:
            wrong.append(f"{probe} -> {response.status_code} {response.text[:300]}")
        checked += 1
    assert checked >= 20, "the document should bound the batch, ids, ts, category paths, title and price"
    assert wrong == []


def test_the_clock_bound_of_ts_is_enforced(contract: Contract) -> None:
    """The one bound JSON Schema cannot state (it moves with the clock): written in ts's description."""
    skew_ms = Settings.from_env().max_clock_skew_s * 1000
    latest = int(time.time() * 1000 + skew_ms)
    ahead = requests.post(
        f"{contract.api.url}/v1/events", json=[event(contract, ts=latest + 60_000)], headers=AUTH, timeout=30
    )
    assert refused(ahead, 422, "ts") and "future" in ahead.json()["errors"][0]["reason"]
    within = requests.post(
        f"{contract.api.url}/v1/events", json=[event(contract, ts=latest - 60_000)], headers=AUTH, timeout=30
    )
    assert within.status_code == 200
    assert (
        "ahead of the server"
        in contract.document["components"]["schemas"]["Event"]["properties"]["ts"]["description"]
    )


@pytest.mark.parametrize("bad", ["a\x7fb", "a\x00b", "line\nbreak", " ", "\t"])
def test_every_entry_point_applies_the_one_id_rule(
    contract: Contract, settings: Settings, tmp_path: Path, bad: str
) -> None:
    api = contract.api.url
    path = requests.get(f"{api}/v1/users/{quote(bad, safe='')}/interests", timeout=30)
    assert refused(path, 400, "user_id")
    filtered = requests.get(
        f"{api}/v1/users/{quote(contract.user, safe='')}/recommendations", params={"brand": bad}, timeout=30
    )
    assert refused(filtered, 400, "brand")
    posted = requests.post(f"{api}/v1/events", json=[event(contract, user_id=bad)], headers=AUTH, timeout=30)
    assert refused(posted, 422, "user_id")
    folder = tmp_path / "layout"
    folder.mkdir()
    with open(folder / "interactions.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["user_id", "item_id"], [bad, "i1"], ["u2", "i2"]])
    dataset = open_dataset(str(folder), settings.datasets_dir)
    assert [r.user_id for r in dataset.interactions()] == ["u2"]
    assert [p.reason.split()[0] for p in dataset.problems.rows] == ["user_id"]
