"""App Store Server Notifications V2 at ``POST /app-store/NAME/notifications``: the JWS verified with Apple's
``SignedDataVerifier`` against a CA the test builds and passes as the trusted root; the Free Trial rule
(a record only for a Free Trial introductory offer: lead = first transaction, trial = its purchase date);
renewals, billing failures, expiry and refunds update that subscriber; tampered or wrongly chained
payloads are 401 and store nothing.

Checked against apple/app-store-server-library-python (``appstoreserverlibrary/signed_data_verifier.py``:
three-certificate x5c, ES256, Apple's OIDs, bundle id, App Apple ID and environment checks;
``models/JWSTransactionDecodedPayload.py``, ``OfferType.py`` (1 = introductory), ``OfferDiscountType.py``
(``FREE_TRIAL``), ``NotificationTypeV2.py``) and Apple's docs the models link
(https://developer.apple.com/documentation/appstoreservernotifications/responsebodyv2decodedpayload).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from api.app import create_app
from storage.schema import customers, source_customers, subscriptions
from storage.sources import create_source
from tests.apple_signing import APP_APPLE_ID, BUNDLE_ID, AppleCA, notification, transaction

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
URL = "/app-store/ios/notifications"


@pytest.fixture
def ca(tmp_path: Path) -> AppleCA:
    return AppleCA.create(tmp_path)


@pytest.fixture
def client(db_engine: Engine, ca: AppleCA) -> TestClient:
    with db_engine.begin() as conn:
        create_source(conn, "ios", "app_store", {
            "bundle_id": BUNDLE_ID, "app_apple_id": str(APP_APPLE_ID), "environment": "Production",
            "root_certificates": str(ca.root_path), "online_checks": "false",
        })
    return TestClient(create_app(db_engine))


def state(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        sc = {r["external_id"]: dict(r) for r in conn.execute(select(source_customers)).mappings()}
        subs = {r["external_id"]: dict(r) for r in conn.execute(select(subscriptions)).mappings()}
        cust = [dict(r) for r in conn.execute(select(customers)).mappings()]
    return {"sc": sc, "subs": subs, "customers": cust}


def test_free_trial_then_renewal_makes_a_converted_subscriber(
    db_engine: Engine, client: TestClient, ca: AppleCA
) -> None:
    first = transaction("2000000111", T0, free_trial=True)
    answer = client.post(URL, json=notification(ca, "SUBSCRIBED", first, "INITIAL_BUY"))
    assert answer.status_code == 200, answer.text
    now = state(db_engine)
    assert list(now["sc"]) == ["2000000111"]
    row = now["sc"]["2000000111"]
    assert row["lead_created_at"] == T0 and row["free_trial_started_at"] == T0
    sub = now["subs"]["2000000111"]
    assert (sub["state"], sub["trial_started_at"]) == ("trialing", T0)
    assert sub["trial_ended_at"] == T0 + timedelta(days=7)
    renewal = transaction("2000000111", T0 + timedelta(days=7), original_purchase=T0)
    assert client.post(URL, json=notification(ca, "DID_RENEW", renewal)).status_code == 200
    after = state(db_engine)
    sub = after["subs"]["2000000111"]
    assert (sub["state"], sub["trial_started_at"], sub["first_paid_at"]) == ("active", T0, T0 + timedelta(days=7))
    [cust] = after["customers"]
    assert cust["status"] == "Active" and cust["subscriber_since"] == T0 + timedelta(days=7)
    assert cust["lead_created_at"] == T0 and cust["free_trial_started_at"] == T0


def test_paid_start_creates_nothing_and_other_types_are_acknowledged(
    db_engine: Engine, client: TestClient, ca: AppleCA
) -> None:
    paid = transaction("2000000222", T0)  # no introductory free trial: not a lead by the rule
    assert client.post(URL, json=notification(ca, "SUBSCRIBED", paid, "INITIAL_BUY")).status_code == 200
    assert client.post(URL, json=notification(ca, "DID_RENEW", paid)).status_code == 200
    test = client.post(URL, json=notification(ca, "TEST", None))
    assert test.status_code == 200 and test.json()["skipped"] == 1
    assert state(db_engine)["sc"] == {}


def test_billing_failure_expiry_and_refund(db_engine: Engine, client: TestClient, ca: AppleCA) -> None:
    token = "7e3fb20b-4cdb-47cc-936d-99d65f608138"
    trial = transaction("2000000333", T0, free_trial=True, account_token=token)
    client.post(URL, json=notification(ca, "SUBSCRIBED", trial, "INITIAL_BUY"))
    failed = transaction("2000000333", T0 + timedelta(days=7), original_purchase=T0, account_token=token)
    assert client.post(URL, json=notification(ca, "DID_FAIL_TO_RENEW", failed, "GRACE_PERIOD")).status_code == 200
    assert state(db_engine)["subs"]["2000000333"]["state"] == "past_due"
    assert list(state(db_engine)["sc"]) == [token]  # keyed by the app's own account token
    expired = transaction("2000000333", T0, free_trial=True, account_token=token, expires=T0 + timedelta(days=7))
    client.post(URL, json=notification(ca, "EXPIRED", expired, "BILLING_RETRY"))
    sub = state(db_engine)["subs"]["2000000333"]
    assert (sub["state"], sub["cancelled_at"], sub["first_paid_at"]) == ("cancelled", T0 + timedelta(days=7), None)
    # A second subscriber converts, then is refunded.
    client.post(URL, json=notification(ca, "SUBSCRIBED", transaction("2000000444", T0, free_trial=True)))
    client.post(URL, json=notification(ca, "DID_RENEW", transaction("2000000444", T0 + timedelta(days=7))))
    refunded = transaction("2000000444", T0 + timedelta(days=7), revoked=T0 + timedelta(days=9))
    assert client.post(URL, json=notification(ca, "REFUND", refunded)).status_code == 200
    sub = state(db_engine)["subs"]["2000000444"]
    assert (sub["state"], sub["cancelled_at"]) == ("cancelled", T0 + timedelta(days=9))


def _tamper(jws: str) -> str:
    header, payload, signature = jws.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["notificationType"] = "SUBSCRIBED"
    claims["data"]["bundleVersion"] = "43"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


def test_tampered_or_wrongly_chained_payloads_are_401_and_store_nothing(
    db_engine: Engine, client: TestClient, ca: AppleCA, tmp_path: Path
) -> None:
    tx = transaction("2000000555", T0, free_trial=True)
    good = notification(ca, "SUBSCRIBED", tx, "INITIAL_BUY")
    tampered = {"signedPayload": _tamper(good["signedPayload"])}
    stranger = AppleCA.create(tmp_path, "stranger")  # a chain that does not lead to the trusted root
    foreign = notification(stranger, "SUBSCRIBED", tx, "INITIAL_BUY")
    mixed = notification(ca, "SUBSCRIBED", tx, "INITIAL_BUY", tx_ca=stranger)  # the transaction signed elsewhere
    for body in (tampered, foreign, mixed):
        answer = client.post(URL, json=body)
        assert answer.status_code == 401, answer.text
    other_app = notification(ca, "SUBSCRIBED", {**tx, "bundleId": "com.other.app"})
    assert client.post(URL, json=other_app).status_code == 401
    assert client.post(URL, json={"signedPayload": 42}).status_code == 422
    assert client.post("/webhooks/ios", json=good).status_code == 404  # not its endpoint
    assert state(db_engine)["sc"] == {} and state(db_engine)["subs"] == {}
    assert client.post(URL, json=good).status_code == 200  # the genuine one still lands
    assert list(state(db_engine)["sc"]) == ["2000000555"]


def test_offer_redeemed_free_trial_creates_and_a_paid_offer_converts(
    db_engine: Engine, client: TestClient, ca: AppleCA
) -> None:
    """``OFFER_REDEEMED`` (``NotificationTypeV2.py``) follows the same rule as ``SUBSCRIBED``: a Free Trial
    introductory offer (``OfferType.py`` 1, ``OfferDiscountType.py`` ``FREE_TRIAL``) creates the record; a
    free trial from an offer code (``OfferType`` 3) is no introductory offer and creates nothing; a paid
    promotional offer (``OfferType`` 2) redeemed by a known subscriber makes it active and paid."""
    trial = transaction("2000000666", T0, free_trial=True)
    assert client.post(URL, json=notification(ca, "OFFER_REDEEMED", trial)).status_code == 200
    code_trial = {**transaction("2000000777", T0, free_trial=True), "offerType": 3, "offerIdentifier": "SPRING"}
    assert client.post(URL, json=notification(ca, "OFFER_REDEEMED", code_trial)).status_code == 200
    now = state(db_engine)
    assert list(now["sc"]) == ["2000000666"]
    assert now["sc"]["2000000666"]["free_trial_started_at"] == T0
    assert now["subs"]["2000000666"]["state"] == "trialing"
    paid_at = T0 + timedelta(days=7)
    promo = {**transaction("2000000666", paid_at, price=4990, original_purchase=T0),
             "offerType": 2, "offerDiscountType": "PAY_AS_YOU_GO", "offerIdentifier": "comeback50"}
    assert client.post(URL, json=notification(ca, "OFFER_REDEEMED", promo, "UPGRADE")).status_code == 200
    sub = state(db_engine)["subs"]["2000000666"]
    assert (sub["state"], sub["trial_started_at"], sub["first_paid_at"]) == ("active", T0, paid_at)
