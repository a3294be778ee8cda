"""Threads that stay quiet across ``os.fork``, so a process running them may still fork.

``os.fork`` copies only the calling thread. Whatever another thread held at that moment (a lock of the
connection pool, a connection in the middle of a statement, a lock of the logging module) stays held in
the child, with no thread left there to release it. A ``ForkQuietThread`` works in steps, each under a
process-wide guard that this module's fork hooks (``os.register_at_fork``) hold while a fork happens: a
fork waits for a step under way to end, and no step starts until the fork is done. Between steps the
thread only waits on its own stop event, which the child never touches.

A process whose other threads are all fork-quiet (``other_threads_are_fork_quiet``) can therefore fork
a worker that uses none of their state: ``jobs.readahead.read_in_child`` forks its file reader while
``storage.locks.hold_lock`` heartbeats the import's lock. A step that blocks (on SQLite's busy timeout,
on a pool waiting for a connection) delays a fork by as long, so steps must be short and bounded.
Python 3.12 and later warn (a ``DeprecationWarning``, hidden by default) on every fork of a process
with threads; the guard is what makes this one safe.

Example:
    >>> beat = ForkQuietThread(lambda: refresh_lock(), every_seconds=40.0, name="lock-heartbeat:sync:ds_1")
    >>> beat.start()
    >>> ...  # os.fork() here never catches refresh_lock() half done
    >>> beat.stop(timeout=5.0)
"""

from __future__ import annotations

# logging takes its module lock in a fork hook of its own, and a step may need that lock (a logger's
# level cache is filled under it). Hooks run before a fork in reverse order of registration: importing
# logging first makes ours run first, so a fork never holds the logging lock while it waits for a step.
import logging  # noqa: F401
import os
import threading
from collections.abc import Callable

# Reentrant: a step that itself forks must not wait for itself in the fork hook.
_guard = threading.RLock()


def _before_fork() -> None:
    _guard.acquire()


def _after_fork_in_parent() -> None:
    _guard.release()


def _after_fork_in_child() -> None:
    # The forking thread holds the old guard (more than once if it forked from inside a step, whose
    # ``with`` still releases that old one). The child starts with a free guard of its own.
    global _guard
    _guard = threading.RLock()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


class ForkQuietThread(threading.Thread):
    """A daemon thread calling ``step`` every ``every_seconds`` until stopped, each call under the fork guard.

    Args:
        step: one tick of work; a fork waits for it, so it should be short and bounded. An exception it
            raises ends the thread: catch there what the next tick should retry.
        every_seconds: the wait before each call (the first call comes after one wait).
        name: the thread's name.
    """

    def __init__(self, step: Callable[[], None], every_seconds: float, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._step = step
        self._every_seconds = every_seconds
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self._every_seconds):
            with _guard:
                if self._stopping.is_set():
                    return
                self._step()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to end and wait up to ``timeout`` seconds for it (a step under way finishes)."""
        self._stopping.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout)


def other_threads_are_fork_quiet() -> bool:
    """Whether every live thread but the calling one is a ``ForkQuietThread``, so forking here is safe.

    A thread that a C library started without ``threading`` is not seen, as by ``threading.active_count``.
    """
    current = threading.current_thread()
    return all(thread is current or isinstance(thread, ForkQuietThread) for thread in threading.enumerate())
