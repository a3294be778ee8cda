"""Recurly v2021-02-25 as its OpenAPI spec documents it (recurly-client-python ``openapi/api.yaml``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
import respx
from sqlalchemy import Engine, select

from connectors.recurly import RecurlyConnector
from fakes.recurly import RecurlyFake, iso
from jobs.sync import sync_source
from storage.schema import merge_events, source_customers
from storage.sources import create_source


@pytest.fixture
def router() -> Iterator[respx.Router]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


def utc(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


def records(connector: RecurlyConnector, stream: str, state: dict[str, str] | None) -> dict[str, object]:
    return {r.external_id: r for b in connector.read(stream, state, False) for r in b.records}


def test_recurly_subscription_changes_ask_accounts_by_ids_alone(router: respx.Router) -> None:
    """``GET /accounts?ids=…`` carries no other parameter.

    openapi/api.yaml, parameter ``ids``: "The `ids` parameter cannot be used with any other ordering or
    filtering parameters (`limit`, `order`, `sort`, `begin_time`, `end_time`, etc)"; up to 200 ids.
    The fake answers 400 otherwise.
    """
    fake = RecurlyFake(n=10)
    fake.install(router)
    connector = RecurlyConnector(fake.settings(), sleep_fn=lambda s: None)
    since = iso(fake.people[0].created - 60)
    got = records(connector, "subscriptions", {"since": since, "watermark": since})
    assert set(got) == {p.id for p in fake.people if p.subscriptions}
    by_ids = [c.request for c in router.calls if c.request.url.path == "/accounts"]
    assert by_ids and all(set(r.url.params.keys()) == {"ids"} for r in by_ids)


def test_recurly_subscriber_since_is_the_first_paid_nonzero_invoice_not_converted_at(router: respx.Router) -> None:
    """``converted_at`` is "When the subscription was converted from a gift card" (openapi/api.yaml,
    Subscription): subscriber since is the ``closed_at`` of the first paid invoice with ``total > 0``
    (``GET /accounts/{account_id}/invoices?state=paid``, Invoice ``subscription_ids``)."""
    fake = RecurlyFake(n=5)
    fake.install(router)
    converted = fake.people[2]
    sub = converted.subscriptions[0]
    fake.gift_card_converted[sub.id] = sub.created + 3 * 86_400
    got = records(RecurlyConnector(fake.settings(), sleep_fn=lambda s: None), "accounts", None)
    fact = got[converted.id].subscriptions[0]  # type: ignore[attr-defined]
    # The $0 invoice opening the trial is skipped; the first charge after the trial counts.
    assert fact.first_paid_at == utc(converted.invoices[1].paid_at)


def test_recurly_trial_is_an_active_subscription_with_its_trial_ahead(router: respx.Router) -> None:
    """v2021-02-25 ``SubscriptionStateEnum`` is active|canceled|expired|failed|future|paused: no
    ``in_trial`` (only ``FilterSubscriptionStateEnum`` has it). A running trial reads ``active`` with
    ``trial_ends_at`` ahead and must map to trialing, not to a paying subscription."""
    fake = RecurlyFake(n=5)
    fake.install(router)
    trialing = fake.people[1]
    during_trial = utc(trialing.subscriptions[0].trial_start + 86_400)
    got = records(RecurlyConnector(fake.settings(), sleep_fn=lambda s: None, now=lambda: during_trial),
                  "accounts", None)
    fact = got[trialing.id].subscriptions[0]  # type: ignore[attr-defined]
    assert (fact.state, fact.first_paid_at) == ("trialing", None)


def limited(reset_in: int) -> httpx.Response:
    return httpx.Response(
        429,
        headers={"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "0",
                 "X-RateLimit-Reset": str(int(time.time()) + reset_in)},
        json={"error": {"type": "rate_limited", "message": "You have made too many API requests in the last "
                        "5 minutes"}},
    )


def test_recurly_429_waits_for_the_whole_rate_limit_window(router: respx.Router) -> None:
    """The limit is "calculated over a sliding 5 minute window" and ``X-RateLimit-Reset`` is "the time,
    measured in seconds since the UNIX Epoch, at which the request count will be reset" (openapi/api.yaml,
    info): a reset four minutes away is waited out in full, not cut to a minute."""
    fake = RecurlyFake(n=3)
    fake.install(router)
    fake.inject("/accounts", [limited(240)])
    slept: list[float] = []
    got = records(RecurlyConnector(fake.settings(), sleep_fn=slept.append), "accounts", None)
    assert set(got) == fake.expected_ids()
    assert len(slept) == 1 and 237 <= slept[0] <= 241


def test_recurly_rate_limit_wait_stops_at_the_configured_ceiling(router: respx.Router) -> None:
    fake = RecurlyFake(n=3)
    fake.install(router)
    fake.inject("/accounts", [limited(240)])
    slept: list[float] = []
    settings = {**fake.settings(), "rate_limit_max_wait": "90"}
    records(RecurlyConnector(settings, sleep_fn=slept.append), "accounts", None)
    assert slept == [90.0]


def test_recurly_closed_account_is_removed(router: respx.Router, db_engine: Engine) -> None:
    """A deactivated account is ``state: inactive`` with ``deleted_at`` ("If present, when the account
    was last marked inactive", openapi/api.yaml Account): the sync removes its source customer."""
    fake = RecurlyFake(n=5)
    fake.install(router)
    with db_engine.begin() as conn:
        create_source(conn, "rc", "recurly", fake.settings())
    sync_source(db_engine, "rc", sleep_fn=lambda s: None)
    closed = fake.people[3]
    fake.close_account(closed, int(time.time()))
    summary = sync_source(db_engine, "rc", sleep_fn=lambda s: None)
    with db_engine.connect() as conn:
        left = set(conn.execute(select(source_customers.c.external_id)).scalars())
        kinds = conn.execute(select(merge_events.c.kind)).scalars().all()
    assert left == fake.expected_ids() - {closed.id}
    assert summary.totals["deleted"] == 1 and kinds == ["delete"]


def test_recurly_closed_account_notification_removes_it_once_it_reads_back_closed(
    router: respx.Router, db_engine: Engine
) -> None:
    """A signed account notification (JSON: ``{id, object_type: "account", event_type, …}``; its XML form is
    ``canceled_account_notification``, docs.recurly.com account notifications) re-reads the account; closed
    (inactive with ``deleted_at``) it is removed at once. Recurly's webhook best practices warn that a closed-
    account notification may arrive after the account reopened, so the account as read decides: a
    notification about an open account removes nothing."""
    import hashlib
    import hmac
    import json

    from fastapi.testclient import TestClient

    from api.app import create_app

    fake = RecurlyFake(n=4)
    fake.install(router)
    with db_engine.begin() as conn:
        create_source(conn, "rc", "recurly", {**fake.settings(), "webhook_secret": "rc-secret"})
    sync_source(db_engine, "rc", sleep_fn=lambda s: None)
    closed, reopened = fake.people[1], fake.people[2]
    fake.close_account(closed, int(time.time()))
    client = TestClient(create_app(db_engine))

    def notify(person: object) -> dict[str, object]:
        body = json.dumps({"id": fake.account(person)["id"], "object_type": "account", "site_id": "qc326l1hl8k9",
                           "event_type": "canceled", "event_time": "2026-06-02T10:00:00Z",
                           "uuid": "63ab531e1d5b1d47eaf1ef44eeb853c3"}).encode()
        ts = int(time.time()) * 1000
        sig = hmac.new(b"rc-secret", f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        response = client.post("/webhooks/rc", content=body, headers={"recurly-signature": f"{ts},{sig}"})
        assert response.status_code == 200, response.text
        return response.json()

    assert notify(closed)["deleted"] == 1
    late = notify(reopened)  # a late notification: the account reads back open
    assert late["deleted"] == 0 and late["customers"] == [reopened.id]
    with db_engine.connect() as conn:
        left = set(conn.execute(select(source_customers.c.external_id)).scalars())
        kinds = conn.execute(select(merge_events.c.kind)).scalars().all()
    assert left == fake.expected_ids() - {closed.id} and kinds == ["delete"]


def test_recurly_trial_end_counts_only_for_a_subscription_whose_charge_did_not_fail(router: respx.Router) -> None:
    """Without a paid non-zero invoice, the trial end of a subscription that outlived its trial is its
    first payment (a bank payment still ``processing``), but not when the charge at the trial end failed:
    the invoice is then ``past_due`` and the account ``has_past_due_invoice`` (openapi/api.yaml, Invoice
    ``state`` pending|processing|past_due|paid|failed…; Account ``has_past_due_invoice``). Nothing was paid,
    so the account is past due and no subscriber."""
    fake = RecurlyFake(n=5)
    fake.install(router)
    converted = fake.people[2]
    charges = [i.id for i in converted.invoices if i.amount_paid > 0]  # not the $0 invoice of the trial
    connector = RecurlyConnector(fake.settings(), sleep_fn=lambda s: None)

    fake.invoice_states.update(dict.fromkeys(charges, "processing"))
    fact = records(connector, "accounts", None)[converted.id].subscriptions[0]  # type: ignore[attr-defined]
    assert (fact.state, fact.first_paid_at) == ("active", utc(converted.subscriptions[0].trial_end))

    fake.invoice_states.update(dict.fromkeys(charges, "past_due"))
    fact = records(connector, "accounts", None)[converted.id].subscriptions[0]  # type: ignore[attr-defined]
    assert (fact.state, fact.first_paid_at) == ("past_due", None)
