"""The batch lookups stay index probes on the key, however large or young the table (PostgreSQL).

PostgreSQL's planner sees a batch's 5,000 keys. On 300,000 analysed source customers a plain join on
``unnest()`` was planned as a hash join over the whole source, slow on every batch. On a young
table without statistics it probed an index on the source alone and filtered the source's every row per
key. These tests build both tables and read the plans of the statements the
upsert runs: each must probe an index on the key it looks up.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, text

from funnelsync.records import SourceCustomerRecord
from storage.key_lookups import PG_BY_EMAIL_SQL, PG_EXISTING_SQL
from storage.sources import create_source
from storage.upsert import upsert_records

ROWS = 300_000
KEYS = 5000


def _fill_large(engine: Engine) -> int:
    """ROWS analysed customers and source customers, written by SQL (seconds, not minutes)."""
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
    return 1


def _fill_young(engine: Engine) -> int:
    """One first batch written by the upsert itself, no statistics yet: a sync's second batch sees this."""
    with engine.begin() as conn:
        source_id = create_source(conn, "young", "csv").id
        upsert_records(
            conn,
            source_id,
            [
                SourceCustomerRecord(
                    f"ext_{i}", email=f"u{i}@example.com", lead_created_at=datetime(2025, 1, 1, tzinfo=UTC)
                )
                for i in range(KEYS)
            ],
        )
    return source_id


def _index_conds(plan: dict[str, Any]) -> list[str]:
    found = []
    if plan["Node Type"] in ("Seq Scan", "Hash Join", "Merge Join"):
        found.append(plan["Node Type"])
    if "Index Cond" in plan:
        found.append(plan["Index Cond"])
    for child in plan.get("Plans", []):
        found += _index_conds(child)
    return found


@pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)
@pytest.mark.parametrize("fill", [_fill_large, _fill_young], ids=["large", "young"])
def test_postgresql_lookups_probe_an_index_on_the_key(db_engine: Engine, fill: Any) -> None:
    source_id = fill(db_engine)
    with db_engine.connect() as conn:
        for sql, params, key in (
            (PG_EXISTING_SQL, ([f"ext_{i}" for i in range(KEYS // 2, KEYS // 2 + KEYS)], source_id), "external_id"),
            (PG_BY_EMAIL_SQL, ([f"u{i}@example.com" for i in range(KEYS // 2, KEYS // 2 + KEYS)],), "email_norm"),
        ):
            plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + sql, params).scalar_one()[0]["Plan"]
            conds = _index_conds(plan)
            assert conds and all(key in cond for cond in conds), conds
            found = conn.exec_driver_sql(sql, params).all()
            assert len(found) == len({row[0] for row in found}) >= KEYS // 2  # one row per key found


def _fill_after_stale_statistics(engine: Engine, rows: int = 100_000) -> None:
    """Statistics taken while 1,000 customers had 20 emails (a team's shared inboxes, a demo), then
    ``rows`` customers of their own email, as a first large import brings them before autovacuum looks.

    The statistics say an email is shared by one customer in 20: walking the primary key from the lowest
    id until a customer has the email looks cheaper than the email index, and reads the whole table for
    every email no customer has.
    """
    with engine.begin() as conn:
        insert = ("INSERT INTO customers (id, uuid, created_at, updated_at, email_norm, status, tags, custom, "
                  "has_subscriptions) SELECT g, 'cus_' || g, now(), now(), {email}, 'New_Lead', '[]', '{{}}', "
                  "false FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) g")
        conn.execute(text(insert.format(email="'team' || (g % 20) || '@example.com'")), {"first": 1, "last": 1000})
        conn.execute(text("ANALYZE customers"))
        conn.execute(text(insert.format(email="'u' || g || '@example.com'")), {"first": 1001, "last": 1000 + rows})


def _scans(plan: dict[str, Any]) -> list[tuple[str, str]]:
    found = [(plan["Node Type"], plan.get("Index Name", plan.get("Relation Name", "")))]
    for child in plan.get("Plans", []):
        found += _scans(child)
    return found


@pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)
def test_postgresql_email_lookup_probes_the_email_index_on_a_freshly_filled_table(db_engine: Engine) -> None:
    """The by-email join of an import must not scan the customers' primary key for each email."""
    _fill_after_stale_statistics(db_engine)
    emails = [f"u{i}@example.com" for i in range(50_000, 55_000)] + [f"nobody{i}@example.com" for i in range(100)]
    with db_engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + PG_BY_EMAIL_SQL, (emails,)).scalar_one()[0]["Plan"]
        # A bitmap heap scan only fetches the rows its index scan found; any other scan must be of the index.
        scans = [scan for scan in _scans(plan) if "Scan" in scan[0] and scan[0] not in ("Function Scan",
                                                                                         "Bitmap Heap Scan")]
        assert scans and all(name == "ix_customers_email_norm" for _kind, name in scans), _scans(plan)
        found = dict(conn.exec_driver_sql(PG_BY_EMAIL_SQL, (["team3@example.com", *emails[:3]],)).all())
    assert found == {"team3@example.com": 3, "u50000@example.com": 50_000, "u50001@example.com": 50_001,
                     "u50002@example.com": 50_002}
