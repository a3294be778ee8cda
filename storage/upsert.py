"""Batched, idempotent upsert of source customer records: the orchestration of one batch.

Each record is first prepared (``storage.row_values.prepare_record``): its fingerprint parts
(``storage.fingerprints``) and the values of its rows,
computed from the record alone, so a bulk job can do it in the process that produces the records
(``upsert_prepared``); ``upsert_records`` prepares lazily, computing row values only for records that
turn out new or changed. Then one call handles one batch (a page, a file chunk) inside the caller's
transaction:

1. one SELECT finds which (source, external id) pairs exist and their fingerprints (a load into an
   empty source skips it, see ``FreshLoad``);
2. records whose fingerprint is unchanged are counted and not written at all;
3. new records get pre-allocated ids and a new customer (or an existing customer matched by
   email when asked: a join to another source's customer is logged as a merge, ``storage.merge.log_joins``),
   written with multi-row INSERTs (on SQLite the customers are copied from their
   source customers inside the database) or COPY on PostgreSQL;
4. new and changed source customers go through one ``INSERT … ON CONFLICT DO UPDATE``;
5. subscriptions and contacts of records that report them are replaced;
6. the customers touched by changes are re-projected (``storage.projection.reproject``).

The lookups are ``storage.key_lookups``'s; the writes go through ``storage.writers.DialectWriter``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from psycopg.errors import UniqueViolation
from sqlalchemy import Connection, delete, select
from sqlalchemy.exc import IntegrityError

from funnelsync.records import (
    CONTACT_FIELDS,
    PROFILE_FIELDS,
    ContactRecord,
    SourceCustomerRecord,
)
from storage.fingerprints import combine_fingerprint
from storage.ids import allocate_ids, new_uuid, new_uuids
from storage.key_lookups import (
    EXISTING_COLUMNS,
    LOOKUP_CHUNK,
    customers_by_email,
    customers_with_other_sources,
    rows_by_external_id,
)
from storage.merge import MergeEvent, log_joins
from storage.outbox import detect_changes
from storage.partial import STORED_COLUMNS, STORED_SUBSCRIPTION_COLUMNS, needs_stored_subscriptions
from storage.partial import complete as complete_partial
from storage.projection import (
    jsonable_custom,
    register_attribute_types,
    reproject,
    write_filter_rows,
)
from storage.row_values import PreparedRecord, prepare_records
from storage.schema import contacts, source_customers, subscriptions
from storage.sql import fetch_all
from storage.types import to_epoch_us
from storage.writers import DialectWriter

SC_COLUMNS = (
    "id", "data_source_id", "external_id", "customer_id", "linked_at",
    *PROFILE_FIELDS, "email_norm", "lead_created_at", "free_trial_started_at",
    "tags", "custom", "raw", "fingerprint", "created_at", "updated_at", "row_fingerprint",
)
# On conflict everything but identity, link and creation time is replaced.
SC_UPDATE_COLUMNS = tuple(
    c for c in SC_COLUMNS if c not in ("id", "data_source_id", "external_id", "customer_id", "linked_at", "created_at")
)
CUSTOMER_COLUMNS = (
    "id", "uuid", "created_at", "updated_at", *PROFILE_FIELDS, "email_norm", "website_domain", "status",
    "lead_created_at", "free_trial_started_at", "subscriber_since", "tags", "custom", "has_subscriptions",
)
SUB_COLUMNS = (
    "source_customer_id", "external_id", "state", "trial_started_at", "trial_ended_at",
    "first_paid_at", "cancelled_at", "updated_at",
)
CONTACT_COLUMNS = (
    "uuid", "customer_id", "source_customer_id", "contact_key", "external_id", "first_name", "last_name",
    "title", "email", "phone", "linked_in", "twitter", "notes", "custom", "position", "created_at", "updated_at",
)
CONTACT_UPDATE_COLUMNS = (
    "external_id", "first_name", "last_name", "title", "email", "phone", "linked_in", "twitter", "notes",
    "custom", "position", "updated_at",
)


# A new customer's row on SQLite, copied from its source customer: bound per row are the id, the public
# id, and the projected values that are not the source's own (website domain, status, subscriber since,
# tags without repeats, whether it has subscriptions: ``PreparedRecord.customer_values`` on SQLite), then
# the source customer's id. A profile value the source gave as "" is no value (new_customer_row).
# CROSS JOIN keeps the VALUES list the outer loop.
CUSTOMER_OWN_COLUMNS = ("website_domain", "status", "subscriber_since", "tags", "has_subscriptions")
# Any write statement takes it; this one changes nothing.
_SQLITE_TAKE_WRITE_LOCK = "UPDATE id_blocks SET next_id = next_id WHERE 0"
_SQLITE_CUSTOMERS_FROM_SC = (
    "INSERT INTO customers (" + ", ".join(CUSTOMER_COLUMNS) + ") "  # noqa: S608  # nosec B608 # constant names
    "SELECT v.column1, v.column2, sc.created_at, sc.created_at, "
    + ", ".join(f"nullif(sc.{name}, '')" for name in PROFILE_FIELDS)
    + ", sc.email_norm, v.column3, v.column4, sc.lead_created_at, sc.free_trial_started_at, v.column5, "
    "v.column6, sc.custom, v.column7 FROM (VALUES {values}) AS v "
    "CROSS JOIN source_customers AS sc ON sc.id = v.column8"
)


@dataclass
class UpsertResult:
    """What one upsert did."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    touched_customer_ids: set[int] = field(default_factory=set)
    created_customer_ids: list[int] = field(default_factory=list)
    # New records linked by email to another source's customer, each join a logged merge (``log_joins``).
    joined: int = 0
    join_events: list[MergeEvent] = field(default_factory=list)

    def add(self, other: UpsertResult) -> None:
        """Accumulate another batch's result."""
        self.created += other.created
        self.joined += other.joined
        self.join_events.extend(other.join_events)
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.touched_customer_ids |= other.touched_customer_ids
        self.created_customer_ids.extend(other.created_customer_ids)


