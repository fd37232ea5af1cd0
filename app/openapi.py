"""``GET /openapi.json`` (the OpenAPI 3.0 document of the whole API) and ``GET /docs`` (Swagger UI).

Swagger UI's files come from the swagger-ui-bundle package, so the docs page
works without internet access.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, send_from_directory
from swagger_ui_bundle import swagger_ui_path

from kgrec.events.validation import BEHAVIOURS, MAX_BATCH, MAX_CATEGORY_DEPTH, MAX_ID_LENGTH, MAX_TEXT_LENGTH

bp = Blueprint("openapi", __name__)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


# Ids are 1..256 characters without control characters (kgrec refuses those with a 400).
_ID = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH, "pattern": "^[^\\x00-\\x1f\\x7f]+$"}

# Event ids: 1..256 characters, not only whitespace, no control characters.
_EVENT_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_ID_LENGTH,
    "pattern": "^[^\\x00-\\x1f]*[^\\s\\x00-\\x1f][^\\x00-\\x1f]*$",
}
# An empty filter is no filter (as an HTML form sends it).
_FILTER_ID = {"type": "string", "maxLength": MAX_ID_LENGTH, "pattern": "^[^\\x00-\\x1f\\x7f]*$"}


def _path_id(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": _ID}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_NULLABLE_STRING = {"type": "string", "nullable": True}
_NUMBER = {"type": "number"}
_FILTERS = [
    _query("brand", _FILTER_ID, "only items of this brand (its id)"),
    _query("category", _FILTER_ID, "only items in this category or any of its subcategories (its id)"),
    _query("min_price", {"type": "number", "minimum": 0}, "only items with a known price of at least this"),
    _query("max_price", {"type": "number", "minimum": 0}, "only items with a known price of at most this"),
]
_READ_ERRORS = {
    "400": _error("an invalid parameter (named in `field`)"),
    "401": _error("a key is required (KGREC_READ_REQUIRES_KEY) and was missing or wrong"),
    "503": _error("the graph is unavailable (with Retry-After) or no model has been trained"),
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "a short machine-readable code"},
            "detail": {"type": "string", "description": "what went wrong, for people"},
            "field": {"type": "string", "description": "the parameter or field at fault"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "field": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    },
    "ScoredItem": {
        "type": "object",
        "required": ["item_id", "score"],
        "properties": {
            "item_id": {"type": "string"},
            "score": _NUMBER,
            "reason": {"allOf": [_ref("Path")], "nullable": True, "description": "with explain=true"},
        },
    },
    "Path": {
        "type": "object",
        "required": ["kind", "score", "sentence", "nodes", "relationships", "support", "cypher"],
        "properties": {
            "kind": {"type": "string", "enum": ["co_purchase", "same_brand", "interest", "co_user"]},
            "score": _NUMBER,
            "sentence": {"type": "string"},
            "nodes": {
                "type": "array",
                "minItems": 3,
                "maxItems": 4,
                "items": {
                    "type": "object",
                    "required": ["label", "id", "name"],
                    "properties": {
                        "label": {"type": "string", "enum": ["User", "Item", "Brand", "Category"]},
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                    },
                },
            },
            "relationships": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["type", "direction", "weight"],
                    "properties": {
                        "type": {"type": "string"},
                        "direction": {"type": "string", "enum": ["out", "in"]},
                        "weight": {"type": "number", "nullable": True},
                    },
                },
            },
            "support": {"type": "integer", "minimum": 1},
            "cypher": {"type": "string", "description": "a Cypher query showing this path in Neo4j Browser"},
        },
    },
    "Filters": {
        "type": "object",
        "properties": {
            "brand": {"type": "string"},
            "category": {"type": "string"},
            "min_price": _NUMBER,
            "max_price": _NUMBER,
        },
    },
    "Recommendations": {
        "type": "object",
        "required": ["user_id", "model_version", "recommendation_id", "cold_start", "items"],
        "properties": {
            "user_id": {"type": "string"},
            "model_version": {"type": "string"},
            "recommendation_id": {"type": "string", "format": "uuid"},
            "cold_start": {"type": "boolean", "description": "true when the user has no history"},
            "k": {"type": "integer"},
            "offset": {"type": "integer"},
            "filters": _ref("Filters"),
            "items": {"type": "array", "items": _ref("ScoredItem")},
        },
    },
    "Explanation": {
        "type": "object",
        "required": ["user_id", "item_id", "model_version", "paths"],
        "properties": {
            "user_id": {"type": "string"},
            "item_id": {"type": "string"},
            "model_version": {"type": "string"},
            "paths": {"type": "array", "items": _ref("Path")},
        },
    },
    "Similar": {
        "type": "object",
        "required": ["item_id", "model_version", "items"],
        "properties": {
            "item_id": {"type": "string"},
            "model_version": {"type": "string"},
            "k": {"type": "integer"},
            "filters": _ref("Filters"),
            "items": {"type": "array", "items": _ref("ScoredItem")},
        },
    },
    "Interest": {
        "type": "object",
        "required": ["id", "name", "weight", "items"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "weight": {"type": "number", "description": "decayed to now"},
            "events": {"type": "integer"},
            "last_ts": {"type": "integer", "nullable": True},
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["item_id", "weight"],
                    "properties": {
                        "item_id": {"type": "string"},
                        "title": _NULLABLE_STRING,
                        "weight": _NUMBER,
                    },
                },
            },
        },
    },
    "Interests": {
        "type": "object",
        "required": ["user_id", "brands", "categories"],
        "properties": {
            "user_id": {"type": "string"},
            "brands": {"type": "array", "items": _ref("Interest")},
            "categories": {"type": "array", "items": _ref("Interest")},
        },
    },
    "Event": {
        "type": "object",
        "additionalProperties": False,
        "required": ["event_id", "user_id", "item_id", "type", "ts"],
        "properties": {
            "event_id": _EVENT_ID,
            "user_id": _EVENT_ID,
            "item_id": _EVENT_ID,
            "type": {"type": "string", "enum": list(BEHAVIOURS)},
            "ts": {
                "oneOf": [{"type": "integer", "minimum": 0}, {"type": "string"}],
                "description": "epoch milliseconds or ISO-8601; not more than KGREC_MAX_CLOCK_SKEW_S ahead",
            },
            "value": {"type": "number", "nullable": True},
            "session_id": {**_EVENT_ID, "nullable": True},
            "item": {
                "type": "object",
                "nullable": True,
                "additionalProperties": False,
                "properties": {
                    "brand": {**_EVENT_ID, "nullable": True},
                    "category": {
                        "nullable": True,
                        "oneOf": [
                            _EVENT_ID,
                            {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": MAX_CATEGORY_DEPTH,
                                "items": _EVENT_ID,
                            },
                        ],
                    },
                    "title": {"type": "string", "maxLength": MAX_TEXT_LENGTH, "nullable": True},
                    "price": {"type": "number", "minimum": 0, "nullable": True},
                },
            },
        },
    },
    "Erasure": {
        "type": "object",
        "required": ["user_id", "erased", "removed", "popularity_adjusted_items"],
        "properties": {
            "user_id": {"type": "string"},
            "erased": {"type": "boolean"},
            "removed": {
                "type": "object",
                "properties": {
                    "user": {"type": "integer"},
                    "relationships": {"type": "integer"},
                    "interactions": {"type": "integer"},
                    "interests": {"type": "integer"},
                    "embeddings": {"type": "integer"},
                },
            },
            "popularity_adjusted_items": {"type": "integer"},
        },
    },
    "IngestResult": {
        "type": "object",
        "required": ["received", "applied", "duplicates"],
        "properties": {
            "received": {"type": "integer"},
            "applied": {"type": "integer"},
            "duplicates": {"type": "integer"},
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "state"],
        "properties": {
            "id": {"type": "string"},
            "state": {"type": "string"},
            "stage": _NULLABLE_STRING,
            "percent": {"type": "number", "nullable": True},
            "result": {"type": "object"},
            "error": {"type": "string"},
        },
    },
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the kgrec API."""
    k = {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "kgrec",
            "version": "1.0.0",
            "description": "E-commerce interest graph: recommendations, explanation paths, similar items, "
            "interests and event ingestion.",
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "The process is up",
                    "responses": {"200": _json({"type": "object"}, "up")},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "The graph is reachable and a model is active",
                    "responses": {
                        "200": _json({"type": "object"}, "ready"),
                        "503": _error("the graph is unreachable or no model is active"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {
                        "200": {
                            "description": "text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3")},
                }
            },
            "/v1/users/{user_id}/recommendations": {
                "get": {
                    "summary": "Ranked items for a user, with the user's latest events folded in",
                    "parameters": [
                        _path_id("user_id", "any user id; an unknown user gets decayed popularity"),
                        _query("k", k, "how many items"),
                        _query(
                            "offset", {"type": "integer", "minimum": 0, "maximum": 1000, "default": 0}, "skip"
                        ),
                        _query(
                            "exclude",
                            {"type": "string", "enum": ["seen", "purchased", "none"], "default": "seen"},
                            "which of the user's items to leave out",
                        ),
                        *_FILTERS,
                        _query(
                            "explain", {"type": "boolean", "default": False}, "attach each item's best path"
                        ),
                    ],
                    "responses": {"200": _json(_ref("Recommendations"), "ranked items"), **_READ_ERRORS},
                }
            },
            "/v1/users/{user_id}/recommendations/{item_id}/explanation": {
                "get": {
                    "summary": "Why this item: the best typed graph paths (at most 3 hops) to it",
                    "parameters": [
                        _path_id("user_id", "the user"),
                        _path_id("item_id", "the item"),
                        _query(
                            "max_paths", {"type": "integer", "minimum": 1, "maximum": 10, "default": 3}, ""
                        ),
                    ],
                    "responses": {
                        "200": _json(_ref("Explanation"), "paths, best first"),
                        "404": _error("no such item"),
                        **_READ_ERRORS,
                    },
                }
            },
            "/v1/items/{item_id}/similar": {
                "get": {
                    "summary": "Items closest to this one by the model's embeddings",
                    "parameters": [
                        _path_id("item_id", "the item"),
                        _query("k", k, "how many items"),
                        *_FILTERS,
                    ],
                    "responses": {
                        "200": _json(_ref("Similar"), "similar items"),
                        "404": _error("the model knows no such item"),
                        **_READ_ERRORS,
                    },
                }
            },
            "/v1/users/{user_id}/interests": {
                "get": {
                    "summary": "The user's strongest brands and categories, decayed to now",
                    "parameters": [
                        _path_id("user_id", "the user"),
                        _query(
                            "k", {"type": "integer", "minimum": 1, "maximum": 50, "default": 10}, "per kind"
                        ),
                        _query(
                            "items", {"type": "integer", "minimum": 0, "maximum": 10, "default": 3}, "drivers"
                        ),
                    ],
                    "responses": {"200": _json(_ref("Interests"), "interests"), **_READ_ERRORS},
                }
            },
            "/v1/users/{user_id}": {
                "delete": {
                    "summary": "Erase a user: node, edges, embeddings and their share of popularity",
                    "security": [{"apiKey": []}],
                    "parameters": [_path_id("user_id", "the user")],
                    "responses": {
                        "200": _json(_ref("Erasure"), "what was removed"),
                        "400": _error("an invalid id"),
                        "401": _error("missing or wrong API key"),
                        "404": _error("no such user"),
                        "503": _error("the graph is unavailable; nothing was removed (Retry-After)"),
                    },
                }
            },
            "/v1/events": {
                "post": {
                    "summary": f"Ingest up to {MAX_BATCH:,} behaviour events atomically and idempotently",
                    "security": [{"apiKey": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"type": "array", "maxItems": MAX_BATCH, "items": _ref("Event")},
                                        {
                                            "type": "object",
                                            "required": ["events"],
                                            "properties": {
                                                "events": {
                                                    "type": "array",
                                                    "maxItems": MAX_BATCH,
                                                    "items": _ref("Event"),
                                                }
                                            },
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(_ref("IngestResult"), "applied"),
                        "400": _error("not UTF-8, not JSON, NaN/Infinity or nested too deeply"),
                        "401": _error("missing or wrong API key"),
                        "413": _error("the body is over 4 MB"),
                        "415": _error("not application/json"),
                        "422": _error("invalid events; nothing was written"),
                        "503": _error("the graph is unavailable; nothing was written (Retry-After)"),
                    },
                }
            },
            "/v1/jobs/{job_id}": {
                "get": {
                    "summary": "State and progress of a background job (training)",
                    "parameters": [_path_id("job_id", "the job id `kgrec train` printed")],
                    "responses": {"200": _json(_ref("Job"), "the job"), **_READ_ERRORS},
                }
            },
            "/v1/graph/stats": {
                "get": {
                    "summary": "Node counts per label and relationship counts per type",
                    "responses": {"200": _json({"type": "object"}, "counts"), **_READ_ERRORS},
                }
            },
        },
    }


_DOCS_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>kgrec API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>
"""


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI document."""
    return jsonify(openapi_document())


@bp.get("/docs")
def docs() -> Response:
    """Swagger UI over /openapi.json."""
    return Response(_DOCS_PAGE, mimetype="text/html")


@bp.get("/docs/static/<path:name>")
def docs_static(name: str) -> Response:
    """Swagger UI's own files."""
    return send_from_directory(swagger_ui_path, name)
