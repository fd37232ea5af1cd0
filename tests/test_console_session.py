"""The console's sign-in session without a browser: origin checks behind a proxy, the cookie's
lifetime, and the read proxy's answer (the Flask app, no graph needed until a read reaches it, but
a real Redis for the sessions' nonces); sign-out and Redis outages under gunicorn."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask, Response
from flask.testing import FlaskClient

from app import create_app
from app.console import session
from app.impressions import impression_store
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from tests.processes import ApiProcess, free_port

KEY = "console-session-key"


def console_app(tmp_path: Path, redis_url: str, **overrides: object) -> Flask:
    """The API app with one key, the given settings, and ``redis_url`` for its sessions."""
    settings = Settings(data_dir=tmp_path / "var", api_keys=(KEY,), redis_url=redis_url, **overrides)  # type: ignore[arg-type]
    return create_app(settings)


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


def test_behind_a_tls_proxy_sign_in_works_from_the_public_origin_only(
    tmp_path: Path, sessions_redis: str
) -> None:
    app = console_app(tmp_path, sessions_redis, public_url="https://shop.example")
    status, cookie = sign_in(app.test_client(), "https://shop.example", **BEHIND_PROXY)
    assert status == 302
    assert f"{session.COOKIE}=" in cookie and "; Secure" in cookie and "HttpOnly" in cookie
    for foreign in ("https://evil.example", "http://shop.example", "http://api:8000"):
        status, cookie = sign_in(app.test_client(), foreign, **BEHIND_PROXY)
        assert status == 403, foreign
        assert f"{session.COOKIE}=" not in cookie or "Secure" in cookie


def test_without_a_public_url_the_request_is_the_origin(tmp_path: Path, sessions_redis: str) -> None:
    app = console_app(tmp_path, sessions_redis)
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
    tmp_path: Path, sessions_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every re-save re-signed the cookie with a fresh timestamp, so a session (or a copied cookie)
    in use never expired; the 12 hours now count from the sign-in."""
    clock = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])  # the session's clock and itsdangerous's
    client = console_app(tmp_path, sessions_redis).test_client()
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


def signed_in_reader(tmp_path: Path, redis_url: str) -> FlaskClient:
    """A console signed in on a server whose reads need a key, with no graph server running: every
    graph read the proxy relays is the API's 503 graph_unavailable, with Retry-After (the job queue
    answers: it is on the sessions' Redis)."""
    client = console_app(tmp_path, redis_url, read_requires_key=True).test_client()
    status, _ = sign_in(client, "http://localhost")
    assert status == 302
    return client


def test_the_read_proxy_answers_as_the_api_did_retry_after_included(
    tmp_path: Path, sessions_redis: str
) -> None:
    """It answered jsonify(payload) and the status only: the Models page's job following had no
    Retry-After to wait for."""
    client = signed_in_reader(tmp_path, sessions_redis)
    direct = client.get("/v1/items/i1", headers={"Authorization": f"Bearer {KEY}"})
    relayed = client.get("/console/api/v1/items/i1")
    assert direct.status_code == relayed.status_code == 503
    assert relayed.headers["Retry-After"] == direct.headers["Retry-After"]
    assert relayed.get_json() == direct.get_json() and relayed.mimetype == "application/json"


def test_the_read_proxy_checks_its_path_by_segment_not_as_one_id(tmp_path: Path, sessions_redis: str) -> None:
    """A user page's reads for a 250-character id were refused (400: "_rest is longer than 256
    characters") before reaching the API."""
    client = signed_in_reader(tmp_path, sessions_redis)
    long_id = "u" * 250
    relayed = client.get(f"/console/api/v1/users/{long_id}/interests")
    assert relayed.status_code == 503, relayed.get_json()  # reached the API (whose graph is down)
    too_long = client.get(f"/console/api/v1/users/{'u' * 257}/interests")
    assert too_long.status_code == 400 and too_long.get_json()["field"] == "_rest"


