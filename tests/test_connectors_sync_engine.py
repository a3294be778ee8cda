"""The sync engine's read-ahead: order kept, errors raised after the batches read before them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flows.sync_engine import prefetched


def numbers(n: int, fail_at: int | None = None) -> Iterator[int]:
    for i in range(n):
        if i == fail_at:
            raise RuntimeError(f"boom at {i}")
        yield i


@pytest.mark.parametrize("depth", [0, 1, 2, 5])
def test_prefetched_keeps_order(depth: int) -> None:
    assert list(prefetched(numbers(50), depth)) == list(range(50))


def test_prefetched_raises_after_earlier_items() -> None:
    got: list[int] = []
    with pytest.raises(RuntimeError, match="boom at 3"):
        for item in prefetched(numbers(10, fail_at=3)):
            got.append(item)
    assert got == [0, 1, 2]


def test_prefetched_consumer_can_stop_early() -> None:
    source = numbers(1000)
    for item in prefetched(source, 2):
        if item == 5:
            break
    # The reader stopped: it read at most the few items the buffer holds, not all 1000.
    assert len(list(source)) > 900
