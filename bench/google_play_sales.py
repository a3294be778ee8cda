"""Import a synthetic Google Play Daily Sales Report (zip) into SQLite and print throughput and memory.

    python bench/google_play_sales.py [ROWS]        # default 50,000 rows

Rows: 40 % trial starts ($0), 30 % their conversions (renewal suffix ``..0``), 20 % direct payments,
10 % in-app purchases (skipped). Prints rows/s, subscriptions/s and peak RSS.
"""

from __future__ import annotations

import io
import resource
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.google_play_sales import import_sales_report
from storage.db import make_engine, upgrade

HEADER = ("Order Number,Order Charged Date,Order Charged Timestamp,Financial Status,Device Model,Product Title,"
          "Package ID,Product Type,SKU ID,Currency of Sale,Item Price,Taxes Collected,Charged Amount,Country of Buyer,"
          "City of Buyer,State of Buyer,Postal Code of Buyer,Base Plan or Purchase Option ID,Offer ID")


def report(rows: int) -> bytes:
    lines = [HEADER]
    t0 = 1_735_689_600  # 2025-01-01
    for i in range(rows):
        kind = i % 10
        ts = t0 + (i * 25) % (28 * 86_400)
        day = time.strftime("%Y-%m-%d", time.gmtime(ts))
        order = f"GPA.3381-{i // 10000:04d}-{i % 10000:04d}-{i:05d}"
        if kind < 4:
            product, amount = "subscription", "0.00"
        elif kind < 7:
            order = f"GPA.3381-{(i - 4) // 10000:04d}-{(i - 4) % 10000:04d}-{i - 4:05d}..0"
            product, amount = "subscription", "9.99"
        elif kind < 9:
            product, amount = "subscription", "4.99"
        else:
            product, amount = "inapp", "1.99"
        lines.append(f"{order},{day},{ts},Charged,sailfish,Pro,com.acme.app,{product},pro_monthly,USD,{amount},0.00,"
                     f"{amount},US,Austin,TX,78701,monthly,freetrial-7d")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("salesreport_202501.csv", "\n".join(lines) + "\n")
    return buffer.getvalue()


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    work = Path(tempfile.mkdtemp())
    path = work / "salesreport_202501.zip"
    path.write_bytes(report(rows))
    engine = make_engine(f"sqlite:///{work}/bench.db")
    upgrade(engine)
    start, cpu = time.perf_counter(), time.process_time()
    summary = import_sales_report(engine, "play", path)
    wall, used = time.perf_counter() - start, time.process_time() - cpu
    again_start = time.perf_counter()
    again = import_sales_report(engine, "play", path)
    again_wall = time.perf_counter() - again_start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"rows={rows:,} subscriptions={summary['subscriptions']:,} created={summary['created']:,} "
          f"skipped_rows={len(summary['skipped_rows']):,}")
    print(f"first import: {wall:.2f} s wall, {used:.2f} s CPU, {rows / wall:,.0f} rows/s")
    print(f"re-import (unchanged={again['unchanged']:,}): {again_wall:.2f} s wall")
    print(f"peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
