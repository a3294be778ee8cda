"""``funnelsync worker``: serve every deployment of prefect.yaml, schedules included, from one process.

For a single machine with no work pool: this process polls the Prefect server for due and manually
triggered runs of the funnelsync deployments and runs them itself. The Prefect server (and its UI)
comes from ``prefect server start``; to scale out, use ``prefect deploy --all`` and workers instead
(docs/scaling-out.md).
"""

from __future__ import annotations

import typer

from funnelsync.cli.common import app, console, fail, get_engine

UI_HINT = (
    "Start the Prefect server (and its UI) in another terminal with `prefect server start`, then point "
    "funnelsync at it: `prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api`."
)


def _api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def _check_server(url: str) -> None:
    import httpx

    try:
        response = httpx.get(url.rstrip("/") + "/health", timeout=5)
        response.raise_for_status()
    except Exception as exc:  # noqa: BLE001
        fail(f"the Prefect server at {url} does not answer ({type(exc).__name__}). {UI_HINT}")


@app.command()
def worker(
    limit: int = typer.Option(4, "--limit", min=1, help="Most flow runs at once in this process."),
    list_only: bool = typer.Option(False, "--list", help="Print the deployments and schedules, serve nothing."),
) -> None:
    """Serve all funnelsync deployments (sync-all hourly, merges, nightly metrics) from this process."""
    from flows.deployments import deployment_specs

    specs = deployment_specs()
    for spec in specs:
        schedules = spec.get("schedules") or []
        when = ", ".join(f"cron {s['cron']} {s.get('timezone', 'UTC')}" for s in schedules) or "on demand"
        console.print(f"  {spec['name']:<18} {when}", highlight=False)
    if list_only:
        return
    url = _api_url()
    if not url:
        fail(f"no Prefect server configured. {UI_HINT}")
    _check_server(url)
    get_engine()  # fail now, with the reason, if the database is missing or not initialised

    from prefect import serve

    from flows.deployments import served_deployments

    ui = url.rstrip("/").removesuffix("/api")
    console.print(
        f"Serving {len(specs)} deployments on the Prefect server {url}; the Prefect UI is at {ui} "
        "(runs, artifacts, events). Press Ctrl+C to stop.",
        highlight=False,
    )
    serve(*served_deployments(), limit=limit, print_starting_message=False)
