"""Concurrent reads: a first sync pages disjoint slices of a list at once, paced by ``max_requests_per_second``.

Checked against the vendor: Chargebee's list filters on timestamps take ``[after]``, ``[before]``, ``[on]``
and ``[between]`` (its Java SDK's ``TimestampFilter``; the Chargebee MCP tool lists them for
``created_at`` of customers), ``[after]`` and ``[before]`` are strict, and ``sort_by[asc|desc]=created_at``
orders a customer list; its pages chain through ``next_offset``, so one list is read a page at a time
while lists of disjoint ``created_at`` ranges are independent. The fake (``fakes/chargebee.py``) filters
and sorts that way, over real HTTP (``fakes.server.FakeServer``).
"""

from __future__ import annotations

import bisect
import json
import threading
import time
from typing import Any

import pytest
from sqlalchemy import Engine, select

from connectors.base import Connector
from connectors.chargebee import ChargebeeConnector
from connectors.http import ApiError, RequestPacer
from connectors.paging import OffsetTokenPaginator, PageRequest, PaginationLoopError, fetch_slices
from fakes.chargebee import ChargebeeFake
from fakes.server import FakeServer
from funnelsync.timeutil import from_epoch
from jobs.sync import sync_source
from storage.schema import source_customers
from storage.sources import create_source
from storage.sync_state import load_cursor


def peak_per_second(arrivals: list[float]) -> int:
    """The most arrivals within any one-second window ``[t, t + 1)``."""
    ordered = sorted(arrivals)
    return max((bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered)), default=0)


def stored_ids(engine: Engine, source_id: int) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(source_customers.c.external_id).where(
            source_customers.c.data_source_id == source_id)).scalars())


def add_source(engine: Engine, fake: ChargebeeFake, **settings: Any) -> int:
    with engine.begin() as conn:
        return create_source(conn, "cb", "chargebee", {**fake.settings(), **settings}).id


def test_pacer_keeps_every_one_second_window_within_the_rate_across_threads() -> None:
    pacer = RequestPacer(20)
    starts: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(8):
            pacer.wait()
            with lock:
                starts.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(starts) == 32
    assert peak_per_second(starts) <= 20
    # Paced, not serialised by chance: 32 starts at 20 a second span at least 31 intervals.
    assert max(starts) - min(starts) >= 31 / 20 - 0.01


def test_a_rate_that_is_not_positive_is_refused_in_one_line() -> None:
    with pytest.raises(Exception, match="max_requests_per_second"):
        ChargebeeConnector({**ChargebeeFake().settings(), "max_requests_per_second": "0"})


def test_sliced_first_sync_sends_requests_at_once_within_the_configured_rate(db_engine: Engine) -> None:
    fake = ChargebeeFake(n=120, page_size=10)
    with FakeServer(fake) as server:
        # A slow remote API: an answer takes three turns of the pace, so only concurrency can keep it.
        server.delay_seconds = 0.2
        source_id = add_source(db_engine, fake, concurrency=4, max_requests_per_second=15, page_size=10)
        started = time.monotonic()
        summary = sync_source(db_engine, "cb")
        seconds = time.monotonic() - started
    assert sorted(stored_ids(db_engine, source_id)) == sorted(fake.expected_ids())
    assert summary.totals["created"] == len(fake.people)
    assert server.most_in_flight > 1  # the slices were really read at once...
    assert peak_per_second(server.arrivals) <= 15  # ...and never faster than configured
    assert seconds >= (len(server.arrivals) - 15) / 15


def test_without_a_rate_the_same_sync_goes_faster_than_it(db_engine: Engine) -> None:
    """The limit above is what held the pace: unpaced, the slices send more than 15 requests in a second."""
    fake = ChargebeeFake(n=120, page_size=10)
    with FakeServer(fake) as server:
        server.delay_seconds = 0.05
        source_id = add_source(db_engine, fake, concurrency=4, page_size=10)
        sync_source(db_engine, "cb")
    assert sorted(stored_ids(db_engine, source_id)) == sorted(fake.expected_ids())
    assert peak_per_second(server.arrivals) > 15


def slice_members(fake: ChargebeeFake, part: dict[str, Any]) -> list[str]:
    """The ids of a slice's customers in the order the fake pages them (``created_at`` ascending)."""
    lo, hi = part["created_from"], part["created_before"]
    people = sorted(fake.people, key=lambda p: (p.created, p.id))
    return [p.id for p in people if p.created >= lo and (hi is None or p.created < hi)]


