"""``funnelsync sync NAME``: pull a data source through its connector, with progress and counts."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import TaskID
from rich.table import Table

from funnelsync.cli import common
from funnelsync.cli.common import app, console, fail, get_engine, print_json


@app.command()
def sync(
    name: Annotated[str, typer.Argument(help="The data source name (or ds_… uuid).")],
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Read everything again, ignoring the saved cursors.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print per-stream and total counts as JSON only.")] = False,
) -> None:
    """Sync a billing source: fetch what changed (or everything) and upsert it, batch by batch."""
    from connectors.http import ConnectorError
    from jobs.sync import StreamSummary, SyncError, sync_source
    from storage.sources import SourceNotFound

    engine = get_engine()
    try:
        if as_json:
            summary = sync_source(engine, name, full_refresh=full_refresh)
        else:
            with common.progress_bar("records") as bar:
                tasks: dict[str, TaskID] = {}

                def progress(stream: StreamSummary) -> None:
                    if stream.stream not in tasks:
                        tasks[stream.stream] = bar.add_task(f"{name} {stream.stream}", total=None)
                    bar.update(tasks[stream.stream], completed=stream.fetched)

                summary = sync_source(engine, name, full_refresh=full_refresh, progress=progress)
                for task_id in tasks.values():
                    done = bar.tasks[task_id].completed
                    bar.update(task_id, total=done, completed=done)
    except SourceNotFound as exc:
        fail(str(exc), 2)
    except (SyncError, ConnectorError) as exc:
        fail(f"sync of {name!r} failed: {exc}")
    if as_json:
        print_json(summary.to_dict())
        return
    table = Table("stream", "fetched", "created", "updated", "unchanged", "seconds",
                  title=f"{summary.source} ({summary.kind})")
    for stream in summary.streams:
        table.add_row(stream.stream, f"{stream.fetched:,}", f"{stream.created:,}", f"{stream.updated:,}",
                      f"{stream.unchanged:,}", f"{stream.seconds:.1f}")
    total = summary.totals
    table.add_row("[bold]total", f"{total['fetched']:,}", f"{total['created']:,}", f"{total['updated']:,}",
                  f"{total['unchanged']:,}", f"{total['seconds']:.1f}")
    console.print(table)
