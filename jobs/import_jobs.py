"""What state an import job is in, judged from the process that runs it, and the resumption of interrupted ones.

A job's row says "running" until its process marks it done or failed. A process killed outright
(SIGKILL, the machine lost) marks nothing, so a running row is judged: on this host by whether its
process still exists, on another host by its heartbeat (``storage.imports.add_job_counts`` beats it
with every committed batch). Such a job is shown as ``interrupted``; the next import of the same file
into the same source marks it so and says it resumes it: every batch it committed is in the database,
and the re-run finds those rows as they are.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import PurePath
from typing import Any

from sqlalchemy import Connection, Engine

from storage.imports import finish_import_job, recent_import_jobs, running_import_jobs
from storage.sources import get_source

# A job on another host with no committed batch for this long is taken for dead. Batches commit every
# few seconds; the longest quiet stretch is the index rebuild after a very large first load.
STALE_AFTER = timedelta(minutes=30)


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    return True


def job_state(job: Mapping[str, Any], now: datetime | None = None) -> str:
    """``done``, ``failed``, ``interrupted`` or ``running`` for a job row (``import_jobs``)."""
    status = str(job["status"])
    if status != "running":
        return status
    pid, host = job.get("pid"), job.get("host")
    if pid is not None and host == socket.gethostname()[:255]:
        return "running" if process_alive(int(pid)) else "interrupted"
    beat = job.get("heartbeat_at") or job["started_at"]
    return "interrupted" if (now or datetime.now(timezone.utc)) - beat > STALE_AFTER else "running"


def list_import_jobs(engine: Engine, source: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The latest jobs (newest first) with their judged ``state``.

    Raises:
        LookupError: no source of that name.
    """
    with engine.connect() as conn:
        source_id = None
        if source is not None:
            row = get_source(conn, source)
            if row is None:
                raise LookupError(f"no data source named {source!r}")
            source_id = int(row.id)
        jobs = recent_import_jobs(conn, source_id, limit)
    for job in jobs:
        job["state"] = job_state(job)
    return jobs


def resume_interrupted(conn: Connection, data_source_id: int, kind: str, filename: str | None,
                       by_uuid: str) -> list[dict[str, Any]]:
    """Mark the interrupted jobs of this source, kind and file (by its name) as resumed by job ``by_uuid``.

    Returns:
        The jobs resumed, as they were (their counts are what they committed).
    """
    name = PurePath(filename).name if filename else None
    resumed = []
    for job in running_import_jobs(conn, data_source_id, kind):
        if job["uuid"] == by_uuid or job_state(job) != "interrupted":
            continue
        if (PurePath(job["filename"]).name if job["filename"] else None) != name:
            continue
        where = f"process {job['pid']} on {job['host']}" if job.get("pid") else "its process"
        finish_import_job(conn, int(job["id"]), "interrupted", f"{where} stopped; resumed by import {by_uuid}")
        resumed.append(job)
    return resumed


def resumed_note(job: Mapping[str, Any]) -> str:
    """What a re-run says about a job it resumes."""
    written = int(job["created"]) + int(job["updated"]) + int(job["unchanged"]) + int(job["rejected"])
    started = job["started_at"].astimezone(timezone.utc)
    return (f"resuming interrupted import {job['uuid']} (started {started:%Y-%m-%d %H:%M} UTC, "
            f"{written} rows done before its process stopped): the rows it wrote are found unchanged")
