"""Batched upsert: counts, idempotence, unchanged rows not rewritten, partial reports, migrations."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from funnelsync.records import ContactRecord, SourceCustomerRecord, SubscriptionFact
from storage.db import current_revision, head_revision, upgrade
from storage.schema import contacts, customers, source_customers, subscriptions
from storage.sources import create_source
from storage.sync_state import load_cursor, save_cursor
from storage.upsert import upsert_records

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def _records(n, name="N", offset=0):
    return [
        SourceCustomerRecord(
            external_id=f"c{i}", name=f"{name}{i}", email=f"u{i}@example.com",
            lead_created_at=T0 + timedelta(hours=i), tags=["t"], custom={"seats": i},
            subscriptions=[SubscriptionFact(f"s{i}", "trialing", trial_started_at=T0)] if i % 2 else None,
            contacts=[ContactRecord(email=f"p{i}@example.com", first_name="P")] if i % 3 == 0 else None,
        )
        for i in range(offset, offset + n)
    ]


def test_init_twice_is_safe(db_engine):
    upgrade(db_engine)
    upgrade(db_engine)
    assert current_revision(db_engine) == head_revision()


def test_counts_created_updated_unchanged(db_engine):
    with db_engine.begin() as conn:
        ds = create_source(conn, "src", "csv")
        first = upsert_records(conn, ds.id, _records(50))
    assert (first.created, first.updated, first.unchanged) == (50, 0, 0)
    with db_engine.connect() as conn:
        stamps = dict(conn.execute(select(source_customers.c.external_id, source_customers.c.updated_at)).all())
    with db_engine.begin() as conn:
        again = upsert_records(conn, ds.id, _records(50), now=T0 + timedelta(days=400))
    assert (again.created, again.updated, again.unchanged) == (0, 0, 50)
    with db_engine.connect() as conn:
        # An unchanged record is not rewritten: its updated_at did not move.
        assert dict(conn.execute(select(source_customers.c.external_id, source_customers.c.updated_at)).all()) == stamps
    changed = _records(50)
    changed[7].name = "Renamed"
    changed[8].subscriptions = [SubscriptionFact("s8", "active", first_paid_at=T0 + timedelta(days=3))]
    with db_engine.begin() as conn:
        mixed = upsert_records(conn, ds.id, changed + _records(5, offset=50))
    assert (mixed.created, mixed.updated, mixed.unchanged) == (5, 2, 48)
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar() == 55
        assert conn.execute(select(customers.c.name).where(customers.c.name == "Renamed")).scalar() == "Renamed"
        assert conn.execute(select(customers.c.status).where(customers.c.name == "N8")).scalar() == "Active"


def test_none_keeps_stored_subscriptions_and_contacts(db_engine):
    with db_engine.begin() as conn:
        ds = create_source(conn, "src", "stripe")
        upsert_records(conn, ds.id, _records(6))
        n_subs = conn.execute(select(func.count()).select_from(subscriptions)).scalar()
        n_contacts = conn.execute(select(func.count()).select_from(contacts)).scalar()
        assert (n_subs, n_contacts) == (3, 2)
        bare = [SourceCustomerRecord(external_id=r.external_id, name=r.name, email=r.email,
                                     lead_created_at=r.lead_created_at, tags=r.tags, custom=r.custom)
                for r in _records(6)]
        result = upsert_records(conn, ds.id, bare)
        # Profile unchanged, subscriptions/contacts not reported: nothing to write.
        assert (result.updated, result.unchanged) == (0, 6)
        emptied = upsert_records(conn, ds.id, [SourceCustomerRecord(
            external_id="c1", name="N1", email="u1@example.com", lead_created_at=T0 + timedelta(hours=1),
            tags=["t"], custom={"seats": 1}, subscriptions=[])])
        assert emptied.updated == 1
        assert conn.execute(select(func.count()).select_from(subscriptions)).scalar() == 2


def test_duplicate_keys_in_a_batch_keep_the_last(db_engine):
    with db_engine.begin() as conn:
        ds = create_source(conn, "src", "csv")
        result = upsert_records(conn, ds.id, [SourceCustomerRecord("k", name="first"),
                                              SourceCustomerRecord("k", name="last")])
        assert result.created == 1
        assert conn.execute(select(customers.c.name)).scalar() == "last"


def test_a_subscription_reported_twice_with_and_without_a_date(db_engine):
    """Two facts with one id, one paid and one not: the last is stored, and the fingerprint is stable."""
    def record():
        return SourceCustomerRecord("k", name="K", subscriptions=[
            SubscriptionFact("s", "trialing"), SubscriptionFact("s", "trialing", first_paid_at=T0)])

    with db_engine.begin() as conn:
        ds = create_source(conn, "src", "stripe")
        assert upsert_records(conn, ds.id, [record()]).created == 1
        assert upsert_records(conn, ds.id, [record()]).unchanged == 1
        assert conn.execute(select(subscriptions.c.first_paid_at)).scalar() == T0


def test_records_prepared_for_another_database_are_refused(db_engine):
    from storage.row_values import prepare_records
    from storage.upsert import upsert_prepared

    other = db_engine.dialect.name != "sqlite"
    with db_engine.begin() as conn:
        ds = create_source(conn, "src", "csv")
        with pytest.raises(ValueError, match="prepared for another database"):
            upsert_prepared(conn, ds.id, prepare_records(_records(2), sqlite=other))
        prepared = prepare_records(_records(4), sqlite=not other)
        assert upsert_prepared(conn, ds.id, prepared).created == 4
        # Prepared eagerly or lazily, the same records are the same rows: nothing changes.
        lazy = prepare_records(_records(4), sqlite=not other, eager=False)
        assert upsert_prepared(conn, ds.id, lazy).unchanged == 4


def test_failed_batch_writes_nothing(db_engine):
    with db_engine.begin() as conn:
        ds = create_source(conn, "src", "csv")
    with pytest.raises(RuntimeError, match="killed"), db_engine.begin() as conn:
        upsert_records(conn, ds.id, _records(10))
        save_cursor(conn, ds.id, "customers", {"after": "c9"})
        raise RuntimeError("killed mid-batch")
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(source_customers)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(customers)).scalar() == 0
        assert load_cursor(conn, ds.id, "customers") is None


def test_cursor_roundtrip(db_engine):
    with db_engine.begin() as conn:
        ds = create_source(conn, "src", "stripe")
        save_cursor(conn, ds.id, "customers", {"starting_after": "cus_1"}, {"fetched": 1})
        save_cursor(conn, ds.id, "customers", {"starting_after": "cus_2"}, success=True)
        assert load_cursor(conn, ds.id, "customers") == {"starting_after": "cus_2"}


def test_migrations_build_exactly_the_declared_schema(db_engine):
    """Alembic's newest revision and storage/schema.py describe the same tables, columns and indexes."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from storage.schema import metadata

    with db_engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


@pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)
def test_a_key_another_writer_inserted_meanwhile_becomes_an_update(db_engine, monkeypatch):
    """PostgreSQL COPYs records the lookup found absent; if another writer inserted one of them in between,
    the batch runs again from its savepoint and updates it: no error, no duplicate, no orphan customer."""
    import storage.upsert as upsert_module

    with db_engine.begin() as conn:
        ds = create_source(conn, "src", "stripe")
        upsert_records(conn, ds.id, _records(60, "Old"))
    real_lookup = upsert_module._existing_source_customers
    calls = []

    def stale_lookup(*args, **kwargs):  # the first lookup misses what "the other writer" just wrote
        calls.append(1)
        return {} if len(calls) == 1 else real_lookup(*args, **kwargs)

    monkeypatch.setattr(upsert_module, "_existing_source_customers", stale_lookup)
    with db_engine.begin() as conn:
        result = upsert_records(conn, ds.id, _records(80, "New"))
    assert len(calls) == 2
    assert (result.created, result.updated, result.unchanged) == (20, 60, 0)
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(source_customers)).scalar_one() == 80
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 80
        names = {row.name for row in conn.execute(select(customers.c.name))}
        assert names == {f"New{i}" for i in range(80)}
