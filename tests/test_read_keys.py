"""Which reads need a key, and which key: the OpenAPI document, the server and the console agree.

The three asked the settings each their own way (the check, ``_secure_reads`` and the console's
``keyed_reads``), so one could change alone. Here a real app (no graph: a read that gets past the
check answers 503) is asked, for every GET it documents, what the document says it needs, and the
answer without a key, with a storefront's key and with an admin key must match; a signed-in console
reads through its proxy exactly where some read needs a key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.auth import declared_access, route_template
from kgrec.config import Settings

SHOP, OPS = "shop-key", "ops-key"
CONSOLE = Path(__file__).resolve().parent.parent / "app" / "console"

# The three settings a read's key depends on: open reads, reads that need a key, admin keys alone.
CASES = {
    "no keys": {},
    "read keys required": {"read_requires_key": True},
    "admin keys only": {"admin_keys": (OPS,)},
}


def app_for(tmp_path: Path, overrides: dict[str, Any], redis_url: str | None = None) -> Flask:
    """The API app with a storefront's key and ``overrides`` (``redis_url``: the console's sessions)."""
    return create_app(Settings(data_dir=tmp_path / "var", api_keys=(SHOP,), redis_url=redis_url, **overrides))


def bearer(key: str) -> dict[str, str]:
    """The Authorization header for ``key``."""
    return {"Authorization": f"Bearer {key}"}


def signed_in_api_base(client: FlaskClient, key: str) -> str:
    """Sign the console in with ``key``; the API base its pages then read from."""
    page = client.get("/console/signin").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    signed_in = client.post(
        "/console/signin",
        data={"csrf_token": token.group(1), "api_key": key, "next": "/console/search"},
        headers={"Origin": "http://localhost"},
    )
    assert signed_in.status_code == 302, signed_in.get_data(as_text=True)[:300]
    base = re.search(r'data-api="([^"]+)"', client.get("/console/search").get_data(as_text=True))
    assert base is not None
    return base.group(1)


@pytest.mark.parametrize("case", CASES)
def test_every_reads_documented_security_is_what_the_server_enforces(
    tmp_path: Path, case: str, sessions_redis: str
) -> None:
    app = app_for(tmp_path, CASES[case], sessions_redis)
    client = app.test_client()
    document = client.get("/openapi.json").get_json()
    reads = {path: operations["get"] for path, operations in document["paths"].items() if "get" in operations}
    routes = {
        route_template(rule.rule)
        for rule in app.url_map.iter_rules()
        if "GET" in (rule.methods or ()) and declared_access(app.view_functions[rule.endpoint]) is not None
    }
    assert routes and routes <= set(reads), routes - set(reads)  # every API read is documented

    admin_key = OPS if CASES[case].get("admin_keys") else SHOP
    keyed = set()
    for path, operation in reads.items():
        url = re.sub(r"\{[^}]+\}", "x", path)
        security = operation.get("security", [{}])
        open_read, admin_only = {} in security, security == [{"apiKey": ["admin"]}]
        keyed |= {path} if not open_read else set()
        anonymous = client.get(url)
        assert (anonymous.status_code == 401) == (not open_read), (
            f"{path} {security}: {anonymous.status_code}"
        )
        storefront = client.get(url, headers=bearer(SHOP))
        assert storefront.status_code != 401, path
        assert (storefront.status_code == 403) == (admin_only and admin_key != SHOP), f"{path} {security}"
        admin = client.get(url, headers=bearer(admin_key))
        assert admin.status_code not in (401, 403), f"{path}: {admin.status_code}"
    # Each case exercises what it names: no keyed read, every read keyed, the reads that list users.
    if case == "no keys":
        assert not keyed, keyed
    elif case == "read keys required":
        assert keyed == routes, routes - keyed
    else:
        assert keyed and keyed < routes, keyed

    # A signed-in console reads through its proxy (which adds the key) exactly where some read needs one.
    assert signed_in_api_base(app.test_client(), admin_key) == ("/console/api/v1" if keyed else "/v1")
    assert 'data-api="/v1"' in app.test_client().get("/console/search").get_data(as_text=True)


def test_every_data_attribute_a_console_page_sets_is_read_by_its_scripts() -> None:
    """The base page set ``data-read-requires-key``, which no script read: the console decides by the
    API's 401 answers and by ``data-api``, so an unread attribute only misled."""
    scripts = "\n".join(path.read_text() for path in (CONSOLE / "static").glob("*.js"))
    set_in_pages = {
        name
        for template in (CONSOLE / "templates").rglob("*.html")
        for name in re.findall(r"\bdata-([a-z-]+)=", template.read_text())
    }
    assert set_in_pages
    for name in sorted(set_in_pages):
        camel = re.sub(r"-([a-z])", lambda m: m.group(1).upper(), name)
        assert f"dataset.{camel}" in scripts or f"data-{name}" in scripts, f"data-{name} is read by no script"
