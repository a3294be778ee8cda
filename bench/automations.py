"""Benchmark automations: the cost of detection in an import, and dispatch throughput.

1. Detection and enqueueing: one CSV import of N customers who all enter a trial, into an empty
   database without rules and into one with a ``trial_started`` rule (a webhook action), each on a
   fresh database. Prints both imports' wall time, the difference, and the time spent inside the
   detection hook itself (``storage.outbox.detect_changes``, timed around each call).
2. Dispatch: M pending webhook deliveries sent by ``run_automations`` to a local receiver on 127.0.0.1
   (``fakes.hook_receiver``, checking every signature); prints deliveries/s.

    python bench/automations.py                       # 100,000 customers, 5,000 deliveries, both databases
    python bench/automations.py --rows 20000 --deliveries 2000 --only sqlite

Targets: the added cost under 3 s on SQLite and under 5 s on PostgreSQL; at least 500
deliveries/s. Wall-clock figures depend on how busy the machine is: the load average is printed.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _db import bench_database

RULE = """
automations:
  - name: trials
    trigger: trial_started
    actions:
      - webhook: {{url: "{url}", secret: "env:BENCH_HOOK_SECRET"}}
"""


def generate(path: Path, rows: int) -> None:
    """A flexible CSV of ``rows`` customers, every one with a lead date and a trial start."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write("Customer ID,Name,E-mail,Country,Signup Date,Trial Start\n")
        for i in range(rows):
            day, month = i % 28 + 1, i % 12 + 1
            handle.write(f"cus-{i},Customer {i},user{i}@example.com,US,2024-{month:02d}-{day:02d},"
                         f"2024-{month:02d}-{day:02d}T12:00:00Z\n")


def _apply(engine, url: str) -> None:  # type: ignore[no-untyped-def]
    from automations.apply import apply_definitions
    from automations.rule_file import parse_rule_text

    with engine.begin() as conn:
        apply_definitions(conn, parse_rule_text(RULE.format(url=url)))


def _backend_cpu(conn: Any) -> float:
    """CPU seconds the PostgreSQL server process of this connection has used so far (a local server:
    its /proc entry), 0.0 on SQLite (whose work is the calling thread's own CPU)."""
    if conn.dialect.name != "postgresql":
        return 0.0
    pid = conn.info.get("bench_backend_pid")
    if pid is None:
        pid = conn.info["bench_backend_pid"] = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_import(url: str, path: Path, with_rule: bool, hook_url: str) -> tuple[float, float, int, float, float]:
    """(wall seconds of the import, seconds inside the detection hook, occurrences enqueued, CPU seconds of
    the hook's thread, CPU seconds of the PostgreSQL server process during the hook: the two figures the
    machine's load does not inflate)."""
    import storage.upsert as upsert_module
    from jobs.imports import import_csv
    from storage.db import make_engine

    engine = make_engine(url)
    if with_rule:
        _apply(engine, hook_url)
    inner = upsert_module.detect_changes
    spent = [0.0, 0, 0.0, 0.0]

    def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
        server = _backend_cpu(args[0])
        started, cpu = time.perf_counter(), time.thread_time()
        count = inner(*args, **kwargs)
        spent[0] += time.perf_counter() - started
        spent[2] += time.thread_time() - cpu
        spent[3] += _backend_cpu(args[0]) - server
        spent[1] += count
        return count

    upsert_module.detect_changes = timed  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        import_csv(engine, path, "bench", tz=UTC)
        wall = time.perf_counter() - started
    finally:
        upsert_module.detect_changes = inner  # type: ignore[assignment]
        engine.dispose()
    return wall, spent[0], int(spent[1]), spent[2], spent[3]


def _serve(secret: str, urls: multiprocessing.Queue, stop: Any, counts: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    from fakes.hook_receiver import HookReceiver

    receiver = HookReceiver(secret=secret, record=False).start()
    urls.put(receiver.url)
    stop.wait()
    counts.put(receiver.count)
    receiver.stop()


def dispatch(url: str, deliveries: int, path: Path) -> tuple[float, int, int]:
    """(seconds, delivered, requests the receiver verified) of one run over ``deliveries`` pending ones.

    The receiver runs in a process of its own, as a real endpoint would: sharing the sender's
    interpreter lock would measure the receiver too.
    """
    from automations.dispatch import run_automations
    from jobs.imports import import_csv
    from storage.db import make_engine

    urls: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    counts: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    stop = multiprocessing.Event()
    server = multiprocessing.Process(target=_serve, args=(os.environ["BENCH_HOOK_SECRET"], urls, stop, counts))
    server.start()
    engine = make_engine(url)
    try:
        _apply(engine, urls.get(timeout=60))
        generate(path, deliveries)
        import_csv(engine, path, "bench", tz=UTC)
        started = time.perf_counter()
        summary = run_automations(engine)
        seconds = time.perf_counter() - started
        stop.set()
        return seconds, summary.delivered, int(counts.get(timeout=60))
    finally:
        stop.set()
        server.join(timeout=30)
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--deliveries", type=int, default=5_000)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args()
    os.environ.setdefault("BENCH_HOOK_SECRET", "bench-secret")
    kinds = [args.only] if args.only else ["sqlite", "postgresql"]
    with tempfile.TemporaryDirectory(prefix="funnelsync-bench-automations-") as folder:
        csv_path = Path(folder) / "trials.csv"
        generate(csv_path, args.rows)
        for kind in kinds:
            print(f"[{kind}] load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            with bench_database(kind) as url:
                plain, _, _, _, _ = timed_import(url, csv_path, False, "http://127.0.0.1:9/unused")
            with bench_database(kind) as url:
                ruled, hook, enqueued, hook_cpu, server_cpu = timed_import(url, csv_path, True,
                                                                           "http://127.0.0.1:9/unused")
            server = f", {server_cpu:.2f} s CPU of the PostgreSQL server" if kind == "postgresql" else ""
            print(f"[{kind}] import of {args.rows:,} customers entering trials: {plain:.2f} s without rules, "
                  f"{ruled:.2f} s with a trial_started rule; added {ruled - plain:+.2f} s "
                  f"(inside detection and enqueueing: {hook:.2f} s wall, {hook_cpu:.2f} s CPU here{server}, "
                  f"{enqueued:,} occurrences)")
            with bench_database(kind) as url:
                seconds, delivered, verified = dispatch(url, args.deliveries, Path(folder) / "small.csv")
            print(f"[{kind}] dispatch: {delivered:,} webhook deliveries in {seconds:.2f} s = "
                  f"{delivered / seconds:,.0f} deliveries/s (receiver verified {verified:,} signatures)")
            print(f"[{kind}] load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