def upsert_records(
    conn: Connection,
    data_source_id: int,
    records: Sequence[SourceCustomerRecord],
    *,
    link_new_by_email: bool = False,
    now: datetime | None = None,
    fresh: FreshLoad | None = None,
) -> UpsertResult:
    """Create or update the source customers of one batch; see the module docstring.

    Args:
        conn: a connection inside the caller's transaction (the batch commits or rolls back whole).
        data_source_id: the source these records come from.
        records: the batch; a repeated external id keeps its last record.
        link_new_by_email: link a new source customer to an existing customer with the same
            normalised email instead of creating a customer. A link to a customer that holds another
            source's record is a merge, logged with the rule ``email-at-import`` (``storage.merge.log_joins``)
            and undone by ``unmerge``; records of this source sharing an email just share their customer.
        now: the time to stamp (tests pin it).
        fresh: the load this batch belongs to brings keys the source cannot hold yet (``fresh_load``):
            the lookup of existing records, an index probe per record, is skipped while that holds.
    """
    prepared = prepare_records(records, sqlite=conn.dialect.name == "sqlite", eager=False)
    return upsert_prepared(conn, data_source_id, prepared, link_new_by_email=link_new_by_email, now=now,
                           fresh=fresh)


@dataclass
class FreshLoad:
    """A load into a source that was empty when it began, each of its keys written once (a file's rows,
    whose repeats ``connectors.files.flexible_csv`` rejects; a benchmark): its records need no lookup.

    Another writer may still add one of its keys meanwhile (a push receiver beside an import). On
    PostgreSQL the records then go in with a plain ``COPY``, which fails on the unique key, and the batch
    runs again with the lookup. SQLite's upsert would silently update that row instead, so there a batch
    skips the lookup only when no source customer was written since the load last looked:
    ``last_id``, the highest source customer id then, must still be the highest. Each batch holds
    SQLite's write lock from that check to its commit, and moves ``last_id`` to its own last row.
    """

    last_id: int


