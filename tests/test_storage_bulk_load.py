"""Large loads index after writing: deferred indexes (and PostgreSQL foreign keys) are dropped, rebuilt, and never
lost (both databases)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.schema import DropIndex

import storage.bulk_load as deferral
from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from jobs.imports import import_csv
from storage.bulk_load import (
    DEFERRED_FOREIGN_KEYS,
    DEFERRED_INDEXES,
    METRIC_COUNTS,
    _fk_name,
    bulk_load,
    missing_deferred,
    restore_deferred,
    should_defer,
)
from storage.metrics import funnel_series
from storage.schema import METRIC_INDEXES, customers
from storage.sources import create_source
from storage.upsert import fresh_load, upsert_records

ROOT = str(Path(__file__).resolve().parents[1])


def everything_deferred(engine: Engine) -> list[str]:
    names = [index.name for index in DEFERRED_INDEXES] + [METRIC_COUNTS]  # the daily counts' triggers
    if engine.dialect.name == "postgresql":
        names += [_fk_name(fk) for fk in DEFERRED_FOREIGN_KEYS]
    return sorted(names)  # type: ignore[type-var]


def _csv(tmp_path: Path, rows: int, name: str = "big.csv", domain: str = "example.com") -> Path:
    lines = ["Customer ID,Name,Email,Signup Date,Trial Start"]
    for i in range(rows):
        lines.append(f"c{i},Person {i},p{i}@{domain},2024-0{1 + i % 9}-1{i % 10},2024-0{1 + i % 9}-2{i % 8}")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_should_defer_only_loads_that_bring_mostly_new_rows(db_engine: Engine, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(deferral, "BULK_MIN_ROWS", 10)
    with db_engine.begin() as conn:
        assert should_defer(conn, 10) is True  # empty table
        assert should_defer(conn, 9) is False  # under the floor
    import_csv(db_engine, _csv(tmp_path, 30), "leads", tz=timezone.utc)
    with db_engine.begin() as conn:
        source_id = create_source(conn, "other", "csv").id
        leads_id = conn.execute(text("SELECT id FROM data_sources WHERE name = 'leads'")).scalar_one()
        assert should_defer(conn, 30, leads_id) is False  # a re-import: all 30 are known to the source
        assert should_defer(conn, 45, leads_id) is False  # 15 new against 30 customers
        assert should_defer(conn, 29, source_id) is False  # fewer than the table holds
        assert should_defer(conn, 30, source_id) is True


def test_indexes_are_dropped_inside_and_rebuilt_after_even_on_failure(db_engine: Engine, monkeypatch) -> None:
    monkeypatch.setattr(deferral, "BULK_MIN_ROWS", 1)
    with bulk_load(db_engine, 5) as load:
        assert load.deferred is True
        with db_engine.connect() as conn:
            assert sorted(missing_deferred(conn)) == everything_deferred(db_engine)
    with db_engine.connect() as conn:
        assert missing_deferred(conn) == []
    with pytest.raises(RuntimeError), bulk_load(db_engine, 5):
        raise RuntimeError("the import failed")
    with db_engine.connect() as conn:
        assert missing_deferred(conn) == []


def test_restore_rebuilds_what_a_killed_import_left_out(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        conn.execute(DropIndex(METRIC_INDEXES[1]))
        assert missing_deferred(conn) == [METRIC_INDEXES[1].name]
    assert restore_deferred(db_engine) == [METRIC_INDEXES[1].name]
    assert restore_deferred(db_engine) == []


def test_init_rebuilds_and_says_so(db_engine: Engine, db_url: str) -> None:
    with db_engine.begin() as conn:
        conn.execute(DropIndex(METRIC_INDEXES[0]))
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "PYTHONPATH": ROOT, "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "funnelsync", "init"], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "Rebuilt 1 index(es) or foreign key(s)" in result.stdout and METRIC_INDEXES[0].name in result.stdout
    with db_engine.connect() as conn:
        assert missing_deferred(conn) == []


def test_a_deferred_import_lands_every_row_and_the_same_metrics(db_engine: Engine, monkeypatch, tmp_path: Path) -> None:
    """The same file imported with and without deferral gives the same customers and funnel."""
    monkeypatch.setattr(deferral, "BULK_MIN_ROWS", 50)
    path = _csv(tmp_path, 120)
    summary = import_csv(db_engine, path, "leads", tz=timezone.utc, batch_size=25)
    assert (summary.created, summary.rejected) == (120, 0)
    with db_engine.connect() as conn:
        assert missing_deferred(conn) == []
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 120
        deferred = funnel_series(conn, date(2024, 1, 1), date(2024, 12, 31), "month", tz=ZoneInfo("UTC"))
    monkeypatch.setattr(deferral, "BULK_MIN_ROWS", 10**9)
    again = import_csv(
        db_engine, _csv(tmp_path, 120, "copy.csv", "example.org"), "leads-copy", tz=timezone.utc, batch_size=25
    )
    assert again.created == 120
    with db_engine.connect() as conn:
        both = funnel_series(conn, date(2024, 1, 1), date(2024, 12, 31), "month", tz=ZoneInfo("UTC"))
    for got, twice in zip(deferred, both):
        assert twice["leads"] == 2 * got["leads"] and twice["leads_with_trial"] == 2 * got["leads_with_trial"]
    assert sum(row["leads"] for row in deferred) == 120


def _records(start: int, n: int) -> list[SourceCustomerRecord]:
    return [
        SourceCustomerRecord(
            external_id=f"x{i}",
            name=f"P {i}",
            email=f"p{i}@example.com",
            lead_created_at=datetime(2024, 1, 1 + i % 28, tzinfo=timezone.utc),
            subscriptions=[
                SubscriptionFact(f"sub{i}", "trialing", trial_started_at=datetime(2024, 2, 1, tzinfo=timezone.utc))
            ],
        )
        for i in range(start, start + n)
    ]


def test_a_load_of_unknown_size_defers_once_it_has_doubled_the_table(db_engine: Engine, monkeypatch) -> None:
    """A sync does not know its size: it defers after writing max(BULK_MIN_ROWS, table size) new records."""
    monkeypatch.setattr(deferral, "BULK_MIN_ROWS", 10)
    with db_engine.begin() as conn:
        source_id = create_source(conn, "stream", "csv").id
        upsert_records(conn, source_id, _records(0, 12))  # 12 customers before the load
    with bulk_load(db_engine, data_source_id=source_id) as load:
        for start in (12, 18, 24):
            with db_engine.begin() as conn:
                created = upsert_records(conn, source_id, _records(start, 6)).created
            load.written(created)
            with db_engine.connect() as conn:
                missing = sorted(missing_deferred(conn))
            # 6 new records: not yet; 12 (what the table held at the start): deferred from here on.
            assert (missing == everything_deferred(db_engine)) is (start >= 18) and load.deferred is (start >= 18)
        with db_engine.begin() as conn:  # written while deferred: foreign keys and indexes come back valid
            upsert_records(conn, source_id, _records(30, 5))
    with db_engine.connect() as conn:
        assert missing_deferred(conn) == []
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 35


def test_the_sync_engine_defers_and_restores(db_engine: Engine, monkeypatch) -> None:
    import respx

    from fakes.recurly import RecurlyFake
    from jobs.sync import sync_stream

    monkeypatch.setattr(deferral, "BULK_MIN_ROWS", 10)
    drops: list[int] = []
    real_drop = deferral._drop
    monkeypatch.setattr(deferral, "_drop", lambda engine, also=(): (drops.append(1), real_drop(engine, also)))
    fake = RecurlyFake(n=30, page_size=5)
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        with db_engine.begin() as conn:
            create_source(conn, "rec", "recurly", fake.settings())
        summary = sync_stream(db_engine, "rec", "accounts", sleep_fn=lambda s: None)
    assert summary.created == 30 and drops == [1]
    with db_engine.connect() as conn:
        assert missing_deferred(conn) == []


@pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)
def test_foreign_keys_come_back_after_a_kill_and_an_orphan_keeps_one_not_valid(db_engine: Engine, caplog) -> None:
    sc_fk = _fk_name(DEFERRED_FOREIGN_KEYS[0])  # source_customers.customer_id -> customers
    with db_engine.begin() as conn:
        source_id = create_source(conn, "s", "csv").id
        upsert_records(conn, source_id, _records(0, 3))
        conn.execute(text(f"ALTER TABLE source_customers DROP CONSTRAINT {sc_fk}"))
        assert missing_deferred(conn) == [sc_fk]
    assert restore_deferred(db_engine) == [sc_fk]  # what a killed load leaves: re-added and validated
    with db_engine.connect() as conn:
        assert missing_deferred(conn) == []
    with db_engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE source_customers DROP CONSTRAINT {sc_fk}"))
        # What only a concurrent delete could cause while the key was off: a row without its customer.
        conn.execute(text("DELETE FROM customers WHERE id = (SELECT min(customer_id) FROM source_customers)"))
    with caplog.at_level("WARNING", logger="storage.bulk_load"):
        assert restore_deferred(db_engine) == [sc_fk]
    assert f"foreign key {sc_fk} on source_customers left NOT VALID" in caplog.text
    with db_engine.connect() as conn:
        assert missing_deferred(conn) == [sc_fk]  # reported again until the orphan is dealt with
        with pytest.raises(IntegrityError):  # but enforced on new rows
            conn.execute(
                text("UPDATE source_customers SET customer_id = -1 WHERE id = (SELECT max(id) FROM source_customers)")
            )


def test_a_fresh_load_raced_by_another_writer_updates_its_records_instead_of_duplicating(db_engine: Engine) -> None:
    """A fresh load skips the lookup; records another writer added meanwhile are still found and updated.

    PostgreSQL: the plain COPY fails on the unique key and the batch runs again with the lookup. SQLite:
    the highest source customer id is no longer the one the load saw, so the batch looks them up.
    """
    with db_engine.begin() as conn:
        source_id = create_source(conn, "s", "csv").id
        fresh = fresh_load(conn, source_id)
    assert fresh is not None
    with db_engine.begin() as conn:  # the other writer
        upsert_records(conn, source_id, _records(0, 60))
    changed = _records(0, 60)
    for record in changed:
        record.name = "Renamed"
    with db_engine.begin() as conn:
        result = upsert_records(conn, source_id, [*changed, *_records(60, 5)], fresh=fresh)
    assert (result.created, result.updated, result.unchanged) == (5, 60, 0)
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 65
        # no customer was left without its source customer by the failed first attempt
        assert conn.execute(text("SELECT count(*) FROM customers c WHERE NOT EXISTS "
                                 "(SELECT 1 FROM source_customers s WHERE s.customer_id = c.id)")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM customers WHERE name = 'Renamed'")).scalar_one() == 60
        assert fresh_load(conn, source_id) is None  # the source holds records now


def test_a_fresh_load_on_sqlite_looks_up_only_after_another_writer_wrote(sqlite_engine: Engine, monkeypatch) -> None:
    import storage.upsert as upsert

    lookups: list[int] = []
    real_lookup = upsert._existing_source_customers
    monkeypatch.setattr(upsert, "_existing_source_customers", lambda conn, source_id, latest, *rest: (
        lookups.append(len(latest)), real_lookup(conn, source_id, latest, *rest))[1])
    with sqlite_engine.begin() as conn:
        source_id = create_source(conn, "s", "csv").id
        other_id = create_source(conn, "other", "csv").id
        fresh = fresh_load(conn, source_id)
    assert fresh is not None
    for start in (0, 10):
        with sqlite_engine.begin() as conn:
            assert upsert_records(conn, source_id, _records(start, 10), fresh=fresh).created == 10
    assert lookups == []  # only this load wrote: nothing to look up
    with sqlite_engine.begin() as conn:  # another writer, into another source even
        upsert_records(conn, other_id, _records(0, 3))
    lookups.clear()
    with sqlite_engine.begin() as conn:
        assert upsert_records(conn, source_id, _records(20, 10), fresh=fresh).created == 10
    assert lookups == [10]
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 33


def test_sqlite_upsert_waits_for_a_concurrent_writer_before_looking_up(sqlite_engine: Engine) -> None:
    """A batch reads which records exist only once it holds the write lock.

    Python's sqlite3 opens a transaction at the first write; the lookup before it saw the database
    without the other writer's uncommitted record, and the batch created a second customer for it.
    """
    with sqlite_engine.begin() as conn:
        source_id = create_source(conn, "s", "csv").id
    record = _records(0, 1)
    other = sqlite_engine.connect()
    other_tx = other.begin()
    upsert_records(other, source_id, record)  # holds the write lock, not committed yet
    outcome: list[Any] = []

    def upsert_beside() -> None:
        try:
            with sqlite_engine.begin() as conn:
                outcome.append(upsert_records(conn, source_id, _records(0, 1)))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome.append(exc)

    beside = threading.Thread(target=upsert_beside)
    beside.start()
    time.sleep(0.5)  # it is now waiting for the lock (busy timeout 30 s)
    other_tx.commit()
    other.close()
    beside.join(timeout=30)
    assert len(outcome) == 1 and not isinstance(outcome[0], BaseException), outcome
    assert (outcome[0].created, outcome[0].unchanged) == (0, 1)
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 1


def test_an_import_into_an_empty_source_also_defers_the_source_email_index(db_engine: Engine, monkeypatch,
                                                                            tmp_path: Path) -> None:
    monkeypatch.setattr(deferral, "BULK_MIN_ROWS", 10)
    dropped: list[tuple[str, ...]] = []
    real_drop = deferral._drop
    monkeypatch.setattr(deferral, "_drop", lambda engine, also=(): (
        dropped.append(tuple(str(index.name) for index in also)), real_drop(engine, also)))
    import_csv(db_engine, _csv(tmp_path, 30), "leads", tz=timezone.utc)
    # Same rows keyed by email only, into the source that now holds them: it matches by that index.
    lines = ["Name,Email"] + [f"Person {i},p{i}@example.com" for i in range(60)]
    (tmp_path / "by_email.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = import_csv(db_engine, tmp_path / "by_email.csv", "leads", tz=timezone.utc)
    # Both imports deferred; only the first, into an empty source, dropped the source email index too.
    assert dropped == [("ix_source_customers_email_norm_data_source_id",), ()]
    # The 30 known emails come with the names they have: the file changes nothing of theirs.
    assert (summary.created, summary.updated, summary.unchanged) == (30, 0, 30)
    with db_engine.connect() as conn:
        assert missing_deferred(conn) == []
