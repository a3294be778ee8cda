"""A source's sync as every door runs it: under the source's lock, then its lifecycle changes, then the merge.

``run_sync`` is the one function the CLI (``funnelsync sync``), the Prefect flows (``sync-source``,
``sync-all``) and any other door call, so whichever way a user comes in:

1. the source is found and must be enabled;
2. one sync per source at a time: the lock ``sync:<source uuid>`` (``storage.locks``) is taken, waiting
   up to ``wait_seconds`` for a run already under way, else :class:`SourceBusy` names its holder;
3. the sync (``jobs.sync.sync_source``), then the lifecycle changes it made (leads created, trials
   started, conversions: ``storage.lifecycle``), handed to the door's ``announce`` while still holding
   the lock, so two runs never announce the same change;
4. the duplicate merge (``jobs.merging.merge_duplicates``) when ``merge_after``: a flow syncing many
   sources asks for it once, after all of them, with the same function.

How changes are announced is the door's business (the flows emit Prefect events); this module only says
what changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from jobs.merging import merge_duplicates
from jobs.sync import Progress, SyncSummary, check_enabled, sync_source
from storage.lifecycle import LifecycleReport, collect_lifecycle_changes
from storage.locks import LockBusy, hold_lock
from storage.merge import AutoMergeResult
from storage.sources import get_source, require_source

# Lifecycle changes itemised per run (every change is counted): the first sync of a large source would
# otherwise announce a million customers one by one.
MAX_ITEMISED_CHANGES = 1_000


def sync_lock_key(source_uuid: str) -> str:
    """The lock one source's syncs share, whichever door starts them."""
    return f"sync:{source_uuid}"


class SourceBusy(Exception):
    """Another run holds the source's lock (and did not finish within the wait)."""

    def __init__(self, source_name: str, busy: LockBusy, doing: str = "synced") -> None:
        self.source_name = source_name
        self.holder = busy.holder
        who = "another run"
        if busy.holder is not None:
            since = busy.holder.acquired_at.isoformat(timespec="seconds")
            who = f"{busy.holder.owner} (since {since})"
        waited = f"; waited {busy.waited:.0f}s" if busy.waited >= 1 else ""
        super().__init__(f"source {source_name} is being {doing} by {who}{waited}")


@dataclass
class Announcer:
    """What a door does with a run's news; each is optional (a door without events leaves them None)."""

    lifecycle: Callable[[LifecycleReport, str, str], dict[str, int]] | None = None  # report, source uuid, name
    merges: Callable[[AutoMergeResult, LifecycleReport], None] | None = None
    # An import's joins by email (``MergeEvent.as_json`` dicts): merges too, announced like the merge step's.
    joins: Callable[[list[dict[str, Any]]], int] | None = None


@dataclass
class SyncRun:
    """What one run did: the sync, the lifecycle changes it found, and the merge after it (if any)."""

    source: str
    source_uuid: str
    kind: str
    sync: SyncSummary
    lifecycle: LifecycleReport
    announced: dict[str, int] = field(default_factory=dict)
    merge: AutoMergeResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """The sync's JSON plus ``lifecycle`` counts and the ``merge`` summary (groups left out)."""
        out = self.sync.to_dict()
        out["lifecycle"] = dict(self.lifecycle.counts)
        if self.merge is not None:
            merge = self.merge.as_json()
            merge.pop("groups", None)
            out["merge"] = merge
        return out


def run_sync(
    engine: Engine,
    source_name: str,
    *,
    owner: str,
    full_refresh: bool = False,
    wait_seconds: float = 0.0,
    merge_after: bool = True,
    merge_rules: Sequence[str] | None = None,
    actor: str = "sync",
    announce: Announcer | None = None,
    progress: Progress | None = None,
    **connector_options: Any,
) -> SyncRun:
    """Sync one source the way every door does (see the module docstring).

    Args:
        owner: who runs it, shown to whoever finds the source busy ("process host:pid", "flow run …").
        wait_seconds: how long to wait for a run of the same source already under way.
        merge_after: run the duplicate merge afterwards (``merge_rules``, default email and external id).
        actor: who merged, for the merge log.
        announce: the door's announcer of lifecycle changes and merges.
        connector_options: ``transport``, ``sleep_fn``, ``batch_size``, ``now`` (tests and benchmarks).

    Raises:
        storage.sources.SourceNotFound, jobs.sync.SyncError (``SourceDisabled`` among them): before
            anything is read.
        SourceBusy: another run holds the source's lock.
        connectors.http.ConnectorError: from the vendor; batches committed before stay committed.
    """
    with engine.connect() as conn:
        row = require_source(conn, source_name)
    check_enabled(row)
    announce = announce or Announcer()
    started = datetime.now(UTC)
    try:
        with hold_lock(engine, sync_lock_key(row.uuid), owner, wait_seconds=wait_seconds):
            summary = sync_source(engine, row.uuid, full_refresh=full_refresh, progress=progress,
                                  **connector_options)
            with engine.begin() as conn:
                changes = collect_lifecycle_changes(conn, updated_since=started, keep=MAX_ITEMISED_CHANGES)
            announced = announce.lifecycle(changes, row.uuid, row.name) if announce.lifecycle else {}
    except LockBusy as busy:
        raise SourceBusy(str(row.name), busy) from None
    run = SyncRun(str(row.name), str(row.uuid), str(row.kind), summary, changes, announced)
    if merge_after:
        run.merge, merge_changes = merge_duplicates(
            engine, merge_rules, False, actor=actor, keep=MAX_ITEMISED_CHANGES
        )
        if announce.merges:
            announce.merges(run.merge, merge_changes)
    return run


