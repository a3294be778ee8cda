"""Process-wide interpreter settings changed for a stretch of bulk work, then put back: they nest, from any
thread, and the first holder's saved value is what the last one restores.

- ``paused_gc``: finding and merging duplicates builds a few hundred thousand small objects (detection's
  members and groups, a merge batch's rows and snapshots) that reference counting frees, as none of them
  forms a cycle. With the cyclic collector on, its passes walked every one of them again and again: about
  two thirds of the time of grouping 50,000 duplicate pairs. Paused, the garbage of cycles made elsewhere
  in the meantime waits for the next pass after the work.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any


class ProcessSetting:
    """A process-wide setting changed while at least one holder is inside, then put back as it was."""

    def __init__(self, read: Callable[[], Any], write: Callable[[Any], None], bulk: Callable[[Any], Any]) -> None:
        self._read, self._write, self._bulk = read, write, bulk
        self._lock = threading.Lock()
        self._holders = 0
        self._saved: Any = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._saved = self._read()
                self._write(self._bulk(self._saved))
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    self._write(self._saved)


def _set_gc_enabled(enabled: bool) -> None:
    if enabled:
        gc.enable()
    else:
        gc.disable()


_gc_enabled = ProcessSetting(gc.isenabled, _set_gc_enabled, lambda _saved: False)


def paused_gc() -> AbstractContextManager[None]:
    """Keep the cyclic garbage collector off while inside (nests; turns it back on only if it was on)."""
    return _gc_enabled.held()
