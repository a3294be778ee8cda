"""The plain sync job: one stream of a source, from plain values (what a Prefect task takes)."""

from __future__ import annotations

from typing import Any


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
