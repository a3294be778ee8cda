"""Importing a Google Sheets worksheet into a custom source: only the rows changed since the last run.

The rows are read through gspread (``connectors.files.sheets``) and mapped exactly like a flexible CSV's;
each applied row's fingerprint is kept per (source, worksheet), so a scheduled run applies only what
changed and forgets the rows gone from the sheet. Batches are written as a file import writes them
(``jobs.imports``).
"""

from __future__ import annotations

from datetime import tzinfo
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from connectors.files.dates import AmbiguousDateColumn
from connectors.files.flexible_csv import EMPTY_CELLS, RowMapper, row_key, settle_custom_columns, survey_dates
from connectors.files.headers import MappingError, match_headers
from connectors.files.rows import FileUnreadable, RowDigest, RowError, RowResult
from funnelsync.attributes import new_attribute_note
from funnelsync.timeutil import account_timezone
from jobs.import_jobs import resume_interrupted, resumed_note
from jobs.imports import (
    BATCH_SIZE,
    ErrorsFile,
    ImportSummary,
    Progress,
    ReadyRow,
    apply_batch,
    ensure_import_source,
    in_batches,
    ready_batches,
)
from jobs.readahead import rare_gc
from storage.imports import (
    add_job_counts,
    delete_row_fingerprints,
    finish_import_job,
    load_row_fingerprints,
    save_row_fingerprints,
    start_import_job,
)
from storage.projection import attribute_types
from storage.sources import get_source, update_source_settings


