"""Period arithmetic: floors, steps, ranges and DST-correct UTC bounds (table-driven)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from storage.periods import build_periods, local_midnight_utc, next_period_start, period_labels, period_start


@pytest.mark.parametrize(
    ("day", "interval", "start", "after"),
    [
        (date(2025, 3, 19), "day", date(2025, 3, 19), date(2025, 3, 20)),
        (date(2024, 12, 31), "day", date(2024, 12, 31), date(2025, 1, 1)),
        (date(2025, 1, 1), "week", date(2024, 12, 30), date(2025, 1, 6)),  # ISO week 1 of 2025
        (date(2025, 3, 16), "week", date(2025, 3, 10), date(2025, 3, 17)),  # Sunday → previous Monday
        (date(2025, 3, 17), "week", date(2025, 3, 17), date(2025, 3, 24)),  # Monday is its own start
        (date(2024, 2, 29), "month", date(2024, 2, 1), date(2024, 3, 1)),
        (date(2025, 12, 31), "month", date(2025, 12, 1), date(2026, 1, 1)),
        (date(2025, 3, 31), "quarter", date(2025, 1, 1), date(2025, 4, 1)),
        (date(2025, 4, 1), "quarter", date(2025, 4, 1), date(2025, 7, 1)),
        (date(2025, 11, 15), "quarter", date(2025, 10, 1), date(2026, 1, 1)),
        (date(2025, 7, 4), "year", date(2025, 1, 1), date(2026, 1, 1)),
    ],
)
def test_period_start_and_next(day: date, interval: str, start: date, after: date) -> None:
    assert period_start(day, interval) == start
    assert next_period_start(start, interval) == after


@pytest.mark.parametrize(
    ("start", "end", "interval", "labels"),
    [
        (date(2025, 1, 1), date(2025, 3, 31), "month", ["2025-01-01", "2025-02-01", "2025-03-01"]),
        (date(2025, 1, 15), date(2025, 3, 1), "month", ["2025-01-01", "2025-02-01", "2025-03-01"]),
        (date(2025, 1, 1), date(2025, 1, 1), "month", ["2025-01-01"]),
        (date(2025, 1, 1), date(2025, 1, 13), "week", ["2024-12-30", "2025-01-06", "2025-01-13"]),
        (date(2024, 11, 1), date(2025, 2, 1), "quarter", ["2024-10-01", "2025-01-01"]),
        (date(2023, 6, 1), date(2025, 1, 1), "year", ["2023-01-01", "2024-01-01", "2025-01-01"]),
        (date(2025, 2, 27), date(2025, 3, 1), "day", ["2025-02-27", "2025-02-28", "2025-03-01"]),
    ],
)
def test_period_labels(start: date, end: date, interval: str, labels: list[str]) -> None:
    assert [d.isoformat() for d in period_labels(start, end, interval)] == labels


@pytest.mark.parametrize(
    ("zone", "day", "utc"),
    [
        ("UTC", date(2025, 1, 1), datetime(2025, 1, 1, tzinfo=UTC)),
        ("Europe/Berlin", date(2025, 1, 1), datetime(2024, 12, 31, 23, tzinfo=UTC)),
        ("Europe/Berlin", date(2025, 4, 1), datetime(2025, 3, 31, 22, tzinfo=UTC)),  # summer time
        (
            "America/New_York",
            date(2025, 3, 9),
            datetime(2025, 3, 9, 5, tzinfo=UTC),
        ),  # DST starts 02:00 that day
        ("America/New_York", date(2025, 3, 10), datetime(2025, 3, 10, 4, tzinfo=UTC)),
        ("America/New_York", date(2025, 11, 2), datetime(2025, 11, 2, 4, tzinfo=UTC)),  # DST ends that day
        ("America/New_York", date(2025, 11, 3), datetime(2025, 11, 3, 5, tzinfo=UTC)),
        # Sao Paulo sprang forward AT midnight on 2018-11-04: the day starts at 01:00 local = 03:00 UTC.
        ("America/Sao_Paulo", date(2018, 11, 4), datetime(2018, 11, 4, 3, tzinfo=UTC)),
        # Havana fell back from 01:00 to 00:00 on 2025-11-02: midnight happens twice, the first one counts.
        ("America/Havana", date(2025, 11, 2), datetime(2025, 11, 2, 4, tzinfo=UTC)),
        ("Asia/Kolkata", date(2025, 1, 1), datetime(2024, 12, 31, 18, 30, tzinfo=UTC)),
        ("Pacific/Chatham", date(2025, 1, 1), datetime(2024, 12, 31, 10, 15, tzinfo=UTC)),
    ],
)
def test_local_midnight_utc(zone: str, day: date, utc: datetime) -> None:
    got = local_midnight_utc(day, ZoneInfo(zone))
    assert got == utc
    tz = ZoneInfo(zone)
    # It is the first instant of that local day: one microsecond earlier is still the day before.
    assert got.astimezone(tz).date() == day
    assert (got - timedelta(microseconds=1)).astimezone(tz).date() < day


def test_periods_are_contiguous_and_dst_sized() -> None:
    tz = ZoneInfo("America/New_York")
    periods = build_periods(date(2025, 3, 1), date(2025, 11, 30), "month", tz)
    assert len(periods) == 9
    for before, after in itertools.pairwise(periods):
        assert before.end_utc == after.start_utc
    march, november = periods[0], periods[-1]
    assert march.end_utc - march.start_utc == timedelta(days=31, hours=-1)  # loses the sprung hour
    assert november.end_utc - november.start_utc == timedelta(days=30, hours=1)  # gains the fallen hour
    days = build_periods(date(2025, 3, 8), date(2025, 3, 10), "day", tz)
    assert [p.end_utc - p.start_utc for p in days] == [
        timedelta(hours=24),
        timedelta(hours=23),
        timedelta(hours=24),
    ]


def test_periods_use_the_account_zone_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNNELSYNC_TIMEZONE", "Asia/Tokyo")
    (period,) = build_periods(date(2025, 1, 1), date(2025, 1, 1), "day")
    assert period.start_utc == datetime(2024, 12, 31, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "interval", "reason"),
    [
        (date(2025, 2, 1), date(2025, 1, 1), "month", "is before start date"),
        (date(2025, 1, 1), date(2025, 2, 1), "fortnight", "unknown interval 'fortnight'"),
        (date(1900, 1, 1), date(2100, 1, 1), "day", "more than 10000 periods"),
    ],
)
def test_period_errors(start: date, end: date, interval: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        period_labels(start, end, interval)
