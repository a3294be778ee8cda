"""One sync job for every door (``jobs.runs.run_sync``): two real ``funnelsync sync`` processes on one
source, on SQLite and PostgreSQL; the CLI and the flows share the source's lock, and the CLI's run also
finds its lifecycle changes and runs the duplicate merge, as the flows do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from fakes.demo import FakeVendorServer, population
from storage.locks import hold_lock
from storage.schema import customers, source_locks
from storage.sources import create_source, get_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def vendor() -> Iterator[FakeVendorServer]:
    with FakeVendorServer(population(12, seed=3), []) as server:
        yield server


def _env(db_url: str, home: Path) -> dict[str, str]:
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "FUNNELSYNC_HOME": str(home), "PYTHONPATH": ROOT}
    env.pop("PREFECT_API_URL", None)
    return env


def _sync(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "funnelsync", "sync", "billing", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _locks(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(source_locks)).scalar_one())


def _wait_for_lock(engine: Engine, first: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 90
    while _locks(engine) == 0 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _locks(engine) == 1, f"the first sync never took its lock: {first.communicate()}"


def _add(engine: Engine, vendor: FakeVendorServer) -> Any:
    with engine.begin() as conn:
        return create_source(conn, "billing", "stripe", {**vendor.stripe_settings(), "page_size": 3, "concurrency": 1})


def test_second_cli_sync_of_a_source_exits_4_naming_the_first(
    db_engine: Engine, db_url: str, tmp_path: Path, vendor: FakeVendorServer
) -> None:
    _add(db_engine, vendor)
    vendor.delay_seconds = 0.2  # the first sync stays busy for seconds
    env = _env(db_url, tmp_path)
    first = _sync(env, "--full-refresh", "--json")
    _wait_for_lock(db_engine, first)
    second = _sync(env, "--full-refresh")
    _, err = second.communicate(timeout=120)
    assert second.returncode == 4, err
    assert f"source billing is being synced by PID {first.pid} on" in err
    out, err = first.communicate(timeout=180)
    assert first.returncode == 0, err
    summary = json.loads(out)
    assert summary["total"]["created"] == 12
    # What the flows do after a sync, the CLI's run did too: lifecycle changes found, duplicates merged.
    assert summary["lifecycle"].get("lead_created", 0) >= 1 and "merged_customers" in summary["merge"]
    assert _locks(db_engine) == 0


def test_second_cli_sync_waits_with_wait_then_runs(
    db_engine: Engine, db_url: str, tmp_path: Path, vendor: FakeVendorServer
) -> None:
    _add(db_engine, vendor)
    vendor.delay_seconds = 0.1
    env = _env(db_url, tmp_path)
    first = _sync(env, "--full-refresh", "--json")
    _wait_for_lock(db_engine, first)
    second = _sync(env, "--full-refresh", "--json", "--wait", "120")
    first_out, first_err = first.communicate(timeout=180)
    second_out, second_err = second.communicate(timeout=180)
    assert first.returncode == 0 and second.returncode == 0, (first_err, second_err)
    # The second ran after the first had written everything: it found all twelve already there.
    assert json.loads(first_out)["total"]["created"] == 12
    assert json.loads(second_out)["total"]["created"] == 0
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 12


def test_cli_sync_respects_a_flow_run_holding_the_source(
    db_engine: Engine, db_url: str, tmp_path: Path, vendor: FakeVendorServer
) -> None:
    row = _add(db_engine, vendor)
    env = _env(db_url, tmp_path)
    with hold_lock(db_engine, f"sync:{row.uuid}", "flow run brave-otter (0f1e) on worker-2:4242"):
        busy = _sync(env)
        _, err = busy.communicate(timeout=120)
    assert busy.returncode == 4
    assert "source billing is being synced by flow run brave-otter (0f1e) on worker-2:4242" in err
    with db_engine.connect() as conn:
        assert get_source(conn, "billing") is not None
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 0
