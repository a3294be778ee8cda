"""Database-held locks: one sync per source at a time, on any number of workers.

A lock is a row of ``source_locks`` (key, owner, expires_at). Taking it is one statement in its own
transaction — an insert that does nothing when the row exists, else a compare-and-set update that only
succeeds on an expired row — so two workers racing for the same key cannot both win, on SQLite or on
PostgreSQL, with or without a Prefect server. The holder pushes ``expires_at`` forward from a heartbeat
thread; a holder that crashed stops doing so and its lock lapses after ``ttl_seconds``.

Times come from the workers' clocks (the SQLite column is an integer, so the database's ``now()`` is not
usable on both back ends); clocks of machines sharing a database are assumed NTP-synchronised, and the
TTL (minutes) dwarfs any skew they have.

Example:
    >>> with hold_lock(engine, "sync:ds_123", owner="flow-run 42@host", wait_seconds=0):
    ...     run_the_sync()
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from funnelsync.forking import ForkQuietThread
from storage.schema import source_locks

DEFAULT_TTL_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class LockHolder:
    """Who holds a lock, since when, and until when it stays valid without a heartbeat."""

    key: str
    owner: str
    acquired_at: datetime
    expires_at: datetime


class LockBusy(Exception):
    """The lock is held by someone else (and did not come free within the wait)."""

    def __init__(self, key: str, holder: LockHolder | None, waited: float) -> None:
        self.key = key
        self.holder = holder
        self.waited = waited
        if holder is None:
            who = "another run"
        else:
            who = f"{holder.owner} (since {holder.acquired_at.isoformat(timespec='seconds')})"
        super().__init__(f"{key} is held by {who}; waited {waited:.0f}s")


def _now() -> datetime:
    return datetime.now(UTC)


# A holder that names its process ("PID 123 on host (funnelsync sync)"): on that host, whether it still
# runs can be asked at once instead of waiting for its lock to lapse.
_PROCESS_OWNER = re.compile(r"^PID (\d+) on (\S+)")


def holder_is_gone(owner: str) -> bool:
    """True when ``owner`` names a process on this host that no longer runs (killed, crashed)."""
    match = _PROCESS_OWNER.match(owner)
    if match is None or match.group(2) != socket.gethostname():
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def try_acquire(engine: Engine, key: str, owner: str, ttl_seconds: float = DEFAULT_TTL_SECONDS,
                stale_owner: str | None = None) -> bool:
    """Take ``key`` for ``owner`` if it is free, expired, already ``owner``'s, or still ``stale_owner``'s.

    Args:
        engine: the funnelsync database.
        key: what is locked, e.g. ``"sync:ds_…"``.
        owner: who takes it (shown to whoever finds it busy).
        ttl_seconds: how long the lock stays valid without a heartbeat.
        stale_owner: a holder known to be gone (``holder_is_gone``): its lock is taken over at once.

    Returns:
        True when ``owner`` now holds the lock.
    """
    now = _now()
    values = {"lock_key": key, "owner": owner, "acquired_at": now, "expires_at": now + timedelta(seconds=ttl_seconds)}
    with engine.begin() as conn:
        dialect = conn.dialect.name
        stmt: Any
        if dialect == "postgresql":
            stmt = postgresql.insert(source_locks).values(**values).on_conflict_do_nothing()
        elif dialect == "sqlite":
            stmt = sqlite.insert(source_locks).values(**values).on_conflict_do_nothing()
        else:  # pragma: no cover - other back ends are not supported by the storage layer
            raise RuntimeError(f"locks are not implemented for {dialect}")
        if conn.execute(stmt).rowcount == 1:
            return True
        # The row exists: take it over only if it lapsed (its holder died) or it is ours already.
        taken = conn.execute(
            update(source_locks)
            .where(source_locks.c.lock_key == key)
            .where(or_(source_locks.c.expires_at < now, source_locks.c.owner == owner,
                       *([source_locks.c.owner == stale_owner] if stale_owner else [])))
            .values(owner=owner, acquired_at=now, expires_at=values["expires_at"])
        )
        return taken.rowcount == 1


def heartbeat(engine: Engine, key: str, owner: str, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> bool:
    """Push the lock's expiry forward; False when ``owner`` no longer holds it."""
    with engine.begin() as conn:
        res = conn.execute(
            update(source_locks)
            .where(source_locks.c.lock_key == key, source_locks.c.owner == owner)
            .values(expires_at=_now() + timedelta(seconds=ttl_seconds))
        )
        return res.rowcount == 1


def release(engine: Engine, key: str, owner: str) -> None:
    """Give the lock back (no-op when ``owner`` does not hold it)."""
    with engine.begin() as conn:
        conn.execute(delete(source_locks).where(source_locks.c.lock_key == key, source_locks.c.owner == owner))


def lock_holder(engine: Engine, key: str) -> LockHolder | None:
    """The current, unexpired holder of ``key``, or None."""
    with engine.connect() as conn:
        row = conn.execute(select(source_locks).where(source_locks.c.lock_key == key)).mappings().first()
    if row is None or row["expires_at"] < _now():
        return None
    return LockHolder(key, row["owner"], row["acquired_at"], row["expires_at"])


@contextmanager
def hold_lock(
    engine: Engine,
    key: str,
    owner: str,
    *,
    wait_seconds: float = 0.0,
    poll_seconds: float = 1.0,
    ttl_seconds: float = DEFAULT_TTL_SECONDS,
) -> Iterator[None]:
    """Hold ``key`` for the duration of the block, heartbeating it from a fork-quiet daemon thread.

    Args:
        engine: the funnelsync database.
        key: what is locked.
        owner: who holds it.
        wait_seconds: how long to wait for a busy lock before giving up (0: do not wait).
        poll_seconds: how often to try again while waiting.
        ttl_seconds: validity without a heartbeat; the heartbeat runs every third of it.

    Raises:
        LockBusy: the lock stayed held by someone else for ``wait_seconds``.
    """
    started = time.monotonic()
    while not try_acquire(engine, key, owner, ttl_seconds):
        holder = lock_holder(engine, key)
        if holder is not None and holder_is_gone(holder.owner) and \
                try_acquire(engine, key, owner, ttl_seconds, stale_owner=holder.owner):
            break  # its holder was killed on this machine: no need to wait for the lock to lapse
        waited = time.monotonic() - started
        if waited >= wait_seconds:
            raise LockBusy(key, lock_holder(engine, key), waited)
        time.sleep(min(poll_seconds, max(wait_seconds - waited, 0.05)))

    def _beat() -> None:
        try:
            heartbeat(engine, key, owner, ttl_seconds)
        except Exception:  # noqa: BLE001,S110 - a database hiccup: the next beat retries
            pass

    # Fork-quiet: the holder may fork a worker (an import's file reader), which must not inherit a
    # connection or pool lock caught in the middle of a beat.
    beater = ForkQuietThread(_beat, ttl_seconds / 3, name=f"lock-heartbeat:{key}")
    beater.start()
    try:
        yield
    finally:
        beater.stop(timeout=5)
        release(engine, key, owner)
