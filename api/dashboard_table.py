"""The dashboard's customer table and segment controls, behind the API key like the rest of the dashboard.

    GET /dashboard/segments                 what each segment control offers
    GET /dashboard/customers?…              one sorted page of the view, with its total
    GET /dashboard/customers.csv?…          every row of the view, formula-escaped

The view: ``where`` (repeatable, the shared filter grammar, as ``/v1/metrics/funnel`` takes it), ``q``
(name, email or company contains), ``status``, ``data_source_uuid``, ``sort`` and ``order``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from api.auth import require_api_key
from api.errors import Invalid, no_nul_in_url
from api.wire import customers_json, writable_kinds
from funnelsync.records import CUSTOMER_STATUSES
from funnelsync.spreadsheet import csv_writer
from storage.customer_table import CSV_COLUMNS, SORTABLE, segment_choices, table_page, table_rows
from storage.filters import FilterError, build_filter

router = APIRouter(tags=["dashboard"], dependencies=[Depends(require_api_key), Depends(no_nul_in_url)])

WhereParam = Annotated[list[str] | None, Query()]
MAX_PER_PAGE = 200


def _view(request: Request, conn: Any, where: list[str] | None) -> dict[str, Any]:
    query = request.query_params
    status = query.get("status") or None
    if status is not None and status not in CUSTOMER_STATUSES:
        raise Invalid.one("status", f"expected one of {', '.join(CUSTOMER_STATUSES)}, got {status!r}")
    sort = query.get("sort") or "lead_created_at"
    if sort not in SORTABLE:
        raise Invalid.one("sort", f"expected one of {', '.join(SORTABLE)}, got {sort!r}")
    order = query.get("order") or "desc"
    if order not in ("asc", "desc"):
        raise Invalid.one("order", f"expected asc or desc, got {order!r}")
    expressions = [w for w in (where or []) if w.strip()]
    try:
        clause = build_filter(conn, expressions) if expressions else None
    except FilterError as exc:
        raise Invalid.one("where", str(exc)) from None
    return {"clause": clause, "status": status, "data_source_uuid": query.get("data_source_uuid") or None,
            "text": (query.get("q") or "").strip() or None, "sort": sort, "descending": order == "desc"}


def _whole(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise Invalid.one(name, f"expected a whole number from {low} to {high}, got {raw!r}")
    return int(raw)


@router.get("/dashboard/segments", include_in_schema=False)
def segments(request: Request) -> dict[str, Any]:
    """The values the segment controls offer."""
    with request.app.state.engine.connect() as conn:
        choices = dict(segment_choices(conn))
    # Which sources a lead may be added to from the page (API and custom ones; integrations own theirs).
    writable = set(writable_kinds())
    choices["sources"] = [{**s, "writable": s["kind"] in writable} for s in choices["sources"]]
    return choices


@router.get("/dashboard/customers", include_in_schema=False)
def customer_table(request: Request, where: WhereParam = None) -> dict[str, Any]:
    """One page of the view: ``page`` (from 1) of ``per_page`` (≤ 200) customers, and the view's total."""
    per_page = _whole("per_page", request.query_params.get("per_page"), 25, 1, MAX_PER_PAGE)
    page = _whole("page", request.query_params.get("page"), 1, 1, 10**9)
    with request.app.state.engine.connect() as conn:
        view = _view(request, conn, where)
        ids, total = table_page(conn, **view, limit=per_page, offset=(page - 1) * per_page)
        entries = customers_json(conn, ids, str(request.base_url))
    return {"entries": entries, "total": total, "page": page, "per_page": per_page,
            "pages": max(1, -(-total // per_page))}


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return "" if value is None else value


@router.get("/dashboard/customers.csv", include_in_schema=False)
def customer_table_csv(request: Request, where: WhereParam = None) -> StreamingResponse:
    """Every customer of the view in its order, as CSV whose formula-like cells are defused."""
    engine = request.app.state.engine
    with engine.connect() as conn:
        view = _view(request, conn, where)  # refused before the first byte, as a 422

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv_writer(buffer)
        writer.writerow(CSV_COLUMNS)
        with engine.connect() as conn:
            for i, row in enumerate(table_rows(conn, **view), 1):
                writer.writerow([_cell(v) for v in row])
                if i % 500 == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="customers.csv"'})
