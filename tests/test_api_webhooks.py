"""Webhook receivers: a verified delivery stores the affected customer, a bad signature gets 401 and
stores nothing, an oversized body 413, a malformed payload 422; no API key is needed (signature instead)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

import httpx
import pytest
import respx
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from api.app import create_app
from fakes import braintree as fake_braintree
from fakes import gocardless as fake_gocardless
from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from storage.schema import source_customers, subscriptions
from storage.sources import create_source, get_source, set_source_enabled

GC_SECRET = "gc-webhook-secret-123"
FIXTURES = Path(__file__).parent / "fixtures" / "payloads"


def stored(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(source_customers.c.external_id)).scalars())


def sub_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(subscriptions)).scalar_one()


def add_source(engine: Engine, name: str, kind: str, settings: dict[str, Any]) -> None:
    with engine.begin() as conn:
        create_source(conn, name, kind, settings)


# --- GoCardless, end to end against the fake API --------------------------------------------------


def gc_setup(engine: Engine) -> tuple[TestClient, fake_gocardless.GoCardlessFake]:
    add_source(
        engine, "gc", "gocardless", {"access_token": fake_gocardless.TOKEN, "webhook_secret": GC_SECRET}
    )
    fake = fake_gocardless.populated(4)
    fake.install(respx)
    return TestClient(create_app(engine)), fake


def gc_body(links: dict[str, str]) -> bytes:
    event = {
        "id": "EV123",
        "created_at": "2025-06-02T09:00:00.000Z",
        "resource_type": "payments",
        "action": "confirmed",
        "links": links,
        "details": {"origin": "gocardless", "cause": "payment_confirmed"},
    }
    return json.dumps({"events": [event], "meta": {"webhook_id": "WB123"}}).encode()


def gc_sign(body: bytes, secret: str = GC_SECRET) -> dict[str, str]:
    return {
        "Webhook-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
        "Content-Type": "application/json",
    }


@respx.mock
def test_gocardless_verified_event_stores_the_customer(db_engine: Engine) -> None:
    client, fake = gc_setup(db_engine)
    payment_id = fake.data["payments"][0]["id"]  # belongs to customer 0
    body = gc_body({"payment": payment_id})
    response = client.post("/webhooks/gc", content=body, headers=gc_sign(body))
    assert response.status_code == 200, response.text
    assert response.json()["customers"] == ["CU000000000000"] and response.json()["created"] == 1
    assert stored(db_engine) == ["CU000000000000"] and sub_count(db_engine) == 1
    # The same delivery again changes nothing.
    again = client.post("/webhooks/gc", content=body, headers=gc_sign(body))
    assert again.json()["unchanged"] == 1 and again.json()["created"] == 0


@respx.mock
def test_gocardless_event_about_a_payment_less_customer_stores_nothing(db_engine: Engine) -> None:
    client, _ = gc_setup(db_engine)
    body = gc_body({"customer": "CU000000000001"})  # a lead without payment: the SPEC rule skips it
    response = client.post("/webhooks/gc", content=body, headers=gc_sign(body))
    assert response.status_code == 200 and response.json()["customers"] == []
    assert stored(db_engine) == []


@respx.mock
@pytest.mark.parametrize(
    "headers",
    [{}, {"Webhook-Signature": "0" * 64}, gc_sign(gc_body({"payment": "x"}), secret="wrong-secret")],
)
def test_gocardless_bad_signature_is_401_and_stores_nothing(
    db_engine: Engine, headers: dict[str, str]
) -> None:
    client, fake = gc_setup(db_engine)
    body = gc_body({"payment": fake.data["payments"][0]["id"]})
    response = client.post("/webhooks/gc", content=body, headers=headers)
    assert response.status_code == 401 and "Webhook-Signature" in response.json()["message"]
    assert GC_SECRET not in response.text
    assert stored(db_engine) == [] and fake.requests == []  # nothing stored, vendor not even asked


@respx.mock
def test_tampered_body_is_401(db_engine: Engine) -> None:
    client, fake = gc_setup(db_engine)
    body = gc_body({"payment": fake.data["payments"][0]["id"]})
    headers = gc_sign(body)
    response = client.post("/webhooks/gc", content=body.replace(b"confirmed", b"failed"), headers=headers)
    assert response.status_code == 401 and stored(db_engine) == []


@respx.mock
def test_official_gocardless_vector_passes_verification(db_engine: Engine) -> None:
    vector = json.loads((FIXTURES / "gocardless" / "webhook_signature_vector.json").read_text())
    add_source(
        db_engine, "gc-official", "gocardless", {"access_token": "t", "webhook_secret": vector["secret"]}
    )
    body = (FIXTURES / "gocardless" / "webhook_body.json").read_bytes().rstrip(b"\n")
    respx.get(url__startswith="https://api.gocardless.com/").mock(return_value=httpx.Response(404, json={}))
    response = TestClient(create_app(db_engine)).post(
        "/webhooks/gc-official", content=body, headers={"Webhook-Signature": vector["header_value"]}
    )
    # Authentic; the objects it names do not exist in this account, so nothing is stored.
    assert response.status_code == 200, response.text
    assert response.json()["events"] == ["subscriptions.created", "mandates.created"]


@respx.mock
def test_oversized_body_is_413_and_stores_nothing(db_engine: Engine) -> None:
    client, _ = gc_setup(db_engine)
    body = b"{" + b" " * (1024 * 1024) + b"}"
    response = client.post("/webhooks/gc", content=body, headers=gc_sign(body))
    assert response.status_code == 413 and stored(db_engine) == []


@respx.mock
def test_malformed_payload_with_good_signature_is_422(db_engine: Engine) -> None:
    client, _ = gc_setup(db_engine)
    for body in (
        b"not json", b'{"events": "nope"}', b"[]",
        # Links that are not an object, ids that are not ids: 422, not a 500 or a vendor call for "{'a': 1}".
        b'{"events": [{"resource_type": "payments", "action": "confirmed", "links": ["PM1"]}]}',
        b'{"events": [{"resource_type": "payments", "action": "confirmed", "links": {"payment": {"id": "PM1"}}}]}',
    ):
        response = client.post("/webhooks/gc", content=body, headers=gc_sign(body))
        assert response.status_code == 422, body
    assert stored(db_engine) == []


def test_stripe_event_whose_customer_is_not_an_id_is_422(db_engine: Engine) -> None:
    add_source(db_engine, "st", "stripe", {"api_key": "sk_test_x", "webhook_secret": "whsec_abc"})
    client = stand_in_client(db_engine)
    body = json.dumps(
        {"id": "evt_1", "type": "customer.updated", "data": {"object": {"object": "customer", "id": ["cus_1"]}}}
    ).encode()
    t = int(time.time())
    sig = hmac.new(b"whsec_abc", f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    response = client.post("/webhooks/st", content=body, headers={"Stripe-Signature": f"t={t},v1={sig}"})
    assert response.status_code == 422 and "data.object.id" in response.json()["message"]
    assert StandInConnector.asked == [] and stored(db_engine) == []


@respx.mock
def test_vendor_refusing_the_re_read_is_502_and_stores_nothing(db_engine: Engine) -> None:
    add_source(
        db_engine, "gc", "gocardless", {"access_token": "revoked_token_xyz", "webhook_secret": GC_SECRET}
    )
    fake = fake_gocardless.populated(2)
    fake.install(respx)
    body = gc_body({"customer": "CU000000000000"})
    response = TestClient(create_app(db_engine)).post("/webhooks/gc", content=body, headers=gc_sign(body))
    assert response.status_code == 502 and "revoked_token_xyz" not in response.text
    assert stored(db_engine) == []


def test_unknown_source_and_kind_without_webhooks_are_404_disabled_409(db_engine: Engine) -> None:
    add_source(db_engine, "sheet", "csv", {})
    add_source(db_engine, "off", "gocardless", {"access_token": "t", "webhook_secret": GC_SECRET})
    with db_engine.begin() as conn:
        set_source_enabled(conn, get_source(conn, "off").id, False)
    client = TestClient(create_app(db_engine))
    assert client.post("/webhooks/nope", content=b"{}").status_code == 404
    assert client.post("/webhooks/sheet", content=b"{}").status_code == 404
    body = gc_body({"customer": "CU1"})
    assert client.post("/webhooks/off", content=body, headers=gc_sign(body)).status_code == 409


# --- Braintree, end to end against the fake API ---------------------------------------------------


def bt_form(xml: bytes, private: str = fake_braintree.PRIVATE) -> dict[str, str]:
    payload = base64.encodebytes(xml).decode()
    digest = hmac.new(hashlib.sha1(private.encode()).digest(), payload.encode(), hashlib.sha1).hexdigest()
    return {"bt_signature": f"{fake_braintree.PUBLIC}|{digest}", "bt_payload": payload}


def bt_notification(kind: str, subject: str) -> bytes:
    return (
        f'<notification><timestamp type="datetime">2025-06-02T10:00:00Z</timestamp><kind>{kind}</kind>'
        f"<subject>{subject}</subject></notification>"
    ).encode()


@respx.mock
def test_braintree_subscription_notification_re_reads_the_owner(db_engine: Engine) -> None:
    add_source(db_engine, "bt", "braintree", dict(fake_braintree.SETTINGS))
    fake = fake_braintree.populated(3)
    fake.add_subscription(
        "bt_cust_00002",
        "sub_late",
        created=datetime(2025, 6, 1, tzinfo=UTC),
        first_billing=date(2025, 6, 15),
        trial=(14, "day"),
    )
    fake.install(respx)
    xml = bt_notification(
        "subscription_went_active",
        "<subscription><id>sub_late</id><payment-method-token>tok_bt_cust_00002_0</payment-method-token>"
        '<transactions type="array"/></subscription>',
    )
    client = TestClient(create_app(db_engine))
    response = client.post("/webhooks/bt", data=bt_form(xml))
    assert response.status_code == 200, response.text
    assert response.json()["customers"] == ["bt_cust_00002"] and stored(db_engine) == ["bt_cust_00002"]
    bad = client.post("/webhooks/bt", data=bt_form(xml, private="other_private_key"))
    assert bad.status_code == 401


@respx.mock
def test_braintree_challenge(db_engine: Engine) -> None:
    add_source(
        db_engine,
        "bt",
        "braintree",
        {
            **fake_braintree.SETTINGS,
            "public_key": "integration_public_key",
            "private_key": "integration_private_key",
        },
    )
    response = TestClient(create_app(db_engine)).get(
        "/webhooks/bt", params={"bt_challenge": "20f9f8ed05f77439fe955c977e4c8a53"}
    )
    assert response.status_code == 200
    assert response.text == "integration_public_key|d9b899556c966b3f06945ec21311865d35df3ce4"


# --- Stripe, Chargebee, Recurly: verification and dispatch with a stand-in connector ---------------


class StandInConnector:
    """Stands for a connector: records which customer it was asked for and answers one record."""

    asked: ClassVar[list[str]] = []

    def __init__(self, kind: str, name: str, settings: Any) -> None:
        self.client = self

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def get_json(self, url: str) -> dict[str, Any]:  # Recurly: the object names its account
        return {"id": url.rsplit("/", 1)[1], "account": {"id": "acct_from_lookup"}}

    def fetch_record(self, customer_id: str) -> SourceCustomerRecord:
        StandInConnector.asked.append(customer_id)
        return SourceCustomerRecord(
            external_id=customer_id,
            email=f"{customer_id}@example.com",
            subscriptions=[
                SubscriptionFact("sub_1", "trialing", trial_started_at=datetime(2025, 6, 1, tzinfo=UTC))
            ],
        )


def stand_in_client(engine: Engine) -> TestClient:
    app = create_app(engine)
    app.state.webhook_connector_factory = StandInConnector
    StandInConnector.asked = []
    return TestClient(app)


def test_stripe_signed_event_stores_and_stale_one_is_refused(db_engine: Engine) -> None:
    add_source(db_engine, "st", "stripe", {"api_key": "sk_test_x", "webhook_secret": "whsec_abc"})
    client = stand_in_client(db_engine)
    body = json.dumps(
        {
            "id": "evt_1",
            "type": "customer.subscription.created",
            "data": {"object": {"id": "sub_1", "object": "subscription", "customer": "cus_42"}},
        }
    ).encode()

    def header(t: int) -> dict[str, str]:
        sig = hmac.new(b"whsec_abc", f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        return {"Stripe-Signature": f"t={t},v1={sig}"}

    stale = client.post("/webhooks/st", content=body, headers=header(int(time.time()) - 3600))
    assert stale.status_code == 401 and "tolerance" in stale.json()["message"] and stored(db_engine) == []
    ok = client.post("/webhooks/st", content=body, headers=header(int(time.time())))
    assert ok.status_code == 200 and StandInConnector.asked == ["cus_42"] and stored(db_engine) == ["cus_42"]


def test_chargebee_basic_auth(db_engine: Engine) -> None:
    add_source(
        db_engine,
        "cb",
        "chargebee",
        {"site": "acme", "api_key": "k", "webhook_username": "hook", "webhook_password": "pw"},
    )
    client = stand_in_client(db_engine)
    body = json.dumps(
        {
            "id": "ev_1",
            "event_type": "subscription_activated",
            "object": "event",
            "content": {"subscription": {"id": "s1", "customer_id": "cb_7"}},
        }
    ).encode()
    assert client.post("/webhooks/cb", content=body, auth=("hook", "wrong")).status_code == 401
    assert client.post("/webhooks/cb", content=body).status_code == 401
    ok = client.post("/webhooks/cb", content=body, auth=("hook", "pw"))
    assert ok.status_code == 200 and stored(db_engine) == ["cb_7"]


def test_recurly_thin_notification_is_resolved_to_its_account(db_engine: Engine) -> None:
    add_source(db_engine, "rc", "recurly", {"api_key": "k", "webhook_secret": "rc-secret"})
    client = stand_in_client(db_engine)
    body = (FIXTURES / "recurly" / "webhook_new_subscription.json").read_bytes()
    ts = int(time.time() * 1000)
    sig = hmac.new(b"rc-secret", f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    ok = client.post("/webhooks/rc", content=body, headers={"recurly-signature": f"{ts},{sig}"})
    assert ok.status_code == 200, ok.text
    assert StandInConnector.asked == ["acct_from_lookup"] and stored(db_engine) == ["acct_from_lookup"]
    bad = client.post("/webhooks/rc", content=body, headers={"recurly-signature": f"{ts},{'0' * 64}"})
    assert bad.status_code == 401


# --- Stripe, Chargebee, Recurly end to end: the real connectors against the suite's fake APIs ------


def signed_delivery(kind: str, fake: Any) -> tuple[bytes, dict[str, str], dict[str, Any], str]:
    """(body, headers, extra settings, expected external id) of a delivery about fake.people[2]."""
    person = fake.people[2]
    now = int(time.time())
    if kind == "stripe":
        sub = person.subscriptions[0]
        body = json.dumps(
            {
                "id": "evt_9",
                "object": "event",
                "type": "customer.subscription.updated",
                "data": {
                    "object": {
                        "id": sub.id,
                        "object": "subscription",
                        "customer": person.id,
                        "status": "active",
                    }
                },
            }
        ).encode()
        sig = hmac.new(b"whsec_fake", f"{now}.".encode() + body, hashlib.sha256).hexdigest()
        return body, {"Stripe-Signature": f"t={now},v1={sig}"}, {"webhook_secret": "whsec_fake"}, person.id
    if kind == "chargebee":
        body = json.dumps(
            {
                "id": "ev_9",
                "object": "event",
                "api_version": "v2",
                "occurred_at": now,
                "event_type": "subscription_activated",
                "webhook_status": "scheduled",
                "content": {"subscription": {"id": person.subscriptions[0].id, "customer_id": person.id}},
            }
        ).encode()
        auth = "Basic " + base64.b64encode(b"cb-hook:cb-pass").decode()
        extra = {"webhook_username": "cb-hook", "webhook_password": "cb-pass"}
        return body, {"Authorization": auth}, extra, person.id
    sub_id = fake.subscription(person, person.subscriptions[0])["id"]
    body = json.dumps(
        {
            "id": sub_id,
            "object_type": "subscription",
            "site_id": "qc326l1hl8k9",
            "event_type": "renewed",
            "event_time": "2025-06-02T10:00:00Z",
        }
    ).encode()
    ts = now * 1000
    sig = hmac.new(b"rc-fake", f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"recurly-signature": f"{ts},{sig}"}, {"webhook_secret": "rc-fake"}, person.id


@pytest.mark.parametrize("kind", ["stripe", "chargebee", "recurly"])
def test_verified_event_re_reads_through_the_real_connector(db_engine: Engine, kind: str) -> None:
    from fakes.base import fake_of

    fake = fake_of(kind)()  # type: ignore[misc]
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        body, headers, extra, expected = signed_delivery(kind, fake)
        add_source(db_engine, f"my-{kind}", kind, {**fake.settings(), **extra})
        client = TestClient(create_app(db_engine))
        if kind == "chargebee":  # Basic auth does not cover the body: wrong credentials instead
            bad = {"Authorization": "Basic " + base64.b64encode(b"cb-hook:guess").decode()}
            refused = client.post(f"/webhooks/my-{kind}", content=body, headers=bad)
        else:
            refused = client.post(f"/webhooks/my-{kind}", content=body + b" ", headers=headers)
        assert refused.status_code == 401 and stored(db_engine) == []
        response = client.post(f"/webhooks/my-{kind}", content=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["customers"] == [expected] and stored(db_engine) == [expected]
        assert sub_count(db_engine) == 1  # the customer's complete subscription set came with it


@respx.mock
def test_oversized_chunked_body_without_length_is_413(db_engine: Engine) -> None:
    client, _ = gc_setup(db_engine)

    def chunks() -> Any:
        for _ in range(20):
            yield b" " * 65536  # 1.25 MiB in all, no Content-Length announced

    response = client.post("/webhooks/gc", content=chunks(), headers={"Webhook-Signature": "0" * 64})
    assert response.status_code == 413 and stored(db_engine) == []


@respx.mock
def test_webhook_secret_may_be_an_environment_reference(
    db_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FS_TEST_GC_WEBHOOK_SECRET", GC_SECRET)
    add_source(
        db_engine,
        "gc-env",
        "gocardless",
        {"access_token": "env:FS_TEST_GC_TOKEN", "webhook_secret": "env:FS_TEST_GC_WEBHOOK_SECRET"},
    )
    monkeypatch.setenv("FS_TEST_GC_TOKEN", fake_gocardless.TOKEN)
    fake = fake_gocardless.populated(3)
    fake.install(respx)
    body = gc_body({"customer": "CU000000000000"})
    client = TestClient(create_app(db_engine))
    assert client.post("/webhooks/gc-env", content=body, headers=gc_sign(body)).status_code == 200
    assert stored(db_engine) == ["CU000000000000"]


@respx.mock
def test_webhook_whose_secret_variable_is_unset_is_unverifiable_and_the_log_says_why(
    db_engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unset ``env:`` secret answers 401 like a bad signature (no 500, no variable name in the
    response), stores nothing, and the server log names the variable for the operator."""
    monkeypatch.setenv("FS_TEST_GC_TOKEN", fake_gocardless.TOKEN)
    monkeypatch.delenv("FS_TEST_GC_WEBHOOK_SECRET", raising=False)
    add_source(
        db_engine,
        "gc-env",
        "gocardless",
        {"access_token": "env:FS_TEST_GC_TOKEN", "webhook_secret": "env:FS_TEST_GC_WEBHOOK_SECRET"},
    )
    fake = fake_gocardless.populated(3)
    fake.install(respx)
    body = gc_body({"customer": "CU000000000000"})
    client = TestClient(create_app(db_engine))
    with caplog.at_level("ERROR", logger="api.webhooks"):
        response = client.post("/webhooks/gc-env", content=body, headers=gc_sign(body))
    assert response.status_code == 401, response.text
    assert "FS_TEST_GC_WEBHOOK_SECRET" not in response.text and "env" not in response.json()["message"]
    assert "FS_TEST_GC_WEBHOOK_SECRET" in caplog.text
    assert stored(db_engine) == [] and sub_count(db_engine) == 0
    assert respx.calls.call_count == 0  # nothing re-read from GoCardless for an unverified delivery


