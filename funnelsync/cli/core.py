"""Core commands: init, sources, customers (list/show), api-keys, serve."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from connectors.registry import kinds
from funnelsync.cli.common import app, console, fail, get_engine, parse_settings, print_json

sources_app = typer.Typer(help="Add and list data sources.", no_args_is_help=True)
customers_app = typer.Typer(help="List, show, add and edit customers.", no_args_is_help=True)
api_keys_app = typer.Typer(help="Create and list API keys for the HTTP API.", no_args_is_help=True)
app.add_typer(sources_app, name="sources")
app.add_typer(customers_app, name="customers")
app.add_typer(api_keys_app, name="api-keys")


@app.command()
def init() -> None:
    """Create or upgrade the database to the newest schema (safe to run twice)."""
    from storage.bulk_load import restore_deferred
    from storage.db import current_revision, database_url, head_revision, make_engine, redacted, upgrade

    url = database_url()
    try:
        engine = make_engine(url)
        before = current_revision(engine)
        upgrade(engine)
        rebuilt = restore_deferred(engine)
    except Exception as exc:
        fail(f"cannot initialise {redacted(url)}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    head = head_revision()
    if rebuilt:
        console.print(f"Rebuilt {len(rebuilt)} index(es) or foreign key(s) an interrupted load had left out: {', '.join(rebuilt)}.")
    if before == head:
        console.print(f"Database {redacted(url)} is up to date (schema {head}).")
    else:
        console.print(f"Database {redacted(url)} upgraded from {before or 'empty'} to schema {head}.")


# ------------------------------------------------------------------ sources


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
        last = dict(conn.execute(
            select(sync_state.c.data_source_id, func.max(sync_state.c.last_success_at)).group_by(sync_state.c.data_source_id)
        ).all())
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


# ------------------------------------------------------------------ customers


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
                    sys.stdout.write(("\n  " if first else ",\n  ") + json.dumps({k: item[k] for k in CUSTOMER_JSON_KEYS}))
                    first = False
                after = ids[-1]
                if left is not None:
                    left -= len(ids)
            sys.stdout.write("\n]\n" if not first else "]\n")
            return
        ids = list_customer_ids(conn, source=source, limit=limit or 50)
        items = customer_view(conn, ids)
    table = Table("uuid", "name", "email", "status", "lead created", "trial started", "subscriber since", "sources")
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
    from storage.customers import customer_view, missing_customer_message, resolve_customer
    from storage.edits import manual_edits_of

    engine = get_engine()
    with engine.connect() as conn:
        cid = resolve_customer(conn, ref)
        if cid is None:
            fail(missing_customer_message(conn, ref))
        item = customer_view(conn, [cid])[0]
        item["manual_edits"] = manual_edits_of(conn, cid)
    item.pop("id", None)
    if as_json:
        print_json(item)
        return
    table = Table(show_header=False)
    for key, value in item.items():
        table.add_row(key, "" if value is None else str(value))
    console.print(table)


# ------------------------------------------------------------------ api keys


@api_keys_app.command("create")
def api_keys_create(name: Annotated[str, typer.Argument(help="What the key is for.")]) -> None:
    """Create an API key and print it (only the key, on stdout; it is shown once)."""
    from storage.api_keys import create_api_key

    engine = get_engine()
    try:
        with engine.begin() as conn:
            key = create_api_key(conn, name)
    except ValueError as exc:
        fail(str(exc))
    print(key)


@api_keys_app.command("revoke")
def api_keys_revoke(
    name_or_prefix: Annotated[str, typer.Argument(help="The key's name, or its prefix as `api-keys list` shows it.")],
) -> None:
    """Revoke API keys: requests with them answer 401 from now on."""
    from storage.api_keys import revoke_api_keys

    with get_engine().begin() as conn:
        count = revoke_api_keys(conn, name_or_prefix)
    if not count:
        fail(f"no live API key named or starting with {name_or_prefix!r} (see funnelsync api-keys list)")
    console.print(f"Revoked {count} API key{'s' if count != 1 else ''}.")


@api_keys_app.command("list")
def api_keys_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List API keys (names and prefixes only)."""
    from storage.api_keys import list_api_keys

    with get_engine().connect() as conn:
        keys = list_api_keys(conn)
    if as_json:
        print_json(keys)
        return
    table = Table("name", "prefix", "created", "revoked")
    for k in keys:
        table.add_row(str(k["name"]), f"{k['prefix']}…", str(k["created_at"]), str(k["revoked_at"] or ""))
    console.print(table)


# ------------------------------------------------------------------ serve


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Serve the HTTP API and the dashboard."""
    import uvicorn

    from api.app import create_app

    engine = get_engine()
    console.print(f"funnelsync API on http://{host}:{port}/ (health: /health; auth: HTTP Basic, API key as user)")
    uvicorn.run(create_app(engine), host=host, port=port, log_level="info")
