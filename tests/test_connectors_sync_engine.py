"""The sync engine's read-ahead: order kept, errors raised after the batches read before them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from jobs.readahead import prefetched


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
        got.extend(prefetched(numbers(10, fail_at=3)))
    assert got == [0, 1, 2]


def test_prefetched_consumer_can_stop_early() -> None:
    source = numbers(1000)
    for item in prefetched(source, 2):
        if item == 5:
            break
    # The reader stopped: it read at most the few items the buffer holds, not all 1000.
    assert len(list(source)) > 900


def test_prefect_secret_reference_reads_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.blocks.system import Secret

    from jobs.secrets import SecretResolutionError, resolve_settings

    class Block:
        def get(self) -> str:
            return "sk_from_block"

    def load(cls: type, name: str) -> Block:
        if name != "stripe-key":
            raise ValueError(f"Unable to find block document named {name}")
        return Block()

    monkeypatch.setattr(Secret, "load", classmethod(load))
    assert resolve_settings({"api_key": "prefect-secret:stripe-key"})["api_key"] == "sk_from_block"
    with pytest.raises(SecretResolutionError, match="'other'.*cannot be loaded"):
        resolve_settings({"api_key": "prefect-secret:other"})


def test_sync_stream_runs_one_stream_from_plain_values(sqlite_engine: Any) -> None:
    import respx

    from fakes.recurly import RecurlyFake
    from jobs.sync import sync_stream
    from storage.sources import create_source
    from storage.sync_state import load_cursor

    fake = RecurlyFake(n=12, page_size=5)
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        with sqlite_engine.begin() as conn:
            source_id = create_source(conn, "rec", "recurly", fake.settings()).id
        summary = sync_stream(sqlite_engine.url.render_as_string(hide_password=False), "rec", "accounts",
                              sleep_fn=lambda s: None)
    assert summary.stream == "accounts" and summary.created == 12 and summary.fetched == 12
    with sqlite_engine.connect() as conn:
        assert load_cursor(conn, source_id, "accounts")["watermark"] is not None
        assert load_cursor(conn, source_id, "subscriptions") is None  # only the stream asked for ran