def test_webhook_to_a_source_without_any_secret_is_401_and_logged(
    db_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    add_source(db_engine, "gc-bare", "gocardless", {"access_token": fake_gocardless.TOKEN, "webhook_secret": ""})
    body = gc_body({"customer": "CU000000000000"})
    with caplog.at_level("ERROR", logger="api.webhooks"):
        response = TestClient(create_app(db_engine)).post("/webhooks/gc-bare", content=body, headers=gc_sign(body))
    assert response.status_code == 401 and "configured" not in response.text
    assert "gc-bare" in caplog.text and "GoCardless webhook endpoint secret" in caplog.text
    assert stored(db_engine) == []


@respx.mock
def test_braintree_sdk_style_sample_with_empty_customer_elements_is_accepted(db_engine: Engine) -> None:
    # Shaped like braintree-python's WebhookTesting sample: empty <customer/>, no payment-method token.
    add_source(db_engine, "bt", "braintree", dict(fake_braintree.SETTINGS))
    xml = bt_notification(
        "subscription_charged_successfully",
        '<subscription><id>sub_x</id><transactions type="array"><transaction><id>t1</id>'
        "<status>submitted_for_settlement</status><amount>49.99</amount><customer></customer>"
        "<billing></billing></transaction></transactions></subscription>",
    )
    # No customer in the subject: the subscription is looked up; this merchant does not know it.
    lookup = respx.get(f"{fake_braintree.GATEWAY}/merchants/{fake_braintree.MERCHANT}/subscriptions/sub_x").mock(
        return_value=httpx.Response(404))
    response = TestClient(create_app(db_engine)).post("/webhooks/bt", data=bt_form(xml))
    assert response.status_code == 200 and response.json()["customers"] == [] and stored(db_engine) == []
    assert lookup.called
