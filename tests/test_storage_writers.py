"""``DialectWriter.update``: a batch written set-based (PostgreSQL: one UPDATE from array literals) stores
every value exactly as given, on SQLite and PostgreSQL, for text that an array literal must quote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import Engine, select

from storage.schema import customers
from storage.writers import DialectWriter
from tests.metrics_support import customer_row, insert_customers

TRICKY = ['a"b', "c\\d", None, "x,y", " spaced ", "{}", "NULL", "é✓ ü", "", "it's", "\\\"", "tab\tand\nline"]
COLUMNS = ("id", "name", "lead_created_at", "tags", "custom", "has_subscriptions")


def test_a_batched_update_stores_every_value_as_given(db_engine: Engine) -> None:
    start = datetime(2025, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    with db_engine.begin() as conn:
        ids = insert_customers(conn, [customer_row() for _ in range(60)])  # past the set-based threshold
        wanted = {
            cid: {
                "id": cid,
                "name": TRICKY[n % len(TRICKY)],
                # Another zone than UTC, and a missing date: the instant is what is stored.
                "lead_created_at": None if n % 5 == 0 else (start + timedelta(days=n, microseconds=n)).astimezone(
                    timezone(timedelta(hours=-7))
                ),
                "tags": [TRICKY[(n + 1) % len(TRICKY)] or "t", "vip"],
                "custom": {"note": TRICKY[(n + 2) % len(TRICKY)], "n": n, "ok": n % 2 == 0},
                "has_subscriptions": n % 3 == 0,
            }
            for n, cid in enumerate(ids)
        }
        writer = DialectWriter(conn)
        writer.update("customers", "id", COLUMNS[1:], writer.rows(COLUMNS, list(wanted.values())))
    with db_engine.connect() as conn:
        stored = {row.id: dict(row._mapping) for row in conn.execute(select(*[customers.c[c] for c in COLUMNS]))}
    assert stored == wanted
