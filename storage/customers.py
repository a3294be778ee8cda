"""Reading customers: resolve a reference, JSON-ready views, lists with cursor pagination."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, false, select

from storage.schema import customers, data_sources, merge_events, source_customers
from storage.sql import one_or_in

# The customer fields the commercial product's API never sends as null: "" when unknown. Every door that
# hands out a customer (the HTTP API, the CLI's --json, the automations' webhook) gives them the same
# way, so a script reads one convention whichever door it uses.
TEXT_NEVER_NULL = ("name", "company", "email")


def text_never_null(item: dict[str, Any]) -> dict[str, Any]:
    """``item`` with its ``TEXT_NEVER_NULL`` fields as "" when unknown."""
    return {**item, **{name: item[name] or "" for name in TEXT_NEVER_NULL if name in item}}


def resolve_customer(conn: Connection, ref: str) -> int | None:
    """The id of the customer named by ``ref``: a ``cus_…`` uuid or ``SOURCE:EXTERNAL_ID``.

    ``SOURCE`` is a data source name or ``ds_…`` uuid. A merged-away uuid resolves to None; its
    (source, external id) pairs resolve to the survivor.
    """
    ref = ref.strip()
    if ref.startswith("cus_"):
        return conn.execute(select(customers.c.id).where(customers.c.uuid == ref)).scalar_one_or_none()
    source, sep, external_id = ref.partition(":")
    if not sep or not source or not external_id:
        return None
    return conn.execute(
        select(source_customers.c.customer_id)
        .join(data_sources, data_sources.c.id == source_customers.c.data_source_id)
        .where(
            (data_sources.c.name == source) | (data_sources.c.uuid == source),
            source_customers.c.external_id == external_id,
        )
    ).scalar_one_or_none()


def merged_into(conn: Connection, uuid: str) -> str | None:
    """The live customer a merged-away ``uuid`` now lives on in (following merges of merges), else None.

    A merge that was undone does not count: its customer came back under its own uuid.
    """
    seen = {uuid}
    current = uuid
    while True:
        into = conn.execute(
            select(merge_events.c.into_customer_uuid)
            .where(merge_events.c.kind == "merge", merge_events.c.from_customer_uuid == current,
                   merge_events.c.undone_at.is_(None))
            .order_by(merge_events.c.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        if into is None or into in seen:
            return None
        if conn.execute(select(customers.c.id).where(customers.c.uuid == into)).scalar_one_or_none() is not None:
            return str(into)
        seen.add(into)
        current = into


def missing_customer_message(conn: Connection, ref: str) -> str:
    """Why ``ref`` names no live customer, pointing at the survivor when it was merged away."""
    survivor = merged_into(conn, ref.strip()) if ref.strip().startswith("cus_") else None
    if survivor is not None:
        return f"customer {ref!r} was merged into {survivor}: use that uuid (or undo the merge)"
    return f"no customer {ref!r} (use a cus_… uuid or SOURCE:EXTERNAL_ID)"


def customer_view(conn: Connection, customer_ids: Sequence[int]) -> list[dict[str, Any]]:
    """JSON-ready customers, in the order of ``customer_ids`` (missing ids are left out).

    Keys: uuid, external_ids, data_sources, name, email, company, country, state, city, zip,
    website_url, owner, status, lead_status, lead_created_at, free_trial_started_at,
    subscriber_since, tags, custom (datetimes ISO 8601 with offset).
    """
    if not customer_ids:
        return []
    ids = list(customer_ids)
    links: dict[int, list[tuple[str, str, str]]] = defaultdict(list)
    for link in conn.execute(
        select(source_customers.c.customer_id, source_customers.c.external_id, data_sources.c.uuid, data_sources.c.name)
        .join(data_sources, data_sources.c.id == source_customers.c.data_source_id)
        .where(one_or_in(source_customers.c.customer_id, ids))
        .order_by(source_customers.c.customer_id, source_customers.c.linked_at, source_customers.c.id)
    ):
        links[link[0]].append((link[1], link[2], link[3]))
    rows: dict[int, Any] = {
        r["id"]: r for r in conn.execute(select(customers).where(one_or_in(customers.c.id, ids))).mappings()
    }
    out = []
    for cid in ids:
        row = rows.get(cid)
        if row is None:
            continue
        own = links.get(cid, [])
        out.append({
            "id": cid,
            "uuid": row["uuid"],
            "external_ids": [ext for ext, _, _ in own],
            "data_sources": sorted({name for _, _, name in own}),
            "data_source_uuids": sorted({ds for _, ds, _ in own}),
            "name": row["name"],
            "email": row["email"],
            "company": row["company"],
            "country": row["country"],
            "state": row["state"],
            "city": row["city"],
            "zip": row["zip"],
            "website_url": row["website_url"],
            "owner": row["owner"],
            "status": row["status"],
            "lead_status": row["lead_status"],
            "lead_created_at": _iso(row["lead_created_at"]),
            "free_trial_started_at": _iso(row["free_trial_started_at"]),
            "subscriber_since": _iso(row["subscriber_since"]),
            "tags": list(row["tags"] or []),
            "custom": dict(row["custom"] or {}),
            "created_at": _iso(row["created_at"]),
        })
    return out


def list_customer_ids(
    conn: Connection, *, source: str | None = None, after_id: int = 0, limit: int | None = None,
    email: str | None = None, status: str | None = None, external_id: str | None = None,
) -> list[int]:
    """Customer ids in id order, optionally of one source (name or uuid), after a cursor id."""
    stmt = select(customers.c.id).where(customers.c.id > after_id).order_by(customers.c.id)
    if source is not None or external_id is not None:
        sub = select(source_customers.c.customer_id).join(
            data_sources, data_sources.c.id == source_customers.c.data_source_id
        )
        if source is not None:
            sub = sub.where((data_sources.c.name == source) | (data_sources.c.uuid == source))
        if external_id is not None:
            sub = sub.where(source_customers.c.external_id == external_id)
        stmt = stmt.where(customers.c.id.in_(sub))
    if email is not None:
        from funnelsync.normalize import normalize_email

        # Text that is no email address normalises to None: it matches nobody (not "email_norm IS NULL").
        wanted = normalize_email(email)
        stmt = stmt.where(customers.c.email_norm == wanted if wanted is not None else false())
    if status is not None:
        stmt = stmt.where(customers.c.status == status)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [r[0] for r in conn.execute(stmt)]


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()
