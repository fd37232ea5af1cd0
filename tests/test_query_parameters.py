"""How the API reads a URL: each query parameter once, only the endpoint's own, every value in
its type's JSON grammar, and every id percent-decoded one way (UTF-8); anything else is a 400
that names the parameter and shows the value as it was sent.

Real gunicorn on the session's small trained graph (``small_api``); the URLs are sent exactly
as written here.
"""

from __future__ import annotations

import http.client
import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import pytest
import requests

from tests.processes import ApiProcess


@dataclass
class Answer:
    status_code: int
    text: str

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.text)


def get(api: ApiProcess, target: str) -> Answer:
    """GET ``target`` (path and query) from the API byte for byte: requests (urllib3) would send
    a lone "%" as "%25"."""
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return Answer(response.status, response.read().decode())
    finally:
        connection.close()


def refusal(response: Answer) -> tuple[int, str | None, str]:
    """(status, field, detail) of an answer."""
    body = response.json()
    return response.status_code, body.get("field"), body.get("detail", "")


@pytest.fixture(scope="module")
def item(small_api: ApiProcess) -> str:
    """An item the model knows (the first a newcomer is recommended)."""
    return get(small_api, "/v1/users/newcomer/recommendations?k=1").json()["items"][0]["item_id"]


RECOMMENDATIONS = "/v1/users/u1/recommendations"


@pytest.mark.parametrize(
    ("target", "field", "shown"),
    [
        (f"{RECOMMENDATIONS}?k=5&k=7", "k", "'5', '7'"),
        (f"{RECOMMENDATIONS}?exclude=none&exclude=seen", "exclude", "'none', 'seen'"),
        ("/v1/users/u1/recommendations/i1/explanation?max_paths=1&max_paths=1", "max_paths", "2 times"),
    ],
)
def test_a_repeated_parameter_is_refused_naming_it(
    small_api: ApiProcess, target: str, field: str, shown: str
) -> None:
    status, named, detail = refusal(get(small_api, target))
    assert (status, named) == (400, field) and shown in detail and "give it once" in detail


@pytest.mark.parametrize(
    ("query", "field"), [("offset=5", "offset"), ("explain=true", "explain"), ("exclude=none", "exclude")]
)
def test_a_parameter_the_endpoint_does_not_take_is_refused(
    small_api: ApiProcess, item: str, query: str, field: str
) -> None:
    """Paging similar items with ``offset`` used to answer page 1 again: duplicates, silently."""
    status, named, detail = refusal(get(small_api, f"/v1/items/{item}/similar?k=3&{query}"))
    assert (status, named) == (400, field)
    assert detail == f"{field} is not a parameter of this endpoint (got {query.split('=')[1]!r})"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("k=05", "k"),
        ("k=%205", "k"),
        ("k=5%20", "k"),
        ("k=+5", "k"),
        ("k=5.0", "k"),
        ("k=", "k"),
        ("max_per_brand=1_0", "max_per_brand"),
        ("min_price=1_0", "min_price"),
        ("min_price=.5", "min_price"),
        ("max_price=inf", "max_price"),
        ("max_price=NaN", "max_price"),
        ("explain=1", "explain"),
        ("explain=yes", "explain"),
        ("explain=TRUE", "explain"),
        ("explain=on", "explain"),
        ("explain=", "explain"),
    ],
)
def test_numbers_and_booleans_are_read_in_one_grammar(small_api: ApiProcess, query: str, field: str) -> None:
    status, named, detail = refusal(get(small_api, f"{RECOMMENDATIONS}?{query}"))
    value = unquote(query.split("=")[1]).replace("+", " ")
    assert (status, named) == (400, field) and detail.endswith(f", not {value!r}"), detail


def test_values_in_the_grammar_are_read(small_api: ApiProcess) -> None:
    page = get(small_api, f"{RECOMMENDATIONS}?k=3&offset=0&min_price=0.5&max_price=1e3&explain=false")
    assert page.status_code == 200, page.text
    assert page.json()["k"] == 3 and page.json()["filters"] == {"min_price": 0.5, "max_price": 1000.0}
    # An empty filter is no filter (an HTML form sends empty fields).
    empty = get(small_api, f"{RECOMMENDATIONS}?k=3&brand=&min_price=&max_per_brand=&explain=true")
    assert empty.status_code == 200 and empty.json()["filters"] == {}, empty.text


# target -> (the parameter, its text as sent)
UNDECODABLE = {
    "/v1/users/%FF/recommendations": ("user_id", "%FF"),
    "/v1/users/a%C3%28b/recommendations": ("user_id", "a%C3%28b"),
    "/v1/users/u1/recommendations?brand=%FF": ("brand", "%FF"),
    "/v1/users/u1/recommendations?category=%C3%28": ("category", "%C3%28"),
    "/v1/users/50%zz/recommendations": ("user_id", "50%zz"),
    "/v1/users/u1/recommendations?brand=100%": ("brand", "100%"),
}


