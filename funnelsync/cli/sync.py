"""``funnelsync sync NAME``: pull a data source through its connector, with progress and counts.

The job is ``jobs.runs.run_sync``, the one the Prefect flows run: the source's lock (a second run of one
source waits ``--wait`` seconds, then exits 4 naming who holds it), the sync, its lifecycle changes
(announced as Prefect events when a Prefect server is configured), then the duplicate merge.

Exit codes: 0 synced; 1 the sync failed; 2 no such source; 4 the source is being synced by another run.
"""

from __future__ import annotations

from typing import Annotated, Any

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
    wait: Annotated[
        float, typer.Option("--wait", min=0, help="Seconds to wait for a sync of this source already running.")
    ] = 0.0,
    merge: Annotated[
        bool, typer.Option("--merge/--no-merge", help="Merge duplicates after the sync (as the flows do).")
    ] = True,
) -> None:
    """Sync a billing source: fetch what changed (or everything) and upsert it, batch by batch."""
    from connectors.http import ConnectorError
    from jobs.runs import SourceBusy, run_sync
    from jobs.sync import StreamSummary, SyncError
    from storage.sources import SourceNotFound

    engine = get_engine()
    options = {"owner": _owner(), "full_refresh": full_refresh, "wait_seconds": wait, "merge_after": merge,
               "actor": "cli:sync", "announce": _announcer()}
    try:
        if as_json:
            run = run_sync(engine, name, **options)
        else:
            with common.progress_bar("records") as bar:
                tasks: dict[str, TaskID] = {}

                def progress(stream: StreamSummary) -> None:
                    if stream.stream not in tasks:
                        tasks[stream.stream] = bar.add_task(f"{name} {stream.stream}", total=None)
                    bar.update(tasks[stream.stream], completed=stream.fetched)

                run = run_sync(engine, name, progress=progress, **options)
                for task_id in tasks.values():
                    done = bar.tasks[task_id].completed
                    bar.update(task_id, total=done, completed=done)
    except SourceNotFound as exc:
        fail(str(exc), 2)
    except SourceBusy as exc:
        fail(str(exc), 4)
    except (SyncError, ConnectorError) as exc:
        fail(f"sync of {name!r} failed: {exc}")
    if as_json:
        print_json(run.to_dict())
        return
    summary = run.sync
    table = Table("stream", "fetched", "created", "updated", "unchanged", "seconds",
                  title=f"{summary.source} ({summary.kind})")
    for stream in summary.streams:
        table.add_row(stream.stream, f"{stream.fetched:,}", f"{stream.created:,}", f"{stream.updated:,}",
                      f"{stream.unchanged:,}", f"{stream.seconds:.1f}")
    total = summary.totals
    table.add_row("[bold]total", f"{total['fetched']:,}", f"{total['created']:,}", f"{total['updated']:,}",
                  f"{total['unchanged']:,}", f"{total['seconds']:.1f}")
    console.print(table)
    changes = ", ".join(f"{kind.replace('_', ' ')} {count:,}" for kind, count in run.lifecycle.counts.items())
    console.print(f"Lifecycle changes: {changes or 'none'}", highlight=False)
    if run.merge is not None:
        console.print(f"Merged duplicates: {run.merge.merged_customers:,} customers in {len(run.merge.groups):,} "
                      "groups", highlight=False)


def _owner() -> str:
    """Who holds the lock while this command syncs (shown to a second run)."""
    import os
    import socket

    return f"PID {os.getpid()} on {socket.gethostname()} (funnelsync sync)"


def _announcer() -> Any:
    """The flows' Prefect events when a Prefect server is configured; else changes are only counted."""
    import os

    from jobs.runs import Announcer

    if not os.environ.get("PREFECT_API_URL"):
        return Announcer()
    from flows.events import emit_lifecycle_events, emit_merge_events

    def merges(result: Any, changes: Any) -> None:
        groups = [g.as_json() for g in result.groups]
        emit_merge_events({"into": g["survivor"], "from": m, "rule": g["rule"]} for g in groups for m in g["merged"])
        emit_lifecycle_events(changes)

    return Announcer(
        lifecycle=lambda report, uuid, source: emit_lifecycle_events(report, source_uuid=uuid, source_name=source),
        merges=merges,
    )
