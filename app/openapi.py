"""The contract machinery: ``api.validate`` under every view, ``/openapi.json`` built from it, ``/docs``.

Each view declares its query model and its responses (:mod:`app.schemas`), most
through :mod:`app.endpoints`. spectree validates the query against the model (a
failure is a 400 naming the parameter, :func:`app.params.bad_parameter`; a view
that declares none takes no query parameter at all) and builds the OpenAPI 3.1
document from the same declarations. Swagger UI's files
come from the swagger-ui-bundle package, so the docs page works without internet
access.
"""

from __future__ import annotations

import copy
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, send_from_directory
from pydantic import BaseModel, ValidationError
from spectree import Response as Responses
from spectree import SecurityScheme, SecuritySchemeData, SpecTree
from spectree.plugins.base import Context
from spectree.plugins.flask_plugin import FlaskPlugin
from swagger_ui_bundle import swagger_ui_path

from app.auth import ReadKey, declared_access, read_key, route_template
from app.graph import settings
from app.params import bad_parameter, query_values
from app.raw_path import STORED_ID_ROUTES
from app.schemas import NON_JSON_ANSWERS, OPTIONAL_BODIES, PATH_ID, Error, OpenApiDocument, Query
from kgrec.config import Settings
from kgrec.limits import ID_PATTERN, ID_RULE, STORED_ID_PATTERN, STORED_ID_RULE

# Not named "openapi": spectree leaves endpoints whose names start with that out of the document.
bp = Blueprint("api_docs", __name__)


class _FlaskPlugin(FlaskPlugin):
    """spectree's Flask plugin, narrowed to what kgrec asks of it, at the least cost per request.

    Only query models are validated here. JSON bodies are parsed strictly
    (:mod:`app.body`) and validated by the view with batch semantics (every
    invalid event as ``{index, field, reason}``, ``ts`` against the server clock),
    so the plugin only documents them; kgrec declares no header or cookie models.
    Responses are documented, not re-validated on every request: the tests check
    them against the document.
    """

    def request_validation(
        self, request: Any, query: Any, json: Any, form: Any, headers: Any, cookies: Any
    ) -> None:
        # An operation that lists no query parameters takes none: the bare model refuses each one.
        parsed = self.model_adapter.validate_obj(query or Query, query_values(request.query_string))
        request.context = Context(parsed if query else None, None, None, None, None)

    def validate_response(self, resp: Any, resp_model: Any, skip_validation: bool, force: bool) -> Any:
        return current_app.make_response(resp), None


def _refuse_invalid(_request: Any, _response: Any, error: Exception | None, *_: Any) -> None:
    if isinstance(error, ValidationError):
        raise bad_parameter(error)


api = SpecTree(
    "flask",
    backend=_FlaskPlugin,
    title="kgrec",
    version="1.0.0",
    description="E-commerce interest graph: recommendations, explanation paths, similar items, "
    "interests and event ingestion.",
    mode="strict",
    annotations=True,  # a view's ``query: SomeQuery`` argument receives its validated query
    before=_refuse_invalid,
    validation_error_status=400,
    validation_error_model=Error,
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
    security_schemes=[SecurityScheme(name="apiKey", data=SecuritySchemeData(type="http", scheme="bearer"))],
)


NO_QUERY_PARAMETERS = "a query parameter (this operation takes none; named in `field`)"


def responses(
    ok: type[BaseModel] | None, description: str, **errors: tuple[type[BaseModel], str]
) -> Responses:
    """The documented answers of an operation: 200 with ``ok``, and its errors (all :class:`Error`)."""
    return Responses(HTTP_200=(ok, description), **errors)