@pytest.mark.parametrize("target", UNDECODABLE)
def test_text_that_does_not_decode_as_utf8_is_refused_as_sent(small_api: ApiProcess, target: str) -> None:
    """Different bad bytes used to collapse into one id (U+FFFD) in a path and stay literal in a query."""
    field, raw = UNDECODABLE[target]
    status, named, detail = refusal(get(small_api, target))
    assert (status, named) == (400, field) and f"(got {raw!r})" in detail, detail


def test_an_invalid_user_id_of_similar_items_is_refused_as_sent(small_api: ApiProcess, item: str) -> None:
    status, named, detail = refusal(get(small_api, f"/v1/items/{item}/similar?user_id=%FF"))
    assert (status, named) == (400, "user_id") and "(got '%FF')" in detail


def test_an_escaped_percent_sign_is_part_of_the_id(small_api: ApiProcess) -> None:
    user = f"50%41off-{uuid.uuid4().hex[:6]}"  # "%41" is text here, not an escaped "A"
    encoded = user.replace("%", "%25")
    page = get(small_api, f"/v1/users/{encoded}/recommendations?k=1")
    assert page.status_code == 200 and page.json()["user_id"] == user, page.text
    # The console's pages decode an id once too (the server used to decode it, then the app again).
    console = get(small_api, f"/console/users/{encoded}")
    assert console.status_code == 200 and f"User {user}" in console.text


@pytest.mark.parametrize(
    ("target", "field", "detail"),
    [
        (
            "/v1/users/a%00b/recommendations",
            "user_id",
            "user_id must not contain control characters (got 'a\\x00b')",
        ),
        (
            "/v1/users/%E2%80%A8/recommendations",
            "user_id",
            "user_id is blank: white space only (got '\\u2028')",
        ),
        (
            "/v1/users/u1/recommendations?category=%E2%80%A8",
            "category",
            "category is blank: white space only (got '\\u2028')",
        ),
        ("/v1/users/u1/recommendations?brand=%20", "brand", "brand is blank: white space only (got ' ')"),
    ],
)
def test_an_id_error_shows_the_id_in_a_path_as_in_a_query(
    small_api: ApiProcess, target: str, field: str, detail: str
) -> None:
    assert refusal(get(small_api, target)) == (400, field, detail)


def test_what_gunicorn_refuses_before_the_app_is_json_too(small_api: ApiProcess) -> None:
    """A request line over gunicorn's limit_request_line, or a header over its field size, never
    reaches the app; gunicorn's answer used to be an HTML page."""
    line = requests.get(f"{small_api.url}{RECOMMENDATIONS}", params={"brand": "b" * 9_000}, timeout=30)
    header = requests.get(f"{small_api.url}{RECOMMENDATIONS}", headers={"X-Big": "h" * 9_000}, timeout=30)
    for answer, status, error in (
        (line, 414, "uri_too_long"),
        (header, 431, "request_header_fields_too_large"),
    ):
        assert answer.status_code == status and answer.headers["Content-Type"] == "application/json"
        assert answer.json()["error"] == error and answer.json()["detail"], answer.text


NO_QUERY_PARAMETERS = [
    "/v1/models",
    "/v1/rules",
    "/v1/queue",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
]


@pytest.mark.parametrize("path", NO_QUERY_PARAMETERS)
def test_an_operation_that_lists_no_query_parameters_takes_none(small_api: ApiProcess, path: str) -> None:
    """These used to ignore their query string: a misspelt parameter answered as if it were not there."""
    assert refusal(get(small_api, f"{path}?limit=5")) == (
        400,
        "limit",
        "limit is not a parameter of this endpoint (got '5')",
    )
    assert refusal(get(small_api, f"{path}?x=%FF"))[:2] == (400, "x")
    # HEAD runs the GET operation: refused the same way (an answer without a body).
    connection = http.client.HTTPConnection("127.0.0.1", small_api.port, timeout=30)
    try:
        connection.request("HEAD", f"{path}?limit=5")
        assert connection.getresponse().status == 400
    finally:
        connection.close()


def test_every_operation_documents_its_refusal_of_query_parameters(small_api: ApiProcess) -> None:
    document = json.loads(get(small_api, "/openapi.json").text)
    undocumented = [
        f"{method} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if "400" not in operation["responses"]
    ]
    assert undocumented == []


@pytest.mark.parametrize(
    "target",
    [
        "/docs?x=1",
        "/docs/static/swagger-ui.css?v=2",
        "/console/static/console.js?v=2",
        "/console/models?job=j1",
    ],
)
def test_pages_and_files_outside_the_api_take_a_query_string(small_api: ApiProcess, target: str) -> None:
    """Only the operations of /openapi.json read the query string strictly; a page or a file may
    be fetched with a cache-busting parameter."""
    assert get(small_api, target).status_code == 200
