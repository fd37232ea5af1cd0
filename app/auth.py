"""API keys: ``Authorization: Bearer <key>``, compared in constant time, never logged.

A view declares its access (:func:`read_access`, :func:`write_access`, :func:`admin_access`); it is
checked once, for every route, by :func:`install_access_control`, before the ids in its path are
decoded: a request without a key is a 401 whatever its path holds.

Admin scope: when ``KGREC_ADMIN_KEYS`` is set, only those keys may do what a storefront never needs
(erase a user, export an audience, change the catalogue, rules, experiments or models) and read what
lists users or another user's history (:func:`admin_read_access`: audiences, search, timelines, an
item's neighbourhood); another valid key gets a 403 naming the operation, and no key a 401 even
where reads are open. Unset, every API key is an admin key and those reads are reads (kgrec before
2026-12-07), which ``kgrec serve`` warns about.

Which key a read needs is decided in one place, :func:`read_key`, from the access its route declares
and the settings: the check here, the OpenAPI document's ``security`` (:mod:`app.openapi`) and the
console's choice of reading through its proxy (:mod:`app.console.views`) all ask it.

Erase scope: ``KGREC_ERASE_KEYS`` (only with admin keys) may erase users (:func:`erase_access`) as an
admin key may, and do nothing else an admin key does, for a storefront that erases on account deletion.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from flask import Flask, current_app, request

from app.errors import ApiError
from app.graph import settings
from kgrec.config import Settings

F = TypeVar("F", bound=Callable[..., Any])
Access = Literal["read", "admin_read", "write", "erase", "admin"]
# The key a read needs: none ("open": a client may still send one), any API key, or an admin key.
ReadKey = Literal["open", "key", "admin"]
READ_ACCESSES: tuple[Access, ...] = ("read", "admin_read")

# The attribute a view's declared access is kept in.
ACCESS_ATTRIBUTE = "kgrec_access"
# RFC 6750: a 401 names the scheme the client should use.
CHALLENGE = 'Bearer realm="kgrec"'


def _presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _one_of(presented: str, keys: tuple[str, ...]) -> bool:
    # Compare against every key so the time taken does not reveal which one matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    return matched


def key_is_valid(presented: str) -> bool:
    """Whether ``presented`` is one of the configured API keys, admin keys included (constant time)."""
    return _one_of(presented, settings().api_keys)


def key_is_admin(presented: str) -> bool:
    """Whether ``presented`` (a valid key) may do admin operations: every key while none is configured."""
    admin_keys = settings().admin_keys
    return not admin_keys or _one_of(presented, admin_keys)


def key_may_erase(presented: str) -> bool:
    """Whether ``presented`` (a valid key) may erase users: an admin key or an erase key."""
    # Both compared, so the time taken does not tell an admin key from an erase key.
    admin, eraser = key_is_admin(presented), _one_of(presented, settings().erase_keys)
    return admin or eraser


def route_template(rule: str) -> str:
    """A Flask rule as the OpenAPI document names its path: ``/v1/a/<b>`` → ``/v1/a/{b}``."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule)


def check_api_key() -> str:
    """The request's API key; a 401 ApiError (with ``WWW-Authenticate``) unless it is a configured one."""
    presented = _presented_key()
    if presented is None:
        raise ApiError(
            401,
            "unauthorized",
            "an API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": CHALLENGE},
        )
    if not key_is_valid(presented):
        current_app.logger.warning("request with an invalid API key refused")
        raise ApiError(
            401,
            "unauthorized",
            "the API key is not valid",
            headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'},
        )
    return presented


def _declare(view: F, access: Access) -> F:
    setattr(view, ACCESS_ATTRIBUTE, access)
    return view


def write_access(view: F) -> F:
    """Declare that the endpoint changes data and always needs an API key (any: a storefront's too)."""
    return _declare(view, "write")


def erase_access(view: F) -> F:
    """Declare an erasure: an erase or admin key when KGREC_ADMIN_KEYS is set, else any key."""
    return _declare(view, "erase")


def admin_access(view: F) -> F:
    """Declare an admin operation: it needs an admin key when KGREC_ADMIN_KEYS is set, else any key."""
    return _declare(view, "admin")


def read_access(view: F) -> F:
    """Declare a read: open unless KGREC_READ_REQUIRES_KEY is set."""
    return _declare(view, "read")


def admin_read_access(view: F) -> F:
    """Declare a read that lists users or another user's history: an admin key when KGREC_ADMIN_KEYS is
    set (open reads included), else a read like any other."""
    return _declare(view, "admin_read")


def read_key(access: Access, configured: Settings) -> ReadKey | None:
    """The key a read declared with ``access`` needs under ``configured`` (None: ``access`` is no read).

    A read that lists users needs an admin key once KGREC_ADMIN_KEYS is set, open reads included;
    any other read needs a key only with KGREC_READ_REQUIRES_KEY."""
    if access not in READ_ACCESSES:
        return None
    if access == "admin_read" and configured.admin_keys:
        return "admin"
    return "key" if configured.read_requires_key else "open"


def some_read_needs_a_key(configured: Settings) -> bool:
    """Whether any read needs a key under ``configured`` (then a signed-in console reads with its key)."""
    return any(read_key(access, configured) != "open" for access in READ_ACCESSES)


def declared_access(view: Callable[..., Any] | None) -> Access | None:
    """The access ``view`` was declared with (None: not an API endpoint, e.g. a probe or the console)."""
    return getattr(view, ACCESS_ATTRIBUTE, None)


def check_access(access: Access) -> None:
    """Raise the ApiError (401, or 403 for a key outside the admin or erase scope) a request lacking
    ``access`` gets."""
    read_needs = read_key(access, settings())
    if read_needs == "open":
        return
    presented = check_api_key()
    if read_needs == "admin" and not key_is_admin(presented):
        _refuse("admin", "an admin key (KGREC_ADMIN_KEYS)", "send events and read recommendations")
    if access == "admin" and not key_is_admin(presented):
        _refuse("admin", "an admin key (KGREC_ADMIN_KEYS)", "send events and read")
    if access == "erase" and not key_may_erase(presented):
        needed = "an erase key or an admin key (KGREC_ERASE_KEYS, KGREC_ADMIN_KEYS)"
        _refuse("erase", needed, "send events and read")


def _refuse(scope: str, needed: str, may: str) -> None:
    rule = request.url_rule.rule if request.url_rule else request.path
    operation = f"{request.method} {route_template(rule)}"
    current_app.logger.warning("%s refused: the key is not in its scope (%s)", operation, scope)
    raise ApiError(
        403,
        "forbidden",
        f"{operation} needs {needed}; this key may {may}",
        headers={"WWW-Authenticate": f'{CHALLENGE}, error="insufficient_scope", scope="{scope}"'},
    )


def install_access_control(app: Flask) -> None:
    """Check each API view's declared access before anything else reads the request.

    Installed before :func:`app.raw_path.install_raw_path_routing` (preprocessors run in the order
    they were added), so a request without a key is a 401 before its path ids are checked (400).
    """

    @app.url_value_preprocessor
    def _check(endpoint: str | None, _values: dict[str, Any] | None) -> None:
        # Flask answers OPTIONS itself, without the view: nothing to protect.
        if endpoint is None or request.method == "OPTIONS":
            return
        access = declared_access(app.view_functions.get(endpoint))
        if access is not None:
            check_access(access)
