"""SPEC section 5, one test per definition, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, delete

from storage.metrics import SERIES_FIELDS, funnel_series, trial_cohorts
from storage.schema import customers
from tests.metrics_support import customer_row, insert_customers, tag

JAN, FEB, MAR = date(2025, 1, 1), date(2025, 2, 1), date(2025, 3, 1)


def at(month: int, day: int, hour: int = 12, minute: int = 0, tz: ZoneInfo | None = None) -> datetime:
    return datetime(2025, month, day, hour, minute, tzinfo=tz or UTC)


def series(
    engine: Engine,
    start: date = JAN,
    end: date = date(2025, 3, 31),
    interval: str = "month",
    **kwargs: object,
) -> dict[str, dict]:
    with engine.connect() as conn:
        return {row["period"]: row for row in funnel_series(conn, start, end, interval, **kwargs)}


def load(engine: Engine, *rows: dict) -> list[int]:
    with engine.begin() as conn:
        return insert_customers(conn, rows)


def test_series_shape_and_empty_periods(db_engine: Engine) -> None:
    load(db_engine, customer_row(lead_created_at=at(2, 3)))
    got = series(db_engine)
    assert list(got) == ["2025-01-01", "2025-02-01", "2025-03-01"]
    for row in got.values():
        assert tuple(row) == SERIES_FIELDS
    assert got["2025-01-01"] == {
        "period": "2025-01-01",
        "leads": 0,
        "leads_with_trial": 0,
        "non_trial_leads": 0,
        "free_trials": 0,
        "trials_converted": 0,
        "trial_to_paid_rate": None,
        "new_subscribers": 0,
        "avg_sales_cycle_days": None,
        "sales_cycle_n": 0,
    }
    assert got["2025-02-01"]["leads"] == 1


def test_leads_split_by_trial_and_no_lead_date_is_no_lead(db_engine: Engine) -> None:
    load(
        db_engine,
        customer_row(lead_created_at=at(1, 5), free_trial_started_at=at(1, 6)),
        customer_row(lead_created_at=at(1, 7)),
        customer_row(lead_created_at=at(1, 8), free_trial_started_at=at(2, 20)),  # trial in another month
        # No lead date: not a lead, yet its trial and its subscription count where they fall.
        customer_row(free_trial_started_at=at(1, 9), subscriber_since=at(1, 20)),
    )
    jan = series(db_engine)["2025-01-01"]
    assert (jan["leads"], jan["leads_with_trial"], jan["non_trial_leads"]) == (3, 2, 1)
    assert jan["free_trials"] == 2
    assert jan["new_subscribers"] == 1
    # ...and it stays out of the sales cycle.
    assert (jan["avg_sales_cycle_days"], jan["sales_cycle_n"]) == (None, 0)


def test_trial_converted_needs_subscriber_since_not_earlier_than_trial_start(db_engine: Engine) -> None:
    trial = at(1, 10)
    load(
        db_engine,
        customer_row(free_trial_started_at=trial, subscriber_since=trial),  # same instant: converted
        customer_row(free_trial_started_at=trial, subscriber_since=trial + timedelta(days=3)),
        customer_row(
            free_trial_started_at=trial, subscriber_since=trial - timedelta(microseconds=1)
        ),  # paid before
        customer_row(free_trial_started_at=trial),  # never paid
    )
    jan = series(db_engine)["2025-01-01"]
    assert (jan["free_trials"], jan["trials_converted"], jan["trial_to_paid_rate"]) == (4, 2, 0.5)


def test_rate_is_a_cohort_figure_late_conversions_raise_the_trial_month(db_engine: Engine) -> None:
    load(
        db_engine,
        customer_row(
            free_trial_started_at=at(1, 25), subscriber_since=at(3, 15)
        ),  # converts two months later
        customer_row(free_trial_started_at=at(1, 26)),
        customer_row(free_trial_started_at=at(1, 27)),
        customer_row(free_trial_started_at=at(1, 28)),
    )
    got = series(db_engine)
    assert got["2025-01-01"]["trials_converted"] == 1
    assert got["2025-01-01"]["trial_to_paid_rate"] == 0.25  # unrounded fraction
    # March has the new subscriber but no trials, so no rate: null, not 0 and not 100 %.
    assert got["2025-03-01"]["new_subscribers"] == 1
    assert got["2025-03-01"]["trials_converted"] == 0


def test_rate_is_null_for_an_empty_cohort(db_engine: Engine) -> None:
    load(db_engine, customer_row(lead_created_at=at(2, 1), subscriber_since=at(2, 2)))
    got = series(db_engine)
    assert all(row["free_trials"] == 0 and row["trial_to_paid_rate"] is None for row in got.values())


def test_within_days_counts_conversions_no_more_than_n_days_after_the_trial_start(db_engine: Engine) -> None:
    trial = at(1, 10)
    load(
        db_engine,
        customer_row(
            free_trial_started_at=trial, subscriber_since=trial + timedelta(days=7)
        ),  # exactly 7: in
        customer_row(free_trial_started_at=trial, subscriber_since=trial + timedelta(days=7, microseconds=1)),
        customer_row(free_trial_started_at=trial, subscriber_since=trial + timedelta(days=2)),
        customer_row(
            free_trial_started_at=trial, subscriber_since=trial - timedelta(days=1)
        ),  # before: never
    )
    assert series(db_engine, within_days=7)["2025-01-01"]["trials_converted"] == 2
    assert series(db_engine, within_days=0)["2025-01-01"]["trials_converted"] == 0
    assert series(db_engine)["2025-01-01"]["trials_converted"] == 3
    with db_engine.connect() as conn:
        (jan, _feb) = trial_cohorts(conn, JAN, date(2025, 2, 1), "month")
    assert jan["size"] == 4 and jan["converted"] == 3 and jan["rate"] == 0.75
    assert jan["converted_within"] == {"7": 2, "14": 3, "30": 3, "60": 3, "90": 3}
    assert jan["share_within"] == {"7": 0.5, "14": 0.75, "30": 0.75, "60": 0.75, "90": 0.75}
    assert _feb["size"] == 0 and _feb["rate"] is None and _feb["share_within"]["7"] is None
    with db_engine.connect() as conn:
        (jan,) = trial_cohorts(conn, JAN, JAN, "month", now=datetime(2025, 3, 2, tzinfo=UTC))
    # January ends Feb 1: by Mar 2, 7, 14 and 29 days have passed for every trial, not 30, 60, 90.
    assert jan["window_complete"] == {"7": True, "14": True, "30": False, "60": False, "90": False}


def test_sales_cycle_in_fractional_days_over_new_subscribers_with_lead_not_after_subscriber_since(
    db_engine: Engine,
) -> None:
    load(
        db_engine,
        customer_row(lead_created_at=at(1, 1, 0), subscriber_since=at(2, 1, 6)),  # 31.25 days
        customer_row(lead_created_at=at(2, 10, 12), subscriber_since=at(2, 10, 12)),  # 0 days: counts
        customer_row(lead_created_at=at(2, 20, 0, 1), subscriber_since=at(2, 20, 0)),  # lead after: out
        customer_row(subscriber_since=at(2, 21)),  # no lead date: out of the cycle
        customer_row(lead_created_at=at(1, 3), subscriber_since=at(3, 1)),  # another period
    )
    feb = series(db_engine)["2025-02-01"]
    assert feb["new_subscribers"] == 4
    assert feb["sales_cycle_n"] == 2
    assert feb["avg_sales_cycle_days"] == pytest.approx(31.25 / 2, rel=1e-12)
    assert isinstance(feb["avg_sales_cycle_days"], float)


def test_a_merged_pair_counts_once_with_the_merged_dates(db_engine: Engine) -> None:
    # A merge deletes the merged-away customer and keeps the earliest dates on the survivor.
    _survivor, merged_away = load(
        db_engine,
        customer_row(lead_created_at=at(1, 5), free_trial_started_at=at(1, 6), subscriber_since=at(2, 1)),
        customer_row(lead_created_at=at(1, 20), free_trial_started_at=at(1, 21)),
    )
    with db_engine.begin() as conn:
        conn.execute(delete(customers).where(customers.c.id == merged_away))
    jan = series(db_engine)["2025-01-01"]
    assert (jan["leads"], jan["free_trials"], jan["trials_converted"]) == (1, 1, 1)


def test_periods_include_their_start_and_exclude_their_end_in_the_account_zone(
    db_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNNELSYNC_TIMEZONE", "America/New_York")
    ny = ZoneInfo("America/New_York")
    feb_start = datetime(2025, 2, 1, tzinfo=ny)  # 05:00 UTC
    mar_start = datetime(2025, 3, 1, tzinfo=ny)
    load(
        db_engine,
        customer_row(lead_created_at=feb_start),  # February
        customer_row(lead_created_at=feb_start - timedelta(microseconds=1)),  # January
        customer_row(lead_created_at=mar_start - timedelta(microseconds=1)),  # February
        customer_row(lead_created_at=mar_start),  # March
        customer_row(lead_created_at=datetime(2025, 2, 1, 3, tzinfo=UTC)),  # Jan 31 22:00 in New York
    )
    got = series(db_engine)
    assert [got[p]["leads"] for p in ("2025-01-01", "2025-02-01", "2025-03-01")] == [2, 2, 1]


def test_weeks_start_on_monday_and_days_follow_dst(
    db_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FUNNELSYNC_TIMEZONE", "America/New_York")
    ny = ZoneInfo("America/New_York")
    load(
        db_engine,
        customer_row(lead_created_at=datetime(2025, 3, 9, 23, 30, tzinfo=ny)),  # Sunday, DST day (23 h)
        customer_row(lead_created_at=datetime(2025, 3, 10, 0, 0, tzinfo=ny)),  # Monday 04:00 UTC
    )
    weeks = series(db_engine, date(2025, 3, 5), date(2025, 3, 12), "week")
    assert {p: r["leads"] for p, r in weeks.items()} == {"2025-03-03": 1, "2025-03-10": 1}
    days = series(db_engine, date(2025, 3, 9), date(2025, 3, 10), "day")
    assert {p: r["leads"] for p, r in days.items()} == {"2025-03-09": 1, "2025-03-10": 1}


def test_filters_restrict_every_metric(db_engine: Engine) -> None:
    _us, de = load(
        db_engine,
        customer_row(
            country="US", lead_created_at=at(1, 2), free_trial_started_at=at(1, 3), subscriber_since=at(1, 4)
        ),
        customer_row(country="DE", lead_created_at=at(1, 2), free_trial_started_at=at(1, 3)),
    )
    with db_engine.begin() as conn:
        tag(conn, de, "vip")
    jan = series(db_engine, filters=["country = US"])["2025-01-01"]
    assert (jan["leads"], jan["free_trials"], jan["trials_converted"], jan["new_subscribers"]) == (1, 1, 1, 1)
    jan = series(db_engine, filters="tag = vip")["2025-01-01"]
    assert (jan["leads"], jan["free_trials"], jan["trials_converted"], jan["new_subscribers"]) == (1, 1, 0, 0)
    with db_engine.connect() as conn:
        (cohort,) = trial_cohorts(conn, JAN, JAN, "month", filters=["country = DE"])
    assert cohort["size"] == 1 and cohort["converted"] == 0


def test_bad_arguments(db_engine: Engine) -> None:
    with db_engine.connect() as conn:
        with pytest.raises(ValueError, match="unknown interval"):
            funnel_series(conn, JAN, FEB, "fortnight")
        with pytest.raises(ValueError, match="before start date"):
            funnel_series(conn, FEB, JAN, "month")
        with pytest.raises(ValueError, match="within_days"):
            funnel_series(conn, JAN, FEB, "month", within_days=-1)


def test_long_day_series_agree_with_months(db_engine: Engine) -> None:
    # 731 daily periods: more than SQLite's 500-term compound SELECT limit and PostgreSQL's join cut-off.
    load(
        db_engine,
        customer_row(
            lead_created_at=datetime(2024, 1, 1, tzinfo=UTC),
            free_trial_started_at=at(3, 1),
            subscriber_since=at(3, 20),
        ),
        customer_row(lead_created_at=datetime(2025, 12, 31, 23, 59, tzinfo=UTC)),
        customer_row(lead_created_at=datetime(2024, 2, 29, 12, tzinfo=UTC), subscriber_since=at(3, 20, 18)),
    )
    days = series(db_engine, date(2024, 1, 1), date(2025, 12, 31), "day")
    months = series(db_engine, date(2024, 1, 1), date(2025, 12, 31), "month")
    assert len(days) == 731 and len(months) == 24
    for key in ("leads", "free_trials", "trials_converted", "new_subscribers", "sales_cycle_n"):
        assert sum(r[key] for r in days.values()) == sum(r[key] for r in months.values()) > 0
    assert days["2024-02-29"]["leads"] == 1 and days["2025-12-31"]["leads"] == 1
    assert days["2025-03-20"]["avg_sales_cycle_days"] == months["2025-03-01"]["avg_sales_cycle_days"]
