"""What every funnelsync task shares: its engine, who it is, and which failures are worth a retry."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from connectors.http import RETRY_STATUSES, ApiError, ConnectorError

# Task retries: Prefect re-runs a task whose failure is transient (network, 5xx, 429, a database that
# went away); a sync resumes from its last committed cursor, so a retry re-fetches at most one batch.
# FUNNELSYNC_TASK_RETRY_DELAYS ("5,30,120") changes the waits, read when the flows are imported (tests
# shorten them; an operator with a strict vendor may lengthen them).
TASK_RETRY_DELAYS = [
    float(part) for part in os.environ.get("FUNNELSYNC_TASK_RETRY_DELAYS", "5,30,120").split(",") if part.strip()
] or [0.0]
TASK_RETRIES = len(TASK_RETRY_DELAYS)
TASK_RETRY_JITTER = 0.3


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

    Bad credentials, unusable settings, a refused file, a missing source or a bug fail at once: retrying
    cannot fix them and would only delay the clear message the user needs. Network errors, the HTTP
    statuses the connectors' client retries itself (``connectors.http.RETRY_STATUSES`` and 5xx) once its
    own attempts ran out, and a database that went away are retried.
    """
    def retryable(status: int | None) -> bool:
        return status is not None and (status >= 500 or status in RETRY_STATUSES)

    if isinstance(exc, ApiError):
        return retryable(exc.status)
    if isinstance(exc, ConnectorError):  # CredentialsError, SettingsError
        return False
    if isinstance(exc, httpx.HTTPStatusError):
        return retryable(exc.response.status_code)
    if isinstance(exc, httpx.TransportError):
        return True
    if isinstance(exc, (OperationalError, PoolTimeout)) or (isinstance(exc, DBAPIError) and exc.connection_invalidated):
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))


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
