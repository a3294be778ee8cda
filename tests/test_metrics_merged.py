"""End to end through the real storage layer: upsert two sources, merge, and read the metrics.

A merged pair counts once with the merged (earliest) dates; filters see the projected tags, custom
attributes and both sources of the survivor.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import Engine

from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from storage.merge import auto_merge
from storage.metrics import funnel_series
from storage.sources import create_source
from storage.upsert import upsert_records


def t(month: int, day: int) -> datetime:
    return datetime(2025, month, day, tzinfo=UTC)


def _jan_feb(engine: Engine, where: list[str] | None = None) -> tuple[dict, dict]:
    with engine.connect() as conn:
        jan, feb = funnel_series(conn, date(2025, 1, 1), date(2025, 2, 28), "month", filters=where)
    return jan, feb


def test_merged_pair_counts_once_with_the_earliest_dates(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        crm = create_source(conn, "crm", "custom").id
        billing = create_source(conn, "billing", "stripe").id
        upsert_records(
            conn,
            crm,
            [
                SourceCustomerRecord(
                    external_id="L-1",
                    email="jane@acme.io",
                    country="DE",
                    lead_created_at=t(1, 1),
                    free_trial_started_at=t(1, 5),
                    tags=["webinar"],
                    custom={"seats": 12},
                )
            ],
            now=t(1, 1),
        )
        upsert_records(
            conn,
            billing,
            [
                SourceCustomerRecord(
                    external_id="cus_B1",
                    email="Jane@ACME.io",
                    lead_created_at=t(1, 10),
                    free_trial_started_at=t(1, 3),
                    subscriptions=[
                        SubscriptionFact(
                            external_id="sub_1",
                            state="active",
                            trial_started_at=t(1, 3),
                            first_paid_at=t(2, 1),
                        )
                    ],
                )
            ],
            now=t(3, 1),
        )
    jan, _ = _jan_feb(db_engine)
    assert (jan["leads"], jan["free_trials"]) == (2, 2)  # two customers before the merge

    assert auto_merge(db_engine).merged_customers == 1
    jan, feb = _jan_feb(db_engine)
    assert (jan["leads"], jan["leads_with_trial"], jan["free_trials"], jan["trials_converted"]) == (
        1,
        1,
        1,
        1,
    )
    assert jan["trial_to_paid_rate"] == 1.0
    # Sales cycle from the earliest lead date (Jan 1) to subscriber since (Feb 1): 31 days.
    assert (feb["new_subscribers"], feb["sales_cycle_n"], feb["avg_sales_cycle_days"]) == (1, 1, 31.0)

    # Filters see the survivor's projected fields and both of its sources.
    assert _jan_feb(db_engine, ["source = crm"])[0]["leads"] == 1
    assert _jan_feb(db_engine, ["source = billing AND source_kind = custom"])[0]["leads"] == 1
    assert _jan_feb(db_engine, ["tag = webinar"])[0]["leads"] == 1
    assert _jan_feb(db_engine, ["custom.seats > 10"])[0]["leads"] == 1
    assert _jan_feb(db_engine, ["custom.seats < 10"])[0]["leads"] == 0
    assert _jan_feb(db_engine, ["country = DE", "status = Active"])[1]["new_subscribers"] == 1
    assert _jan_feb(db_engine, ["country != DE"])[0]["leads"] == 0
