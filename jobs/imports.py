"""Importing a file into a custom source: flexible CSV and structured CSV (a sheet: ``jobs.sheet_import``).

No Prefect here: the ``import-file`` flow wraps these functions (one task per file, batches inside), and
the CLI calls them directly. Each batch of ~5,000 rows is one transaction: its records (one
``upsert_prepared`` call), its rejected rows and the job's counters commit together, so an import killed
at any point and run again ends with every row present once.

Keying (docs/importing.md): a row with an external id is keyed by it. A row without one is matched by
normalised email to this source's existing source customer with that email (the oldest when several
share it) and updates it; with no such record it creates one whose external id is
``email:<normalised email>``. A NEW source customer is linked to an existing customer (from any source)
with the same normalised email, so a lead list lands on the customers a billing system already knows
instead of creating duplicates for the merge to clean up. A link to another source's customer is a merge
(rule ``email-at-import``): logged, listed by ``merge --log``, undone by ``unmerge``; ``join_by_email=False``
turns the join off (every new record gets its own customer).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Engine

from connectors.base import Feed
from connectors.files.flexible_csv import EMPTY_CELLS, FlexibleCsvFile
from connectors.files.rows import FileUnreadable, RowError, RowResult
from connectors.registry import kinds_fed
from funnelsync.spreadsheet import csv_writer
from funnelsync.timeutil import account_timezone
from jobs.import_jobs import resume_interrupted, resumed_note
from jobs.readahead import prefetched, rare_gc, read_in_child
from storage.bulk_load import SOURCE_EMAIL_INDEX, bulk_load
from storage.imports import (
    add_job_counts,
    add_rejections,
    external_ids_by_email,
    finish_import_job,
    start_import_job,
)
from storage.key_lookups import unchanged_file_rows
from storage.row_values import PreparedRecord, prepare_records
from storage.sources import create_source, get_source, source_customer_count
from storage.upsert import FreshLoad, fresh_load, upsert_prepared

BATCH_SIZE = 5000
# The summary keeps this many row errors in memory; every rejection is stored in import_rejections and
# written to --errors FILE regardless, so a million bad rows cannot exhaust memory.
SUMMARY_ERROR_LIMIT = 10_000

Progress = Callable[[int, int], None]


class SourceKindMismatch(ValueError):
    """The named source exists but is fed by an integration, not by imports."""


@dataclass
class ImportSummary:
    """What an import did; ``as_json()`` is the ``--json`` output."""

    job_uuid: str = ""
    source: str = ""
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rows: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    errors_truncated: bool = False
    ignored_columns: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    date_orders: dict[str, str] = field(default_factory=dict)
    # New records joined by email to another source's customer, and those merges (``MergeEvent.as_json``,
    # the first SUMMARY_ERROR_LIMIT) for the doors to announce.
    joined: int = 0
    merges: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """Exactly ``{"created", "updated", "unchanged", "rejected", "errors"}``."""
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "errors": self.errors,
        }

    def add_errors(self, errors: Iterable[RowError]) -> None:
        """Keep row errors for the summary, up to the limit."""
        for error in errors:
            if len(self.errors) >= SUMMARY_ERROR_LIMIT:
                self.errors_truncated = True
                return
            self.errors.append(error.as_dict())


def ensure_import_source(engine: Engine, name: str, kind: str) -> tuple[int, str]:
    """The id and name of source ``name``, created with ``kind`` when missing.

    Raises:
        SourceKindMismatch: the source belongs to an integration (importing into it would fight its syncs).
        ValueError: an invalid source name.
    """
    with engine.begin() as conn:
        row = get_source(conn, name)
        if row is None:
            row = create_source(conn, name, kind)
        elif row.kind not in kinds_fed(Feed.FILE):
            raise SourceKindMismatch(
                f"data source {row.name!r} is a {row.kind} integration: import into a custom source "
                f"(a new --source name creates one)"
            )
        return int(row.id), str(row.name)


class ErrorsFile:
    """Streams rejected rows to ``--errors FILE`` as they are found (bounded memory)."""

    def __init__(self, path: Path | None) -> None:
        self.handle = None
        if path is not None:
            try:
                self.handle = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                # Opened before the import job starts, so a bad path imports nothing and leaves no job behind.
                raise FileUnreadable(f"--errors {path}: cannot write: {exc.strerror or exc}") from None
            self.writer = csv_writer(self.handle)
            self.writer.writerow(["row", "column", "value", "reason"])

    def write(self, errors: Iterable[RowError]) -> None:
        if self.handle is not None:
            self.writer.writerows([e.row, e.column, e.value, e.reason] for e in errors)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


class ReadyRow(NamedTuple):
    """A mapped row with its record prepared for storage (``storage.row_values.prepare_record``), or its errors."""

    row: int
    record: PreparedRecord | None
    errors: list[RowError]
    keyed_by_email: bool
    # The source holds this row as it is (``FlexibleCsvFile.rows(unchanged=…)``): nothing to write.
    unchanged: bool = False


class _ReadyBatch(list[ReadyRow]):
    """Rows that cross from the reader process as plain tuples (see ``storage.row_values.PreparedBatch``)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _restore_ready, ([(r.row, None if r.record is None else tuple(r.record), r.errors, r.keyed_by_email,
                                  r.unchanged) for r in self],)


