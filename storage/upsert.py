"""Batched, idempotent upsert of source customer records.

Each record is first prepared (``prepare_record``): its fingerprint parts and the values of its rows,
computed from the record alone, so a bulk job can do it in the process that produces the records
(``upsert_prepared``); ``upsert_records`` prepares lazily, computing row values only for records that
turn out new or changed. Then one call handles one batch (a page, a file chunk) inside the caller's
transaction:

1. one SELECT finds which (source, external id) pairs exist and their fingerprints (a load into an
   empty source skips it, see ``FreshLoad``);
2. records whose fingerprint is unchanged are counted and not written at all;
3. new records get pre-allocated ids and a new customer (or an existing customer matched by
   email when asked), written with multi-row INSERTs (on SQLite the customers are copied from their
   source customers inside the database) or COPY on PostgreSQL;
4. new and changed source customers go through one ``INSERT … ON CONFLICT DO UPDATE``;
5. subscriptions and contacts of records that report them are replaced;
6. the customers touched by changes are re-projected (``storage.projection.reproject``).

The hot statements run through the DB-API (``exec_driver_sql``) with positional parameters:
PERFORMANCE.md measures ~2× over SQLAlchemy Core executemany on SQLite, and it keeps PostgreSQL on
psycopg's pipelined executemany. Values are still bound parameters, never formatted into SQL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from itertools import chain
from sqlite3 import SQLITE_LIMIT_VARIABLE_NUMBER
from typing import Any, NamedTuple

from psycopg.errors import UniqueViolation
from sqlalchemy import Connection, Table, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from funnelsync.normalize import normalize_email, website_domain
from funnelsync.records import (
    LEAD_STATUSES,
    PROFILE_FIELDS,
    ContactRecord,
    SourceCustomerRecord,
    SubscriptionFact,
)
from funnelsync.status import DEFAULT_LEAD_STATUS, derive_status
from storage.ids import allocate_ids, new_uuid, new_uuids
from storage.projection import (
    attribute_type,
    jsonable_custom,
    register_attribute_types,
    reproject,
    write_filter_rows,
)
from storage.schema import contacts, metadata, source_customers, subscriptions
from storage.types import EPOCH, ONE_MICROSECOND, to_epoch_us

LOOKUP_CHUNK = 5000
# Rows per multi-row INSERT on SQLite: past a few hundred the gain is flat and statements get long.
SQLITE_ROWS_PER_STATEMENT = 500
_NONE_PART = "-" * 16

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
_TIME_COLUMNS = frozenset(
    {"linked_at", "lead_created_at", "free_trial_started_at", "subscriber_since", "created_at", "updated_at",
     "trial_started_at", "trial_ended_at", "first_paid_at", "cancelled_at"}
)
_JSON_COLUMNS = frozenset({"tags", "custom", "raw"})


# A new customer's row on SQLite, copied from its source customer: bound per row are the id, the public
# id, and the projected values that are not the source's own (website domain, status, subscriber since,
# tags without repeats, whether it has subscriptions: ``PreparedRecord.customer_values`` on SQLite), then
# the source customer's id. A profile value the source gave as "" is no value (new_customer_row).
# CROSS JOIN keeps the VALUES list the outer loop.
CUSTOMER_OWN_COLUMNS = ("website_domain", "status", "subscriber_since", "tags", "has_subscriptions")
# Any write statement takes it; this one changes nothing.
_SQLITE_TAKE_WRITE_LOCK = "UPDATE id_blocks SET next_id = next_id WHERE 0"
_SQLITE_CUSTOMERS_FROM_SC = (
    "INSERT INTO customers (" + ", ".join(CUSTOMER_COLUMNS) + ") "  # noqa: S608 - constant names
    "SELECT v.column1, v.column2, sc.created_at, sc.created_at, "
    + ", ".join(f"nullif(sc.{name}, '')" for name in PROFILE_FIELDS)
    + ", sc.email_norm, v.column3, v.column4, sc.lead_created_at, sc.free_trial_started_at, v.column5, "
    "v.column6, sc.custom, v.column7 FROM (VALUES {values}) AS v "
    "CROSS JOIN source_customers AS sc ON sc.id = v.column8"
)

# PostgreSQL lookups of a batch's keys: one index probe per key, forced. A LATERAL subquery with LIMIT
# cannot be flattened into a join, so the planner cannot trade the probes for a hash join over the whole
# table. With a plain join on unnest() it did exactly that once the source grew (it sees the array's
# 5,000 keys): 700 ms per batch at 1M rows instead of 20 ms. "external_id = ANY(%s)" scanned too.
@lru_cache(maxsize=8)
def _by_external_id_sql(columns: tuple[str, ...], sqlite: bool, keys: int = 0) -> str:
    """SELECT external_id and ``columns`` (our own constants) of one source's records among ``keys`` ids
    (SQLite: one marker each; PostgreSQL: one array parameter)."""
    if sqlite:
        marks = ",".join("?" * keys)  # only placeholders are joined in; values stay bound
        return (f"SELECT external_id, {', '.join(columns)} FROM source_customers "  # noqa: S608
                f"WHERE data_source_id = ? AND external_id IN ({marks})")
    return (f"SELECT k.external_id, {', '.join('sc.' + c for c in columns)} "  # noqa: S608
            "FROM unnest(%s::varchar[]) AS k(external_id) CROSS JOIN LATERAL ("
            f"SELECT {', '.join('s.' + c for c in columns)} FROM source_customers s "
            "WHERE s.data_source_id = %s AND s.external_id = k.external_id LIMIT 1) AS sc")


EXISTING_COLUMNS = ("id", "customer_id", "fingerprint")
PG_EXISTING_SQL = _by_external_id_sql(EXISTING_COLUMNS, False)
# Per normalised email, its oldest customer.
PG_BY_EMAIL_SQL = (
    "SELECT k.email_norm, c.id FROM unnest(%s::varchar[]) AS k(email_norm) CROSS JOIN LATERAL ("
    "SELECT x.id FROM customers x WHERE x.email_norm = k.email_norm ORDER BY x.id LIMIT 1) AS c"
)


@dataclass
class UpsertResult:
    """What one upsert did."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    touched_customer_ids: set[int] = field(default_factory=set)
    created_customer_ids: list[int] = field(default_factory=list)

    def add(self, other: UpsertResult) -> None:
        """Accumulate another batch's result."""
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.touched_customer_ids |= other.touched_customer_ids
        self.created_customer_ids.extend(other.created_customer_ids)


