"""``funnelsync sources add|list``: the data sources, their settings (secrets masked) and their state."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from connectors.registry import kinds
from funnelsync.cli.common import app, console, fail, get_engine, parse_settings, print_json

sources_app = typer.Typer(help="Add and list data sources.", no_args_is_help=True)
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
    return {
        "uuid": row.uuid, "name": row.name, "kind": row.kind, "enabled": row.enabled,
        "settings": {k: _mask(k, v) for k, v in (row.settings or {}).items()},
        "created_at": row.created_at.isoformat(),
    }


_SECRET_WORDS = ("key", "secret", "token", "password", "private")


def _mask(key: str, value: Any) -> Any:
    """Hide literal secrets in listings; references (env:…, prefect-secret:…) are safe to show."""
    if isinstance(value, str) and any(w in key.lower() for w in _SECRET_WORDS):
        if value.split(":", 1)[0] in ("env", "prefect-secret", "local-secret"):
            return value
        return "****"
    return value


@sources_app.command("list")
def sources_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List data sources with their customer counts and last sync."""
    from sqlalchemy import func, select

    from storage.schema import source_customers, sync_state
    from storage.sources import list_sources

    engine = get_engine()
    with engine.connect() as conn:
        rows = list_sources(conn)
        counts: dict[int, int] = dict(conn.execute(
            select(source_customers.c.data_source_id, func.count()).group_by(source_customers.c.data_source_id)
        ).all())
        last = dict(
            conn.execute(
                select(sync_state.c.data_source_id, func.max(sync_state.c.last_success_at)).group_by(
                    sync_state.c.data_source_id
                )
            ).all()
        )
    data = []
    for row in rows:
        item = _source_dict(row)
        item["source_customers"] = counts.get(row.id, 0)
        last_ok = last.get(row.id)
        item["last_success_at"] = last_ok.isoformat() if last_ok else None
        data.append(item)
    if as_json:
        print_json(data)
        return
    table = Table("name", "kind", "uuid", "customers", "last sync", "enabled")
    for item in data:
        table.add_row(item["name"], item["kind"], item["uuid"], str(item["source_customers"]),
                      item["last_success_at"] or "never", "yes" if item["enabled"] else "no")
    console.print(table)
