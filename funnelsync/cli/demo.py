"""``funnelsync demo``: the real flows end to end on local stand-ins, then the funnel as a table."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from funnelsync.cli.common import app, console, fail, get_engine

# Where the bundled leads are; flows.demo reads the same file (imported lazily: it imports Prefect).
SAMPLE_CSV = Path(__file__).resolve().parents[2] / "samples" / "leads.csv"
DEMO_KEY_NAME = "demo"


@app.command()
def demo(
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="The leads CSV to import (default: the bundled samples/leads.csv).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show Prefect's flow and task logs.")] = False,
    serve: Annotated[
        bool, typer.Option("--serve", help="Afterwards keep the API and the dashboard running on 127.0.0.1.")
    ] = False,
    port: Annotated[int, typer.Option("--port", help="With --serve: the TCP port.")] = 8000,
    ui: Annotated[
        bool,
        typer.Option("--ui", help="Start a local Prefect server first (stopped on exit) to open the runs in its UI."),
    ] = False,
) -> None:
    """Sync local Stripe and Chargebee stand-ins and a CSV of leads through the Prefect flows, merge, show metrics."""
    # Prefect reads its settings once, when imported: quiet logs and no analytics unless asked otherwise.
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # The temporary server's first start on a fresh install (its database, its migrations) can take longer
    # than Prefect's default 20 s on a slow or busy machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    path = csv_file or SAMPLE_CSV
    if not path.is_file():
        fail(f"no leads CSV at {path}: run the demo from a funnelsync checkout or pass --csv FILE")
    with ExitStack() as stack:
        if ui and not os.environ.get("PREFECT_API_URL"):
            os.environ["PREFECT_API_URL"] = stack.enter_context(prefect_server())
        _run(path)
        key = _demo_api_key()
        dashboard = f"http://127.0.0.1:{port}/dashboard"
        if serve:
            console.print(f"Dashboard: {dashboard} (sign in with the API key {key}; Ctrl-C stops)", highlight=False)
            _serve(port)
        else:
            console.print(f"Dashboard: run `funnelsync serve` (or `funnelsync demo --serve`), open {dashboard} and "
                          f"sign in with the API key {key}", highlight=False)


def _run(path: Path) -> None:
    from flows.demo import run_demo
    from storage.db import database_url, redacted

    api_url = os.environ.get("PREFECT_API_URL")
    console.print(f"Database: {redacted(database_url())}", highlight=False)
    console.print(
        f"Prefect: {'server ' + api_url if api_url else 'a temporary local server (started by Prefect, ~15 s)'}",
        highlight=False,
    )
    try:
        result = run_demo(path, say=lambda line: console.print(f"  {line}", highlight=False))
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback: the demo is the first thing a new user runs
        fail(f"demo failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    console.print(funnel_table(result))
    if api_url:
        ui = api_url.rstrip("/").removesuffix("/api")
        console.print(f"Open the Prefect UI at {ui} to see these runs, their artifacts and the customer events.")
    else:
        console.print(
            "To see the runs, artifacts (per-stream counts, progress, funnel metrics) and customer events in the "
            "Prefect UI: run `funnelsync demo --ui` (it starts a local Prefect server for the run). "
            "`funnelsync worker` then runs the scheduled syncs.",
            highlight=False,
        )


def _demo_api_key() -> str:
    """A fresh API key named ``demo`` (the previous demo key is revoked: only the latest one works)."""
    from storage.api_keys import create_api_key, list_api_keys, revoke_api_keys

    with get_engine().begin() as conn:
        if any(k["name"] == DEMO_KEY_NAME and not k.get("revoked_at") for k in list_api_keys(conn)):
            revoke_api_keys(conn, DEMO_KEY_NAME)
        return create_api_key(conn, DEMO_KEY_NAME)


def _serve(port: int) -> None:
    import uvicorn

    from api.app import create_app

    uvicorn.run(create_app(get_engine()), host="127.0.0.1", port=port, log_level="warning")


@contextmanager
def prefect_server(timeout: float = 180.0) -> Iterator[str]:
    """A local Prefect server in the background, its API URL while in the block; stopped after it."""
    import httpx

    port = _free_port(4200)
    url = f"http://127.0.0.1:{port}/api"
    log = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect") / "demo-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter running Prefect's CLI
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        console.print(f"Starting a local Prefect server on {url.removesuffix('/api')} (log: {log}) ...",
                      highlight=False)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                fail(f"the Prefect server stopped while starting (exit {proc.returncode}); see {log}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                fail(f"the Prefect server did not answer within {timeout:.0f} s; see {log}")
            time.sleep(0.5)
        console.print(f"Prefect UI: {url.removesuffix('/api')}", highlight=False)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _free_port(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])


# Headers broken over two lines so the seven columns fit an 80-column terminal with every word whole.
FUNNEL_HEADERS = ("Month", "Leads", "Free\nTrials", "Converted", "Trial-to-\nPaid", "New\nSubscribers",
                  "Avg Sales\nCycle")


def funnel_table(result: Any) -> Table:
    """The demo's funnel by month as a table (``result`` is the demo's ``DemoResult``)."""
    table = Table(title=f"Funnel by month ({result.customers} customers, {result.merged} merges)")
    for column in FUNNEL_HEADERS:
        table.add_column(column, justify="left" if column == "Month" else "right")
    for row in result.series:
        rate = row["trial_to_paid_rate"]
        cycle = row["avg_sales_cycle_days"]
        table.add_row(
            str(row["period"])[:7],
            f"{row['leads']:,}",
            f"{row['free_trials']:,}",
            f"{row['trials_converted']:,}",
            "–" if rate is None else f"{100 * rate:.1f}%",
            f"{row['new_subscribers']:,}",
            "–" if cycle is None else f"{cycle:.1f} days",
        )
    return table
