"""``funnelsync import csv|structured|sheet``: custom-source imports.

The job is ``jobs.runs.run_import``, the one the import flows run: the source's lock (shared with its
syncs: a second run waits ``--wait`` seconds, then exits 4 naming who holds it), the import, its lifecycle
changes (announced as Prefect events when a Prefect server is configured), then the duplicate merge.

Exit codes: 0 every row imported; 3 some rows rejected (the others imported); 2 the file could not be
read at all (nothing imported); 4 the source is being imported or synced by another run; 1 any other
failure (database, source, network).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timezone
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from funnelsync.cli import common
from funnelsync.cli.common import app, compact_table, console, err_console, fail, get_engine, print_json

import_app = typer.Typer(help="Import customers from a CSV file or a Google Sheet.", no_args_is_help=True)
app.add_typer(import_app, name="import")

EXIT_OK, EXIT_FAILED, EXIT_UNREADABLE, EXIT_REJECTED, EXIT_BUSY = 0, 1, 2, 3, 4

MapOption = Annotated[
    list[str] | None,
    typer.Option("--map", help='Map a column explicitly: "Header=field" (field, tags, custom.<key>[:type], '
                 'contact.<field> or ignore). Repeatable.'),
]
SourceOption = Annotated[str, typer.Option("--source", help="The custom data source (created if missing).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print only the JSON summary.")]
DateFormatOption = Annotated[
    str | None,
    typer.Option("--date-format", help="DD/MM/YYYY or MM/DD/YYYY for slashed dates, or a strptime pattern."),
]
EmptyCellsOption = Annotated[
    str,
    typer.Option("--empty-cells", help="keep: an empty cell leaves the stored value (default); clear: it clears "
                 "the field. Fields the file has no column for are never changed."),
]
ErrorsOption = Annotated[
    Path | None, typer.Option("--errors", help="Write the rejected rows (row, column, value, reason) to this CSV.")
]
JoinOption = Annotated[
    bool,
    typer.Option("--join-by-email/--no-join-by-email",
                 help="Put a new record on the customer that has its email (another source's: a merge, in "
                      "`merge --log`, undone by `unmerge`); off: every new record gets its own customer."),
]
WaitOption = Annotated[
    float, typer.Option("--wait", min=0, help="Seconds to wait for an import or sync of this source already running."),
]
MergeOption = Annotated[
    bool, typer.Option("--merge/--no-merge", help="Merge duplicates after the import (as the flows do).")
]


def _run(engine: Any, source: str, do_import: Callable[[], Any], wait: float, merge: bool) -> Any:
    """The import as every door runs it (``jobs.runs.run_import``); exits 4 when the source is busy."""
    import os
    import socket

    from funnelsync.cli.sync import _announcer
    from jobs.runs import SourceBusy, run_import

    announce = _announcer()
    if os.environ.get("PREFECT_API_URL"):
        from flows.events import emit_merge_events

        announce.joins = emit_merge_events
    owner = f"PID {os.getpid()} on {socket.gethostname()} (funnelsync import)"
    try:
        run = run_import(engine, source, do_import, owner=owner, wait_seconds=wait, merge_after=merge,
                         actor="cli:import", announce=announce)
    except SourceBusy as exc:
        fail(str(exc), EXIT_BUSY)
    return run


@contextmanager
def _progress(enabled: bool, what: str) -> Iterator[Callable[[int, int], None] | None]:
    """A Rich progress bar on stderr (stdout stays clean for the summary), or nothing with --json."""
    if not enabled:
        yield None
        return
    # Redrawn after each batch rather than by Rich's refresh thread: an import forks its file reader
    # only while the process runs no other thread but fork-quiet ones (jobs.readahead.can_read_in_child).
    with common.progress_bar("rows", auto_refresh=False) as bar:
        task = bar.add_task(what, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, refresh=True)

        yield update


def _report(run: Any, as_json: bool, errors_path: Path | None) -> None:
    """Print the summary (JSON or a table) and what followed it, and exit with the import's code."""
    summary = run.summary
    for note in summary.notes:
        err_console.print(f"note: {note}", markup=False, highlight=False)
    if summary.ignored_columns:
        err_console.print(
            "note: ignored columns (no matching field; use --map to import them): "
            + ", ".join(repr(c) for c in summary.ignored_columns),
            markup=False, highlight=False,
        )
    if summary.joined:
        err_console.print(
            f"note: {summary.joined} new records joined another source's customer by email (rule email-at-import; "
            "see funnelsync merge --log, undo with funnelsync unmerge)",
            markup=False, highlight=False,
        )
    if summary.errors_truncated:
        err_console.print(
            f"note: the summary lists the first {len(summary.errors)} errors; all {summary.rejected} rejected "
            f"rows are stored with import job {summary.job_uuid}" + (f" and in {errors_path}" if errors_path else ""),
            markup=False, highlight=False,
        )
    if as_json:
        print_json(summary.as_json())
    else:
        if summary.columns:
            console.print(
                "Columns: " + ", ".join(f"{header!r} → {target}" for header, target in summary.columns.items()),
                markup=False, highlight=False,
            )
        table = Table(title=f"Import into {summary.source} ({summary.job_uuid})")
        for column in ("created", "updated", "unchanged", "rejected"):
            table.add_column(column, justify="right")
        table.add_row(str(summary.created), str(summary.updated), str(summary.unchanged), str(summary.rejected))
        console.print(table)
        if summary.errors:
            errors = Table(title="Rejected rows" + (" (first 20)" if len(summary.errors) > 20 else ""))
            for column in ("row", "column", "value", "reason"):
                errors.add_column(column)
            for error in summary.errors[:20]:
                errors.add_row(str(error["row"]), error["column"], str(error["value"]), error["reason"])
            console.print(errors)
        if errors_path and summary.rejected:
            console.print(f"Rejected rows written to {errors_path}")
        changes = ", ".join(f"{kind.replace('_', ' ')} {count:,}" for kind, count in run.lifecycle.counts.items())
        console.print(f"Lifecycle changes: {changes or 'none'}", markup=False, highlight=False)
        if run.merge is not None:
            console.print(f"Merged duplicates: {run.merge.merged_customers:,} customers in "
                          f"{len(run.merge.groups):,} groups", markup=False, highlight=False)
    raise typer.Exit(EXIT_REJECTED if summary.rejected else EXIT_OK)


