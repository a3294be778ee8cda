"""HTTP Basic authentication with an API key as the user name (as the commercial product's API)."""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable

from fastapi import HTTPException, Request, status
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from api.sessions import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE, csrf_ok
from storage.api_keys import key_digest, verify_api_key

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="funnelsync"'}


def basic_key(header: str | None) -> str | None:
    """The API key an ``Authorization: Basic`` header carries as its user name, else None."""
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, _, _password = decoded.partition(":")
    return user or None


def _key_from_session(request: Request) -> str | None:
    """The API key of the browser session the request's cookie names (writes need its CSRF token)."""
    store = getattr(request.app.state, "sessions", None)
    session = store.get(request.cookies.get(SESSION_COOKIE)) if store is not None else None
    if session is None:
        return None
    if request.method not in SAFE_METHODS and not csrf_ok(session, request.headers.get(CSRF_HEADER)):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong X-CSRF-Token for a signed-in write")
    return session.key


def request_key(request: Request) -> str | None:
    """The API key a request presents: HTTP Basic (scripts) or the dashboard's session cookie."""
    return basic_key(request.headers.get("authorization")) or _key_from_session(request)


class LiveKeys:
    """Keys found live in the last ``seconds``, by their SHA-256 hash (never the key): checked once a window.

    Each request checked the key against the database: a pool checkout and a query, before any work of
    its own. A key seen live is trusted for ``seconds`` after; so a revoked key keeps working in this
    process for at most that long. A refused key is never remembered (a new key works at once, and
    guesses fill nothing). ``seconds`` 0 checks every request.
    """

    MAX_ENTRIES = 10_000  # forgotten all at once past this (each is a re-check, never a wrong answer)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._until: dict[str, float] = {}

    def fresh(self, digest: str) -> bool:
        until = self._until.get(digest)
        return until is not None and until > time.monotonic()

    def remember(self, digest: str) -> None:
        if self.seconds <= 0:
            return
        if len(self._until) >= self.MAX_ENTRIES:
            self._until = {}
        self._until[digest] = time.monotonic() + self.seconds

    def check(self, key: str, verify: Callable[[str], bool]) -> bool:
        """Whether ``key`` is live: trusted while fresh, else asked of ``verify`` (the database) and
        remembered when it is; a refusal is never remembered."""
        digest = key_digest(key)
        if self.fresh(digest):
            return True
        if not verify(key):
            return False
        self.remember(digest)
        return True


def _verify(engine: Engine, key: str) -> bool:
    with engine.connect() as conn:
        return verify_api_key(conn, key)


async def require_api_key(request: Request) -> None:
    """FastAPI dependency: 401 unless the request presents a live API key (Basic or a signed-in session).

    Async, so that a key trusted by :class:`LiveKeys` costs no trip through the thread pool; the
    database check itself runs in the pool.
    """
    key = request_key(request)
    if key is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing HTTP Basic credentials (API key as user name)",
                            headers=_CHALLENGE)
    live: LiveKeys = getattr(request.app.state, "live_keys", None) or LiveKeys(0)
    if live.fresh(key_digest(key)):
        return  # no trip through the thread pool
    engine = request.app.state.engine
    if not await run_in_threadpool(live.check, key, lambda k: _verify(engine, k)):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key", headers=_CHALLENGE)


def request_actor(request: Request) -> str:
    """Who made an authenticated request, for audit fields: ``api:`` and the key's public prefix.

    The prefix (``fsk_`` and 8 characters) is what ``funnelsync api-keys list`` shows, never the key.
    """
    key = request_key(request)
    return f"api:{key[:12]}" if key else "api"
