"""Deleting customers, source customers and data sources, with everything that hangs off them.

Foreign keys cascade on PostgreSQL but SQLite enforces them only when asked per connection, so the
dependent rows are deleted explicitly, children first, in a handful of set-based statements.

When a source says one of its customers was deleted, ``remove_source_customers`` removes that source
customer and re-projects the customer from what remains; a customer left with no source customer goes,
and a ``merge_events`` row of kind ``delete`` keeps its last values and its manual edits, so nothing a
user typed is lost for good.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Connection, Table, delete, insert, select

from storage.ids import new_uuid
from storage.merge_plan import SNAPSHOT_VERSION, row_to_json
from storage.projection import reproject
from storage.schema import (
    contacts,
    customers,
    data_sources,
    import_jobs,
    import_rejections,
    manual_edits,
    merge_events,
    metadata,
    source_customers,
    subscriptions,
)
from storage.sql import ids_in

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


@dataclass
class Removal:
    """What removing source customers did: how many went, and what became of their customers."""

    source_customers: int = 0
    customers_deleted: int = 0
    customers_kept: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"source_customers": self.source_customers, "customers_deleted": self.customers_deleted,
                "customers_kept": self.customers_kept}


def _drop_source_rows(conn: Connection, rows: Sequence[tuple[int, int]], actor: str | None) -> Removal:
    """Delete source customers ``(id, customer_id)``; re-project or delete the customers they leave.

    With ``actor`` set, each customer deleted for want of a source customer leaves a ``delete`` event
    holding its last row, its manual edits and the source customers it lost.
    """
    sc = source_customers
    sc_ids = [r[0] for r in rows]
    touched = sorted({r[1] for r in rows})
    lost: dict[int, list[dict[str, Any]]] = {}
    if actor is not None:
        for part in _chunks(sc_ids):
            query = select(sc.c.customer_id, sc.c.data_source_id, sc.c.external_id).where(ids_in(conn, sc.c.id, part))
            for row in conn.execute(query):
                lost.setdefault(row.customer_id, []).append(
                    {"data_source_id": row.data_source_id, "external_id": row.external_id})
    for part in _chunks(sc_ids):
        conn.execute(delete(subscriptions).where(subscriptions.c.source_customer_id.in_(part)))
        conn.execute(delete(contacts).where(contacts.c.source_customer_id.in_(part)))
        conn.execute(delete(sc).where(sc.c.id.in_(part)))
    still_linked: set[int] = set()
    for part in _chunks(touched):
        still_linked.update(r[0] for r in conn.execute(select(sc.c.customer_id).where(sc.c.customer_id.in_(part))))
    orphans = [cid for cid in touched if cid not in still_linked]
    if actor is not None and orphans:
        _log_deletions(conn, orphans, lost, actor)
    delete_customers(conn, orphans)
    kept = [cid for cid in touched if cid in still_linked]
    reproject(conn, kept)
    return Removal(len(sc_ids), len(orphans), len(kept))


def _log_deletions(conn: Connection, ids: Sequence[int], lost: dict[int, list[dict[str, Any]]], actor: str) -> None:
    now = datetime.now(UTC)
    events = []
    for part in _chunks(list(ids)):
        edits: dict[int, list[dict[str, Any]]] = {}
        for edit in conn.execute(select(manual_edits).where(ids_in(conn, manual_edits.c.customer_id, part))).mappings():
            edits.setdefault(edit["customer_id"], []).append(row_to_json(manual_edits, dict(edit)))
        for row in conn.execute(select(customers).where(ids_in(conn, customers.c.id, part))).mappings():
            events.append({
                "uuid": new_uuid("mrg"), "kind": "delete", "from_customer_uuid": row["uuid"],
                "into_customer_uuid": row["uuid"], "rule": "source_deleted", "actor": actor, "created_at": now,
                "snapshot": {"version": SNAPSHOT_VERSION, "customer": row_to_json(customers, dict(row)),
                             "manual_edits": edits.get(row["id"], []), "source_customers": lost.get(row["id"], [])},
                "undone_at": None,
            })
    if events:
        conn.execute(insert(merge_events), events)


def remove_source_customers(
    conn: Connection, data_source_id: int, external_ids: Iterable[str], actor: str = "sync"
) -> Removal:
    """Remove the source customers a source reports deleted, and re-project the customers they leave.

    A customer keeping another source customer is re-projected from what remains (its manual edits
    stay); a customer left with none is deleted, its last values and manual edits kept in a
    ``merge_events`` row of kind ``delete`` (rule ``source_deleted``). Ids the source never reported
    are ignored, so a deletion read twice changes nothing the second time.

    Args:
        conn: a connection inside the caller's transaction.
        data_source_id: the reporting source.
        external_ids: the source's ids of the deleted customers.
        actor: who is recorded on the deletion events.
    """
    wanted = sorted(set(external_ids))
    if not wanted:
        return Removal()
    sc = source_customers
    rows: list[tuple[int, int]] = []
    for part in [wanted[i : i + CHUNK] for i in range(0, len(wanted), CHUNK)]:
        rows.extend(
            (r[0], r[1]) for r in conn.execute(
                select(sc.c.id, sc.c.customer_id).where(sc.c.data_source_id == data_source_id,
                                                          sc.c.external_id.in_(part))
            )
        )
    return _drop_source_rows(conn, rows, actor)


def delete_data_source(conn: Connection, data_source_id: int) -> dict[str, int]:
    """Delete a data source and what it reported.

    Its source customers (with their subscriptions and contacts) go; a customer left with no source
    customer goes too (the commercial product does the same), the others are re-projected from the
    sources they keep. Returns counts: ``source_customers``, ``customers_deleted``, ``customers_kept``.
    """
    sc = source_customers
    rows = [(r[0], r[1]) for r in
            conn.execute(select(sc.c.id, sc.c.customer_id).where(sc.c.data_source_id == data_source_id))]
    removal = _drop_source_rows(conn, rows, actor=None)
    jobs = select(import_jobs.c.id).where(import_jobs.c.data_source_id == data_source_id)
    conn.execute(delete(import_rejections).where(import_rejections.c.import_job_id.in_(jobs)))
    conn.execute(delete(import_jobs).where(import_jobs.c.data_source_id == data_source_id))
    for table, column in _referencing(data_sources, skip=(source_customers, import_jobs)):
        conn.execute(delete(table).where(column == data_source_id))
    conn.execute(delete(data_sources).where(data_sources.c.id == data_source_id))
    return removal.as_dict()
