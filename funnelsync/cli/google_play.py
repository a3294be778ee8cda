"""``funnelsync import google-play-sales FILE --source NAME``: a Google Play Daily Sales Report.

Exit codes (as every import's): 0 every row imported; 3 some rows skipped (the others imported); 2 the
file could not be read (nothing imported); 1 any other failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from funnelsync.cli.common import console, fail, get_engine, print_json
from funnelsync.cli.imports import import_app


@import_app.command("google-play-sales")
def google_play_sales(
    file: Annotated[
        Path, typer.Argument(help="sales/salesreport_YYYYMM.zip from the Play Console bucket, or its CSV.")
    ],
    source: Annotated[str, typer.Option("--source", help="The google_play data source (created if missing).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print only the JSON summary.")] = False,
) -> None:
    """Import trial starts and first payments from a Google Play Daily Sales Report."""
    from connectors.files.google_play_report import SalesReportError
    from jobs.google_play_sales import import_sales_report

    if not file.is_file():
        fail(f"{file}: no such file", 2)
    try:
        summary = import_sales_report(get_engine(), source, file)
    except SalesReportError as exc:
        fail(str(exc), 2)
    except ValueError as exc:
        fail(str(exc), 1)
    if as_json:
        print_json(summary)
        _exit_for(summary)
        return
    table = Table("subscriptions", "created", "updated", "unchanged", "no trial or payment", "skipped rows",
                  title=f"{summary['file']} → {summary['source']}")
    table.add_row(
        *(str(summary[k]) for k in ("subscriptions", "created", "updated", "unchanged", "no_trial_or_payment")),
        str(len(summary["skipped_rows"])),
    )
    console.print(table)
    for row in summary["skipped_rows"][:20]:
        console.print(f"  line {row['line']}: {row['reason']}", markup=False)
    _exit_for(summary)


@import_app.command("google-play-bucket")
def google_play_bucket(
    source: Annotated[str, typer.Option("--source", help="The google_play data source with a bucket setting.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print only the JSON summary.")] = False,
) -> None:
    """Read the monthly sales reports that changed from the source's Cloud Storage bucket (as `funnelsync sync`
    does: the source's sales_reports stream)."""
    from connectors.base import SettingsError
    from connectors.http import ConnectorError
    from jobs.google_play_bucket import pull_sales_reports
    from jobs.sync import SyncError

    try:
        summary = pull_sales_reports(get_engine(), source)
    except (SettingsError, SyncError, LookupError) as exc:
        fail(str(exc), 2)
    except ConnectorError as exc:
        fail(str(exc), 1)
    if as_json:
        print_json(summary)
        return
    table = Table("months read", "created", "updated", "unchanged",
                  title=f"gs://{summary['bucket']} → {summary['source']}")
    table.add_row(", ".join(m["month"] for m in summary["read"]) or "none",
                  *(str(summary[k]) for k in ("created", "updated", "unchanged")))
    console.print(table)
    final = summary["final_through"] or "none yet"
    console.print(f"{len(summary['read'])} of {summary['reports']} reports read; final through {final}", markup=False)


def _exit_for(summary: dict[str, object]) -> None:
    if summary["skipped_rows"]:
        raise typer.Exit(3)
