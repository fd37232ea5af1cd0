"""How the API reads a URL: a bad id is a 400 that names the parameter and shows the value.

Real gunicorn on the session's small trained graph (``small_api``); the URLs are sent exactly
as written here.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any

import pytest

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
