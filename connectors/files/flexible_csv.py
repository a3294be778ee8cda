"""The flexible customer file: the row mapper (a row → ``SourceCustomerRecord``) and the file reader.

The reader finds the encoding (``encoding``), the delimiter (``dialect``), matches the headers
(``headers``), reads dates (``dates``) and cells (``cells``) with the rules of its sibling modules.

Reading a file takes two streaming passes, so a million rows need no more memory than a batch:

1. ``FlexibleCsvFile.prepare()`` decodes the whole file once (so an encoding problem refuses the file
   before anything is written), counts the rows for the progress bar, surveys the slashed date columns
   to decide day-first vs month-first from all their values, and collects a 64-bit hash per row key to
   find the few keys that repeat (8 bytes a row instead of the keys themselves).
2. ``FlexibleCsvFile.rows()`` maps each row with the ``RowMapper`` built in pass 1 and yields one
   ``RowResult`` per non-blank row: a record, or the row's errors (a row is rejected whole).

Row numbers count the way a spreadsheet user does: the header is row 1, a blank line is a row, and a
quoted value spanning three lines is still one row. The same ``RowMapper`` serves Google Sheets, whose
rows arrive as lists of strings.

Keying ("matched by external id, else by normalised email"): a row with an external id is keyed
by it; a row without one is keyed ``email:<normalised email>`` and flagged ``keyed_by_email`` so the
import can look up an existing source customer of the same source with that email. When a key repeats
in a file, the first valid row wins and later ones are rejected as duplicates: "last wins" would make
a re-import of the same file rewrite records and stop being a no-op.

Pure module: no storage; besides its siblings it imports only the shared record model and time helpers.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from itertools import islice, pairwise
from pathlib import Path
from typing import Any

from connectors.files.cells import (
    MAX_LENGTH,
    convert_boolean,
    convert_country,
    convert_custom_text,
    convert_decimal,
    convert_email,
    convert_integer,
    convert_lead_status,
    convert_tags,
    text_within,
)
from connectors.files.dates import AmbiguousDateColumn, SlashedDateSurvey, make_date_parser
from connectors.files.dialect import SNIFF_CHARS, sniff_delimiter
from connectors.files.encoding import SAMPLE_BYTES, detect_encoding, guess_legacy_encoding
from connectors.files.headers import HeaderMatch, MappingError, Target, match_headers
from connectors.files.rows import ROW_RULES_VERSION, FileUnreadable, RowDigest, RowError, RowResult
from connectors.files.structured_csv import Template
from funnelsync.attributes import TYPE_BY_LOWER, AttributeTypeError, settle_column_type
from funnelsync.normalize import normalize_email
from funnelsync.records import ContactRecord, SourceCustomerRecord, SubscriptionFact
from funnelsync.timeutil import account_timezone

FIELD_SIZE_LIMIT = 1 << 20  # a stray quote swallows the file up to here, then csv reports the line
# The subscription fact a file row describes has a fixed id so a re-import replaces it, not adds one.
SUBSCRIPTION_ID = "import"


# What an empty cell in a mapped column does: leave the stored value (the default) or clear it.
EMPTY_CELLS = ("keep", "clear")

# The name in ``SourceCustomerRecord.present`` of each subscription column's date.
_SUBSCRIPTION_PRESENT = {"subscriber_since": "subscription.first_paid_at", "cancelled_at": "subscription.cancelled_at"}

# Where a converted value goes.
_FIELD, _CUSTOM, _CONTACT = 0, 1, 2


@dataclass(slots=True)
class _Column:
    index: int
    header: str
    name: str  # field name within its destination
    destination: int
    convert: Callable[[str], Any]


def _naming_type(convert: Callable[[str], Any], name: str, kind: str) -> Callable[[str], Any]:
    """``convert`` whose refusal names the attribute and its type."""

    def typed(value: str) -> Any:
        try:
            return convert(value)
        except ValueError as exc:
            raise ValueError(f"{name} is of type {kind}: {exc}") from None

    return typed


class RowMapper:
    """Turns a row (a list of strings) into a ``SourceCustomerRecord`` or the row's errors.

    Built once per file from the header match and the decided date orders; ``map()`` is the hot path.
    """

    def __init__(
        self,
        match: HeaderMatch,
        date_surveys: dict[int, SlashedDateSurvey],
        tz: tzinfo,
        date_format: str | None = None,
        keep_raw: bool = False,
        known_orders: dict[str, str] | None = None,
        required: tuple[str, ...] = (),
        key_by_email: bool = True,
        empty_cells: str = "keep",
    ) -> None:
        """Compile the per-column converters.

        ``empty_cells``: ``keep`` (an empty cell leaves the stored value: the record does not report that
        field) or ``clear`` (an empty cell in a mapped column clears the field).

        Raises:
            AmbiguousDateColumn: a slashed date column whose order cannot be decided.
            FileUnreadable: when neither external_id nor email is mapped.
        """
        self.match = match
        self.width = len(match.headers)
        self.keep_raw = keep_raw
        self.columns: list[_Column] = []
        ambiguous: list[str] = []
        for index, target in enumerate(match.targets):
            if target is None:
                continue
            try:
                column = self._column(index, match.headers[index], target, date_surveys.get(index), tz, date_format,
                                      (known_orders or {}).get(match.headers[index]))
            except AmbiguousDateColumn as exc:
                ambiguous.append(str(exc))
                continue
            self.columns.append(column)
        if ambiguous:
            raise AmbiguousDateColumn("; ".join(ambiguous))
        mapped = {t.field for t in match.targets if t is not None}
        if "external_id" not in mapped and "email" not in mapped:
            shown = ", ".join(repr(h) for h in match.headers if h) or "none"
            raise FileUnreadable(
                f"no column identifies the customer: map one to external_id or email, e.g. "
                f"--map \"Customer ID=external_id\" (columns: {shown})"
            )
        self.has_subscription = bool(mapped & {"subscriber_since", "cancelled_at"})
        self.has_contact = any(f.startswith("contact.") for f in mapped)
        self.has_tags = "tags" in mapped
        if empty_cells not in EMPTY_CELLS:
            raise ValueError(f"empty cells: {empty_cells!r} is not one of {', '.join(EMPTY_CELLS)}")
        self.clear_empty = empty_cells == "clear"
        # What a record of this file reports when every mapped cell counts (``clear``): the fields its
        # columns map. The subscription fact a row describes names the dates it reports
        # (``subscription.<field>``); contacts carry their own.
        self.mapped_fields = frozenset(
            {c.name for c in self.columns if c.destination == _FIELD}
            - {"external_id", "subscriber_since", "cancelled_at"}
        ) | {f"custom.{c.name}" for c in self.columns if c.destination == _CUSTOM} | {
            _SUBSCRIPTION_PRESENT[c.name] for c in self.columns
            if c.destination == _FIELD and c.name in _SUBSCRIPTION_PRESENT}
        self.mapped_contact_fields = frozenset(c.name for c in self.columns if c.destination == _CONTACT)
        # Plain tuples for the hot loop: no attribute lookups per cell.
        self._plan = [(c.index, c.header, c.name, c.destination, c.convert) for c in self.columns]
        self.key_by_email = key_by_email
        # (field name within its destination, destination, header) of the columns every row must fill.
        self.required = [
            (c.name, c.destination, c.header) for c in self.columns
            if (f"contact.{c.name}" if c.destination == _CONTACT else c.name) in required
        ]
        id_index, email_index = match.index_of("external_id"), match.index_of("email")
        self.key_column = match.headers[id_index if id_index is not None else email_index]  # type: ignore[index]
        self._id_index, self._email_index = id_index, email_index
        self._headers = match.headers

    def key_cell(self, values: list[str], keyed_by_email: bool) -> tuple[str, str] | None:
        """(header, raw value) of the cell a row was keyed by, for messages that quote what the file says."""
        index = self._email_index if keyed_by_email else self._id_index
        if index is None or index >= len(values):
            return None
        return self._headers[index], values[index]

    def date_orders(self) -> dict[str, str]:
        """``{header: DD/MM/YYYY or MM/DD/YYYY}`` of the date columns whose order is decided."""
        orders: dict[str, str] = {}
        for column in self.columns:
            order = getattr(column.convert, "order", None)
            if order:
                orders[column.header] = order
        return orders

    @staticmethod
    def _column(
        index: int,
        header: str,
        target: Target,
        survey: SlashedDateSurvey | None,
        tz: tzinfo,
        date_format: str | None,
        known_order: str | None = None,
    ) -> _Column:
        name = target.field
        if target.is_date:
            parser = make_date_parser(header, survey, tz, date_format, known_order)
            if name.startswith("custom."):
                # A datetime, so the attribute is typed Timestamp (stored as ISO 8601 text, as JSON has no
                # datetime).
                return _Column(index, header, name[7:], _CUSTOM, _naming_type(parser, name, "Timestamp"))
            return _Column(index, header, name, _FIELD, parser)
        convert: Callable[[str], Any]
        if name.startswith("custom."):
            typed: dict[str, Callable[[str], Any]] = {
                "integer": convert_integer, "decimal": convert_decimal, "boolean": convert_boolean,
            }
            convert = typed.get(target.custom_type, convert_custom_text)
            if target.custom_type in typed:
                convert = _naming_type(convert, name, TYPE_BY_LOWER[target.custom_type])
            return _Column(index, header, name[7:], _CUSTOM, convert)
        if name.startswith("contact."):
            convert = convert_email if name == "contact.email" else text_within(MAX_LENGTH[name])
            return _Column(index, header, name[8:], _CONTACT, convert)
        special: dict[str, Callable[[str], Any]] = {
            "email": convert_email,
            "country": convert_country,
            "lead_status": convert_lead_status,
            "tags": convert_tags,
        }
        return _Column(index, header, name, _FIELD, special.get(name) or text_within(MAX_LENGTH[name]))

    def map(self, values: list[str], row: int) -> RowResult | None:
        """Map one row; None for a blank row (skipped, not rejected)."""
        if not values or not any(values):
            return None
        fields: dict[str, Any] = {}
        custom: dict[str, Any] = {}
        contact: dict[str, Any] = {}
        places = (fields, custom, contact)
        errors: list[RowError] = []
        count = len(values)
        for index, header, name, destination, convert in self._plan:
            if index >= count:
                continue  # ragged row (Google Sheets drops trailing empty cells)
            raw = values[index]
            if not raw:
                continue
            value = raw.strip()
            if not value:
                continue
            if "\x00" in value:
                # PostgreSQL text cannot hold NUL: the batch failed with a DataError traceback. Reject the row
                # on both databases alike, quoting the cell with the NUL spelled out so the report can be stored.
                errors.append(RowError(row, header, raw.replace("\x00", "\\0"),
                                       "contains a NUL byte (0x00): re-export the file as text"))
                continue
            try:
                places[destination][name] = convert(value)
            except ValueError as exc:
                errors.append(RowError(row, header, raw, str(exc)))
        if not fields and not custom and not contact and not errors and not any(v.strip() for v in values):
            return None  # only whitespace: a blank row
        if count > self.width and any(v.strip() for v in values[self.width:]):
            extra = next(v for v in values[self.width:] if v.strip()).replace("\x00", "\\0")
            errors.append(
                RowError(row, "", extra, f"the row has {count} values but the header has {self.width} columns")
            )
        for name, destination, header in self.required:
            if name not in places[destination] and all(e.column != header for e in errors):
                errors.append(RowError(row, header, "", f"{header} is required"))
        external_id = fields.pop("external_id", None)
        keyed_by_email = False
        if external_id is None:
            email_key = normalize_email(fields.get("email")) if self.key_by_email else None
            if email_key:
                external_id = f"email:{email_key}"
                keyed_by_email = True
            elif all(e.column != self.key_column for e in errors):
                reason = "no external_id and no email: a row needs one to be matched" if self.key_by_email else (
                    f"{self.key_column} is required")
                errors.append(RowError(row, self.key_column, "", reason))
        if errors:
            return RowResult(row, None, errors, raw=values if self.keep_raw else None)
        subscriptions: list[SubscriptionFact] | None = None
        if self.has_subscription:
            since: datetime | None = fields.pop("subscriber_since", None)
            cancelled: datetime | None = fields.pop("cancelled_at", None)
            if since is not None or cancelled is not None:
                subscriptions = [
                    SubscriptionFact(
                        external_id=SUBSCRIPTION_ID,
                        state="cancelled" if cancelled is not None else "active",
                        first_paid_at=since,
                        cancelled_at=cancelled,
                    )
                ]
            elif self.clear_empty:
                subscriptions = []
        contacts: list[ContactRecord] | None = None
        if self.has_contact:
            if contact:
                contacts = [ContactRecord(**contact, present=self.mapped_contact_fields if self.clear_empty
                                          else frozenset(contact))]
            elif self.clear_empty:
                contacts = []
        if self.clear_empty:
            present = self.mapped_fields
        else:
            names = list(fields)
            if custom:
                names += ["custom." + key for key in custom]
            if subscriptions:
                fact = subscriptions[0]
                if fact.first_paid_at is not None:
                    names.append("subscription.first_paid_at")
                if fact.cancelled_at is not None:
                    names.append("subscription.cancelled_at")
            present = frozenset(names)
        tags = fields.pop("tags", [])
        record = SourceCustomerRecord(
            external_id=external_id,
            tags=tags,
            custom=custom,
            subscriptions=subscriptions,  # type: ignore[arg-type]  # None: leave stored ones alone
            contacts=contacts,  # type: ignore[arg-type]
            present=present,
            **fields,
        )
        return RowResult(row, record, [], keyed_by_email, values if self.keep_raw else None)


def row_key(values: list[str], id_index: int | None, email_index: int | None) -> str | None:
    """The raw key of a row as the mapper will derive it (for duplicate detection before mapping)."""
    if id_index is not None and id_index < len(values):
        value = values[id_index].strip()
        if value:
            return value
    if email_index is not None and email_index < len(values):
        email = normalize_email(values[email_index])
        if email:
            return f"email:{email}"
    return None


def survey_dates(match: HeaderMatch, rows: Iterable[tuple[int, list[str]]]) -> dict[int, SlashedDateSurvey]:
    """Survey the date columns of in-memory rows ``(row number, values)``, as ``prepare()`` does for a file."""
    surveys = {
        i: SlashedDateSurvey(match.headers[i]) for i, t in enumerate(match.targets) if t is not None and t.is_date
    }
    for number, values in rows:
        count = len(values)
        for index, survey in surveys.items():
            if index < count:
                survey.observe(values[index], number)
    return surveys


# ----------------------------------------------------------------------------------------------------
# The file


@dataclass(slots=True)
class FileLayout:
    """What pass 1 learnt about the file."""

    encoding: str
    delimiter: str
    header_row: int
    headers: list[str]
    data_rows: int = 0
    encoding_note: str | None = None


def settle_custom_columns(match: HeaderMatch, declared: Mapping[str, str], label: str) -> dict[str, str]:
    """Type each custom column of ``match`` by ``funnelsync.attributes``'s rule, in place: an untyped column
    takes the attribute's declared type; answers the new attributes with their types.

    Raises:
        FileUnreadable: a column names a type other than its attribute's (before anything is written).
    """
    new: dict[str, str] = {}
    for index, target in enumerate(match.targets):
        if target is None or not target.field.startswith("custom."):
            continue
        key = target.field[len("custom."):]
        named = TYPE_BY_LOWER[target.custom_type] if target.typed else None
        try:
            kind, is_new = settle_column_type(key, named, declared.get(key))
        except AttributeTypeError as exc:
            raise FileUnreadable(f"{label}, column {match.headers[index]!r}: {exc}") from None
        if is_new:
            new[key] = kind
        elif not target.typed:
            match.targets[index] = Target(target.field, kind.lower(), typed=True)
    return new


@dataclass
class FlexibleCsvFile:
    """A flexible customer CSV, read in two streaming passes (see the module docstring).

    Args:
        path: the file.
        mapping: ``{header: target}`` from ``--map``.
        date_format: a normalised ``--date-format`` (``csv_dates.parse_date_format``).
        encoding: force an encoding instead of detecting it.
        tz: the zone of values without one (default: the account time zone).
        template: a strict layout (structured import) instead of header matching; rows are then keyed
            by external id only.
    """

    path: Path
    mapping: dict[str, str] = field(default_factory=dict)
    date_format: str | None = None
    encoding: str | None = None
    tz: tzinfo | None = None
    template: Template | None = None
    empty_cells: str = "keep"
    layout: FileLayout | None = None
    match: HeaderMatch | None = None
    mapper: RowMapper | None = None
    # The declared type of each custom attribute key already known (String, Integer…): an untyped
    # custom column takes it, a typed one must agree with it (``funnelsync.attributes``).
    attribute_types: dict[str, str] = field(default_factory=dict)
    new_attributes: dict[str, str] = field(default_factory=dict)
    _duplicate_hashes: set[int] = field(default_factory=set)

    @property
    def label(self) -> str:
        """The file name for messages."""
        return str(self.path)

    def prepare(self, on_rows: Callable[[int], None] | None = None) -> FileLayout:
        """Pass 1: check the whole file is readable, match headers, decide date orders, find repeated keys.

        Args:
            on_rows: called with the number of rows read so far, every 50,000 rows.

        Raises:
            FileUnreadable: the file cannot be imported at all (nothing was written).
        """
        path = Path(self.path)
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "no such file"
            raise FileUnreadable(f"{self.label}: {what}")
        try:
            with path.open("rb") as handle:
                head = handle.read(SAMPLE_BYTES)
        except OSError as exc:
            raise FileUnreadable(f"{self.label}: cannot read: {exc.strerror or exc}") from None
        if not head.strip():
            raise FileUnreadable(f"{self.label} is empty: a header row and at least one row are expected")
        if self.encoding:
            try:
                encoding = codecs.lookup(self.encoding).name
            except LookupError:
                raise FileUnreadable(f"--encoding {self.encoding!r} is not an encoding Python knows") from None
            note = None
        else:
            encoding = detect_encoding(head, self.label)
            note = None if encoding.startswith("utf-8") else f"read as {encoding} (the file is not UTF-8)"
        try:
            return self._survey(encoding, note, on_rows)
        except UnicodeDecodeError as exc:
            if self.encoding or encoding != "utf-8":
                raise FileUnreadable(
                    f"{self.label} cannot be decoded as {encoding}: byte 0x{exc.object[exc.start]:02x} "
                    f"is not valid there; save the file as UTF-8 or pass the right --encoding"
                ) from None
            # Valid UTF-8 for the first megabyte, not further on: guess from the head plus the bad spot.
            window = exc.object[max(0, exc.start - 4096): exc.start + 4096]
            encoding = guess_legacy_encoding(head + b"\n" + bytes(window), self.label)
            note = f"read as {encoding} (the file is not UTF-8)"
            try:
                return self._survey(encoding, note, on_rows)
            except UnicodeDecodeError:
                raise FileUnreadable(
                    f"{self.label} is not UTF-8 and does not decode as {encoding} either: save it as UTF-8 or "
                    f"pass --encoding NAME"
                ) from None

    def _ends_with_quote(self, encoding: str) -> bool:
        """Whether the file's last non-blank character is a double quote (its last value was closed)."""
        with open(self.path, "rb") as raw:
            size = raw.seek(0, os.SEEK_END)
            raw.seek(max(0, size - 256))  # an even offset when the size is even (UTF-16 stays aligned)
            tail = raw.read().decode(encoding, errors="ignore")
        return tail.rstrip().endswith('"')

    def _open(self, encoding: str) -> io.TextIOWrapper:
        return open(self.path, encoding=encoding, newline="", errors="strict")

    def _reader(self, handle: io.TextIOWrapper, delimiter: str) -> Iterator[list[str]]:
        csv.field_size_limit(FIELD_SIZE_LIMIT)
        return csv.reader(handle, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)

    def _survey(self, encoding: str, note: str | None, on_rows: Callable[[int], None] | None) -> FileLayout:
        with self._open(encoding) as handle:
            delimiter = sniff_delimiter(handle.read(SNIFF_CHARS))
        with self._open(encoding) as handle:
            reader = self._reader(handle, delimiter)
            number = 0
            headers: list[str] | None = None
            try:
                for values in reader:
                    number += 1
                    if any(v.strip() for v in values):
                        headers = values
                        break
                if headers is None:
                    raise FileUnreadable(f"{self.label} has no header row")
                header_row = number
                if self.template is not None:
                    self.mapping = self.template.mapping_for(headers, self.label)
                try:
                    match = match_headers(headers, self.mapping)
                except MappingError as exc:
                    raise FileUnreadable(str(exc)) from None
                self._settle_attribute_types(match)
                surveys = {
                    i: SlashedDateSurvey(match.headers[i])
                    for i, t in enumerate(match.targets)
                    if t is not None and t.is_date
                }
                survey_items = list(surveys.items())
                id_index, email_index = match.index_of("external_id"), match.index_of("email")
                track_keys = self.template is None or self.template.unique_key
                hashes: list[int] = []
                data_rows = 0
                last: list[str] = []
                last_row = 0
                for values in reader:
                    number += 1
                    if not values:
                        continue
                    last, last_row = values, number
                    data_rows += 1
                    count = len(values)
                    for index, survey in survey_items:
                        if index < count and "/" in values[index]:
                            survey.observe(values[index], number)
                    key = row_key(values, id_index, email_index) if track_keys else None
                    if key is not None:
                        hashes.append(hash(key))
                    if on_rows is not None and data_rows % 50_000 == 0:
                        on_rows(data_rows)
            except csv.Error as exc:
                raise FileUnreadable(
                    f"{self.label}, row {number + 1}: {exc} (a quote opened and never closed?)"
                ) from None
        if last and ("\n" in last[-1] or "\r" in last[-1]) and not self._ends_with_quote(encoding):
            # The lenient reader lets a quote that is never closed swallow every later line into one value,
            # so a small file silently imported as one odd row. A real multi-line last value ends with '"'.
            raise FileUnreadable(
                f"{self.label}, row {last_row}: a quoted value is opened and never closed, so every line after "
                f"it would be read as part of that value; close the quote (or double it: \"\")"
            )
        hashes.sort()
        self._duplicate_hashes = {a for a, b in pairwise(hashes) if a == b}
        del hashes
        try:
            if self.template is not None:
                self.mapper = RowMapper(match, surveys, self.tz or account_timezone(), self.date_format,
                                        required=self.template.required_targets, key_by_email=False,
                                        empty_cells=self.empty_cells)
            else:
                self.mapper = RowMapper(match, surveys, self.tz or account_timezone(), self.date_format,
                                        empty_cells=self.empty_cells)
        except AmbiguousDateColumn as exc:
            raise FileUnreadable(str(exc)) from None
        self.match = match
        self.layout = FileLayout(encoding, delimiter, header_row, match.headers, data_rows, note)
        if data_rows == 0:
            raise FileUnreadable(f"{self.label} has a header row but no data rows")
        return self.layout

    def _settle_attribute_types(self, match: HeaderMatch) -> None:
        self.new_attributes.update(settle_custom_columns(match, self.attribute_types, self.label))

    def row_signature(self) -> bytes:
        """What decides how this file's rows read (for ``RowDigest``); call ``prepare()`` first."""
        if self.layout is None or self.mapper is None:
            raise RuntimeError("call prepare() before row_signature()")
        return repr((
            ROW_RULES_VERSION, self.layout.headers, sorted(self.mapping.items()), self.date_format,
            str(self.tz or account_timezone()), sorted(self.mapper.date_orders().items()),
            self.template.name if self.template is not None else None,
            sorted(self.mapper.mapped_fields), sorted(self.mapper.mapped_contact_fields), self.empty_cells,
        )).encode("utf-8", "surrogatepass")

    def rows(self, unchanged: Callable[[dict[str, str]], Collection[str]] | None = None,
             chunk: int = 1000) -> Iterator[RowResult]:
        """Pass 2: one ``RowResult`` per non-blank data row, in file order (call ``prepare()`` first).

        A row keyed by an external id carries its ``RowDigest``. With ``unchanged``, rows are read
        ``chunk`` at a time and ``unchanged({external id: digest})`` names the keys the source holds with
        that very digest: those rows are not parsed and come back as ``RowResult(unchanged=True)``.
        """
        if self.layout is None or self.mapper is None or self.match is None:
            raise RuntimeError("call prepare() before rows()")
        layout, mapper = self.layout, self.mapper
        digest = RowDigest(self.row_signature())
        id_index = self.match.index_of("external_id")
        duplicates = self._duplicate_hashes
        first_rows: dict[str, int] = {}

        def read(number: int, values: list[str], key: str | None, fingerprint: str | None) -> RowResult | None:
            result = mapper.map(values, number)
            if result is None:
                return None
            record = result.record
            if duplicates and record is not None and hash(record.external_id) in duplicates:
                first = first_rows.get(record.external_id)
                if first is not None:
                    # Quote the cell as the file has it ('Ada@X.com'), not the derived key ('email:ada@x.com').
                    column, raw = mapper.key_cell(values, result.keyed_by_email) or (
                        mapper.key_column, record.external_id)
                    return RowResult(
                        number,
                        None,
                        [RowError(number, column, raw,
                                  f"duplicate key: row {first} has the same "
                                  f"{'email' if result.keyed_by_email else 'external_id'}; the first row is imported")],
                    )
                first_rows[record.external_id] = number
            if record is not None and key is not None and record.external_id == key:
                result.row_fingerprint = fingerprint
            return result

        def keyed(number: int, values: list[str]) -> tuple[int, list[str], str | None, str | None]:
            key = values[id_index].strip() if id_index is not None and id_index < len(values) else ""
            return (number, values, key, digest(values)) if key else (number, values, None, None)

        with self._open(layout.encoding) as handle:
            numbered = islice(enumerate(self._reader(handle, layout.delimiter), 1), layout.header_row, None)
            if unchanged is None:
                for number, values in numbered:
                    result = read(*keyed(number, values))
                    if result is not None:
                        yield result
                return
            while part := [keyed(number, values) for number, values in islice(numbered, chunk)]:
                digests: dict[str, str] = {}
                for _n, _v, key, fp in part:
                    if key is not None and fp is not None:
                        digests.setdefault(key, fp)  # a repeated key: its first row is the one imported
                same = unchanged(digests)
                for number, values, key, fingerprint in part:
                    if key is not None and key in same and not (duplicates and key in first_rows):
                        if duplicates and hash(key) in duplicates:
                            first_rows[key] = number
                        yield RowResult(number, None, [], unchanged=True)
                        continue
                    result = read(number, values, key, fingerprint)
                    if result is not None:
                        yield result


def file_size(path: Path) -> int:
    """Size in bytes (for progress), 0 when unknown."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
