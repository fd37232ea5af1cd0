"""The console's sign-in session without a browser: origin checks behind a proxy, the cookie's
lifetime, and the read proxy's answer (the Flask app, no graph needed until a read reaches it)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from flask import Flask, Response
from flask.testing import FlaskClient

from app import create_app
from app.console import session
from kgrec.config import Settings

KEY = "console-session-key"


def console_app(tmp_path: Path, **overrides: object) -> Flask:
    """The API app with one key and the given settings."""
    return create_app(Settings(data_dir=tmp_path / "var", api_keys=(KEY,), **overrides))  # type: ignore[arg-type]


def csrf(client: FlaskClient, **environ: str) -> str:
    """The sign-in form's CSRF token (the form sets the session cookie too)."""
    page = client.get("/console/signin", environ_overrides=environ)
    assert page.status_code == 200
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.get_data(as_text=True))
    assert found is not None
    return found.group(1)


def sign_in(client: FlaskClient, origin: str, **environ: str) -> tuple[int, str]:
    """POST the sign-in form as a browser at ``origin``; the status and the Set-Cookie header."""
    token = csrf(client, **environ)
    response = client.post(
        "/console/signin",
        data={"csrf_token": token, "api_key": KEY, "next": "/console/models"},
        headers={"Origin": origin},
        environ_overrides=environ,
    )
    return response.status_code, response.headers.get("Set-Cookie", "")


# What gunicorn hands the app behind a TLS proxy on the Docker bridge: X-Forwarded-Proto is not
# trusted from there, so the request reads http://, and the proxy may send its upstream's Host.
BEHIND_PROXY = {"wsgi.url_scheme": "http", "HTTP_HOST": "api:8000"}


def test_behind_a_tls_proxy_sign_in_works_from_the_public_origin_only(tmp_path: Path) -> None:
    app = console_app(tmp_path, public_url="https://shop.example")
    status, cookie = sign_in(app.test_client(), "https://shop.example", **BEHIND_PROXY)
    assert status == 302
    assert f"{session.COOKIE}=" in cookie and "; Secure" in cookie and "HttpOnly" in cookie
    for foreign in ("https://evil.example", "http://shop.example", "http://api:8000"):
        status, cookie = sign_in(app.test_client(), foreign, **BEHIND_PROXY)
        assert status == 403, foreign
        assert f"{session.COOKIE}=" not in cookie or "Secure" in cookie


def test_without_a_public_url_the_request_is_the_origin(tmp_path: Path) -> None:
    app = console_app(tmp_path)
    status, cookie = sign_in(app.test_client(), "http://localhost", HTTP_HOST="localhost")
    assert status == 302 and "Secure" not in cookie  # plain HTTP on this machine: no Secure cookie
    status, _ = sign_in(app.test_client(), "https://shop.example", HTTP_HOST="localhost")
    assert status == 403


@pytest.mark.parametrize(
    ("value", "origin"),
    [
        ("https://Shop.Example", "https://shop.example"),
        ("https://shop.example:443/", "https://shop.example"),
        ("http://console.internal:8080", "http://console.internal:8080"),
        ("", None),
    ],
)
def test_the_public_url_is_read_as_an_origin(value: str, origin: str | None) -> None:
    assert Settings.from_env({"KGREC_PUBLIC_URL": value}).public_url == origin


@pytest.mark.parametrize(
    "value",
    ["shop.example", "https://shop.example/console", "ftp://shop.example", "https://h:99999", "https://"],
)
def test_a_public_url_that_is_not_an_origin_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ValueError) as refused:
        Settings.from_env({"KGREC_PUBLIC_URL": value})
    assert str(refused.value).startswith("KGREC_PUBLIC_URL must be an origin")
    assert repr(value) in str(refused.value)


def signed_in(client: FlaskClient) -> bool:
    """Whether the console's pages say this client is signed in."""
    return 'data-signed-in="true"' in client.get("/console/search").get_data(as_text=True)


