"""Bulk-job runtime settings: they apply inside, nest, and always restore what was there."""

from __future__ import annotations

import gc
import sys

import pytest

from funnelsync.bulk import BULK_GC_THRESHOLD, SWITCH_INTERVAL, prefetched, rare_gc, short_switch_interval


def test_rare_gc_raises_the_threshold_and_restores_it_when_nested() -> None:
    before = gc.get_threshold()
    with rare_gc():
        assert gc.get_threshold()[0] == max(before[0], BULK_GC_THRESHOLD)
        with rare_gc():
            assert gc.get_threshold()[0] == max(before[0], BULK_GC_THRESHOLD)
        assert gc.get_threshold()[0] == max(before[0], BULK_GC_THRESHOLD)  # the outer one still holds
    assert gc.get_threshold() == before


def test_rare_gc_restores_after_an_exception() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), rare_gc():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before


def test_prefetched_shortens_the_switch_interval_only_while_it_runs() -> None:
    before = sys.getswitchinterval()
    seen = []
    for item in prefetched(iter(range(3)), 1):
        seen.append((item, sys.getswitchinterval()))
    assert [i for i, _ in seen] == [0, 1, 2]
    assert all(interval == min(before, SWITCH_INTERVAL) for _, interval in seen)
    assert sys.getswitchinterval() == before
    with short_switch_interval():
        assert sys.getswitchinterval() == min(before, SWITCH_INTERVAL)
    assert sys.getswitchinterval() == before


def test_prefetched_passes_an_exception_object_through_as_an_item() -> None:
    """An item that happens to be an exception is data, not the reader's failure."""
    error = ValueError("just a value")
    assert list(prefetched(iter([1, error, 2]), 2)) == [1, error, 2]


def test_prefetched_without_depth_reads_inline() -> None:
    assert list(prefetched(iter("abc"), 0)) == ["a", "b", "c"]