@dataclass
class ImportRun:
    """What one import run did: the import's summary, its lifecycle changes, and the merge after it."""

    source: str
    summary: Any  # jobs.imports.ImportSummary
    lifecycle: LifecycleReport
    announced: dict[str, int] = field(default_factory=dict)
    joins_announced: int = 0
    merge: AutoMergeResult | None = None


def import_lock_keys(engine: Engine, source_name: str) -> tuple[list[str], str]:
    """The locks an import of ``source_name`` takes, in this order, and the source's name as stored.

    Every import takes the lock on the source's name: a source the import will create has no uuid yet,
    and an import that finds the source another import created a moment ago (and still runs) must meet
    that import there. An existing source's imports then also take ``sync:<uuid>``, which its syncs take.
    """
    with engine.connect() as conn:
        row = get_source(conn, source_name)
    name = source_name if row is None else str(row.name)
    by_name = f"import:name:{name.strip().casefold()}"[:200]
    if row is None:
        return [by_name], name
    return [by_name, sync_lock_key(row.uuid)], name


@contextmanager
def _hold_locks(engine: Engine, keys: Sequence[str], owner: str, wait_seconds: float) -> Iterator[None]:
    """Hold every lock of ``keys`` (taken in order), waiting at most ``wait_seconds`` in all."""
    deadline = time.monotonic() + wait_seconds
    with ExitStack() as stack:
        for key in keys:
            stack.enter_context(hold_lock(engine, key, owner, wait_seconds=max(deadline - time.monotonic(), 0.0)))
        yield


def run_import(
    engine: Engine,
    source_name: str,
    do_import: Callable[[], Any],
    *,
    owner: str,
    wait_seconds: float = 0.0,
    merge_after: bool = True,
    merge_rules: Sequence[str] | None = None,
    actor: str = "import",
    announce: Announcer | None = None,
) -> ImportRun:
    """Run an import the way every door does: under the source's lock, then its changes, then the merge.

    ``do_import`` is the import itself (``jobs.imports.import_csv``, ``import_structured``,
    ``jobs.sheet_import.import_sheet`` with the door's arguments bound); it returns an ``ImportSummary``.
    The lock is the one syncs of the source take, so an import and a sync of one source never overlap.

    Raises:
        SourceBusy: another import or sync holds the source's lock past ``wait_seconds``.
        Whatever ``do_import`` raises (nothing merged then).
    """
    announce = announce or Announcer()
    keys, name = import_lock_keys(engine, source_name)
    started = datetime.now(UTC)
    try:
        with _hold_locks(engine, keys, owner, wait_seconds):
            summary = do_import()
            with engine.begin() as conn:
                changes = collect_lifecycle_changes(conn, updated_since=started, keep=MAX_ITEMISED_CHANGES)
            with engine.connect() as conn:
                row = get_source(conn, str(summary.source))
            uuid = str(row.uuid) if row is not None else ""
            announced = announce.lifecycle(changes, uuid, str(summary.source)) if announce.lifecycle else {}
            joins = announce.joins(list(summary.merges)) if announce.joins and summary.merges else 0
    except LockBusy as busy:
        raise SourceBusy(name, busy, "imported or synced") from None
    run = ImportRun(str(summary.source), summary, changes, announced, joins)
    if merge_after:
        run.merge, merge_changes = merge_duplicates(
            engine, merge_rules, False, actor=actor, keep=MAX_ITEMISED_CHANGES
        )
        if announce.merges:
            announce.merges(run.merge, merge_changes)
    return run
