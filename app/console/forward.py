"""The console's writes go through the public API: the same request any client sends, inside this app.

The browser cannot add ``Authorization`` (the key never reaches it), so the
console's form handler sends the API request itself, through the app's own WSGI
stack (routing, validation, auth, metrics), with the signed-in key.
"""

from __future__ import annotations

import contextvars
import json
from typing import Any
from urllib.parse import quote

from flask import Response, current_app
from werkzeug.datastructures import Headers
from werkzeug.test import Client


def api_path(*segments: str) -> str:
    """``/v1/a/b`` from segments, each percent-encoded (ids may hold ``/``)."""
    return "/v1/" + "/".join(quote(s, safe="") for s in segments)


# The API's answer headers a relayed read keeps: the Models page waits for Retry-After.
RELAYED_HEADERS = ("Retry-After", "Cache-Control", "Content-Disposition")


def send(method: str, path: str, key: str | None, body: Any = None) -> tuple[int, str, bytes]:
    """Send ``method path`` to this app's API; returns the status, the media type and the body."""
    status, mimetype, data, _ = exchange(method, path, key, body)
    return status, mimetype, data


def relay(path: str, key: str | None) -> Response:
    """A GET of this app's API, answered as the API answered it: status, body, media type and the
    headers a client acts on (:data:`RELAYED_HEADERS`)."""
    status, mimetype, data, headers = exchange("GET", path, key)
    kept = {name: headers[name] for name in RELAYED_HEADERS if name in headers}
    return Response(data, status=status, mimetype=mimetype or None, headers=kept)


def exchange(method: str, path: str, key: str | None, body: Any = None) -> tuple[int, str, bytes, Headers]:
    """Send ``method path`` to this app's API; the status, media type, body and headers."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    def answer() -> tuple[int, str, bytes, Headers]:
        response = Client(app.wsgi_app).open(
            path,
            method=method,
            headers=headers,
            json=body,
            environ_overrides={"RAW_URI": path, "REMOTE_ADDR": "127.0.0.1"},
        )
        try:  # a streamed body is produced here, still inside the request's own context
            return response.status_code, response.mimetype or "", response.get_data(), response.headers
        finally:
            response.close()

    # An empty context: the API request gets its own app context and `g`, as a separate request would.
    # RAW_URI keeps encoded ids in one segment, as gunicorn's raw path does (app.raw_path).
    return contextvars.Context().run(answer)


def decoded(data: bytes) -> Any:
    """An answer's JSON, or None when it is not JSON."""
    try:
        return json.loads(data or b"null")
    except ValueError:
        return None


def call_api(method: str, path: str, key: str | None, body: Any = None) -> tuple[int, Any]:
    """Send ``method path`` to this app's API; returns the status and the decoded JSON (or None)."""
    status, _, data = send(method, path, key, body)
    return status, decoded(data)
