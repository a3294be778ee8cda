"""Run a producer (a file parser, an API pager) one step ahead of its consumer, on a thread.

An import parses rows in Python and then waits on the database: SQLite steps a multi-row INSERT with the
GIL released, PostgreSQL works in its own process. Parsing the next batch meanwhile overlaps the two
instead of adding them. Order, exceptions and memory stay as with the plain iterator: items arrive in
order, a producer error is raised in the consumer at the point it happened, and at most ``depth`` items
wait in between.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

_DONE = object()
# While a prefetch runs the interpreter switches threads every 0.5 ms instead of 5 ms: the consumer
# comes back from a database call wanting the GIL, and the default interval made it wait up to 5 ms for
# the parser each time (measured: the overlap then gained nothing).
SWITCH_INTERVAL = 0.0005
_switch_lock = threading.Lock()
_active = 0
_saved_interval = 0.0


@contextmanager
def _short_switch_interval() -> Iterator[None]:
    global _active, _saved_interval
    with _switch_lock:
        if _active == 0:
            _saved_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(_saved_interval, SWITCH_INTERVAL))
        _active += 1
    try:
        yield
    finally:
        with _switch_lock:
            _active -= 1
            if _active == 0:
                sys.setswitchinterval(_saved_interval)


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order while a background thread produces up to ``depth`` ahead.

    Closing the returned generator early (or an exception in the consumer) stops the producer at its
    next item.
    """
    buffer: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        buffer.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            outcome: object = _DONE
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            outcome = exc
        while not stop.is_set():
            try:
                buffer.put(outcome, timeout=0.1)
                return
            except queue.Full:
                continue

    with _short_switch_interval():
        worker = threading.Thread(target=produce, name="funnelsync-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                item = buffer.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            stop.set()
            worker.join()