def test_a_session_ends_12_hours_after_sign_in_even_while_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every re-save re-signed the cookie with a fresh timestamp, so a session (or a copied cookie)
    in use never expired; the 12 hours now count from the sign-in."""
    clock = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])  # the session's clock and itsdangerous's
    client = console_app(tmp_path).test_client()
    status, _ = sign_in(client, "http://localhost")
    assert status == 302 and signed_in(client)
    clock[0] += 6 * 3600
    set_notice_and_resave(client)
    clock[0] += 5 * 3600  # 11 h after the sign-in, 5 h after the last re-save
    assert signed_in(client)
    set_notice_and_resave(client)
    clock[0] += 1.5 * 3600  # 12.5 h after the sign-in, 1.5 h after the last re-save
    assert not signed_in(client)
    status, _ = sign_in(client, "http://localhost")  # typing the key again starts a new 12 h
    assert status == 302 and signed_in(client)


def set_notice_and_resave(client: FlaskClient) -> None:
    """What every console form does after its API call (a notice for the next page): the session is
    written again, as the form's response would write it, and the browser keeps the new cookie."""
    app: Flask = client.application
    cookie = client.get_cookie(session.COOKIE, path="/console")
    assert cookie is not None
    with app.test_request_context(
        "/console/models/train",
        method="POST",
        headers={"Cookie": f"{session.COOKIE}={cookie.value}"},
    ):
        session.set_notice("Train failed (503): no detail")
        written = session.save(Response())
    value = written.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]
    client.set_cookie(session.COOKIE, value, path="/console")


def signed_in_reader(tmp_path: Path) -> FlaskClient:
    """A console signed in on a server whose reads need a key, with no graph server running: every
    read the proxy relays is the API's 503 graph_unavailable, with Retry-After."""
    client = console_app(tmp_path, read_requires_key=True).test_client()
    status, _ = sign_in(client, "http://localhost")
    assert status == 302
    return client


def test_the_read_proxy_answers_as_the_api_did_retry_after_included(tmp_path: Path) -> None:
    """It answered jsonify(payload) and the status only: the Models page's job following had no
    Retry-After to wait for."""
    client = signed_in_reader(tmp_path)
    direct = client.get("/v1/jobs/j1", headers={"Authorization": f"Bearer {KEY}"})
    relayed = client.get("/console/api/v1/jobs/j1")
    assert direct.status_code == relayed.status_code == 503
    assert relayed.headers["Retry-After"] == direct.headers["Retry-After"]
    assert relayed.get_json() == direct.get_json() and relayed.mimetype == "application/json"


def test_the_read_proxy_checks_its_path_by_segment_not_as_one_id(tmp_path: Path) -> None:
    """A user page's reads for a 250-character id were refused (400: "_rest is longer than 256
    characters") before reaching the API."""
    client = signed_in_reader(tmp_path)
    long_id = "u" * 250
    relayed = client.get(f"/console/api/v1/users/{long_id}/interests")
    assert relayed.status_code == 503, relayed.get_json()  # reached the API (whose graph is down)
    too_long = client.get(f"/console/api/v1/users/{'u' * 257}/interests")
    assert too_long.status_code == 400 and too_long.get_json()["field"] == "_rest"


def test_a_cross_site_train_post_is_refused_before_its_epochs_are_read(tmp_path: Path) -> None:
    """``int(epochs)`` ran before the origin check: a cross-site post of 5000 digits was a 500 with
    a traceback (Python refuses to convert over 4300 digits); now the origin check answers first."""
    client = console_app(tmp_path).test_client()
    status, _ = sign_in(client, "http://localhost")
    assert status == 302
    response = client.post(
        "/console/models/train", data={"epochs": "9" * 5000}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert "cross-site" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        (
            "9" * 5000,
            "epochs = 99999999999999999999... (5000 characters): input should be less than or equal to 500",
        ),
        ("0", "epochs = 0: input should be greater than or equal to 1"),
        ("501", "epochs = 501: input should be less than or equal to 500"),
        ("ten", "epochs = ten is not a whole number"),
    ],
)
def test_an_epoch_cap_out_of_the_apis_bounds_is_refused_naming_field_and_value(
    tmp_path: Path, typed: str, shown: str
) -> None:
    """The console's own post with a bad epoch cap: a notice naming ``epochs`` and what was typed,
    with the API's bounds (TrainRequest's), and no job queued."""
    client = console_app(tmp_path).test_client()
    status, _ = sign_in(client, "http://localhost")
    assert status == 302
    token = csrf(client)
    response = client.post(
        "/console/models/train",
        data={"epochs": typed, "csrf_token": token},
        headers={"Origin": "http://localhost"},
    )
    assert response.status_code == 302 and "job=" not in response.headers["Location"]
    page = client.get("/console/models").get_data(as_text=True)
    assert f"Train refused: {shown}" in page