def import_rows(
    engine: Engine,
    rows: list[list[str]],
    source_name: str,
    stream: str,
    mapping: dict[str, str] | None = None,
    date_format: str | None = None,
    progress: Progress | None = None,
    *,
    label: str = "sheet",
    errors_path: str | Path | None = None,
    batch_size: int = BATCH_SIZE,
    tz: tzinfo | None = None,
    known_orders: dict[str, str] | None = None,
    empty_cells: str = "keep",
    join_by_email: bool = True,
) -> ImportSummary:
    """Import in-memory rows (a worksheet's values) applying only rows changed since the last run.

    The first non-blank row is the header; row numbers are the sheet's. Each applied row's fingerprint
    (its values, the header and the mapping) is kept per (source, ``stream``) in
    ``import_row_fingerprints``; an unchanged row is counted unchanged without being parsed or written,
    a rejected row keeps no fingerprint (it is reported again until fixed), and the fingerprints of rows
    gone from the sheet are deleted. As for a file, a row changes only the fields the sheet has columns
    for, and an empty cell leaves the stored value unless ``empty_cells`` is ``clear``.

    Raises:
        FileUnreadable: no header, no key column, a mapping error or an undecidable date column.
    """
    zone = tz or account_timezone()
    header_index = next((i for i, r in enumerate(rows) if any(str(v).strip() for v in r)), None)
    if header_index is None:
        raise FileUnreadable(f"{label} is empty: a header row and at least one row are expected")
    headers = [str(v) for v in rows[header_index]]
    try:
        match = match_headers(headers, dict(mapping or {}))
    except MappingError as exc:
        raise FileUnreadable(str(exc)) from None
    with engine.connect() as conn:
        declared = attribute_types(conn)
    # The one typing rule (funnelsync.attributes): a file's and a sheet's custom columns are typed alike.
    new_attributes = settle_custom_columns(match, declared, label)
    numbered = [(i + 1, [str(v) for v in r]) for i, r in enumerate(rows) if i > header_index]
    try:
        mapper = RowMapper(match, survey_dates(match, numbered), zone, date_format, known_orders=known_orders,
                           empty_cells=empty_cells)
    except AmbiguousDateColumn as exc:
        raise FileUnreadable(str(exc)) from None
    errors_file = ErrorsFile(Path(errors_path) if errors_path else None)
    source_id, name = ensure_import_source(engine, source_name, "google_sheets")
    summary = ImportSummary(source=name, rows=len(numbered), ignored_columns=list(match.ignored),
                            columns=match.columns(), date_orders=mapper.date_orders())
    summary.notes.extend(new_attribute_note(key, kind) for key, kind in new_attributes.items())
    # The columns' custom types decide how a row reads too: rows fingerprinted before a column took its
    # attribute's declared type are read again.
    column_types = sorted((t.field, t.custom_type) for t in match.targets if t is not None and t.typed)
    signature = repr((headers, sorted((mapping or {}).items()), date_format, str(zone))
                     + ((empty_cells,) if empty_cells != "keep" else ())
                     + ((column_types,) if column_types else ())).encode()
    row_digest = RowDigest(signature, loose=True)
    id_index, email_index = match.index_of("external_id"), match.index_of("email")
    with engine.begin() as conn:
        stored = load_row_fingerprints(conn, source_id, stream)
        job_id, summary.job_uuid = start_import_job(conn, source_id, "sheet", label)
        summary.notes += [resumed_note(job) for job in
                          resume_interrupted(conn, source_id, "sheet", label, summary.job_uuid)]
    present: set[str] = set()
    fingerprint_of: dict[int, tuple[str, str]] = {}
    pending: list[RowResult] = []
    unchanged = 0
    seen_rows: dict[str, int] = {}
    for number, values in numbered:
        key = row_key(values, id_index, email_index)
        if key is not None:
            if key in seen_rows:
                pending.append(RowResult(number, None, [RowError(
                    number, mapper.key_column, key, f"duplicate key: row {seen_rows[key]} has the same key; "
                    f"the first row is imported")]))
                continue
            seen_rows[key] = number
            present.add(key)
            fingerprint = row_digest(values)
            if stored.get(key) == fingerprint:
                unchanged += 1
                continue
            fingerprint_of[number] = (key, fingerprint)
        result = mapper.map(values, number)
        if result is not None:
            pending.append(result)

    def remember(conn: Any, applied: list[ReadyRow]) -> None:
        # Same transaction as the batch: a row's fingerprint is stored exactly when its record is.
        fingerprints = dict(fingerprint_of[r.row] for r in applied if r.row in fingerprint_of)
        save_row_fingerprints(conn, source_id, stream, fingerprints)

    done = 0
    summary.unchanged += unchanged
    try:
        with rare_gc():
            for batch in ready_batches(in_batches(pending, batch_size), engine.dialect.name == "sqlite", False):
                apply_batch(engine, source_id, job_id, batch, summary, errors_file, on_applied=remember,
                            join_by_email=join_by_email)
                done += len(batch)
                if progress is not None:
                    progress(done, len(pending))
        gone = [key for key in stored if key not in present]
        with engine.begin() as conn:
            delete_row_fingerprints(conn, source_id, stream, gone)
            add_job_counts(conn, job_id, {"unchanged": unchanged})
            finish_import_job(conn, job_id, "done")
    except BaseException as exc:
        with engine.begin() as conn:
            finish_import_job(conn, job_id, "failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    finally:
        errors_file.close()
    return summary


def import_sheet(
    engine: Engine,
    spreadsheet: str | None = None,
    worksheet: str | None = None,
    source_name: str | None = None,
    mapping: dict[str, str] | None = None,
    date_format: str | None = None,
    progress: Progress | None = None,
    *,
    credentials_file: str | Path | None = None,
    client: Any = None,
    errors_path: str | Path | None = None,
    tz: tzinfo | None = None,
    full_refresh: bool = False,
    empty_cells: str = "keep",
    join_by_email: bool = True,
) -> ImportSummary:
    """Import one Google Sheets worksheet into the custom source ``source_name`` (kind google_sheets).

    Only rows changed since the last run of this source and worksheet are applied (see ``import_rows``).
    The source's settings remember the spreadsheet, worksheet, mapping and the credentials file PATH
    (never its content), so a scheduled run needs only the source name: with ``spreadsheet`` and
    ``worksheet`` left out they come from those settings (as ``import_sheet_source`` does).

    Args:
        spreadsheet: the spreadsheet id or URL.
        worksheet: the worksheet title.
        source_name: the custom source (required).
        credentials_file: a service-account key file (default ``GOOGLE_APPLICATION_CREDENTIALS``).
        client: a ready gspread client (tests point one at a local fake API).
        full_refresh: forget the row fingerprints first, so every row is applied again (the upsert still
            counts rows whose values did not change as unchanged).
        empty_cells: ``keep`` (an empty cell leaves the stored value) or ``clear``; remembered.
        join_by_email: link new rows to the customer that has their email (``jobs.imports.import_csv``);
            remembered with the sheet for its scheduled runs.

    Raises:
        SheetsError: the sheet could not be read (nothing imported).
        FileUnreadable: no header, no key column, mapping error, undecidable date column.
        ValueError: no source name, or no sheet given and none stored for the source.
    """
    if not source_name:
        raise ValueError("name the custom source to import the sheet into")
    if spreadsheet is None or worksheet is None:
        return import_sheet_source(engine, source_name, client=client, progress=progress, full_refresh=full_refresh)
    if empty_cells not in EMPTY_CELLS:
        raise ValueError(f"--empty-cells {empty_cells!r}: use {' or '.join(EMPTY_CELLS)}")
    from connectors.files.sheets import fetch_rows, open_client, spreadsheet_key

    key = spreadsheet_key(spreadsheet)
    with engine.connect() as conn:
        existing = get_source(conn, source_name)
    known_orders = dict((existing.settings or {}).get("date_orders") or {}) if existing is not None else {}
    if client is None:
        client = open_client(credentials_file)
    rows = fetch_rows(client, key, worksheet)
    if full_refresh and existing is not None:
        with engine.begin() as conn:
            delete_row_fingerprints(conn, existing.id, f"{key}/{worksheet}"[:255],
                                    list(load_row_fingerprints(conn, existing.id, f"{key}/{worksheet}"[:255])))
    summary = import_rows(
        engine, rows, source_name, f"{key}/{worksheet}"[:255], mapping, date_format, progress,
        label=f"worksheet {worksheet!r} of spreadsheet {key}", errors_path=errors_path, tz=tz,
        known_orders=known_orders, empty_cells=empty_cells, join_by_email=join_by_email,
    )
    with engine.begin() as conn:
        row = get_source(conn, summary.source)
        if row is not None:
            settings = dict(row.settings or {})
            settings.update(
                spreadsheet_id=key, worksheet=worksheet, mapping=dict(mapping or {}), date_format=date_format,
                credentials_file=str(credentials_file) if credentials_file else settings.get("credentials_file"),
                date_orders={**known_orders, **summary.date_orders}, empty_cells=empty_cells,
                join_by_email=join_by_email,
            )
            update_source_settings(conn, row.id, settings)
    return summary


def import_sheet_source(engine: Engine, source_name: str, *, client: Any = None,
                        progress: Progress | None = None, full_refresh: bool = False) -> ImportSummary:
    """Re-run the sheet import of a google_sheets source from its stored settings (for schedules).

    Raises:
        ValueError: the source is unknown or has no sheet settings.
    """
    with engine.connect() as conn:
        row = get_source(conn, source_name)
    if row is None or row.kind != "google_sheets" or not (row.settings or {}).get("spreadsheet_id"):
        raise ValueError(f"{source_name!r} is not a Google Sheets source: run `funnelsync import sheet` once first")
    settings = row.settings
    return import_sheet(
        engine, settings["spreadsheet_id"], settings["worksheet"], row.name, settings.get("mapping") or {},
        settings.get("date_format"), progress, credentials_file=settings.get("credentials_file"), client=client,
        full_refresh=full_refresh, empty_cells=settings.get("empty_cells") or "keep",
        join_by_email=bool(settings.get("join_by_email", True)),
    )
