"""Scaling out and serving: the distributed smoke script, and ``funnelsync worker`` on a real server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from funnelsync.records import SourceCustomerRecord
from storage.schema import customers
from storage.sources import create_source
from storage.upsert import upsert_records

ROOT = Path(__file__).resolve().parent.parent


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FUNNELSYNC_"))}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", **extra)
    return env


@pytest.mark.slow
def test_distributed_smoke_two_workers_one_postgres_database() -> None:
    """scripts/distributed-smoke: Prefect server + two process workers + PostgreSQL, two sources' syncs."""
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "distributed-smoke")],
        cwd=ROOT,
        env=_clean_env(PYTHON=sys.executable),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + "\n" + proc.stderr[-8000:]
    assert "deployed: 8 deployments" in proc.stdout  # `prefect deploy --all` against the 127.0.0.1 server
    assert "OK: two sources synced on two workers into one PostgreSQL database" in proc.stdout
    ran_on = [line.rsplit(" on ", 1)[1] for line in proc.stdout.splitlines() if " customers, run " in line]
    assert sorted(ran_on) == ["smoke-worker-1", "smoke-worker-2"]


def test_worker_serves_every_deployment_with_its_schedule(
    sqlite_engine: Engine, prefect_harness: str, tmp_path: Path
) -> None:
    """``funnelsync worker`` registers prefect.yaml's deployments (schedules included) and runs them."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    with sqlite_engine.begin() as conn:
        a, b = create_source(conn, "leads", "csv"), create_source(conn, "billing", "stripe")
        upsert_records(conn, a.id, [SourceCustomerRecord("1", email="sam@example.com")])
        upsert_records(conn, b.id, [SourceCustomerRecord("cus_1", email="SAM@example.com")])
    db_url = sqlite_engine.url.render_as_string(hide_password=False)
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "funnelsync", "worker", "--limit", "2"],
        cwd=ROOT,
        env=_clean_env(PREFECT_API_URL=prefect_harness, FUNNELSYNC_DATABASE_URL=db_url,
                       PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_RUNNER_POLL_FREQUENCY="2"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # Other tests share the session's Prefect server and may have made deployments of their own, so wait for
        # prefect.yaml's names rather than for a count.
        expected = {"sync-all", "sync-source", "merge-duplicates", "refresh-metrics", "import-file", "import-sheet",
                    "google-play-reports", "run-automations"}
        deadline = time.monotonic() + 120
        names: dict[str, object] = {}
        while time.monotonic() < deadline and not expected <= set(names):
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()
            with get_client(sync_client=True) as client:
                names = {d.name: d for d in client.read_deployments()}
            time.sleep(1)
        assert expected <= set(names), sorted(names)
        crons = {n: [s.schedule.cron for s in d.schedules] for n, d in names.items()}  # type: ignore[attr-defined]
        assert crons["sync-all"] == ["0 * * * *"] and crons["refresh-metrics"] == ["15 2 * * *"]
        assert crons["google-play-reports"] == ["40 3 * * *"]
        assert crons["run-automations"] == ["*/5 * * * *"]

        run = run_deployment("merge-duplicates/merge-duplicates", parameters={"dry_run": False}, timeout=180)
        assert run.state is not None and run.state.is_completed(), (
            run.state,
            (tmp_path / "worker.log").read_text()[-3000:],
        )
        with sqlite_engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 1
        assert "Serving 8 deployments" in (tmp_path / "worker.log").read_text()
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
        log.close()
