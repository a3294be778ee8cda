"""The lifecycle step of an import: ``collect_lifecycle_changes`` after N new customers, SQLite and PostgreSQL.

Imports a generated N-row CSV with ``jobs.imports.import_csv`` (which finds no lifecycle changes itself),
then times, each in a transaction rolled back afterwards so that every repeat sees the same state:

- ``first``: ``updated_since`` the import's start, as ``jobs.runs`` calls it (every customer new, up to three
  steps each, ``keep`` of them itemised);
- ``ids``: the same customers given by id, as ``jobs.merging`` gives survivors;
- ``nothing``: after the first's marks are committed, ``updated_since`` now (a sync that changed nothing
  still looks for steps a killed run never announced).

    python bench/lifecycle.py                           # 200,000 rows, both databases
    python bench/lifecycle.py --rows 1000000 --only sqlite --repeat 5

Prints wall seconds and this process's CPU seconds per repeat (on PostgreSQL the server's work is in the
wall figure only), with the counts found.
PostgreSQL comes from ``FUNNELSYNC_TEST_POSTGRES_URL`` (default: the local test server); the bench uses a
throw-away schema.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _db import bench_database  # noqa: E402
from import_csv import generate  # noqa: E402
from sqlalchemy import Connection, select

from jobs.imports import import_csv
from storage.db import make_engine
from storage.lifecycle import LifecycleReport, collect_lifecycle_changes
from storage.schema import customers

KEEP = 1_000  # what jobs.runs itemises (MAX_ITEMISED_CHANGES)


def timed(engine, run: Callable[[Connection], LifecycleReport], repeat: int, commit_last: bool = False):  # type: ignore[no-untyped-def]
    """(wall s, CPU s) of each of ``repeat`` runs, each rolled back (the last committed if asked), and a report."""
    figures: list[tuple[float, float]] = []
    report = LifecycleReport()
    for attempt in range(repeat):
        with engine.connect() as conn:
            trans = conn.begin()
            wall, cpu = time.perf_counter(), time.process_time()
            report = run(conn)
            figures.append((time.perf_counter() - wall, time.process_time() - cpu))
            if commit_last and attempt == repeat - 1:
                trans.commit()
            else:
                trans.rollback()
    return figures, report


def show(kind: str, label: str, figures: list[tuple[float, float]], report: LifecycleReport) -> None:
    """One line: every repeat's wall/CPU seconds, then the counts and how many were itemised."""
    runs = "  ".join(f"{wall:6.3f}/{cpu:6.3f}" for wall, cpu in figures)
    counts = ", ".join(f"{k} {v:,}" for k, v in report.counts.items()) or "none"
    print(f"{kind:10} {label:8} wall/CPU s {runs}   ({counts}; itemised {len(report.changes):,})", flush=True)


def bench(kind: str, path: Path, rows: int, repeat: int) -> None:
    """Import ``path`` into a fresh database of ``kind``, then time the three cases."""
    with bench_database(kind) as url:
        engine = make_engine(url)
        started = datetime.now(UTC)
        wall = time.perf_counter()
        import_csv(engine, path, "bench", tz=UTC)
        print(f"{kind:10} import   {time.perf_counter() - wall:6.1f} s ({rows:,} rows)", flush=True)
        with engine.connect() as conn:
            ids = list(conn.execute(select(customers.c.id).order_by(customers.c.id)).scalars())
        show(kind, "ids", *timed(engine, lambda c: collect_lifecycle_changes(c, ids, keep=KEEP), repeat))
        show(kind, "first", *timed(
            engine, lambda c: collect_lifecycle_changes(c, updated_since=started, keep=KEEP), repeat, commit_last=True
        ))
        now = datetime.now(UTC)
        show(kind, "nothing", *timed(
            engine, lambda c: collect_lifecycle_changes(c, updated_since=now, keep=KEEP), repeat
        ))
        engine.dispose()


def main() -> None:
    """Generate, import once per database, time the lifecycle step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="funnelsync-bench-") as tmp:
        path = Path(tmp) / "customers.csv"
        generate(path, args.rows)
        for kind in ("sqlite", "postgresql"):
            if not args.only or kind == args.only:
                bench(kind, path, args.rows, args.repeat)


if __name__ == "__main__":
    main()