def _complete(operation: dict[str, Any]) -> None:
    """Fill in what spectree cannot know about an operation."""
    parameters = operation.get("parameters", [])
    # spectree reads path parameters off the Flask rule; every one of kgrec's is an id.
    for parameter in parameters:
        if parameter["in"] == "path":
            parameter["schema"] = PATH_ID.json_schema()
    # spectree documents every answer as JSON; a few are not (a CSV export).
    for answer in operation["responses"].values():
        schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
        media_type = NON_JSON_ANSWERS.get(schema.get("$ref", "").rsplit("/", 1)[-1])
        if media_type:
            answer["content"] = {media_type: {"schema": {"type": "string"}}}
    body = operation.get("requestBody")
    if body:
        schema = body.get("content", {}).get("application/json", {}).get("schema", {})
        if schema.get("$ref", "").rsplit("/", 1)[-1] in OPTIONAL_BODIES:
            body["required"] = False
    # Every operation refuses a query parameter it does not list, so every one documents a 400;
    # spectree's own description of it says nothing.
    refusal = operation["responses"]["400"]
    if not any(parameter["in"] == "query" for parameter in parameters):
        described = "" if refusal["description"] == "Bad Request" else f"{refusal['description']}; "
        refusal["description"] = f"{described}{NO_QUERY_PARAMETERS}"


# A read's OpenAPI security per the key it needs (:func:`app.auth.read_key`). OpenAPI 3.1 lets a
# non-OAuth scheme list the roles an operation needs; requirements in a list are alternatives, and the
# empty one says a client may send no key.
READ_SECURITY: dict[ReadKey, list[dict[str, list[str]]]] = {
    "open": [{}, {"apiKey": []}],
    "key": [{"apiKey": []}],
    "admin": [{"apiKey": ["admin"]}],
}


def _secure_reads(app: Flask, document: dict[str, Any], configured: Settings) -> None:
    """Give each read its ``security`` from the key :func:`app.auth.read_key` says it needs under
    ``configured``: a generated client must send the key where a read needs one, and may where not."""
    for rule in app.url_map.iter_rules():
        access = declared_access(app.view_functions.get(rule.endpoint))
        needed = read_key(access, configured) if access is not None else None
        if needed is not None:
            operation = document["paths"][route_template(rule.rule)]["get"]
            operation["security"] = copy.deepcopy(READ_SECURITY[needed])


def _publish_stored_ids(app: Flask, document: dict[str, Any]) -> None:
    """The path ids of :data:`app.raw_path.STORED_ID_ROUTES` with the pattern they are checked
    against (any id the graph may hold) and that rule in words (:data:`kgrec.limits.STORED_ID_RULE`),
    so that a client following the document can send them."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint in STORED_ID_ROUTES:
            for method in rule.methods or ():
                operation = document["paths"].get(route_template(rule.rule), {}).get(method.lower())
                for parameter in (operation or {}).get("parameters", []):
                    if parameter["in"] == "path":
                        parameter["schema"] = {**parameter["schema"], "pattern": STORED_ID_PATTERN}
                        described = (parameter.get("description"), STORED_ID_RULE)
                        parameter["description"] = ": ".join(filter(None, described))


def _describe_ids(node: Any) -> None:
    """Append the id rule in words to the description of every id schema under ``node``: its pattern
    cannot state all of it, and a field's own description replaces the one its type would carry."""
    if isinstance(node, dict):
        if node.get("pattern") == ID_PATTERN and ID_RULE not in node.get("description", ""):
            node["description"] = "; ".join(filter(None, (node.get("description"), ID_RULE)))
        for value in node.values():
            _describe_ids(value)
    elif isinstance(node, list):
        for value in node:
            _describe_ids(value)


def openapi_document(app: Flask | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app`` (default: the current one)."""
    target = app or current_app._get_current_object()  # type: ignore[attr-defined]
    cached = target.extensions.get("kgrec.openapi")
    if cached is None:
        with target.app_context():
            document = copy.deepcopy(api.spec)
            configured = settings()
        for operations in document["paths"].values():
            for operation in operations.values():
                _complete(operation)
        _secure_reads(target, document, configured)
        _publish_stored_ids(target, document)
        _describe_ids(document)
        cached = target.extensions["kgrec.openapi"] = document
    return cached


_DOCS_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>kgrec API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui"});</script>
</body></html>
"""


@bp.get("/openapi.json")
@api.validate(resp=responses(OpenApiDocument, "OpenAPI 3.1"))
def openapi_json() -> Response:
    """This document."""
    return jsonify(openapi_document())


@bp.get("/docs")
def docs() -> Response:
    """Swagger UI over /openapi.json."""
    return Response(_DOCS_PAGE, mimetype="text/html")


@bp.get("/docs/static/<path:name>")
def docs_static(name: str) -> Response:
    """Swagger UI's own files."""
    return send_from_directory(swagger_ui_path, name)