def take_write_lock(conn: Connection) -> None:
    """SQLite: take the database's write lock now, for the rest of the caller's transaction (PostgreSQL: nothing).

    Python's sqlite3 begins a transaction at the first write: the reads before it see the database as it
    was, and another writer may change it between those reads and the write that acts on them.
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(_SQLITE_TAKE_WRITE_LOCK)


def fresh_load(conn: Connection, data_source_id: int) -> FreshLoad | None:
    """A ``FreshLoad`` when the source holds no source customer (None when it holds any).

    The caller vouches that the load writes each key once.
    """
    if conn.execute(select(source_customers.c.id).where(source_customers.c.data_source_id == data_source_id)
                    .limit(1)).first() is not None:
        return None
    return FreshLoad(_highest_source_customer_id(conn))


def _highest_source_customer_id(conn: Connection) -> int:
    return int(conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM source_customers").scalar_one())


def upsert_prepared(
    conn: Connection,
    data_source_id: int,
    prepared: Sequence[PreparedRecord],
    *,
    link_new_by_email: bool = False,
    now: datetime | None = None,
    fresh: FreshLoad | None = None,
) -> UpsertResult:
    """``upsert_records`` for records already turned into rows by ``prepare_records``.

    A bulk job prepares its records where they are produced (``jobs.imports`` does it in the process
    that parses the file) so that this process only looks up, stamps ids and writes.
    """
    now = now or datetime.now(timezone.utc)
    sqlite = conn.dialect.name == "sqlite"
    # A batch is prepared in one go, for one database: its first record tells.
    if prepared and prepared[0].sqlite != sqlite:
        raise ValueError(f"record {prepared[0].external_id!r} was prepared for another database than "
                         f"{conn.dialect.name}")
    if sqlite:
        # Take SQLite's write lock before the lookups: a key another writer added before this batch's first
        # insert was otherwise written as new (ON CONFLICT turned it into an update of that writer's row,
        # and the batch made a second customer for it). Holding the lock, nothing can race.
        take_write_lock(conn)
        if fresh is not None and _highest_source_customer_id(conn) != fresh.last_id:
            fresh = None  # another writer added source customers since: look them up
        outcome = _upsert_batch(conn, data_source_id, prepared, link_new_by_email, now, fresh is not None)
        if fresh is not None:
            fresh.last_id = _highest_source_customer_id(conn)
        return outcome
    # PostgreSQL: records the lookup found absent are written with a plain COPY. If another writer
    # inserted one of their keys meanwhile (a push receiver beside a sync), the COPY fails on the unique
    # key; the batch is then rolled back to the savepoint and run again, finding those records present.
    try:
        with conn.begin_nested():
            return _upsert_batch(conn, data_source_id, prepared, link_new_by_email, now, fresh is not None)
    except (IntegrityError, UniqueViolation):
        with conn.begin_nested():
            return _upsert_batch(conn, data_source_id, prepared, link_new_by_email, now, False)


def _upsert_batch(conn: Connection, data_source_id: int, prepared: Sequence[PreparedRecord],
                  link_new_by_email: bool, now: datetime, assume_new: bool) -> UpsertResult:
    result = UpsertResult()
    latest = {p.external_id: p for p in prepared}
    if not latest:
        return result
    w = DialectWriter(conn)
    stored: dict[str, tuple[Any, ...]] = {}
    existing = {} if assume_new else _existing_source_customers(conn, data_source_id, latest, stored)
    new, changed = _sort_out(conn, latest, existing, stored, result)
    now_v: Any = to_epoch_us(now) if w.sqlite else now
    rows, joins = _new_rows(conn, w, data_source_id, new, link_new_by_email, now_v, result)
    sc_key = ("data_source_id", "external_id")
    if w.sqlite:
        # The source customers go first and their new customers are copied from them inside SQLite, with
        # only the values of the projection that differ bound per row: their reference to a customer that
        # does not exist yet is checked at commit.
        conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        w.insert("source_customers", SC_COLUMNS, rows.sources, conflict=sc_key, update_columns=SC_UPDATE_COLUMNS)
        w.insert_select(_SQLITE_CUSTOMERS_FROM_SC, 8, rows.customers)
    else:
        w.insert("customers", CUSTOMER_COLUMNS, rows.customers)
    if rows.filters:
        write_filter_rows(conn, rows.filters, replace=False)

    changed_tuples: list[tuple[Any, ...]] = []
    replace_subs: list[tuple[int, list[tuple[Any, ...]]]] = []
    replace_contacts: list[tuple[int, int, list[ContactRecord]]] = []
    for p, fp, sc_id, cid, subs_changed, contacts_changed in changed:
        # Link time and creation time are not among the updated columns: the values given are unused.
        changed_tuples.append((sc_id, data_source_id, p.external_id, cid, now_v) + p.sc_values
                              + (fp, now_v, now_v, p.row_fp))
        result.touched_customer_ids.add(cid)
        if subs_changed:
            replace_subs.append((sc_id, p.subscriptions or []))
        if contacts_changed:
            replace_contacts.append((sc_id, cid, p.contacts or []))
    result.updated = len(changed)

    if not w.sqlite:
        # Assumed new: no ON CONFLICT, so a record that exists after all fails the batch (and it runs again).
        w.insert_new("source_customers", SC_COLUMNS, rows.sources, conflict=None if assume_new else sc_key,
                     update_columns=SC_UPDATE_COLUMNS)
    w.insert("source_customers", SC_COLUMNS, changed_tuples, conflict=sc_key, update_columns=SC_UPDATE_COLUMNS)
    _write_subscriptions(conn, w, rows.subscriptions, replace_subs, now_v)
    _write_contacts(conn, w, rows.contacts, replace_contacts, now)
    if joins:
        result.join_events = log_joins(conn, joins, now)
        result.joined = sum(len(records) for records in joins.values())
    if result.touched_customer_ids:
        reproject(conn, result.touched_customer_ids)
    detect_changes(conn, result.touched_customer_ids.union(result.created_customer_ids), now=now)
    return result


Changed = tuple[PreparedRecord, str, int, int, bool, bool]  # record, fingerprint, ids, what changed


def _sort_out(
    conn: Connection, latest: dict[str, PreparedRecord], existing: dict[str, tuple[int, int, str]],
    stored_values: dict[str, tuple[Any, ...]], result: UpsertResult,
) -> tuple[list[tuple[PreparedRecord, str]], list[Changed]]:
    """The batch's new records and its changed ones (completed), the unchanged counted only.

    A record that reports only some fields and exists already is first made whole with the stored
    values of the others (``storage.partial``): it is compared and written as that whole record.
    """
    new: list[tuple[PreparedRecord, str]] = []
    changed: list[Changed] = []
    attr_types: dict[str, str] = {}
    stored_subs = _stored_subscriptions(conn, [existing[ext][0] for ext, p in latest.items()
                                               if ext in existing and needs_stored_subscriptions(p)])
    for ext, p in latest.items():
        found = existing.get(ext)
        if found is None:
            p = p.complete()
            new.append((p, combine_fingerprint(p.profile_fp, p.subs_fp, p.contacts_fp, None)))
            if p.custom_types:
                attr_types.update(p.custom_types)
            continue
        sc_id, customer_id, stored = found
        if p.present is not None:
            p = complete_partial(p, stored_values[ext], stored_subs.get(sc_id, ()))
        fingerprint = combine_fingerprint(p.profile_fp, p.subs_fp, p.contacts_fp, stored)
        if fingerprint == stored:
            result.unchanged += 1
            continue
        p = p.complete()
        subs_changed = p.subs_fp is not None and p.subs_fp != stored[16:32]
        contacts_changed = p.contacts_fp is not None and p.contacts_fp != stored[32:48]
        changed.append((p, fingerprint, sc_id, customer_id, subs_changed, contacts_changed))
        if p.custom_types:
            attr_types.update(p.custom_types)
    register_attribute_types(conn, attr_types)
    return new, changed


@dataclass
class _NewRows:
    """The rows of a batch's new source customers and of the customers made for them."""

    sources: list[tuple[Any, ...]] = field(default_factory=list)
    customers: list[tuple[Any, ...]] = field(default_factory=list)
    filters: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: list[tuple[int, list[tuple[Any, ...]]]] = field(default_factory=list)
    contacts: list[tuple[int, int, list[ContactRecord]]] = field(default_factory=list)


