"""The conformance suite every pull connector passes, against its fake API (``fakes/<kind>.py``).

A connector joins by shipping its fake as ``fakes/<kind>.py``; nothing here names a vendor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import Engine, func, select

from connectors.base import Batch, Connector, Feed
from connectors.http import CredentialsError
from connectors.paging import PaginationLoopError
from connectors.registry import connector_class, is_connector_kind, kinds_fed
from fakes.base import FakeApi, fake_of, shipped_fakes
from jobs.sync import sync_source
from storage.schema import source_customers
from storage.sources import create_source
from storage.sync_state import load_cursor

# Every kind a connector pulls, found in the registry: a new connector joins the suite by itself.
PULLED_BY_CONNECTORS = [kind for kind in kinds_fed(Feed.PULLED) if is_connector_kind(kind)]


@pytest.fixture(params=PULLED_BY_CONNECTORS)
def fake(request: pytest.FixtureRequest) -> Iterator[FakeApi]:
    """A fake API of each pulled connector kind, installed on a respx router."""
    found = fake_of(request.param)
    if found is None:
        pytest.fail(f"no fake API for the pulled kind {request.param!r}: ship one as fakes/{request.param}.py")
    api = found()
    with respx.mock(assert_all_called=False) as router:
        api.install(router)
        try:
            yield api
        finally:
            api.close()


def make_connector(fake: FakeApi, api_key: str | None = None, slept: list[float] | None = None,
                   batch_size: int = 1) -> Connector:
    sink = slept if slept is not None else []
    return connector_class(fake.kind)(fake.settings(api_key), source_name=f"my-{fake.kind}",
                                      sleep_fn=sink.append, batch_size=batch_size)


def read_all(connector: Connector, states: dict[str, Any] | None = None,
             full_refresh: bool = False) -> dict[str, list[Batch]]:
    out: dict[str, list[Batch]] = {}
    for stream in connector.streams:
        out[stream.name] = list(connector.read(stream.name, (states or {}).get(stream.name), full_refresh))
    return out


def add_source(engine: Engine, fake: FakeApi, api_key: str | None = None) -> int:
    with engine.begin() as conn:
        return create_source(conn, f"my-{fake.kind}", fake.kind, fake.settings(api_key)).id


def stored_ids(engine: Engine, source_id: int) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(source_customers.c.external_id).where(
            source_customers.c.data_source_id == source_id)).scalars())


def test_every_pulled_kind_has_a_fake_and_every_fake_a_pulled_kind() -> None:
    shipped = shipped_fakes()
    assert sorted(shipped) == sorted(PULLED_BY_CONNECTORS)
    assert all(fake.__module__ == f"fakes.{kind}" for kind, fake in shipped.items())  # found by name
    assert {"stripe", "chargebee", "recurly", "app_store_connect", "google_play"} <= set(shipped)


def test_every_record_carries_its_key(fake: FakeApi) -> None:
    batches = read_all(make_connector(fake))
    records = [r for stream in batches.values() for b in stream for r in b.records]
    assert records and all(r.external_id for r in records)
    assert {r.external_id for r in records} == fake.expected_ids()
    main = batches[fake.main_stream]
    assert len(main) >= 3  # the fake really paged: 25 records, 10 a page
    assert sum(b.fetched for b in main) == len(fake.people)
    # A billing record knows its whole set of subscriptions (an empty list is "none", not "unknown").
    assert all(r.subscriptions is not None for r in records)


def _watermarks(batches: list[Batch]) -> list[Any]:
    return [b.cursor.get("watermark") for b in batches]


def test_cursors_only_move_forward(fake: FakeApi) -> None:
    connector = make_connector(fake)
    first = read_all(connector)
    for name, batches in first.items():
        marks = [m for m in _watermarks(batches) if m is not None]
        assert marks == sorted(marks), name
        assert all("page_token" not in b.cursor for b in batches[-1:]), name  # a finished run keeps no token
    final = {name: batches[-1].cursor for name, batches in first.items()}
    again = read_all(make_connector(fake), final)
    for name, batches in again.items():
        for mark in _watermarks(batches):
            assert mark is not None and mark >= final[name]["watermark"], name


def test_second_incremental_run_writes_nothing(fake: FakeApi, db_engine: Engine) -> None:
    source_id = add_source(db_engine, fake)
    first = sync_source(db_engine, f"my-{fake.kind}", sleep_fn=lambda s: None)
    assert first.totals["created"] == len(fake.expected_ids())  # GoCardless: only customers with a payment
    second = sync_source(db_engine, f"my-{fake.kind}", sleep_fn=lambda s: None)
    assert second.totals["created"] == 0 and second.totals["updated"] == 0
    assert sorted(stored_ids(db_engine, source_id)) == sorted(fake.expected_ids())


def test_429_with_retry_after_is_waited_out(fake: FakeApi) -> None:
    fake.inject(fake.main_path, [httpx.Response(429, headers={"Retry-After": "7"},
                                                json={"error": {"message": "Too many requests"}})])
    slept: list[float] = []
    batches = read_all(make_connector(fake, slept=slept))
    assert slept == [7.0]
    assert sum(b.fetched for b in batches[fake.main_stream]) == len(fake.people)


def test_500_then_200_succeeds(fake: FakeApi) -> None:
    fake.inject(fake.main_path, [httpx.Response(500, json={"message": "internal error"})])
    slept: list[float] = []
    batches = read_all(make_connector(fake, slept=slept))
    assert len(slept) == 1 and 0 < slept[0] <= 60
    assert {r.external_id for b in batches[fake.main_stream] for r in b.records} == fake.expected_ids()


def test_401_fails_fast_with_a_clear_message(fake: FakeApi) -> None:
    wrong = "sk_live_WRONG_KEY_123456"
    slept: list[float] = []
    with pytest.raises(CredentialsError) as info:
        read_all(make_connector(fake, api_key=wrong, slept=slept))
    message = str(info.value)
    secret_settings = [s.name for s in connector_class(fake.kind).settings_schema if s.secret]
    assert f"my-{fake.kind}" in message and fake.refused in message
    assert any(name in message for name in secret_settings)  # names the setting to check
    assert wrong not in message and fake.api_key not in message
    assert slept == [] and sum(fake.calls.values()) == 1


def test_repeated_page_token_raises(fake: FakeApi) -> None:
    fake.loop_path = fake.main_path
    with pytest.raises(PaginationLoopError, match="a second time"):
        read_all(make_connector(fake))


class Killed(Exception):
    """Raised by a test to stop a sync between two batches, as a killed process would."""


def test_sync_killed_after_second_batch_resumes_with_every_record_once(fake: FakeApi, db_engine: Engine) -> None:
    source_id = add_source(db_engine, fake)
    seen: list[int] = []

    def kill_after_two(summary: Any) -> None:
        seen.append(summary.batches)
        if summary.batches == 2:
            raise Killed

    with pytest.raises(Killed):
        sync_source(db_engine, f"my-{fake.kind}", progress=kill_after_two, batch_size=1, sleep_fn=lambda s: None)
    partial = stored_ids(db_engine, source_id)
    assert 0 < len(partial) < len(fake.people)
    with db_engine.connect() as conn:
        cursor = load_cursor(conn, source_id, fake.main_stream)
    assert cursor and cursor.get("page_token")  # committed mid-list, with its batch

    resumed = sync_source(db_engine, f"my-{fake.kind}", batch_size=1, sleep_fn=lambda s: None)
    main = next(s for s in resumed.streams if s.stream == fake.main_stream)
    assert main.fetched < len(fake.people)  # resumed after the committed batches, not from scratch
    ids = stored_ids(db_engine, source_id)
    assert sorted(ids) == sorted(fake.expected_ids())
    with db_engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(source_customers).where(
            source_customers.c.data_source_id == source_id)).scalar_one()
    assert count == len(fake.expected_ids())
