"""Stripe against its documented behaviour: the events cursor of a quiet account, the legacy rate limit."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import respx
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from api.app import create_app
from connectors.http import ApiError
from connectors.stripe import CHANGE_LOOKBACK, StripeConnector
from fakes.stripe import StripeFake
from funnelsync.timeutil import epoch_seconds
from jobs.sync import sync_source
from storage.schema import merge_events, source_customers
from storage.sources import create_source


@pytest.fixture
def router() -> Iterator[respx.Router]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


def last_cursor(connector: StripeConnector, stream: str, state: dict[str, int] | None) -> dict[str, int]:
    batches = list(connector.read(stream, state, False))
    assert batches, "an exhausted list still commits its cursor"
    return batches[-1].cursor


def test_stripe_quiet_account_events_cursor_follows_the_clock(router: respx.Router) -> None:
    """A run that lists no event moves the cursor to its own start less the lookback.

    Checked against https://docs.stripe.com/api/events/list (``created[gte]``; events are kept 30 days):
    an account without events for a month must keep syncing incrementally, without a full refresh.
    """
    fake = StripeFake(n=2)
    fake.install(router)
    start = datetime(2026, 6, 1, tzinfo=UTC)
    old = epoch_seconds(start - timedelta(days=29))
    first = StripeConnector(fake.settings(), now=lambda: start, sleep_fn=lambda s: None)
    cursor = last_cursor(first, "events", {"since": old, "watermark": old})
    assert cursor["since"] == epoch_seconds(start - CHANGE_LOOKBACK)
    assert cursor["watermark"] == cursor["since"]

    # Five days later (34 days after the last event) the quiet source still syncs.
    later = StripeConnector(fake.settings(), now=lambda: start + timedelta(days=5), sleep_fn=lambda s: None)
    assert last_cursor(later, "events", cursor)["since"] == epoch_seconds(start + timedelta(days=5) - CHANGE_LOOKBACK)


def test_stripe_events_cursor_keeps_an_event_later_than_the_run_start(router: respx.Router) -> None:
    """An event stamped after the run began (clock skew) keeps the higher watermark: the cursor never goes back."""
    fake = StripeFake(n=2)
    fake.install(router)
    start = datetime(2026, 6, 1, tzinfo=UTC)
    ahead = epoch_seconds(start) + 30
    fake.add_event("customer.updated", fake.customer(fake.people[0]), ahead)
    connector = StripeConnector(fake.settings(), now=lambda: start, sleep_fn=lambda s: None)
    since = epoch_seconds(start - timedelta(days=1))
    assert last_cursor(connector, "events", {"since": since, "watermark": since})["since"] == ahead


def test_stripe_legacy_400_rate_limit_is_retried(router: respx.Router) -> None:
    """Stripe's older rate-limit answer, HTTP 400 with ``error.code == "rate_limit"``, is waited out.

    Checked in stripe-python ``stripe/_api_requestor.py`` ``specific_v1_api_error``: "Rate limits were
    previously coded as 400's with code 'rate_limit'" and it raises ``RateLimitError`` for them.
    """
    fake = StripeFake(n=3)
    fake.install(router)
    fake.inject("/v1/customers", [httpx.Response(400, json={"error": {
        "code": "rate_limit", "type": "invalid_request_error",
        "message": "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
    }})])
    slept: list[float] = []
    connector = StripeConnector(fake.settings(), sleep_fn=slept.append)
    ids = {r.external_id for b in connector.read("customers", None, True) for r in b.records}
    assert ids == fake.expected_ids()
    assert len(slept) == 1 and fake.calls["/v1/customers"] == 2


def test_stripe_other_400_is_not_retried(router: respx.Router) -> None:
    """A 400 that is not a rate limit (a bad parameter) fails at once."""
    fake = StripeFake(n=3)
    fake.install(router)
    fake.inject("/v1/customers", [httpx.Response(400, json={"error": {
        "code": "parameter_unknown", "type": "invalid_request_error", "message": "Received unknown parameter: x"}})])
    slept: list[float] = []
    connector = StripeConnector(fake.settings(), sleep_fn=slept.append)
    with pytest.raises(ApiError, match="400"):
        list(connector.read("customers", None, True))
    assert slept == []


def test_stripe_customer_deleted_event_removes_the_source_customer(router: respx.Router, db_engine: Engine) -> None:
    """``customer.deleted`` is read from the events stream and the customer leaves the database.

    Checked against https://docs.stripe.com/api/customers/delete ("Returns an object with a deleted
    parameter on success"; a deleted customer retrieved answers ``{"id", "object": "customer",
    "deleted": true}``) and the ``customer.deleted`` event type of https://docs.stripe.com/api/events/types.
    """
    fake = StripeFake(n=5)
    fake.install(router)
    with db_engine.begin() as conn:
        create_source(conn, "billing", "stripe", fake.settings())
    sync_source(db_engine, "billing", sleep_fn=lambda s: None)
    gone = fake.people[2].id
    assert customer_exists(db_engine, gone)
    fake.delete_customer(gone, int(time.time()))
    summary = sync_source(db_engine, "billing", sleep_fn=lambda s: None,
                          now=lambda: datetime.now(UTC) + timedelta(seconds=5))
    assert not customer_exists(db_engine, gone)
    assert all(customer_exists(db_engine, p.id) for p in fake.people)
    assert summary.totals["deleted"] == 1
    with db_engine.connect() as conn:
        assert conn.execute(select(merge_events.c.kind)).scalars().all() == ["delete"]


def customer_exists(engine: Engine, external_id: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(source_customers.c.customer_id)
                            .where(source_customers.c.external_id == external_id)).first() is not None


def test_stripe_customer_deleted_webhook_removes_the_source_customer(router: respx.Router, db_engine: Engine) -> None:
    """A signed ``customer.deleted`` event (https://docs.stripe.com/api/events/types) removes the customer
    at once, without waiting for the next sync."""
    fake = StripeFake(n=3)
    fake.install(router)
    with db_engine.begin() as conn:
        create_source(conn, "billing", "stripe", {**fake.settings(), "webhook_secret": "whsec_abc"})
    sync_source(db_engine, "billing", sleep_fn=lambda s: None)
    gone = fake.people[1].id
    fake.delete_customer(gone, int(time.time()))
    body = json.dumps({"id": "evt_del", "object": "event", "type": "customer.deleted",
                       "data": {"object": {"id": gone, "object": "customer", "deleted": True}}}).encode()
    t = int(time.time())
    signature = hmac.new(b"whsec_abc", f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    response = TestClient(create_app(db_engine)).post(
        "/webhooks/billing", content=body, headers={"Stripe-Signature": f"t={t},v1={signature}"})
    assert response.status_code == 200, response.text
    assert response.json()["deleted"] == 1
    assert not customer_exists(db_engine, gone) and customer_exists(db_engine, fake.people[0].id)