def _new_rows(
    conn: Connection, w: DialectWriter, data_source_id: int, new: list[tuple[PreparedRecord, str]],
    link_new_by_email: bool, now_v: Any, result: UpsertResult,
) -> tuple[_NewRows, dict[int, list[int]]]:
    """Ids and rows for new source customers: each linked to an existing customer by email, or to a new one.

    Also the joins to log as merges: customer id → the new source customers linked to it, for existing
    customers that hold another source's record.
    """
    linked_by_email: dict[str, int] = {}
    other_sources: set[int] = set()
    if new and link_new_by_email:
        emails = list({p.email_norm for p, _fp in new} - {None})
        linked_by_email = customers_by_email(conn, emails)  # type: ignore[arg-type]
        other_sources = customers_with_other_sources(conn, sorted(set(linked_by_email.values())), data_source_id)
    joins: dict[int, list[int]] = {}

    sc_ids = allocate_ids(conn, "source_customers", len(new))
    needs_customer = len(new)
    if link_new_by_email:
        # Records of one batch that share an email share a customer too, the first creating it, as
        # records of two batches do (the later batch finds the customer the earlier one made): what a file
        # imports must not depend on where its batches end.
        claimed = set(linked_by_email)
        for p, _fp in new:
            if p.email_norm is not None:
                if p.email_norm in claimed:
                    needs_customer -= 1
                else:
                    claimed.add(p.email_norm)
    customer_ids = allocate_ids(conn, "customers", needs_customer)
    uuids = iter(new_uuids("cus", needs_customer))
    rows = _NewRows()
    next_customer = 0
    for (p, fp), sc_id in zip(new, sc_ids):
        linked = linked_by_email.get(p.email_norm) if p.email_norm is not None else None
        if linked is not None:
            # Linked by email to an existing customer, or to one an earlier record of this batch created:
            # that customer's projection must change.
            cid = linked
            result.touched_customer_ids.add(cid)
            if cid in other_sources:
                joins.setdefault(cid, []).append(sc_id)
        else:
            cid = customer_ids[next_customer]
            if w.sqlite:
                rows.customers.append((cid, next(uuids), *p.customer_values, sc_id))
            else:
                rows.customers.append((cid, next(uuids), now_v, now_v) + p.customer_values)
            next_customer += 1
            if p.filter_values is not None:
                rows.filters.append({"id": cid, "tags": p.filter_values[0], "custom": p.filter_values[1]})
            if link_new_by_email and p.email_norm is not None:
                linked_by_email[p.email_norm] = cid
        rows.sources.append((sc_id, data_source_id, p.external_id, cid, now_v) + p.sc_values
                            + (fp, now_v, now_v, p.row_fp))
        if p.subscriptions:
            rows.subscriptions.append((sc_id, p.subscriptions))
        if p.contacts:
            rows.contacts.append((sc_id, cid, p.contacts))
    result.created_customer_ids = list(customer_ids)
    result.created = len(new)
    return rows, joins


