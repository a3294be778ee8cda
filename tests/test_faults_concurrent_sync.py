"""Two ``funnelsync sync`` of one source started at once, as two processes: one runs, the other exits 4 at
once with one line naming who is syncing the source (the lock the scheduled flow runs take), writing
nothing; the records come out once. SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from sqlalchemy import Engine, select

from fakes.server import FakeServer
from fakes.stripe import StripeFake
from storage.locks import hold_lock
from storage.schema import source_customers
from storage.sources import create_source

ROOT = Path(__file__).resolve().parent.parent


def test_second_sync_of_a_running_source_exits_in_one_line_and_writes_nothing(
    db_engine: Engine, db_url: str, tmp_path: Path
) -> None:
    fake = StripeFake(n=30, page_size=10)
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "FUNNELSYNC_HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "FS_TEST_STRIPE_KEY": fake.api_key}
    command = [sys.executable, "-m", "funnelsync", "sync", "billing"]
    gate = threading.Event()

    def held(response: httpx.Response) -> httpx.Response:
        gate.wait(120)  # page 2 of the first sync waits until the second has been tried
        return response

    fake.inject("/v1/customers", [None, held])
    with FakeServer(fake) as server:
        with db_engine.begin() as conn:
            source = create_source(conn, "billing", "stripe", {**fake.settings(), "api_key": "env:FS_TEST_STRIPE_KEY"})
        first = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # The first holds the lock before its first request; it is then held at page 2.
            while not server.requests:
                assert first.poll() is None, first.communicate()
                time.sleep(0.02)
            second = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        finally:
            gate.set()
            _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert second.returncode == 4, second.stdout + second.stderr
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "being synced by" in lines[0] and "billing" in lines[0], second.stderr
    with db_engine.connect() as conn:
        ids = conn.execute(select(source_customers.c.external_id)).scalars().all()
    assert sorted(ids) == sorted(fake.expected_ids())  # once each

    # A scheduled flow's run holds the same lock: the CLI refuses to run beside it too.
    with hold_lock(db_engine, f"sync:{source.uuid}", "flow-run 42@worker"):
        beside = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert beside.returncode == 4 and "flow-run 42@worker" in beside.stderr
