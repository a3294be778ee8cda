"""Concurrent writes of one kind committed together: one transaction for those that arrive while the
previous one is writing (group commit).

``POST /v1/customers`` from several clients at once paid, each, for a whole transaction: the fixed
statements of an upsert batch (ids, attribute types, automation rules), a commit writing every index page
it touched, and on SQLite a turn at the single write lock, where a waiter sleeps in steps and wakes late.
Written as one batch, they pay for that once; a create arriving while nothing is being written is
written at once, alone, so nobody waits for a batch to fill (only right after a batch of several does
the writer wait up to ``linger_seconds`` for as many again).

One writer thread takes what is queued (at most ``max_items``), writes it, hands each request its outcome
on the request's own event loop, and takes the next batch; it ends after ``idle_seconds`` with nothing
to write and starts again with the next item, so there is nothing to start or stop with the app. The
requests wait as coroutines: no thread of the pool is held per request, nor woken per item.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(eq=False)
class _Queued(Generic[T]):
    item: T
    loop: asyncio.AbstractEventLoop
    written: asyncio.Future[None]
    error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Writes submitted items in batches with ``write``, one batch at a time, on a thread of its own.

    ``write(items)`` writes them in one transaction and records each item's outcome on the item. When it
    raises for a batch of several, each item is written again alone, so that an item that cannot be
    written fails its own request only; unless ``alone_again(error)`` says the error would hit each of
    them the same (the database is unreachable or locked), and all get it.
    """

    def __init__(self, write: Callable[[Sequence[T]], None], *, max_items: int = 64, idle_seconds: float = 1.0,
                 linger_seconds: float = 0.002,
                 alone_again: Callable[[BaseException], bool] = lambda _error: True) -> None:
        self._write = write
        self._max_items = max_items
        self._idle_seconds = idle_seconds
        self._linger_seconds = linger_seconds
        self._alone_again = alone_again
        self._lock = threading.Lock()
        self._queued = threading.Condition(self._lock)
        self._queue: list[_Queued[T]] = []
        self._writer: threading.Thread | None = None

    async def submit(self, item: T) -> None:
        """Write ``item`` with whatever is queued with it; return once it is written.

        Raises:
            BaseException: what writing it raised.
        """
        loop = asyncio.get_running_loop()
        queued = _Queued(item, loop, loop.create_future())
        with self._lock:
            self._queue.append(queued)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_all, name="group-commit", daemon=True)
                self._writer.start()
            else:
                self._queued.notify()
        await queued.written

    def _write_all(self) -> None:
        last = 0
        while True:
            with self._lock:
                if not self._queue:
                    idle_since = time.monotonic()
                    self._queued.wait(self._idle_seconds)
                    if not self._queue:
                        self._writer = None  # under the lock: the next submit starts a new writer
                        return
                    if time.monotonic() - idle_since > self._linger_seconds:
                        last = 0  # a pause, not the requests of the last batch coming back
                # After a batch of several, the requests it answered come back one by one: wait a moment
                # for as many as it held (PostgreSQL's commit_delay with commit_siblings, in effect), so
                # they do not go as a lone create each paying the whole transaction. A lone writer never
                # waits.
                deadline = time.monotonic() + self._linger_seconds
                while 1 < last and len(self._queue) < min(last, self._max_items):
                    if not self._queued.wait(deadline - time.monotonic()) and time.monotonic() >= deadline:
                        break
                batch, self._queue = self._queue[: self._max_items], self._queue[self._max_items :]
            last = len(batch)
            self._write_batch(batch)
            by_loop: dict[asyncio.AbstractEventLoop, list[_Queued[T]]] = {}
            for queued in batch:
                by_loop.setdefault(queued.loop, []).append(queued)
            for loop, done in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, done)
                except RuntimeError:  # its loop is closed: nobody waits for these any more
                    pass

    def _write_batch(self, batch: list[_Queued[T]]) -> None:
        try:
            self._write([queued.item for queued in batch])
        except BaseException as error:
            if len(batch) == 1 or not self._alone_again(error):
                for queued in batch:
                    queued.error = error
                return
            for queued in batch:
                try:
                    self._write([queued.item])
                except BaseException as alone:
                    queued.error = alone


def _settle(done: list[_Queued[T]]) -> None:
    for queued in done:
        if queued.written.done():  # the request was cancelled (its client went away)
            continue
        if queued.error is not None:
            queued.written.set_exception(queued.error)
        else:
            queued.written.set_result(None)
