"""Helpers for the metrics and filter tests: customers inserted directly with Core, in one batch."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert

from storage.schema import customer_attributes, customer_tags, customers, data_sources, source_customers

_counter = itertools.count(1)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def customer_row(**fields: Any) -> dict[str, Any]:
    """A full ``customers`` row (every column present so executemany gets one shape)."""
    n = next(_counter)
    row: dict[str, Any] = {
        "uuid": f"cus_test{n:08d}",
        "created_at": NOW,
        "updated_at": NOW,
        "name": None,
        "email": None,
        "email_norm": None,
        "company": None,
        "country": None,
        "owner": None,
        "lead_status": None,
        "status": "New_Lead",
        "lead_created_at": None,
        "free_trial_started_at": None,
        "subscriber_since": None,
        "tags": [],
        "custom": {},
        "has_subscriptions": False,
    }
    unknown = set(fields) - set(row) - {"id"}
    assert not unknown, unknown
    row.update(fields)
    return row


def insert_customers(conn: Connection, rows: Iterable[Mapping[str, Any]]) -> list[int]:
    """Insert customers (given ids kept) and return their ids in order."""
    rows = [dict(r) for r in rows]
    if not rows:
        return []
    conn.execute(insert(customers), rows)
    uuids = [r["uuid"] for r in rows]
    ids = dict(
        conn.execute(
            customers.select()
            .with_only_columns(customers.c.uuid, customers.c.id)
            .where(customers.c.uuid.in_(uuids))
        ).all()
    )
    return [ids[u] for u in uuids]


def add_source(conn: Connection, name: str, kind: str = "custom") -> int:
    result = conn.execute(
        insert(data_sources).values(
            uuid=f"ds_{name.lower().replace(' ', '')}",
            name=name,
            kind=kind,
            settings={},
            enabled=True,
            created_at=NOW,
        )
    )
    return int(result.inserted_primary_key[0])


def link(conn: Connection, data_source_id: int, customer_id: int, external_id: str) -> None:
    conn.execute(
        insert(source_customers).values(
            data_source_id=data_source_id,
            external_id=external_id,
            customer_id=customer_id,
            linked_at=NOW,
            tags=[],
            custom={},
            fingerprint="x",
            created_at=NOW,
            updated_at=NOW,
        )
    )


def tag(conn: Connection, customer_id: int, *tags: str) -> None:
    conn.execute(insert(customer_tags), [{"customer_id": customer_id, "tag": t} for t in tags])


def attribute(conn: Connection, customer_id: int, key: str, **typed: Any) -> None:
    row = {
        "customer_id": customer_id,
        "key": key,
        "value_text": None,
        "value_number": None,
        "value_time": None,
        "value_bool": None,
    }
    row.update(typed)
    conn.execute(insert(customer_attributes), [row])
