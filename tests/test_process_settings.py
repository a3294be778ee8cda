"""``funnelsync.process_settings.paused_gc``: nests across threads and puts the collector back as it was."""

from __future__ import annotations

import gc
import threading

import pytest

from funnelsync.process_settings import paused_gc


def test_paused_gc_nests_and_restores() -> None:
    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer holder is still inside
    assert gc.isenabled()


def test_paused_gc_leaves_a_collector_that_was_off_off() -> None:
    gc.disable()
    try:
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_paused_gc_waits_for_the_last_holder_across_threads() -> None:
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with paused_gc():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    assert inside.wait(5)
    with paused_gc():
        assert not gc.isenabled()
    # This thread's holder has left, the other's has not: still paused.
    assert not gc.isenabled()
    release.set()
    thread.join(5)
    assert gc.isenabled()


def test_paused_gc_restores_after_an_exception() -> None:
    with pytest.raises(RuntimeError, match="boom"), paused_gc():
        raise RuntimeError("boom")
    assert gc.isenabled()
