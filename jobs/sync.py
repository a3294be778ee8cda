"""Plain-Python sync: a data source's connector → batches → storage, one transaction per batch.

No Prefect here: the Prefect flows wrap ``sync_source`` / ``sync_stream`` (which take plain values)
in tasks. The invariant this module keeps: every batch is upserted and its cursor
saved in the SAME transaction, so the cursor moves only with its batch. A sync killed at any point and
run again resumes after the last committed batch; records re-read around that point are unchanged and
written no second time, so every record ends up present exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from sqlalchemy import Connection, Engine

from connectors.base import Connector, Feed, SettingsError
from connectors.registry import SOURCE_KINDS, connector_class, is_connector_kind, kinds_fed, source_class
from jobs.readahead import rare_gc
from jobs.secrets import resolve_settings
from jobs.stored_records import stored_lookup
from jobs.stream_reader import CHILD_AFTER_BATCHES, PREFETCH_BATCHES, stream_batches
from storage.bulk_load import bulk_load
from storage.deletion_undo import restore_reappeared
from storage.removal import remove_source_customers
from storage.sources import list_sources, require_source
from storage.sync_state import load_cursor, open_subscription_states, save_cursor
from storage.upsert import upsert_prepared


class SyncError(Exception):
    """A sync cannot start: the source is not pulled by a connector, or its settings are unusable."""


class SourceDisabled(SyncError):
    """The source is disabled (``funnelsync sources disable``): nothing pulls it until it is enabled."""


def check_enabled(row: Any) -> None:
    """Raise :class:`SourceDisabled` for a disabled source row."""
    if not row.enabled:
        raise SourceDisabled(
            f"source {row.name!r} is disabled: enable it with `funnelsync sources enable {row.name}`"
        )


@dataclass
class StreamSummary:
    """What one stream's run did."""

    stream: str
    fetched: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    batches: int = 0
    seconds: float = 0.0
    cursor: dict[str, Any] | None = None

    def counts(self) -> dict[str, Any]:
        """The counts stored with the cursor and printed by ``sync --json``."""
        return {
            "fetched": self.fetched,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "batches": self.batches,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class SyncSummary:
    """What a source's sync did, per stream and in total."""

    source: str
    kind: str
    full_refresh: bool
    streams: list[StreamSummary] = field(default_factory=list)

    @property
    def totals(self) -> dict[str, Any]:
        """The sums over the streams."""
        keys = ("fetched", "created", "updated", "unchanged", "deleted", "batches")
        total: dict[str, Any] = {k: sum(getattr(s, k) for s in self.streams) for k in keys}
        total["seconds"] = round(sum(s.seconds for s in self.streams), 3)
        return total

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: source, kind, full_refresh, per-stream counts and totals."""
        return {
            "source": self.source,
            "kind": self.kind,
            "full_refresh": self.full_refresh,
            "streams": [{"stream": s.stream, **s.counts()} for s in self.streams],
            "total": self.totals,
        }


Progress = Callable[[StreamSummary], None]



def pulled_sources(conn: Connection) -> list[tuple[str, str]]:
    """(name, kind) of the enabled sources pulled on a schedule: those of a kind declared ``Feed.PULLED``
    whose settings name something to pull (``SourceKind.pulls``: a Google Play source without a bucket is
    fed by pushes alone).

    The others are fed by pushes, files or the API, which a schedule has nothing to read from.
    """
    pulled = set(kinds_fed(Feed.PULLED))
    return [(r.name, r.kind) for r in list_sources(conn)
            if r.enabled and r.kind in pulled and source_class(r.kind).pulls(r.settings or {})]


def read_by_sheet_import(kind: str) -> bool:
    """True for a pulled kind without a connector of its own: a Google Sheet, read again by the sheet import."""
    return kind in SOURCE_KINDS and Feed.PULLED in source_class(kind).feeds and not is_connector_kind(kind)


def _engine(engine: Engine | str | None) -> Engine:
    if isinstance(engine, Engine):
        return engine
    from storage.db import make_engine

    return make_engine(engine)


def build_connector(
    engine: Engine,
    source_name: str,
    *,
    transport: httpx.BaseTransport | None = None,
    sleep_fn: Callable[[float], None] | None = None,
    batch_size: int | None = None,
    now: Callable[[], Any] | None = None,
) -> tuple[Any, Connector]:
    """Load a source, resolve its secret references and build its connector.

    Returns:
        ``(source_row, connector)``.

    Raises:
        storage.sources.SourceNotFound: no such source.
        SyncError: the source is disabled (``SourceDisabled``), the kind has no connector, or the
            settings cannot be resolved or are invalid.
    """
    with engine.connect() as conn:
        row = require_source(conn, source_name)
    check_enabled(row)
    if not is_connector_kind(row.kind):
        raise SyncError(
            f"source {row.name!r} is of kind {row.kind!r}, which is not pulled by a connector "
            "(import it with `funnelsync import` or push it through the API)"
        )
    try:
        settings = resolve_settings(row.settings or {})
    except ValueError as exc:
        raise SyncError(f"source {row.name!r}: {exc}") from None
    options: dict[str, Any] = {"source_name": row.name, "transport": transport, "sleep_fn": sleep_fn, "now": now}
    if batch_size:
        options["batch_size"] = batch_size
    try:
        connector = connector_class(row.kind)(settings, **options)
    except SettingsError as exc:
        raise SyncError(f"source {row.name!r}: {exc}") from None
    if connector.reconciles_subscriptions:
        with engine.connect() as conn:
            connector.known_subscriptions = open_subscription_states(conn, row.id)
    if hasattr(connector, "stored_records"):  # its records merge with what earlier runs stored
        connector.stored_records = stored_lookup(engine, row.id)
    return row, connector


def run_stream(
    engine: Engine,
    data_source_id: int,
    connector: Connector,
    stream: str,
    *,
    full_refresh: bool = False,
    progress: Progress | None = None,
    prefetch: int = PREFETCH_BATCHES,
    child_after: int | None = CHILD_AFTER_BATCHES,
) -> StreamSummary:
    """Read one stream of a built connector into storage, one transaction per batch.

    Args:
        engine: the database.
        data_source_id: the source's row id.
        connector: the connector (its HTTP client is reused across streams).
        stream: the stream name.
        full_refresh: ignore the saved cursor and read everything.
        progress: called with the running summary after every committed batch.
        prefetch: batches read ahead in a background thread while one is written (0: none).
        child_after: batches after which a long read carries on in a child process
            (``jobs.stream_reader``; None: never).
    """
    summary = StreamSummary(stream)
    started = time.perf_counter()
    with engine.connect() as conn:
        state = None if full_refresh else load_cursor(conn, data_source_id, stream)
    batches = stream_batches(connector, stream, state, full_refresh, sqlite=engine.dialect.name == "sqlite",
                             prefetch=prefetch, child_after=child_after)
    # A first sync of a large source indexes after writing once it has brought as many new records as
    # the customer table held (storage.bulk_load).
    with rare_gc(), bulk_load(engine) as load:
        for batch in batches:
            with engine.begin() as conn:
                result = upsert_prepared(conn, data_source_id, batch.records)
                summary.fetched += batch.fetched
                summary.created += result.created
                summary.updated += result.updated
                summary.unchanged += result.unchanged
                if batch.deleted:
                    summary.deleted += remove_source_customers(conn, data_source_id, batch.deleted).source_customers
                summary.batches += 1
                summary.seconds = time.perf_counter() - started
                # Same transaction as the records: the cursor never runs ahead of what is stored.
                save_cursor(conn, data_source_id, stream, batch.cursor, counts=summary.counts())
            summary.cursor = batch.cursor
            load.written(result.created)
            if progress is not None:
                progress(summary)
    summary.seconds = time.perf_counter() - started
    with engine.begin() as conn:
        cursor = summary.cursor if summary.batches else load_cursor(conn, data_source_id, stream)
        save_cursor(conn, data_source_id, stream, cursor, counts=summary.counts(), success=True)
        if summary.created:  # a record the source had deleted may be back: its manual edits return
            restore_reappeared(conn, data_source_id)
    return summary


def sync_stream(
    engine: Engine | str | None,
    source_name: str,
    stream: str,
    full_refresh: bool = False,
    progress: Progress | None = None,
    **connector_options: Any,
) -> StreamSummary:
    """Sync one stream of a source, from plain values (what a Prefect task takes).

    Args:
        engine: an Engine, a database URL, or None for ``FUNNELSYNC_DATABASE_URL``.
        source_name: the source name or ``ds_…`` uuid.
        stream: the stream name (see the connector's ``streams``).
        full_refresh: ignore the saved cursor.
        progress: called after every committed batch.
        connector_options: ``transport``, ``sleep_fn``, ``batch_size``, ``now`` (tests and benchmarks).
    """
    db = _engine(engine)
    row, connector = build_connector(db, source_name, **connector_options)
    with connector:
        connector.stream(stream)  # a clear error for an unknown stream
        return run_stream(db, row.id, connector, stream, full_refresh=full_refresh, progress=progress)


def sync_source(
    engine: Engine | str | None,
    source_name: str,
    full_refresh: bool = False,
    progress: Progress | None = None,
    **connector_options: Any,
) -> SyncSummary:
    """Sync every stream of a source, in the connector's declared order.

    Args:
        engine: an Engine, a database URL, or None for ``FUNNELSYNC_DATABASE_URL``.
        source_name: the source name or ``ds_…`` uuid.
        full_refresh: ignore the saved cursors and read everything.
        progress: called after every committed batch with that stream's running summary.
        connector_options: ``transport``, ``sleep_fn``, ``batch_size``, ``now`` (tests and benchmarks).

    Raises:
        storage.sources.SourceNotFound, SyncError: before anything is read.
        connectors.http.CredentialsError, connectors.http.ApiError: from the API; batches committed
            before the error stay committed, with their cursors.
    """
    db = _engine(engine)
    row, connector = build_connector(db, source_name, **connector_options)
    summary = SyncSummary(row.name, row.kind, full_refresh)
    with connector:
        for stream in connector.streams:
            summary.streams.append(
                run_stream(db, row.id, connector, stream.name, full_refresh=full_refresh, progress=progress)
            )
    return summary


def summary_dict(summary: SyncSummary | StreamSummary) -> dict[str, Any]:
    """A JSON-ready form of either summary."""
    return summary.to_dict() if isinstance(summary, SyncSummary) else asdict(summary)
