"""``funnelsync import google-play-sales``: a Daily Sales Report into a ``google_play`` source.

The parsing is pure (``connectors.google_play``); this module adds what needs the database: every
subscription already stored by earlier reports is read back (one query per batch) so the earliest trial
start, first payment and lead date survive importing the months in any order, and re-importing a
report changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from connectors.files.google_play_report import iter_chunks, iter_sales_report, order_record, sales_orders
from jobs.stored_records import stored_by_external_id
from storage.sources import get_or_create_source
from storage.upsert import upsert_records

BATCH_SIZE = 5_000


def import_sales_report(
    engine: Engine, source_name: str, path: Path | bytes, batch_size: int = BATCH_SIZE, name: str | None = None
) -> dict[str, Any]:
    """Import one sales report (a file, or its bytes named ``name``) into the ``google_play`` source
    ``source_name`` (created if missing).

    Returns:
        A JSON-ready summary: rows read, subscriptions found, created/updated/unchanged records, and the
        skipped rows (line, reason).

    Raises:
        connectors.files.google_play_report.SalesReportError: the file cannot be read or lacks required columns.
        ValueError: the source exists with another kind.
    """
    skipped: list[tuple[int, str]] = []
    read = 0

    def counted(rows: Any) -> Any:
        nonlocal read
        for row in rows:
            read += 1
            yield row

    # Rows are folded as they are read: memory holds the subscriptions, not the rows.
    rows: Any = iter_sales_report(path, skipped, name)
    orders = sales_orders(counted(rows), skipped)
    totals = {"created": 0, "updated": 0, "unchanged": 0, "no_trial_or_payment": 0}
    with engine.begin() as conn:
        source = get_or_create_source(conn, source_name, "google_play")
    for chunk in iter_chunks(sorted(orders), batch_size):
        with engine.begin() as conn:
            stored, subs = stored_by_external_id(conn, source.id, chunk)
            records = []
            for order in chunk:
                record = order_record(orders[order], stored.get(order), subs.get(order))
                if record is None:
                    totals["no_trial_or_payment"] += 1
                else:
                    records.append(record)
            result = upsert_records(conn, source.id, records)
        totals["created"] += result.created
        totals["updated"] += result.updated
        totals["unchanged"] += result.unchanged
    return {
        "source": source_name,
        "file": name or str(path),
        "rows": read + sum(1 for _, reason in skipped if reason.startswith("unreadable")),
        "subscriptions": len(orders),
        **totals,
        "skipped_rows": [{"line": line, "reason": reason} for line, reason in sorted(skipped)],
    }