_new_tuple = tuple.__new__


def _restore_ready(rows: list[tuple[Any, ...]]) -> _ReadyBatch:
    new = _new_tuple
    return _ReadyBatch([
        new(ReadyRow, (row, None if record is None else new(PreparedRecord, record), errors, keyed, unchanged))
        for row, record, errors, keyed, unchanged in rows
    ])


def ready_batches(batches: Iterable[list[RowResult]], sqlite: bool, eager: bool) -> Iterator[_ReadyBatch]:
    """Prepare each batch's records for the database they go to (``storage.row_values.prepare_record``).

    ``eager`` in the reader process of a large file: prepared rows pickle as plain tuples, cheaper than
    records, and the writing process is left only lookups, ids and the writes. Lazy elsewhere: a record
    the source already holds unchanged needs only its fingerprint.
    """
    for batch in batches:
        records = [r.record for r in batch if r.record is not None]
        fps = [r.row_fingerprint for r in batch if r.record is not None]
        prepared = iter(prepare_records(records, sqlite=sqlite, eager=eager, row_fps=fps))
        # tuple.__new__: a NamedTuple's own constructor is Python code, run for every row of a large file.
        yield _ReadyBatch([_new_tuple(ReadyRow, (r.row, None if r.record is None else next(prepared), r.errors,
                                                  r.keyed_by_email, r.unchanged)) for r in batch])


