"""``funnelsync serve``: the HTTP API and the dashboard."""

from __future__ import annotations

from typing import Annotated

import typer

from funnelsync.cli.common import app, console, get_engine


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    key_cache_seconds: Annotated[float, typer.Option(
        "--key-cache-seconds", min=0.0,
        help="Trust an API key found live for this many seconds before checking it again (0: every "
             "request). A revoked key keeps working for at most this long.",
    )] = 5.0,
) -> None:
    """Serve the HTTP API and the dashboard."""
    import uvicorn

    from api.app import create_app

    engine = get_engine()
    console.print(f"funnelsync API on http://{host}:{port}/ (health: /health; auth: HTTP Basic, API key as user)")
    uvicorn.run(create_app(engine, key_cache_seconds=key_cache_seconds), host=host, port=port, log_level="info")
