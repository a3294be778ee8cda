"""``funnelsync serve``: the HTTP API and the dashboard."""

from __future__ import annotations

from typing import Annotated

import typer

from funnelsync.cli.common import app, console, get_engine


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