def _date_format(value: str | None) -> str | None:
    from connectors.files.dates import parse_date_format

    try:
        return parse_date_format(value)
    except ValueError as exc:
        fail(str(exc), EXIT_UNREADABLE)


def _mapping(options: list[str] | None) -> dict[str, str]:
    from connectors.files.headers import MappingError, parse_map_options

    try:
        return parse_map_options(options)
    except MappingError as exc:
        fail(str(exc), EXIT_UNREADABLE)


@import_app.command("csv")
def import_csv_command(
    file: Annotated[Path, typer.Argument(help="The CSV file (comma, semicolon or tab; UTF-8 or detected).")],
    source: SourceOption,
    map_: MapOption = None,
    date_format: DateFormatOption = None,
    errors: ErrorsOption = None,
    encoding: Annotated[str | None, typer.Option("--encoding", help="Read the file in this encoding.")] = None,
    empty_cells: EmptyCellsOption = "keep",
    join_by_email: JoinOption = True,
    wait: WaitOption = 0.0,
    merge: MergeOption = True,
    as_json: JsonOption = False,
) -> None:
    """Import a flexible CSV of customers with lead and trial dates."""
    from connectors.files.rows import FileUnreadable
    from jobs.imports import SourceKindMismatch, import_csv

    mapping = _mapping(map_)
    order = _date_format(date_format)
    engine = get_engine()
    try:
        with _progress(not as_json, f"Importing {file.name}") as progress:
            run = _run(engine, source, lambda: import_csv(
                engine, file, source, mapping, order, progress, encoding=encoding, errors_path=errors,
                empty_cells=empty_cells, join_by_email=join_by_email), wait, merge)
    except FileUnreadable as exc:
        fail(f"{exc} (nothing imported)", EXIT_UNREADABLE)
    except (SourceKindMismatch, ValueError) as exc:
        fail(str(exc), EXIT_FAILED)
    _report(run, as_json, errors)


