"""Manual entry and bulk edit: add a customer by hand, edit one, edit many.

Edits are stored as manual edits (overrides, ``manual_edits``): the projection prefers them to every
source's value, so no re-sync or re-import erases them. The rules are ``funnelsync.edit_rules``'s (no
lead status on a subscriber, no date in the future, no trial before the lead date): a bulk edit skips a
customer that breaks one, with the reason, and applies the rest in batches; a single edit refuses.

Values are parsed with the importer's rules (``connectors.files.flexible_csv`` converters, dates as the
flexible CSV reads them, date-only = midnight in the account time zone).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from connectors.files.cells import (
    convert_boolean,
    convert_country,
    convert_decimal,
    convert_email,
    convert_integer,
    convert_lead_status,
    convert_tags,
)
from connectors.files.dates import make_date_parser
from connectors.files.dialect import sniff_delimiter
from connectors.files.encoding import detect_encoding
from connectors.files.headers import normalize_header
from connectors.files.rows import FileUnreadable
from funnelsync.attributes import (
    TYPE_BY_LOWER,
    AttributeTypeError,
    UntypedText,
    new_attribute_note,
    settle_attribute,
)
from funnelsync.edit_rules import DATE_FIELDS, skip_reason
from funnelsync.records import SourceCustomerRecord
from funnelsync.timeutil import account_timezone

BULK_FIELDS = ("lead_status", "owner", "lead_created_at", "free_trial_started_at")
EDIT_FIELDS = (
    "name", "email", "company", "country", "state", "city", "zip", "website_url", "owner", "lead_status",
    "lead_created_at", "free_trial_started_at",
)
BATCH_SIZE = 1000
SKIP_LIST_LIMIT = 10_000


class EditValueError(ValueError):
    """An assignment ``field=value`` that cannot be used: unknown field or unparsable value."""


# ---------------------------------------------------------------- pure rules


def parse_assignment(field_name: str, text: str, allowed: tuple[str, ...], tz: tzinfo) -> dict[str, Any]:
    """Turn one ``field=value`` into manual-edit entries.

    ``tags=a,b`` adds tags (``tag.a: True``…); ``tag.<name>=true|false`` adds or removes one;
    ``custom.<key>[:integer|decimal|boolean|timestamp|string]=value`` sets a custom attribute (empty
    value: none); an empty value of a field clears it (an override to "no value").

    Raises:
        EditValueError: naming the field and why.
    """
    name = field_name.strip()
    value = text.strip()
    try:
        if "\x00" in name or "\x00" in value:
            # PostgreSQL text cannot hold NUL: the edit crashed there with a DataError traceback.
            raise ValueError("contains a NUL byte (0x00)")
        if name == "tags":
            tags = convert_tags(value)
            if not tags:
                raise ValueError("name at least one tag (tags=a,b adds them; tag.<name>=false removes one)")
            return {f"tag.{t}": True for t in tags}
        if name.startswith("tag."):
            if not name[4:]:
                raise ValueError("name the tag: tag.<name>=true|false")
            return {name: convert_boolean(value) if value else True}
        if name.startswith("custom."):
            key, _, kind = name[7:].partition(":")
            if not key:
                raise ValueError("name the attribute: custom.<key>=value")
            if not value:
                return {f"custom.{key}": None}
            if not kind:
                # Bare text takes the attribute's declared type (settled against the database later).
                return {f"custom.{key}": UntypedText(value)}
            converters = text_converters(key, tz)
            if kind not in TYPE_BY_LOWER:
                raise ValueError("the type must be integer, decimal, boolean, timestamp or string")
            return {f"custom.{key}": converters[TYPE_BY_LOWER[kind]](value)}
        if name not in allowed:
            raise ValueError(f"cannot be edited here: use {', '.join(allowed)}, tags, tag.<name> or custom.<key>")
        if not value:
            return {name: None}
        if name in DATE_FIELDS:
            return {name: make_date_parser(name, None, tz)(value)}
        converter = {"lead_status": convert_lead_status, "country": convert_country, "email": convert_email}.get(name)
        return {name: converter(value) if converter else value}
    except ValueError as exc:
        raise EditValueError(f"{name}={text!r}: {exc}") from None


def text_converters(key: str, tz: tzinfo) -> dict[str, Callable[[str], Any]]:
    """Readers of a custom attribute's text by type (the importer's rules)."""
    return {
        "Integer": convert_integer, "Decimal": convert_decimal, "Boolean": convert_boolean,
        "Timestamp": lambda v: make_date_parser(key, None, tz)(v), "String": str,
    }


def settle_custom_types(
    conn: Any, edits: dict[str, Any], tz: tzinfo, new_types: dict[str, str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """``edits`` with every custom attribute typed by ``funnelsync.attributes`` (bare text read as the
    attribute's declared type), and a note per new attribute. New keys' types are added to ``new_types``
    (to register with the write).

    Raises:
        AttributeTypeError: a value does not fit its attribute's type.
    """
    from storage.projection import attribute_types

    keys = [name[7:] for name in edits if name.startswith("custom.")]
    if not keys:
        return edits, []
    declared = attribute_types(conn, keys)
    if new_types:
        declared = {**new_types, **declared}
    out = dict(edits)
    notes: list[str] = []
    for key in keys:
        value, kind, new = settle_attribute(key, edits[f"custom.{key}"], declared.get(key), text_converters(key, tz))
        out[f"custom.{key}"] = str(value) if isinstance(value, UntypedText) else value
        if new and new_types is not None and key not in new_types:
            new_types[key] = kind
            notes.append(new_attribute_note(key, kind))
        elif new and new_types is None:
            notes.append(new_attribute_note(key, kind))
    return out, notes


def parse_assignments(pairs: Iterable[tuple[str, str]], allowed: tuple[str, ...], tz: tzinfo) -> dict[str, Any]:
    """Several assignments merged in order (a later one wins)."""
    edits: dict[str, Any] = {}
    for name, text in pairs:
        edits.update(parse_assignment(name, text, allowed, tz))
    return edits


# ---------------------------------------------------------------- bulk edit


@dataclass
class BulkEditSummary:
    """Counts of a bulk edit and the skipped customers with their reasons."""

    applied: int = 0
    skipped: int = 0
    skips: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)

    def skip(self, customer: str, reason: str) -> None:
        """Count a skipped customer (the list keeps the first 10,000)."""
        self.skipped += 1
        if len(self.skips) < SKIP_LIST_LIMIT:
            self.skips.append({"customer": customer, "reason": reason})

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` output."""
        return {"applied": self.applied, "skipped": self.skipped, "skips": self.skips, "dry_run": self.dry_run,
                "notes": self.notes}


Target = tuple[str, int | None, dict[str, Any]]  # (reference shown to the user, customer id or None, edits)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def apply_bulk_edit(
    engine: Engine,
    targets: Iterable[Target],
    *,
    actor: str = "bulk-edit",
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> BulkEditSummary:
    """Apply per-customer edits in batches (one transaction, one statement per table each).

    Args:
        targets: ``(reference, customer id or None, edits)``; None ids (not found) and rows whose edits
            are an error string under ``"__error__"`` are skipped with their reason.
        dry_run: check the rules and count, write nothing.
    """
    from storage.bulk_edits import apply_manual_edits, customer_states
    from storage.projection import register_attribute_types

    moment = now or datetime.now(timezone.utc)
    summary = BulkEditSummary(dry_run=dry_run)
    # A new attribute's type is settled by its first value and holds for every later customer.
    new_types: dict[str, str] = {}
    registered: set[str] = set()
    done = 0
    for batch in _chunks(targets, batch_size):
        with engine.begin() as conn:
            states = customer_states(conn, [cid for _, cid, _ in batch if cid is not None])
            to_apply: dict[int, dict[str, Any]] = {}
            for ref, cid, edits in batch:
                if "__error__" in edits:
                    summary.skip(ref, edits["__error__"])
                    continue
                state = states.get(cid) if cid is not None else None
                if state is None:
                    summary.skip(ref, "no such customer")
                    continue
                if cid in to_apply:
                    summary.skip(ref, "the same customer appears earlier in this batch; the first edit is applied")
                    continue
                reason = skip_reason(state.status, state.lead_created_at, state.free_trial_started_at, edits, moment)
                if reason is not None:
                    summary.skip(ref, reason)
                    continue
                try:
                    edits, notes = settle_custom_types(conn, edits, account_timezone(), new_types)
                except AttributeTypeError as exc:
                    summary.skip(ref, str(exc))
                    continue
                summary.notes.extend(notes)
                to_apply[cid] = edits  # type: ignore[index]
            if not dry_run:
                register_attribute_types(conn, {k: new_types[k] for k in new_types if k not in registered})
                registered.update(new_types)
                apply_manual_edits(conn, to_apply, actor)
            summary.applied += len(to_apply)
        done += len(batch)
        if progress is not None:
            progress(done)
    return summary


def targets_from_refs(engine: Engine, refs: Iterable[str], edits: dict[str, Any]) -> Iterator[Target]:
    """Resolve customer references (uuid, SOURCE:EXTERNAL_ID or email) in batches."""
    from storage.bulk_edits import resolve_refs

    for chunk in _chunks((r.strip() for r in refs if r.strip() and not r.strip().startswith("#")), BATCH_SIZE):
        with engine.connect() as conn:
            found = resolve_refs(conn, chunk)
        for ref in chunk:
            yield ref, found.get(ref), edits


def targets_from_filter(engine: Engine, where: list[str], edits: dict[str, Any]) -> Iterator[Target]:
    """Every customer matching the shared filter grammar (``storage.filters``), paged by id.

    Raises:
        storage.filters.FilterError: a filter that does not parse or names an unknown source.
    """
    from sqlalchemy import select

    from storage.filters import build_filter
    from storage.schema import customers

    with engine.connect() as conn:
        clause = build_filter(conn, where)
    after = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(customers.c.id, customers.c.uuid).where(clause, customers.c.id > after)
                .order_by(customers.c.id).limit(BATCH_SIZE)
            ).all()
        if not rows:
            return
        for cid, uuid in rows:
            yield uuid, cid, edits
        after = rows[-1][0]


