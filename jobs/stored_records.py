"""What a source already stores of some external ids: for a connector whose records merge with earlier
runs' (Google Play's sales reports: the earliest trial start, first payment and lead date survive reading
the months in any order). One query for the records and one for their subscriptions, per batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, select

from storage.schema import source_customers, subscriptions


def stored_by_external_id(
    conn: Connection, data_source_id: Any, external_ids: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(source customer rows, their subscription rows)`` as mappings, each keyed by external id."""
    rows = conn.execute(
        select(source_customers).where(
            source_customers.c.data_source_id == data_source_id, source_customers.c.external_id.in_(external_ids)
        )
    ).mappings().all()
    by_id = {str(r["external_id"]): dict(r) for r in rows}
    subs: dict[str, Any] = {}
    if rows:
        ids = {r["id"]: str(r["external_id"]) for r in rows}
        for sub in conn.execute(
            select(subscriptions).where(subscriptions.c.source_customer_id.in_(list(ids)))
        ).mappings():
            subs[ids[sub["source_customer_id"]]] = dict(sub)
    return by_id, subs


def stored_lookup(engine: Engine, data_source_id: Any) -> Callable[[list[str]], tuple[dict[str, Any], dict[str, Any]]]:
    """``stored_by_external_id`` of one source, each call on a connection of its own (a read-ahead thread
    may call it while a batch is written)."""

    def lookup(external_ids: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
        with engine.connect() as conn:
            return stored_by_external_id(conn, data_source_id, external_ids)

    return lookup
