"""How a view is declared: route, access and contract in one decorator.

A new endpoint is a view function under :func:`read_endpoint` or
:func:`write_endpoint`, with its models in :mod:`app.schemas`. A view that takes
``query: SomeQuery`` gets its query parameters validated against that model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint
from pydantic import BaseModel

from app.auth import Access, admin_access, admin_read_access, erase_access, read_access, write_access
from app.openapi import api, responses
from app.schemas import Error

Answers = dict[str, tuple[type[BaseModel], str]]
View = Callable[..., Any]

READ_ERRORS: Answers = {
    "HTTP_400": (Error, "an invalid parameter (named in `field`)"),
    "HTTP_401": (Error, "a key is required (KGREC_READ_REQUIRES_KEY) and was missing or wrong"),
    "HTTP_503": (Error, "the graph is unavailable (with Retry-After) or no model has been trained"),
}
WRITE_ERRORS: Answers = {
    "HTTP_401": (Error, "missing or wrong API key"),
    "HTTP_503": (Error, "the graph is unavailable; nothing was written (Retry-After)"),
}
ADMIN_READ_ERRORS: Answers = {
    "HTTP_401": (
        Error,
        "a key is required (KGREC_ADMIN_KEYS, or KGREC_READ_REQUIRES_KEY, is set) and was missing or wrong",
    ),
    "HTTP_403": (Error, "the key is not an admin key (KGREC_ADMIN_KEYS is set): this read lists users"),
}
ERASE_ERRORS: Answers = {
    **WRITE_ERRORS,
    "HTTP_403": (
        Error,
        "the key is neither an erase key nor an admin key (KGREC_ADMIN_KEYS is set); nothing was done",
    ),
}
ADMIN_ERRORS: Answers = {
    **WRITE_ERRORS,
    "HTTP_403": (Error, "the key is not an admin key (KGREC_ADMIN_KEYS is set); nothing was done"),
}


def read_endpoint(
    bp: Blueprint,
    rule: str,
    ok: type[BaseModel],
    description: str,
    errors: Answers | None = None,
    lists_users: bool = False,
    **ids: str,
) -> Callable[[View], View]:
    """A GET view: open unless reads need a key; ``ok``, ``errors`` documented; ``ids`` describe path ids.

    ``lists_users``: it lists users or another user's history, so it needs an admin key once
    KGREC_ADMIN_KEYS is set (the document then gives it the ``admin`` role, :mod:`app.openapi`)."""

    def declare(view: View) -> View:
        scoped = ADMIN_READ_ERRORS if lists_users else {}
        answers = responses(ok, description, **{**READ_ERRORS, **scoped, **(errors or {})})
        documented = api.validate(resp=answers, path_parameter_descriptions=ids or None)(view)
        return bp.get(rule)((admin_read_access if lists_users else read_access)(documented))

    return declare


# Per scope of a write: its documented errors, its OpenAPI security (OpenAPI 3.1 lets a non-OAuth
# scheme list the roles an operation needs; requirements in a list are alternatives) and its declaration.
WRITE_SCOPES: dict[str, tuple[Answers, list[dict[str, list[str]]], Callable[[View], View]]] = {
    "write": (WRITE_ERRORS, [{"apiKey": []}], write_access),
    "erase": (ERASE_ERRORS, [{"apiKey": ["admin"]}, {"apiKey": ["erase"]}], erase_access),
    "admin": (ADMIN_ERRORS, [{"apiKey": ["admin"]}], admin_access),
}


def write_endpoint(
    bp: Blueprint,
    method: str,
    rule: str,
    ok: type[BaseModel],
    description: str,
    errors: Answers,
    body: type[BaseModel] | None = None,
    access: Access = "admin",
    **ids: str,
) -> Callable[[View], View]:
    """A view that changes data: it needs an API key, an admin key unless ``access`` is ``"write"``
    (what a storefront sends) or ``"erase"`` (an erase key may too); its JSON ``body``, answers and
    scope are documented."""
    scope_errors, security, declared = WRITE_SCOPES[access]

    def declare(view: View) -> View:
        documented = api.validate(
            json=body,
            resp=responses(ok, description, **{**scope_errors, **errors}),
            security=security,
            validation_error_status=422 if body else 400,
            path_parameter_descriptions=ids or None,
        )(view)
        return bp.route(rule, methods=[method])(declared(documented))

    return declare
