"""Sync flows: ``sync-source`` (one source) and ``sync-all`` (every enabled source, in parallel).

A source is synced by one coarse task (``sync-source-data``): it takes the source's database lock,
runs ``jobs.sync.sync_source`` (connectors → batched upserts, cursor committed per batch),
reports progress per batch, publishes the per-stream table, and announces the lifecycle changes the
sync made as Prefect events. Transient failures are retried by Prefect; because every batch commits
its cursor, a retry resumes where the failed attempt stopped. After the syncs, the duplicate merge runs
(``merge_after``), with the domain rule off unless asked for (docs/merging.md).

One sync per source at a time: the lock is a row in the funnelsync database (``storage.locks``), so it
holds across workers and without a reachable Prefect server. A run that finds its source busy waits
up to ``lock_wait_seconds`` and then ends cleanly as ``Skipped`` with a message naming the holder.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.futures import as_completed
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.artifacts import ProgressReporter, publish_stream_table
from flows.automations import chain_automations
from flows.events import emit_lifecycle_events
from flows.merge import merge_duplicates_task
from flows.runtime import (
    TASK_RETRIES,
    TASK_RETRY_DELAYS,
    TASK_RETRY_JITTER,
    one_line,
    retry_if_transient,
    run_owner,
    task_engine,
)
from jobs.sync import pulled_sources, read_by_sheet_import
from storage.merge_plan import DEFAULT_RULES

SKIPPED = "Skipped"


def stream_rows(summary: Any) -> list[dict[str, Any]]:
    """One table row per stream of a ``jobs.sync.SyncSummary``.

    Connectors have no row-level rejection (a payload they cannot map fails the batch), so
    ``rejected`` is 0 for syncs; the column is there so sync and import tables read alike.
    """
    return [
        {
            "stream": s.stream,
            "fetched": s.fetched,
            "created": s.created,
            "updated": s.updated,
            "unchanged": s.unchanged,
            "rejected": getattr(s, "rejected", 0),
            "duration_s": round(s.seconds, 2),
        }
        for s in summary.streams
    ]


class _SyncProgress:
    """The sync engine's progress callback: moves the progress artifact after every committed batch.

    Progress is counted in streams (the APIs do not say how many pages remain): a stream under way
    counts half, the artifact's description carries the running record count.
    """

    def __init__(self, source: str, streams: list[str]) -> None:
        self.streams = streams
        self.fetched: dict[str, int] = {}
        self.reporter = ProgressReporter(f"sync-{source}-progress", len(streams) or 1, f"sync {source}")

    def __call__(self, stream_summary: Any) -> None:
        stream = stream_summary.stream
        self.fetched[stream] = stream_summary.fetched
        index = self.streams.index(stream) if stream in self.streams else 0
        self.reporter.update(
            index + 0.5,
            f"{stream}: {stream_summary.fetched:,} fetched in {stream_summary.batches} batches "
            f"({self.total:,} records in all)",
        )

    @property
    def total(self) -> int:
        return sum(self.fetched.values())


@task(
    name="sync-source-data",
    task_run_name="sync {source}",
    retries=TASK_RETRIES,
    retry_delay_seconds=TASK_RETRY_DELAYS,
    retry_jitter_factor=TASK_RETRY_JITTER,
    retry_condition_fn=retry_if_transient,
)
def sync_source_task(source: str, full_refresh: bool = False, lock_wait_seconds: float = 0.0) -> dict[str, Any]:
    """Sync one source under its lock; report streams, progress and lifecycle events.

    Args:
        source: the data source's name or ``ds_…`` uuid.
        full_refresh: read everything again, ignoring saved cursors.
        lock_wait_seconds: how long to wait for a sync of the same source that is already running.

    Returns:
        ``{"source", "status" ("completed" | "skipped"), "message", "streams", "lifecycle", "duration_s"}``.
    """
    from jobs.runs import Announcer, SourceBusy, run_sync
    from storage.sources import require_source

    logger = get_run_logger()
    clock = time.monotonic()
    with task_engine() as engine:
        with engine.connect() as conn:
            row = require_source(conn, source)
        name = row.name
        progress = _progress_of(row)
        logger.info("Syncing %s (%s)%s", name, row.kind, ", full refresh" if full_refresh else "")
        try:
            # The same job as `funnelsync sync`: the source's lock, the sync, its lifecycle changes. The
            # merge is this flow's own task, after one source or after all of them.
            run = run_sync(
                engine, row.uuid, owner=run_owner(), full_refresh=full_refresh, wait_seconds=lock_wait_seconds,
                merge_after=False, progress=progress,
                announce=Announcer(lifecycle=lambda report, uuid, source_name: emit_lifecycle_events(
                    report, source_uuid=uuid, source_name=source_name)),
            )
        except SourceBusy as busy:
            message = f"sync of {name} skipped: it is already running ({busy})"
            logger.warning(message)
            return {"source": name, "status": "skipped", "message": message, "streams": [], "lifecycle": {}}
    progress.reporter.finish(f"done, {progress.total:,} records fetched")
    result = run.sync
    lifecycle = run.announced
    rows = stream_rows(result)
    duration = round(time.monotonic() - clock, 2)
    publish_stream_table(
        f"sync-{name}",
        rows,
        f"Sync of **{name}** ({row.kind}{', full refresh' if full_refresh else ''}) in {duration:.1f}s",
    )
    totals = {col: sum(r[col] for r in rows) for col in ("fetched", "created", "updated", "unchanged", "rejected")}
    logger.info(
        "Synced %s: %s; lifecycle changes %s",
        name,
        ", ".join(f"{k} {v:,}" for k, v in totals.items()),
        lifecycle or "none",
    )
    return {
        "source": name,
        "status": "completed",
        "message": f"synced {name}",
        "streams": rows,
        "totals": totals,
        "lifecycle": lifecycle,
        "duration_s": duration,
    }


def _progress_of(row: Any) -> _SyncProgress:
    """The progress callback for the artifact of one source's sync."""
    streams: list[str] = []
    try:
        from connectors.registry import connector_class

        streams = [s.name for s in connector_class(row.kind).streams]
    except Exception:  # noqa: BLE001 - a kind without a registered connector (Google Sheets): one unit of progress
        streams = []
    return _SyncProgress(row.name, streams)


