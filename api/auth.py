"""HTTP Basic authentication with an API key as the user name (as the commercial product's API)."""

from __future__ import annotations

import base64
import binascii

from fastapi import HTTPException, Request, status

from api.sessions import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE, csrf_ok
from storage.api_keys import verify_api_key

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="funnelsync"'}


def _key_from_header(header: str | None) -> str | None:
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
    return _key_from_header(request.headers.get("authorization")) or _key_from_session(request)


def require_api_key(request: Request) -> None:
    """FastAPI dependency: 401 unless the request presents a live API key (Basic or a signed-in session)."""
    key = request_key(request)
    if key is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing HTTP Basic credentials (API key as user name)",
                            headers=_CHALLENGE)
    with request.app.state.engine.connect() as conn:
        ok = verify_api_key(conn, key)
    if not ok:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid API key", headers=_CHALLENGE)


def request_actor(request: Request) -> str:
    """Who made an authenticated request, for audit fields: ``api:`` and the key's public prefix.

    The prefix (``fsk_`` and 8 characters) is what ``funnelsync api-keys list`` shows, never the key.
    """
    key = request_key(request)
    return f"api:{key[:12]}" if key else "api"
