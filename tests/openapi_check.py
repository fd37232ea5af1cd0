"""Checking a response against the API's own OpenAPI document."""

from __future__ import annotations

from typing import Any

from openapi_schema_validator import OAS31Validator


def undocumented(document: dict[str, Any], method: str, template: str, status: int, body: Any) -> list[str]:
    """What is wrong with a response to ``method template`` by ``document`` (empty: it matches)."""
    operation = document["paths"][template][method.lower()]
    response = operation["responses"].get(str(status))
    if response is None:
        return [f"status {status} is not documented"]
    json_content = response.get("content", {}).get("application/json")
    if body is None:  # the answer was not JSON (Prometheus text): then the document must not promise JSON
        return [] if json_content is None else ["documented as JSON, answered otherwise"]
    if json_content is None:
        return ["answered JSON, documented otherwise"]
    schema = {
        "components": document["components"],
        "allOf": [json_content["schema"]],
    }
    return [e.message for e in OAS31Validator(schema).iter_errors(body)]
