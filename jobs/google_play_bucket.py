"""Pull a ``google_play`` source's monthly sales reports from its Cloud Storage bucket (the schedule's job).

Which months to read is ``connectors.google_play_storage``'s rule (a generation not read yet, until the
month is final); each is applied by the Daily Sales Report import (``jobs.google_play_sales``), which
writes only the subscriptions whose facts changed, and its generation is committed to the cursor after
it, so a run that stops half way reads that month again next time and changes nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from sqlalchemy import Connection, Engine

from connectors.base import SettingsError
from connectors.google_play_storage import (
    REPORT_PREFIX,
    after_reading,
    check_bucket,
    now_utc,
    reports,
    settle,
    storage_client,
    to_read,
)
from jobs.google_play_sales import import_sales_report
from jobs.secrets import resolve_settings
from storage.sources import list_sources, require_source
from storage.sync_state import load_cursor, save_cursor

STREAM = "sales_reports"


def bucket_sources(conn: Connection) -> list[str]:
    """The enabled ``google_play`` sources that name a reports bucket (what the schedule pulls)."""
    return [str(r.name) for r in list_sources(conn)
            if r.kind == "google_play" and r.enabled and (r.settings or {}).get("bucket")]


class BucketError(RuntimeError):
    """The bucket could not be listed or a report downloaded (the message names which, never a secret)."""


def pull_sales_reports(
    engine: Engine,
    source_name: str,
    client_factory: Callable[[dict[str, Any]], Any] = storage_client,
    today: date | None = None,
) -> dict[str, Any]:
    """Read the months due from the source's bucket; a JSON-ready summary per month read.

    Raises:
        SettingsError: not a google_play source, or its bucket or service account unusable.
        BucketError: Cloud Storage refused or failed a request.
        connectors.files.google_play_report.SalesReportError: a report that cannot be read (its month is
            not marked read, so the next run tries again).
    """
    from google.api_core import exceptions as google_exceptions

    with engine.connect() as conn:
        source = require_source(conn, source_name)
        cursor = load_cursor(conn, source.id, STREAM)
    if source.kind != "google_play":
        raise SettingsError(f"source {source_name!r} is of kind {source.kind}, not google_play")
    settings = resolve_settings(source.settings or {})
    bucket = check_bucket(settings)
    day = today or now_utc().date()
    client = client_factory(settings)
    try:
        found = reports(client.list_blobs(bucket, prefix=REPORT_PREFIX))
    except google_exceptions.GoogleAPICallError as exc:
        raise BucketError(f"listing gs://{bucket}/{REPORT_PREFIX}* failed: {exc.code} {exc.message}") from None
    months = []
    for report in to_read(found, cursor):
        try:
            data = client.bucket(bucket).blob(report.name, generation=report.generation).download_as_bytes()
        except google_exceptions.GoogleAPICallError as exc:
            raise BucketError(f"downloading gs://{bucket}/{report.name} failed: {exc.code} {exc.message}") from None
        summary = import_sales_report(engine, str(source.name), data, name=f"gs://{bucket}/{report.name}")
        cursor = after_reading(cursor, report, day)
        with engine.begin() as conn:
            save_cursor(conn, source.id, STREAM, cursor)
        months.append({"month": report.month, "generation": report.generation, **summary})
    cursor = settle(cursor, found, day)
    totals = {k: sum(m[k] for m in months) for k in ("created", "updated", "unchanged")}
    with engine.begin() as conn:
        save_cursor(conn, source.id, STREAM, cursor, {"fetched": len(months), **totals}, success=True)
    return {"source": str(source.name), "bucket": bucket, "reports": len(found), "read": months,
            "final_through": cursor["final_through"] or None, **totals}
