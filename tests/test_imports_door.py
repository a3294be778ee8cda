"""One import job for every door (``jobs.runs.run_import``): ``funnelsync import`` takes the source's lock
(the one its syncs and the import flows take) and runs the duplicate merge afterwards, as the import
flows do; real CLI processes on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import Engine, func, select

from storage.locks import hold_lock
from storage.schema import customers, source_customers
from storage.sources import create_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import(db_url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "FUNNELSYNC_HOME": str(home), "PYTHONPATH": ROOT}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run([sys.executable, "-m", "funnelsync", "import", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=180)


def _count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_cli_import_runs_the_merge_step_after(db_engine: Engine, db_url: str, tmp_path: Path) -> None:
    web = tmp_path / "web.csv"
    web.write_text("external_id,name,email,lead_created_at\nW-1,Alice,alice@x.io,2024-01-05\n")
    events = tmp_path / "events.csv"
    events.write_text("external_id,name,email,lead_created_at\nE-1,Alice A.,Alice@X.io,2024-01-07\n")
    first = _import(db_url, tmp_path, "csv", str(web), "--source", "Website")
    assert first.returncode == 0, first.stderr
    # No join at import: the two sources' records get a customer each, which the merge step then merges,
    # as it does after the import-file flow.
    second = _import(db_url, tmp_path, "csv", str(events), "--source", "Events", "--no-join-by-email")
    assert second.returncode == 0, second.stderr
    assert _count(db_engine, source_customers) == 2
    assert _count(db_engine, customers) == 1
    assert "Merged duplicates: 1 customers in 1 groups" in second.stdout
    assert "Lifecycle changes: lead created 1" in second.stdout


def test_cli_import_with_no_merge_leaves_the_duplicate(db_engine: Engine, db_url: str, tmp_path: Path) -> None:
    web = tmp_path / "web.csv"
    web.write_text("external_id,name,email\nW-1,Alice,alice@x.io\n")
    events = tmp_path / "events.csv"
    events.write_text("external_id,name,email\nE-1,Alice,alice@x.io\n")
    assert _import(db_url, tmp_path, "csv", str(web), "--source", "Website").returncode == 0
    done = _import(db_url, tmp_path, "csv", str(events), "--source", "Events", "--no-join-by-email", "--no-merge")
    assert done.returncode == 0, done.stderr
    assert _count(db_engine, customers) == 2


def test_cli_import_of_a_busy_source_exits_4_naming_the_holder(
    db_engine: Engine, db_url: str, tmp_path: Path
) -> None:
    with db_engine.begin() as conn:
        row = create_source(conn, "Website", "csv")
    leads = tmp_path / "leads.csv"
    leads.write_text("external_id,name,email\nW-1,Alice,alice@x.io\n")
    for args in (("csv", str(leads)), ("structured", str(leads), "--type", "customers")):
        with hold_lock(db_engine, f"sync:{row.uuid}", "PID 4242 on worker-2 (funnelsync sync)"):
            busy = _import(db_url, tmp_path, *args, "--source", "Website")
        assert busy.returncode == 4, busy.stderr
        assert "source Website is being imported or synced by PID 4242 on worker-2 (funnelsync sync)" in busy.stderr
        assert _count(db_engine, source_customers) == 0


def test_cli_import_waits_for_the_holder_with_wait(db_engine: Engine, db_url: str, tmp_path: Path) -> None:
    with db_engine.begin() as conn:
        row = create_source(conn, "Website", "csv")
    leads = tmp_path / "leads.csv"
    leads.write_text("external_id,name,email\nW-1,Alice,alice@x.io\n")
    taken, release = threading.Event(), threading.Event()

    def holder() -> None:
        with hold_lock(db_engine, f"sync:{row.uuid}", "flow run brave-otter on worker-2:4242"):
            taken.set()
            release.wait(60)

    thread = threading.Thread(target=holder)
    thread.start()
    taken.wait(30)
    threading.Timer(2.0, release.set).start()
    clock = time.monotonic()
    done = _import(db_url, tmp_path, "csv", str(leads), "--source", "Website", "--wait", "120")
    thread.join()
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - clock >= 2.0
    assert _count(db_engine, source_customers) == 1
