"""Handing items from a producer thread to a consumer through a bounded queue that can be abandoned."""

from __future__ import annotations

import queue
import threading


def put_unless_stopped(target: queue.Queue, item: object, stop: threading.Event) -> bool:  # type: ignore[type-arg]
    """Put ``item`` on a bounded queue, waiting for room, unless ``stop`` is set first.

    A consumer that stops reading sets ``stop``; a blocking ``put`` would otherwise leave the producer
    thread waiting on a full queue for ever. Returns whether the item was put.
    """
    while not stop.is_set():
        try:
            target.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
