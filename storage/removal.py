"""Deleting customers and data sources, with everything that hangs off them.

Foreign keys cascade on PostgreSQL but SQLite enforces them only when asked per connection, so the
dependent rows are deleted explicitly, children first, in a handful of set-based statements.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, delete, select

from storage.projection import reproject
from storage.schema import (
    contacts,
    customer_attributes,
    customer_tags,
    customers,
    data_sources,
    import_jobs,
    import_rejections,
    manual_edits,
    source_customers,
    subscriptions,
    sync_state,
)

CHUNK = 2000


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
        conn.execute(delete(manual_edits).where(manual_edits.c.customer_id.in_(part)))
        conn.execute(delete(customer_tags).where(customer_tags.c.customer_id.in_(part)))
        conn.execute(delete(customer_attributes).where(customer_attributes.c.customer_id.in_(part)))
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
    conn.execute(delete(sync_state).where(sync_state.c.data_source_id == data_source_id))
    conn.execute(delete(data_sources).where(data_sources.c.id == data_source_id))
    return {"source_customers": len(sc_ids), "customers_deleted": len(orphans), "customers_kept": len(kept)}
