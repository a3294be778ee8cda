"""import-file and refresh-metrics on the real Prefect test server; effects checked in the database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, select

from flows.imports import import_file_flow
from flows.metrics import metrics_markdown, month_bounds, refresh_metrics_flow
from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from storage.schema import customers, import_jobs
from storage.sources import create_source
from storage.upsert import upsert_records
from tests.flow_support import artifact, run_id, wait_events

CSV = """Customer ID,Full Name,E-mail,Signup Date,Trial Start
L-1,Ada Lovelace,ada@analytical.example,2025-03-02 10:00,2025-03-03 10:00
L-2,Grace Hopper,grace@cobol.example,2025-03-05,
L-3,Bad Date,bad@example.com,not a date,
"""


def test_import_file_flow_imports_reports_and_emits(db_engine: Engine, flow_db: str, tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(CSV, encoding="utf-8")
    state = import_file_flow(str(path), "Website leads", return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert (summary["created"], summary["rejected"]) == (2, 1)
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 2
        job = conn.execute(select(import_jobs)).mappings().one()
        ada = conn.execute(select(customers.c.uuid).where(customers.c.email == "ada@analytical.example")).scalar_one()
    assert (job["status"], job["created"], job["rejected"]) == ("done", 2, 1)
    row = json.loads(artifact(run_id(state), "table", "import-website-leads").data)[0]
    assert (row["created"], row["updated"], row["unchanged"], row["rejected"]) == (2, 0, 0, 1)
    progress = artifact(run_id(state), "progress", "import-website-leads-progress")
    assert progress.data == 100.0
    assert wait_events("funnelsync.customer.trial-started", f"funnelsync.customer.{ada}")

    # The same file again changes nothing.
    again = import_file_flow(str(path), "Website leads", return_state=True)
    assert again.result()["created"] == 0 and again.result()["unchanged"] == 2


def test_import_file_flow_joins_by_email_as_an_announced_merge_unless_the_email_rule_is_off(
    db_engine: Engine, flow_db: str, tmp_path: Path
) -> None:
    """A row joining a billing customer by email is a merge: in the merge log (rule email-at-import) and
    announced as ``funnelsync.customer.merged``; with ``merge_rules`` lacking ``email`` the import joins
    nothing by email."""
    from storage.customers import customer_view, resolve_customer
    from storage.merge import list_merge_events

    with db_engine.begin() as conn:
        billing = create_source(conn, "billing", "stripe")
        upsert_records(conn, billing.id, [SourceCustomerRecord("cus_1", email="ada@analytical.example")])
        (into,) = customer_view(conn, [resolve_customer(conn, "billing:cus_1")])
    path = tmp_path / "leads.csv"
    path.write_text(CSV, encoding="utf-8")
    state = import_file_flow(str(path), "Website leads", merge_after=False, return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["joined_by_email"] == 1
    with db_engine.connect() as conn:
        (event,) = list_merge_events(conn)
        assert resolve_customer(conn, "Website leads:L-1") == resolve_customer(conn, "billing:cus_1")
    assert (event.rule, event.into_customer_uuid) == ("email-at-import", into["uuid"])
    (announced,) = wait_events("funnelsync.customer.merged", f"funnelsync.customer.{into['uuid']}")
    assert announced.payload == {"rule": "email-at-import", "from": event.from_customer_uuid, "into": into["uuid"]}

    other = tmp_path / "other.csv"
    other.write_text("Customer ID,E-mail\nL-9,ada@analytical.example\n", encoding="utf-8")
    apart = import_file_flow(str(other), "Other leads", merge_rules=["external_id"], return_state=True)
    assert apart.is_completed(), apart.message
    assert apart.result()["joined_by_email"] == 0
    with db_engine.connect() as conn:
        assert resolve_customer(conn, "Other leads:L-9") != resolve_customer(conn, "billing:cus_1")


def test_refused_file_fails_at_once_with_the_reason(db_engine: Engine, flow_db: str, tmp_path: Path) -> None:
    path = tmp_path / "nothing.csv"
    path.write_text("Colour,Shape\nred,round\n", encoding="utf-8")
    state = import_file_flow(str(path), "Website leads", return_state=True)
    assert state.is_failed()
    assert "FileUnreadable" in state.message


def test_refresh_metrics_publishes_the_months_figures(db_engine: Engine, flow_db: str) -> None:
    t = lambda day: datetime(2025, 3, day, 12, tzinfo=UTC)
    with db_engine.begin() as conn:
        src = create_source(conn, "billing", "stripe")
        upsert_records(
            conn,
            src.id,
            [
                SourceCustomerRecord(
                    "a",
                    lead_created_at=t(1),
                    free_trial_started_at=t(1),
                    subscriptions=[SubscriptionFact("s1", "active", trial_started_at=t(1), first_paid_at=t(11))],
                ),
                SourceCustomerRecord(
                    "b",
                    lead_created_at=t(2),
                    free_trial_started_at=t(2),
                    subscriptions=[SubscriptionFact("s2", "trialing", trial_started_at=t(2))],
                ),
                SourceCustomerRecord("c", lead_created_at=t(3)),
                SourceCustomerRecord(
                    "d",
                    lead_created_at=t(4),
                    free_trial_started_at=t(4),
                    subscriptions=[SubscriptionFact("s3", "active", trial_started_at=t(4), first_paid_at=t(24))],
                ),
            ],
        )
    state = refresh_metrics_flow("2025-03", return_state=True)
    assert state.is_completed(), state.message
    series = state.result()
    assert [row["period"][:7] for row in series] == ["2025-02", "2025-03"]
    march = series[1]
    assert (march["leads"], march["free_trials"], march["trials_converted"]) == (4, 3, 2)
    assert march["trial_to_paid_rate"] == 2 / 3
    assert march["avg_sales_cycle_days"] == 15.0
    md = artifact(run_id(state), "markdown", "funnel-metrics").data
    assert "# Funnel metrics, March 2025" in md
    assert "| Leads | 0 | 4 |" in md
    assert "| Free Trials | 0 | 3 |" in md
    assert "| Trial-to-Paid | – | 66.7% (2 of 3) |" in md
    assert "| Average Sales Cycle Length | – | 15.0 days (n = 2) |" in md


def test_month_bounds_and_markdown_are_pure() -> None:
    from datetime import date

    assert month_bounds("2025-01") == (date(2024, 12, 1), date(2025, 1, 1), date(2025, 2, 1))
    assert month_bounds(None, today=date(2025, 12, 31)) == (date(2025, 11, 1), date(2025, 12, 1), date(2026, 1, 1))
    md = metrics_markdown([{"period": "2025-01-01", "leads": 1200, "free_trials": 0, "trials_converted": 0,
                            "trial_to_paid_rate": None, "avg_sales_cycle_days": None, "sales_cycle_n": 0}], "T")
    assert "| Leads | 1,200 |" in md and "| Trial-to-Paid | – |" in md
