"""Public ids (``cus_…``, ``ds_…``) and blocks of integer primary keys for batch inserts."""

from __future__ import annotations

import os
import time

from sqlalchemy import Connection

from storage.sql import fetch_all


def new_uuid(prefix: str) -> str:
    """A public id in the commercial product's shape, e.g. ``cus_0190a5c4-7b1e-7c3a-9f0e-2b8d4c6e1a37``."""
    return new_uuids(prefix, 1)[0]


def new_uuids(prefix: str, count: int) -> list[str]:
    """``count`` public ids at once, time-ordered (RFC 9562 version 7) and ascending within the call.

    Version 7 puts the creation time in milliseconds first and random bits after (74 of them), so ids
    made later sort later. That is what keeps the unique index on ``customers.uuid`` cheap: new ids land
    at its right-hand edge instead of on a random page each. With random (version 4) ids a first import
    of a million customers dirtied a random index page per row, and SQLite wrote several times as many
    pages per commit. The ids still reveal nothing but their creation time, which the record shows anyway.
    """
    if count <= 0:
        return []
    stamp = f"{time.time_ns() // 1_000_000:012x}"
    head = f"{prefix}_{stamp[:8]}-{stamp[8:]}-7"  # the 48-bit time, then version 7
    # 20 random hex digits an id, made at once: 3 after the version, one picking the RFC 9562 variant
    # (8, 9, a or b), 15 more. Slicing one hex string costs about half of drawing bytes per id.
    digits = os.urandom(10 * count).hex()
    variant = _VARIANT
    out = [f"{head}{digits[i:i + 3]}-{variant[digits[i + 3]]}{digits[i + 4:i + 7]}-{digits[i + 7:i + 19]}"
           for i in range(0, 20 * count, 20)]
    # One call shares one millisecond: sorting makes the batch ascending (random bits order the rest).
    out.sort()
    return out


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def allocate_ids(conn: Connection, table: str, count: int) -> list[int]:
    """Reserve ``count`` primary keys of ``table`` inside the caller's transaction.

    Knowing the ids before inserting lets a batch insert customers and the source customers that point
    at them with two executemany statements, instead of a RETURNING round trip per row.

    PostgreSQL draws them from the table's own sequence (safe under concurrency). SQLite has no
    sequences: the statement is a write to ``id_blocks``, which takes SQLite's write lock for the rest of
    the transaction, so the ``max(id)`` it reads cannot race with another writer.
    """
    if count <= 0:
        return []
    if conn.dialect.name == "postgresql":
        # The sequence name is looked up once per connection: inside the statement it was re-evaluated
        # for every id, several times the cost of the id. One array comes back instead of a row per id.
        sequences = conn.info.setdefault("funnelsync_sequences", {})
        if table not in sequences:
            sequences[table] = conn.exec_driver_sql("SELECT pg_get_serial_sequence(%s, 'id')", (table,)).scalar_one()
        ids = conn.exec_driver_sql(
            "SELECT array_agg(nextval(%s::regclass)) FROM generate_series(1, %s)", (sequences[table], count)
        ).scalar_one()
        return sorted(ids)
    # One statement: the block row is created or moved past both its last block and the table's highest id
    # (rows written without a block, a restored backup), and its new end comes back. For a single record
    # (an API create) the number of statements, not the rows, is what an upsert costs.
    sql = _SQLITE_ALLOCATE.format(table=table)  # nosec B608 # table names are our constants
    (end,) = fetch_all(conn, sql, (table, count, count))[0]
    return list(range(int(end) - count, int(end)))


# The table name comes from our own constants, never from input.
_SQLITE_ALLOCATE = (
    "INSERT INTO id_blocks (table_name, next_id) VALUES (?, (SELECT coalesce(max(id), 0) + 1 FROM {table}) + ?) "
    "ON CONFLICT (table_name) DO UPDATE SET next_id = max(next_id, (SELECT coalesce(max(id), 0) + 1 FROM {table})) + ? "
    "RETURNING next_id"
)
