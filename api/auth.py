"""HTTP Basic authentication with an API key as the user name (as the commercial product's API)."""

from __future__ import annotations

import base64
import binascii

from fastapi import HTTPException, Request, status

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


def require_api_key(request: Request) -> None:
    """FastAPI dependency: 401 unless the Basic user name is a live API key."""
    key = _key_from_header(request.headers.get("authorization"))
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
    key = _key_from_header(request.headers.get("authorization"))
    return f"api:{key[:12]}" if key else "api"
