"""Funnel metrics and the trial cohort table (docs/metrics.md), in SQL that runs on SQLite and PostgreSQL.

Every figure is computed over ``customers``, the canonical customers: a merged-away customer is deleted
from it, so a merged pair counts once with the merged (earliest) dates and no merge filter is needed.

How it is computed, and why:
- Periods are ``[start_utc, end_utc)`` bounds: local midnights in the account zone converted to UTC in
  Python (storage.periods), so DST and odd offsets are exact and the SQL only compares instants.
- Three families, one range-restricted scan each, with conditional aggregation inside: leads (by
  ``lead_created_at``), trials (by ``free_trial_started_at``) and new subscribers (by
  ``subscriber_since``). The composite indexes of migration 0004 hold the second date each family
  needs, so an unfiltered scan is index-only. How a row finds its period depends on the database (see
  ``_family``): a periods table joined on the range, ``width_bucket`` or a balanced ``CASE`` tree.
- Without ``within_days`` and with no filter but on the country, the series sums the daily counts that
  triggers keep (storage/metric_counts.py) instead of scanning customers: a row a UTC day and country
  whatever the number of customers, and the same figures (tests/test_metric_counts.py compares the
  two). Any other filter, a window or a period bound that is no UTC midnight falls back to the scan.
- Timestamps are integer epoch microseconds on SQLite and ``timestamptz`` on PostgreSQL; ``_Dialect``
  hides the difference. Window tests compare exact integers (SQLite) or intervals (PostgreSQL), never
  rounded floats.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    DateTime,
    Float,
    Integer,
    Interval,
    Select,
    Subquery,
    Text,
    and_,
    bindparam,
    case,
    extract,
    func,
    literal,
    not_,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.elements import True_

from funnelsync.normalize import normalize_country
from storage import metric_counts as counts
from storage.filter_grammar import parse_filters
from storage.filters import build_filter
from storage.periods import Period, build_periods
from storage.schema import customers, metric_count_deltas, metric_counts
from storage.sql import pg_visible_fraction
from storage.types import UTCDateTime

COHORT_WINDOWS: tuple[int, ...] = (7, 14, 30, 60, 90)
SECONDS_PER_DAY = 86_400

# The fields of one series entry, in the order the CLI, the API and the flows show them.
SERIES_FIELDS = (
    "period",
    "leads",
    "leads_with_trial",
    "non_trial_leads",
    "free_trials",
    "trials_converted",
    "trial_to_paid_rate",
    "new_subscribers",
    "avg_sales_cycle_days",
    "sales_cycle_n",
)

c = customers.c


@dataclass(frozen=True, slots=True)
class _Dialect:
    """The two timestamp representations: integer epoch microseconds (SQLite) or timestamptz."""

    sqlite: bool
    # PostgreSQL: most of ``customers`` is marked all-visible, so index-only scans skip the heap.
    index_only: bool = False

    def seconds_between(self, later: Any, earlier: Any) -> ColumnElement[Any]:
        """``later − earlier`` in (fractional) seconds."""
        if self.sqlite:
            # Integer microseconds: the subtraction is exact, the division makes it a float.
            return type_coerce(
                (type_coerce(later, BigInteger) - type_coerce(earlier, BigInteger)) / 1_000_000.0, Float
            )
        return extract(
            "epoch",
            type_coerce(later, DateTime(timezone=True)) - type_coerce(earlier, DateTime(timezone=True)),
        )

    def within(self, later: Any, earlier: Any, days: int) -> ColumnElement[bool]:
        """``later − earlier ≤ days`` (days of 24 hours), compared exactly."""
        if self.sqlite:
            limit = bindparam(None, days * SECONDS_PER_DAY * 1_000_000, type_=BigInteger)
            return (type_coerce(later, BigInteger) - type_coerce(earlier, BigInteger)) <= limit
        difference = type_coerce(later, DateTime(timezone=True)) - type_coerce(
            earlier, DateTime(timezone=True)
        )
        return type_coerce(difference, Interval) <= bindparam(None, timedelta(days=days), type_=Interval)


def _dialect(conn: Connection) -> _Dialect:
    if conn.dialect.name == "sqlite":
        return _Dialect(sqlite=True)
    # Right after a bulk load (before VACUUM has marked pages all-visible) an "index-only" scan visits
    # the heap for every entry, and the per-period join is slower than one width_bucket scan; once the
    # pages are visible it is faster. The catalog says which holds.
    return _Dialect(sqlite=False, index_only=pg_visible_fraction(conn, customers.name) >= PG_VISIBLE_FOR_INDEX_ONLY)


def _periods_table(periods: Sequence[Period]) -> Subquery:
    """A derived table ``(idx, start_at, end_at)`` of the period bounds, as bound parameters."""
    rows = [
        select(
            literal(i, Integer).label("idx"),
            literal(p.start_utc, UTCDateTime).label("start_at"),
            literal(p.end_utc, UTCDateTime).label("end_at"),
        )
        for i, p in enumerate(periods)
    ]
    if len(rows) == 1:
        return rows[0].subquery("periods")
    return union_all(*rows).subquery("periods")


def _bucket(column: Any, periods: Sequence[Period], lo: int = 0, hi: int | None = None) -> ColumnElement[int]:
    """The index of the period holding ``column``, as a balanced CASE tree (log2(n) comparisons a row).

    The caller restricts ``column`` to ``[periods[0].start_utc, periods[-1].end_utc)``.
    """
    hi = len(periods) if hi is None else hi
    if hi - lo == 1:
        return literal(lo, Integer)
    mid = (lo + hi) // 2
    boundary = bindparam(None, periods[mid].start_utc, type_=UTCDateTime)
    return case(
        (column < boundary, _bucket(column, periods, lo, mid)), else_=_bucket(column, periods, mid, hi)
    )


# Up to this many periods, PostgreSQL answers an unfiltered family fastest with one index-only range scan
# per period (a nested loop over the periods table); beyond it, or with a filter, one scan with
# width_bucket wins (bench/metrics.py compares the two).
PG_JOIN_MAX_PERIODS = 200
PG_VISIBLE_FOR_INDEX_ONLY = 0.9
# SQLite refuses a compound SELECT of more than 500 terms (SQLITE_MAX_COMPOUND_SELECT).
SQLITE_UNION_CHUNK = 400


def _family(
    conn: Connection,
    d: _Dialect,
    periods: Sequence[Period],
    date_column: Any,
    aggregates: Sequence[ColumnElement[Any]],
    where: ColumnElement[bool] | None,
) -> dict[int, Sequence[Any]]:
    """Run one metric family: customers bucketed by ``date_column``, aggregated per period index.

    Four shapes of the same computation, chosen by what each database does fastest (bench/metrics.py
    compares them):
    - SQLite, no filter: one aggregate ``SELECT`` per period over ``[start, end)``, glued with
      ``UNION ALL`` (in chunks under SQLite's 500-term limit). Each is a covering-index range scan with
      no grouping and no sort, faster than one scan grouped by a ``CASE`` bucket.
    - SQLite with a filter: one scan grouped by a balanced ``CASE`` tree (log2(n) comparisons a row);
      ``+ 0`` on the date hides the index so SQLite reads the table in order instead of one random row
      lookup per index entry.
    - PostgreSQL, no filter, few periods, table mostly all-visible: the periods table joined on
      ``[start, end)`` → one index-only range scan per period.
    - PostgreSQL otherwise: one range-restricted scan, the period index from ``width_bucket`` over the
      array of period starts (a binary search in C); the planner picks index or sequential scan.
    """
    first = bindparam(None, periods[0].start_utc, type_=UTCDateTime)
    last = bindparam(None, periods[-1].end_utc, type_=UTCDateTime)
    query: Select[Any]
    if d.sqlite and where is None:
        out: dict[int, Sequence[Any]] = {}
        numbered = list(enumerate(periods))
        for offset in range(0, len(numbered), SQLITE_UNION_CHUNK):
            chunk = numbered[offset : offset + SQLITE_UNION_CHUNK]
            parts = [
                select(literal(i, Integer), *aggregates).where(
                    date_column >= bindparam(None, p.start_utc, type_=UTCDateTime),
                    date_column < bindparam(None, p.end_utc, type_=UTCDateTime),
                )
                for i, p in chunk
            ]
            statement = union_all(*parts) if len(parts) > 1 else parts[0]
            out.update({int(row[0]): row[1:] for row in conn.execute(statement)})
        return out
    if d.sqlite:
        ranged = type_coerce(type_coerce(date_column, BigInteger) + 0, UTCDateTime)  # no index, see above
        idx = _bucket(date_column, periods).label("idx")
        query = select(idx, *aggregates).where(ranged >= first, ranged < last).group_by(idx)
    elif where is None and d.index_only and len(periods) <= PG_JOIN_MAX_PERIODS:
        table = _periods_table(periods)
        in_period = and_(date_column >= table.c.start_at, date_column < table.c.end_at)
        query = (
            select(table.c.idx, *aggregates)
            .select_from(table.join(customers, in_period))
            .group_by(table.c.idx)
        )
    else:
        starts = bindparam(None, [p.start_utc for p in periods], type_=ARRAY(DateTime(timezone=True)))
        # width_bucket returns 1 for [starts[0], starts[1]), …; the range condition keeps it in 1..n.
        idx = (func.width_bucket(type_coerce(date_column, DateTime(timezone=True)), starts) - 1).label("idx")
        query = select(idx, *aggregates).where(date_column >= first, date_column < last).group_by(idx)
    if where is not None:
        query = query.where(where)
    return {int(row[0]): row[1:] for row in conn.execute(query)}


def _converted(d: _Dialect, within_days: int | None) -> ColumnElement[bool]:
    """A trial converted: it paid, not before its trial start, and (optionally) within N days of it."""
    converted = and_(c.subscriber_since.is_not(None), c.subscriber_since >= c.free_trial_started_at)
    if within_days is not None:
        converted = and_(converted, d.within(c.subscriber_since, c.free_trial_started_at, within_days))
    return converted


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
    # count(CASE WHEN … THEN 1 END) rather than FILTER: the same SQL on SQLite and PostgreSQL.
    return func.count(case((condition, 1)))


def _resolve_filter(conn: Connection, filters: Any) -> ColumnElement[bool] | None:
    """``filters`` may be --where strings or a compiled clause; no filter → None (index-only scans)."""
    if filters is None or (isinstance(filters, (list, tuple)) and not filters):
        return None
    if isinstance(filters, (str, list, tuple)):
        return build_filter(conn, filters)
    if isinstance(filters, True_):  # build_filter's "every customer"
        return None
    return filters  # already a clause


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY = timedelta(days=1)


def _day_aligned(periods: Sequence[Period]) -> bool:
    """Whether every period bound is a UTC midnight (the counts' days)."""
    return all((p.start_utc - _EPOCH) % _DAY == timedelta(0) for p in periods) and (
        (periods[-1].end_utc - _EPOCH) % _DAY == timedelta(0)
    )


def _country_condition(filters: Any, column: Any) -> tuple[bool, ColumnElement[bool] | None]:
    """Whether the counts can answer the filters (only the country is filtered, as text), and the filters
    as a condition on the counts' country (None: no filter)."""
    if filters is None or (isinstance(filters, (list, tuple)) and not filters):
        return True, None
    if not isinstance(filters, (str, list, tuple)):
        return False, None
    clauses: list[ColumnElement[bool]] = []
    for cond in parse_filters(filters):
        if cond.field != "country" or cond.op not in ("=", "in", "!=", "not in"):
            return False, None
        codes = [normalize_country(v.text) for v in cond.values]
        if not all(codes):
            return False, None
        # The counts hold '' for no country: "!=" / "not in" keep it, as the scan keeps NULL.
        matches = column.in_([bindparam(None, code, type_=Text) for code in codes])
        clauses.append(matches if cond.op in ("=", "in") else not_(matches))
    return True, (and_(*clauses) if clauses else None)


def _counted(
    conn: Connection, periods: Sequence[Period], filters: Any
) -> dict[int, dict[int, list[int]]] | None:
    """Each family's ``(n, k, cycle_s, cycle_us)`` per period index from the daily counts and the pending
    deltas, or None when they cannot answer exactly (see ``_country_condition``, ``_day_aligned``)."""
    if not _day_aligned(periods):
        return None
    first = bindparam(None, periods[0].start_utc, type_=UTCDateTime)
    last = bindparam(None, periods[-1].end_utc, type_=UTCDateTime)
    parts = []
    for table in (metric_counts, metric_count_deltas):
        answerable, condition = _country_condition(filters, table.c.country)
        if not answerable:
            return None
        part = select(table.c.family, table.c.at, table.c.n, table.c.k, table.c.cycle_s, table.c.cycle_us)
        part = part.where(table.c.at >= first, table.c.at < last)
        parts.append(part if condition is None else part.where(condition))
    # The "kept" mark, read in the same statement (the same snapshot) as the counts.
    parts.append(
        select(
            metric_counts.c.family, metric_counts.c.at, metric_counts.c.n, metric_counts.c.k,
            metric_counts.c.cycle_s, metric_counts.c.cycle_us,
        ).where(metric_counts.c.family == counts.KEPT)
    )
    counts.fold_if_many(conn)
    rows = union_all(*parts).subquery("counted")
    # A row a day and family: few enough to put into periods here (a bisection), cheaper than a CASE
    # tree or width_bucket over them in SQL.
    query = select(
        rows.c.family, rows.c.at, func.sum(rows.c.n), func.sum(rows.c.k), func.sum(rows.c.cycle_s),
        func.sum(rows.c.cycle_us),
    ).group_by(rows.c.family, rows.c.at)
    starts = [p.start_utc for p in periods]
    out: dict[int, dict[int, list[int]]] = {counts.LEADS: {}, counts.TRIALS: {}, counts.SUBSCRIBERS: {}}
    kept = False
    for family, at, *sums in conn.execute(query):
        if family == counts.KEPT:
            kept = True
            continue
        sums_of_period = out[int(family)].setdefault(bisect_right(starts, at) - 1, [0, 0, 0, 0])
        for j, value in enumerate(sums):
            sums_of_period[j] += int(value)
    return out if kept else None


def _series_from_counts(
    periods: Sequence[Period], counted: dict[int, dict[int, list[int]]]
) -> list[dict[str, Any]]:
    series: list[dict[str, Any]] = []
    for i, period in enumerate(periods):
        lead_count, with_trial, _, _ = counted[counts.LEADS].get(i, (0, 0, 0, 0))
        trial_count, converted, _, _ = counted[counts.TRIALS].get(i, (0, 0, 0, 0))
        new_subscribers, cycle_n, seconds, micros = counted[counts.SUBSCRIBERS].get(i, (0, 0, 0, 0))
        total_us = seconds * 1_000_000 + micros  # exact integers; one rounding, in the division
        series.append(
            {
                "period": period.label.isoformat(),
                "leads": lead_count,
                "leads_with_trial": with_trial,
                "non_trial_leads": lead_count - with_trial,
                "free_trials": trial_count,
                "trials_converted": converted,
                "trial_to_paid_rate": converted / trial_count if trial_count else None,
                "new_subscribers": new_subscribers,
                "avg_sales_cycle_days": total_us / (cycle_n * SECONDS_PER_DAY * 1_000_000) if cycle_n else None,
                "sales_cycle_n": cycle_n,
            }
        )
    return series


def funnel_series(
    conn: Connection,
    start: date,
    end: date,
    interval: str,
    within_days: int | None = None,
    filters: Any = None,
    *,
    tz: ZoneInfo | None = None,
    use_counts: bool = True,
) -> list[dict[str, Any]]:
    """The funnel metrics per period (docs/metrics.md).

    Args:
        conn: an open connection.
        start: first local day of the range (its whole period is included).
        end: last local day of the range, included (its whole period is included).
        interval: day, week (ISO, Monday), month, quarter or year.
        within_days: count a trial as converted only when ``subscriber_since`` is at most this many days
            (of 24 h) after ``free_trial_started_at``; None = converted at any time since.
        filters: ``--where`` expressions (a string or a list, ANDed) or a compiled clause from
            ``storage.filters``; None = every customer.
        tz: the account zone (default ``FUNNELSYNC_TIMEZONE``).
        use_counts: read the daily counts when they can answer (False: always scan the customers; the
            tests compare the two).

    Returns:
        One dict per period, in order, with exactly the keys of ``SERIES_FIELDS``: ``period`` is the
        period's first local day (ISO); counts are ints; ``trial_to_paid_rate`` is an unrounded fraction
        (None when there were no trials); ``avg_sales_cycle_days`` an unrounded float (None when no new
        subscriber had a lead date not after its subscriber since). Empty periods are present.

    Raises:
        ValueError: a bad range or interval, or a negative ``within_days``.
        storage.filters.FilterError: a filter that does not parse or fit.
    """
    if within_days is not None and within_days < 0:
        raise ValueError(f"within_days must be 0 or more, got {within_days}")
    periods = build_periods(start, end, interval, tz)
    where = _resolve_filter(conn, filters)  # validates the filter whichever path answers
    if use_counts and within_days is None:
        counted = _counted(conn, periods, filters)
        if counted is not None:
            return _series_from_counts(periods, counted)
    d = _dialect(conn)

    leads = _family(
        conn, d, periods, c.lead_created_at, [func.count(), func.count(c.free_trial_started_at)], where
    )
    trials = _family(
        conn,
        d,
        periods,
        c.free_trial_started_at,
        [func.count(), _count_if(_converted(d, within_days))],
        where,
    )
    # The sales cycle averages new subscribers whose lead date is not after subscriber since;
    # one without a lead date is no lead and stays out of it.
    in_cycle = and_(c.lead_created_at.is_not(None), c.lead_created_at <= c.subscriber_since)
    cycle_seconds = case((in_cycle, d.seconds_between(c.subscriber_since, c.lead_created_at)))
    subscribers = _family(
        conn,
        d,
        periods,
        c.subscriber_since,
        [func.count(), _count_if(in_cycle), func.avg(cycle_seconds)],
        where,
    )

    series: list[dict[str, Any]] = []
    for i, period in enumerate(periods):
        lead_count, with_trial = leads.get(i, (0, 0))
        trial_count, converted = trials.get(i, (0, 0))
        new_subscribers, cycle_n, mean_seconds = subscribers.get(i, (0, 0, None))
        series.append(
            {
                "period": period.label.isoformat(),
                "leads": int(lead_count),
                "leads_with_trial": int(with_trial),
                "non_trial_leads": int(lead_count) - int(with_trial),
                "free_trials": int(trial_count),
                "trials_converted": int(converted),
                "trial_to_paid_rate": int(converted) / int(trial_count) if trial_count else None,
                "new_subscribers": int(new_subscribers),
                "avg_sales_cycle_days": float(mean_seconds) / SECONDS_PER_DAY if cycle_n else None,
                "sales_cycle_n": int(cycle_n),
            }
        )
    return series


def trial_cohorts(
    conn: Connection,
    start: date,
    end: date,
    interval: str,
    filters: Any = None,
    *,
    windows: Sequence[int] = COHORT_WINDOWS,
    tz: ZoneInfo | None = None,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The trial cohort table: per trial-start period, the share converted within 7, 14, 30, 60, 90 days.

    Args:
        conn: an open connection.
        start: first local day (its whole period included).
        end: last local day, included (its whole period included).
        interval: day, week, month, quarter or year.
        filters: ``--where`` expressions or a compiled clause; None = every customer.
        windows: the day windows (of 24 h), ascending.
        tz: the account zone (default ``FUNNELSYNC_TIMEZONE``).
        now: the current instant, for ``window_complete`` (default: the clock).

    Returns:
        One dict per period: ``period`` (first local day, ISO), ``size`` (trials started),
        ``converted`` (converted at any time since, not before the trial start) and ``rate``
        (converted / size), ``converted_within`` ({"7": n, …}) and ``share_within`` ({"7": fraction, …});
        shares and rate are None for an empty cohort. ``window_complete`` ({"7": bool, …}) tells
        whether every trial of the cohort has had the whole window (period end + N days has passed):
        an incomplete share can still rise.
    """
    periods = build_periods(start, end, interval, tz)
    where = _resolve_filter(conn, filters)
    d = _dialect(conn)
    aggregates = [func.count(), _count_if(_converted(d, None))]
    aggregates += [_count_if(_converted(d, n)) for n in windows]
    rows = _family(conn, d, periods, c.free_trial_started_at, aggregates, where)
    now = now or datetime.now(UTC)

    table: list[dict[str, Any]] = []
    for i, period in enumerate(periods):
        size, converted, *within = rows.get(i, (0, 0, *([0] * len(windows))))
        size = int(size)
        table.append(
            {
                "period": period.label.isoformat(),
                "size": size,
                "converted": int(converted),
                "rate": int(converted) / size if size else None,
                "converted_within": {str(n): int(k) for n, k in zip(windows, within, strict=True)},
                "share_within": {
                    str(n): (int(k) / size if size else None) for n, k in zip(windows, within, strict=True)
                },
                "window_complete": {str(n): period.end_utc + timedelta(days=n) <= now for n in windows},
            }
        )
    return table
