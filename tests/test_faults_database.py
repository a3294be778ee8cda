"""SQLite allows one writer. A second one held past the busy timeout gets a clear answer, not a traceback:
the CLI one line (exit 1) and the API a 503 with ``Retry-After``; nothing is half-written, and once the lock
is released the same command or request succeeds."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.app import create_app
from storage.api_keys import create_api_key
from storage.db import ensure_schema, make_engine
from storage.schema import customers, data_sources

ROOT = Path(__file__).resolve().parent.parent


@contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Another process's writer: an open write transaction on the file."""
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


@pytest.fixture
def sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FUNNELSYNC_SQLITE_BUSY_TIMEOUT", "0.5")
    path = tmp_path / "funnelsync.db"
    ensure_schema(make_engine(f"sqlite:///{path}"))
    return path


def test_cli_waits_out_the_busy_timeout_then_says_so_in_one_line(sqlite_file: Path, tmp_path: Path) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text("Customer ID,E-mail\nL-1,ada@example.com\nL-2,bob@example.com\n", encoding="utf-8")
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": f"sqlite:///{sqlite_file}", "FUNNELSYNC_HOME": str(tmp_path),
           "FUNNELSYNC_SQLITE_BUSY_TIMEOUT": "0.5", "PYTHONPATH": str(ROOT)}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "funnelsync", "import", "csv", str(leads), "--source", "leads"],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)

    with write_lock(sqlite_file):
        blocked = run()
    assert blocked.returncode == 1, blocked.stdout + blocked.stderr
    lines = [line for line in blocked.stderr.splitlines() if line.strip()]
    assert "Traceback" not in blocked.stderr and len(lines) == 1, blocked.stderr
    assert "database is locked" in lines[0] and "0.5 s" in lines[0] and "again" in lines[0]
    engine = make_engine(f"sqlite:///{sqlite_file}")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 0
    done = run()
    assert done.returncode == 0, done.stderr
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 2


def test_api_answers_503_with_retry_after_while_another_writer_holds_the_database(sqlite_file: Path) -> None:
    engine = make_engine(f"sqlite:///{sqlite_file}")
    with engine.begin() as conn:
        key = create_api_key(conn, "ci")
    client = TestClient(create_app(engine), raise_server_exceptions=False)
    client.auth = (key, "")
    with write_lock(sqlite_file):
        busy = client.post("/v1/data_sources", json={"name": "crm"})
        assert busy.status_code == 503, busy.text
        assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["message"]
        assert client.get("/v1/data_sources").status_code == 200  # readers are not blocked (WAL)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(data_sources)).scalar_one() == 0
    assert client.post("/v1/data_sources", json={"name": "crm"}).status_code == 201
