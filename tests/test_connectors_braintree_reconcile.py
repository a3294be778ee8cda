"""Braintree changes no search can list: subscriptions that end or fall past due without a new charge.

Checked in braintree_python: ``braintree/subscription_search.py`` (the criteria are created_at, status,
ids, plan_id, price, days_past_due, next_billing_date, … and no updated-at), ``braintree/
subscription_gateway.py`` (``find`` = ``GET /subscriptions/{id}``; ``search`` = ``advanced_search_ids``
then ``advanced_search`` by id batches, ``resource_collection.py``) and ``webhook_testing_gateway.py``
(``subscription_canceled`` subjects carry the subscription without its customer).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, date, datetime, timedelta

import respx
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from api.app import create_app
from fakes import braintree as fake_braintree
from jobs.sync import sync_source
from storage.schema import source_customers, subscriptions
from storage.sources import create_source


def states(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(select(subscriptions.c.external_id, subscriptions.c.state)).tuples().all())


@respx.mock
def test_incremental_run_sees_an_old_subscription_cancelled_without_a_charge(db_engine: Engine) -> None:
    """An incremental run re-reads the open subscriptions by id batches and rebuilds the customers whose
    subscription moved (cancelled, past due); the rest cost no customer read."""
    fake = fake_braintree.populated(9)
    fake.install(respx)
    with db_engine.begin() as conn:
        create_source(conn, "bt", "braintree", dict(fake_braintree.SETTINGS))
    sync_source(db_engine, "bt", sleep_fn=lambda s: None)
    before = states(db_engine)
    assert before["sub_00000"] == "active" and before["sub_00003"] == "trialing"
    later = datetime(2025, 6, 10, tzinfo=UTC)
    fake.change_status("sub_00000", "Canceled", later)
    fake.change_status("sub_00004", "Past Due", later)
    fake.requests.clear()
    sync_source(db_engine, "bt", sleep_fn=lambda s: None)
    after = states(db_engine)
    assert after["sub_00000"] == "cancelled" and after["sub_00004"] == "past_due"
    assert {k: v for k, v in after.items() if k not in ("sub_00000", "sub_00004")} == {
        k: v for k, v in before.items() if k not in ("sub_00000", "sub_00004")}
    paths = [r.url.path.split(fake_braintree.MERCHANT, 1)[-1] for r in fake.requests]
    # Six open subscriptions in id batches of the gateway's page size (4): two advanced_search calls.
    assert paths.count("/subscriptions/advanced_search") == 2
    # Only the two owners whose subscription moved are read again.
    assert sorted(p for p in paths if p.startswith("/customers/")) == ["/customers/bt_cust_00000",
                                                                       "/customers/bt_cust_00004"]


def bt_form(xml: bytes) -> dict[str, str]:
    payload = base64.encodebytes(xml).decode()
    key = hashlib.sha1(fake_braintree.PRIVATE.encode()).digest()
    digest = hmac.new(key, payload.encode(), hashlib.sha1).hexdigest()
    return {"bt_signature": f"{fake_braintree.PUBLIC}|{digest}", "bt_payload": payload}


@respx.mock
def test_webhook_subject_without_customer_or_token_looks_the_subscription_up(db_engine: Engine) -> None:
    """A ``subscription_canceled`` subject with neither transactions nor a payment-method token: the
    subscription is read (``GET /subscriptions/{id}``) and its owner re-read."""
    fake = fake_braintree.populated(3)
    fake.add_subscription("bt_cust_00002", "sub_late", created=datetime(2025, 6, 1, tzinfo=UTC),
                          first_billing=date(2025, 6, 15), trial=(14, "day"))
    fake.change_status("sub_late", "Canceled", datetime(2025, 6, 3, tzinfo=UTC) + timedelta(hours=1))
    fake.install(respx)
    with db_engine.begin() as conn:
        create_source(conn, "bt", "braintree", dict(fake_braintree.SETTINGS))
    xml = (b'<notification><timestamp type="datetime">2025-06-03T10:00:00Z</timestamp>'
           b"<kind>subscription_canceled</kind><subject><subscription><id>sub_late</id>"
           b"<status>Canceled</status></subscription></subject></notification>")
    response = TestClient(create_app(db_engine)).post("/webhooks/bt", data=bt_form(xml))
    assert response.status_code == 200, response.text
    assert response.json()["customers"] == ["bt_cust_00002"]
    with db_engine.connect() as conn:
        assert conn.execute(select(source_customers.c.external_id)).scalars().all() == ["bt_cust_00002"]
    assert states(db_engine) == {"sub_late": "cancelled"}
