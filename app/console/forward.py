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

from flask import current_app
from werkzeug.test import Client


def api_path(*segments: str) -> str:
    """``/v1/a/b`` from segments, each percent-encoded (ids may hold ``/``)."""
    return "/v1/" + "/".join(quote(s, safe="") for s in segments)


def send(method: str, path: str, key: str | None, body: Any = None) -> tuple[int, str, bytes]:
    """Send ``method path`` to this app's API; returns the status, the media type and the body."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    headers = {"Authorization": f"Bearer {key}"} if key else {}

    def exchange() -> tuple[int, str, bytes]:
        response = Client(app.wsgi_app).open(
            path,
            method=method,
            headers=headers,
            json=body,
            environ_overrides={"RAW_URI": path, "REMOTE_ADDR": "127.0.0.1"},
        )
        try:  # a streamed body is produced here, still inside the request's own context
            return response.status_code, response.mimetype or "", response.get_data()
        finally:
            response.close()

    # An empty context: the API request gets its own app context and `g`, as a separate request would.
    # RAW_URI keeps encoded ids in one segment, as gunicorn's raw path does (app.raw_path).
    return contextvars.Context().run(exchange)


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
