"""Google Play real-time developer notifications at ``POST /google-play/NAME/rtdn``: Pub/Sub push bodies
(base64 ``message.data``) authenticated by the push's OIDC token, verified with google-auth
(``google.oauth2.id_token.verify_token``) against certificates the test serves; each notification updates
the subscription its ``purchaseToken`` names; tokens that fail a check are 401 and store nothing.

Checked against Google's RTDN reference (https://developer.android.com/google/play/billing/rtdn-reference:
the push envelope, DeveloperNotification with ``eventTimeMillis``, ``subscriptionNotification``
``notificationType`` 1–13, ``testNotification``), the Pub/Sub push ``OidcToken`` reference (audience
defaults to the push endpoint URL, a service-account email) and ``google/oauth2/id_token.py`` of google-auth
(certs as ``{kid: PEM}``, issuers ``accounts.google.com`` / ``https://accounts.google.com``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from api.app import create_app
from storage.api_keys import create_api_key
from storage.schema import customers, source_customers, subscriptions
from storage.sources import create_source
from tests.google_oidc import PUSH_ACCOUNT, GoogleSigner, serve_certs

AUDIENCE = "https://funnelsync.example.com/google-play/play/rtdn"
PACKAGE = "com.example.fitapp"
TOKEN = "opaque-token-hjkd8sd7f6sd8f7sd6f"
URL = "/google-play/play/rtdn"
T_TRIAL = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
T_RENEW = datetime(2026, 5, 8, 8, 0, 5, tzinfo=UTC)


@pytest.fixture
def signer() -> GoogleSigner:
    return GoogleSigner()


@pytest.fixture
def client(db_engine: Engine, signer: GoogleSigner) -> Iterator[tuple[TestClient, str]]:
    """The app, a google_play source checking pushes against the served certificates, and an API key for
    the payloads URL."""
    with serve_certs(signer) as certs_url:
        with db_engine.begin() as conn:
            create_source(conn, "play", "google_play", {
                "rtdn_audience": AUDIENCE, "rtdn_service_account": PUSH_ACCOUNT, "package_name": PACKAGE,
                "oidc_certs_url": certs_url,
            })
            key = create_api_key(conn, "backend")
        yield TestClient(create_app(db_engine)), key


def push(notification: dict[str, Any]) -> dict[str, Any]:
    """A Pub/Sub push body as the RTDN reference shows it."""
    data = base64.b64encode(json.dumps(notification).encode()).decode()
    return {"message": {"attributes": {}, "data": data, "messageId": "136969346945",
                        "publishTime": "2026-05-08T08:00:06.123Z"},
            "subscription": "projects/my-project/subscriptions/play-rtdn-push"}


def sub_event(kind: int, when: datetime, token: str = TOKEN) -> dict[str, Any]:
    return {"version": "1.0", "packageName": PACKAGE, "eventTimeMillis": str(int(when.timestamp() * 1000)),
            "subscriptionNotification": {"version": "1.0", "notificationType": kind, "purchaseToken": token,
                                         "subscriptionId": "premium_monthly"}}


def bearer(signer: GoogleSigner, **overrides: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {signer.token(AUDIENCE, **overrides)}"}


def purchase(http: TestClient, key: str) -> None:
    """The developer's backend reports the purchase (with its trial) to the payloads URL."""
    body = {"purchase_data": {"product_id": "premium_monthly", "purchase_token": TOKEN},
            "customer": {"external_id": "user-42", "email": "ann@example.com",
                         "lead_created_at": T_TRIAL.isoformat(), "trial_started_at": T_TRIAL.isoformat()}}
    answer = http.post("/webhooks/play", json=body, auth=(key, ""))
    assert answer.status_code == 200, answer.text