def _existing_source_customers(
    conn: Connection, data_source_id: int, latest: dict[str, PreparedRecord], stored: dict[str, tuple[Any, ...]],
) -> dict[str, tuple[int, int, str]]:
    """(id, customer id, fingerprint) of the batch's external ids that exist already.

    When the batch has records reporting only some fields, the same query reads the stored values
    they are completed with (``storage.partial.STORED_COLUMNS``) into ``stored``.
    """
    ext_ids = list(latest)
    if not any(p.present is not None for p in latest.values()):
        return {ext: (sc_id, cid, fp) for ext, sc_id, cid, fp in
                rows_by_external_id(conn, data_source_id, ext_ids, EXISTING_COLUMNS)}
    found: dict[str, tuple[int, int, str]] = {}
    for ext, sc_id, cid, fp, *values in rows_by_external_id(conn, data_source_id, ext_ids,
                                                            EXISTING_COLUMNS + STORED_COLUMNS):
        found[ext] = (sc_id, cid, fp)
        stored[ext] = tuple(values)
    return found


def _stored_subscriptions(conn: Connection, sc_ids: list[int]) -> dict[int, list[tuple[Any, ...]]]:
    """The stored subscriptions (``storage.partial.STORED_SUBSCRIPTION_COLUMNS``) of these source customers."""
    found: dict[int, list[tuple[Any, ...]]] = {}
    sqlite = conn.dialect.name == "sqlite"
    for start in range(0, len(sc_ids), LOOKUP_CHUNK):
        part = sc_ids[start : start + LOOKUP_CHUNK]
        where = ("source_customer_id IN (" + ",".join("?" * len(part)) + ")" if sqlite  # only markers joined in
                 else "source_customer_id = ANY(%s)")
        sql = (f"SELECT source_customer_id, {', '.join(STORED_SUBSCRIPTION_COLUMNS)} "  # noqa: S608  # nosec B608 # constant names
               f"FROM subscriptions WHERE {where}")
        for sc_id, *values in fetch_all(conn, sql, tuple(part) if sqlite else (part,)):
            found.setdefault(sc_id, []).append(tuple(values))
    return found


