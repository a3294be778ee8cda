"""kill -9 at seeded random points, run again: the whole database equals a clean run's, every record once.

A ``funnelsync sync`` of the Stripe fake (200 pages of customers, 400 customers with their subscriptions and
invoices, over real HTTP on 127.0.0.1) and a
``funnelsync import csv`` of a 20,000-row file (fewer than a production-sized file so CI stays short; the
batches, not the row count, are what a kill lands between) are each started in their own process, killed
with SIGKILL, run again to the end, and the database compared table by table with one a clean run filled.
A ``funnelsync merge --auto`` of 600 duplicate groups among 3,000 customers is killed the same way between
and inside its merge transactions, run again, and compared likewise, with who is grouped with whom and the
merge log besides.
The seeds are printed (``pytest -s``, or in the failure message) so a failing point can be replayed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fakes.server import FakeServer
from fakes.stripe import StripeFake
from storage.schema import merge_events, source_customers
from tests.fault_support import ROOT, cli, cli_env, differences, fresh_database, snapshot, start_cli

pytestmark = pytest.mark.slow

SEEDS = (11, 23, 37, 41, 59)
EXTRA_SEEDS = (61, 67, 71, 73, 79, 83, 89, 97)  # drawn only when an import ended before its kill point
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

    # An import of 20,000 rows can end before a late kill point on a quick machine: such a seed still
    # proves the rerun changes nothing, and further seeds are drawn until five runs were really killed.
    killed = 0
    for seed in (*SEEDS, *EXTRA_SEEDS):
        if killed >= len(SEEDS):
            break
        # After a seeded number of rows is committed, then a seeded fraction of a second more: most points
        # land inside a batch, some between two, some after the last (before the run's announcements).
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

            if _kill(proc, due):
                killed += 1
            else:
                print(f"import kill seed={seed}: the import ended before its kill point")
            rerun = cli(url, tmp_path, *args)
            assert rerun.returncode == 0, f"seed {seed}: {rerun.stderr}"
            diff = differences(clean, snapshot(engine))
            assert not diff, f"seed {seed} (kill {extra:.2f} s after {after_rows} rows, {kind}):\n{diff}"
    assert killed >= len(SEEDS), f"only {killed} of the seeded imports were killed before they ended"


MERGE_CUSTOMERS = 3_000
MERGE_GROUPS = 600  # groups of two and three: 900 customers merged away
MERGE_BATCH = 10  # merges per transaction in the killed runs (the product's batch is larger than this data)
# The real ``funnelsync merge --auto``, with only the merges per transaction made smaller so that a kill has
# batches to land between and inside.
_MERGE_CLI = ("import sys; import storage.merge as m; "
              "m.auto_merge.__kwdefaults__['batch_size'] = int(sys.argv.pop(1)); "
              "from funnelsync.cli import main; main()")


def _duplicates_file(path: Path) -> Path:
    rng = random.Random(5)
    rows = []
    for g in range(MERGE_GROUPS):
        for k in range(2 + g % 2):
            rows.append((f"dup{g}@example{g % 13}.com" if k == 0 else f"Dup{g}@Example{g % 13}.com",
                         f"Person {g}" if k != 1 else "", f"2025-02-{1 + (g + k) % 28:02d}"))
    while len(rows) < MERGE_CUSTOMERS:
        i = len(rows)
        rows.append((f"solo{i}@example{i % 13}.com", f"Solo {i}", f"2025-03-{1 + i % 28:02d}"))
    rng.shuffle(rows)
    with path.open("w", encoding="utf-8") as out:
        out.write("Customer ID,Email,Name,Signup Date\n")
        for i, (email, name, signup) in enumerate(rows):
            out.write(f"M{i},{email},{name},{signup}\n")
    return path


def _merge_state(engine) -> tuple[frozenset, Counter, list[str]]:  # type: ignore[no-untyped-def]
    """Who is one customer with whom, the merge log in those terms, and what no merge may leave behind.

    The snapshot leaves out foreign ids, so it cannot see which customer a record belongs to: the grouping
    of (source, external id) by customer is compared here, and each merge event by the records it moved
    and the customer they went into.
    """
    from sqlalchemy import func as f  # noqa: I001

    from storage.schema import customers, data_sources, merge_events

    sc, ds = source_customers, data_sources
    with engine.connect() as conn:
        key_of = {row.id: (row.name, row.external_id) for row in conn.execute(
            select(sc.c.id, ds.c.name, sc.c.external_id).join(ds, ds.c.id == sc.c.data_source_id))}
        members: dict[int, set] = {}
        for row in conn.execute(select(sc.c.id, sc.c.customer_id)):
            members.setdefault(row.customer_id, set()).add(key_of[row.id])
        uuid_of = dict(conn.execute(select(customers.c.id, customers.c.uuid)).tuples().all())
        group_of = {uuid_of.get(cid, f"missing customer {cid}"): frozenset(keys) for cid, keys in members.items()}
        problems = [f"source customers point at customer {cid}, which does not exist"
                    for cid in members if cid not in uuid_of]
        empty = conn.execute(select(f.count()).select_from(customers).where(
            ~customers.c.id.in_(select(sc.c.customer_id)))).scalar_one()
        if empty:
            problems.append(f"{empty} customers without source customers")
        events = Counter()
        for row in conn.execute(select(merge_events)).mappings():
            moved = frozenset(key_of[s["id"]] for s in (row["snapshot"] or {}).get("source_customers", []))
            events[(row["kind"], row["rule"], row["actor"], row["undone_at"] is None, moved,
                    group_of.get(row["into_customer_uuid"], "survivor gone"))] += 1
    return frozenset(group_of.values()), events, problems


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_merge_killed_at_seeded_points_then_rerun_equals_a_clean_run(kind: str, tmp_path: Path) -> None:
    """``funnelsync merge --auto`` of 600 duplicate groups among 3,000 customers, killed and run again."""
    path = _duplicates_file(tmp_path / "dups.csv")
    load = ("import", "csv", str(path), "--source", "Leads", "--no-join-by-email", "--no-merge", "--json")
    merge = ("merge", "--auto", "--json")
    merged_away = MERGE_GROUPS * 5 // 2 - MERGE_GROUPS

    with fresh_database(kind, tmp_path, "clean") as (engine, url):
        assert cli(url, tmp_path, *load).returncode == 0
        done = cli(url, tmp_path, *merge)
        assert done.returncode == 0, done.stderr
        clean, clean_merges = snapshot(engine), _merge_state(engine)
    groups, events, problems = clean_merges
    assert not problems
    assert sum(events.values()) == merged_away
    assert len(groups) == MERGE_CUSTOMERS - merged_away
    assert sum(clean["customers"].values()) == MERGE_CUSTOMERS - merged_away

    for seed in SEEDS:
        rng = random.Random(seed)
        after_events, extra = rng.randint(0, int(merged_away * 0.6)), rng.uniform(0, 0.01)
        print(f"merge kill seed={seed}: SIGKILL {extra * 1000:.1f} ms after {after_events} merges are in ({kind})")
        with fresh_database(kind, tmp_path, f"killed-{seed}") as (engine, url):
            assert cli(url, tmp_path, *load).returncode == 0
            proc = subprocess.Popen([sys.executable, "-c", _MERGE_CLI, str(MERGE_BATCH), *merge],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=cli_env(url, tmp_path), cwd=ROOT, start_new_session=True)
            seen: list[float] = []

            def due(engine=engine, after_events=after_events, extra=extra, seen=seen) -> bool:  # type: ignore[no-untyped-def]
                # A batch commits every few milliseconds: poll without sleeping beyond ``_kill``'s own.
                if not seen:
                    with engine.connect() as conn:
                        if conn.execute(select(func.count()).select_from(merge_events)).scalar_one() >= after_events:
                            seen.append(time.monotonic())
                    return False
                return time.monotonic() - seen[0] >= extra

            assert _kill(proc, due), f"seed {seed}: ran to the end"
            _, killed_events, killed_problems = _merge_state(engine)
            print(f"  killed with {sum(killed_events.values())} of {merged_away} merges in")
            assert sum(killed_events.values()) < merged_away, f"seed {seed}: every merge was in before the kill"
            assert not killed_problems, f"seed {seed}: half-merged after the kill: {killed_problems}"
            rerun = cli(url, tmp_path, *merge)
            assert rerun.returncode == 0, f"seed {seed}: {rerun.stderr}"
            where = f"seed {seed} (kill {extra * 1000:.1f} ms after {after_events} merges, {kind})"
            diff = differences(clean, snapshot(engine))
            assert not diff, f"{where}:\n{diff}"
            groups_after, events_after, problems_after = _merge_state(engine)
            assert not problems_after, f"{where}: {problems_after}"
            assert groups_after == groups, f"{where}: {len(groups ^ groups_after)} groupings differ"
            assert events_after == events, f"{where}: merge log {events - events_after} missing, " \
                                           f"{events_after - events} extra"
