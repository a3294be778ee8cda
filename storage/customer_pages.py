"""Customer queries the HTTP API needs beyond ``storage.customers``: filtered id pages and links."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Select, false, func, or_, select

from funnelsync.normalize import normalize_email
from storage.schema import customers, data_sources, merge_events, source_customers, subscriptions


def list_filtered(
    stmt: Select[Any], *, data_source_uuid: str | None, external_id: str | None, status: str | None,
    kinds: Sequence[str] | None, email: str | None, text: str | None = None,
) -> Select[Any]:
    """``stmt`` (over ``customers``) narrowed by the list filters of :func:`find_customer_ids`."""
    if data_source_uuid is not None or external_id is not None or kinds is not None:
        owners = select(source_customers.c.customer_id).join(
            data_sources, data_sources.c.id == source_customers.c.data_source_id
        )
        if data_source_uuid is not None:
            owners = owners.where(data_sources.c.uuid == data_source_uuid)
        if external_id is not None:
            owners = owners.where(source_customers.c.external_id == external_id)
        if kinds is not None:
            owners = owners.where(data_sources.c.kind.in_(list(kinds)))
        stmt = stmt.where(customers.c.id.in_(owners))
    if status is not None:
        stmt = stmt.where(customers.c.status == status)
    if email is not None:
        # Text that is no email address normalises to None: it matches nobody (not "email_norm IS NULL").
        wanted = normalize_email(email)
        stmt = stmt.where(customers.c.email_norm == wanted if wanted is not None else false())
    if text:
        # Substring search for people (the dashboard's search box); LIKE wildcards in the input are literal.
        escaped = text.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        stmt = stmt.where(or_(
            func.lower(customers.c.name).like(pattern, escape="\\"),
            func.lower(customers.c.email).like(pattern, escape="\\"),
            func.lower(customers.c.company).like(pattern, escape="\\"),
            customers.c.uuid == text.strip(),
        ))
    return stmt


def find_customer_ids(
    conn: Connection, *, after_id: int = 0, limit: int | None = None, offset: int = 0,
    data_source_uuid: str | None = None, external_id: str | None = None, status: str | None = None,
    kinds: Sequence[str] | None = None, email: str | None = None, text: str | None = None,
) -> list[int]:
    """Customer ids in id order after a cursor id.

    Args:
        conn: a connection.
        after_id: keyset cursor: only ids greater than this.
        limit: page size (None: all).
        offset: rows to skip (only for the legacy page-number paging).
        data_source_uuid: customers with a source customer in this data source.
        external_id: customers with a source customer of this external id (with ``data_source_uuid``:
            in that source).
        status: one status.
        kinds: customers with a source customer in a data source of one of these kinds.
        email: customers whose normalised email equals this one's.
        text: customers whose name, email or company contains this text (any case), or whose uuid it is.
    """
    stmt = select(customers.c.id).where(customers.c.id > after_id).order_by(customers.c.id)
    stmt = list_filtered(stmt, data_source_uuid=data_source_uuid, external_id=external_id, status=status,
                     kinds=kinds, email=email, text=text)
    if offset:
        stmt = stmt.offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [row[0] for row in conn.execute(stmt)]


def count_customers(
    conn: Connection, *, data_source_uuid: str | None = None, external_id: str | None = None,
    status: str | None = None, kinds: Sequence[str] | None = None, email: str | None = None,
    text: str | None = None,
) -> int:
    """How many customers match the filters of :func:`find_customer_ids`."""
    stmt = list_filtered(select(func.count()).select_from(customers), data_source_uuid=data_source_uuid,
                     external_id=external_id, status=status, kinds=kinds, email=email, text=text)
    return int(conn.execute(stmt).scalar_one())


def customer_id_by_uuid(conn: Connection, uuid: str) -> int | None:
    """The id of a live customer (a merged-away or deleted uuid gives None)."""
    return conn.execute(select(customers.c.id).where(customers.c.uuid == uuid)).scalar()


def customer_id_by_external(conn: Connection, data_source_uuid: str, external_id: str) -> int | None:
    """The customer that now holds (data source, external id), following merges."""
    return conn.execute(
        select(source_customers.c.customer_id)
        .join(data_sources, data_sources.c.id == source_customers.c.data_source_id)
        .where(data_sources.c.uuid == data_source_uuid, source_customers.c.external_id == external_id)
    ).scalar()


# What the customer page shows of each source record: the values its source reported, before the projection.
SOURCE_RECORD_FIELDS = ("name", "email", "company", "country", "state", "city", "zip", "website_url", "owner",
                        "lead_status", "lead_created_at", "free_trial_started_at", "tags", "custom")
SUBSCRIPTION_FIELDS = ("external_id", "state", "trial_started_at", "trial_ended_at", "first_paid_at", "cancelled_at")


def source_records(conn: Connection, customer_id: int) -> list[dict[str, Any]]:
    """The customer's source records in link order: each one's reported fields, raw values and subscriptions.

    ``raw`` is the payload or file row as the source sent it (None when it sent none, as the API does),
    kept so a person can see what a projected value came from.
    """
    rows = conn.execute(
        select(source_customers.c.id, source_customers.c.external_id, data_sources.c.uuid.label("ds_uuid"),
               data_sources.c.name.label("ds_name"), data_sources.c.kind.label("ds_kind"), source_customers.c.raw,
               *(source_customers.c[name] for name in SOURCE_RECORD_FIELDS))
        .join(data_sources, data_sources.c.id == source_customers.c.data_source_id)
        .where(source_customers.c.customer_id == customer_id)
        .order_by(source_customers.c.linked_at, source_customers.c.id)
    ).mappings().all()
    subs: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if rows:
        for sub in conn.execute(
            select(subscriptions.c.source_customer_id, *(subscriptions.c[name] for name in SUBSCRIPTION_FIELDS))
            .where(subscriptions.c.source_customer_id.in_([row["id"] for row in rows]))
            .order_by(subscriptions.c.source_customer_id, subscriptions.c.id)
        ).mappings():
            subs[sub["source_customer_id"]].append({name: sub[name] for name in SUBSCRIPTION_FIELDS})
    return [
        {"external_id": row["external_id"], "data_source_uuid": row["ds_uuid"], "data_source": row["ds_name"],
         "kind": row["ds_kind"], "fields": {name: row[name] for name in SOURCE_RECORD_FIELDS}, "raw": row["raw"],
         "subscriptions": subs.get(row["id"], [])}
        for row in rows
    ]


def merge_undo_records(conn: Connection, customer_id: int, customer_uuid: str) -> dict[str, dict[str, str]]:
    """For each merge into the customer not undone yet: one source record it brought that the customer holds.

    An unmerge names a source record and undoes the latest merge that moved it (``storage.merge.unmerge``);
    naming a record of this merge, not of a later one, is what lets the merge history offer an unmerge per
    merge. Merges whose records have all left the customer (a later unmerge or a deletion) get none.

    Returns:
        Merge event uuid → ``{"data_source_uuid": …, "external_id": …}``.
    """
    held = {row[0]: {"data_source_uuid": row[1], "external_id": row[2]} for row in conn.execute(
        select(source_customers.c.id, data_sources.c.uuid, source_customers.c.external_id)
        .join(data_sources, data_sources.c.id == source_customers.c.data_source_id)
        .where(source_customers.c.customer_id == customer_id)
    )}
    handles: dict[str, dict[str, str]] = {}
    claimed: set[int] = set()
    for uuid, snapshot in conn.execute(
        select(merge_events.c.uuid, merge_events.c.snapshot)
        .where(merge_events.c.into_customer_uuid == customer_uuid, merge_events.c.kind == "merge",
               merge_events.c.undone_at.is_(None))
        .order_by(merge_events.c.id.desc())
    ):
        moved = [s["id"] for s in (snapshot or {}).get("source_customers", [])]
        mine = [sc_id for sc_id in moved if sc_id in held and sc_id not in claimed]
        claimed.update(moved)  # a newer merge that moved a record again is the one its unmerge undoes
        if mine:
            handles[uuid] = held[mine[0]]
    return handles