def test_a_cross_site_train_post_is_refused_before_its_epochs_are_read(
    tmp_path: Path, sessions_redis: str
) -> None:
    """``int(epochs)`` ran before the origin check: a cross-site post of 5000 digits was a 500 with
    a traceback (Python refuses to convert over 4300 digits); now the origin check answers first."""
    client = console_app(tmp_path, sessions_redis).test_client()
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
    tmp_path: Path, sessions_redis: str, typed: str, shown: str
) -> None:
    """The console's own post with a bad epoch cap: a notice naming ``epochs`` and what was typed,
    with the API's bounds (TrainRequest's), and no job queued."""
    client = console_app(tmp_path, sessions_redis).test_client()
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


# --- sign-out and Redis outages, under gunicorn ----------------------------------------------------


@pytest.fixture
def console_api(
    settings: Settings, graph_server: EmbeddedServer | None, tmp_path: Path
) -> Iterator[ApiProcess]:
    """gunicorn with one key on the test session's servers, in a graph (a key prefix) of its own."""
    env = {"KGREC_DATA_DIR": str(settings.data_dir), "KGREC_GRAPH": f"console_{uuid.uuid4().hex[:10]}"}
    api = ApiProcess({**env, "KGREC_API_KEYS": KEY}, log=tmp_path / "api.log").start()
    api.settings = Settings.from_env(
        {**env, **({"REDIS_URL": settings.redis_url} if settings.redis_url else {})}
    )  # type: ignore[attr-defined]
    try:
        yield api
    finally:
        api.stop()


def signed_in_http(api: ApiProcess) -> requests.Session:
    """A requests session signed in through the form at ``api``."""
    browser = requests.Session()
    found = re.search(
        r'name="csrf_token" value="([^"]+)"', browser.get(f"{api.url}/console/signin", timeout=30).text
    )
    assert found is not None
    answer = browser.post(
        f"{api.url}/console/signin",
        data={"csrf_token": found.group(1), "api_key": KEY, "next": "/console/models"},
        headers={"Origin": api.url},
        timeout=30,
    )
    assert answer.status_code == 200 and 'data-signed-in="true"' in answer.text
    return browser


def copy_of(browser: requests.Session) -> requests.Session:
    """Another client holding the same console cookie."""
    thief = requests.Session()
    thief.cookies.set(session.COOKIE, browser.cookies[session.COOKIE], path="/console")
    return thief


def session_keys(settings: Settings) -> dict[str, int]:
    """The console's session keys in kgrec's Redis, with their TTLs (seconds)."""
    with create_app(settings).app_context():
        pattern = session.nonce_key("*")
        return impression_store().run(
            lambda client: {k.decode(): client.ttl(k) for k in client.scan_iter(pattern)}
        )


def test_a_session_is_kept_in_redis_for_its_lifetime_and_works_until_sign_out(
    console_api: ApiProcess,
) -> None:
    """The cookie alone was the session: nothing on the server to end it."""
    before = session_keys(console_api.settings)  # type: ignore[attr-defined]
    browser = signed_in_http(console_api)
    added = {k: ttl for k, ttl in session_keys(console_api.settings).items() if k not in before}  # type: ignore[attr-defined]
    assert (
        len(added) == 1 and session.SESSION_AGE_S - 60 < next(iter(added.values())) <= session.SESSION_AGE_S
    )
    copied = copy_of(browser)
    for client in (browser, copied):
        page = client.get(f"{console_api.url}/console/models", timeout=30)
        assert page.status_code == 200 and 'data-signed-in="true"' in page.text


def test_sign_out_ends_every_copy_of_the_cookie(console_api: ApiProcess) -> None:
    """A cookie copied before sign-out stayed signed in (its forms accepted) for up to 12 hours."""
    browser = signed_in_http(console_api)
    copied = copy_of(browser)
    page = copied.get(f"{console_api.url}/console/models", timeout=30).text
    token = re.search(r'(?:name="csrf_token" value|data-csrf)="([^"]+)"', page)
    assert token is not None and 'data-signed-in="true"' in page
    out = browser.post(
        f"{console_api.url}/console/signout",
        data={"csrf_token": token.group(1)},
        headers={"Origin": console_api.url},
        timeout=30,
    )
    assert out.status_code == 200 and "Signed out." in out.text
    page = copied.get(f"{console_api.url}/console/models", timeout=30)
    assert page.status_code == 200 and 'data-signed-in="false"' in page.text
    train = copied.post(
        f"{console_api.url}/console/models/train",
        data={"csrf_token": token.group(1), "epochs": "1"},
        headers={"Origin": console_api.url},
        timeout=30,
    )
    # As for an expired session: signed out, with a fresh CSRF token, so the copy's token is stale.
    assert train.status_code == 403 and "CSRF token is missing or stale" in train.text


