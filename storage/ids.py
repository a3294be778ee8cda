"""Public ids (``cus_…``, ``ds_…``) and blocks of integer primary keys for batch inserts."""

from __future__ import annotations

import uuid

from sqlalchemy import Connection, text

from storage.schema import id_blocks


def new_uuid(prefix: str) -> str:
    """A public id in the commercial product's shape, e.g. ``cus_de305d54-75b4-431b-adb2-eb6b9e546014``."""
    return f"{prefix}_{uuid.uuid4()}"


def allocate_ids(conn: Connection, table: str, count: int) -> list[int]:
    """Reserve ``count`` primary keys of ``table`` inside the caller's transaction.

    Knowing the ids before inserting lets a batch insert customers and the source customers that point
    at them with two executemany statements, instead of a RETURNING round trip per row.

    PostgreSQL draws them from the table's own sequence (safe under concurrency). SQLite has no
    sequences: the first statement is a write to ``id_blocks``, which takes SQLite's write lock for the
    rest of the transaction, so ``max(id)`` read next cannot race with another writer.
    """
    if count <= 0:
        return []
    if conn.dialect.name == "postgresql":
        rows = conn.execute(
            text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
            {"t": table, "n": count},
        )
        return [row[0] for row in rows]
    conn.execute(
        text(
            "INSERT INTO id_blocks (table_name, next_id) VALUES (:t, 1) "
            "ON CONFLICT (table_name) DO UPDATE SET next_id = next_id"
        ),
        {"t": table},
    )
    stored = conn.execute(
        text("SELECT next_id FROM id_blocks WHERE table_name = :t"), {"t": table}
    ).scalar_one()
    # The table name comes from our own constants, never from input.
    highest = conn.execute(text(f"SELECT coalesce(max(id), 0) FROM {table}")).scalar_one()  # noqa: S608
    start = max(int(stored), int(highest) + 1)
    conn.execute(
        id_blocks.update().where(id_blocks.c.table_name == table).values(next_id=start + count)
    )
    return list(range(start, start + count))
