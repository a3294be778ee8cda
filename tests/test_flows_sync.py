"""sync-source and sync-all on the real Prefect test server, real connectors and a local vendor API server.

The vendor APIs are ``fakes.demo.FakeVendorServer``: real HTTP on 127.0.0.1 with Stripe's and
Chargebee's paging, auth and field names.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from fakes.demo import STRIPE_KEY, FakeVendorServer, population
from flows.sync import sync_all_flow, sync_source_flow
from storage.schema import customers, data_sources, source_customers, source_locks
from storage.sources import create_source
from tests.flow_support import artifact, artifacts_of, run_id, wait_events


@pytest.fixture
def vendor() -> Iterator[FakeVendorServer]:
    with FakeVendorServer(population(12, seed=3), population(8, seed=4, prefix="cb_")) as server:
        yield server


def _count(engine: Engine, table: Any, **where: Any) -> int:
    query = select(func.count()).select_from(table)
    for column, value in where.items():
        query = query.where(getattr(table.c, column) == value)
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def _add(engine: Engine, name: str, kind: str, settings: dict[str, Any]) -> None:
    with engine.begin() as conn:
        create_source(conn, name, kind, settings)


def _task_runs(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def test_sync_source_lands_data_reports_and_emits(db_engine: Engine, flow_db: str, vendor: FakeVendorServer) -> None:
    _add(db_engine, "stripe-live", "stripe", {**vendor.stripe_settings(), "page_size": 5})
    state = sync_source_flow("stripe-live", return_state=True)
    assert state.is_completed() and state.name == "Completed", state.message
    summary = state.result()
    assert summary["totals"]["fetched"] == 12 and summary["totals"]["created"] == 12
    assert _count(db_engine, customers) == 12
    assert summary["merge"]["group_count"] == 0  # the merge step ran after the sync

    table = artifact(run_id(state), "table", "sync-stripe-live")
    rows = {row["stream"]: row for row in __import__("json").loads(table.data)}
    assert rows["customers"]["fetched"] == 12 and rows["customers"]["created"] == 12
    assert set(rows["customers"]) == {"stream", "fetched", "created", "updated", "unchanged", "rejected", "duration_s"}
    progress = artifact(run_id(state), "progress", "sync-stripe-live-progress")
    assert progress.data == 100.0 and "12 records fetched" in progress.description

    # Lifecycle events, per customer, with the customer as resource (12 leads, 9 trials, 6 converted).
    with db_engine.connect() as conn:
        converted = conn.execute(
            select(customers.c.uuid).where(customers.c.subscriber_since.is_not(None)).order_by(customers.c.id)
        ).scalars().all()
    assert len(converted) == 6
    events = wait_events("funnelsync.customer.converted", f"funnelsync.customer.{converted[0]}")
    assert len(events) == 1 and events[0].related[0].name == "stripe-live"
    assert wait_events("funnelsync.customer.lead-created", f"funnelsync.customer.{converted[0]}")

    # Re-running changes nothing and announces nothing new.
    again = sync_source_flow("stripe-live", return_state=True)
    assert again.is_completed()
    assert again.result()["totals"]["created"] == 0 and again.result()["lifecycle"] == {}


def test_second_concurrent_sync_of_a_source_is_skipped(
    db_engine: Engine, flow_db: str, vendor: FakeVendorServer
) -> None:
    _add(db_engine, "slow-billing", "stripe", {**vendor.stripe_settings(), "page_size": 3, "concurrency": 1})
    vendor.delay_seconds = 0.15  # ~30 requests: the first sync stays busy for seconds
    results: dict[str, Any] = {}
    first = threading.Thread(
        target=lambda: results.setdefault("first", sync_source_flow("slow-billing", return_state=True))
    )
    first.start()
    deadline = time.monotonic() + 60
    while _count(db_engine, source_locks) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _count(db_engine, source_locks) == 1, "the first sync never took its lock"
    second = sync_source_flow("slow-billing", return_state=True)
    assert second.is_completed() and second.name == "Skipped"
    assert "sync of slow-billing skipped: it is already running" in second.message
    assert "source slow-billing is being synced by flow run" in second.message
    first.join(120)
    assert results["first"].is_completed() and results["first"].name == "Completed"
    assert _count(db_engine, customers) == 12 and _count(db_engine, source_locks) == 0


def test_waiting_sync_runs_after_the_first(db_engine: Engine, flow_db: str, vendor: FakeVendorServer) -> None:
    _add(db_engine, "queued", "stripe", {**vendor.stripe_settings(), "page_size": 3, "concurrency": 1})
    vendor.delay_seconds = 0.1
    results: dict[str, Any] = {}
    first = threading.Thread(target=lambda: results.setdefault("first", sync_source_flow("queued", return_state=True)))
    first.start()
    while _count(db_engine, source_locks) == 0 and first.is_alive():
        time.sleep(0.05)
    second = sync_source_flow("queued", lock_wait_seconds=120, return_state=True)
    first.join(120)
    assert results["first"].result()["totals"]["created"] == 12
    # It ran only once the first had committed everything: nothing left for it to create.
    assert second.is_completed() and second.name == "Completed"
    assert second.result()["totals"]["created"] == 0


def test_503_is_retried_by_prefect_and_the_flow_completes(
    db_engine: Engine, flow_db: str, vendor: FakeVendorServer
) -> None:
    _add(db_engine, "flaky", "stripe", vendor.stripe_settings())
    # The connector's own HTTP client tries 5 times; 5 × 503 exhausts it, so the task fails once.
    vendor.fail_next("/v1/customers", [503] * 5)
    state = sync_source_flow("flaky", merge_after=False, return_state=True)
    assert state.is_completed(), state.message
    assert _count(db_engine, customers) == 12
    (task_run,) = [t for t in _task_runs(run_id(state)) if t.name.startswith("sync flaky")]
    assert task_run.run_count == 2


def test_bad_credentials_fail_at_once_with_the_message(
    db_engine: Engine, flow_db: str, vendor: FakeVendorServer
) -> None:
    wrong = "sk_test_WRONG_key_0000"
    _add(db_engine, "bad-key", "stripe", vendor.stripe_settings(api_key=wrong))
    state = sync_source_flow("bad-key", return_state=True)
    assert state.is_failed()
    assert "CredentialsError" in state.message and "api_key" in state.message
    assert wrong not in state.message
    (task_run,) = [t for t in _task_runs(run_id(state)) if t.name.startswith("sync bad-key")]
    assert task_run.run_count == 1  # not retried
    assert _count(db_engine, customers) == 0 and _count(db_engine, source_locks) == 0


def test_credentials_from_prefect_secret_block_and_env(
    db_engine: Engine, flow_db: str, vendor: FakeVendorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.blocks.system import Secret

    Secret(value=STRIPE_KEY).save(f"stripe-key-{db_engine.dialect.name}", overwrite=True)
    monkeypatch.setenv("CHARGEBEE_TEST_KEY", vendor.chargebee_settings()["api_key"])
    _add(
        db_engine,
        "stripe-blocked",
        "stripe",
        {**vendor.stripe_settings(), "api_key": f"prefect-secret:stripe-key-{db_engine.dialect.name}"},
    )
    _add(db_engine, "chargebee-env", "chargebee", {**vendor.chargebee_settings(), "api_key": "env:CHARGEBEE_TEST_KEY"})
    _add(db_engine, "leads-file", "csv", {})  # not pulled: sync-all leaves it alone
    state = sync_all_flow(return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert sorted(s["source"] for s in result["sources"]) == ["chargebee-env", "stripe-blocked"]
    assert _count(db_engine, customers) == 20
    table = artifact(run_id(state), "table", "sync-all")
    assert "chargebee-env" in table.data and "stripe-blocked" in table.data
    keys = {a.key for a in artifacts_of(run_id(state))}
    assert {"sync-stripe-blocked", "sync-chargebee-env", "sync-all", "merge-duplicates"} <= keys
    with db_engine.connect() as conn:
        stored = conn.execute(select(data_sources.c.settings)).scalars().all()
    assert all(STRIPE_KEY not in str(s) for s in stored)


def test_sync_all_reports_a_failed_source_and_syncs_the_others(
    db_engine: Engine, flow_db: str, vendor: FakeVendorServer
) -> None:
    _add(db_engine, "good", "chargebee", vendor.chargebee_settings())
    _add(db_engine, "broken", "stripe", vendor.stripe_settings(api_key="sk_test_nope"))
    _add(db_engine, "sheet-leads", "google_sheets", {})  # routed to the sheet import, never set up
    state = sync_all_flow(return_state=True)
    assert state.is_failed()
    assert "2 of 3 sources failed:" in state.message
    assert "broken (CredentialsError" in state.message
    assert "sheet-leads (ValueError: 'sheet-leads' is not a Google Sheets source" in state.message
    assert _count(db_engine, source_customers) == 8


def test_sync_source_of_a_sheet_goes_through_the_sheet_import(db_engine: Engine, flow_db: str) -> None:
    _add(db_engine, "sheet-only", "google_sheets", {})
    state = sync_source_flow("sheet-only", return_state=True)
    assert state.is_failed()
    assert "'sheet-only' is not a Google Sheets source: run `funnelsync import sheet` once first" in state.message


def test_unknown_source_fails_with_the_known_names(db_engine: Engine, flow_db: str, vendor: FakeVendorServer) -> None:
    _add(db_engine, "billing", "stripe", vendor.stripe_settings())
    state = sync_source_flow("biling", return_state=True)
    assert state.is_failed()
    assert "no data source named 'biling' (known: billing)" in state.message


def test_sync_source_of_a_disabled_source_is_skipped_and_sync_all_leaves_it(
    db_engine: Engine, flow_db: str, vendor: FakeVendorServer
) -> None:
    from storage.sources import get_source, set_source_enabled

    _add(db_engine, "paused", "stripe", vendor.stripe_settings())
    _add(db_engine, "live", "chargebee", vendor.chargebee_settings())
    with db_engine.begin() as conn:
        set_source_enabled(conn, get_source(conn, "paused").id, False)
    state = sync_source_flow("paused", return_state=True)
    assert state.name == "Skipped" and "the source is disabled" in state.message
    everything = sync_all_flow(return_state=True)
    assert everything.is_completed(), everything.message
    assert [s["source"] for s in everything.result()["sources"]] == ["live"]
    assert _count(db_engine, source_customers) == 8
