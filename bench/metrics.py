"""Benchmark: funnel series and trial cohort table over 1,000,000 customers spread over 3 years.

    python bench/metrics.py                     # both databases, 1M customers
    python bench/metrics.py --n 100000 --db sqlite
    FUNNELSYNC_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test python bench/metrics.py

Customers are bulk-inserted straight into ``customers`` (raw ``executemany`` on SQLite, ``COPY`` on
PostgreSQL; the daily metric counts suspended meanwhile and recounted after, as a large import does),
then the statistics are refreshed (ANALYZE / VACUUM ANALYZE, what autovacuum does in
production; repeated until the pages are all-visible, see ``load_postgres``). Each query is timed three
times; the median is printed in seconds, with peak RSS. Each funnel series is also timed scanning
``customers`` (``use_counts=False``, the path without the daily counts) in the same run.
Targets: under 2 s each on SQLite, under 1 s on PostgreSQL.
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _db import bench_database  # noqa: E402
from sqlalchemy import Engine, text

from storage.db import make_engine
from storage.metric_counts import resume, suspend
from storage.metrics import funnel_series, trial_cohorts
from storage.types import to_epoch_us

START = datetime(2023, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 3 * 365 * 86_400
COLUMNS = (
    "uuid",
    "created_at",
    "updated_at",
    "status",
    "tags",
    "custom",
    "has_subscriptions",
    "country",
    "lead_created_at",
    "free_trial_started_at",
    "subscriber_since",
)


def customers(n: int, seed: int = 6) -> Iterator[tuple]:
    """Deterministic customers: 90 % with a lead date, 40 % with a trial, ~20 % subscribed."""
    rng = random.Random(seed)
    countries = ("US", "DE", "FR", "GB", "BR", None)
    now = START + timedelta(seconds=SPAN_SECONDS)
    for i in range(n):
        first = START + timedelta(seconds=rng.randrange(SPAN_SECONDS))
        lead = first if rng.random() < 0.9 else None
        trial = first + timedelta(seconds=rng.randrange(5 * 86_400)) if rng.random() < 0.4 else None
        sub = None
        if rng.random() < 0.5:
            base = trial or first
            sub = base + timedelta(seconds=rng.randrange(120 * 86_400))
            if sub > now:
                sub = None
        status = "Active" if sub else "New_Lead"
        yield (
            f"cus_bench{i:09d}",
            now,
            now,
            status,
            "[]",
            "{}",
            sub is not None,
            rng.choice(countries),
            lead,
            trial,
            sub,
        )


def load_sqlite(engine: Engine, n: int) -> None:
    def convert(row: tuple) -> tuple:
        return (
            *row[:1],
            to_epoch_us(row[1]),
            to_epoch_us(row[2]),
            *row[3:8],
            *(to_epoch_us(v) if v else None for v in row[8:]),
        )

    sql = f"INSERT INTO customers ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        batch: list[tuple] = []
        for row in customers(n):
            batch.append(convert(row))
            if len(batch) == 50_000:
                cur.executemany(sql, batch)
                batch.clear()
        cur.executemany(sql, batch)
        raw.commit()
        cur.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()


def load_postgres(engine: Engine, n: int) -> None:
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        with cur.copy(f"COPY customers ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in customers(n):
                copy.write_row(row)
        raw.commit()
    finally:
        raw.close()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # VACUUM marks pages all-visible (what makes index-only scans skip the heap) only when no older
        # snapshot is open anywhere in the cluster; on a shared server, retry as autovacuum would.
        for attempt in range(10):  # noqa: B007 - printed after the loop
            conn.execute(text("VACUUM ANALYZE customers"))
            visible = conn.execute(
                text(
                    "SELECT relallvisible::float8 / greatest(relpages, 1) FROM pg_class "
                    "WHERE oid = 'customers'::regclass"
                )
            ).scalar_one()
            if visible >= 0.99:
                break
            time.sleep(3)
        print(f"[postgresql] all-visible pages after VACUUM: {visible:.0%} ({attempt + 1} VACUUM runs)")


def timed(fn: Callable[[], object], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def run(name: str, engine: Engine, n: int) -> None:
    # Loaded as a large import loads (storage.bulk_load): the daily counts' triggers suspended during the
    # writes, everything recounted once at the end.
    with engine.begin() as conn:
        suspend(conn)
    began = time.perf_counter()
    (load_sqlite if name == "sqlite" else load_postgres)(engine, n)
    print(f"[{name}] loaded {n:,} customers in {time.perf_counter() - began:.1f} s")
    began = time.perf_counter()
    with engine.begin() as conn:
        resume(conn)
    print(f"[{name}] daily metric counts recounted in {time.perf_counter() - began:.1f} s")
    start, end = date(2023, 1, 1), date(2025, 12, 31)
    with engine.connect() as conn:
        series = funnel_series(conn, start, end, "month")
        # The counts and the scan agree (the mean sales cycle to float rounding: summed in another order).
        for counted, scanned in zip(series, funnel_series(conn, start, end, "month", use_counts=False), strict=True):
            a, b = counted.pop("avg_sales_cycle_days"), scanned.pop("avg_sales_cycle_days")
            assert counted == scanned and (a is b or abs(a - b) <= 1e-9 * abs(b)), (counted, scanned)
        series = funnel_series(conn, start, end, "month")
        assert len(series) == 36
        leads = sum(r["leads"] for r in series)
        cases = {
            "funnel series, 36 months, all metrics": lambda **kw: funnel_series(conn, start, end, "month", **kw),
            "trial cohort table, 36 months": lambda: trial_cohorts(conn, start, end, "month"),
            "funnel series, 36 months, within 30 days": lambda: funnel_series(conn, start, end, "month", 30),
            "funnel series, 156 weeks": lambda **kw: funnel_series(conn, start, end, "week", **kw),
            "funnel series, 1,096 days": lambda **kw: funnel_series(conn, start, end, "day", **kw),
            "funnel series, 36 months, --where country = US": lambda **kw: funnel_series(
                conn, start, end, "month", filters=["country = US"], **kw
            ),
        }
        for label, fn in cases.items():
            line = f"[{name}] {label}: {timed(fn):.3f} s"
            if label.startswith("funnel series") and "within" not in label:
                # The same series scanned from customers (the path without the counts), in the same run.
                scan = timed(lambda fn=fn: fn(use_counts=False))  # type: ignore[misc]
                line += f"  (scan {scan:.3f} s)"
            print(line)
    print(
        f"[{name}] leads counted: {leads:,}; "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="customers to generate")
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both")
    args = parser.parse_args()
    for kind in ("sqlite", "postgresql"):
        if args.db in (kind, "both"):
            with bench_database(kind) as url:
                engine = make_engine(url)
                try:
                    run(kind, engine, args.n)
                finally:
                    engine.dispose()

if __name__ == "__main__":
    main()
