"""A stream's batches for the sync, prepared for storage: read ahead on a thread, and a long full read
carried on in a child process.

A sync is one process doing two things by turns: reading (HTTP, JSON, mapping a payload to records,
their fingerprints) and writing them. On a thread the reading only fills the moments the database
holds the writer, since both need the one interpreter lock; a first sync of a large source is as much
reading as writing, so in one process it runs at the pace of their sum. Once a read still inside its
list has brought ``CHILD_AFTER_BATCHES`` batches, the rest of it is read by a forked child
(``jobs.readahead.read_in_child``) on the other core, which sends records prepared for storage
(``storage.row_values.PreparedBatch``, plain tuples that load in C) and leaves this process the lookups
and the writes.

The child starts from the cursor of the last batch handed out, which the caller has committed by the
time it asks for the next: the resumable read every stream already offers after a kill (a sliced
read's cursor names where each slice stands). The batches the thread had read ahead beyond it are
dropped and read again by the child. Short reads (most incremental runs), connectors that read our own
storage while they map (``stored_records``) and processes with other busy threads (a Prefect worker:
``jobs.readahead.can_read_in_child``) stay on the thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from connectors.base import Batch, Connector
from jobs.readahead import can_read_in_child, prefetched, read_in_child
from storage.row_values import PreparedBatch, prepare_records

# 10,000 records at the default batch size: below it a sync is over in a couple of seconds on a thread
# (bench/sync.py, about 6,000 records/s there); forking the reader and handing over its first batch
# takes about 7 ms (12 ms at most in 20 tries on this project's 2-core machine).
CHILD_AFTER_BATCHES = 20
# Batches read ahead on a thread while one is written: the fetch waits on the network (and the mapping is
# light), the write on the database, so overlapping them nearly halves a sync's time.
PREFETCH_BATCHES = 2


@dataclass
class PreparedSyncBatch:
    """A ``connectors.base.Batch`` with its records prepared for one database (``prepare_records``)."""

    stream: str
    records: PreparedBatch
    cursor: dict[str, Any]
    fetched: int
    deleted: list[str] = field(default_factory=list)


def _prepared(batch: Batch, sqlite: bool, eager: bool) -> PreparedSyncBatch:
    return PreparedSyncBatch(batch.stream, prepare_records(batch.records, sqlite=sqlite, eager=eager),
                             batch.cursor, batch.fetched, batch.deleted)


def _unfinished(cursor: dict[str, Any]) -> bool:
    """Whether a batch's cursor stands inside a paged list (``Connector.read_list``): more pages follow."""
    return cursor.get("page_token") is not None or bool(cursor.get("slices"))


def stream_batches(
    connector: Connector,
    stream: str,
    state: dict[str, Any] | None,
    full_refresh: bool,
    *,
    sqlite: bool,
    prefetch: int = PREFETCH_BATCHES,
    child_after: int | None = CHILD_AFTER_BATCHES,
) -> Iterator[PreparedSyncBatch]:
    """The batches of ``connector.read(stream, state, full_refresh)``, prepared for storage.

    The caller commits each batch (with its cursor) before asking for the next. ``child_after``: batches
    after which a read still inside its list moves to a child process (None: never).
    """
    # Decided before any thread of ours starts: a process with other busy threads never forks.
    may_fork = child_after is not None and not hasattr(connector, "stored_records") and can_read_in_child()
    switch_at = child_after if may_fork else None
    source = connector.read(stream, state, full_refresh)
    ahead = prefetched(source, prefetch)
    handed = 0
    committed: dict[str, Any] = {}
    try:
        for batch in ahead:
            yield _prepared(batch, sqlite, eager=False)
            committed, handed = batch.cursor, handed + 1
            if switch_at is not None and handed >= switch_at and _unfinished(committed):
                break
        else:
            return
    finally:
        # Stop the read-ahead thread, then the reader, whose own threads (a sliced read's) end with it.
        ahead.close()
        try:
            source.close()
        except ValueError:  # still running on a read-ahead thread that did not stop in time
            pass
    if can_read_in_child():
        yield from read_in_child(lambda: _read_in_child(connector, stream, committed, sqlite))
    else:  # a thread of the first read is still busy: the rest on a thread as well
        for batch in prefetched(connector.read(stream, committed, False), prefetch):
            yield _prepared(batch, sqlite, eager=False)


def _read_in_child(connector: Connector, stream: str, cursor: dict[str, Any],
                   sqlite: bool) -> Iterator[PreparedSyncBatch]:
    """Run in the child: the rest of the read from ``cursor``, on connections of its own (the pool the
    parent's client holds stays the parent's)."""
    connector.forget_clients()
    for batch in connector.read(stream, cursor, False):
        yield _prepared(batch, sqlite, eager=True)
