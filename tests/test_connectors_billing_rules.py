"""The SPEC section 3 row of each billing connector: lead date, trial date, subscriber since, state."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import respx
from sqlalchemy import Engine, select

from connectors.chargebee import CHANGE_LOOKBACK as CHARGEBEE_LOOKBACK
from connectors.chargebee import ChargebeeConnector
from connectors.http import ApiError
from connectors.recurly import RecurlyConnector
from connectors.stripe import StripeConnector, first_paid_by_subscription
from fakes.base import DAY, T0, FakeInvoice
from fakes.chargebee import ChargebeeFake
from fakes.recurly import RecurlyFake
from fakes.stripe import StripeFake
from funnelsync.records import SourceCustomerRecord
from jobs.secrets import SecretResolutionError, protect_settings, resolve_settings
from jobs.sync import sync_source
from storage.schema import customers, source_customers
from storage.sources import create_source


def utc(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, tz=UTC)


@pytest.fixture
def router() -> Iterator[respx.Router]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


def records_of(connector: Any) -> dict[str, SourceCustomerRecord]:
    out = {}
    for stream in connector.streams:
        for batch in connector.read(stream.name, None, True):
            out.update({r.external_id: r for r in batch.records})
    return out


def customer_row(engine: Engine, external_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(customers).join(source_customers, source_customers.c.customer_id == customers.c.id)
            .where(source_customers.c.external_id == external_id)
        ).one()


# ---------------------------------------------------------------------------------------- Stripe


def test_stripe_first_paid_ignores_zero_and_unpaid_invoices() -> None:
    invoices = [
        {"subscription": "sub_1", "amount_paid": 0, "status": "paid", "status_transitions": {"paid_at": 100}},
        {"subscription": "sub_1", "amount_paid": 2900, "status": "paid", "status_transitions": {"paid_at": 300}},
        {"subscription": "sub_1", "amount_paid": 2900, "status": "paid", "status_transitions": {"paid_at": 200}},
        {"subscription": None, "amount_paid": 5000, "status": "paid", "status_transitions": {"paid_at": 50}},
        # API 2025-03-31.basil and later: the subscription sits under parent.subscription_details
        {"parent": {"subscription_details": {"subscription": "sub_2"}}, "amount_paid": 900, "status": "paid",
         "status_transitions": {"paid_at": 400}},
    ]
    assert first_paid_by_subscription(invoices) == {"sub_1": 200, "sub_2": 400}


def test_stripe_mapping_lead_is_trial_start(router: respx.Router) -> None:
    fake = StripeFake(n=5)
    fake.install(router)
    recs = records_of(StripeConnector(fake.settings(), sleep_fn=lambda s: None))
    lead, trialing, converted, direct, abandoned = (fake.people[i] for i in range(5))
    assert recs[lead.id].lead_created_at is None and recs[lead.id].subscriptions == []
    assert recs[trialing.id].lead_created_at == utc(trialing.created)
    assert recs[trialing.id].free_trial_started_at == utc(trialing.created)
    assert recs[trialing.id].subscriptions[0].state == "trialing"
    assert recs[trialing.id].subscriptions[0].first_paid_at is None  # a $0 trial invoice is no conversion
    conv = recs[converted.id].subscriptions[0]
    assert conv.state == "active" and conv.first_paid_at == utc(converted.subscriptions[0].trial_end + 30)
    assert recs[direct.id].lead_created_at is None  # no trial: no lead date by default
    assert recs[direct.id].subscriptions[0].first_paid_at == utc(direct.created + 5)
    gone = recs[abandoned.id].subscriptions[0]
    assert gone.state == "cancelled" and gone.first_paid_at is None and gone.cancelled_at is not None
    assert recs[converted.id].company == "Company 2" and recs[converted.id].country == "FR"


def test_stripe_lead_date_option_uses_customer_created(router: respx.Router) -> None:
    fake = StripeFake(n=5)
    fake.install(router)
    recs = records_of(StripeConnector({**fake.settings(), "lead_date": "customer_created"}, sleep_fn=lambda s: None))
    assert all(recs[p.id].lead_created_at == utc(p.created) for p in fake.people)


def test_stripe_trial_to_active_sets_subscriber_since_on_first_nonzero_invoice(
    router: respx.Router, db_engine: Engine
) -> None:
    fake = StripeFake(n=5)
    fake.install(router)
    with db_engine.begin() as conn:
        create_source(conn, "stripe", "stripe", fake.settings())
    sync_source(db_engine, "stripe", sleep_fn=lambda s: None)
    trialing = fake.people[1]
    before = customer_row(db_engine, trialing.id)
    assert before.subscriber_since is None and before.status == "New_Lead"
    assert before.free_trial_started_at == utc(trialing.created)

    # The trial ends and converts: a paid invoice, the subscription turns active, Stripe emits events.
    sub = trialing.subscriptions[0]
    now = int(time.time())
    sub.status, sub.trial_end = "active", now - 60
    fake_paid = now - 30
    trialing.invoices.append(FakeInvoice("in_conv_1", sub.id, 2900, fake_paid))
    trialing.invoices.append(FakeInvoice("in_conv_2", sub.id, 2900, fake_paid + 10))
    fake.add_event("customer.subscription.updated", fake.subscription(trialing, sub), now)
    fake.add_event("invoice.paid", fake.invoice(trialing, trialing.invoices[-2]), now)

    summary = sync_source(db_engine, "stripe", sleep_fn=lambda s: None)
    events = next(s for s in summary.streams if s.stream == "events")
    assert events.fetched == 2 and events.updated == 1
    after = customer_row(db_engine, trialing.id)
    assert after.subscriber_since == utc(fake_paid) and after.status == "Active"
    assert after.lead_created_at == utc(trialing.created)  # the lead date stays the trial start


# ------------------------------------------------------------------------------------- Chargebee


def test_chargebee_lead_is_customer_created_at(router: respx.Router) -> None:
    fake = ChargebeeFake(n=5)
    fake.install(router)
    recs = records_of(ChargebeeConnector(fake.settings(), sleep_fn=lambda s: None))
    assert all(recs[p.id].lead_created_at == utc(p.created) for p in fake.people)  # leads without subs too
    lead, trialing, converted, direct, abandoned = fake.people
    assert recs[lead.id].free_trial_started_at is None and recs[lead.id].subscriptions == []
    assert recs[trialing.id].free_trial_started_at == utc(trialing.subscriptions[0].trial_start)
    assert recs[trialing.id].subscriptions[0].state == "trialing"
    assert recs[converted.id].subscriptions[0].first_paid_at == utc(converted.subscriptions[0].trial_end + 30)
    assert recs[direct.id].subscriptions[0].first_paid_at == utc(direct.created + 5)
    assert recs[abandoned.id].subscriptions[0].state == "cancelled"
    assert recs[abandoned.id].subscriptions[0].first_paid_at is None
    assert recs[converted.id].name == "First2 Last2" and recs[converted.id].company == "Company 2"


def test_chargebee_first_sync_sends_no_updated_at_filter(router: respx.Router) -> None:
    fake = ChargebeeFake(n=3)
    fake.install(router)
    connector = ChargebeeConnector(fake.settings(), sleep_fn=lambda s: None)
    batches = list(connector.read("customers", None, False))
    first_call = next(c for c in router.calls if c.request.url.path.endswith("/customers"))
    assert "updated_at[after]" not in first_call.request.url.params  # the PostHog trap
    assert first_call.request.url.params["sort_by[asc]"] == "updated_at"
    list(connector.read("customers", batches[-1].cursor, False))
    last_call = [c for c in router.calls if c.request.url.path.endswith("/customers")][-1]
    # ``[after]`` is strict: the incremental read starts the lookback before the watermark.
    lookback = int(CHARGEBEE_LOOKBACK.total_seconds())
    assert last_call.request.url.params["updated_at[after]"] == str(fake.people[-1].updated - lookback)


def test_chargebee_subscription_change_rebuilds_its_customer(router: respx.Router, db_engine: Engine) -> None:
    fake = ChargebeeFake(n=5)
    fake.install(router)
    with db_engine.begin() as conn:
        create_source(conn, "cb", "chargebee", fake.settings())
    sync_source(db_engine, "cb", sleep_fn=lambda s: None)
    trialing = fake.people[1]
    sub = trialing.subscriptions[0]
    now = int(time.time())
    sub.status, sub.updated = "active", now
    trialing.invoices.append(FakeInvoice("inv_conv", sub.id, 2900, now - 5))
    summary = sync_source(db_engine, "cb", sleep_fn=lambda s: None)
    changes = next(s for s in summary.streams if s.stream == "subscriptions")
    assert changes.fetched == 1 and changes.updated == 1
    row = customer_row(db_engine, trialing.id)
    assert row.subscriber_since == utc(now - 5) and row.status == "Active"
    assert row.lead_created_at == utc(trialing.created)


# --------------------------------------------------------------------------------------- Recurly


def test_recurly_lead_is_trial_start(router: respx.Router) -> None:
    fake = RecurlyFake(n=5)
    fake.install(router)
    # A month after the fake's first customer: the trialing one is still in its trial (Recurly reports it
    # ``active`` with ``trial_ends_at`` ahead).
    recs = records_of(RecurlyConnector(fake.settings(), sleep_fn=lambda s: None, now=lambda: utc(T0 + 30 * DAY)))
    lead, trialing, converted, direct, abandoned = fake.people
    assert recs[lead.id].lead_created_at is None and recs[lead.id].subscriptions == []
    for person in (trialing, converted, abandoned):
        assert recs[person.id].lead_created_at == utc(person.subscriptions[0].trial_start)
        assert recs[person.id].free_trial_started_at == utc(person.subscriptions[0].trial_start)
    assert recs[direct.id].lead_created_at is None
    assert recs[trialing.id].subscriptions[0].state == "trialing"
    assert recs[trialing.id].subscriptions[0].first_paid_at is None
    # Subscriber since = the first paid non-zero invoice (the $0 one opening the trial does not count).
    assert recs[converted.id].subscriptions[0].first_paid_at == utc(converted.invoices[1].paid_at)
    assert recs[direct.id].subscriptions[0].first_paid_at == utc(direct.invoices[0].paid_at)
    gone = recs[abandoned.id].subscriptions[0]
    assert gone.state == "cancelled" and gone.first_paid_at is None  # expired at its trial end, unpaid


def test_recurly_sends_version_header_and_ascending_order(router: respx.Router) -> None:
    fake = RecurlyFake(n=3)
    fake.install(router)
    list(RecurlyConnector(fake.settings(), sleep_fn=lambda s: None).read("accounts", None, False))
    call = next(c for c in router.calls if c.request.url.path == "/accounts")
    assert call.request.headers["Accept"] == "application/vnd.recurly.v2021-02-25"
    assert call.request.url.params["sort"] == "updated_at" and call.request.url.params["order"] == "asc"
    assert "begin_time" not in call.request.url.params


# --------------------------------------------------------------------------------------- secrets


def test_secret_references_resolve_at_run_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNNELSYNC_HOME", str(tmp_path))
    monkeypatch.setenv("MY_STRIPE_KEY", "sk_from_env")
    stored = protect_settings("stripe", "s", {"api_key": "sk_literal_1234", "base_url": "http://127.0.0.1:1"})
    assert stored["api_key"].startswith("local-secret:") and stored["base_url"] == "http://127.0.0.1:1"
    assert resolve_settings(stored)["api_key"] == "sk_literal_1234"
    assert resolve_settings({"api_key": "env:MY_STRIPE_KEY"})["api_key"] == "sk_from_env"
    monkeypatch.delenv("MY_STRIPE_KEY")
    with pytest.raises(SecretResolutionError, match="MY_STRIPE_KEY, which is not set"):
        resolve_settings({"api_key": "env:MY_STRIPE_KEY"})
    with pytest.raises(SecretResolutionError, match="missing"):
        resolve_settings({"api_key": "local-secret:gone.api_key.abc"})
    with pytest.raises(SecretResolutionError, match="malformed"):
        resolve_settings({"api_key": "local-secret:../../etc/passwd"})
    with pytest.raises(ValueError, match="missing required setting"):
        protect_settings("chargebee", "c", {"api_key": "x"})




def test_change_made_during_an_interrupted_first_sync_is_not_lost(router: respx.Router, db_engine: Engine) -> None:
    fake = ChargebeeFake(n=25, page_size=10)
    fake.install(router)
    with db_engine.begin() as conn:
        create_source(conn, "cb", "chargebee", fake.settings())
    first_run = int(time.time()) - 7200

    def stop_after_two(summary: Any) -> None:
        if summary.batches == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync_source(db_engine, "cb", batch_size=1, progress=stop_after_two, sleep_fn=lambda s: None,
                    now=lambda: utc(first_run))
    # Customer 1 (read in the first batch) converts between the interrupted run and the resumed one.
    trialing = fake.people[1]
    sub = trialing.subscriptions[0]
    sub.status, sub.updated = "active", first_run + 600
    trialing.invoices.append(FakeInvoice("inv_mid", sub.id, 2900, first_run + 600))
    sync_source(db_engine, "cb", batch_size=1, sleep_fn=lambda s: None, now=lambda: utc(first_run + 3600))
    assert customer_row(db_engine, trialing.id).subscriber_since == utc(first_run + 600)


def test_stripe_events_cursor_older_than_retention_asks_for_full_refresh(router: respx.Router) -> None:
    fake = StripeFake(n=2)
    fake.install(router)
    connector = StripeConnector(fake.settings(), source_name="billing", sleep_fn=lambda s: None)
    stale = int(time.time()) - 31 * 86_400
    with pytest.raises(ApiError, match="--full-refresh"):
        list(connector.read("events", {"since": stale, "watermark": stale}, False))
    fresh = int(time.time()) - 86_400
    assert list(connector.read("events", {"since": fresh, "watermark": fresh}, False))
