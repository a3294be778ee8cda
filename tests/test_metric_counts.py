"""The hourly funnel counts (storage/metric_counts.py) answer exactly what the scan of customers answers.

Writes go through the real storage paths (upserts of two sources with an email join, merges, unmerges,
manual edits of dates and country, deletions, a plain SQL update), in a seeded random order; after each
step the series read from the counts must equal the series scanned from ``customers``, on both
databases, for several intervals, zones and country filters.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, select, update

import storage.metric_counts as metric_counts
import storage.metrics as metrics_module
from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from storage.db import MIGRATIONS_DIR, alembic_config, upgrade
from storage.edits import set_manual_edits
from storage.merge import merge_customers, unmerge
from storage.metrics import funnel_series
from storage.periods import build_periods
from storage.removal import delete_customers
from storage.schema import customers, source_customers
from storage.sources import create_source
from storage.upsert import upsert_records
from tests.metrics_support import customer_row, insert_customers

START, END = date(2025, 1, 1), date(2025, 4, 30)
BASE = datetime(2025, 1, 1, tzinfo=UTC)
CASES = [
    ("month", None),
    ("week", None),
    ("day", ["country = US"]),
    ("month", ["country != US"]),
    ("week", ["country in (US, DE)"]),
    ("quarter", ["country = US", "country != DE"]),
]


def _instant(rng: random.Random) -> datetime | None:
    if rng.random() < 0.2:
        return None
    # Whole hours (bucket edges) and odd microseconds both.
    us = rng.randrange(0, 125 * 86_400) * 1_000_000 + rng.choice([0, 1, 999_999, rng.randrange(10**6)])
    return BASE + timedelta(microseconds=us)


def _record(rng: random.Random, n: int) -> SourceCustomerRecord:
    lead, trial = _instant(rng), _instant(rng)
    subscriptions = []
    if rng.random() < 0.5:
        paid = (trial or lead or BASE) + timedelta(days=rng.choice([-2, 0, 3, 40]), microseconds=rng.randrange(10**6))
        subscriptions = [
            SubscriptionFact(external_id=f"sub_{n}", state="active", trial_started_at=trial, first_paid_at=paid)
        ]
    return SourceCustomerRecord(
        external_id=f"X-{n}",
        email=f"p{rng.randrange(12)}@example.com",
        country=rng.choice(["US", "DE", "FR", None]),
        lead_created_at=lead,
        free_trial_started_at=trial,
        subscriptions=subscriptions,
    )


def assert_counts_agree(conn: Connection) -> None:
    tz = ZoneInfo("UTC")
    for interval, where in CASES:
        periods = build_periods(START, END, interval, tz)
        # The counts really answer these cases (no silent fall back to the scan being compared with).
        assert metrics_module._counted(conn, periods, where) is not None
        fast = funnel_series(conn, START, END, interval, filters=where, tz=tz)
        scan = funnel_series(conn, START, END, interval, filters=where, tz=tz, use_counts=False)
        for f, s in zip(fast, scan, strict=True):
            fa, sa = f.pop("avg_sales_cycle_days"), s.pop("avg_sales_cycle_days")
            assert f == s, (interval, where)
            assert fa == pytest.approx(sa, rel=1e-12) if sa is not None else fa is None


def _ids(conn: Connection) -> list[int]:
    return list(conn.execute(select(customers.c.id).order_by(customers.c.id)).scalars())


@pytest.mark.parametrize("seed", [1, 2])
def test_counts_agree_with_the_scan_after_random_writes(
    db_engine: Engine, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fold the PostgreSQL deltas often, so reads see folded counts and fresh deltas side by side.
    monkeypatch.setattr(metric_counts, "FOLD_AT_ROWS", 25)
    rng = random.Random(seed)
    merged: list[tuple[int, int]] = []  # (survivor, a source customer the merge brought in)
    with db_engine.begin() as conn:
        crm = create_source(conn, "crm", "custom").id
        billing = create_source(conn, "billing", "stripe").id
    n = 0
    for _step in range(30):
        with db_engine.begin() as conn:
            ids = _ids(conn)
            action = rng.choice(["upsert", "upsert", "merge", "unmerge", "edit", "delete", "sql"])
            if action == "upsert" or len(ids) < 4:
                batch = [_record(rng, n + i) for i in range(rng.randrange(1, 8))]
                n += len(batch)
                upsert_records(conn, rng.choice([crm, billing]), batch, link_new_by_email=rng.random() < 0.5)
            elif action == "merge":
                from_id, into_id = rng.sample(ids, 2)
                brought = conn.execute(
                    select(source_customers.c.id).where(source_customers.c.customer_id == from_id)
                ).scalars().first()
                merge_customers(conn, from_id, into_id)
                if brought is not None:
                    merged.append((into_id, brought))
            elif action == "unmerge" and merged:
                into_id, sc_id = merged.pop(rng.randrange(len(merged)))
                owner = conn.execute(
                    select(source_customers.c.customer_id).where(source_customers.c.id == sc_id)
                ).scalar()
                if owner == into_id:
                    unmerge(conn, into_id, sc_id)
            elif action == "edit":
                day = BASE + timedelta(days=rng.randrange(110), hours=rng.randrange(24))
                field = rng.choice(["lead_created_at", "free_trial_started_at", "country"])
                value = rng.choice(["US", "DE"]) if field == "country" else day
                set_manual_edits(conn, rng.choice(ids), {field: value})
            elif action == "delete":
                delete_customers(conn, rng.sample(ids, 2))
            else:
                conn.execute(
                    update(customers)
                    .where(customers.c.id.in_(rng.sample(ids, 3)))
                    .values(subscriber_since=_instant(rng), country=rng.choice(["US", None]))
                )
            if _step % 7 == 6:
                metric_counts.fold_deltas(conn)
            assert_counts_agree(conn)
    with db_engine.connect() as conn:
        assert len(_ids(conn)) > 0
        assert_counts_agree(conn)


def test_head_has_the_count_triggers(db_engine: Engine) -> None:
    # A migration that rebuilds customers (SQLite batch mode) would drop them silently.
    with db_engine.connect() as conn:
        want = {"metric_counts_insert", "metric_counts_delete", "metric_counts_update"}
        if conn.dialect.name == "postgresql":
            want.add("metric_counts_truncate")
        assert metric_counts.installed(conn) == want
        assert metric_counts.kept(conn)


def _functions_without_jit(conn: Connection) -> set[str]:
    rows = conn.exec_driver_sql(
        "SELECT proname FROM pg_proc WHERE pronamespace = to_regnamespace(current_schema()) "
        "AND proname = ANY(%s) AND 'jit=off' = ANY(coalesce(proconfig, '{}'))",
        (list(metric_counts.PG_FUNCTIONS),),
    )
    return {name for (name,) in rows}


def test_the_count_functions_run_without_jit(db_engine: Engine) -> None:
    # The planner cannot size the transition tables: with JIT a statement of thousands of rows spent
    # most of its time compiling the trigger's query. Head (the migration) and ``install`` both set it.
    if db_engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no JIT")
    with db_engine.begin() as conn:
        assert _functions_without_jit(conn) == set(metric_counts.PG_FUNCTIONS)
        metric_counts.install(conn)
        assert _functions_without_jit(conn) == set(metric_counts.PG_FUNCTIONS)
    command.downgrade(alembic_config(db_engine), "0012_metric_counts")
    with db_engine.begin() as conn:
        metric_counts.uninstall(conn)
        for statement in metric_counts._pg_ddl():
            conn.exec_driver_sql(statement.replace(metric_counts.PG_FUNCTION_SETTINGS + " ", ""))
        assert _functions_without_jit(conn) == set()
    upgrade(db_engine)
    with db_engine.connect() as conn:
        assert _functions_without_jit(conn) == set(metric_counts.PG_FUNCTIONS)


def test_a_suspended_count_is_scanned_then_recounted_on_resume(db_engine: Engine) -> None:
    rng = random.Random(9)
    with db_engine.begin() as conn:
        source = create_source(conn, "crm", "custom").id
        upsert_records(conn, source, [_record(rng, i) for i in range(20)])
    with db_engine.begin() as conn:
        metric_counts.suspend(conn)  # what a bulk load does before writing
    with db_engine.begin() as conn:
        upsert_records(conn, source, [_record(rng, i) for i in range(10, 50)])  # updates and new rows
        delete_customers(conn, _ids(conn)[:3])
    utc = ZoneInfo("UTC")
    periods = build_periods(START, END, "month", utc)
    with db_engine.connect() as conn:
        assert metrics_module._counted(conn, periods, None) is None
        scanned = funnel_series(conn, START, END, "month", tz=utc, use_counts=False)
        assert funnel_series(conn, START, END, "month", tz=utc) == scanned
    with db_engine.begin() as conn:
        metric_counts.resume(conn)
    with db_engine.connect() as conn:
        assert metric_counts.kept(conn)
        assert_counts_agree(conn)


def test_upgrade_counts_the_customers_already_there(db_engine: Engine) -> None:
    rng = random.Random(5)
    before = ScriptDirectory(str(MIGRATIONS_DIR)).get_revision("0012_metric_counts").down_revision
    command.downgrade(alembic_config(db_engine), before)
    with db_engine.begin() as conn:
        rows = [
            customer_row(
                lead_created_at=_instant(rng),
                free_trial_started_at=_instant(rng),
                subscriber_since=_instant(rng),
                country=rng.choice(["US", "DE", None]),
            )
            for _ in range(60)
        ]
        insert_customers(conn, rows)
    upgrade(db_engine)
    with db_engine.connect() as conn:
        assert_counts_agree(conn)
        leads = sum(r["leads"] for r in funnel_series(conn, START, END, "month", tz=ZoneInfo("UTC")))
    assert leads == sum(1 for r in rows if r["lead_created_at"] is not None)


@pytest.mark.parametrize(
    ("zone", "within", "where"),
    [
        ("Asia/Kolkata", None, None),  # periods cut at local midnights, not UTC ones
        ("America/New_York", None, ["country = US"]),
        ("UTC", 30, None),  # a conversion window the counts do not hold
        ("UTC", None, ["tag = vip"]),  # a dimension the counts do not hold
        ("UTC", None, ["country = US AND status = Active"]),
    ],
)
def test_what_the_counts_cannot_answer_is_scanned(
    db_engine: Engine, zone: str, within: int | None, where: list[str] | None
) -> None:
    tz = ZoneInfo(zone)
    with db_engine.begin() as conn:
        insert_customers(
            conn,
            [
                customer_row(lead_created_at=BASE + timedelta(hours=h, minutes=20), country="US")
                for h in range(0, 90 * 24, 7)
            ],
        )
        # Counts gone stale on purpose: only the scan can still give the right answer.
        conn.execute(metric_counts.metric_counts.delete())
        conn.execute(metric_counts.metric_count_deltas.delete())
        fast = funnel_series(conn, START, END, "month", within, where, tz=tz)
        scan = funnel_series(conn, START, END, "month", within, where, tz=tz, use_counts=False)
    assert fast == scan
    assert sum(r["leads"] for r in scan) > 0 or where is not None
