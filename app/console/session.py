"""The console's sign-in: a signed, HttpOnly, SameSite=Strict cookie, and the checks on every POST.

The cookie never holds the API key itself: after the key is checked it holds a
fingerprint of it (SHA-256, shortened) and a CSRF token, signed with a secret
derived from every configured key. The server finds the key again by its
fingerprint when it forwards a write to the API, so a copied cookie expires with
the session (``SESSION_AGE_S`` after the key was typed, however often the cookie is re-signed
meanwhile) and dies when the keys change, and the key is never in a URL, a page or the
browser's storage.

Each sign-in also keeps a nonce in kgrec's Redis (the impression store's, under its
``kgrec:<graph>:`` prefix, expiring with the session) and in the cookie; a signed-in cookie counts
only while its nonce is there and signed in, and sign-out marks it ended, so a copy of the cookie
taken earlier is signed out too. The nonce is derived from the CSRF token of the cookie the sign-in
came with, so two sign-ins sent with one cookie share it; an ended nonce is never signed in again
(a sign-in post arriving after the sign-out draws a random one). When Redis cannot be asked, a
signed-in cookie is refused (503), never trusted.

Every POST must carry the session's CSRF token and come from this origin
(``Origin``, else ``Referer``); a cross-site form post is refused with 403. Behind a proxy
"this origin" is ``KGREC_PUBLIC_URL`` (the request itself says ``http://`` there).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import redis
from flask import Response, g, request
from itsdangerous import BadSignature, URLSafeTimedSerializer

from app.graph import settings
from app.impressions import impression_store
from kgrec.config import origin_of
from kgrec.gateway import GraphUnavailable

COOKIE = "kgrec_console"
SESSION_AGE_S = 12 * 3600
# A nonce's value in Redis: signed in, or ended by a sign-out or a later sign-in (never signed in again).
SIGNED_IN, ENDED = b"1", b"0"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
T = TypeVar("T")
_PROCESS_SECRET = secrets.token_bytes(32)  # only when no key is configured: nobody can sign in then


class Refused(Exception):
    """A console POST that must not run: ``status`` and a sentence for the page."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class ConsoleSession:
    """What the cookie carries: the CSRF token and, when signed in, the key's fingerprint."""

    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    key_id: str | None = None
    notice: str | None = None
    changed: bool = True
    # When the key was typed (epoch seconds): the session ends SESSION_AGE_S after it. The cookie's own
    # timestamp is renewed by every re-save, so alone it let a session in use live for ever.
    signed_in_at: float | None = None
    nonce: str | None = None  # this sign-in's key in Redis (nonce_key): sign-out ends it

    def expires_in(self) -> float:
        """Seconds until a signed-in session ends (SESSION_AGE_S for one signed out)."""
        if self.key_id is None or self.signed_in_at is None:
            return SESSION_AGE_S
        return self.signed_in_at + SESSION_AGE_S - time.time()


def _secret() -> bytes:
    keys = settings().api_keys
    if not keys:
        return _PROCESS_SECRET
    # Every gunicorn worker derives the same secret; changing the keys signs everyone out.
    return hashlib.sha256(b"kgrec-console\0" + "\0".join(sorted(keys)).encode()).digest()


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(_secret(), salt="kgrec-console-session")


def fingerprint(key: str) -> str:
    """A short, one-way name for an API key."""
    return hashlib.sha256(b"kgrec-console-key\0" + key.encode()).hexdigest()[:32]


def nonce_key(nonce: str) -> str:
    """The Redis key that keeps one sign-in alive (set by sign-in, marked ended by sign-out)."""
    return f"{impression_store().prefix}:console:session:{nonce}"


def _nonce_for(csrf: str) -> str:
    # Keyed with the cookies' secret: the CSRF token is on the page, the Redis key need not follow.
    return hmac.new(_secret(), b"kgrec-console-nonce\0" + csrf.encode(), hashlib.sha256).hexdigest()


def _end(client: redis.Redis, nonce: str) -> None:
    # Kept as ENDED for a session's whole age, not deleted: a late sign-in post of the cookie that
    # derived it must find it ended (sign_in), or it would sign in every copy of the ended session.
    client.set(nonce_key(nonce), ENDED, ex=SESSION_AGE_S)


def _in_redis(action: Callable[[redis.Redis], T]) -> T:
    """Run ``action`` on kgrec's Redis; Refused (503) when it cannot be reached."""
    try:
        return impression_store().run(action)
    except GraphUnavailable as exc:  # ImpressionsUnavailable, or the embedded server not running
        g.console_session = ConsoleSession(changed=False)  # the refusal page renders signed out
        raise Refused(
            503,
            "refused: the console cannot check its sign-in now (kgrec's Redis is unavailable); retry later",
        ) from exc


