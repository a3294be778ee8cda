"""Benchmark the flexible CSV import: a generated N-row file into SQLite and PostgreSQL.

Prints, per database, rows/s and peak resident memory of the first import and of an unchanged
re-import of the same file. Each import runs in its own child process so its peak memory is its own.

    python bench/import_csv.py                      # 1,000,000 rows, both databases
    python bench/import_csv.py --rows 100000 --only sqlite

Targets (issue 3): ≥ 40,000 rows/s into SQLite, ≥ 25,000 rows/s into PostgreSQL, peak < 500 MB, and
the unchanged re-import at least twice as fast as the first. Wall-clock rows/s depend on how busy the
machine is; the CPU rows/s of the importing process (with its file reader) is printed alongside.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import resource
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _db import bench_database

COUNTRIES = ("US", "DE", "FR", "GB", "NL", "ES", "IT", "CA", "AU", "BR")


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """Write a flexible CSV of ``rows`` customers (~110 bytes a row): ids, emails, names, three dates."""
    rnd = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("Customer ID,Name,E-mail,Company,Country,Signup Date,Trial Start,Customer Since\n")
        for i in range(rows):
            day, month = rnd.randint(1, 28), rnd.randint(1, 12)
            trial = f"2024-{month:02d}-{day:02d}T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:00Z"
            since = str(1_717_200_000 + rnd.randint(0, 10_000_000)) if i % 4 == 0 else ""
            handle.write(
                f"cus-{i},Customer {i},user{i}@example{i % 997}.com,Company {i % 5000},{COUNTRIES[i % 10]},"
                f"{day:02d}/{month:02d}/2024,{trial},{since}\n"
            )


def _run_import(url: str, path: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from datetime import timezone

    from jobs.imports import import_csv
    from storage.db import make_engine

    engine = make_engine(url)
    started = time.perf_counter()
    cpu_started = time.process_time()
    summary = import_csv(engine, path, "bench", tz=timezone.utc)
    seconds = time.perf_counter() - started
    # The import parses the file in a child process of its own (jobs.readahead.read_in_child): its CPU
    # time and its peak memory count too (RUSAGE_CHILDREN: the children that have ended and been waited for).
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - cpu_started + children.ru_utime + children.ru_stime
    peak_mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, children.ru_maxrss) / 1024
    engine.dispose()
    queue.put((seconds, cpu, peak_mb, summary.created, summary.updated, summary.unchanged, summary.rejected))


def measure(url: str, path: Path) -> tuple[float, float, float, int, int, int, int]:
    """One import in a fresh process: (seconds, CPU seconds, peak MB, created, updated, unchanged, rejected)."""
    queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    child = multiprocessing.Process(target=_run_import, args=(url, str(path), queue))
    child.start()
    while True:
        try:
            result = queue.get(timeout=1)
            break
        except Empty:
            if not child.is_alive():
                raise SystemExit(
                    f"the import process failed (exit code {child.exitcode}); its traceback is above"
                ) from None
    child.join()
    return result


def main() -> None:
    """Generate, import twice per database, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="funnelsync-bench-") as tmp:
        workdir = Path(tmp)
        path = workdir / "customers.csv"
        started = time.perf_counter()
        generate(path, args.rows)
        size_mb = path.stat().st_size / 1e6
        print(f"generated {args.rows:,} rows ({size_mb:.0f} MB) in {time.perf_counter() - started:.1f} s")
        for kind in ("sqlite", "postgresql"):
            if args.only and kind != args.only:
                continue
            with bench_database(kind) as url:
                first = measure(url, path)
                second = measure(url, path)
            for label, (seconds, cpu, peak, created, updated, unchanged, rejected) in (
                ("first", first), ("re-import", second)
            ):
                # CPU rows/s counts the importing process and its file reader (SQLite runs inside it;
                # PostgreSQL's server work is not included): on a shared, loaded machine it is steadier.
                # Peak is the larger of the importing process and its reader.
                print(
                    f"{kind:10} {label:9} {args.rows / seconds:9,.0f} rows/s  {seconds:7.1f} s  "
                    f"(CPU {args.rows / cpu:9,.0f} rows/s)  peak {peak:6.0f} MB  "
                    f"created {created:,} updated {updated:,} unchanged {unchanged:,} rejected {rejected:,}"
                )
            print(f"{kind:10} re-import speed-up ×{first[0] / second[0]:.1f}")


if __name__ == "__main__":
    main()
