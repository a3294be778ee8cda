"""Duplicate detection and auto-merge at scale: 1,000,000 customers, 5% of them duplicates across two sources.

The dataset is written with the drivers' bulk paths (sqlite3 ``executemany``, PostgreSQL ``COPY``), not
through the CLI or the upsert: this measures merging, not loading. After the load, ``ANALYZE`` (SQLite) or
``VACUUM ANALYZE`` (PostgreSQL, what autovacuum does to a freshly loaded table on its own).
Source ``crm`` holds one lead per person; source ``billing`` holds a paying subscriber for ``dup-rate``
of the customers, with the same email in another case — so each of those people exists twice and forms
one group (survivor: the billing customer, which has subscriptions).

    python bench/merge.py                                  # 1,000,000 customers, SQLite and PostgreSQL
    python bench/merge.py --customers 100000 --backend sqlite

Prints, per back end (wall seconds, and this process's CPU seconds, which on a shared machine show what
is ours; on PostgreSQL the server's work is not in the CPU figure): load time, detection seconds
(``find_duplicate_groups``, rules email + external_id), detection + merge seconds (``auto_merge``),
customers merged, and peak resident memory.
PostgreSQL comes from ``FUNNELSYNC_TEST_POSTGRES_URL`` (default: the local test server); the bench
uses a throw-away schema.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _db import bench_database  # noqa: E402
from sqlalchemy import Engine, func, select, text

from storage.db import make_engine
from storage.duplicates import find_duplicate_groups
from storage.merge import auto_merge
from storage.schema import customers, merge_events
from storage.types import to_epoch_us

T0 = datetime(2024, 1, 1, tzinfo=UTC)
CHUNK = 50_000

CUSTOMER_COLS = ("id", "uuid", "created_at", "updated_at", "name", "email", "email_norm", "company", "country",
                 "status", "lead_created_at", "free_trial_started_at", "subscriber_since", "tags", "custom",
                 "has_subscriptions")
SC_COLS = ("id", "data_source_id", "external_id", "customer_id", "linked_at", "name", "email", "email_norm",
           "company", "country", "lead_created_at", "free_trial_started_at", "tags", "custom", "fingerprint",
           "created_at", "updated_at")
SUB_COLS = ("source_customer_id", "external_id", "state", "trial_started_at", "first_paid_at", "updated_at")


def rss_mb() -> float:
    """Peak resident set size of this process, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def dataset(n: int, dup_rate: float) -> Iterator[tuple[list[tuple], list[tuple], list[tuple]]]:
    """Chunks of (customers, source customers, subscriptions) rows with Python values (aware datetimes)."""
    dups = int(n * dup_rate)
    people = n - dups
    step = max(1, people // dups) if dups else 0
    billing_of = {p * step: k for k, p in enumerate(range(dups))} if dups else {}
    cid = 0
    for start in range(0, people, CHUNK):
        cust, scs, subs = [], [], []
        for p in range(start, min(people, start + CHUNK)):
            email = f"person{p}@company{p % 997}.com"
            created = T0 + timedelta(seconds=p)
            lead_at = created - timedelta(days=30)
            trial_at = lead_at + timedelta(days=2) if p % 3 == 0 else None
            cid += 1
            cust.append((cid, f"cus_{uuid.uuid4()}", created, created, f"Person {p}", email, email,
                         None, "US", "New_Lead", lead_at, trial_at, None, "[]", "{}", False))
            scs.append((cid, 1, f"L{p}", cid, created, f"Person {p}", email, email, None, "US", lead_at,
                        trial_at, "[]", "{}", "x" * 16, created, created))
            k = billing_of.get(p)
            if k is not None:
                # The same person as a subscriber, a month later, in another source and another case.
                cid += 1
                b_created = created + timedelta(days=30)
                b_email = email.upper()
                paid = b_created + timedelta(days=14)
                cust.append((cid, f"cus_{uuid.uuid4()}", b_created, b_created, None, b_email, email,
                             f"Company {p % 997}", None, "Active", None, b_created, paid, "[]", "{}", True))
                scs.append((cid, 2, f"cus_B{k}", cid, b_created, None, b_email, email, f"Company {p % 997}",
                            None, None, b_created, "[]", "{}", "y" * 16, b_created, b_created))
                subs.append((cid, f"sub_{k}", "active", b_created, paid, b_created))
        yield cust, scs, subs


def load(engine: Engine, n: int, dup_rate: float) -> int:
    """Bulk-load the dataset; return the number of customers written."""
    total = 0
    with engine.begin() as conn:
        now = datetime.now(UTC)
        for ds_id, name, kind in ((1, "crm", "custom"), (2, "billing", "stripe")):
            conn.execute(text("INSERT INTO data_sources (id, uuid, name, kind, settings, enabled, created_at) "
                              "VALUES (:i, :u, :n, :k, '{}', :e, :c)"),
                         {"i": ds_id, "u": f"ds_{uuid.uuid4()}", "n": name, "k": kind, "e": True,
                          "c": now if engine.dialect.name == "postgresql" else to_epoch_us(now)})
        raw = conn.connection.driver_connection
        for cust, scs, subs in dataset(n, dup_rate):
            total += len(cust)
            if engine.dialect.name == "sqlite":
                _sqlite_insert(raw, "customers", CUSTOMER_COLS, cust)
                _sqlite_insert(raw, "source_customers", SC_COLS, scs)
                _sqlite_insert(raw, "subscriptions", SUB_COLS, subs)
            else:
                _pg_copy(raw, "customers", CUSTOMER_COLS, cust)
                _pg_copy(raw, "source_customers", SC_COLS, scs)
                _pg_copy(raw, "subscriptions", SUB_COLS, subs)
        if engine.dialect.name == "postgresql":
            for table in ("customers", "source_customers", "data_sources"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT max(id) FROM {table}))"))
    # PostgreSQL: VACUUM as well, the state autovacuum leaves a table in within a minute or so of a load
    # (its insert threshold, PostgreSQL 13 and later; this machine's server runs with autovacuum off): the
    # pages are marked all-visible, which decides the detection plan (storage/duplicates.py).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"))
    return total


