"""``funnelsync metrics``: the funnel series and ``funnelsync metrics cohorts``: the trial cohort table."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from funnelsync.cli.common import app, console, fail, get_engine, print_json

metrics_app = typer.Typer(
    help="Funnel metrics (leads, free trials, trial-to-paid rate, sales cycle) and the trial cohort table.",
)
app.add_typer(metrics_app, name="metrics")

SPARKS = "▁▂▃▄▅▆▇█"
# How far back the range reaches when --start is not given: a screenful of periods.
DEFAULT_SPAN = {"day": 30, "week": 12, "month": 12, "quarter": 8, "year": 5}

StartOpt = Annotated[
    str | None, typer.Option("--start", help="First day, YYYY-MM-DD (its whole period counts).")
]
EndOpt = Annotated[str | None, typer.Option("--end", help="Last day, YYYY-MM-DD, included (default: today).")]
IntervalOpt = Annotated[
    str, typer.Option("--interval", help="day, week (ISO, Monday), month, quarter or year.")
]
WhereOpt = Annotated[
    list[str] | None,
    typer.Option("--where", help="Filter such as 'country in (US, DE) AND tag = vip' (repeatable, ANDed)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON only.")]


def _parse_day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        fail(f"{option} {value!r}: expected a date as YYYY-MM-DD", 2)


def _range(start: str | None, end: str | None, interval: str) -> tuple[date, date]:
    """The requested days; missing ends default to today and a screenful of periods before it."""
    from funnelsync.timeutil import account_timezone
    from storage.periods import INTERVALS, period_start

    if interval not in INTERVALS:
        fail(f"--interval {interval!r}: use one of {', '.join(INTERVALS)}", 2)
    last = _parse_day(end, "--end") if end else datetime.now(account_timezone()).date()
    if start:
        return _parse_day(start, "--start"), last
    first = period_start(last, interval)
    for _ in range(DEFAULT_SPAN[interval] - 1):
        first = period_start(first - timedelta(days=1), interval)
    return first, last


def sparkline(values: list[float | None]) -> str:
    """One character per value scaled between the smallest and the largest; a blank for no value."""
    present = [v for v in values if v is not None]
    if not present:
        return " " * len(values)
    low, high = min(present), max(present)
    span = high - low
    out = []
    for value in values:
        if value is None:
            out.append(" ")
        elif span == 0:
            out.append(SPARKS[0] if high == 0 else SPARKS[len(SPARKS) // 2])
        else:
            out.append(SPARKS[round((value - low) / span * (len(SPARKS) - 1))])
    return "".join(out)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _days(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _run(compute: Any) -> Any:
    from storage.filter_grammar import FilterError

    engine = get_engine()
    try:
        with engine.connect() as conn:
            return compute(conn)
    except FilterError as exc:
        fail(f"--where: {exc}", 2)
    except ValueError as exc:
        fail(str(exc), 2)


@metrics_app.callback(invoke_without_command=True)
def metrics(
    ctx: typer.Context,
    start: StartOpt = None,
    end: EndOpt = None,
    interval: IntervalOpt = "month",
    within_days: Annotated[
        int | None,
        typer.Option(
            "--within-days", min=0, help="Count a trial as converted only within N days of its start."
        ),
    ] = None,
    where: WhereOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The funnel series: leads, free trials, trial-to-paid rate, new subscribers, sales cycle per period.

    Periods are cut in the account time zone (FUNNELSYNC_TIMEZONE); each includes its start and
    excludes its end; empty periods are listed with zeros.
    """
    if ctx.invoked_subcommand is not None:
        return
    from storage.metrics import funnel_series

    first, last = _range(start, end, interval)
    series = _run(lambda conn: funnel_series(conn, first, last, interval, within_days, where or None))
    if as_json:
        print_json(
            {"interval": interval, "start": first.isoformat(), "end": last.isoformat(), "series": series}
        )
        return
    _print_series(series, interval, first, last, within_days, where)


def _print_series(
    series: list[dict[str, Any]],
    interval: str,
    first: date,
    last: date,
    within_days: int | None,
    where: list[str] | None,
) -> None:
    title = f"Funnel by {interval}, {first.isoformat()} to {last.isoformat()}"
    if within_days is not None:
        title += f", conversions within {within_days} days"
    table = Table(
        title=title,
        caption=" AND ".join(where) if where else None,
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
        pad_edge=False,
        collapse_padding=True,
    )
    # Short headers: the ten columns must fit an 80-column terminal; docs/metrics.md spells them out.
    for header in (
        "Period",
        "Leads",
        "+trial",
        "-trial",
        "Trials",
        "Conv",
        "T→P",
        "New subs",
        "Cycle d",
        "n",
    ):
        table.add_column(header, justify="left" if header == "Period" else "right", no_wrap=True)
    for row in series:
        table.add_row(
            row["period"],
            str(row["leads"]),
            str(row["leads_with_trial"]),
            str(row["non_trial_leads"]),
            str(row["free_trials"]),
            str(row["trials_converted"]),
            _percent(row["trial_to_paid_rate"]),
            str(row["new_subscribers"]),
            _days(row["avg_sales_cycle_days"]),
            str(row["sales_cycle_n"]),
        )
    console.print(table)
    lines: list[tuple[str, str, Callable[[Any], str]]] = [
        ("Leads", "leads", str),
        ("Free trials", "free_trials", str),
        ("Trial→paid", "trial_to_paid_rate", _percent),
        ("New subscribers", "new_subscribers", str),
        ("Avg sales cycle", "avg_sales_cycle_days", lambda v: f"{_days(v)} d"),
    ]
    for label, key, fmt in lines:
        values = [row[key] for row in series]
        present = [v for v in values if v is not None]
        bounds = f"{fmt(min(present))} … {fmt(max(present))}" if present else "no data"
        console.print(f"{label:<16} {sparkline(values)}  {bounds}", markup=False, highlight=False)


@metrics_app.command("cohorts")
def cohorts(
    start: StartOpt = None,
    end: EndOpt = None,
    interval: IntervalOpt = "month",
    where: WhereOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The trial cohort table: per trial-start period, the share converted within 7, 14, 30, 60, 90 days."""
    from storage.metrics import COHORT_WINDOWS, trial_cohorts

    first, last = _range(start, end, interval)
    rows = _run(lambda conn: trial_cohorts(conn, first, last, interval, where or None))
    if as_json:
        print_json(
            {
                "interval": interval,
                "start": first.isoformat(),
                "end": last.isoformat(),
                "windows": list(COHORT_WINDOWS),
                "cohorts": rows,
            }
        )
        return
    table = Table(
        title=f"Trial cohorts by {interval}, {first.isoformat()} to {last.isoformat()}",
        caption=" AND ".join(where) if where else None,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("Cohort", no_wrap=True)
    table.add_column("Trials", justify="right")
    for n in COHORT_WINDOWS:
        table.add_column(f"≤{n} d", justify="right")
    table.add_column("Converted", justify="right")
    for row in rows:
        # A window that has not fully elapsed for the whole cohort is marked: its share can still rise.
        shares = [
            _percent(row["share_within"][str(n)]) + ("" if row["window_complete"][str(n)] else "*")
            for n in COHORT_WINDOWS
        ]
        table.add_row(row["period"], str(row["size"]), *shares, _percent(row["rate"]))
    console.print(table)
    if any(not done for row in rows for done in row["window_complete"].values()):
        console.print(
            "* window not over yet for every trial of the cohort: the share can still rise",
            markup=False,
            highlight=False,
        )
