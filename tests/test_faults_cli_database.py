"""The database goes away under ``funnelsync import csv``: the batch rolls back, one line on the CLI, a rerun finishes.

PostgreSQL: the import's connection is terminated (``pg_terminate_backend``) while its batches are being
written. SQLite: another connection holds the write lock (``BEGIN IMMEDIATE``) past the busy timeout.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from storage.schema import customers, source_customers
from tests.fault_support import POSTGRES_URL, cli, fresh_database, start_cli

ROWS = 6000


def _leads(path: Path, rows: int) -> Path:
    path.write_text("Customer ID,Email,Name,Signup Date\n"
                    + "".join(f"D{i},d{i}@example.com,Person {i},2025-02-{1 + i % 28:02d}\n" for i in range(rows)))
    return path


def _counts(engine) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(source_customers)).scalar_one(),
                conn.execute(select(func.count()).select_from(customers)).scalar_one())


def _one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_postgresql_connection_terminated_mid_import_fails_clearly_and_rerun_lands_every_row_once(
        tmp_path: Path) -> None:
    path = _leads(tmp_path / "leads.csv", ROWS)
    app_name = f"fsfault{uuid.uuid4().hex[:10]}"
    with fresh_database("postgresql", tmp_path, "pg") as (engine, url):
        tagged = f"{url}&application_name={app_name}"
        proc = start_cli(tagged, tmp_path, "import", "csv", str(path), "--source", "Leads", "--json")
        admin = engine
        terminated = 0
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and not terminated:
            if _counts(engine)[0] > 0:  # batches are being written: cut the import's connection now
                with admin.begin() as conn:
                    terminated = conn.execute(text(
                        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :name) AS t"), {"name": app_name}).scalar_one()
            time.sleep(0.02)
        out, err = proc.communicate(timeout=60)
        assert terminated >= 1, "the import ended before its connection could be terminated"
        assert proc.returncode == 1, (out, err)
        line = _one_line_error(err)
        assert line.startswith("error: database error:") and "rolled back" in line and "again" in line, line
        stored, linked = _counts(engine)
        assert stored < ROWS and stored == linked  # no source record without its customer: nothing half-written

        rerun = cli(url, tmp_path, "import", "csv", str(path), "--source", "Leads", "--json")
        assert rerun.returncode == 0, rerun.stderr
        assert _counts(engine) == (ROWS, ROWS)


def test_sqlite_write_lock_held_past_the_busy_timeout_fails_clearly_and_writes_nothing(tmp_path: Path) -> None:
    path = _leads(tmp_path / "leads.csv", 500)
    with fresh_database("sqlite", tmp_path, "locked") as (engine, url):
        holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            began = time.monotonic()
            run = cli(url, tmp_path, "import", "csv", str(path), "--source", "Leads", "--json",
                      extra={"FUNNELSYNC_SQLITE_BUSY_TIMEOUT": "1"})
            waited = time.monotonic() - began
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert run.returncode == 1, (run.stdout, run.stderr)
        line = _one_line_error(run.stderr)
        assert "the database is locked" in line and "run the command again" in line, line
        assert waited >= 1  # it waited out the busy timeout before giving up
        assert _counts(engine) == (0, 0)

        rerun = cli(url, tmp_path, "import", "csv", str(path), "--source", "Leads", "--json")
        assert rerun.returncode == 0, rerun.stderr
        assert _counts(engine) == (500, 500)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_database_that_cannot_be_reached_is_one_line(kind: str, tmp_path: Path) -> None:
    url = (f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}" if kind == "sqlite"
           else POSTGRES_URL.replace("127.0.0.1:5432", "127.0.0.1:1"))
    if kind == "sqlite":
        (tmp_path / "nowhere").mkdir()
        (tmp_path / "nowhere" / "x.db").mkdir()  # a directory where the file should be
    run = cli(url, tmp_path, "customers", "list")
    assert run.returncode != 0
    _one_line_error(run.stderr)
