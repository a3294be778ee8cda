"""Deleting customers and data sources, with everything that hangs off them.

Foreign keys cascade on PostgreSQL but SQLite enforces them only when asked per connection, so the
dependent rows are deleted explicitly, children first, in a handful of set-based statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Connection, Table, delete, select

from storage.projection import reproject
from storage.schema import (
    contacts,
    customers,
    data_sources,
    import_jobs,
    import_rejections,
    metadata,
    source_customers,
    subscriptions,
)

CHUNK = 2000


def _referencing(parent: Table, skip: Sequence[Table]) -> list[tuple[Table, Column[Any]]]:
    """Every (table, column) whose foreign key points at ``parent.id``, children of children first.

    Found from the schema rather than listed, so a table another module adds later (sync state, row
    fingerprints, manual edits, filter rows, …) is cleaned up too instead of breaking the delete.
    """
    found = []
    for table in reversed(metadata.sorted_tables):
        if table in skip:
            continue
        for fk in table.foreign_keys:
            if fk.column is parent.c.id:
                found.append((table, fk.parent))
    return found


def _chunks(ids: Sequence[int]) -> list[list[int]]:
    return [list(ids[i : i + CHUNK]) for i in range(0, len(ids), CHUNK)]


def delete_customers(conn: Connection, customer_ids: Sequence[int]) -> int:
    """Delete customers with their source customers, subscriptions, contacts, edits and filter rows.

    Merge events stay (they are the log); an unmerge of a deleted customer then finds nothing.
    Returns how many customers were deleted.
    """
    deleted = 0
    for part in _chunks(list(customer_ids)):
        sc_ids = select(source_customers.c.id).where(source_customers.c.customer_id.in_(part))
        conn.execute(delete(subscriptions).where(subscriptions.c.source_customer_id.in_(sc_ids)))
        conn.execute(delete(contacts).where(contacts.c.customer_id.in_(part)))
        conn.execute(delete(source_customers).where(source_customers.c.customer_id.in_(part)))
        for table, column in _referencing(customers, skip=(source_customers, contacts)):
            conn.execute(delete(table).where(column.in_(part)))
        deleted += conn.execute(delete(customers).where(customers.c.id.in_(part))).rowcount or 0
    return deleted


def delete_data_source(conn: Connection, data_source_id: int) -> dict[str, int]:
    """Delete a data source and what it reported.

    Its source customers (with their subscriptions and contacts) go; a customer left with no source
    customer goes too (the commercial product does the same), the others are re-projected from the
    sources they keep. Returns counts: ``source_customers``, ``customers_deleted``, ``customers_kept``.
    """
    sc = source_customers
    rows = conn.execute(select(sc.c.id, sc.c.customer_id).where(sc.c.data_source_id == data_source_id)).all()
    sc_ids = [r[0] for r in rows]
    touched = sorted({r[1] for r in rows})
    for part in _chunks(sc_ids):
        conn.execute(delete(subscriptions).where(subscriptions.c.source_customer_id.in_(part)))
        conn.execute(delete(contacts).where(contacts.c.source_customer_id.in_(part)))
        conn.execute(delete(sc).where(sc.c.id.in_(part)))
    still_linked: set[int] = set()
    for part in _chunks(touched):
        still_linked.update(r[0] for r in conn.execute(select(sc.c.customer_id).where(sc.c.customer_id.in_(part))))
    orphans = [cid for cid in touched if cid not in still_linked]
    delete_customers(conn, orphans)
    kept = [cid for cid in touched if cid in still_linked]
    reproject(conn, kept)
    jobs = select(import_jobs.c.id).where(import_jobs.c.data_source_id == data_source_id)
    conn.execute(delete(import_rejections).where(import_rejections.c.import_job_id.in_(jobs)))
    conn.execute(delete(import_jobs).where(import_jobs.c.data_source_id == data_source_id))
    for table, column in _referencing(data_sources, skip=(source_customers, import_jobs)):
        conn.execute(delete(table).where(column == data_source_id))
    conn.execute(delete(data_sources).where(data_sources.c.id == data_source_id))
    return {"source_customers": len(sc_ids), "customers_deleted": len(orphans), "customers_kept": len(kept)}
