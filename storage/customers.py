"""Reading customers: resolve a reference, JSON-ready views, lists with cursor pagination."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple

from sqlalchemy import Connection, false, select

from storage.schema import customers, data_sources, merge_events, source_customers
from storage.sql import chunks, fetch_all, ids_clause
from storage.types import from_epoch_us

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


class SourceLink(NamedTuple):
    """One source customer of a customer, as the customer's views name it."""

    external_id: str
    data_source_uuid: str
    data_source_name: str
    kind: str


# The customer's columns of a view, then those of each of its source customers in link order: one row per
# source customer (one with nulls for a customer that has none), one statement for any number of customers.
_VIEW_COLUMNS = ("id", "uuid", "name", "email", "company", "country", "state", "city", "zip", "website_url", "owner",
                 "status", "lead_status", "lead_created_at", "free_trial_started_at", "subscriber_since", "tags",
                 "custom", "created_at")
_TIME_COLUMNS = frozenset({"lead_created_at", "free_trial_started_at", "subscriber_since", "created_at"})
_VIEW_SQL = (
    "SELECT " + ", ".join(f"c.{name}" for name in _VIEW_COLUMNS)  # noqa: S608  # nosec B608 # constant names
    + ", sc.external_id, ds.uuid, ds.name, ds.kind FROM customers AS c"
    " LEFT JOIN source_customers AS sc ON sc.customer_id = c.id"
    " LEFT JOIN data_sources AS ds ON ds.id = sc.data_source_id"
    " WHERE {where} ORDER BY c.id, sc.linked_at, sc.id"
)
_VIEW_CHUNK = 500


def customer_view(conn: Connection, customer_ids: Sequence[int]) -> list[dict[str, Any]]:
    """JSON-ready customers, in the order of ``customer_ids`` (missing ids are left out).

    Keys: uuid, external_ids, data_sources, name, email, company, country, state, city, zip,
    website_url, owner, status, lead_status, lead_created_at, free_trial_started_at,
    subscriber_since, tags, custom (datetimes ISO 8601 with offset).
    """
    return [view for view, _links in linked_views(conn, customer_ids)]


def linked_views(conn: Connection, customer_ids: Sequence[int]) -> list[tuple[dict[str, Any], list[SourceLink]]]:
    """Each customer's :func:`customer_view` with its source customers in link order, in the order of
    ``customer_ids`` (missing ids are left out)."""
    found: dict[int, tuple[dict[str, Any], list[SourceLink]]] = {}
    for part in chunks(list(dict.fromkeys(customer_ids)), _VIEW_CHUNK):
        if len(part) == 1:  # a single customer's page (a retrieve, a create's answer): the plainest plan
            where, params = ("c.id = ?" if conn.dialect.name == "sqlite" else "c.id = %s"), (part[0],)
        else:
            clause, params = ids_clause(conn, part)
            where = "c.id " + clause
        for view, links in _views(conn, where, params):
            found[view["id"]] = (view, links)
    return [found[cid] for cid in customer_ids if cid in found]


def linked_view_by_uuid(conn: Connection, uuid: str) -> tuple[dict[str, Any], list[SourceLink]] | None:
    """The live customer of public id ``uuid`` as :func:`linked_views` gives it (None when there is none)."""
    views = _views(conn, "c.uuid = ?" if conn.dialect.name == "sqlite" else "c.uuid = %s", (uuid,))
    return views[0] if views else None


def linked_views_by_email(
    conn: Connection, email: str, *, after_id: int = 0, limit: int
) -> list[tuple[dict[str, Any], list[SourceLink]]]:
    """Customers whose normalised email is ``email``'s, in id order after ``after_id``, at most ``limit``,
    as :func:`linked_views` gives them. Text that is no email address matches nobody."""
    from funnelsync.normalize import normalize_email

    wanted = normalize_email(email)
    if wanted is None:
        return []
    where = "c.id IN (SELECT id FROM customers WHERE email_norm = ? AND id > ? ORDER BY id LIMIT ?)"
    if conn.dialect.name != "sqlite":
        where = where.replace("?", "%s")
    return _views(conn, where, (wanted, after_id, limit))


def _views(conn: Connection, where: str, params: tuple[Any, ...]) -> list[tuple[dict[str, Any], list[SourceLink]]]:
    """Views and links of the customers ``where`` selects (a condition on ``c``, the customers), in id order.

    One DB-API statement: the API's retrieve and search answer from it, where SQLAlchemy's per-statement
    work and one query for the customers plus one for their links cost more than the database itself.
    """
    sqlite = conn.dialect.name == "sqlite"
    out: list[tuple[dict[str, Any], list[SourceLink]]] = []
    current: tuple[dict[str, Any], list[SourceLink]] | None = None
    for row in fetch_all(conn, _VIEW_SQL.format(where=where), params):
        if current is None or row[0] != current[0]["id"]:
            current = (_view_of(row, sqlite), [])
            out.append(current)
        if row[-4] is not None:
            current[1].append(SourceLink(*row[-4:]))
    for view, links in out:
        view["external_ids"] = [link.external_id for link in links]
        view["data_sources"] = sorted({link.data_source_name for link in links})
        view["data_source_uuids"] = sorted({link.data_source_uuid for link in links})
    return out


def _view_of(row: Sequence[Any], sqlite: bool) -> dict[str, Any]:
    values = dict(zip(_VIEW_COLUMNS, row, strict=False))
    for name in _TIME_COLUMNS:
        values[name] = _iso(_utc(values[name], sqlite))
    tags, custom = values["tags"], values["custom"]
    if sqlite:  # JSON text there; psycopg hands them decoded (SQLAlchemy's own loads, set on each connection)
        tags, custom = (None if text is None else json.loads(text) for text in (tags, custom))
    return {
        "id": values["id"], "uuid": values["uuid"], "external_ids": [], "data_sources": [], "data_source_uuids": [],
        **{name: values[name] for name in ("name", "email", "company", "country", "state", "city", "zip",
                                           "website_url", "owner", "status", "lead_status")},
        "lead_created_at": values["lead_created_at"], "free_trial_started_at": values["free_trial_started_at"],
        "subscriber_since": values["subscriber_since"], "tags": list(tags or []), "custom": dict(custom or {}),
        "created_at": values["created_at"],
    }


def _utc(value: Any, sqlite: bool) -> datetime | None:
    """A stored time as ``storage.types.UTCDateTime`` reads it: epoch microseconds on SQLite, timestamptz else."""
    if value is None:
        return None
    if sqlite:
        return from_epoch_us(int(value))
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


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
