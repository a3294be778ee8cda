"""Import flows: ``import-file`` (a flexible or structured CSV) and ``import-sheet`` (a Google Sheet).

Each wraps the plain-Python import of ``jobs.imports`` in one task per file (the import streams the
file in chunks of a few thousand rows and commits each; the task reports progress per chunk), then
publishes the counts as a table artifact, announces lifecycle changes, and merges duplicates.

A refused file (unreadable encoding, a required column missing, an ambiguous date column) is not
retried: the run fails at once with the reason. Rejected rows never stop the valid ones; they are
counted and listed in the import job.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from typing import Any

from prefect import flow, get_run_logger, task

from flows.artifacts import ProgressReporter, publish_stream_table
from flows.automations import chain_automations
from flows.events import emit_lifecycle_events, emit_merge_events
from flows.merge import merge_duplicates_task
from flows.runtime import (
    TASK_RETRIES,
    TASK_RETRY_DELAYS,
    TASK_RETRY_JITTER,
    retry_if_transient,
    run_owner,
    slug,
    task_engine,
)
from storage.merge_plan import DEFAULT_RULES

IMPORT_COLUMNS = ("file", "kind", "fetched", "created", "updated", "unchanged", "rejected", "duration_s")


def _get(obj: Any, name: str, default: Any = 0) -> Any:
    value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    return default if value is None else value


def _call(func: Any, engine: Any, **kwargs: Any) -> Any:
    """Call an import function with the keyword arguments it accepts (None values left out)."""
    accepted = inspect.signature(func).parameters
    return func(engine, **{k: v for k, v in kwargs.items() if k in accepted and v is not None})


def import_counts(result: Any) -> dict[str, int]:
    """created / updated / unchanged / rejected (and rows read) of an import result."""
    counts = {k: int(_get(result, k)) for k in ("created", "updated", "unchanged", "rejected")}
    counts["fetched"] = int(_get(result, "rows", 0) or _get(result, "fetched", 0) or sum(counts.values()))
    return counts


class _ChunkProgress:
    """Progress callback for an import: rows done so far, of the total when the importer knows it."""

    def __init__(self, what: str) -> None:
        self.reporter = ProgressReporter(f"{slug(what)}-progress", 100, what)

    def __call__(self, done: int, total: int | None = None) -> None:
        if total:
            self.reporter.update(100 * done / total, f"{done:,} of {total:,} rows")
        else:
            self.reporter.update(min(self.reporter.done + 1, 99), f"{done:,} rows")


@task(
    name="import-file",
    task_run_name="import {path}",
    retries=TASK_RETRIES,
    retry_delay_seconds=TASK_RETRY_DELAYS,
    retry_jitter_factor=TASK_RETRY_JITTER,
    retry_condition_fn=retry_if_transient,
)
def import_file_task(
    path: str,
    source: str,
    kind: str = "csv",
    mapping: list[str] | None = None,
    date_format: str | None = None,
    timezone_name: str | None = None,
    join_by_email: bool = True,
    lock_wait_seconds: float = 0.0,
) -> dict[str, Any]:
    """Import one file into ``source`` under the source's lock; return its counts.

    Args:
        path: the file on the worker's disk.
        source: the data source to import into (created as a ``csv`` source when missing).
        kind: ``csv`` (flexible, headers matched by name) or ``structured`` (the strict template).
        mapping: explicit ``"Header=field"`` mappings for a flexible CSV.
        date_format: ``MM/DD/YYYY`` or ``DD/MM/YYYY`` for slashed dates the file leaves ambiguous.
        timezone_name: the zone of dates written without one (default: the account time zone).
        join_by_email: put a new record on the customer with its email (``jobs.imports.import_csv``).
        lock_wait_seconds: how long to wait for an import or sync of the source already running
            (``jobs.runs.SourceBusy`` after it).
    """
    from connectors.files.dates import parse_date_format
    from connectors.files.headers import parse_map_options
    from jobs import imports

    func: Any
    if kind == "csv":
        func = imports.import_csv
    else:
        func = getattr(imports, f"import_{kind}", None)
        if func is None or kind not in ("structured", "contacts"):
            raise ValueError(f"import kind {kind!r}: expected 'csv' or 'structured'")
    options: dict[str, Any] = {"join_by_email": join_by_email}
    if timezone_name:
        from zoneinfo import ZoneInfo

        options["tz"] = ZoneInfo(timezone_name)
    from jobs.runs import run_import

    clock = time.monotonic()
    progress = _ChunkProgress(f"import {source}")
    with task_engine() as engine:
        if kind == "csv":
            def do_import() -> Any:
                return func(engine, path, source, parse_map_options(mapping or []), parse_date_format(date_format),
                            progress, **options)
        else:
            def do_import() -> Any:
                return _call(func, engine, path=path, source_name=source,
                             date_format=parse_date_format(date_format), progress=progress, **options)
        # The same job as `funnelsync import`: the source's lock, the import, its lifecycle changes and
        # joins announced. The merge is this flow's own task.
        run = run_import(engine, source, do_import, owner=run_owner(), wait_seconds=lock_wait_seconds,
                         merge_after=False, announce=_announcer())
    return _report(run, label=path, kind=kind, source=source, clock=clock, progress=progress)


def _announcer() -> Any:
    from jobs.runs import Announcer

    return Announcer(
        lifecycle=lambda report, uuid, name: emit_lifecycle_events(report, source_uuid=uuid or None, source_name=name),
        joins=emit_merge_events,
    )


def _report(run: Any, *, label: str, kind: str, source: str, clock: float,
            progress: _ChunkProgress) -> dict[str, Any]:
    counts = import_counts(run.summary)
    duration = round(time.monotonic() - clock, 2)
    progress.reporter.finish(f"done, {counts['fetched']:,} rows")
    publish_stream_table(
        f"import-{source}",
        [{"file": label, "kind": kind, **counts, "duration_s": duration}],
        f"Import into **{source}**: {counts['created']:,} created, {counts['updated']:,} updated, "
        f"{counts['unchanged']:,} unchanged, {counts['rejected']:,} rejected",
        columns=IMPORT_COLUMNS,
    )
    result = run.summary
    lifecycle = run.announced
    # Joins by email at import are merges: announced (by run_import) as the merge step announces its own.
    joined = run.joins_announced
    get_run_logger().info("Imported %s into %s: %s", label, source, counts)
    summary: dict[str, Any] = {
        "source": source, "file": label, **counts, "duration_s": duration, "lifecycle": lifecycle,
        "joined_by_email": int(_get(result, "joined", 0) or 0), "merge_events": joined,
    }
    job = _get(result, "job_uuid", None) or _get(result, "uuid", None)
    if job:
        summary["import_job"] = job
    return summary


@task(
    name="import-sheet",
    task_run_name="import sheet {source}",
    retries=TASK_RETRIES,
    retry_delay_seconds=TASK_RETRY_DELAYS,
    retry_jitter_factor=TASK_RETRY_JITTER,
    retry_condition_fn=retry_if_transient,
)
def import_sheet_task(source: str, lock_wait_seconds: float = 0.0) -> dict[str, Any]:
    """Import the rows of a Google Sheet source changed since its last run (under the source's lock).

    The spreadsheet, worksheet, mapping and credentials file come from the source's settings, saved by
    the first ``funnelsync import sheet``. Returns the counts, or ``status: skipped`` when the same
    source is being imported or synced by another run.
    """
    from jobs.runs import SourceBusy, run_import
    from jobs.sheet_import import import_sheet_source
    from storage.sources import require_source

    clock = time.monotonic()
    with task_engine() as engine:
        with engine.connect() as conn:
            row = require_source(conn, source)
        progress = _ChunkProgress(f"import {row.name}")
        try:
            run = run_import(engine, row.name, lambda: import_sheet_source(engine, row.name, progress=progress),
                             owner=run_owner(), wait_seconds=lock_wait_seconds, merge_after=False,
                             announce=_announcer())
        except SourceBusy as busy:
            message = f"import of {row.name} skipped: it is already running ({busy})"
            get_run_logger().warning(message)
            return {"source": row.name, "status": "skipped", "message": message}
    summary = _report(run, label=row.name, kind="sheet", source=row.name, clock=clock, progress=progress)
    summary["status"] = "completed"
    return summary


@flow(name="import-file", log_prints=False)
def import_file_flow(
    path: str,
    source: str,
    kind: str = "csv",
    mapping: list[str] | None = None,
    date_format: str | None = None,
    timezone_name: str | None = None,
    merge_after: bool = True,
    merge_rules: list[str] | None = None,
    join_by_email: bool = True,
) -> dict[str, Any]:
    """Import a CSV of customers into a data source, then merge the duplicates it created.

    Args:
        path: the file, on the machine that runs the flow.
        source: the data source to import into (created as a ``csv`` source when missing).
        kind: ``csv`` (flexible) or ``structured`` (the strict template).
        mapping: explicit ``"Header=field"`` mappings, e.g. ``["Signup Date=lead_created_at"]``.
        date_format: ``MM/DD/YYYY`` or ``DD/MM/YYYY`` when the file's slashed dates are ambiguous.
        timezone_name: the zone of dates written without one.
        merge_after: merge duplicates after the import.
        merge_rules: rules for that merge (default: email and external_id).
        join_by_email: put a new record on the customer that has its email (a merge in the log, rule
            ``email-at-import``); only when ``merge_rules`` include ``email``, the rule it applies early.
    """
    rules = merge_rules or list(DEFAULT_RULES)
    summary = import_file_task(path, source, kind, mapping, date_format, timezone_name,
                               join_by_email and "email" in rules)
    if merge_after:
        summary["merge"] = merge_duplicates_task(rules, False)
    summary["automations"] = chain_automations()
    return summary


@flow(name="import-sheet", log_prints=False)
def import_sheet_flow(
    source: str,
    merge_after: bool = True,
    merge_rules: list[str] | None = None,
    lock_wait_seconds: float = 0.0,
) -> Any:
    """Import a Google Sheet source (rows changed since the last run), then merge duplicates.

    Args:
        source: the ``google_sheets`` data source (set up once with ``funnelsync import sheet``).
        merge_after: merge duplicates after the import.
        merge_rules: rules for that merge (default: email and external_id).
        lock_wait_seconds: how long to wait when the same source is already being imported.
    """
    from prefect.states import Completed

    summary = import_sheet_task(source, lock_wait_seconds)
    if summary["status"] == "skipped":
        return Completed(message=summary["message"], name="Skipped", data=summary)
    if merge_after:
        summary["merge"] = merge_duplicates_task(merge_rules or list(DEFAULT_RULES), False)
    summary["automations"] = chain_automations()
    return summary
