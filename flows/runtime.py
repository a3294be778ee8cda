"""What every funnelsync task shares: its engine, who it is, and which failures are worth a retry."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine

# Task retries: Prefect re-runs a task whose failure is transient (network, 5xx, 429, a database that
# went away); a sync resumes from its last committed cursor, so a retry re-fetches at most one batch.
# FUNNELSYNC_TASK_RETRY_DELAYS ("5,30,120") changes the waits, read when the flows are imported (tests
# shorten them; an operator with a strict vendor may lengthen them).
TASK_RETRY_DELAYS = [
    float(part) for part in os.environ.get("FUNNELSYNC_TASK_RETRY_DELAYS", "5,30,120").split(",") if part.strip()
] or [0.0]
TASK_RETRIES = len(TASK_RETRY_DELAYS)
TASK_RETRY_JITTER = 0.3

# HTTP statuses a retry can fix (SPEC 3: 5xx, 408, 409, 429); any other 4xx cannot.
_RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})
# Exception class names (anywhere in the MRO) that mean "try again later", for errors raised by modules
# the flows do not import at load time (connectors' own error classes).
_TRANSIENT_NAMES = ("Transient", "RateLimit", "ServerError", "TemporarilyUnavailable", "Timeout")
_PERMANENT_NAMES = ("Credential", "Authentication", "Authorization", "Permission", "Refused", "Rejected")


@contextmanager
def task_engine() -> Iterator[Engine]:
    """An engine for one task, from ``FUNNELSYNC_DATABASE_URL`` (or the embedded SQLite file).

    Tasks take plain values and open their own engine: an engine or session passed between tasks would
    break Prefect's cache keys and cannot cross to another worker.
    """
    from storage.db import ensure_schema, make_engine

    engine = make_engine()
    try:
        ensure_schema(engine)
        yield engine
    finally:
        engine.dispose()


def run_owner() -> str:
    """A readable identity for lock rows: the flow run (name and id) and the machine and process."""
    where = f"{socket.gethostname()}:{os.getpid()}"
    try:
        from prefect.runtime import flow_run

        if flow_run.id:
            return f"flow run {flow_run.name} ({flow_run.id}) on {where}"
    except Exception:  # noqa: BLE001,S110 - not inside a Prefect run: still a valid owner
        pass
    return f"process {where}"


def slug(text: str) -> str:
    """An artifact key piece: lowercase letters, digits and dashes only (Prefect's rule for keys)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def is_transient(exc: BaseException) -> bool:
    """True when retrying ``exc`` later can succeed.

    Bad credentials, a refused file, a missing source or a bug fail at once: retrying cannot fix them
    and would only delay the clear message the user needs. Network errors, HTTP 5xx/408/409/429 and a
    database that went away are retried.
    """
    flag = getattr(exc, "retryable", None)
    if isinstance(flag, bool):
        return flag
    names = [cls.__name__ for cls in type(exc).__mro__]
    if any(p in n for n in names for p in _PERMANENT_NAMES):
        return False
    try:
        import httpx

        if isinstance(exc, httpx.HTTPStatusError):
            code = exc.response.status_code
            return code >= 500 or code in _RETRYABLE_STATUSES
        if isinstance(exc, httpx.TransportError):
            return True
    except ImportError:  # pragma: no cover - httpx is a dependency
        pass
    status: Any = getattr(exc, "status_code", None)
    if not isinstance(status, int):
        status = getattr(exc, "status", None)  # connectors.http.ApiError after its own retries ran out
    if isinstance(status, int):
        return status >= 500 or status in _RETRYABLE_STATUSES
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return True
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    return any(p in n for n in names for p in _TRANSIENT_NAMES)


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed task only when its error is transient."""
    exc = state.data if isinstance(getattr(state, "data", None), BaseException) else None
    if exc is None:
        try:
            exc = state.result(raise_on_failure=False)
        except Exception as read_error:  # noqa: BLE001 - the result itself could not be read: treat as transient
            exc = read_error
    if not isinstance(exc, BaseException):
        return True
    return is_transient(exc)


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` — what a user sees as the run's error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
