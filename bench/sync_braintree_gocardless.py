"""Braintree and GoCardless syncs end to end into SQLite, against their fake APIs served in-process.

The fakes (``fakes/``) run under respx in the SAME process and thread as the sync, so their
work (sorting, JSON and XML serialisation of every page) is included in the time: the figure is a
lower bound of what the connectors reach against a real server. Every record goes through the real
connector, HTTP client (httpx), mapping, ``upsert_records`` and the cursor commit.

    python bench/sync_braintree_gocardless.py                  # 20,000 customers each
    python bench/sync_braintree_gocardless.py --records 2000   # a quick run

Prints, per connector, records/s of a full refresh and of an unchanged second full refresh, and the
peak resident memory of the process.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import respx

from fakes.braintree import BraintreeFake
from fakes.gocardless import GoCardlessFake
from jobs.sync import sync_source
from storage.db import make_engine, upgrade
from storage.sources import create_source


def bench(kind: str, records: int, directory: Path) -> None:
    fake = BraintreeFake(n=records, page_size=50) if kind == "braintree" else GoCardlessFake(records, 500)
    if kind == "braintree":
        fake.xml_page_size = 50  # the real gateway's page size
    engine = make_engine(f"sqlite:///{directory / f'{kind}.db'}")
    upgrade(engine)
    with engine.begin() as conn:
        create_source(conn, kind, kind, fake.settings())
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        for label in ("first full refresh", "unchanged re-run"):
            started = time.perf_counter()
            summary = sync_source(engine, kind, full_refresh=True, batch_size=5000)
            seconds = time.perf_counter() - started
            total = summary.totals
            print(
                f"{kind:10s} {label:18s} {total['fetched']:>7d} fetched, {total['created']:>7d} created, "
                f"{total['unchanged']:>7d} unchanged in {seconds:6.1f} s = {total['fetched'] / seconds:8.0f} records/s"
            )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--only", choices=("braintree", "gocardless"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("gocardless", "braintree"):
            if args.only in (None, kind):
                bench(kind, args.records, Path(tmp))
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
