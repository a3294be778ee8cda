"""The batch lookups stay index probes however large the table grows (PostgreSQL's planner sees the keys).

On a table of 300,000 source customers a plain join on ``unnest()`` of a batch's 5,000 keys was planned
as a hash join over the whole source (700 ms a batch at 1M rows). These tests fill such a table with SQL
and read the plans of the statements the upsert runs; SQLite's IN lists are checked the same way.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, text

from storage.upsert import PG_BY_EMAIL_SQL, PG_EXISTING_SQL

ROWS = 300_000
KEYS = 5000


def _fill(engine: Engine) -> None:
    """ROWS customers and source customers of source 1, written by SQL (seconds, not minutes)."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO data_sources (id, uuid, name, kind, settings, enabled, created_at) "
                          "VALUES (1, 'ds_1', 'big', 'csv', '{}', true, now())"))
        conn.execute(text(
            "INSERT INTO customers (id, uuid, created_at, updated_at, email_norm, status, tags, custom, "
            "has_subscriptions) SELECT g, 'cus_' || g, now(), now(), 'u' || g || '@example.com', 'New_Lead', "
            "'[]', '{}', false FROM generate_series(1, :n) g"), {"n": ROWS})
        conn.execute(text(
            "INSERT INTO source_customers (id, data_source_id, external_id, customer_id, linked_at, email_norm, "
            "tags, custom, fingerprint, created_at, updated_at) SELECT g, 1, 'ext_' || g, g, now(), "
            "'u' || g || '@example.com', '[]', '{}', 'f', now(), now() FROM generate_series(1, :n) g"), {"n": ROWS})
        conn.execute(text("ANALYZE customers"))
        conn.execute(text("ANALYZE source_customers"))


def _plan_nodes(plan: dict) -> list[str]:  # type: ignore[type-arg]
    nodes = [f"{plan['Node Type']}:{plan.get('Relation Name', '')}"]
    for child in plan.get("Plans", []):
        nodes += _plan_nodes(child)
    return nodes


@pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)
def test_postgresql_lookups_probe_the_indexes_on_a_large_table(db_engine: Engine) -> None:
    _fill(db_engine)
    raw = db_engine.raw_connection()
    try:
        with raw.cursor() as cur:  # type: ignore[attr-defined]
            for sql, params in (
                (PG_EXISTING_SQL, ([f"ext_{i}" for i in range(100_000, 100_000 + KEYS)], 1)),
                (PG_BY_EMAIL_SQL, ([f"u{i}@example.com" for i in range(200_000, 200_000 + KEYS)],)),
            ):
                cur.execute("EXPLAIN (FORMAT JSON) " + sql, params)
                nodes = _plan_nodes(json.loads(json.dumps(cur.fetchone()[0]))[0]["Plan"])
                assert not any(n.startswith(("Seq Scan", "Hash Join", "Merge Join")) for n in nodes), nodes
                assert any(n.startswith(("Index Scan", "Index Only Scan")) for n in nodes), nodes
                cur.execute(sql, params)
                assert len(cur.fetchall()) == KEYS  # every key found, one row each
    finally:
        raw.close()
