"""The ``refresh-metrics`` flow: the month's funnel figures as a markdown artifact.

The figures are computed by ``storage.metrics.funnel_series`` (one GROUP BY over the canonical
customers), so the artifact always shows what ``funnelsync metrics`` shows. Run nightly, it keeps a
current "funnel-metrics" artifact in the Prefect UI; the previous month is shown beside the current
one because trial-to-paid is a cohort figure that keeps rising as trials convert later (docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

from prefect import flow, get_run_logger, task

from flows.runtime import TASK_RETRIES, TASK_RETRY_DELAYS, TASK_RETRY_JITTER, retry_if_transient, task_engine

METRIC_ROWS: tuple[tuple[str, str], ...] = (
    ("Leads", "leads"),
    ("Free Trials", "free_trials"),
    ("Trial-to-Paid", "trial_to_paid_rate"),
    ("Average Sales Cycle Length", "avg_sales_cycle_days"),
)


def month_bounds(month: str | None, today: date | None = None) -> tuple[date, date, date]:
    """(previous month start, month start, next month start) for ``YYYY-MM`` (default: this month)."""
    if month:
        try:
            start = datetime.strptime(month.strip(), "%Y-%m").date()
        except ValueError:
            raise ValueError(f"month {month!r}: expected YYYY-MM, e.g. 2025-01") from None
    else:
        start = (today or datetime.now(UTC).date()).replace(day=1)
    previous = date(start.year - 1, 12, 1) if start.month == 1 else date(start.year, start.month - 1, 1)
    following = date(start.year + 1, 1, 1) if start.month == 12 else date(start.year, start.month + 1, 1)
    return previous, start, following


def format_metric(key: str, value: Any, row: Mapping[str, Any]) -> str:
    """A figure for people: counts with separators, the rate as a percentage, days with one decimal."""
    if value is None:
        return "–"
    if key == "trial_to_paid_rate":
        return f"{100 * float(value):.1f}% ({row.get('trials_converted', 0):,} of {row.get('free_trials', 0):,})"
    if key == "avg_sales_cycle_days":
        return f"{float(value):.1f} days (n = {row.get('sales_cycle_n', 0):,})"
    return f"{int(value):,}"


def metrics_markdown(series: Sequence[Mapping[str, Any]], title: str) -> str:
    """A markdown table: one row per metric, one column per period."""
    periods = [str(row["period"])[:7] for row in series or []]
    lines = [f"# {title}", "", "| Metric | " + " | ".join(periods) + " |", "|---|" + "---:|" * len(periods)]
    for label, key in METRIC_ROWS:
        lines.append(f"| {label} | " + " | ".join(format_metric(key, row.get(key), row) for row in series) + " |")
    lines += [
        "",
        (
            "Trial-to-Paid is a cohort figure: the trials started in the month that have converted since, so a "
            "past month's rate rises as its trials convert. Average Sales Cycle Length: mean days from lead "
            "created to subscriber since, over the month's new subscribers."
        ),
    ]
    return "\n".join(lines)


def _series(result: Any) -> list[dict[str, Any]]:
    series = result.get("series") if isinstance(result, Mapping) else result
    return [dict(row) if isinstance(row, Mapping) else dict(vars(row)) for row in series or []]


@task(
    name="compute-funnel-metrics",
    retries=TASK_RETRIES,
    retry_delay_seconds=TASK_RETRY_DELAYS,
    retry_jitter_factor=TASK_RETRY_JITTER,
    retry_condition_fn=retry_if_transient,
)
def compute_metrics_task(start: str, end: str, interval: str = "month") -> list[dict[str, Any]]:
    """The funnel series from the period of ``start`` to the period of ``end`` (both included)."""
    from storage.metrics import funnel_series

    with task_engine() as engine, engine.connect() as conn:
        result = funnel_series(conn, date.fromisoformat(start), date.fromisoformat(end), interval)
    rows = _series(result)
    for row in rows:
        if isinstance(row.get("period"), (date, datetime)):
            row["period"] = row["period"].isoformat()
    return rows


@flow(name="refresh-metrics", log_prints=False)
def refresh_metrics_flow(month: str | None = None) -> list[dict[str, Any]]:
    """Compute the month's Leads, Free Trials, Trial-to-Paid and Average Sales Cycle Length.

    Publishes them (with the previous month beside them) as the ``funnel-metrics`` markdown artifact.

    Args:
        month: ``YYYY-MM``; default the current month (UTC).
    """
    from prefect.artifacts import create_markdown_artifact

    previous, start, _ = month_bounds(month)
    series = compute_metrics_task(previous.isoformat(), start.isoformat(), "month")
    create_markdown_artifact(
        markdown=metrics_markdown(series, f"Funnel metrics, {start:%B %Y}"),
        key="funnel-metrics",
        description=f"Leads, Free Trials, Trial-to-Paid and Average Sales Cycle Length for {start:%Y-%m}",
    )
    current = next((row for row in series if str(row["period"]).startswith(start.isoformat()[:7])), None)
    if current:
        get_run_logger().info(
            "%s: %s leads, %s free trials, trial-to-paid %s, average sales cycle %s",
            f"{start:%Y-%m}",
            format_metric("leads", current.get("leads"), current),
            format_metric("free_trials", current.get("free_trials"), current),
            format_metric("trial_to_paid_rate", current.get("trial_to_paid_rate"), current),
            format_metric("avg_sales_cycle_days", current.get("avg_sales_cycle_days"), current),
        )
    return series
