"""Period arithmetic for the metrics: day, ISO week (Monday), month, quarter, year in the account zone.

Pure functions, no database. A period is cut in the account time zone: it starts at a local midnight,
includes its start and excludes its end. Boundaries are local midnights converted to UTC one by one, so
a month that contains a daylight-saving change is 1 hour shorter or longer in UTC, as it should be.

A local midnight that does not exist (a zone that springs forward at 00:00, e.g. America/Sao_Paulo in
2018) starts the day at the first instant that does exist; an ambiguous one (falls back at 01:00 to
00:00) starts it at the first of the two. ``zoneinfo`` with ``fold=0`` gives exactly these instants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, get_args
from zoneinfo import ZoneInfo

from funnelsync.timeutil import account_timezone

Interval = Literal["day", "week", "month", "quarter", "year"]
INTERVALS: tuple[str, ...] = get_args(Interval)

# A day series over decades would be a query with tens of thousands of bound bounds; refuse it early.
MAX_PERIODS = 10_000


@dataclass(frozen=True, slots=True)
class Period:
    """One period: its label (the local start date) and its UTC bounds [start_utc, end_utc)."""

    label: date
    start_utc: datetime
    end_utc: datetime


def check_interval(interval: str) -> Interval:
    """Return ``interval`` if valid.

    Raises:
        ValueError: naming the valid intervals.
    """
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}: use one of {', '.join(INTERVALS)}")
    return interval  # type: ignore[return-value]


def period_start(day: date, interval: str) -> date:
    """The first local day of the period of ``interval`` that contains ``day``."""
    check_interval(interval)
    if interval == "day":
        return day
    if interval == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday (weekday() == 0)
    if interval == "month":
        return day.replace(day=1)
    if interval == "quarter":
        return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    return date(day.year, 1, 1)


def next_period_start(start: date, interval: str) -> date:
    """The first day of the period after the one starting at ``start`` (``start`` must be a period start)."""
    check_interval(interval)
    if interval == "day":
        return start + timedelta(days=1)
    if interval == "week":
        return start + timedelta(days=7)
    if interval == "year":
        return date(start.year + 1, 1, 1)
    months = 1 if interval == "month" else 3
    index = start.year * 12 + (start.month - 1) + months
    return date(index // 12, index % 12 + 1, 1)


def local_midnight_utc(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of local ``day`` in ``tz``, as an aware UTC datetime (DST-correct)."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def period_labels(start: date, end: date, interval: str) -> list[date]:
    """Local start dates of the periods covering the days ``start`` … ``end`` (both included).

    The first period is the one containing ``start`` (a week series from a Wednesday starts on the
    Monday before): every period is whole, so its figure does not depend on where the range began.

    Raises:
        ValueError: ``end`` before ``start``, an unknown interval, or more than ``MAX_PERIODS`` periods.
    """
    check_interval(interval)
    if end < start:
        raise ValueError(f"end date {end.isoformat()} is before start date {start.isoformat()}")
    labels: list[date] = []
    current = period_start(start, interval)
    while current <= end:
        labels.append(current)
        if len(labels) > MAX_PERIODS:
            raise ValueError(
                f"{start.isoformat()} to {end.isoformat()} by {interval} is more than {MAX_PERIODS} periods: "
                "use a longer interval or a shorter range"
            )
        current = next_period_start(current, interval)
    return labels


def build_periods(start: date, end: date, interval: str, tz: ZoneInfo | None = None) -> list[Period]:
    """The periods covering ``start`` … ``end`` (inclusive days) with their UTC bounds.

    Args:
        start: first local day wanted.
        end: last local day wanted (included).
        interval: day, week, month, quarter or year.
        tz: the account zone (default ``FUNNELSYNC_TIMEZONE``).

    Returns:
        Consecutive periods: each one's ``end_utc`` is the next one's ``start_utc``.
    """
    tz = tz or account_timezone()
    labels = period_labels(start, end, interval)
    bounds = [local_midnight_utc(label, tz) for label in labels]
    bounds.append(local_midnight_utc(next_period_start(labels[-1], interval), tz))
    return [Period(labels[i], bounds[i], bounds[i + 1]) for i in range(len(labels))]
