"""Shared fixtures: a real, migrated database per test, on SQLite and on PostgreSQL.

``db_engine`` is parametrised over both back ends; each test gets its own SQLite file or its own
PostgreSQL schema, migrated with Alembic exactly as ``funnelsync init`` does, and dropped afterwards.
PostgreSQL comes from ``FUNNELSYNC_TEST_POSTGRES_URL`` (default: the local server, trust auth).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from storage.db import make_engine, upgrade

POSTGRES_URL = os.environ.get(
    "FUNNELSYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

# Prefect: set before anything imports prefect (its settings are read once, at import). A private
# PREFECT_HOME keeps the tests off the user's profiles; analytics off; task retries fast.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="funnelsync-test-prefect-"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.setdefault("FUNNELSYNC_TASK_RETRY_DELAYS", "0.2,0.2,0.2")


@contextmanager
def migrated_database(kind: str, tmp_path: Path, name: str = "funnelsync-test") -> Iterator[Engine]:
    """A migrated, empty database of ``kind``: a SQLite file in ``tmp_path``, or a PostgreSQL schema of its
    own, dropped afterwards."""
    if kind == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / f'{name}.db'}")
        upgrade(engine)
        try:
            yield engine
        finally:
            engine.dispose()
        return
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    # search_path in the URL (not connect_args) so db_url hands the same schema to a subprocess CLI.
    engine = make_engine(f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}")
    try:
        upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database of each kind, isolated per test."""
    with migrated_database(request.param, tmp_path) as engine:
        yield engine


@pytest.fixture
def db_url(db_engine: Engine) -> str:
    """The URL of ``db_engine`` (with its PostgreSQL schema) for CLI-level tests and subprocesses."""
    return db_engine.url.render_as_string(hide_password=False)


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """A migrated SQLite database only, for tests that are about something other than storage."""
    with migrated_database("sqlite", tmp_path) as engine:
        yield engine


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[str]:
    """ONE real Prefect server (``prefect_test_harness``) for the whole session; yields its API URL.

    Started on first use only (it takes several seconds), so sessions without flow tests never pay it.
    """
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def flow_db(db_url: str, prefect_harness: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``db_url`` made the database of flows run in this process (they read FUNNELSYNC_DATABASE_URL)."""
    monkeypatch.setenv("FUNNELSYNC_DATABASE_URL", db_url)
    return db_url
