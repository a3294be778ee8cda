"""Pull a ``google_play`` source's monthly sales reports from its Cloud Storage bucket: the connector's
``sales_reports`` stream (``connectors.google_play_storage``) run as ``funnelsync sync`` runs it, with a
summary of the months read for ``funnelsync import google-play-bucket`` and the ``google-play-reports`` flow.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import Connection, Engine

from connectors.base import SettingsError
from connectors.google_play_storage import STREAM, BucketError, BucketReports, check_bucket
from jobs.sync import build_connector, run_stream
from storage.sources import list_sources, require_source
from storage.sync_state import load_cursor

__all__ = ["STREAM", "BucketError", "bucket_sources", "pull_sales_reports"]


def bucket_sources(conn: Connection) -> list[str]:
    """The enabled ``google_play`` sources that name a reports bucket (what the schedule pulls)."""
    return [str(r.name) for r in list_sources(conn)
            if r.kind == "google_play" and r.enabled and (r.settings or {}).get("bucket")]


def pull_sales_reports(engine: Engine, source_name: str, today: date | None = None) -> dict[str, Any]:
    """Read the months due from the source's bucket; a JSON-ready summary of the months read.

    Raises:
        SettingsError: not a google_play source, or its bucket or service account unusable.
        jobs.sync.SyncError: the source is disabled, or its settings cannot be resolved.
        BucketError: Cloud Storage refused or failed a request, or a report cannot be read (nothing of
            the reports due is marked read, so the next run tries again).
        connectors.http.CredentialsError: the service account's key or permissions were refused.
    """
    with engine.connect() as conn:
        source = require_source(conn, source_name)
    if source.kind != "google_play":
        raise SettingsError(f"source {source_name!r} is of kind {source.kind}, not google_play")
    bucket = check_bucket(source.settings or {})
    now = None if today is None else (lambda: datetime.combine(today, time(12), UTC))
    row, connector = build_connector(engine, str(source.name), now=now)
    if not isinstance(connector, BucketReports):
        raise SettingsError(f"source {source_name!r}: the google_play connector does not read a bucket")
    with connector:
        summary = run_stream(engine, row.id, connector, STREAM)
    with engine.connect() as conn:
        cursor = load_cursor(conn, row.id, STREAM) or {}
    return {
        "source": str(row.name), "bucket": bucket, "reports": connector.listed,
        "read": [{"month": r.month, "generation": r.generation} for r in connector.months_read],
        "final_through": cursor.get("final_through") or None,
        **{k: getattr(summary, k) for k in ("created", "updated", "unchanged")},
    }
