"""API keys: shown once at creation, stored only as a SHA-256 hash.

The API checks a key against the database on every request, or (``funnelsync serve``) once every few
seconds per key (``api.auth.LiveKeys``): a revoked key is refused at once, or within that window.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timezone

from sqlalchemy import Connection, select

from storage.schema import api_keys

KEY_PREFIX = "fsk_"


def key_digest(key: str) -> str:
    """The SHA-256 hash of ``key``, as stored (and as the API's short-lived cache of live keys holds it)."""
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(conn: Connection, name: str) -> str:
    """Create a key named ``name`` and return it (the only time it is visible)."""
    if not name.strip():
        raise ValueError("an API key needs a name")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    conn.execute(
        api_keys.insert().values(
            name=name.strip(), key_hash=key_digest(key), prefix=key[:12], created_at=datetime.now(timezone.utc)
        )
    )
    return key


def verify_api_key(conn: Connection, key: str) -> bool:
    """True when ``key`` is a live (not revoked) key. Compares hashes, never keys.

    The rows are found by the key's public prefix (what ``api-keys list`` shows); the hashes are then
    compared in constant time, so how long a refusal takes says nothing about how close a guess was.
    """
    if not key:
        return False
    candidates = conn.execute(
        select(api_keys.c.key_hash).where(api_keys.c.prefix == key[:12], api_keys.c.revoked_at.is_(None))
    ).scalars().all()
    digest = key_digest(key)
    # Every candidate is compared (no early exit), though prefixes are 8 random characters and rarely shared.
    matches = [hmac.compare_digest(stored, digest) for stored in candidates]
    return any(matches)


def revoke_api_keys(conn: Connection, name_or_prefix: str) -> int:
    """Revoke every live key with that name, or the key starting with that prefix; return how many.

    A prefix must be at least the 12 characters ``api-keys list`` shows, so a short string cannot
    revoke keys by accident.
    """
    now = datetime.now(timezone.utc)
    live = api_keys.c.revoked_at.is_(None)
    by_name = conn.execute(api_keys.update().where(live, api_keys.c.name == name_or_prefix).values(revoked_at=now))
    if by_name.rowcount:
        return by_name.rowcount
    if len(name_or_prefix) >= 12:
        by_prefix = conn.execute(
            api_keys.update().where(live, api_keys.c.prefix == name_or_prefix[:12]).values(revoked_at=now)
        )
        return by_prefix.rowcount
    return 0


def list_api_keys(conn: Connection) -> list[dict[str, object]]:
    """Name, prefix and dates of every key (never the key)."""
    return [dict(r._mapping) for r in conn.execute(
        select(api_keys.c.name, api_keys.c.prefix, api_keys.c.created_at, api_keys.c.revoked_at).order_by(api_keys.c.id)
    )]
