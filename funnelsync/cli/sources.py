"""``funnelsync sources add|list|show|edit|disable|enable|remove``: the data sources, their settings
(secrets masked) and their state; the work is ``jobs.sources``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from connectors.registry import kinds
from funnelsync.cli.common import app, console, fail, get_engine, parse_settings, print_json

sources_app = typer.Typer(help="Add, list, show, edit, disable, enable and remove data sources.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")


@sources_app.command("add")
def sources_add(
    name: Annotated[str, typer.Argument(help="A unique name for the source.")],
    kind: Annotated[str, typer.Option("--kind", help=f"One of {', '.join(kinds())}.")],
    settings: Annotated[list[str] | None, typer.Option("--set", help="A setting as key=value (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the new source as JSON.")] = False,
) -> None:
    """Add a data source."""
    from jobs.sources import add_source

    given = parse_settings(settings)
    engine = get_engine()  # before writing secrets out: an uninitialised database must leave none behind
    try:
        row = add_source(engine, name, kind, given)
    except ValueError as exc:
        fail(str(exc))
    data = _source_dict(row)
    if as_json:
        print_json(data)
    else:
        console.print(f"Added source [bold]{row.name}[/] ({row.kind}, {row.uuid}).")


def _source_dict(row: Any) -> dict[str, Any]:
    from jobs.sources import masked_settings

    return {
        "uuid": row.uuid, "name": row.name, "kind": row.kind, "enabled": row.enabled,
        "settings": masked_settings(str(row.kind), dict(row.settings or {})),
        "created_at": row.created_at.isoformat(),
    }


@sources_app.command("list")
def sources_list(as_json: Annotated[bool, typer.Option("--json", help="Print the sources as JSON.")] = False) -> None:
    """List data sources with their customer counts and last sync."""
    from jobs.sources import describe_sources

    data = describe_sources(get_engine())
    if as_json:
        print_json(data)
        return
    table = Table("name", "kind", "uuid", "customers", "last sync", "enabled")
    for item in data:
        table.add_row(item["name"], item["kind"], item["uuid"], str(item["source_customers"]),
                      item["last_success_at"] or "never", "yes" if item["enabled"] else "no")
    console.print(table)


NameArg = Annotated[str, typer.Argument(help="The data source name (or ds_… uuid).")]


@sources_app.command("show")
def sources_show(name: NameArg, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show one data source: kind, state, settings (secrets masked), customers, last sync."""
    from jobs.sources import show_source
    from storage.sources import SourceNotFound

    try:
        data = show_source(get_engine(), name)
    except SourceNotFound as exc:
        fail(str(exc), 2)
    if as_json:
        print_json(data)
        return
    console.print(f"[bold]{data['name']}[/] ({data['kind']}, {data['uuid']})", highlight=False)
    console.print(f"  enabled:   {'yes' if data['enabled'] else 'no'}", highlight=False)
    console.print(f"  customers: {data['source_customers']:,}", highlight=False)
    console.print(f"  last sync: {data['last_success_at'] or 'never'}", highlight=False)
    console.print(f"  created:   {data['created_at']}", highlight=False)
    for key, value in sorted(data["settings"].items()):
        console.print(f"  {key} = {value}", highlight=False, markup=False)


@sources_app.command("edit")
def sources_edit(
    name: NameArg,
    settings: Annotated[list[str] | None, typer.Option("--set", help="A setting as key=value (repeatable).")] = None,
    unset: Annotated[list[str] | None, typer.Option("--unset", help="Remove a setting (repeatable).")] = None,
    rename: Annotated[str | None, typer.Option("--rename", help="A new name for the source.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the edited source as JSON.")] = False,
) -> None:
    """Change a source's settings (checked as `sources add` checks them) or its name."""
    from jobs.sources import edit_source
    from storage.sources import SourceNotFound

    given = parse_settings(settings)
    if not given and not unset and not rename:
        fail("nothing to change: give --set key=value, --unset key or --rename NEW")
    try:
        row, changed = edit_source(get_engine(), name, given, list(unset or []), rename)
    except SourceNotFound as exc:
        fail(str(exc), 2)
    except ValueError as exc:
        fail(str(exc))
    if as_json:
        print_json({**_source_dict(row), "changed": changed})
        return
    what = ", ".join(changed) if changed else "nothing (the values were already those)"
    console.print(f"Edited source [bold]{row.name}[/]: {what}.")


def _toggle(name: str, enabled: bool) -> None:
    from jobs.sources import set_enabled
    from storage.sources import SourceNotFound

    try:
        row, changed = set_enabled(get_engine(), name, enabled)
    except SourceNotFound as exc:
        fail(str(exc), 2)
    state = "enabled" if enabled else "disabled"
    if not changed:
        console.print(f"Source [bold]{row.name}[/] was already {state}.")
    elif enabled:
        console.print(f"Enabled source [bold]{row.name}[/]: sync-all and its schedules pull it again.")
    else:
        console.print(
            f"Disabled source [bold]{row.name}[/]: sync-all and the schedules skip it, its webhooks answer 409; "
            "its data stays."
        )


@sources_app.command("disable")
def sources_disable(name: NameArg) -> None:
    """Disable a source: sync-all and the schedules skip it, its webhooks are refused; its data stays."""
    _toggle(name, False)


@sources_app.command("enable")
def sources_enable(name: NameArg) -> None:
    """Enable a disabled source again."""
    _toggle(name, True)


def _footprint_lines(footprint: Any) -> list[str]:
    f = footprint
    return [
        f"  {f.source_customers:,} source customer records, {f.subscriptions:,} subscriptions, "
        f"{f.import_jobs:,} import jobs, its sync cursors",
        f"  {f.customers_deleted:,} customers that only this source knows",
        f"kept: {f.customers_kept:,} customers only it fed but edited by hand, "
        f"{f.manual_edits_kept:,} manual edits and {f.merge_events_kept:,} merge events of its customers "
        "(the edit and merge logs stay whole)",
    ]


@sources_app.command("remove")
def sources_remove(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", help="Remove without asking.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was removed as JSON.")] = False,
) -> None:
    """Remove a source and what only it holds; the merge and edit logs are kept. Asks for --yes."""
    from jobs.sources import remove_source, source_removal_preview
    from storage.sources import SourceNotFound

    engine = get_engine()
    try:
        row, footprint = source_removal_preview(engine, name)
    except SourceNotFound as exc:
        fail(str(exc), 2)
    if not yes:
        console.print(f"Removing source [bold]{row.name}[/] ({row.kind}) would delete:", highlight=False)
        for line in _footprint_lines(footprint):
            console.print(line, highlight=False)
        fail(f"source {row.name!r} not removed: run again with --yes to remove it")
    row, footprint = remove_source(engine, row.uuid)
    if as_json:
        print_json({"removed": row.name, "uuid": row.uuid, **footprint.to_dict()})
        return
    console.print(f"Removed source [bold]{row.name}[/] ({row.kind}, {row.uuid}):", highlight=False)
    for line in _footprint_lines(footprint):
        console.print(line, highlight=False)