# ---------------------------------------------------------------- fingerprints


def _digest(value: Any) -> str:
    return hashlib.blake2b(repr(value).encode(), digest_size=8).hexdigest()


def _ts(value: datetime | None) -> int | None:
    return None if value is None else to_epoch_us(value)


def profile_part(rec: SourceCustomerRecord, lead_us: int | None | bool = False,
                 trial_us: int | None | bool = False) -> str:
    """Digest of the record's own fields (raw payload excluded: it does not change what we know).

    ``lead_us`` / ``trial_us`` are the dates as epoch microseconds when the caller has them already.
    """
    return _digest((
        rec.name, rec.email, rec.company, rec.country, rec.state, rec.city, rec.zip, rec.website_url,
        rec.owner, rec.lead_status,
        _ts(rec.lead_created_at) if lead_us is False else lead_us,
        _ts(rec.free_trial_started_at) if trial_us is False else trial_us,
        tuple(rec.tags) if rec.tags else (),
        sorted((k, repr(v)) for k, v in rec.custom.items()) if rec.custom else [],
    ))


def subscriptions_part(subs: Sequence[SubscriptionFact] | None) -> str | None:
    """Digest of the subscription facts, None when the record does not report them."""
    if subs is None:
        return None
    if not subs:
        return _EMPTY_PART
    return _digest(_sorted([
        (s.external_id, s.state, _ts(s.trial_started_at), _ts(s.trial_ended_at), _ts(s.first_paid_at),
         _ts(s.cancelled_at)) for s in subs
    ]))


def contacts_part(items: Sequence[ContactRecord] | None) -> str | None:
    """Digest of the contacts, None when the record does not report them."""
    if items is None:
        return None
    if not items:
        return _EMPTY_PART
    return _digest(_sorted([
        (c.key(), c.first_name, c.last_name, c.title, c.email, c.phone, c.linked_in, c.twitter, c.notes,
         sorted((k, repr(v)) for k, v in c.custom.items()), c.position) for c in items
    ]))


