"""merge-duplicates: runs on the real Prefect test server, merges in the database, reports and emits."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, func, select

from flows.merge import merge_duplicates_flow
from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from storage.schema import customers, merge_events
from storage.sources import create_source
from storage.upsert import upsert_records
from tests.flow_support import artifact, run_id, wait_events

T0 = datetime(2025, 2, 3, tzinfo=UTC)


def _seed(engine: Engine, tag: str) -> None:
    with engine.begin() as conn:
        leads = create_source(conn, "leads-csv", "csv")
        billing = create_source(conn, "billing", "stripe")
        upsert_records(
            conn, leads.id, [SourceCustomerRecord(f"L-{tag}", email=f"Jane.{tag}@Acme.io", lead_created_at=T0)]
        )
        upsert_records(
            conn,
            billing.id,
            [
                SourceCustomerRecord(
                    f"cus_{tag}",
                    email=f"jane.{tag}@acme.io",
                    name="Jane",
                    subscriptions=[SubscriptionFact("sub_1", "active", first_paid_at=T0.replace(day=20))],
                )
            ],
        )


def test_merge_duplicates_dry_run_then_merge(db_engine: Engine, flow_db: str) -> None:
    tag = db_engine.dialect.name
    _seed(db_engine, tag)

    dry = merge_duplicates_flow(dry_run=True, return_state=True)
    assert dry.is_completed()
    summary = dry.result()
    assert summary["group_count"] == 1 and summary["merged_customers"] == 0
    table = artifact(run_id(dry), "table", "merge-duplicates")
    assert "Dry run: 1 duplicate groups" in table.description
    assert f"email: jane.{tag}@acme.io" in table.data
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 2

    state = merge_duplicates_flow(return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["merged_customers"] == 1
    with db_engine.connect() as conn:
        survivor = conn.execute(select(customers)).mappings().one()
        assert conn.execute(select(merge_events.c.rule)).scalar_one() == "email"
    # The subscriber survives and gains the lead's date (SPEC 4).
    assert survivor["lead_created_at"] == T0 and survivor["subscriber_since"] is not None

    merged = wait_events("funnelsync.customer.merged", f"funnelsync.customer.{survivor['uuid']}")
    assert len(merged) == 1
    assert merged[0].payload["rule"] == "email"
    assert merged[0].related[0].id.startswith("funnelsync.customer.cus_")