def current() -> ConsoleSession:
    """This request's console session (read from the cookie once, or a new one)."""
    if "console_session" not in g:
        session = ConsoleSession()
        raw = request.cookies.get(COOKIE)
        if raw:
            try:
                data = _serializer().loads(raw, max_age=SESSION_AGE_S)
                session = ConsoleSession(
                    data["csrf"],
                    data.get("key_id"),
                    data.get("notice"),
                    changed=False,
                    signed_in_at=data.get("signed_in_at"),
                    nonce=data.get("nonce"),
                )
            except (BadSignature, KeyError, TypeError):
                session = ConsoleSession()
            if session.key_id is not None and not (
                isinstance(session.signed_in_at, (int, float)) and session.expires_in() > 0
            ):
                # 12 hours after the key was typed (or a cookie from before the time was kept): signed out
                session = ConsoleSession()
            nonce = session.nonce
            if session.key_id is not None and not (
                isinstance(nonce, str) and _in_redis(lambda client: client.get(nonce_key(nonce))) == SIGNED_IN
            ):
                session = ConsoleSession()  # signed out (perhaps from another copy of this cookie)
        g.console_session = session
    return g.console_session


def signed_in_key() -> str | None:
    """The configured API key this session signed in with, or None."""
    key_id = current().key_id
    if key_id is None:
        return None
    for key in settings().api_keys:
        if hmac.compare_digest(fingerprint(key), key_id):
            return key
    return None


def sign_in(key: str) -> None:
    """Start a signed-in session for ``key`` (already checked), with a fresh CSRF token."""
    session = current()
    # The nonce is named by the cookie the sign-in came with (its CSRF token, random and renewed by
    # every sign-in and sign-out), not drawn afresh: two sign-in posts with one cookie (a double
    # submit, a retry after a lost answer) then share one nonce, so signing out with whichever
    # answer the browser kept ends both, and no second nonce is left in Redis for 12 hours.
    # A nonce already ended (a sign-out, a later sign-in) stays ended: a sign-in post of that cookie
    # arriving late gets a fresh random nonce, and the copies of the ended session stay signed out.
    old, derived = session.nonce, _nonce_for(session.csrf)

    def store(client: redis.Redis) -> str:
        nonce = derived
        stored = client.set(nonce_key(nonce), SIGNED_IN, ex=SESSION_AGE_S, nx=True)
        if not stored and client.get(nonce_key(nonce)) != SIGNED_IN:
            nonce = secrets.token_urlsafe(32)
            client.set(nonce_key(nonce), SIGNED_IN, ex=SESSION_AGE_S)
        if old is not None and old != nonce:
            _end(client, old)
        return nonce

    session.nonce = _in_redis(store)
    session.key_id = fingerprint(key)
    session.signed_in_at = time.time()
    session.csrf = secrets.token_urlsafe(32)
    session.changed = True


def sign_out() -> None:
    """Forget the key and end the sign-in in Redis (every copy of the cookie); a fresh CSRF token."""
    session = current()
    old = session.nonce
    if old is not None:
        _in_redis(lambda client: _end(client, old))
    session.nonce = None
    session.key_id = None
    session.signed_in_at = None
    session.csrf = secrets.token_urlsafe(32)
    session.changed = True


def set_notice(text: str) -> None:
    """A one-time message for the next page."""
    session = current()
    session.notice = text
    session.changed = True


def take_notice() -> str | None:
    """The pending message, removed."""
    session = current()
    text, session.notice = session.notice, None
    if text is not None:
        session.changed = True
    return text


def save(response: Response) -> Response:
    """Write the cookie when the session changed (HttpOnly, SameSite=Strict, only under /console)."""
    session = g.get("console_session")
    if session is not None and session.changed:
        payload = {
            "csrf": session.csrf,
            "key_id": session.key_id,
            "notice": session.notice,
            "signed_in_at": session.signed_in_at,
            "nonce": session.nonce,
        }
        response.set_cookie(
            COOKIE,
            _serializer().dumps(payload),
            max_age=max(1, int(session.expires_in())),
            path="/console",
            secure=_secure(),
            httponly=True,
            samesite="Strict",
        )
    return response


def expected_origin() -> str | None:
    """The origin the console's pages are served from: ``KGREC_PUBLIC_URL`` when set (behind a TLS
    proxy the request reads ``http://`` and perhaps the proxy's own Host), else the request's own."""
    return settings().public_url or origin_of(request.host_url)


def _secure() -> bool:
    public = settings().public_url
    return request.is_secure or (public is not None and public.startswith("https://"))


def _same_origin(url: str) -> bool:
    there = origin_of(url)
    return there is not None and there == expected_origin()


def check_post() -> None:
    """Refuse (403) a POST from another origin or without this session's CSRF token."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin or not _same_origin(origin):
        raise Refused(403, "refused: the form was not sent from this console (cross-site request)")
    token = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if not hmac.compare_digest(token.encode(), current().csrf.encode()):
        raise Refused(403, "refused: the form's CSRF token is missing or stale (reload the page)")