def test_every_committed_cursor_of_a_sliced_read_covers_only_written_customers(db_engine: Engine) -> None:
    """Whenever a batch commits, each slice's pages before its saved token are all stored: a run killed
    there and resumed loses no one, however the slices' pages interleaved."""
    fake = ChargebeeFake(n=90, page_size=5)
    checked: list[int] = []
    with FakeServer(fake) as server:
        server.delay_seconds = 0.005
        source_id = add_source(db_engine, fake, concurrency=3, page_size=5)

        def check(summary: Any) -> None:
            with db_engine.connect() as conn:
                cursor = load_cursor(conn, source_id, "customers")
            stored = set(stored_ids(db_engine, source_id))
            if not cursor.get("slices"):
                assert cursor.get("since") is not None and stored >= fake.expected_ids()
                return
            for part in cursor["slices"]:
                members = slice_members(fake, part["slice"])
                done = len(members) if part["done"] else (
                    int(json.loads(part["page_token"])[0]) if part["page_token"] else 0)
                assert set(members[:done]) <= stored, f"cursor passed unwritten customers of {part['slice']}"
            checked.append(summary.batches)

        sync_source(db_engine, "cb", batch_size=5, progress=lambda s: check(s) if s.stream == "customers" else None)
    assert len(checked) >= 10  # the read was cut into many batches, each checked
    assert sorted(stored_ids(db_engine, source_id)) == sorted(fake.expected_ids())


class Killed(Exception):
    """Stops a sync between two batches, as a killed process would."""


def test_a_sliced_read_killed_mid_way_resumes_its_open_slices_with_every_record_once(db_engine: Engine) -> None:
    fake = ChargebeeFake(n=80, page_size=5)
    with FakeServer(fake) as server:
        source_id = add_source(db_engine, fake, concurrency=4, page_size=5)

        def kill_after_four(summary: Any) -> None:
            if summary.batches == 4:
                raise Killed

        with pytest.raises(Killed):
            sync_source(db_engine, "cb", batch_size=5, progress=kill_after_four)
        with db_engine.connect() as conn:
            cursor = load_cursor(conn, source_id, "customers")
        assert cursor["slices"] and not all(part["done"] for part in cursor["slices"])
        partial = len(stored_ids(db_engine, source_id))
        del server.requests[:]
        resumed = sync_source(db_engine, "cb", batch_size=5)
    customers = next(s for s in resumed.streams if s.stream == "customers")
    assert 0 < partial < len(fake.people)
    assert customers.fetched < len(fake.people)  # carried on, not read again from the start
    assert sorted(stored_ids(db_engine, source_id)) == sorted(fake.expected_ids())
    assert len(stored_ids(db_engine, source_id)) == len(fake.expected_ids())


def test_a_slice_that_fails_stops_the_read_with_the_api_error() -> None:
    fake = ChargebeeFake(n=60, page_size=5)
    refusals = iter(range(1000))

    def refuse_third(response: Any) -> Any:
        import httpx

        return httpx.Response(400, json={"message": "boom", "api_error_code": "invalid_request"}) \
            if next(refusals) == 2 else response

    with FakeServer(fake) as server:
        connector: Connector = ChargebeeConnector(fake.settings(), source_name="cb")
        fake.injections["/api/v2/customers"] = [refuse_third] * 50
        slices = [(PageRequest("/customers", {"limit": 5, "created_at[after]": p.created - 1,
                                              "created_at[before]": p.created + 1}), None)
                  for p in fake.people[:6]]
        got: list[int] = []
        with pytest.raises(ApiError, match="HTTP 400"), connector:
            for index, _page, _count in fetch_slices(connector.client, slices, OffsetTokenPaginator(), len, workers=2):
                got.append(index)
        assert server.requests  # the slices were asked for
    assert len(got) < len(slices)


def test_a_slice_whose_api_hands_back_the_same_token_raises_the_loop_error(db_engine: Engine) -> None:
    fake = ChargebeeFake(n=60, page_size=5)
    fake.loop_path = fake.main_path  # the list ignores its page token: the same token comes back
    with FakeServer(fake):
        source_id = add_source(db_engine, fake, concurrency=2, page_size=5)
        with pytest.raises(PaginationLoopError, match="a second time"):
            sync_source(db_engine, "cb")
    with db_engine.connect() as conn:
        cursor = load_cursor(conn, source_id, "customers")
    assert not cursor or cursor.get("since") is None  # never marked as read through


def test_a_customer_changed_after_its_slice_was_read_is_read_by_the_next_run(db_engine: Engine) -> None:
    """Slices are not sorted by ``updated_at``: a change to a customer whose slice is done can be older
    than a change read later in another slice, so the next run reads from when the sliced read began."""
    fake = ChargebeeFake(n=60, page_size=5)
    began = fake.people[-1].updated + 3600  # the sync's clock: after every customer's last change
    early, late = fake.people[0], fake.people[-1]  # the first slice's and the last one's
    with FakeServer(fake):
        source_id = add_source(db_engine, fake, concurrency=2, page_size=5)

        def change_during_the_read(summary: Any) -> None:
            if summary.stream == "customers" and summary.batches == 2:
                early.email, early.updated = "moved@example.com", began + 10
                late.updated = began + 1000  # its slice is read later: the watermark ends there

        clock = {"now": lambda: from_epoch(began)}
        sync_source(db_engine, "cb", batch_size=5, progress=change_during_the_read, **clock)
        with db_engine.connect() as conn:
            cursor = load_cursor(conn, source_id, "customers")
        assert cursor["watermark"] == began + 1000  # the late change was read after the early one
        sync_source(db_engine, "cb", batch_size=5, **clock)
    with db_engine.connect() as conn:
        email = conn.execute(select(source_customers.c.email).where(
            source_customers.c.data_source_id == source_id, source_customers.c.external_id == early.id)).scalar_one()
    assert email == "moved@example.com"