def _sorted(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Tuples whose items may be None, sorted with None before any value and values in their own order.

    Plain tuple comparison raised TypeError when two items reported with one id (a source repeating a
    subscription) differed only where one had a date and the other None. Where it worked, this key
    orders the same way, so stored fingerprints stay valid. One item (the common case) is not sorted.
    """
    if len(items) > 1:
        items.sort(key=lambda values: tuple((v is not None, v) for v in values))
    return items


# The digest of an empty set of subscriptions or contacts (what ``_digest(sorted([]))`` gives), computed
# once: most records of a file with a subscription column report none.
_EMPTY_PART = _digest([])


def combine_fingerprint(profile: str, subs: str | None, contacts_fp: str | None, stored: str | None) -> str:
    """The stored fingerprint: three 16-hex parts; a part a record does not report keeps the stored one."""
    old_subs = stored[16:32] if stored else _NONE_PART
    old_contacts = stored[32:48] if stored else _NONE_PART
    return profile + (subs if subs is not None else old_subs) + (
        contacts_fp if contacts_fp is not None else old_contacts
    )


# ---------------------------------------------------------------- dialect helpers


@lru_cache(maxsize=64)
def _row_builder(columns: tuple[str, ...], sqlite_times: bool) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A function turning a row dict into the DB-API tuple for ``columns``, conversions inlined.

    Generated once per column list (names are our own constants): a generic loop over columns and
    converters costs about twice as much, and this runs for every row of a million-row import.
    """
    parts = []
    for i, column in enumerate(columns):
        ref = f"d[{column!r}]"
        if column in _TIME_COLUMNS and sqlite_times:
            parts.append(f"(None if (v{i} := {ref}) is None else (v{i} - EPOCH) // ONE_MICROSECOND)")
        elif column in _JSON_COLUMNS:
            parts.append(f"(None if (v{i} := {ref}) is None else _json_text(v{i}))")
        else:
            parts.append(ref)
    source = "lambda d: (" + ", ".join(parts) + ",)"
    return eval(source, {"EPOCH": EPOCH, "ONE_MICROSECOND": ONE_MICROSECOND, "_json_text": _json_text})  # noqa: S307


def _json_text(value: Any) -> str:
    if not value:
        return "[]" if isinstance(value, list) else "{}"
    return json.dumps(value, default=str)


class _Writer:
    """Builds positional DB-API statements and converts values for the connection's dialect.

    Rows are built as dicts holding every column and turned into tuples by a generated function per
    column list (``_row_builder``): this runs once per row of a million-row import.
    On PostgreSQL, rows that cannot conflict are written with ``COPY`` and upserts go through a
    ``COPY`` into a staging table followed by one ``INSERT … SELECT … ON CONFLICT`` (PERFORMANCE.md:
    ~2.5× over executemany).
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sqlite = conn.dialect.name == "sqlite"
        self.mark = "?" if self.sqlite else "%s"

    def rows(self, columns: Sequence[str], dicts: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        build = _row_builder(tuple(columns), self.sqlite)
        return [build(d) for d in dicts]

    def insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]],
               conflict: Sequence[str] | None = None, update_columns: Sequence[str] = ()) -> None:
        """Insert rows; with ``conflict``, an upsert (``DO UPDATE SET`` the update columns)."""
        if not rows:
            return
        if not self.sqlite and len(rows) >= 50:
            if conflict:
                self._copy_upsert(table, columns, rows, conflict, update_columns)
            else:
                self._copy(table, columns, rows)
            return
        marks = "(" + ", ".join([self.mark] * len(columns)) + ")"
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "  # noqa: S608 - constant names
        tail = self._conflict_clause(conflict, update_columns)
        if not self.sqlite:
            self.conn.exec_driver_sql(head + marks + tail, rows)
            return
        self._sqlite_values(head + "{values}" + tail, len(columns), rows)

    def insert_select(self, template: str, width: int, rows: list[tuple[Any, ...]]) -> None:
        """Run ``template`` (SQLite) with ``{values}`` replaced by a VALUES list of ``width`` markers per row."""
        if rows:
            self._sqlite_values(template, width, rows)

    def _sqlite_values(self, template: str, width: int, rows: list[tuple[Any, ...]]) -> None:
        # SQLite: many rows per statement. executemany steps the statement once per row and re-takes
        # the GIL and re-binds between steps; a multi-row VALUES list does the same work in one step,
        # measured ~30% less time per row for our wide rows. Values stay bound parameters.
        marks = "(" + ", ".join("?" * width) + ")"
        per = max(1, min(SQLITE_ROWS_PER_STATEMENT, self._sqlite_variable_limit() // width))
        cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            for start in range(0, len(rows), per):
                part = rows[start : start + per]
                cursor.execute(template.format(values=", ".join([marks] * len(part))), list(chain.from_iterable(part)))
        finally:
            cursor.close()

    def insert_new(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]],
                   conflict: Sequence[str] | None, update_columns: Sequence[str]) -> None:
        """Insert rows the batch's lookup found absent.

        On PostgreSQL the rows go straight in with ``COPY``, skipping the staging table and the
        ``ON CONFLICT`` pass (measured: about half the server time of the staged upsert); a key another
        writer inserted since the lookup fails it, and ``upsert_records`` runs the batch again.
        """
        if self.sqlite or len(rows) < 50:
            self.insert(table, columns, rows, conflict, update_columns)
            return
        self._copy(table, columns, rows)

    def _sqlite_variable_limit(self) -> int:
        raw = self.conn.connection.driver_connection
        return int(raw.getlimit(SQLITE_LIMIT_VARIABLE_NUMBER))  # type: ignore[union-attr]

    @staticmethod
    def _conflict_clause(conflict: Sequence[str] | None, update_columns: Sequence[str]) -> str:
        if not conflict:
            return ""
        if update_columns:
            sets = ", ".join(f"{c} = excluded.{c}" for c in update_columns)
            return f" ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {sets}"
        return f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"

    def _copy(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        # Binary COPY: the server skips parsing text (timestamps above all) and psycopg formats less;
        # measured ~2× faster per row than text COPY for our wide rows.
        types = _binary_copy_types(table.removeprefix("_stage_"), tuple(columns))
        raw = self.conn.connection.driver_connection
        with raw.cursor() as cur:  # type: ignore[union-attr]
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)

    def _copy_upsert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]],
                     conflict: Sequence[str], update_columns: Sequence[str]) -> None:
        stage = f"_stage_{table}"
        self.conn.exec_driver_sql(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        self.conn.exec_driver_sql(f"TRUNCATE {stage}")
        self._copy(stage, columns, rows)
        cols = ", ".join(columns)
        self.conn.exec_driver_sql(
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage}"  # noqa: S608 - constant names
            + self._conflict_clause(conflict, update_columns)
        )


_PG_BINARY_TYPES = {"BIGINT": "int8", "INTEGER": "int4", "BOOLEAN": "bool", "FLOAT": "float8",
                     "DOUBLE PRECISION": "float8", "TIMESTAMP WITH TIME ZONE": "timestamptz"}


@lru_cache(maxsize=64)
def _binary_copy_types(table: str, columns: tuple[str, ...]) -> list[str]:
    """The type each column is sent as in a binary COPY, from the schema.

    Text-like columns (varchar, text, and JSON, whose values we hand over as JSON text already) go as
    ``text``: the binary form of all of them is the UTF-8 text, and psycopg's ``json`` dumper would
    encode our JSON text a second time.
    """
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    table_def = metadata.tables[table]
    out = []
    for name in columns:
        ddl = table_def.c[name].type.compile(dialect=dialect)
        out.append(_PG_BINARY_TYPES.get(ddl, "text"))
    return out


def upsert_on_conflict(
    conn: Connection, table: Table, rows: list[dict[str, Any]], conflict: Sequence[str], update_cols: Sequence[str]
) -> None:
    """A Core ``INSERT … ON CONFLICT DO UPDATE`` for either dialect (small tables: state, settings)."""
    if not rows:
        return
    dialect_insert = sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert
    stmt = dialect_insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(conflict), set_={c: stmt.excluded[c] for c in update_cols}
    )
    conn.execute(stmt, rows)


# ---------------------------------------------------------------- the upsert


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
            normalised email instead of creating a customer.
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
        # Take SQLite's write lock before the lookups. Python's sqlite3 begins a transaction at the first
        # write: the reads before it saw the database as it was, and a key another writer added before
        # this batch's first insert was then written as new (ON CONFLICT turned it into an update of that
        # writer's row, and the batch made a second customer for it). Holding the lock, nothing can race.
        conn.exec_driver_sql(_SQLITE_TAKE_WRITE_LOCK)
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
    w = _Writer(conn)

    existing = {} if assume_new else _existing_source_customers(conn, data_source_id, list(latest))

    new: list[tuple[PreparedRecord, str]] = []
    changed: list[tuple[PreparedRecord, str, int, int, bool, bool]] = []
    attr_types: dict[str, str] = {}
    for ext, p in latest.items():
        found = existing.get(ext)
        if found is None:
            p = p.complete()
            new.append((p, combine_fingerprint(p.profile_fp, p.subs_fp, p.contacts_fp, None)))
            if p.custom_types:
                attr_types.update(p.custom_types)
            continue
        sc_id, customer_id, stored = found
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

    # --- new source customers: link to an existing customer by email, or create one
    linked_by_email: dict[str, int] = {}
    if new and link_new_by_email:
        emails = list({p.email_norm for p, _fp in new} - {None})
        linked_by_email = _customers_by_email(conn, w, emails)  # type: ignore[arg-type]

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
    now_v: Any = to_epoch_us(now) if w.sqlite else now
    customer_tuples: list[tuple[Any, ...]] = []
    filter_rows: list[dict[str, Any]] = []
    sc_tuples: list[tuple[Any, ...]] = []
    sub_writes: list[tuple[int, list[tuple[Any, ...]]]] = []
    contact_writes: list[tuple[int, int, list[ContactRecord]]] = []
    next_customer = 0
    for (p, fp), sc_id in zip(new, sc_ids):
        linked = linked_by_email.get(p.email_norm) if p.email_norm is not None else None
        if linked is not None:
            # Linked by email to an existing customer, or to one an earlier record of this batch created:
            # that customer's projection must change.
            cid = linked
            result.touched_customer_ids.add(cid)
        else:
            cid = customer_ids[next_customer]
            if w.sqlite:
                customer_tuples.append((cid, next(uuids), *p.customer_values, sc_id))
            else:
                customer_tuples.append((cid, next(uuids), now_v, now_v) + p.customer_values)
            next_customer += 1
            if p.filter_values is not None:
                filter_rows.append({"id": cid, "tags": p.filter_values[0], "custom": p.filter_values[1]})
            if link_new_by_email and p.email_norm is not None:
                linked_by_email[p.email_norm] = cid
        sc_tuples.append((sc_id, data_source_id, p.external_id, cid, now_v) + p.sc_values + (fp, now_v, now_v, p.row_fp))
        if p.subscriptions:
            sub_writes.append((sc_id, p.subscriptions))
        if p.contacts:
            contact_writes.append((sc_id, cid, p.contacts))
    sc_key = ("data_source_id", "external_id")
    if w.sqlite:
        # The source customers go first and their new customers are copied from them inside SQLite, with
        # only the values of the projection that differ bound per row: their reference to a customer that
        # does not exist yet is checked at commit.
        conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
        w.insert("source_customers", SC_COLUMNS, sc_tuples, conflict=sc_key, update_columns=SC_UPDATE_COLUMNS)
        w.insert_select(_SQLITE_CUSTOMERS_FROM_SC, 8, customer_tuples)
    else:
        w.insert("customers", CUSTOMER_COLUMNS, customer_tuples)
    if filter_rows:
        write_filter_rows(conn, filter_rows, replace=False)
    result.created_customer_ids = list(customer_ids)
    result.created = len(new)

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
        w.insert_new("source_customers", SC_COLUMNS, sc_tuples, conflict=None if assume_new else sc_key,
                     update_columns=SC_UPDATE_COLUMNS)
    w.insert("source_customers", SC_COLUMNS, changed_tuples, conflict=sc_key, update_columns=SC_UPDATE_COLUMNS)
    _write_subscriptions(conn, w, sub_writes, replace_subs, now_v)
    _write_contacts(conn, w, contact_writes, replace_contacts, now)
    if result.touched_customer_ids:
        reproject(conn, result.touched_customer_ids)
    return result


def _existing_source_customers(conn: Connection, data_source_id: int, ext_ids: list[str]) -> dict[str, tuple[int, int, str]]:
    """(id, customer id, fingerprint) of the batch's external ids that exist already."""
    return {ext: (sc_id, cid, fp) for ext, sc_id, cid, fp in
            _rows_by_external_id(conn, data_source_id, ext_ids, EXISTING_COLUMNS)}


def unchanged_file_rows(conn: Connection, data_source_id: int, digests: Mapping[str, str]) -> set[str]:
    """The external ids among ``digests`` whose source customer was last written from a row with that digest.

    Such a row would read into the record as it is stored (``connectors.files.flexible_csv.RowDigest``).
    """
    rows = _rows_by_external_id(conn, data_source_id, list(digests), ("row_fingerprint",))
    return {ext for ext, stored in rows if stored is not None and stored == digests[ext]}


def _rows_by_external_id(conn: Connection, data_source_id: int, ext_ids: list[str],
                         columns: tuple[str, ...]) -> list[Any]:
    """(external id, *columns) of this source's records among ``ext_ids``, LOOKUP_CHUNK ids a query.

    Written against the DB-API: SQLAlchemy's expanding IN costs more than the query itself at 5,000
    ids, and PostgreSQL takes the whole list as one array parameter (probed per key, see
    ``_by_external_id_sql``).
    """
    sqlite = conn.dialect.name == "sqlite"
    rows: list[Any] = []
    for start in range(0, len(ext_ids), LOOKUP_CHUNK):
        part = ext_ids[start : start + LOOKUP_CHUNK]
        sql = _by_external_id_sql(columns, sqlite, len(part) if sqlite else 0)
        params: tuple[Any, ...] = (data_source_id, *part) if sqlite else (part, data_source_id)
        rows += _fetch_all(conn, sql, params)
    return rows


def _fetch_all(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """Rows of a DB-API query in one ``fetchall``, on the caller's connection and transaction.

    Iterating SQLAlchemy's result fetches one row per call: 3 µs a row, most of an unchanged
    re-import's lookup.
    """
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()  # type: ignore[no-any-return]
    finally:
        cursor.close()


def new_customer_row(
    rec: SourceCustomerRecord, customer_id: int, now: datetime, public_id: str | None = None,
    email_norm: str | None | bool = False,
) -> dict[str, Any]:
    """The projection of a customer whose only source customer is ``rec`` and who has no edits.

    Equal to ``project([fields of rec], its subscriptions, {})`` (a test holds them equal), written
    out because it runs once per new record of every first import.
    """
    subs = rec.subscriptions or ()
    if subs:
        paid = [s.first_paid_at for s in subs if s.first_paid_at is not None]
        status = derive_status([(s.state, s.first_paid_at is not None) for s in subs], rec.lead_status)
    else:
        paid = []
        status = rec.lead_status if rec.lead_status in LEAD_STATUSES else DEFAULT_LEAD_STATUS
    tags = list(dict.fromkeys(rec.tags)) if rec.tags else []
    return {
        "id": customer_id, "uuid": public_id or new_uuid("cus"), "created_at": now, "updated_at": now,
        "name": rec.name or None, "email": rec.email or None, "company": rec.company or None,
        "country": rec.country or None, "state": rec.state or None, "city": rec.city or None,
        "zip": rec.zip or None, "website_url": rec.website_url or None, "owner": rec.owner or None,
        "lead_status": rec.lead_status or None,
        "email_norm": normalize_email(rec.email) if email_norm is False else email_norm,
        "website_domain": website_domain(rec.website_url) if rec.website_url else None,
        "status": status,
        "lead_created_at": rec.lead_created_at, "free_trial_started_at": rec.free_trial_started_at,
        "subscriber_since": min(paid) if paid else None,
        "tags": tags, "custom": jsonable_custom(rec.custom), "has_subscriptions": bool(subs),
    }


class PreparedRecord(NamedTuple):
    """A record turned into the values its rows are written with, all but ids and time stamps.

    Everything here depends on the record alone, so it can be computed where the record is produced,
    in another process (``PreparedBatch`` crosses it as plain tuples).
    Values are converted for one dialect (``sqlite``: times as epoch microseconds, else datetimes).
    Prepared lazily (``eager=False``), the row values and the normalised email wait in ``source`` until
    the upsert finds the record new or changed: an unchanged record needs only its fingerprint.
    """

    external_id: str
    email: str | None
    email_norm: str | None
    profile_fp: str
    subs_fp: str | None
    contacts_fp: str | None
    sqlite: bool
    contacts: list[ContactRecord] | None
    # SC_COLUMNS from the profile fields to ``raw``.
    sc_values: tuple[Any, ...] = ()
    # The projection of a customer with only this record: CUSTOMER_COLUMNS after id, uuid and the time
    # stamps; on SQLite only CUSTOMER_OWN_COLUMNS (the rest is copied from the source customer's row).
    customer_values: tuple[Any, ...] = ()
    # SUB_COLUMNS between the source customer id and ``updated_at``, one per subscription (the last of
    # a repeated external id); None when the record does not report subscriptions.
    subscriptions: list[tuple[Any, ...]] | None = None
    # (tags, custom) for the filter tables when the record has either.
    filter_values: tuple[list[str], dict[str, Any]] | None = None
    custom_types: tuple[tuple[str, str], ...] | None = None
    # The digest of the file row the record was read from (jobs/imports.py), else None.
    row_fp: str | None = None
    source: SourceCustomerRecord | None = None

    def complete(self) -> PreparedRecord:
        """This record with its row values (a lazily prepared one gets them computed now)."""
        if self.source is None:
            return self
        email_norm = normalize_email(self.source.email)
        return _new_tuple(PreparedRecord, self[:2] + (email_norm,) + self[3:_VALUES_AT]
                          + _row_values(self.source, self.sqlite, email_norm) + (self.row_fp, None))


_new_tuple = tuple.__new__
_VALUES_AT = PreparedRecord._fields.index("sc_values")


class PreparedBatch(list[PreparedRecord]):
    """Prepared records that pickle as plain tuples.

    Pickling a NamedTuple, or a slotted object, calls Python code for every record on both sides
    (about 2 µs a record each way, measured); a list of plain tuples is pickled and loaded in C, and the
    records are rebuilt with ``tuple.__new__``.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return _restore_batch, ([tuple(p) for p in self],)


def _restore_batch(rows: list[tuple[Any, ...]]) -> PreparedBatch:
    return PreparedBatch([_new_tuple(PreparedRecord, row) for row in rows])


def prepare_records(records: Iterable[SourceCustomerRecord], *, sqlite: bool, eager: bool = True,
                    row_fps: Sequence[str | None] | None = None) -> PreparedBatch:
    """``prepare_record`` of each record, in order (repeated external ids are kept: the upsert keeps the last).

    ``row_fps``: the file row digest of each record (see ``PreparedRecord.row_fp``). Public ids are made
    by the upsert, for the new customers only: in bulk, where the writing process would otherwise wait
    for this one (a first import: the parsing side is the busier), it costs less there.
    """
    if row_fps is None:
        return PreparedBatch([prepare_record(rec, sqlite, eager) for rec in records])
    return PreparedBatch([prepare_record(rec, sqlite, eager, fp) for rec, fp in zip(records, row_fps, strict=True)])


def prepare_record(rec: SourceCustomerRecord, sqlite: bool, eager: bool = True,
                   row_fp: str | None = None) -> PreparedRecord:
    """The fingerprint parts of ``rec`` and, ``eager`` or once completed, its row values (``PreparedRecord``)."""
    subs = rec.subscriptions
    subs_fp = None if subs is None else subscriptions_part(subs)
    contacts_fp = None if rec.contacts is None else contacts_part(rec.contacts)
    if not eager:
        # One tuple, and no normalised email yet: an unchanged record (most of a re-sync) needs neither.
        return _new_tuple(PreparedRecord, (rec.external_id, rec.email, None, profile_part(rec), subs_fp, contacts_fp,
                                           sqlite, rec.contacts, (), (), None, None, None, row_fp, rec))
    email_norm = normalize_email(rec.email)
    lead_us, trial_us = _ts(rec.lead_created_at), _ts(rec.free_trial_started_at)
    return _new_tuple(PreparedRecord, (rec.external_id, rec.email, email_norm, profile_part(rec, lead_us, trial_us),
                                       subs_fp, contacts_fp, sqlite, rec.contacts)
                      + _row_values(rec, sqlite, email_norm, lead_us, trial_us) + (row_fp, None))


def _row_values(rec: SourceCustomerRecord, sqlite: bool, email_norm: str | None,
                lead_us: int | None | bool = False, trial_us: int | None | bool = False) -> tuple[Any, ...]:
    """The row values of ``rec``: ``PreparedRecord`` from ``sc_values`` to ``custom_types``.

    The customer values equal ``new_customer_row`` (on SQLite its ``CUSTOMER_OWN_COLUMNS``) and the
    source customer values the columns ``_row_builder`` makes of the record (a test holds them equal),
    written out because this runs for every record of a million-row import.
    """
    subs = rec.subscriptions
    since: Any = None
    sub_values: list[tuple[Any, ...]] | None = None
    if subs:
        paid = [s.first_paid_at for s in subs if s.first_paid_at is not None]
        status = derive_status([(s.state, s.first_paid_at is not None) for s in subs], rec.lead_status)
        if paid:
            since = to_epoch_us(min(paid)) if sqlite else min(paid)
        last = {s.external_id: s for s in subs}
        if sqlite:
            sub_values = [(s.external_id, s.state, _ts(s.trial_started_at), _ts(s.trial_ended_at),
                           _ts(s.first_paid_at), _ts(s.cancelled_at)) for s in last.values()]
        else:
            sub_values = [(s.external_id, s.state, s.trial_started_at, s.trial_ended_at, s.first_paid_at,
                           s.cancelled_at) for s in last.values()]
    else:
        status = rec.lead_status if rec.lead_status in LEAD_STATUSES else DEFAULT_LEAD_STATUS
        if subs is not None:
            sub_values = []
    lead_v: Any = rec.lead_created_at
    trial_v: Any = rec.free_trial_started_at
    if sqlite:
        # As epoch microseconds, which the caller may have computed already (as for ``profile_part``).
        lead_v = _ts(lead_v) if lead_us is False else lead_us
        trial_v = _ts(trial_v) if trial_us is False else trial_us
    custom = jsonable_custom(rec.custom) if rec.custom else {}
    custom_text = _json_text(custom) if custom else "{}"
    tags = list(dict.fromkeys(rec.tags)) if rec.tags else []
    domain = website_domain(rec.website_url) if rec.website_url else None
    tags_text = _json_text(tags) if tags else "[]"
    if sqlite:
        customer: tuple[Any, ...] = (domain, status, since, tags_text, bool(subs))
    else:
        customer = (rec.name or None, rec.email or None, rec.company or None, rec.country or None,
                    rec.state or None, rec.city or None, rec.zip or None, rec.website_url or None, rec.owner or None,
                    rec.lead_status or None, email_norm, domain, status, lead_v, trial_v, since, tags_text,
                    custom_text, bool(subs))
    return (
        (rec.name, rec.email, rec.company, rec.country, rec.state, rec.city, rec.zip, rec.website_url,
         rec.owner, rec.lead_status, email_norm, lead_v, trial_v,
         _json_text(rec.tags) if rec.tags else "[]", custom_text,
         None if rec.raw is None else _json_text(rec.raw)),
        customer,
        sub_values,
        (tags, custom) if rec.tags or rec.custom else None,
        tuple((k, attribute_type(v)) for k, v in rec.custom.items()) if rec.custom else None,
    )


def _customers_by_email(conn: Connection, w: _Writer, emails: list[str]) -> dict[str, int]:
    """The oldest customer of each normalised email that has one (DB-API, like the id lookup)."""
    found: dict[str, int] = {}
    for start in range(0, len(emails), LOOKUP_CHUNK):
        part = emails[start : start + LOOKUP_CHUNK]
        if w.sqlite:
            sql = "SELECT email_norm, id FROM customers WHERE email_norm IN (" + ",".join("?" * len(part)) + ")"  # noqa: S608
            params: tuple[Any, ...] = tuple(part)
        else:
            sql = PG_BY_EMAIL_SQL
            params = (part,)
        for email_norm, customer_id in _fetch_all(conn, sql, params):
            if email_norm not in found or customer_id < found[email_norm]:
                found[email_norm] = customer_id
    return found


def _record_fields(rec: SourceCustomerRecord) -> dict[str, Any]:
    return {
        "name": rec.name, "email": rec.email, "company": rec.company, "country": rec.country,
        "state": rec.state, "city": rec.city, "zip": rec.zip, "website_url": rec.website_url,
        "owner": rec.owner, "lead_status": rec.lead_status, "lead_created_at": rec.lead_created_at,
        "free_trial_started_at": rec.free_trial_started_at, "tags": rec.tags, "custom": rec.custom,
    }


def _write_subscriptions(conn: Connection, w: _Writer, fresh: list[tuple[int, list[tuple[Any, ...]]]],
                         replaced: list[tuple[int, list[tuple[Any, ...]]]], now_v: Any) -> None:
    if replaced:
        ids = [sc_id for sc_id, _ in replaced]
        for start in range(0, len(ids), LOOKUP_CHUNK):
            conn.execute(delete(subscriptions).where(subscriptions.c.source_customer_id.in_(ids[start : start + LOOKUP_CHUNK])))
    rows = [(sc_id, *values, now_v) for sc_id, subs in (*fresh, *replaced) for values in subs]
    w.insert("subscriptions", SUB_COLUMNS, rows)


def _write_contacts(conn: Connection, w: _Writer, fresh: list[tuple[int, int, list[ContactRecord]]],
                    replaced: list[tuple[int, int, list[ContactRecord]]], now: datetime) -> None:
    if replaced:
        # Keep the uuids of contacts that are still reported; drop the ones a source no longer reports.
        keep: dict[int, set[str]] = {sc_id: {c.key() for c in items} for sc_id, _cid, items in replaced}
        ids = list(keep)
        stale: list[int] = []
        for start in range(0, len(ids), LOOKUP_CHUNK):
            for row in conn.execute(
                select(contacts.c.id, contacts.c.source_customer_id, contacts.c.contact_key).where(
                    contacts.c.source_customer_id.in_(ids[start : start + LOOKUP_CHUNK])
                )
            ):
                if row.contact_key not in keep[row.source_customer_id]:
                    stale.append(row.id)
        for start in range(0, len(stale), LOOKUP_CHUNK):
            conn.execute(delete(contacts).where(contacts.c.id.in_(stale[start : start + LOOKUP_CHUNK])))
    rows = []
    for sc_id, cid, items in (*fresh, *replaced):
        seen = {c.key(): c for c in items}
        for key, c in seen.items():
            rows.append({
                "uuid": new_uuid("con"), "customer_id": cid, "source_customer_id": sc_id, "contact_key": key,
                "external_id": c.external_id, "first_name": c.first_name, "last_name": c.last_name,
                "title": c.title, "email": c.email, "phone": c.phone, "linked_in": c.linked_in,
                "twitter": c.twitter, "notes": c.notes, "custom": jsonable_custom(c.custom),
                "position": c.position, "created_at": now, "updated_at": now,
            })
    w.insert("contacts", CONTACT_COLUMNS, w.rows(CONTACT_COLUMNS, rows),
             conflict=("source_customer_id", "contact_key"), update_columns=CONTACT_UPDATE_COLUMNS)
