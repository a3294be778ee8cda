"""Large loads write first and index after: secondary indexes (and on PostgreSQL, foreign keys) the load
does not read are dropped and rebuilt around it.

A first import fills ``customers`` with dates in no particular order, and each of the three composite
date indexes (``schema.METRIC_INDEXES``) then takes every row at a random place, a large share of an
import's time on SQLite. Building an index once from the
finished table sorts it in one pass instead. This is the PostgreSQL manual's advice for populating a
database ("Remove Indexes" and "Remove Foreign Key Constraints", sections 14.4.3 and 14.4.4) and the
index part works the same on SQLite. On PostgreSQL each foreign key costs a per-row check that locks
the referenced row, so the three on the load's tables are dropped too and checked once when they are
added back.

What is deferred is only what the load path never reads: the metric date indexes, the website domain
index (merge matching), the plain external id index (cross-source matching) and the foreign keys
of ``source_customers`` and ``subscriptions``. The indexes the upsert itself probes (source and
external id, normalised emails, customer id) stay. While something is deferred, queries return the same
answers, more slowly; foreign keys come back ``NOT VALID`` and are then validated in one pass.

Only loads that bring at least as many new rows as the customer table holds are deferred (and never
under ``BULK_MIN_ROWS``): rebuilding costs time in proportion to the whole table, so it pays only when
most of the table is new. A load of known size (a file) decides at the start; a sync does not know how
much its source holds and defers once it has written that many new rows. Everything is rebuilt when
the load ends, failed or not; if the process is killed mid-load, ``restore_deferred`` (run by
``funnelsync init`` and at the start of every load) rebuilds it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cache
from types import TracebackType

from sqlalchemy import Connection, Engine, ForeignKeyConstraint, Index, Table, func, inspect, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.schema import AddConstraint, CreateIndex, DropIndex

from storage.metric_counts import fold_deltas, kept, resume, suspend
from storage.schema import METRIC_INDEXES, customers, source_customers, subscriptions
from storage.sources import source_customer_count

log = logging.getLogger(__name__)

BULK_MIN_ROWS = 50_000
# The daily funnel counts (storage/metric_counts.py) are deferred too: their triggers are suspended
# and everything is recounted in one pass when the load ends.
METRIC_COUNTS = "metric_counts"
# Index builds sort in memory up to this much (the server default, 64 MB, spills a 1M-row build to disk).
REBUILD_MAINTENANCE_WORK_MEM = "256MB"


def _index(table: Table, name: str) -> Index:
    return next(index for index in table.indexes if index.name == name)


DEFERRED_INDEXES: tuple[Index, ...] = (
    *METRIC_INDEXES,
    _index(customers, "ix_customers_website_domain"),
    _index(source_customers, "ix_source_customers_external_id"),
)
# Read only when an import matches rows without an external id to the source's records by email: an
# import into a source that was empty needs no such match and defers it too (``BulkLoad(also=...)``).
SOURCE_EMAIL_INDEX = _index(source_customers, "ix_source_customers_email_norm_data_source_id")
DEFERRABLE_INDEXES = (*DEFERRED_INDEXES, SOURCE_EMAIL_INDEX)
# PostgreSQL only: SQLite cannot drop a constraint without rebuilding its table.
DEFERRED_FOREIGN_KEYS: tuple[ForeignKeyConstraint, ...] = (
    *sorted(source_customers.foreign_key_constraints, key=lambda fk: tuple(fk.column_keys)),
    *subscriptions.foreign_key_constraints,
)


@cache
def _fk_name(fk: ForeignKeyConstraint) -> str:
    # The naming convention names constraints at DDL time; render it the same way.
    ddl = str(AddConstraint(fk).compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
    return ddl.split("ADD CONSTRAINT ", 1)[1].split(" ", 1)[0]


def should_defer(conn: Connection, incoming_rows: int, data_source_id: int | None = None) -> bool:
    """Whether a load of ``incoming_rows`` records is large enough to index after writing.

    The rows the source already has are updates, not new customers: a re-import of the same file is
    never deferred. The rest must reach ``BULK_MIN_ROWS`` and the size of the customer table.
    """
    if incoming_rows < BULK_MIN_ROWS:
        return False
    known = 0 if data_source_id is None else source_customer_count(conn, data_source_id)
    new = incoming_rows - known
    if new < BULK_MIN_ROWS:
        return False
    return new >= _customer_count(conn)


def _customer_count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(customers)).scalar_one())


def missing_deferred(conn: Connection) -> list[str]:
    """Names of the deferred indexes and foreign keys the database lacks or has not validated.

    None, unless a load was cut short (or a foreign key's validation found rows without their parent).
    """
    inspector = inspect(conn)
    present = {ix["name"] for table in ("customers", "source_customers") for ix in inspector.get_indexes(table)}
    missing = [str(index.name) for index in DEFERRABLE_INDEXES if index.name not in present]
    if conn.dialect.name == "postgresql":
        names = [_fk_name(fk) for fk in DEFERRED_FOREIGN_KEYS]
        valid = set(conn.execute(
            text("SELECT conname FROM pg_constraint WHERE contype = 'f' AND convalidated "
                 "AND conrelid = ANY(CAST(:tables AS regclass[])) AND conname = ANY(:names)"),
            {"tables": ["source_customers", "subscriptions"], "names": names},
        ).scalars())
        missing += [name for name in names if name not in valid]
    if not kept(conn):
        missing.append(METRIC_COUNTS)
    return missing


def restore_deferred(engine: Engine) -> list[str]:
    """Create the deferred indexes and foreign keys that are missing; returns their names.

    A foreign key whose validation fails (a row lost its parent while the key was off, which only a
    concurrent delete can cause) stays ``NOT VALID``, still enforced on every later write, and is logged;
    the next call tries again.
    """
    with engine.begin() as conn:
        missing = missing_deferred(conn)
        if not missing:
            return []
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.execute(text(f"SET LOCAL maintenance_work_mem = '{REBUILD_MAINTENANCE_WORK_MEM}'"))
        for index in DEFERRABLE_INDEXES:
            if index.name in missing:
                conn.execute(CreateIndex(index, if_not_exists=True))
        if METRIC_COUNTS in missing:
            resume(conn)
        if postgres:
            existing = {fk["name"] for table in ("source_customers", "subscriptions")
                        for fk in inspect(conn).get_foreign_keys(table)}
            for fk in DEFERRED_FOREIGN_KEYS:
                name = _fk_name(fk)
                if name in missing and name not in existing:
                    conn.execute(text(str(AddConstraint(fk).compile(dialect=conn.dialect)) + " NOT VALID"))
    if postgres:
        for fk in DEFERRED_FOREIGN_KEYS:
            name = _fk_name(fk)
            if name in missing:
                _validate(engine, fk.table.name, name)
    return missing


def _validate(engine: Engine, table: str, name: str) -> None:
    try:
        with engine.begin() as conn:
            # Names come from our schema (constants), not from input.
            conn.execute(text(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}"))
    except IntegrityError as exc:
        log.warning("foreign key %s on %s left NOT VALID (still enforced on new rows): %s",
                    name, table, str(exc.orig).splitlines()[0])


def _drop(engine: Engine, also: Sequence[Index] = ()) -> None:
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            for fk in DEFERRED_FOREIGN_KEYS:
                conn.execute(text(f"ALTER TABLE {fk.table.name} DROP CONSTRAINT IF EXISTS {_fk_name(fk)}"))
        for index in (*DEFERRED_INDEXES, *also):
            conn.execute(DropIndex(index, if_exists=True))
        suspend(conn)


class BulkLoad:
    """A load that may defer indexes and foreign keys (a context manager; see the module docstring).

    Args:
        engine: the database.
        incoming_rows: records the load brings, when known (a file): decided at the start. None (a
            sync): decided as the load goes, from the counts passed to ``written``.
        data_source_id: with ``incoming_rows``, the source loaded into: its known rows do not count as new.
        also: more indexes of ``DEFERRABLE_INDEXES`` that this load does not read.
    """

    def __init__(self, engine: Engine, incoming_rows: int | None = None, data_source_id: int | None = None,
                 also: Sequence[Index] = ()) -> None:
        self.engine = engine
        self.also = tuple(also)
        self.incoming_rows = incoming_rows
        self.data_source_id = data_source_id
        self.deferred = False
        self._created = 0
        self._table_at_start = 0

    def __enter__(self) -> BulkLoad:
        restore_deferred(self.engine)
        with self.engine.connect() as conn:
            if self.incoming_rows is not None:
                self.deferred = should_defer(conn, self.incoming_rows, self.data_source_id)
            else:
                self._table_at_start = _customer_count(conn)
        if self.deferred:
            _drop(self.engine, self.also)
        return self

    def written(self, created: int) -> None:
        """Count new records a committed batch wrote; a load of unknown size may start deferring here."""
        self._created += created
        if self.deferred or self.incoming_rows is not None:
            return
        if self._created >= max(BULK_MIN_ROWS, self._table_at_start):
            self.deferred = True
            _drop(self.engine, self.also)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.deferred:
            restore_deferred(self.engine)
        # The load's metric deltas go into the daily counts now, not on the first metrics read.
        with self.engine.begin() as conn:
            fold_deltas(conn)


def bulk_load(engine: Engine, incoming_rows: int | None = None, data_source_id: int | None = None,
              also: Sequence[Index] = ()) -> BulkLoad:
    """A ``BulkLoad`` context for a batch job (imports, syncs)."""
    return BulkLoad(engine, incoming_rows, data_source_id, also)