_ID_HEADERS = ("customer", "customeruuid", "uuid", "ref", "customerref", "customerid")


def targets_from_csv(
    engine: Engine, path: Path, edits: dict[str, Any], tz: tzinfo
) -> Iterator[Target]:
    """Customers and per-row values from a CSV, streamed in batches.

    The CSV names each customer in a ``customer`` (or ``uuid``) column holding a ``cus_…`` uuid or
    ``SOURCE:EXTERNAL_ID``, or in ``data_source`` + ``external_id`` columns, or in an ``email`` column.
    Other columns named like a bulk-editable field (lead_status, owner, lead_created_at,
    free_trial_started_at, tags, tag.<name>, custom.<key>) give that row's values; an empty cell leaves
    the field alone; ``--set`` values apply to every row and a cell overrides them.

    Raises:
        FileUnreadable: the file cannot be read or names no customer column.
    """
    from storage.bulk_edits import resolve_refs

    if not path.is_file():
        raise FileUnreadable(f"{path}: no such file")
    with path.open("rb") as raw:
        head = raw.read(1 << 20)
    encoding = detect_encoding(head, str(path))
    with path.open(encoding=encoding, newline="") as sample:
        delimiter = sniff_delimiter(sample.read(64 * 1024))
    with path.open(encoding=encoding, newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        headers = [h.strip() for h in next(reader, [])]
        norm = [normalize_header(h) for h in headers]
        id_index = next((norm.index(h) for h in _ID_HEADERS if h in norm), None)
        source_index = next((norm.index(h) for h in ("datasource", "source") if h in norm), None)
        external_index = norm.index("externalid") if "externalid" in norm else None
        email_index = norm.index("email") if "email" in norm else None
        if id_index is None and (source_index is None or external_index is None) and email_index is None:
            raise FileUnreadable(
                f"{path}: no column names the customer: add a 'customer' column (cus_… uuid or SOURCE:EXTERNAL_ID), "
                f"'data_source' and 'external_id' columns, or an 'email' column"
            )
        used = {i for i in (id_index, source_index, external_index, email_index) if i is not None}
        field_columns = []
        for index, header in enumerate(headers):
            if index in used or not header:
                continue
            canonical = header if header.startswith(("custom.", "tag.")) else header.strip().lower().replace(" ", "_")
            # Other columns (a customer export's name, country…) are ignored: only bulk-editable fields count.
            if canonical in BULK_FIELDS or canonical == "tags" or canonical.startswith(("custom.", "tag.")):
                field_columns.append((index, canonical))

        def rows() -> Iterator[tuple[int, str, dict[str, Any]]]:
            for number, values in enumerate(reader, start=2):
                if not any(v.strip() for v in values):
                    continue

                def cell(i: int | None, values: list[str] = values) -> str:
                    return values[i].strip() if i is not None and i < len(values) else ""

                if cell(id_index):
                    ref = cell(id_index)
                elif cell(source_index) and cell(external_index):
                    ref = f"{cell(source_index)}:{cell(external_index)}"
                else:
                    ref = cell(email_index) or f"row {number}"
                row_edits = dict(edits)
                try:
                    for index, name in field_columns:
                        if cell(index):
                            row_edits.update(parse_assignment(name, cell(index), BULK_FIELDS, tz))
                except EditValueError as exc:
                    row_edits = {"__error__": f"row {number}: {exc}"}
                if not row_edits:
                    row_edits = {"__error__": f"row {number}: nothing to set (no --set and no value in the row)"}
                yield number, ref, row_edits

        for chunk in _chunks(rows(), BATCH_SIZE):
            with engine.connect() as conn:
                found = resolve_refs(conn, [ref for _, ref, _ in chunk])
            for _number, ref, row_edits in chunk:
                yield ref, found.get(ref), row_edits


# ---------------------------------------------------------------- manual entry


def add_customer(
    engine: Engine,
    source_name: str,
    external_id: str,
    values: dict[str, Any],
    attributes: dict[str, Any] | None = None,
    *,
    now: datetime | None = None,
    notes: list[str] | None = None,
) -> int:
    """Add one lead or customer by hand to a custom source (created, kind custom, if missing).

    Args:
        values: parsed fields (name, email, company, …, lead_created_at, free_trial_started_at).
        attributes: tags and custom attributes as ``parse_assignment`` gives them (``tag.<name>``,
            ``custom.<key>``), typed by the one rule of ``funnelsync.attributes`` as an edit is.
        notes: receives what the output says (a custom attribute written for the first time, with its type).

    Returns:
        The new customer's id.

    Raises:
        EditValueError: the customer exists already, a rule is broken (future date, trial before lead), or a
            custom attribute value does not fit the attribute's type (nothing is added).
        SourceKindMismatch: the source is an integration.
    """
    from jobs.imports import ensure_import_source
    from storage.customers import resolve_customer
    from storage.projection import register_attribute_types
    from storage.upsert import upsert_records

    reason = skip_reason("New_Lead", None, None, values, now or datetime.now(timezone.utc))
    if reason:
        raise EditValueError(reason)
    attributes = attributes or {}
    tags = [name[4:] for name, on in attributes.items() if name.startswith("tag.") and on]
    with engine.connect() as conn:
        new_types: dict[str, str] = {}
        try:
            custom, stated = settle_custom_types(
                conn, {k: v for k, v in attributes.items() if k.startswith("custom.")}, account_timezone(), new_types)
        except AttributeTypeError as exc:
            raise EditValueError(str(exc)) from None
    source_id, name = ensure_import_source(engine, source_name, "custom")
    record = SourceCustomerRecord(external_id=external_id, **values, tags=tags,
                                  custom={k[7:]: v for k, v in custom.items() if v is not None})
    with engine.begin() as conn:
        if resolve_customer(conn, f"{name}:{external_id}") is not None:
            raise EditValueError(
                f"{name}:{external_id} exists already: change it with `funnelsync customers edit {name}:{external_id}`"
            )
        register_attribute_types(conn, new_types)
        result = upsert_records(conn, source_id, [record])
    if notes is not None:
        notes.extend(stated)
    return result.created_customer_ids[0]


def edit_customer(
    engine: Engine,
    customer_id: int,
    edits: dict[str, Any],
    unset: Iterable[str] = (),
    *,
    actor: str = "cli",
    now: datetime | None = None,
) -> list[str]:
    """Store manual edits of one customer (and drop the overrides named in ``unset``); the notes to show
    (a custom attribute written for the first time, with its type).

    Raises:
        EditValueError: a rule is broken, or a custom attribute value does not fit the attribute's type
            (the reason says which).
    """
    from storage.bulk_edits import apply_manual_edits, customer_states
    from storage.edits import clear_manual_edits
    from storage.projection import register_attribute_types

    with engine.begin() as conn:
        state = customer_states(conn, [customer_id]).get(customer_id)
        if state is None:
            raise EditValueError("no such customer")
        reason = skip_reason(state.status, state.lead_created_at, state.free_trial_started_at, edits,
                             now or datetime.now(timezone.utc))
        if reason:
            raise EditValueError(reason)
        new_types: dict[str, str] = {}
        try:
            edits, notes = settle_custom_types(conn, edits, account_timezone(), new_types)
        except AttributeTypeError as exc:
            raise EditValueError(str(exc)) from None
        fields = list(unset)
        if fields:
            clear_manual_edits(conn, customer_id, fields)
        if edits:
            register_attribute_types(conn, new_types)
            apply_manual_edits(conn, {customer_id: edits}, actor)
        return notes


def account_zone() -> tzinfo:
    """The account time zone (dates without a zone are read there)."""
    return account_timezone()