def _source_row(source: str) -> Any:
    """The source's row (None when unknown: the task then fails with the known names)."""
    from storage.sources import get_source

    with task_engine() as engine, engine.connect() as conn:
        return get_source(conn, source)


def _skipped_or(summary: dict[str, Any]) -> Any:
    if summary["status"] == "skipped":
        return Completed(message=summary["message"], name=SKIPPED, data=summary)
    return summary


@flow(name="sync-source", log_prints=False)
def sync_source_flow(
    source: str,
    full_refresh: bool = False,
    merge_after: bool = True,
    merge_rules: list[str] | None = None,
    lock_wait_seconds: float = 0.0,
) -> Any:
    """Sync one data source, then merge the duplicates the sync may have created.

    Args:
        source: the data source's name or ``ds_…`` uuid.
        full_refresh: read everything again, ignoring saved cursors.
        merge_after: run the automatic duplicate merge after the sync.
        merge_rules: rules for that merge (default: email and external_id; add "domain" to opt in).
        lock_wait_seconds: how long to wait when the same source is already syncing, before skipping.
    """
    row = _source_row(source)
    if row is not None and not row.enabled:
        # A schedule or automation aimed at a disabled source: nothing to do, and nothing failed.
        message = f"sync of {row.name} skipped: the source is disabled"
        get_run_logger().warning(message)
        return _skipped_or(
            {"source": row.name, "status": "skipped", "message": message, "streams": [], "lifecycle": {}}
        )
    kind = None if row is None else str(row.kind)
    if kind is not None and read_by_sheet_import(kind):
        from flows.imports import import_sheet_task

        summary = import_sheet_task(source, lock_wait_seconds)
    else:
        summary = sync_source_task(source, full_refresh, lock_wait_seconds)
    if summary["status"] == "completed" and merge_after:
        summary["merge"] = merge_duplicates_task(merge_rules or list(DEFAULT_RULES), False)
    if summary["status"] == "completed":
        summary["automations"] = chain_automations()
    return _skipped_or(summary)


def _pulled_sources() -> list[tuple[str, str]]:
    with task_engine() as engine, engine.connect() as conn:
        return pulled_sources(conn)


@flow(name="sync-all", task_runner=ThreadPoolTaskRunner(max_workers=4), log_prints=False)  # type: ignore[arg-type]
def sync_all_flow(
    full_refresh: bool = False,
    merge_after: bool = True,
    merge_rules: list[str] | None = None,
    lock_wait_seconds: float = 0.0,
) -> dict[str, Any]:
    """Sync every enabled pulled source, sources in parallel (each one's own sync serialised by its lock).

    A failing source does not stop the others; the run fails at the end, naming every failed source
    and its error, after the merge of what did sync.

    Args:
        full_refresh: read everything again, ignoring saved cursors.
        merge_after: run the automatic duplicate merge after the syncs.
        merge_rules: rules for that merge (default: email and external_id).
        lock_wait_seconds: how long each source waits for a sync of itself already running.
    """
    logger = get_run_logger()
    names = _pulled_sources()
    if not names:
        logger.warning("No enabled source to sync: add one with `funnelsync sources add`.")
        return {"sources": [], "failed": []}
    from flows.imports import import_sheet_task

    reporter = ProgressReporter("sync-all-progress", len(names), "sync-all")
    # A sheet is read by the sheet import; every other pulled kind by its connector.
    futures = {
        (
            import_sheet_task.submit(name, lock_wait_seconds)
            if read_by_sheet_import(kind)
            else sync_source_task.submit(name, full_refresh, lock_wait_seconds)
        ): name
        for name, kind in names
    }
    summaries: list[dict[str, Any]] = []
    failed: list[str] = []
    for done, future in enumerate(as_completed(list(futures)), start=1):
        name = futures[future]
        try:
            summary = future.result()
            if "totals" not in summary:  # a sheet import: its counts are at the top level
                counted = ("fetched", "created", "updated", "unchanged", "rejected")
                summary["totals"] = {k: summary.get(k, 0) for k in counted}
            summaries.append(summary)
        except Exception as exc:  # noqa: BLE001
            failed.append(f"{name} ({one_line(exc)})")
            summaries.append({"source": name, "status": "failed", "message": one_line(exc), "totals": {}})
        reporter.update(done, f"{done} of {len(names)} sources done")
    publish_stream_table(
        "sync-all",
        [
            {"source": s["source"], "status": s["status"], **s.get("totals", {}), "duration_s": s.get("duration_s")}
            for s in summaries
        ],
        f"sync-all: {len(names)} sources, {len(failed)} failed",
        columns=("source", "status", "fetched", "created", "updated", "unchanged", "rejected", "duration_s"),
    )
    result: dict[str, Any] = {"sources": summaries, "failed": failed}
    if merge_after and len(failed) < len(names):
        result["merge"] = merge_duplicates_task(merge_rules or list(DEFAULT_RULES), False)
    if len(failed) < len(names):
        result["automations"] = chain_automations()
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(names)} sources failed: " + "; ".join(failed))
    return result
