"""The dashboard's customer table and segment controls: a sorted, filtered page of customers, the same
rows for a CSV, and the values a segment control offers (sources, countries, owners, tags, attributes).

The table takes the shared filter grammar's clause (``storage.filters.build_filter``) beside the
table's own search, status and data source filters, so the table shows the segment the charts show.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, func, select, true

from funnelsync.records import CUSTOMER_STATUSES
from storage.customer_pages import list_filtered
from storage.schema import custom_attribute_definitions, customer_tags, customers, data_sources

# Columns a user may sort by (the table's headers); text sorts ignore case, and empty values go last
# in either direction so a sort never opens on a page of blanks.
SORTABLE: dict[str, Any] = {
    "name": func.lower(customers.c.name),
    "email": func.lower(customers.c.email),
    "company": func.lower(customers.c.company),
    "country": customers.c.country,
    "status": customers.c.status,
    "owner": func.lower(customers.c.owner),
    "lead_created_at": customers.c.lead_created_at,
    "free_trial_started_at": customers.c.free_trial_started_at,
    "subscriber_since": customers.c.subscriber_since,
}
CSV_COLUMNS = ("uuid", "name", "email", "company", "country", "status", "lead_status", "owner",
               "lead_created_at", "free_trial_started_at", "subscriber_since", "tags")
# A control lists at most this many distinct values (owners, tags, countries); more are typed in the filter.
CHOICES_LIMIT = 500


def _view(
    stmt: Select[Any], *, clause: ColumnElement[bool] | None, status: str | None, data_source_uuid: str | None,
    text: str | None,
) -> Select[Any]:
    stmt = list_filtered(stmt, data_source_uuid=data_source_uuid, external_id=None, status=status, kinds=None,
                     email=None, text=text)
    return stmt.where(clause if clause is not None else true())


def _ordered(stmt: Select[Any], sort: str, descending: bool) -> Select[Any]:
    if sort not in SORTABLE:
        raise ValueError(f"sort {sort!r}: use one of {', '.join(SORTABLE)}")
    key = SORTABLE[sort]
    return stmt.order_by((key.desc() if descending else key.asc()).nulls_last(),
                         customers.c.id.desc() if descending else customers.c.id.asc())


def table_page(
    conn: Connection, *, clause: ColumnElement[bool] | None = None, status: str | None = None,
    data_source_uuid: str | None = None, text: str | None = None, sort: str = "lead_created_at",
    descending: bool = True, limit: int = 50, offset: int = 0,
) -> tuple[list[int], int]:
    """One page of the table: the customer ids in the view's order, and how many customers the view holds.

    Raises:
        ValueError: ``sort`` names no sortable column.
    """
    filters: dict[str, Any] = {"clause": clause, "status": status, "data_source_uuid": data_source_uuid, "text": text}
    ids_query = _ordered(_view(select(customers.c.id), **filters), sort, descending).limit(limit).offset(offset)
    ids = [row[0] for row in conn.execute(ids_query)]
    total = conn.execute(_view(select(func.count()).select_from(customers), **filters)).scalar_one()
    return ids, int(total)


def table_rows(
    conn: Connection, *, clause: ColumnElement[bool] | None = None, status: str | None = None,
    data_source_uuid: str | None = None, text: str | None = None, sort: str = "lead_created_at",
    descending: bool = True,
) -> Iterator[tuple[Any, ...]]:
    """Every row of the view, in its order, as the values of ``CSV_COLUMNS`` (tags as a list)."""
    columns = [customers.c[name] for name in CSV_COLUMNS]
    query = _ordered(_view(select(*columns), clause=clause, status=status, data_source_uuid=data_source_uuid,
                           text=text), sort, descending)
    for row in conn.execution_options(stream_results=True, yield_per=1000).execute(query):
        yield tuple(row)


def _distinct(conn: Connection, column: Any) -> list[str]:
    query = select(column).where(column.is_not(None), column != "").distinct().order_by(column).limit(CHOICES_LIMIT)
    return [row[0] for row in conn.execute(query)]


def segment_choices(conn: Connection) -> dict[str, Sequence[Any]]:
    """What each segment control offers: data sources, countries, statuses, owners, tags, custom attributes."""
    sources = conn.execute(
        select(data_sources.c.uuid, data_sources.c.name, data_sources.c.kind).order_by(data_sources.c.name)
    ).all()
    attributes = conn.execute(
        select(custom_attribute_definitions.c.key, custom_attribute_definitions.c.type)
        .order_by(custom_attribute_definitions.c.key)
    ).all()
    return {
        "sources": [{"uuid": s.uuid, "name": s.name, "kind": s.kind} for s in sources],
        "countries": _distinct(conn, customers.c.country),
        "statuses": list(CUSTOMER_STATUSES),
        "owners": _distinct(conn, customers.c.owner),
        "tags": _distinct(conn, customer_tags.c.tag),
        "attributes": [{"key": a.key, "type": a.type} for a in attributes],
    }
