"""``funnelsync api-keys create|revoke|list``: the keys of the HTTP API (stored hashed, shown once)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from funnelsync.cli.common import app, console, fail, get_engine, print_json

api_keys_app = typer.Typer(help="Create and list API keys for the HTTP API.", no_args_is_help=True)
app.add_typer(api_keys_app, name="api-keys")


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
