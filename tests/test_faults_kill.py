"""kill -9 at seeded random points, run again: the whole database equals a clean run's, every record once.

A ``funnelsync sync`` of the Stripe fake (200 pages of customers, 400 customers with their subscriptions and
invoices, over real HTTP on 127.0.0.1) and a
``funnelsync import csv`` of a 20,000-row file (fewer than a production-sized file so CI stays short; the
batches, not the row count, are what a kill lands between) are each started in their own process, killed
with SIGKILL, run again to the end, and the database compared table by table with one a clean run filled.
The seeds are printed (``pytest -s``, or in the failure message) so a failing point can be replayed.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fakes.server import FakeServer
from fakes.stripe import StripeFake
from storage.schema import source_customers
from tests.fault_support import cli, differences, fresh_database, snapshot, start_cli

pytestmark = pytest.mark.slow

SEEDS = (11, 23, 37, 41, 59)
PAGES = 200
PAGE_SIZE = 2  # 200 pages of two customers: every customer also costs its subscription and invoice requests
CSV_ROWS = 20_000


def _kill(proc, wait_until) -> bool:  # type: ignore[no-untyped-def]
    """SIGKILL ``proc`` once ``wait_until()`` holds; False when it ended on its own first."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and not wait_until() and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    return True


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_sync_killed_at_seeded_points_then_rerun_equals_a_clean_run(kind: str, tmp_path: Path) -> None:
    fake = StripeFake(n=PAGES * PAGE_SIZE, page_size=PAGE_SIZE)
    with FakeServer(fake) as server:
        env = {"FS_TEST_STRIPE_KEY": fake.api_key}
        add = ("sources", "add", "billing", "--kind", "stripe", "--set", "api_key=env:FS_TEST_STRIPE_KEY",
               "--set", f"base_url={fake.base_url}", "--set", f"page_size={PAGE_SIZE}")

        with fresh_database(kind, tmp_path, "clean") as (engine, url):
            assert cli(url, tmp_path, *add).returncode == 0
            before = len(server.requests)
            done = cli(url, tmp_path, "sync", "billing", "--json", extra=env)
            assert done.returncode == 0, done.stderr
            pages = len(server.requests) - before
            assert pages >= PAGES
            clean = snapshot(engine)
        assert sum(clean["source_customers"].values()) == PAGES * PAGE_SIZE

        for seed in SEEDS:
            kill_after = random.Random(seed).randint(2, pages - 2)
            print(f"sync kill seed={seed}: SIGKILL after {kill_after} of {pages} requests ({kind})")
            with fresh_database(kind, tmp_path, f"killed-{seed}") as (engine, url):
                assert cli(url, tmp_path, *add).returncode == 0
                start = len(server.requests)
                proc = start_cli(url, tmp_path, "sync", "billing", "--json", extra=env)
                def due(start: int = start, kill_after: int = kill_after) -> bool:
                    return len(server.requests) - start >= kill_after

                assert _kill(proc, due), f"seed {seed}: ran to the end"
                killed = snapshot(engine)
                assert sum(killed["source_customers"].values()) < PAGES * PAGE_SIZE, f"seed {seed}"
                rerun = cli(url, tmp_path, "sync", "billing", "--json", extra=env)
                assert rerun.returncode == 0, f"seed {seed}: {rerun.stderr}"
                diff = differences(clean, snapshot(engine))
                assert not diff, f"seed {seed} (kill after {kill_after} requests, {kind}):\n{diff}"


def _leads_file(path: Path, rows: int) -> Path:
    rng = random.Random(7)
    with path.open("w", encoding="utf-8") as out:
        out.write("Customer ID,Email,Name,Company,Country,Signup Date,Trial Start,Subscriber Since,Tags\n")
        for i in range(rows):
            day = 1 + i % 28
            trial = f"2025-03-{day:02d}" if i % 3 else ""
            paid = f"2025-04-{day:02d}" if i % 3 and i % 5 == 0 else ""
            out.write(f"L{i},user{i}@example{i % 97}.com,Person {i},Company {rng.randint(1, 500)},"
                      f"{rng.choice(['US', 'DE', 'FR', 'GB'])},2025-02-{day:02d},{trial},{paid},"
                      f"\"t{i % 4},bulk\"\n")
    return path


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_import_killed_at_seeded_points_then_rerun_equals_a_clean_run(kind: str, tmp_path: Path) -> None:
    path = _leads_file(tmp_path / "leads.csv", CSV_ROWS)
    args = ("import", "csv", str(path), "--source", "Leads", "--json")

    with fresh_database(kind, tmp_path, "clean") as (engine, url):
        done = cli(url, tmp_path, *args)
        assert done.returncode == 0, done.stderr
        clean = snapshot(engine)
    assert sum(clean["source_customers"].values()) == CSV_ROWS

    for seed in SEEDS:
        # After a seeded number of rows is committed, then a seeded fraction of a second more: most points
        # land inside a batch, some between two.
        rng = random.Random(seed)
        after_rows, extra = rng.randint(1, int(CSV_ROWS * 0.8)), rng.uniform(0, 0.5)
        print(f"import kill seed={seed}: SIGKILL {extra:.2f} s after {after_rows} rows are in ({kind})")
        with fresh_database(kind, tmp_path, f"killed-{seed}") as (engine, url):
            proc = start_cli(url, tmp_path, *args)
            seen: list[float] = []

            def due(engine=engine, after_rows=after_rows, extra=extra, seen=seen) -> bool:  # type: ignore[no-untyped-def]
                if not seen:
                    time.sleep(0.05)
                    with engine.connect() as conn:
                        if conn.execute(select(func.count()).select_from(source_customers)).scalar_one() >= after_rows:
                            seen.append(time.monotonic())
                    return False
                return time.monotonic() - seen[0] >= extra

            assert _kill(proc, due), f"seed {seed}: ran to the end"
            rerun = cli(url, tmp_path, *args)
            assert rerun.returncode == 0, f"seed {seed}: {rerun.stderr}"
            diff = differences(clean, snapshot(engine))
            assert not diff, f"seed {seed} (kill {extra:.2f} s after {after_rows} rows, {kind}):\n{diff}"