def in_batches(results: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for result in results:
        batch.append(result)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def apply_batch(
    engine: Engine,
    source_id: int,
    job_id: int,
    batch: list[ReadyRow],
    summary: ImportSummary,
    errors_file: ErrorsFile,
    on_applied: Callable[[Any, list[ReadyRow]], None] | None = None,
    fresh: FreshLoad | None = None,
    join_by_email: bool = True,
) -> None:
    """Upsert one batch's valid rows and store its rejections, in one transaction.

    ``join_by_email``: link a new record to the existing customer with its email (a logged merge when
    that customer is another source's), else give it a customer of its own.

    ``fresh``: the source held nothing when the import began and the file's keys are unique
    (``FlexibleCsvFile.rows`` rejects repeats), so every row is new unless another writer raced us
    (``storage.upsert.FreshLoad``).
    """
    with engine.begin() as conn:
        by_email = {
            r.record.external_id[6:]: i for i, r in enumerate(batch) if r.record is not None and r.keyed_by_email
        }
        if by_email and fresh is None:
            known = external_ids_by_email(conn, source_id, list(by_email))
            if known:
                batch = list(batch)
                for email_key, external_id in known.items():
                    row = batch[by_email[email_key]]
                    batch[by_email[email_key]] = row._replace(
                        record=row.record._replace(external_id=external_id))  # type: ignore[union-attr]
        records: list[PreparedRecord] = []
        applied: list[ReadyRow] = []
        rejected: list[ReadyRow] = []
        skipped = 0
        first_row_of: dict[str, int] = {}
        for result in batch:
            record = result.record
            if record is None:
                if result.unchanged:
                    skipped += 1
                else:
                    rejected.append(result)
                continue
            first = first_row_of.get(record.external_id)
            if first is not None:
                # Only possible after email resolution: the row's email names a record that another row
                # of this batch updates by its external id.
                rejected.append(result._replace(record=None, errors=[RowError(
                    result.row, "", record.email or "", f"duplicate key: row {first} updates the same customer")]))
                continue
            first_row_of[record.external_id] = result.row
            records.append(record)
            applied.append(result)
        outcome = upsert_prepared(conn, source_id, records, link_new_by_email=join_by_email, fresh=fresh)
        row_errors = [e for r in rejected for e in r.errors]
        add_rejections(conn, job_id, [e.as_dict() for e in row_errors])
        counts = {
            "created": outcome.created,
            "updated": outcome.updated,
            "unchanged": outcome.unchanged + skipped,
            "rejected": len(rejected),
        }
        add_job_counts(conn, job_id, counts)
        if on_applied is not None:
            on_applied(conn, applied)
    summary.created += outcome.created
    summary.updated += outcome.updated
    summary.unchanged += outcome.unchanged + skipped
    summary.rejected += len(rejected)
    summary.joined += outcome.joined
    room = SUMMARY_ERROR_LIMIT - len(summary.merges)
    summary.merges.extend(e.as_json() for e in outcome.join_events[:max(room, 0)])
    summary.add_errors(row_errors)
    errors_file.write(row_errors)


def import_csv(
    engine: Engine,
    path: str | Path,
    source_name: str,
    mapping: dict[str, str] | None = None,
    date_format: str | None = None,
    progress: Progress | None = None,
    *,
    encoding: str | None = None,
    errors_path: str | Path | None = None,
    batch_size: int = BATCH_SIZE,
    tz: tzinfo | None = None,
    empty_cells: str = "keep",
    join_by_email: bool = True,
) -> ImportSummary:
    """Import a flexible customer CSV into the custom source ``source_name`` (created, kind csv, if missing).

    Args:
        engine: the database.
        path: the file.
        source_name: the data source to import into.
        mapping: ``{header: target}`` (``--map``).
        date_format: a normalised ``--date-format`` (see ``connectors.files.dates.parse_date_format``).
        progress: called with (rows done, rows total) after each batch.
        encoding: force an encoding instead of detecting it.
        errors_path: where to write every rejected row as CSV (row, column, value, reason).
        batch_size: rows per transaction.
        tz: zone of values without one (default: the account time zone).
        empty_cells: ``keep`` (an empty cell leaves the stored value) or ``clear`` (it clears the field).
            Either way a field the file maps no column to keeps its stored value.
        join_by_email: link a new record to the customer that has its email (a logged merge, rule
            ``email-at-import``, when another source's); False gives every new record its own customer.

    Raises:
        FileUnreadable: nothing was imported (encoding, layout, mapping or an undecidable date column).
        SourceKindMismatch: the source is an integration.
    """
    source = FlexibleCsvFile(Path(path), mapping=dict(mapping or {}), date_format=date_format,
                             encoding=encoding, tz=tz or account_timezone(), empty_cells=_empty_cells(empty_cells))
    return _import_file(engine, source, source_name, "csv", progress, errors_path, batch_size, apply_batch,
                        join_by_email=join_by_email)


def _empty_cells(value: str) -> str:
    if value not in EMPTY_CELLS:
        raise ValueError(f"--empty-cells {value!r}: use {' or '.join(EMPTY_CELLS)}")
    return value


BatchApplier = Callable[..., None]
# Below this many rows a file is parsed in the importing process: a few batches are not worth a process.
CHILD_READER_MIN_ROWS = 20_000


def _import_file(
    engine: Engine,
    source: FlexibleCsvFile,
    source_name: str,
    job_kind: str,
    progress: Progress | None,
    errors_path: str | Path | None,
    batch_size: int,
    apply: BatchApplier,
    *,
    join_by_email: bool = True,
) -> ImportSummary:
    """Pass 1, then the job and the batches of pass 2 (shared by the flexible and structured imports)."""
    from funnelsync.attributes import new_attribute_note
    from storage.projection import attribute_types

    with engine.connect() as conn:
        source.attribute_types = attribute_types(conn)
    layout = source.prepare()
    assert source.match is not None
    errors_file = ErrorsFile(Path(errors_path) if errors_path else None)
    source_id, name = ensure_import_source(engine, source_name, "csv")
    summary = ImportSummary(source=name, rows=layout.data_rows, ignored_columns=list(source.match.ignored),
                            columns=source.match.columns())
    if layout.encoding_note:
        summary.notes.append(f"{source.path.name}: {layout.encoding_note}")
    summary.notes.extend(new_attribute_note(key, kind) for key, kind in source.new_attributes.items())
    with engine.begin() as conn:
        job_id, summary.job_uuid = start_import_job(conn, source_id, job_kind, str(source.path))
        summary.notes += [resumed_note(job) for job in
                          resume_interrupted(conn, source_id, job_kind, str(source.path), summary.job_uuid)]
        known = source_customer_count(conn, source_id)
        contacts = apply is _apply_contacts_batch
        # Structured contacts rows share their customers' keys: only customer files load fresh.
        fresh = fresh_load(conn, source_id) if known == 0 and not contacts else None
    done = 0
    try:
        # A file of mostly new rows is parsed in a child process while this one writes: a thread shares the
        # interpreter lock and gained nothing on SQLite. Not a file the source mostly knows: writing
        # little, this process would wait for the child, and parsing plus pickling there cost more than
        # parsing here (bench/import_csv.py shows it on a re-import); read here, its unchanged rows are
        # also skipped unparsed,
        # which asks the database (no connection crosses a fork). On PostgreSQL it reads ahead on a thread.
        # A file bringing as many new rows as the customer table holds is indexed after it is written
        # (storage.bulk_load).
        unread = (SOURCE_EMAIL_INDEX,) if fresh is not None else ()
        sqlite = engine.dialect.name == "sqlite"

        def stored_as_is(digests: dict[str, str]) -> set[str]:
            with engine.connect() as conn:
                return unchanged_file_rows(conn, source_id, digests)

        def read(eager: bool) -> Iterator[list[Any]]:
            # Customer rows reach the applier prepared for storage, in the reader process when there is one.
            # Into a source that holds rows, a row it holds as it is (same row digest) is not even parsed.
            if contacts:
                return in_batches(source.rows(), batch_size)
            return ready_batches(
                in_batches(source.rows(unchanged=stored_as_is if known and not eager else None), batch_size),
                sqlite,
                eager,
            )

        if layout.data_rows - known >= layout.data_rows / 2 and layout.data_rows >= CHILD_READER_MIN_ROWS:
            batches = read_in_child(lambda: read(True))
        else:
            batches = prefetched(read(False), 0 if sqlite else 2)
        with rare_gc(), bulk_load(engine, 0 if contacts else layout.data_rows, source_id, also=unread):
            for batch in batches:
                apply(engine, source_id, job_id, batch, summary, errors_file, fresh=fresh, join_by_email=join_by_email)
                done += len(batch)
                if progress is not None:
                    progress(done, layout.data_rows)
    except BaseException as exc:
        with engine.begin() as conn:
            finish_import_job(conn, job_id, "failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    finally:
        errors_file.close()
    with engine.begin() as conn:
        finish_import_job(conn, job_id, "done")
    return summary


def _apply_contacts_batch(
    engine: Engine, source_id: int, job_id: int, batch: list[RowResult], summary: ImportSummary,
    errors_file: ErrorsFile, fresh: FreshLoad | None = None, join_by_email: bool = True,
) -> None:
    """A batch of contact rows: attach each to its customer's source customer, in one transaction.

    Contacts join no customer by email: ``join_by_email`` is the customers files' option.
    """
    from storage.imports import contact_key, upsert_source_contacts

    rejected: list[RowError] = []
    rejected_rows = 0
    items: list[tuple[str, Any]] = []
    item_rows: list[int] = []
    seen: dict[tuple[str, str], int] = {}
    for result in batch:
        record = result.record
        if record is None:
            rejected.extend(result.errors)
            rejected_rows += 1
            continue
        if not record.contacts:
            rejected.append(RowError(result.row, "", "", "the row has no contact values"))
            rejected_rows += 1
            continue
        contact = record.contacts[0]
        key = (record.external_id, contact_key(contact))
        if key in seen:
            rejected.append(RowError(result.row, "", contact.email or "",
                                     f"duplicate contact: row {seen[key]} has the same customer and contact"))
            rejected_rows += 1
            continue
        seen[key] = result.row
        items.append((record.external_id, contact))
        item_rows.append(result.row)
    with engine.begin() as conn:
        outcome = upsert_source_contacts(conn, source_id, items)
        for row, (external_id, _) in zip(item_rows, items):
            if external_id in outcome.missing:
                rejected.append(RowError(row, "customer_external_id", external_id,
                                         "no customer with this external_id in the source: import the customers first"))
                rejected_rows += 1
        rejected.sort(key=lambda e: e.row)
        add_rejections(conn, job_id, [e.as_dict() for e in rejected])
        add_job_counts(conn, job_id, {"created": outcome.created, "updated": outcome.updated,
                                      "unchanged": outcome.unchanged, "rejected": rejected_rows})
    summary.created += outcome.created
    summary.updated += outcome.updated
    summary.unchanged += outcome.unchanged
    summary.rejected += rejected_rows
    summary.add_errors(rejected)
    errors_file.write(rejected)


def import_structured(
    engine: Engine,
    path: str | Path,
    source_name: str,
    template_name: str = "customers",
    progress: Progress | None = None,
    *,
    date_format: str | None = None,
    encoding: str | None = None,
    errors_path: str | Path | None = None,
    batch_size: int = BATCH_SIZE,
    tz: tzinfo | None = None,
    empty_cells: str = "keep",
    join_by_email: bool = True,
) -> ImportSummary:
    """Import a structured (strict template) CSV of customers or contacts into a custom source.

    Customers rows are keyed by external_id (required, like name) and upserted like flexible rows.
    Contact rows attach to the source customer named by ``customer_external_id`` in the same source;
    they add or update contacts (matched by email, else by name) and never delete others.

    Raises:
        FileUnreadable: an unknown or missing required column (before any row is written), or any
            reason the flexible import would refuse the file.
        ValueError: an unknown template name.
    """
    from connectors.files.structured_csv import TEMPLATES

    template = TEMPLATES.get(template_name)
    if template is None:
        raise ValueError(f"unknown template {template_name!r}: use {' or '.join(TEMPLATES)}")
    source = FlexibleCsvFile(Path(path), date_format=date_format, encoding=encoding, tz=tz or account_timezone(),
                             template=template, empty_cells=_empty_cells(empty_cells))
    apply = _apply_contacts_batch if template_name == "contacts" else apply_batch
    return _import_file(engine, source, source_name, "structured", progress, errors_path, batch_size, apply,
                        join_by_email=join_by_email)


def import_contacts(
    engine: Engine,
    path: str | Path,
    source_name: str,
    progress: Progress | None = None,
    **options: Any,
) -> ImportSummary:
    """A structured contacts file (``import_structured`` with the contacts template)."""
    return import_structured(engine, path, source_name, "contacts", progress, **options)
