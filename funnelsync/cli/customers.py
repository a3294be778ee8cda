"""``funnelsync customers list|show|add|edit``: the customers, and manual entry and edits by hand.

Edits are manual edits (overrides): they survive every re-sync and re-import. The rules are
``funnelsync.edit_rules``'s (no lead status on a subscriber, no future dates, no trial before the lead date).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from funnelsync.cli.common import app, console, err_console, fail, get_engine, print_json

customers_app = typer.Typer(help="List, show, add and edit customers.", no_args_is_help=True)
app.add_typer(customers_app, name="customers")

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="field=value (repeatable): lead_status, owner, lead_created_at, "
                 "free_trial_started_at, tags=a,b (adds), tag.<name>=true|false, custom.<key>[:type]=value."),
]


def assignments(options: list[str] | None) -> list[tuple[str, str]]:
    """The ``(field, value)`` pairs of repeated ``--set field=value`` options (exit 2 on a malformed one)."""
    pairs = []
    for option in options or []:
        name, sep, value = option.partition("=")
        if not sep or not name.strip():
            fail(f"--set {option!r}: expected field=value", 2)
        pairs.append((name.strip(), value))
    return pairs


def _show(engine: Any, customer_id: int, as_json: bool, title: str | None = None) -> None:
    from storage.customers import customer_view
    from storage.edits import manual_edits_of

    with engine.connect() as conn:
        item = customer_view(conn, [customer_id])[0]
        item["manual_edits"] = manual_edits_of(conn, customer_id)
    item.pop("id", None)
    if as_json:
        print_json(_as_json(item))
        return
    table = Table(title=title, show_header=False)
    for key, value in item.items():
        table.add_row(key, "" if value is None else str(value))
    console.print(table)


def _as_json(item: dict[str, Any]) -> dict[str, Any]:
    """A customer for --json: empty text as the HTTP API gives it (``storage.customers.TEXT_NEVER_NULL``)."""
    from storage.customers import text_never_null

    return text_never_null(item)


CUSTOMER_JSON_KEYS = (
    "uuid", "external_ids", "data_sources", "name", "email", "company", "country", "status", "lead_status",
    "lead_created_at", "free_trial_started_at", "subscriber_since", "tags", "custom",
)


@customers_app.command("list")
def customers_list(
    source: Annotated[str | None, typer.Option("--source", help="Only customers linked to this source.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="At most this many.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List customers (oldest first)."""
    from storage.customers import customer_view, list_customer_ids
    from storage.sources import SourceNotFound, require_source

    engine = get_engine()
    with engine.connect() as conn:
        if source is not None:
            try:
                require_source(conn, source)
            except SourceNotFound as exc:
                fail(str(exc))
        if as_json:
            # Stream in pages so a million customers print in bounded memory.
            import json
            import sys

            sys.stdout.write("[")
            first = True
            after, left = 0, limit
            while left is None or left > 0:
                page = min(1000, left) if left is not None else 1000
                ids = list_customer_ids(conn, source=source, after_id=after, limit=page)
                if not ids:
                    break
                for item in customer_view(conn, ids):
                    shown = _as_json(item)
                    entry = json.dumps({k: shown[k] for k in CUSTOMER_JSON_KEYS})
                    sys.stdout.write(("\n  " if first else ",\n  ") + entry)
                    first = False
                after = ids[-1]
                if left is not None:
                    left -= len(ids)
            sys.stdout.write("\n]\n" if not first else "]\n")
            return
        ids = list_customer_ids(conn, source=source, limit=limit or 50)
        items = customer_view(conn, ids)
    # One-word headers: eight columns share an 80-column terminal and Rich keeps a one-word header whole.
    table = Table("uuid", "name", "email", "status", "lead", "trial", "paid", "sources",
                  caption="lead: lead created, trial: trial started, paid: subscriber since")
    for item in items:
        table.add_row(item["uuid"], item["name"] or "", item["email"] or "", item["status"],
                      _short(item["lead_created_at"]), _short(item["free_trial_started_at"]),
                      _short(item["subscriber_since"]), ", ".join(item["data_sources"]))
    console.print(table)
    if limit is None and len(items) == 50:
        console.print("(first 50 shown: use --limit or --json for more)")


def _short(value: str | None) -> str:
    return value[:16].replace("T", " ") if value else ""


@customers_app.command("show")
def customers_show(
    ref: Annotated[str, typer.Argument(help="A customer uuid (cus_…) or SOURCE:EXTERNAL_ID.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show one customer with its sources and manual edits."""
    from storage.customers import missing_customer_message, resolve_customer

    engine = get_engine()
    with engine.connect() as conn:
        cid = resolve_customer(conn, ref)
        if cid is None:
            fail(missing_customer_message(conn, ref))
    _show(engine, cid, as_json)


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
    lead_created_at: Annotated[
        str | None, typer.Option("--lead-created-at", help="A date (account time zone).")
    ] = None,
    free_trial_started_at: Annotated[str | None, typer.Option("--free-trial-started-at")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="tags=a,b, tag.<name>=true or custom.<key>[:type]=value (repeatable; "
                     "custom attributes typed as `customers edit` types them)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new customer as JSON.")] = False,
) -> None:
    """Add a lead or customer by hand."""
    from jobs.edits import EDIT_FIELDS, EditValueError, account_zone, add_customer, parse_assignments
    from jobs.imports import SourceKindMismatch

    pairs = assignments(set_)
    for field_name, _ in pairs:
        if field_name != "tags" and not field_name.startswith(("tag.", "custom.")):
            fail(f"--set {field_name}=…: `customers add` sets only tags, tag.<name> and custom.<key> this way "
                 f"(the other fields have their own options, e.g. --{field_name.replace('_', '-')})", 2)

    if not external_id.strip():
        fail("--external-id must not be empty", 2)
    given = {
        "name": name, "email": email, "company": company, "country": country, "owner": owner,
        "lead_status": lead_status, "lead_created_at": lead_created_at,
        "free_trial_started_at": free_trial_started_at,
    }
    try:
        values = parse_assignments([(k, v) for k, v in given.items() if v is not None], EDIT_FIELDS, account_zone())
        attributes = parse_assignments(pairs, EDIT_FIELDS, account_zone())
    except EditValueError as exc:
        fail(str(exc), 2)  # a value that does not parse is a usage error, as for `customers edit --set`
    notes: list[str] = []
    try:
        engine = get_engine()
        customer_id = add_customer(engine, source, external_id.strip(), values, attributes, notes=notes)
    except (EditValueError, SourceKindMismatch, ValueError) as exc:
        fail(str(exc))
    for note in notes:
        err_console.print(note, highlight=False)
    _show(engine, customer_id, as_json, "Customer added")


@customers_app.command("edit")
def customers_edit(
    ref: Annotated[str, typer.Argument(help="A customer uuid (cus_…) or SOURCE:EXTERNAL_ID.")],
    set_: SetOption = None,
    unset: Annotated[
        list[str] | None,
        typer.Option("--unset", help="Drop the manual edit of a field (the sources' value shows again)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the customer as JSON.")] = False,
) -> None:
    """Edit a customer by hand (stored as overrides that survive every re-sync)."""
    from jobs.edits import EDIT_FIELDS, EditValueError, account_zone, edit_customer, parse_assignments
    from storage.customers import missing_customer_message, resolve_customer

    pairs = assignments(set_)
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
        notes = edit_customer(engine, customer_id, edits, unset or [])
    except (EditValueError, ValueError) as exc:
        fail(f"{ref}: {exc}")
    for note in notes:
        err_console.print(note, highlight=False)
    _show(engine, customer_id, as_json, "Customer edited")
