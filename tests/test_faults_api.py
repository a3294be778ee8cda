"""The vendor API misbehaves, page by page (Stripe's fake: 25 customers, 10 a page, so page 2 is mid-run).

Each fault ends one of two ways: retried and completed, every record stored once; or the run fails with a
one-line reason naming the source, the pages before the fault stay written, the saved cursor points at the
first unwritten page, and a rerun completes with every record once (the first run's records not counted
again). Behaviour checked against the vendor: Stripe answers 429 with or without ``Retry-After`` and asks
clients to retry 500/502/503 with backoff (docs.stripe.com/rate-limits, docs.stripe.com/error-handling);
its list pages are ``{"object": "list", "data": [...], "has_more": ...}`` of objects keyed by ``id``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from sqlalchemy import Engine, func, select

from connectors.http import DEFAULT_MAX_ATTEMPTS, ApiError, CredentialsError
from fakes.stripe import StripeFake
from jobs.sync import sync_source
from storage.schema import source_customers
from storage.sources import create_source
from storage.sync_state import load_cursor

PATH = "/v1/customers"
SOURCE = "billing"


@pytest.fixture
def fake() -> Iterator[StripeFake]:
    api = StripeFake(n=25, page_size=10)
    with respx.mock(assert_all_called=False) as router:
        api.install(router)
        yield api


def _source(engine: Engine, fake: StripeFake) -> int:
    with engine.begin() as conn:
        return create_source(conn, SOURCE, "stripe", {**fake.settings(), "concurrency": 1}).id


def _stored(engine: Engine, source_id: int) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(source_customers.c.external_id).where(
            source_customers.c.data_source_id == source_id)).scalars())


def _rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(source_customers)).scalar_one()


def _sync(engine: Engine, slept: list[float] | None = None) -> Any:
    sink = slept if slept is not None else []
    return sync_source(engine, SOURCE, sleep_fn=sink.append, batch_size=10)  # one page a batch


def _listed(fake: StripeFake) -> list[str]:
    """Customer ids in the order Stripe lists them: newest first."""
    return [p.id for p in sorted(fake.people, key=lambda p: (p.created, p.id), reverse=True)]


def _customers_created(summary: Any) -> int:
    return next(s for s in summary.streams if s.stream == "customers").created


def _status(code: int, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error": {"type": "api_error", "message": f"status {code}"}}
    if code == 429:
        body = {"error": {"type": "invalid_request_error", "code": "rate_limit",
                          "message": "Too many requests hit the API too quickly."}}
    return httpx.Response(code, headers=headers or {}, json=body)


def _without_key(response: httpx.Response) -> httpx.Response:
    page = response.json()
    del page["data"][3]["id"]
    return httpx.Response(200, json=page)


def _cut_json(response: httpx.Response) -> httpx.Response:
    return httpx.Response(200, content=response.content[: len(response.content) // 2],
                          headers={"Content-Type": "application/json"})


REQUEST = httpx.Request("GET", "https://api.stripe.com/v1/customers")
RECOVERED = {
    "429 storm with Retry-After": [_status(429, {"Retry-After": "3"}) for _ in range(DEFAULT_MAX_ATTEMPTS - 1)],
    "429 storm without Retry-After": [_status(429) for _ in range(DEFAULT_MAX_ATTEMPTS - 1)],
    "Retry-After: 0": [_status(429, {"Retry-After": "0"}) for _ in range(2)],
    "500/502/503 burst": [_status(500), _status(502), _status(503)],
    "connection reset mid-body": [httpx.RemoteProtocolError("peer closed connection without sending complete "
                                                            "message body", request=REQUEST)],
    "page slower than the timeout": [httpx.ReadTimeout("The read operation timed out", request=REQUEST)],
}


@pytest.mark.parametrize("fault", list(RECOVERED))
def test_transient_faults_on_page_two_are_retried_and_the_run_completes(
    db_engine: Engine, fake: StripeFake, fault: str
) -> None:
    source_id = _source(db_engine, fake)
    fake.inject(PATH, [None, *RECOVERED[fault]])  # page 1 as it is, then the fault on page 2
    slept: list[float] = []
    summary = _sync(db_engine, slept)
    assert _customers_created(summary) == 25
    assert _stored(db_engine, source_id) == sorted(fake.expected_ids())
    assert len(slept) == len(RECOVERED[fault])  # one wait per refused attempt, none after success
    if fault == "429 storm with Retry-After":
        assert slept == [3.0] * len(RECOVERED[fault])
    if fault == "Retry-After: 0":
        assert all(s <= 1 for s in slept)  # an immediate retry is allowed, not a long backoff
    assert all(s <= 60 for s in slept)


FAILED = {
    "503 past the attempt bound": ([_status(503) for _ in range(DEFAULT_MAX_ATTEMPTS)], ApiError, "503"),
    "malformed JSON": ([_cut_json for _ in range(DEFAULT_MAX_ATTEMPTS)], ApiError, "JSON"),
    "record without its key": ([_without_key], ApiError, "id"),
    "401 halfway through": ([_status(401)], CredentialsError, "401"),
}


@pytest.mark.parametrize("fault", list(FAILED))
def test_faults_that_persist_fail_in_one_line_with_the_cursor_at_the_first_unwritten_page(
    db_engine: Engine, fake: StripeFake, fault: str
) -> None:
    source_id = _source(db_engine, fake)
    responses, error, fragment = FAILED[fault]
    fake.inject(PATH, [None, *responses])
    with pytest.raises(error) as info:
        _sync(db_engine)
    message = str(info.value)
    assert "\n" not in message and SOURCE in message and fragment in message, message
    assert fake.api_key not in message
    first_page = sorted(_listed(fake)[:10])
    assert _stored(db_engine, source_id) == first_page  # page 1 whole, nothing of page 2
    with db_engine.connect() as conn:
        cursor = load_cursor(conn, source_id, "customers")
    assert cursor is not None and json.dumps(cursor).count(_listed(fake)[9]) == 1, cursor  # resumes after it
    assert _listed(fake)[10] not in json.dumps(cursor)

    fake.injections.clear()
    rerun = _sync(db_engine)
    assert _customers_created(rerun) == 15  # only what the failed run did not write
    assert _stored(db_engine, source_id) == sorted(fake.expected_ids()) and _rows(db_engine) == 25


def test_a_page_that_repeats_its_cursor_fails_in_one_line_and_writes_each_record_once(
    db_engine: Engine, fake: StripeFake
) -> None:
    source_id = _source(db_engine, fake)
    fake.loop_path = PATH  # every page answers as if it were the first
    with pytest.raises(Exception) as info:
        _sync(db_engine)
    message = str(info.value)
    assert "\n" not in message and ("repeat" in message or "loop" in message or "same" in message), message
    assert _stored(db_engine, source_id) == sorted(_listed(fake)[:10])
    fake.loop_path = None
    _sync(db_engine)
    assert _stored(db_engine, source_id) == sorted(fake.expected_ids()) and _rows(db_engine) == 25
