"""Prefect overhead on a sync: the plain sync engine vs the ``sync-source`` flow, same data.

Serves N Chargebee customers from the local stand-in (``fakes.demo``, real HTTP on 127.0.0.1),
syncs them into a fresh SQLite file once with ``jobs.sync.sync_source`` and once through the
``sync-source`` flow (lock, progress artifact, table artifact, lifecycle events, merge step), and prints
seconds and records/s for each. Prefect: ``PREFECT_API_URL`` if set, else a temporary local server
(its start-up is timed apart).

    python bench/flows.py --customers 5000
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    args = parser.parse_args()

    from fakes.demo import FakeVendorServer, population
    from storage.db import make_engine, upgrade
    from storage.sources import create_source

    home = Path(tempfile.mkdtemp(prefix="bench-flows-"))
    people = population(args.customers, seed=5, prefix="cb_")
    with FakeVendorServer(chargebee_people=people) as vendors:
        urls = {}
        for label in ("plain", "flow"):
            url = f"sqlite:///{home / label}.db"
            engine = make_engine(url)
            upgrade(engine)
            with engine.begin() as conn:
                create_source(conn, "cb", "chargebee", {**vendors.chargebee_settings(), "page_size": 100})
            engine.dispose()
            urls[label] = url

        from jobs.sync import sync_source

        started = time.perf_counter()
        summary = sync_source(urls["plain"], "cb")
        plain = time.perf_counter() - started
        assert summary.totals["created"] == args.customers

        os.environ["FUNNELSYNC_DATABASE_URL"] = urls["flow"]
        from prefect import flow

        @flow
        def warm_up() -> None:
            """Starts Prefect's temporary server when no PREFECT_API_URL is set."""

        started = time.perf_counter()
        warm_up()
        startup = time.perf_counter() - started

        from flows.sync import sync_source_flow

        started = time.perf_counter()
        state = sync_source_flow("cb", return_state=True)
        flowed = time.perf_counter() - started
        assert state.is_completed(), state.message
        assert state.result()["totals"]["created"] == args.customers

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = args.customers
    print(f"customers                      {n:>10,}")
    print(f"plain sync_engine.sync_source  {plain:>9.2f}s  {n / plain:>9,.0f} records/s")
    print(f"sync-source flow (with merge)  {flowed:>9.2f}s  {n / flowed:>9,.0f} records/s")
    print(f"Prefect overhead per run       {flowed - plain:>9.2f}s")
    print(f"first flow run (server start)  {startup:>9.2f}s")
    print(f"peak RSS                       {peak_mb:>9.0f} MB")


if __name__ == "__main__":
    main()