def _sqlite_insert(raw, table: str, cols: tuple[str, ...], rows: list[tuple]) -> None:  # type: ignore[no-untyped-def]
    def conv(v):  # type: ignore[no-untyped-def]
        return to_epoch_us(v) if isinstance(v, datetime) else v

    marks = ", ".join("?" for _ in cols)
    raw.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})",
                    [tuple(conv(v) for v in row) for row in rows])


def _pg_copy(raw, table: str, cols: tuple[str, ...], rows: list[tuple]) -> None:  # type: ignore[no-untyped-def]
    with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def run(engine: Engine, n: int, dup_rate: float) -> None:
    started = time.perf_counter()
    loaded = load(engine, n, dup_rate)
    print(f"  loaded {loaded:,} customers in {time.perf_counter() - started:.1f} s (rss {rss_mb():.0f} MB)")

    started, cpu = time.perf_counter(), time.process_time()
    with engine.connect() as conn:
        groups = find_duplicate_groups(conn)
    detection = time.perf_counter() - started
    print(f"  detection: {len(groups):,} groups in {detection:.2f} s "
          f"(this process's CPU {time.process_time() - cpu:.2f} s; rss {rss_mb():.0f} MB)")

    started, cpu = time.perf_counter(), time.process_time()
    result = auto_merge(engine)
    total = time.perf_counter() - started
    cpu = time.process_time() - cpu
    with engine.connect() as conn:
        left = conn.execute(select(func.count()).select_from(customers)).scalar_one()
        events = conn.execute(select(func.count()).select_from(merge_events)).scalar_one()
    print(f"  detection + merge: {result.merged_customers:,} customers merged in {total:.2f} s, CPU {cpu:.2f} s "
          f"(detection {result.detection_seconds:.2f} s, merge {result.merge_seconds:.2f} s, "
          f"{result.merged_customers / max(result.merge_seconds, 1e-9):,.0f} merges/s)")
    print(f"  customers left {left:,}, merge events {events:,}, peak rss {rss_mb():.0f} MB")
    assert left == loaded - result.merged_customers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--dup-rate", type=float, default=0.05)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    print(f"merge bench: {args.customers:,} customers, {args.dup_rate:.0%} duplicates across two sources")
    for kind in ("sqlite", "postgresql"):
        if args.backend in (kind, "both"):
            print("SQLite" if kind == "sqlite" else "PostgreSQL")
            with bench_database(kind) as url:
                engine = make_engine(url)
                try:
                    run(engine, args.customers, args.dup_rate)
                finally:
                    engine.dispose()

if __name__ == "__main__":
    main()