def _write_subscriptions(conn: Connection, w: DialectWriter, fresh: list[tuple[int, list[tuple[Any, ...]]]],
                         replaced: list[tuple[int, list[tuple[Any, ...]]]], now_v: Any) -> None:
    if replaced:
        ids = [sc_id for sc_id, _ in replaced]
        for start in range(0, len(ids), LOOKUP_CHUNK):
            part = ids[start : start + LOOKUP_CHUNK]
            conn.execute(delete(subscriptions).where(subscriptions.c.source_customer_id.in_(part)))
    rows = [(sc_id, *values, now_v) for sc_id, subs in (*fresh, *replaced) for values in subs]
    w.insert("subscriptions", SUB_COLUMNS, rows)


def _write_contacts(conn: Connection, w: DialectWriter, fresh: list[tuple[int, int, list[ContactRecord]]],
                    replaced: list[tuple[int, int, list[ContactRecord]]], now: datetime) -> None:
    # A reported contact that exists keeps the stored value of each field it does not report.
    kept_values: dict[tuple[int, str], Any] = {}
    if replaced:
        # Keep the uuids of contacts that are still reported; drop the ones a source no longer reports.
        keep: dict[int, set[str]] = {sc_id: {c.key() for c in items} for sc_id, _cid, items in replaced}
        partial = {(sc_id, c.key()) for sc_id, _cid, items in replaced for c in items if c.present is not None}
        ids = list(keep)
        stale: list[int] = []
        for start in range(0, len(ids), LOOKUP_CHUNK):
            for row in conn.execute(
                select(contacts.c.id, contacts.c.source_customer_id, contacts.c.contact_key,
                       *(contacts.c[name] for name in CONTACT_FIELDS)).where(
                    contacts.c.source_customer_id.in_(ids[start : start + LOOKUP_CHUNK])
                )
            ):
                if row.contact_key not in keep[row.source_customer_id]:
                    stale.append(row.id)
                elif (row.source_customer_id, row.contact_key) in partial:
                    kept_values[(row.source_customer_id, row.contact_key)] = row
        for start in range(0, len(stale), LOOKUP_CHUNK):
            conn.execute(delete(contacts).where(contacts.c.id.in_(stale[start : start + LOOKUP_CHUNK])))
    rows = []
    for sc_id, cid, items in (*fresh, *replaced):
        seen = {c.key(): c for c in items}
        for key, c in seen.items():
            row = {
                "uuid": new_uuid("con"), "customer_id": cid, "source_customer_id": sc_id, "contact_key": key,
                "external_id": c.external_id, "first_name": c.first_name, "last_name": c.last_name,
                "title": c.title, "email": c.email, "phone": c.phone, "linked_in": c.linked_in,
                "twitter": c.twitter, "notes": c.notes, "custom": jsonable_custom(c.custom),
                "position": c.position, "created_at": now, "updated_at": now,
            }
            stored = kept_values.get((sc_id, key))
            if stored is not None:
                row.update({name: stored[i + 3] for i, name in enumerate(CONTACT_FIELDS)
                            if name not in c.present})  # type: ignore[operator]
            rows.append(row)
    w.insert("contacts", CONTACT_COLUMNS, w.rows(CONTACT_COLUMNS, rows),
             conflict=("source_customer_id", "contact_key"), update_columns=CONTACT_UPDATE_COLUMNS)
