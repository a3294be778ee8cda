"""Runtime settings for bulk jobs (imports, syncs): read ahead on a thread or in a child process, collect
garbage rarely.

Both are process-wide interpreter settings, so they are context managers that nest and restore.

- ``prefetched``: a producer (a file parser, an API pager) runs one step ahead of its consumer on a
  thread. The consumer waits on the database (SQLite steps a multi-row INSERT with the GIL released,
  PostgreSQL works in its own process) or the network, so the two overlap instead of adding up. While it
  runs the interpreter switches threads ten times as often as by default: the consumer comes back from
  a database call wanting the GIL and would otherwise wait a whole switch interval for the producer.
- ``read_in_child``: the producer runs in a forked child process and its items come back pickled.
  Threads share one interpreter lock, so a parser on a thread only fills the moments the database
  holds the consumer; in a process it runs on the other core. Loading a pickled record costs a good
  part of parsing its row again (``funnelsync.records.compact_pickle``), so imports send rows prepared
  for storage as plain tuples instead (``storage.row_values.PreparedBatch``), which load in C.
- ``rare_gc``: a batch job allocates millions of short-lived objects that reference counting frees;
  the cyclic collector still ran thousands of times per large import, each pass walking every live
  object. The job's own data has no cycles to collect.
"""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from funnelsync.forking import other_threads_are_fork_quiet
from funnelsync.handoff import put_unless_stopped
from funnelsync.process_settings import ProcessSetting

T = TypeVar("T")

SWITCH_INTERVAL = 0.0005
# Generation-0 threshold during bulk work (Python's default is 700 net allocations).
BULK_GC_THRESHOLD = 50_000

_switch = ProcessSetting(sys.getswitchinterval, sys.setswitchinterval, lambda saved: min(saved, SWITCH_INTERVAL))
_gc = ProcessSetting(gc.get_threshold, lambda t: gc.set_threshold(*t),
                     lambda saved: (max(saved[0], BULK_GC_THRESHOLD), *saved[1:]))


def short_switch_interval() -> AbstractContextManager[None]:
    """Switch threads every ``SWITCH_INTERVAL`` seconds while inside (nests; restores on exit)."""
    return _switch.held()


def rare_gc() -> AbstractContextManager[None]:
    """Run the cyclic garbage collector rarely while inside (nests; restores on exit)."""
    return _gc.held()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order while a background thread reads up to ``depth`` ahead.

    An exception of the reader is raised here after the items read before it, so every batch read
    before a failure is still handled. Closing the generator early (or an exception in the consumer)
    stops the reader at its next item; an item read but not yet yielded is dropped.
    """
    if depth <= 0:
        yield from items
        return
    buffer: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        return put_unless_stopped(buffer, item, stop)

    def read() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(_Failure(exc))

    with short_switch_interval():
        reader = threading.Thread(target=read, name="funnelsync-prefetch", daemon=True)
        reader.start()
        try:
            while True:
                item = buffer.get()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.exc
                yield item  # type: ignore[misc]
        finally:
            stop.set()
            reader.join(timeout=30)


def _produce(make: Callable[[], Iterable[Any]], pipe: Any) -> None:
    """The child's side of ``read_in_child``: each item pickled down the pipe, then an empty message."""
    with rare_gc():
        try:
            for item in make():
                pipe.send_bytes(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
            pipe.send_bytes(b"")
        except BaseException as exc:  # noqa: BLE001 - handed to the parent, raised there
            try:
                payload = pickle.dumps(_Failure(exc))
                # An exception that pickles but cannot be rebuilt fails here, not there.
                pickle.loads(payload)  # nosec B301 # what this process pickled just above
            except Exception:  # noqa: BLE001
                payload = pickle.dumps(_Failure(RuntimeError(f"{type(exc).__name__}: {exc}")))
            pipe.send_bytes(payload)
        finally:
            pipe.close()


def can_read_in_child() -> bool:
    """Whether ``read_in_child`` runs a child process here (else it reads ahead on a thread).

    It forks, which copies only the calling thread: a lock another thread held at that moment would stay
    held in the child. Fork-quiet threads (``funnelsync.forking``, such as the heartbeat of the lock an
    import holds) are never caught holding one; with any other thread running (a Prefect worker, a
    server) the caller gets a thread.
    """
    return "fork" in multiprocessing.get_all_start_methods() and other_threads_are_fork_quiet()


def read_in_child(make: Callable[[], Iterable[T]], depth: int = 2) -> Iterator[T]:
    """Yield the items of ``make()``, produced in a forked child process (see ``can_read_in_child``).

    ``make`` is called in the child, which inherits everything the parent prepared (an opened, surveyed
    file). The pipe holds one pickled item at a time, so the child runs at most an item or two ahead and
    memory stays bounded. An exception of the producer is raised here after the items before it; a child
    that dies without a word raises ``RuntimeError``. Closing the generator early stops the child.
    Where a child cannot be forked, the items are read ahead ``depth`` deep on a thread instead.
    """
    if not can_read_in_child():
        yield from prefetched(make(), depth)
        return
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_produce, args=(make, sender), name="funnelsync-reader", daemon=True)
    child.start()
    sender.close()
    try:
        while True:
            try:
                data = receiver.recv_bytes()
            except EOFError:
                child.join(timeout=5)
                raise RuntimeError(f"the reader process ended without finishing (exit code {child.exitcode})") from None
            if not data:
                return
            item = pickle.loads(data)  # nosec B301 # bytes our own forked child pickled
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        receiver.close()
        if child.is_alive():
            child.terminate()
        child.join(timeout=30)
