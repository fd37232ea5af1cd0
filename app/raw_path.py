"""Ids in URL paths may contain "/": route on the raw (still percent-encoded) path.

A WSGI server decodes ``%2F`` into ``/`` before the application sees the path,
so ``/v1/users/a%2Fb/recommendations`` would no longer match its route.
Under gunicorn the raw request target is in ``RAW_URI``; routing on it keeps
every encoded id inside its own path segment, and the view arguments are
percent-decoded afterwards, as UTF-8 and strictly (:func:`app.params.percent_decoded`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from flask import Flask

from app.params import checked_path_id, percent_decoded

# View arguments that hold a path of the API, not one id (the console's read proxy), checked by
# their view with relayed_path.
RELAYED_PATHS = frozenset({"_rest"})
# Routes whose path ids may be any id the graph holds, not only one the id rule takes today: an
# erasure, a rule's deletion and an item's delisting must reach what was stored before the rule
# refused lookalikes (kgrec.limits.stored_id_problem), or it could never be removed.
STORED_ID_ROUTES = frozenset({"users.erase_user", "rules.delete_rule", "catalogue.delete_item"})

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class RawPathMiddleware:
    """Replace PATH_INFO with the raw path for the versioned API and the console's pages (whose
    ids would otherwise be percent-decoded twice: by the server, then by the app)."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        if raw:
            path = raw.split("?", 1)[0]
            if path.startswith(("/v1/", "/console/")):
                environ["PATH_INFO"] = path
        return self.app(environ, start_response)


def install_raw_path_routing(app: Flask) -> None:
    """Route on raw paths; percent-decode and check (400) the ids the routes capture against the id rule."""
    app.wsgi_app = RawPathMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    app.url_map.merge_slashes = False

    @app.url_value_preprocessor
    def _decode_ids(_endpoint: str | None, values: dict[str, Any] | None) -> None:
        # Every id in a path is decoded and checked here, once, before any view runs. A relayed path
        # is checked by its view (relayed_path), after the view's own sign-in check: a signed-out
        # request learns nothing about the id rule, as the API's access check before this ensures.
        stored = _endpoint in STORED_ID_ROUTES
        for name, value in (values or {}).items():
            if isinstance(value, str) and name not in RELAYED_PATHS:
                decoded = percent_decoded(value, name)
                values[name] = checked_path_id(name, decoded, stored=stored)  # type: ignore[index]


def relayed_path(value: str, name: str = "_rest") -> str:
    """An API path relayed as it is (the console's read proxy), each segment decoded and checked as an
    id (a 400 ApiError naming ``name`` otherwise), and encoded again; the whole may be longer than one id."""
    segments = (checked_path_id(name, percent_decoded(s, name)) for s in value.split("/"))
    return "/".join(quote(s, safe="") for s in segments)
