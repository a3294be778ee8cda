"""Removing a data source: what it holds goes, what people decided about customers stays.

A source's rows (its source customers with their subscriptions and reported contacts, its cursors,
import jobs and row fingerprints) are deleted. The customers it fed are re-projected from what remains;
a customer left with no record from any source is deleted too, unless someone edited it by hand or
added a contact to it: then it stays, holding those. The merge log (``merge_events``) and the edit log
(``manual_edits``) are never touched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, delete, exists, func, select

from storage.projection import reproject
from storage.schema import (
    contacts,
    customer_attributes,
    customer_tags,
    customers,
    data_sources,
    import_jobs,
    import_rejections,
    import_row_fingerprints,
    lifecycle_marks,
    manual_edits,
    merge_events,
    source_customers,
    subscriptions,
    sync_state,
)
from storage.sql import chunks, ids_in


@dataclass(frozen=True)
class SourceFootprint:
    """What removing a source deletes (the first four) and what it keeps (the last three)."""

    source_customers: int
    subscriptions: int
    customers_deleted: int
    import_jobs: int
    customers_kept: int
    manual_edits_kept: int
    merge_events_kept: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fed_customers(conn: Connection, source_id: int) -> list[int]:
    sc = source_customers
    return list(conn.execute(select(sc.c.customer_id).where(sc.c.data_source_id == source_id).distinct()).scalars())


def _customers_only_here(conn: Connection, source_id: int, fed: list[int]) -> tuple[list[int], list[int]]:
    """(customers to delete, customers kept for their edits or hand-added contacts) among those only this
    source feeds."""
    other = source_customers.alias("other")
    lonely: list[int] = []
    for part in chunks(fed, 2000):
        lonely += list(conn.execute(
            select(customers.c.id).where(
                ids_in(conn, customers.c.id, list(part)),
                ~exists().where(other.c.customer_id == customers.c.id, other.c.data_source_id != source_id),
            )
        ).scalars())
    kept: set[int] = set()
    for part in chunks(lonely, 2000):
        kept.update(conn.execute(
            select(manual_edits.c.customer_id).where(ids_in(conn, manual_edits.c.customer_id, list(part)))
        ).scalars())
        kept.update(conn.execute(
            select(contacts.c.customer_id).where(
                ids_in(conn, contacts.c.customer_id, list(part)), contacts.c.source_customer_id.is_(None)
            )
        ).scalars())
    return [c for c in lonely if c not in kept], sorted(kept)


def _count(conn: Connection, query: Any) -> int:
    return int(conn.execute(query).scalar_one())


def source_footprint(conn: Connection, source_id: int) -> SourceFootprint:
    """What :func:`remove_source` would delete and keep, counted without changing anything."""
    sc = source_customers
    fed = _fed_customers(conn, source_id)
    doomed, kept = _customers_only_here(conn, source_id, fed)
    fed_uuids = select(customers.c.uuid).where(ids_in(conn, customers.c.id, fed)) if fed else None
    return SourceFootprint(
        source_customers=_count(conn, select(func.count()).select_from(sc).where(sc.c.data_source_id == source_id)),
        subscriptions=_count(conn, select(func.count()).select_from(subscriptions.join(sc)).where(
            sc.c.data_source_id == source_id
        )),
        customers_deleted=len(doomed),
        import_jobs=_count(conn, select(func.count()).select_from(import_jobs).where(
            import_jobs.c.data_source_id == source_id
        )),
        customers_kept=len(kept),
        manual_edits_kept=_count(conn, select(func.count()).select_from(manual_edits).where(
            ids_in(conn, manual_edits.c.customer_id, fed)
        )) if fed else 0,
        merge_events_kept=_count(conn, select(func.count()).select_from(merge_events).where(
            merge_events.c.into_customer_uuid.in_(fed_uuids) | merge_events.c.from_customer_uuid.in_(fed_uuids)
        )) if fed_uuids is not None else 0,
    )


def remove_source(conn: Connection, source_id: int) -> SourceFootprint:
    """Delete the source ``source_id`` and what only it holds (see the module docstring); in the caller's
    transaction. Returns what it deleted and kept."""
    footprint = source_footprint(conn, source_id)
    fed = _fed_customers(conn, source_id)
    doomed, _ = _customers_only_here(conn, source_id, fed)
    sc = source_customers
    mine = select(sc.c.id).where(sc.c.data_source_id == source_id)
    # Children first, explicitly: SQLite enforces ON DELETE CASCADE only with its foreign-key pragma on.
    conn.execute(delete(subscriptions).where(subscriptions.c.source_customer_id.in_(mine)))
    conn.execute(delete(contacts).where(contacts.c.source_customer_id.in_(mine)))
    conn.execute(delete(sc).where(sc.c.data_source_id == source_id))
    conn.execute(delete(sync_state).where(sync_state.c.data_source_id == source_id))
    jobs = select(import_jobs.c.id).where(import_jobs.c.data_source_id == source_id)
    conn.execute(delete(import_rejections).where(import_rejections.c.import_job_id.in_(jobs)))
    conn.execute(delete(import_jobs).where(import_jobs.c.data_source_id == source_id))
    conn.execute(delete(import_row_fingerprints).where(import_row_fingerprints.c.data_source_id == source_id))
    conn.execute(delete(data_sources).where(data_sources.c.id == source_id))
    if doomed:
        for part in chunks(doomed, 2000):
            for table in (customer_tags, customer_attributes, lifecycle_marks):
                conn.execute(delete(table).where(ids_in(conn, table.c.customer_id, list(part))))
            conn.execute(delete(customers).where(ids_in(conn, customers.c.id, list(part))))
    gone = set(doomed)
    reproject(conn, [c for c in fed if c not in gone])
    return footprint
