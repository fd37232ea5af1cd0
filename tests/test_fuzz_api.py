"""Schemathesis fuzzes the whole OpenAPI surface of a real server.

No 5xx, no response off the schema, invalid input refused, and every request the
document allows is accepted: positive-data acceptance is on, and a refusal of
valid input may only be one the operation documents (401, 404, 503).

Rules no JSON Schema can state are written in the parameters' descriptions
instead: ``min_price`` at most ``max_price``, an event's ``ts`` not before 1970
nor ahead of the server's clock (by more than the allowed skew), and an item's
``listed_at`` / ``delisted_at`` not before 1970, and a rule's ``ends_at`` after its ``starts_at``. A generated
request that breaks one of them must be refused with exactly that field named.

The server runs on a small trained graph, so the read endpoints answer with
real data; write endpoints are fuzzed with a valid key (so the fuzzer gets past
authentication); missing and wrong keys are covered by the events and serving tests.
"""

from __future__ import annotations

import time
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from app import create_app
from app.openapi import openapi_document
from kgrec.config import Settings
from kgrec.datasets.records import parse_timestamp_ms
from tests.conftest import SMALL_API_KEY
from tests.processes import ApiProcess

EXAMPLES = 40  # per operation, so the suite stays bounded
DOCUMENTED_REFUSALS = {"401", "404", "503"}  # of valid input, and only where the operation lists them

CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", *sorted(DOCUMENTED_REFUSALS)]}}}
)
schema = schemathesis.openapi.from_dict(openapi_document(create_app(Settings.from_env())), config=CONFIG)


def _events(body: Any) -> list[Any]:
    events = body.get("events") if isinstance(body, dict) else body
    return events if isinstance(events, list) else []


def _items(case: schemathesis.Case) -> list[Any]:
    """The catalogue items of a PUT or POST /v1/items body."""
    body = case.body
    if case.operation.path == "/v1/items/{item_id}" and case.method.upper() == "PUT":
        return [body] if isinstance(body, dict) else []
    if case.operation.path == "/v1/items":
        items = body.get("items") if isinstance(body, dict) else body
        return items if isinstance(items, list) else []
    return []


def _ts_ms(value: Any) -> int | None:
    if isinstance(value, str):
        try:
            return parse_timestamp_ms(value)
        except (ValueError, OverflowError):
            return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else None


def broken_rule(case: schemathesis.Case) -> tuple[int, str] | None:
    """(status, field) when a schema-valid request breaks one of the two rules in prose, else None."""
    query = case.query or {}
    low, high = query.get("min_price"), query.get("max_price")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
        return 400, "min_price"
    latest = time.time() * 1000 + Settings.from_env().max_clock_skew_s * 1000
    for event in _events(case.body) if case.operation.path == "/v1/events" else []:
        ts = _ts_ms(event.get("ts")) if isinstance(event, dict) else None
        if ts is not None and not 0 <= ts <= latest:
            return 422, "ts"
    # a rule ends after it starts
    body = case.body if case.operation.path == "/v1/rules" and isinstance(case.body, dict) else {}
    starts, ends = _ts_ms(body.get("starts_at")), _ts_ms(body.get("ends_at"))
    for name, ts in (("starts_at", starts), ("ends_at", ends)):
        if ts is not None and ts < 0:
            return 422, name
    if starts is not None and ends is not None and ends <= starts and starts >= 0:
        return 422, "ends_at"
    # a catalogue time (listed_at, delisted_at) may be in the future, but not before 1970
    for item in _items(case):
        for name in ("listed_at", "delisted_at"):
            ts = _ts_ms(item.get(name)) if isinstance(item, dict) else None
            if ts is not None and ts < 0:
                return 422, name
    return None


def refusals_are_documented(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """Valid input is refused only with a status the operation documents, and only 401, 404 or 503."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code < 400:
        return None
    status = str(response.status_code)
    documented = case.operation.definition.raw.get("responses", {})
    assert status in DOCUMENTED_REFUSALS and status in documented, (
        f"valid input refused with {status}: {response.text[:300]}"
    )
    return None


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_no_5xx_every_response_matches_and_valid_input_is_accepted(
    case: schemathesis.Case, small_api: ApiProcess
) -> None:
    headers = {"Authorization": f"Bearer {SMALL_API_KEY}"}
    rule = broken_rule(case) if case.meta is not None and case.meta.generation.mode.is_positive else None
    if rule is None:
        case.call_and_validate(
            base_url=small_api.url, headers=headers, additional_checks=[refusals_are_documented]
        )
        return
    status, field = rule
    response: requests.Response = case.call(base_url=small_api.url, headers=headers)
    body = response.json()
    named = [body.get("field")] + [e["field"] for e in body.get("errors", [])]
    assert response.status_code == status and field in named, response.text[:300]
