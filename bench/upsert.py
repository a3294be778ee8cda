"""Benchmark: batched upsert of N synthetic source customers into SQLite and PostgreSQL.

For each database: a first upsert (every record new: a customer and a source customer each), then
the same records again (every record unchanged: nothing is written). Prints rows/s per phase and the
process's peak resident memory. Records are generated and written in batches, never held all at once.

The first upsert runs as a large import into an empty source does (jobs/imports.py): records are
produced and prepared (``storage.row_values.prepare_records``) in a reader process and this one writes them
(``upsert_prepared``, with ``fresh_load``: the keys are unique and the source was empty, so the lookup of
existing records is skipped). The re-upsert runs inline, as a re-import of a known file does: an unchanged
record needs only its fingerprint, cheaper to compute here than to ship. ``--inline`` runs the first
upsert inline too (``upsert_records``), for comparison.

    python bench/upsert.py [--rows 1000000] [--batch 5000] [--only sqlite|postgresql] [--inline]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _db import bench_database  # noqa: E402
from sqlalchemy import Engine  # noqa: E402

from funnelsync.records import SourceCustomerRecord, SubscriptionFact  # noqa: E402

T0 = datetime(2023, 1, 1, tzinfo=timezone.utc)
COUNTRIES = ("US", "GB", "DE", "FR", "BR", "IN", "JP", "CA")


def batches(rows: int, size: int) -> Iterator[list[SourceCustomerRecord]]:
    """Synthetic records, ~100 bytes of profile each; every 4th has a paid subscription."""
    for start in range(0, rows, size):
        batch = []
        for i in range(start, min(rows, start + size)):
            lead = T0 + timedelta(minutes=i)
            subs = None
            trial = None
            if i % 3 == 0:
                trial = lead + timedelta(days=1)
                paid = lead + timedelta(days=15) if i % 4 == 0 else None
                subs = [SubscriptionFact(f"sub_{i}", "active" if paid else "trialing", trial_started_at=trial,
                                         first_paid_at=paid)]
            batch.append(SourceCustomerRecord(
                external_id=f"cus_{i:08d}", name=f"Customer {i}", email=f"user{i}@example.com",
                company=f"Company {i % 5000}", country=COUNTRIES[i % len(COUNTRIES)],
                lead_created_at=lead, free_trial_started_at=trial, subscriptions=subs,
            ))
        yield batch


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepared_batches(rows: int, size: int, sqlite: bool) -> Iterator[list[Any]]:
    """``batches`` prepared for the database (run in the reader process)."""
    from storage.row_values import prepare_records

    for batch in batches(rows, size):
        yield prepare_records(batch, sqlite=sqlite)


def run_one(kind: str, rows: int, size: int, inline: bool) -> None:
    from storage.db import make_engine

    with bench_database(kind) as url:
        engine = make_engine(url)
        try:
            _measure(engine, kind, rows, size, inline)
        finally:
            engine.dispose()


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _measure(engine: Engine, kind: str, rows: int, size: int, inline: bool) -> None:
    from jobs.readahead import prefetched, rare_gc, read_in_child
    from storage.bulk_load import bulk_load
    from storage.sources import create_source
    from storage.upsert import UpsertResult, fresh_load, upsert_prepared, upsert_records

    with engine.begin() as conn:
        ds_id = create_source(conn, "bench", "csv").id
    for phase in ("first upsert", "unchanged re-upsert"):
        in_child = phase == "first upsert" and not inline
        total = UpsertResult()
        started = time.perf_counter()
        cpu_started = time.process_time() + _children_cpu()
        # As a sync runs its batches (jobs/sync.py): the cyclic GC runs rarely, and a load that
        # has brought as many new records as the table held defers indexes until it ends
        # (storage.bulk_load): the figure includes that rebuild. A sync reads its next pages on a thread
        # (jobs.readahead), where they wait on the network; generating records here is pure Python
        # work, which on a thread only competes for the interpreter lock with SQLite's writer (measured
        # the same hour: unchanged re-upsert 94.8k rows/s inline, 66.8k on a thread), so only PostgreSQL,
        # whose writing happens in the server, gets it.
        with rare_gc(), bulk_load(engine) as load:
            if in_child:
                with engine.connect() as conn:
                    fresh = fresh_load(conn, ds_id)
                for prepared in read_in_child(lambda: prepared_batches(rows, size, kind == "sqlite")):
                    with engine.begin() as conn:
                        result = upsert_prepared(conn, ds_id, prepared, fresh=fresh)
                    load.written(result.created)
                    total.add(result)
                    total.touched_customer_ids.clear()
                    total.created_customer_ids.clear()
            else:
                for batch in prefetched(batches(rows, size), 0 if kind == "sqlite" else 2):
                    with engine.begin() as conn:
                        result = upsert_records(conn, ds_id, batch)
                    load.written(result.created)
                    total.add(result)
                    total.touched_customer_ids.clear()
                    total.created_customer_ids.clear()
        seconds = time.perf_counter() - started
        cpu = time.process_time() + _children_cpu() - cpu_started
        # CPU seconds of this process and its reader (for SQLite: all the work; for PostgreSQL: the client
        # side only) say what the code costs when the shared machine is busy and wall-clock figures are not.
        how = "reader process" if in_child else "inline"
        print(f"{kind:10s} {phase:20s} {how:14s} {rows:>9,} rows {seconds:7.1f} s {rows / seconds:>9,.0f} rows/s "
              f"(CPU {cpu:6.1f} s, {rows / cpu:>9,.0f} rows per CPU-s) "
              f"created={total.created} updated={total.updated} unchanged={total.unchanged} "
              f"peak RSS so far {peak_mb():.0f} MB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--inline", action="store_true", help="first upsert without a reader process")
    args = parser.parse_args()
    if args.only:
        run_one(args.only, args.rows, args.batch, args.inline)
        return
    print(f"funnelsync bench/upsert.py: {args.rows:,} records, batches of {args.batch:,}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}")
    # One process per database so each peak-memory figure is its own.
    for kind in ("sqlite", "postgresql"):
        subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--batch", str(args.batch),
                        "--only", kind, *(["--inline"] if args.inline else [])], check=True)


if __name__ == "__main__":
    main()
