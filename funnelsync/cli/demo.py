"""``funnelsync demo``: the real flows end to end on local stand-ins, then the funnel as a table."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from funnelsync.cli.common import app, console, fail


@app.command()
def demo(
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="The leads CSV to import (default: the bundled samples/leads.csv).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Prefect's flow and task logs.")] = False,
) -> None:
    """Sync local Stripe and Chargebee stand-ins and a CSV of leads through the Prefect flows, merge, show metrics."""
    # Prefect reads its settings once, when imported: quiet logs and no analytics unless asked otherwise.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from flows.demo import SAMPLE_CSV, run_demo
    from storage.db import database_url, redacted

    path = csv_file or SAMPLE_CSV
    if not path.is_file():
        fail(f"no leads CSV at {path}: run the demo from a funnelsync checkout or pass --csv FILE")
    api_url = os.environ.get("PREFECT_API_URL")
    console.print(f"Database: {redacted(database_url())}", highlight=False)
    console.print(
        f"Prefect: {'server ' + api_url if api_url else 'a temporary local server (started by Prefect, ~15 s)'}",
        highlight=False,
    )
    try:
        result = run_demo(path, say=lambda line: console.print(f"  {line}", highlight=False))
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback: the demo is the first thing a new user runs
        fail(f"demo failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")

    console.print(funnel_table(result))
    if api_url:
        ui = api_url.rstrip("/").removesuffix("/api")
        console.print(f"Open the Prefect UI at {ui} to see these runs, their artifacts and the customer events.")
    else:
        console.print(
            "To see the runs, artifacts (per-stream counts, progress, funnel metrics) and customer events in the "
            "Prefect UI: run `prefect server start` in another terminal, then "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api`, run `funnelsync demo` again and open "
            "http://127.0.0.1:4200. `funnelsync worker` then runs the scheduled syncs.",
            highlight=False,
        )


# Headers broken over two lines so the seven columns fit an 80-column terminal with every word whole.
FUNNEL_HEADERS = ("Month", "Leads", "Free\nTrials", "Converted", "Trial-to-\nPaid", "New\nSubscribers",
                  "Avg Sales\nCycle")


def funnel_table(result: Any) -> Table:
    """The demo's funnel by month as a table (``result`` is the demo's ``DemoResult``)."""
    table = Table(title=f"Funnel by month ({result.customers} customers, {result.merged} merges)")
    for column in FUNNEL_HEADERS:
        table.add_column(column, justify="left" if column == "Month" else "right")
    for row in result.series:
        rate = row["trial_to_paid_rate"]
        cycle = row["avg_sales_cycle_days"]
        table.add_row(
            str(row["period"])[:7],
            f"{row['leads']:,}",
            f"{row['free_trials']:,}",
            f"{row['trials_converted']:,}",
            "–" if rate is None else f"{100 * rate:.1f}%",
            f"{row['new_subscribers']:,}",
            "–" if cycle is None else f"{cycle:.1f} days",
        )
    return table
