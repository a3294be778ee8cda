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

import pytest
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


@pytest.mark.slow  # four CLI processes, one of which waits for another
def test_two_imports_creating_one_new_source_never_run_at_once(
    db_engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """The first import creates the source and is held mid-run (its --errors FIFO is not read, so writing
    the first batch's rejections blocks after that batch committed); a second import of the same new name,
    which now finds the source, used to take the source's sync lock while the first held the name's lock
    and ran beside it. It exits 4 naming the first; with --wait it runs once the first is done."""
    from storage.schema import data_sources, import_jobs

    rows = [f"N-{i},Lead {i},n{i}@x.io,{'not a date ' * 12 if i < 1200 else '2024-01-05'}" for i in range(1300)]
    leads = tmp_path / "leads.csv"
    leads.write_text("external_id,name,email,lead_created_at\n" + "\n".join(rows) + "\n")
    fifo = tmp_path / "errors.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets the first open it; nothing read yet
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "FUNNELSYNC_HOME": str(tmp_path), "PYTHONPATH": ROOT}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "funnelsync", "import", "csv", str(leads), "--source", "New leads"]
    first = subprocess.Popen([*command, "--errors", str(fifo)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    drained: list[bytes] = []
    try:
        deadline = time.monotonic() + 120
        while _count(db_engine, source_customers) == 0:  # the first batch is committed, its errors pending
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        second = _import(db_url, tmp_path, "csv", str(leads), "--source", "New leads")
        assert first.poll() is None  # the first was still running when the second was refused
        waiting = subprocess.Popen([*command, "--wait", "120"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert waiting.poll() is None, waiting.communicate()  # waits for the first, does not run beside it
    finally:
        def drain() -> None:
            os.set_blocking(reader, True)
            while chunk := os.read(reader, 65536):
                drained.append(chunk)

        threading.Thread(target=drain, daemon=True).start()
        _, first_err = first.communicate(timeout=300)
    assert second.returncode == 4, second.stdout + second.stderr
    assert "source New leads is being imported or synced by" in second.stderr
    assert first.returncode == 3, first_err  # rows rejected, as the file means
    _, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 3, err
    os.close(reader)
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(data_sources)).scalar_one() == 1
        jobs = conn.execute(select(import_jobs.c.status, import_jobs.c.created, import_jobs.c.unchanged,
                                   import_jobs.c.started_at, import_jobs.c.finished_at)
                            .order_by(import_jobs.c.started_at)).all()
    assert [(j.status, j.created, j.unchanged) for j in jobs] == [("done", 100, 0), ("done", 0, 100)]
    assert jobs[1].started_at >= jobs[0].finished_at  # one after the other
    assert _count(db_engine, source_customers) == 100
    assert b"".join(drained).count(b"\n") == 1201  # the header and every rejection, written once