def subs(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {r["external_id"]: dict(r) for r in conn.execute(select(subscriptions)).mappings()}


def status(engine: Engine) -> tuple[str, datetime | None]:
    with engine.connect() as conn:
        row = conn.execute(select(customers.c.status, customers.c.subscriber_since)).one()
    return row.status, row.subscriber_since


def test_renewal_converts_the_trial_the_purchase_token_names(
    db_engine: Engine, client: tuple[TestClient, str], signer: GoogleSigner
) -> None:
    http, key = client
    purchase(http, key)
    assert subs(db_engine)[TOKEN]["state"] == "trialing"
    renewed = http.post(URL, json=push(sub_event(2, T_RENEW)), headers=bearer(signer))
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["events"] == ["SUBSCRIPTION_RENEWED"] and renewed.json()["customers"] == ["user-42"]
    sub = subs(db_engine)[TOKEN]
    assert (sub["state"], sub["trial_started_at"], sub["first_paid_at"]) == ("active", T_TRIAL, T_RENEW)
    assert status(db_engine) == ("Active", T_RENEW)
    # The backend re-posting the purchase does not put the subscription back on trial.
    purchase(http, key)
    assert subs(db_engine)[TOKEN]["state"] == "active"
    on_hold = http.post(URL, json=push(sub_event(5, T_RENEW)), headers=bearer(signer))
    assert on_hold.status_code == 200 and subs(db_engine)[TOKEN]["state"] == "past_due"
    assert status(db_engine)[0] == "Past_Due"
    expired = datetime(2026, 6, 8, tzinfo=UTC)
    http.post(URL, json=push(sub_event(13, expired)), headers=bearer(signer))
    sub = subs(db_engine)[TOKEN]
    assert (sub["state"], sub["cancelled_at"], sub["first_paid_at"]) == ("cancelled", expired, T_RENEW)
    assert status(db_engine)[0] == "Cancelled"


def test_unknown_tokens_test_and_other_types_change_nothing(
    db_engine: Engine, client: tuple[TestClient, str], signer: GoogleSigner
) -> None:
    http, _ = client
    unknown = http.post(URL, json=push(sub_event(2, T_RENEW, token="never-seen")), headers=bearer(signer))
    assert unknown.status_code == 200 and unknown.json()["skipped"] == 1
    test = http.post(URL, json=push({"version": "1.0", "packageName": PACKAGE, "eventTimeMillis": "1",
                                     "testNotification": {"version": "1.0"}}), headers=bearer(signer))
    assert test.status_code == 200 and test.json()["events"] == ["testNotification"]
    canceled = http.post(URL, json=push(sub_event(3, T_RENEW)), headers=bearer(signer))
    assert canceled.status_code == 200 and canceled.json()["events"] == ["SUBSCRIPTION_CANCELED"]
    other_app = http.post(URL, json=push({**sub_event(2, T_RENEW), "packageName": "com.other"}),
                          headers=bearer(signer))
    assert other_app.status_code == 422
    not_base64 = http.post(URL, json={"message": {"data": "%%%"}}, headers=bearer(signer))
    assert not_base64.status_code == 422
    with db_engine.connect() as conn:
        assert conn.execute(select(source_customers)).all() == []


def test_tokens_failing_a_check_are_401_and_store_nothing(
    db_engine: Engine, client: tuple[TestClient, str], signer: GoogleSigner
) -> None:
    http, key = client
    purchase(http, key)
    before = subs(db_engine)
    body = push(sub_event(2, T_RENEW))
    stranger = GoogleSigner(kid=signer.kid)  # same key id, another key: the signature fails
    refused = {
        "no token": {},
        "not bearer": {"Authorization": "Basic dXNlcjo="},
        "wrong audience": bearer(signer, aud="https://elsewhere.example.com/push"),
        "wrong issuer": bearer(signer, iss="https://evil.example.com"),
        "other account": bearer(signer, email="someone@other-project.iam.gserviceaccount.com"),
        "unverified email": bearer(signer, email_verified=False),
        "expired": bearer(signer, iat=1_700_000_000, exp=1_700_003_600),
        "forged": {"Authorization": f"Bearer {stranger.token(AUDIENCE)}"},
        "unknown key": {"Authorization": f"Bearer {GoogleSigner(kid='0' * 40).token(AUDIENCE)}"},
    }
    for what, headers in refused.items():
        answer = http.post(URL, json=body, headers=headers)
        assert answer.status_code == 401, (what, answer.text)
    assert subs(db_engine) == before
    assert http.post(URL, json=body, headers=bearer(signer)).status_code == 200  # the genuine push lands
    assert subs(db_engine)[TOKEN]["state"] == "active"
