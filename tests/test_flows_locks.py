"""The per-source database lock and the lifecycle change detection (no Prefect needed)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select, update

from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from storage.lifecycle import collect_lifecycle_changes
from storage.locks import LockBusy, heartbeat, hold_lock, lock_holder, release, try_acquire
from storage.schema import customers, source_locks
from storage.sources import create_source
from storage.upsert import upsert_records

T0 = datetime(2025, 1, 10, 9, 0, tzinfo=UTC)


def test_lock_is_exclusive_and_released(db_engine: Engine) -> None:
    assert try_acquire(db_engine, "sync:ds_1", "run A")
    assert not try_acquire(db_engine, "sync:ds_1", "run B")
    assert try_acquire(db_engine, "sync:ds_1", "run A")  # re-entrant for its owner
    assert try_acquire(db_engine, "sync:ds_2", "run B")  # another source is independent
    holder = lock_holder(db_engine, "sync:ds_1")
    assert holder is not None and holder.owner == "run A"
    release(db_engine, "sync:ds_1", "run B")  # not B's: nothing happens
    assert lock_holder(db_engine, "sync:ds_1") is not None
    release(db_engine, "sync:ds_1", "run A")
    assert lock_holder(db_engine, "sync:ds_1") is None
    assert try_acquire(db_engine, "sync:ds_1", "run B")


def test_expired_lock_is_taken_over_and_old_owner_loses_it(db_engine: Engine) -> None:
    assert try_acquire(db_engine, "sync:ds_1", "crashed run")
    with db_engine.begin() as conn:
        conn.execute(update(source_locks).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert lock_holder(db_engine, "sync:ds_1") is None
    assert try_acquire(db_engine, "sync:ds_1", "new run")
    assert not heartbeat(db_engine, "sync:ds_1", "crashed run")
    assert heartbeat(db_engine, "sync:ds_1", "new run")


def test_hold_lock_busy_message_and_bounded_wait(db_engine: Engine) -> None:
    with hold_lock(db_engine, "sync:ds_1", "flow run first-run"):
        started = time.monotonic()
        with pytest.raises(LockBusy) as info:
            with hold_lock(db_engine, "sync:ds_1", "flow run second-run", wait_seconds=1.0, poll_seconds=0.2):
                pytest.fail("the second holder must not get in")
        assert 0.9 <= time.monotonic() - started < 10
        assert "held by flow run first-run" in str(info.value)
    with db_engine.connect() as conn:
        assert conn.execute(select(source_locks)).first() is None


def test_waiting_holder_gets_the_lock_when_it_frees(db_engine: Engine) -> None:
    order: list[str] = []
    inside = threading.Event()

    def first() -> None:
        with hold_lock(db_engine, "sync:ds_1", "first"):
            order.append("first in")
            inside.set()
            time.sleep(1.0)
            order.append("first out")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(10)
    with hold_lock(db_engine, "sync:ds_1", "second", wait_seconds=20, poll_seconds=0.1):
        order.append("second in")
    thread.join()
    assert order == ["first in", "first out", "second in"]


def test_heartbeat_keeps_a_short_lock_alive(db_engine: Engine) -> None:
    with hold_lock(db_engine, "sync:ds_1", "long run", ttl_seconds=0.6):
        time.sleep(1.5)  # more than twice the TTL: only the heartbeat keeps it
        assert not try_acquire(db_engine, "sync:ds_1", "intruder", ttl_seconds=0.6)


def _record(ext: str, **kw: object) -> SourceCustomerRecord:
    return SourceCustomerRecord(external_id=ext, email=f"{ext}@example.com", name=ext.title(), **kw)  # type: ignore[arg-type]


def test_lifecycle_changes_announced_once(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        src = create_source(conn, "billing", "stripe")
        res = upsert_records(
            conn,
            src.id,
            [
                _record("lead", lead_created_at=T0),
                _record(
                    "trial",
                    lead_created_at=T0,
                    free_trial_started_at=T0,
                    subscriptions=[SubscriptionFact("sub_1", "trialing", trial_started_at=T0)],
                ),
                _record("blank"),
            ],
        )
        first = collect_lifecycle_changes(conn, {*res.touched_customer_ids, *res.created_customer_ids}).changes
    kinds = sorted((c.kind, c.email) for c in first)
    assert kinds == [
        ("lead_created", "lead@example.com"),
        ("lead_created", "trial@example.com"),
        ("trial_started", "trial@example.com"),
    ]
    uuids = {c.email: c.customer_uuid for c in first}
    with db_engine.connect() as conn:
        assert (
            conn.execute(select(customers.c.uuid).where(customers.c.email == "trial@example.com")).scalar_one()
            == uuids["trial@example.com"]
        )

    since = datetime.now(UTC)
    with db_engine.begin() as conn:
        # Nothing new: re-checking announces nothing.
        assert collect_lifecycle_changes(conn, res.created_customer_ids).counts == {}
        # The trial converts: one "converted", nothing else.
        upsert_records(
            conn,
            src.id,
            [
                _record(
                    "trial",
                    lead_created_at=T0,
                    free_trial_started_at=T0,
                    subscriptions=[
                        SubscriptionFact("sub_1", "active", trial_started_at=T0, first_paid_at=T0 + timedelta(days=14))
                    ],
                )
            ],
        )
        second = collect_lifecycle_changes(conn, updated_since=since).changes
    assert [(c.kind, c.email, c.at) for c in second] == [("converted", "trial@example.com", T0 + timedelta(days=14))]


def test_lifecycle_counts_everything_but_itemises_only_keep(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        src = create_source(conn, "big", "stripe")
        res = upsert_records(
            conn, src.id, [_record(f"c{i}", lead_created_at=T0, free_trial_started_at=T0) for i in range(30)]
        )
        report = collect_lifecycle_changes(conn, res.created_customer_ids, keep=5)
        assert report.counts == {"lead_created": 30, "trial_started": 30}
        assert len(report.changes) == 5
        # Every one was marked, itemised or not: nothing is announced twice.
        assert collect_lifecycle_changes(conn, res.created_customer_ids).counts == {}


def test_steps_a_killed_run_never_announced_are_announced_by_the_next_run(db_engine: Engine) -> None:
    """A run killed after its writes committed but before it announced them leaves customers whose rows the
    rerun finds unchanged (so not updated since the rerun began); the rerun still announces their steps,
    once, and a customer that was announced is not announced again."""
    with db_engine.begin() as conn:
        src = create_source(conn, "billing", "stripe")
        upsert_records(conn, src.id, [_record("early", lead_created_at=T0)])
        collect_lifecycle_changes(conn, updated_since=datetime.now(UTC))
        # The killed run: its writes committed, its announcement never ran.
        upsert_records(conn, src.id, [_record("killed", lead_created_at=T0, free_trial_started_at=T0)])
    rerun_started = datetime.now(UTC)
    with db_engine.begin() as conn:
        found = collect_lifecycle_changes(conn, updated_since=rerun_started)
    assert sorted((c.kind, c.email) for c in found.changes) == [
        ("lead_created", "killed@example.com"),
        ("trial_started", "killed@example.com"),
    ]
    with db_engine.begin() as conn:
        assert collect_lifecycle_changes(conn, updated_since=datetime.now(UTC)).counts == {}
