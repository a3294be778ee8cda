"""``funnelsync bulk-edit``: set lead status, owner, dates, tags or custom attributes for many customers.

Edits are manual edits (overrides): they survive every re-sync and re-import; the rules are
``funnelsync.edit_rules``'s, and a customer that breaks one is skipped with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from funnelsync.cli.common import app, console, err_console, fail, get_engine, print_json
from funnelsync.cli.customers import SetOption, assignments


@app.command("bulk-edit")
def bulk_edit(
    set_: SetOption = None,
    ids: Annotated[Path | None, typer.Option("--ids", help="A file of customer references, one a line "
                                             "(cus_… uuid, SOURCE:EXTERNAL_ID or email).")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help='A filter, e.g. "country = US AND tag = vip" '
                                                    "(repeatable, ANDed).")] = None,
    csv_file: Annotated[Path | None, typer.Option("--csv", help="A CSV naming customers (customer, or "
                                                  "data_source + external_id, or email) with per-row values.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and count, change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the JSON summary.")] = False,
) -> None:
    """Set lead status, owner, lead and trial dates, tags or custom attributes for many customers."""
    from connectors.files.rows import FileUnreadable
    from jobs.edits import (
        BULK_FIELDS,
        EditValueError,
        account_zone,
        apply_bulk_edit,
        parse_assignments,
        targets_from_csv,
        targets_from_filter,
        targets_from_refs,
    )
    from storage.filter_grammar import FilterError

    chosen = [name for name, value in (("--ids", ids), ("--where", where), ("--csv", csv_file)) if value]
    if len(chosen) != 1:
        fail("choose the customers with exactly one of --ids FILE, --where FILTER or --csv FILE", 2)
    try:
        edits = parse_assignments(assignments(set_), BULK_FIELDS, account_zone())
    except EditValueError as exc:
        fail(str(exc), 2)
    if not edits and csv_file is None:
        fail("nothing to set: pass --set field=value", 2)
    engine = get_engine()
    try:
        if ids is not None:
            if not ids.is_file():
                fail(f"{ids}: no such file", 2)
            # Decode the whole file before any batch is applied: a bad byte on line 5,000 must not leave the
            # first batches edited, and the codec's own message names neither the file nor the fix.
            with ids.open("rb") as check:
                for line_number, raw in enumerate(check, 1):
                    try:
                        raw.decode("utf-8")
                    except UnicodeDecodeError:
                        fail(f"{ids}: line {line_number} is not UTF-8 text: save the list as UTF-8 "
                             "(nothing was changed)", 2)
            handle = ids.open(encoding="utf-8-sig")
            targets = targets_from_refs(engine, handle, edits)
        elif where:
            targets = targets_from_filter(engine, where, edits)
        else:
            targets = targets_from_csv(engine, csv_file, edits, account_zone())  # type: ignore[arg-type]
        with Progress(SpinnerColumn(), TextColumn("[bold]Bulk edit"), TextColumn("{task.completed} customers"),
                      TimeElapsedColumn(), console=err_console, transient=True,
                      disable=as_json or not err_console.is_terminal) as bar:  # no stray blank line in a pipe
            task = bar.add_task("bulk", total=None)
            summary = apply_bulk_edit(engine, targets, dry_run=dry_run,
                                      progress=lambda n: bar.update(task, completed=n))
    except FilterError as exc:
        fail(str(exc), 2)
    except FileUnreadable as exc:
        fail(str(exc), 2)
    except (EditValueError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        print_json(summary.as_json())
        return
    for note in summary.notes:
        console.print(note, highlight=False)
    table = Table(title="Bulk edit" + (" (dry run: nothing changed)" if dry_run else ""))
    table.add_column("applied", justify="right")
    table.add_column("skipped", justify="right")
    table.add_row(str(summary.applied), str(summary.skipped))
    console.print(table)
    if summary.skips:
        skips = Table(title="Skipped" + (" (first 20)" if len(summary.skips) > 20 else ""))
        skips.add_column("customer")
        skips.add_column("reason")
        for item in summary.skips[:20]:
            skips.add_row(item["customer"], item["reason"])
        console.print(skips)