def test_a_signed_in_cookie_is_refused_when_redis_cannot_be_asked(
    console_api: ApiProcess, tmp_path: Path
) -> None:
    """A server whose Redis is away (nothing listens on its port) cannot tell a live session from a
    signed-out one: it answers 503 and keeps the cookie, instead of trusting it."""
    cookie = signed_in_http(console_api).cookies[session.COOKIE]
    away = {"KGREC_DATA_DIR": str(tmp_path / "away"), "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    api = ApiProcess({**away, "KGREC_API_KEYS": KEY}, log=tmp_path / "away.log").start()
    try:
        client = requests.Session()
        client.cookies.set(session.COOKIE, cookie, path="/console")
        page = client.get(f"{api.url}/console/models", timeout=60)
        assert page.status_code == 503 and "kgrec&#39;s Redis is unavailable" in page.text
        assert 'data-signed-in="true"' not in page.text and "Set-Cookie" not in page.headers
        signed_out = requests.get(
            f"{api.url}/console/models", timeout=60
        )  # no session: read-only pages still open
        assert signed_out.status_code == 200 and 'data-signed-in="false"' in signed_out.text
    finally:
        api.stop()


def test_two_sign_ins_from_one_cookie_share_one_nonce_so_sign_out_ends_both(
    tmp_path: Path, sessions_redis: str
) -> None:
    """Two sign-in posts carrying the same cookie (a double submit, or a retry after a lost answer)
    each stored a nonce of their own; the browser keeps one answer's cookie, so signing out with it
    left the other nonce in Redis for 12 hours, and a copy of the other answer's cookie signed in.
    With the nonce derived from the cookie, a post of that cookie after the sign-out must not sign
    the ended answers in again."""
    app = console_app(tmp_path, sessions_redis)
    client = app.test_client()
    token = csrf(client)
    before_sign_in = client.get_cookie(session.COOKIE, path="/console")
    assert before_sign_in is not None
    with app.app_context():
        before = set(impression_store().run(lambda redis: list(redis.scan_iter(session.nonce_key("*")))))
    answers = []
    for _ in range(2):  # the second post carries the cookie the first was sent with, as a browser's would
        client.set_cookie(session.COOKIE, before_sign_in.value, path="/console")
        posted = client.post(
            "/console/signin",
            data={"csrf_token": token, "api_key": KEY, "next": "/console/models"},
            headers={"Origin": "http://localhost"},
        )
        assert posted.status_code == 302
        answer = client.get_cookie(session.COOKIE, path="/console")
        assert answer is not None and signed_in(client)
        answers.append(answer.value)
    page = client.get("/console/models").get_data(as_text=True)  # the browser kept the second answer
    found = re.search(r'(?:name="csrf_token" value|data-csrf)="([^"]+)"', page)
    assert found is not None
    out = client.post(
        "/console/signout", data={"csrf_token": found.group(1)}, headers={"Origin": "http://localhost"}
    )
    assert out.status_code == 302
    client.set_cookie(session.COOKIE, answers[0], path="/console")  # a copy of the first answer's cookie
    assert not signed_in(client)
    with app.app_context():
        after = impression_store().run(
            lambda redis: {
                k: redis.get(k) for k in redis.scan_iter(session.nonce_key("*")) if k not in before
            }
        )
    assert list(after.values()) == [session.ENDED]  # one nonce, ended: none left signed in for 12 hours
    # A third post of the cookie from before the sign-in, arriving after the sign-out (a stalled
    # retry): it signs in its own answer, but the answers signed out stay signed out.
    client.set_cookie(session.COOKIE, before_sign_in.value, path="/console")
    late = client.post(
        "/console/signin",
        data={"csrf_token": token, "api_key": KEY, "next": "/console/models"},
        headers={"Origin": "http://localhost"},
    )
    assert late.status_code == 302 and signed_in(client)
    for answer in answers:
        client.set_cookie(session.COOKIE, answer, path="/console")
        assert not signed_in(client)
