"""Every signed receiver: a missing, bad or replayed signature (signed, but outside the vendor's timestamp
tolerance: Stripe's 300 s) answers 401 and stores nothing; the same delivery, properly signed, is then
accepted, and sent twice is stored once. Every receiver path answers 413 to an oversized body, announced
or not, and stores nothing.

Tolerances checked against the vendors: Stripe rejects a ``t=`` more than 300 s from now
(stripe-python ``stripe/_webhook.py``, ``DEFAULT_TOLERANCE = 300``); Recurly signs ``<unix ms>,<hmac>``
and its client libraries refuse more than 5 minutes of drift (recurly-client-python ``recurly/webhooks.py``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import pytest
import respx
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from api.webhooks import MAX_BODY_BYTES
from fakes.base import fake_of
from tests.test_api_webhooks import add_source, signed_delivery, stored


def _restamp(kind: str, body: bytes, headers: dict[str, str], age_seconds: int, secret: bytes) -> dict[str, str]:
    """The same body signed correctly, but as of ``age_seconds`` ago: what a replaying attacker holds."""
    then = int(time.time()) - age_seconds
    if kind == "stripe":
        sig = hmac.new(secret, f"{then}.".encode() + body, hashlib.sha256).hexdigest()
        return {"Stripe-Signature": f"t={then},v1={sig}"}
    sig = hmac.new(secret, f"{then * 1000}.".encode() + body, hashlib.sha256).hexdigest()
    return {"recurly-signature": f"{then * 1000},{sig}"}


SIGNATURE_HEADER = {"stripe": "Stripe-Signature", "recurly": "recurly-signature", "chargebee": "Authorization"}
SECRET = {"stripe": b"whsec_fake", "recurly": b"rc-fake"}


@pytest.mark.parametrize("kind", ["stripe", "recurly", "chargebee"])
def test_missing_bad_and_replayed_signatures_are_401_and_store_nothing(db_engine: Engine, kind: str) -> None:
    fake = fake_of(kind)()  # type: ignore[misc]
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        body, headers, extra, expected = signed_delivery(kind, fake)
        add_source(db_engine, "hooked", kind, {**fake.settings(), **extra})
        client = TestClient(create_app(db_engine))
        name = SIGNATURE_HEADER[kind]
        refusals: list[tuple[str, dict[str, str], bytes]] = [
            ("missing", {}, body),
            ("empty", {name: ""}, body),
            ("garbage", {name: "t=x,v1=zz" if kind == "stripe" else "zz"}, body),
        ]
        if kind == "chargebee":  # Basic credentials do not cover the body: only they can be wrong
            refusals.append(("wrong password", {name: "Basic " + base64.b64encode(b"cb-hook:guess").decode()}, body))
        else:
            secret = SECRET[kind]
            refusals += [
                ("replayed 301 s later", _restamp(kind, body, headers, 301, secret), body),
                ("replayed a day later", _restamp(kind, body, headers, 86_400, secret), body),
                ("wrong secret", _restamp(kind, body, headers, 0, b"not-the-secret"), body),
                ("other body", headers, body.replace(b"}", b" }", 1)),
            ]
            if kind == "recurly":  # Stripe's own check (stripe-python) refuses only the past; Recurly's both
                refusals.append(("from the future", _restamp(kind, body, headers, -600, secret), body))
        for what, sent_headers, sent_body in refusals:
            response = client.post("/webhooks/hooked", content=sent_body, headers=sent_headers)
            assert response.status_code == 401, (what, response.text)
            message = response.json()["message"]
            assert message.strip() and secret_not_in(message, extra), (what, message)
            assert stored(db_engine) == [], what
        # Within the tolerance the delivery is accepted; a vendor's retry of it stores the customer once.
        for _ in range(2):
            accepted = client.post("/webhooks/hooked", content=body, headers=headers)
            assert accepted.status_code == 200, accepted.text
        assert stored(db_engine) == [expected]


def secret_not_in(message: str, settings: dict[str, Any]) -> bool:
    return all(str(value) not in message for value in settings.values())


RECEIVERS = ["/webhooks/hooked", "/segment/hooked/v1/batch", "/app-store/hooked/notifications",
             "/google-play/hooked/rtdn"]


@pytest.mark.parametrize("path", RECEIVERS)
def test_every_receiver_refuses_an_oversized_body_with_413(db_engine: Engine, path: str) -> None:
    add_source(db_engine, "hooked", "stripe", {"api_key": "sk_test_x", "webhook_secret": "whsec_abc"})
    client = TestClient(create_app(db_engine))
    announced = client.post(path, content=b"{" + b" " * MAX_BODY_BYTES + b"}",
                            headers={"Stripe-Signature": "t=1,v1=00", "Content-Type": "application/json"})
    assert announced.status_code == 413 and "limit" in announced.json()["message"], announced.text

    def chunks() -> Any:
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    unannounced = client.post(path, content=chunks(), headers={"Stripe-Signature": "t=1,v1=00"})
    assert unannounced.status_code == 413, unannounced.text
    assert stored(db_engine) == []
    # Just under the limit is read (and then refused for what it is, not for its size).
    under = client.post(path, content=b" " * (MAX_BODY_BYTES - 1), headers={"Stripe-Signature": "t=1,v1=00"})
    assert under.status_code != 413
