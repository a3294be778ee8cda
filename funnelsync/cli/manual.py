"""``funnelsync customers add|edit`` and ``funnelsync bulk-edit``: manual entry and overrides.

Edits are manual edits (overrides): they survive every re-sync and re-import. See jobs/edits.py
for the rules (no lead status on a subscriber, no future dates, no trial before the lead date).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from funnelsync.cli.common import app, console, err_console, fail, get_engine, print_json
from funnelsync.cli.core import customers_app

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="field=value (repeatable): lead_status, owner, lead_created_at, "
                 "free_trial_started_at, tags=a,b (adds), tag.<name>=true|false, custom.<key>[:type]=value."),
]


def _pairs(options: list[str] | None) -> list[tuple[str, str]]:
    pairs = []
    for option in options or []:
        name, sep, value = option.partition("=")
        if not sep or not name.strip():
            fail(f"--set {option!r}: expected field=value", 2)
        pairs.append((name.strip(), value))
    return pairs


def _show(engine: Any, customer_id: int, as_json: bool, title: str) -> None:
    from storage.customers import customer_view
    from storage.edits import manual_edits_of

    with engine.connect() as conn:
        item = customer_view(conn, [customer_id])[0]
        item["manual_edits"] = manual_edits_of(conn, customer_id)
    item.pop("id", None)
    if as_json:
        print_json(item)
        return
    table = Table(title=title, show_header=False)
    for key, value in item.items():
        table.add_row(key, "" if value is None else str(value))
    console.print(table)


@customers_app.command("add")
def customers_add(
    source: Annotated[str, typer.Option("--source", help="The custom data source (created if missing).")],
    external_id: Annotated[str, typer.Option("--external-id", help="The customer's id in that source.")],
    name: Annotated[str, typer.Option("--name", help="Customer or company name.")],
    email: Annotated[str | None, typer.Option("--email")] = None,
    company: Annotated[str | None, typer.Option("--company")] = None,
    country: Annotated[str | None, typer.Option("--country", help="ISO-3166 alpha-2 code.")] = None,
    owner: Annotated[str | None, typer.Option("--owner")] = None,
    lead_status: Annotated[str | None, typer.Option("--lead-status")] = None,
    lead_created_at: Annotated[str | None, typer.Option("--lead-created-at", help="A date (account time zone).")] = None,
    free_trial_started_at: Annotated[str | None, typer.Option("--free-trial-started-at")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new customer as JSON.")] = False,
) -> None:
    """Add a lead or customer by hand."""
    from jobs.edits import EDIT_FIELDS, EditValueError, account_zone, add_customer, parse_assignments
    from jobs.imports import SourceKindMismatch

    if not external_id.strip():
        fail("--external-id must not be empty", 2)
    given = {
        "name": name, "email": email, "company": company, "country": country, "owner": owner,
        "lead_status": lead_status, "lead_created_at": lead_created_at,
        "free_trial_started_at": free_trial_started_at,
    }
    try:
        values = parse_assignments([(k, v) for k, v in given.items() if v is not None], EDIT_FIELDS, account_zone())
    except EditValueError as exc:
        fail(str(exc), 2)  # a value that does not parse is a usage error, as for `customers edit --set`
    try:
        engine = get_engine()
        customer_id = add_customer(engine, source, external_id.strip(), values)
    except (EditValueError, SourceKindMismatch, ValueError) as exc:
        fail(str(exc))
    _show(engine, customer_id, as_json, "Customer added")


@customers_app.command("edit")
def customers_edit(
    ref: Annotated[str, typer.Argument(help="A customer uuid (cus_…) or SOURCE:EXTERNAL_ID.")],
    set_: SetOption = None,
    unset: Annotated[
        list[str] | None, typer.Option("--unset", help="Drop the manual edit of a field (the sources' value shows again).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the customer as JSON.")] = False,
) -> None:
    """Edit a customer by hand (stored as overrides that survive every re-sync)."""
    from jobs.edits import EDIT_FIELDS, EditValueError, account_zone, edit_customer, parse_assignments
    from storage.customers import missing_customer_message, resolve_customer

    pairs = _pairs(set_)
    if not pairs and not unset:
        fail("nothing to change: pass --set field=value or --unset field", 2)
    try:
        edits = parse_assignments(pairs, EDIT_FIELDS, account_zone())
    except EditValueError as exc:
        fail(str(exc), 2)
    for name in unset or []:
        # A typo ('--unset lead_created') used to pass silently and leave the override in place.
        if name not in EDIT_FIELDS and not name.startswith(("custom.", "tag.")):
            fail(f"--unset {name!r}: not an editable field: use {', '.join(EDIT_FIELDS)}, tag.<name> or "
                 "custom.<key>", 2)
    engine = get_engine()
    with engine.connect() as conn:
        customer_id = resolve_customer(conn, ref)
        if customer_id is None:
            fail(missing_customer_message(conn, ref))
    try:
        edit_customer(engine, customer_id, edits, unset or [])
    except (EditValueError, ValueError) as exc:
        fail(f"{ref}: {exc}")
    _show(engine, customer_id, as_json, "Customer edited")


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
        edits = parse_assignments(_pairs(set_), BULK_FIELDS, account_zone())
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