@import_app.command("jobs")
def import_jobs_command(
    source: Annotated[str | None, typer.Option("--source", help="Only the jobs of this data source.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many of the latest jobs.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """List the latest import jobs: running, done, failed, or interrupted (their process is gone)."""
    from jobs.import_jobs import list_import_jobs

    try:
        jobs = list_import_jobs(get_engine(), source, limit)
    except LookupError as exc:
        fail(str(exc), EXIT_FAILED)
    if as_json:
        print_json([{
            "uuid": j["uuid"], "source": j["source"], "kind": j["kind"], "file": j["filename"], "state": j["state"],
            "created": j["created"], "updated": j["updated"], "unchanged": j["unchanged"], "rejected": j["rejected"],
            "started_at": j["started_at"].isoformat(),
            "finished_at": j["finished_at"].isoformat() if j["finished_at"] else None,
            "error": j["error"],
        } for j in jobs])
        return
    table = compact_table(title="Import jobs")
    # The kind goes with the file ("leads.csv (csv)"): ten columns with whole headers need more than 80.
    for column in ("job", "source", "file", "state", "created", "updated", "unchanged", "rejected", "started"):
        table.add_column(column, justify="right" if column in ("created", "updated", "unchanged", "rejected")
                         else "left")
    for j in jobs:
        file = f"{j['filename']} ({j['kind']})" if j["filename"] else j["kind"]
        table.add_row(j["uuid"], j["source"], file, j["state"], str(j["created"]),
                      str(j["updated"]), str(j["unchanged"]), str(j["rejected"]),
                      f"{j['started_at'].astimezone(timezone.utc):%Y-%m-%d %H:%M}")
    console.print(table)


@import_app.command("sheet")
def import_sheet_command(
    spreadsheet: Annotated[str, typer.Argument(help="The spreadsheet id or its URL.")],
    worksheet: Annotated[str, typer.Option("--worksheet", help="The worksheet (tab) title.")],
    source: SourceOption,
    map_: MapOption = None,
    date_format: DateFormatOption = None,
    credentials: Annotated[
        Path | None,
        typer.Option("--credentials", help="Service-account JSON key (default: GOOGLE_APPLICATION_CREDENTIALS)."),
    ] = None,
    errors: ErrorsOption = None,
    empty_cells: EmptyCellsOption = "keep",
    join_by_email: JoinOption = True,
    wait: WaitOption = 0.0,
    merge: MergeOption = True,
    as_json: JsonOption = False,
) -> None:
    """Import a Google Sheets worksheet (only rows changed since the last run are applied)."""
    from connectors.files.rows import FileUnreadable
    from connectors.files.sheets import SheetsError, open_client
    from jobs.imports import SourceKindMismatch
    from jobs.sheet_import import import_sheet

    mapping = _mapping(map_)
    order = _date_format(date_format)
    engine = get_engine()
    try:
        client = open_client(credentials)
        with _progress(not as_json, f"Importing worksheet {worksheet}") as progress:
            run = _run(engine, source, lambda: import_sheet(
                engine, spreadsheet, worksheet, source, mapping, order, progress, credentials_file=credentials,
                client=client, errors_path=errors, empty_cells=empty_cells, join_by_email=join_by_email),
                wait, merge)
    except FileUnreadable as exc:
        fail(f"{exc} (nothing imported)", EXIT_UNREADABLE)
    except SheetsError as exc:
        fail(f"{exc} (nothing imported)", EXIT_UNREADABLE)
    except (SourceKindMismatch, ValueError) as exc:
        fail(str(exc), EXIT_FAILED)
    _report(run, as_json, errors)


@import_app.command("structured")
def import_structured_command(
    file: Annotated[Path, typer.Argument(help="A CSV following the customers or contacts template.")],
    source: SourceOption,
    type_: Annotated[str, typer.Option("--type", help="customers or contacts (samples: funnelsync/templates/).")],
    date_format: DateFormatOption = None,
    errors: ErrorsOption = None,
    encoding: Annotated[str | None, typer.Option("--encoding", help="Read the file in this encoding.")] = None,
    empty_cells: EmptyCellsOption = "keep",
    join_by_email: JoinOption = True,
    wait: WaitOption = 0.0,
    merge: MergeOption = True,
    as_json: JsonOption = False,
) -> None:
    """Import a structured CSV (strict template): customers (external_id, name, …) or their contacts."""
    from connectors.files.rows import FileUnreadable
    from jobs.imports import SourceKindMismatch, import_structured

    if type_ not in ("customers", "contacts"):
        fail(f"--type {type_!r}: use customers or contacts", EXIT_UNREADABLE)
    order = _date_format(date_format)
    engine = get_engine()
    try:
        with _progress(not as_json, f"Importing {file.name}") as progress:
            run = _run(engine, source, lambda: import_structured(
                engine, file, source, type_, progress, date_format=order, encoding=encoding, errors_path=errors,
                empty_cells=empty_cells, join_by_email=join_by_email), wait, merge)
    except FileUnreadable as exc:
        fail(f"{exc} (nothing imported)", EXIT_UNREADABLE)
    except (SourceKindMismatch, ValueError) as exc:
        fail(str(exc), EXIT_FAILED)
    _report(run, as_json, errors)
