"""Import jobs killed outright are shown as interrupted and resumed by the next run, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import func, select

from jobs.import_jobs import job_state
from storage.db import make_engine
from storage.schema import import_jobs, source_customers

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc

# An import in its own process that SIGKILLs itself inside its third batch: nothing can mark the job.
KILLED_IMPORT = """
import os, signal, sys
from datetime import timezone
import jobs.imports as imports
from storage.db import make_engine

real = imports.upsert_prepared
calls = [0]

def dying(*args, **kwargs):
    calls[0] += 1
    if calls[0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

imports.upsert_prepared = dying
imports.import_csv(make_engine(sys.argv[1]), sys.argv[2], "Leads", batch_size=30, tz=timezone.utc)
"""


def _env(db_url: str) -> dict[str, str]:
    return dict(os.environ, FUNNELSYNC_DATABASE_URL=db_url, FUNNELSYNC_TIMEZONE="UTC", PYTHONPATH=str(ROOT))


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "funnelsync", *args], capture_output=True, text=True,
                          env=_env(db_url), cwd=ROOT, timeout=120)


def test_a_killed_import_is_listed_interrupted_and_the_rerun_resumes_it(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("id,email,name\n" + "".join(f"k{i},u{i}@x.io,N{i}\n" for i in range(100)))
    killed = subprocess.run([sys.executable, "-c", KILLED_IMPORT, db_url, str(path)], capture_output=True,
                            text=True, env=_env(db_url), cwd=ROOT, timeout=120)
    assert killed.returncode == -9, killed.stderr
    engine = make_engine(db_url)
    with engine.connect() as conn:
        job = conn.execute(select(import_jobs)).one()
        assert job.status == "running" and job.created == 60  # two batches committed, the row left behind
        assert job.pid is not None and job.host == socket.gethostname()

    listed = _cli(db_url, "import", "jobs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(j["uuid"], j["state"], j["created"]) for j in json.loads(listed.stdout)] == [(job.uuid, "interrupted", 60)]
    table = subprocess.run([sys.executable, "-m", "funnelsync", "import", "jobs"], capture_output=True, text=True,
                           env=dict(_env(db_url), COLUMNS="200"), cwd=ROOT, timeout=120)
    assert "interrupted" in table.stdout and job.uuid in table.stdout

    rerun = _cli(db_url, "import", "csv", str(path), "--source", "Leads", "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming interrupted import {job.uuid}" in rerun.stderr and "60 rows done" in rerun.stderr
    assert (json.loads(rerun.stdout)["created"], json.loads(rerun.stdout)["unchanged"]) == (40, 60)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(source_customers)).scalar_one() == 100
        rows = {r.uuid: r for r in conn.execute(select(import_jobs))}
    assert rows[job.uuid].status == "interrupted" and "resumed by import" in rows[job.uuid].error
    states = {j["uuid"]: j["state"] for j in json.loads(_cli(db_url, "import", "jobs", "--json").stdout)}
    assert states[job.uuid] == "interrupted" and sorted(states.values()) == ["done", "interrupted"]
    # Resumed once: a third run finds nothing to resume.
    assert "resuming" not in _cli(db_url, "import", "csv", str(path), "--source", "Leads").stderr
    engine.dispose()


def test_a_running_job_is_judged_by_its_process_here_and_by_its_heartbeat_elsewhere() -> None:
    now = datetime.now(UTC)
    here = socket.gethostname()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(gone.stdout)

    def job(**values: object) -> dict[str, object]:
        return {"status": "running", "pid": None, "host": None, "heartbeat_at": None,
                "started_at": now - timedelta(hours=2), **values}

    assert job_state(job(pid=os.getpid(), host=here, heartbeat_at=now - timedelta(hours=1))) == "running"
    assert job_state(job(pid=dead_pid, host=here, heartbeat_at=now)) == "interrupted"
    assert job_state(job(pid=1234, host="elsewhere", heartbeat_at=now - timedelta(minutes=2))) == "running"
    assert job_state(job(pid=1234, host="elsewhere", heartbeat_at=now - timedelta(hours=1))) == "interrupted"
    assert job_state(job()) == "interrupted"  # a job from before heartbeats, started long ago
    assert job_state(job(status="done")) == "done" and job_state(job(status="failed")) == "failed"
