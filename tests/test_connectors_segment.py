"""Segment (push only): identify/group calls folded into records, the X-Signature check, and the
receiver (batch payloads, partial updates, create_on, 401/413/422 storing nothing) on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from api.app import create_app
from connectors.segment import SegmentPayloadError, fold_calls, split_calls
from connectors.signatures import WebhookSignatureError, verify_segment_signature
from storage.schema import customers, source_customers
from storage.sources import create_source

SECRET = "segment-shared-secret-42"


def identify(user_id: str | None, **traits: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user_id, "anonymousId": "507f191e810c19729de860ea",
            "traits": traits, "context": {"ip": "8.8.8.8", "library": {"name": "analytics.js", "version": "2.11.1"}},
            "messageId": "022bb90c-bbac-11e4-8dfc-aa07a5b093db", "timestamp": "2025-02-23T22:28:55.387Z",
            "sentAt": "2025-02-23T22:28:55.111Z", "receivedAt": "2025-02-23T22:28:55.420Z", "version": 1}


def group(user_id: str | None, group_id: str, **traits: Any) -> dict[str, Any]:
    return {"type": "group", "userId": user_id, "groupId": group_id, "traits": traits,
            "messageId": "a1b2", "timestamp": "2025-02-23T22:30:00.000Z", "version": 1}


def sign(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {
        "X-Signature": hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
        "Content-Type": "application/json",
    }


def test_fold_identify_and_group_calls() -> None:
    calls = split_calls({"batch": [
        identify("u1", email="Ann@Example.com", firstName="Ann", lastName="Lee", createdAt="2020-01-01T00:00:00Z",
                 company={"name": "Acme", "id": "g1", "plan": "pro"},
                 address={"country": "de", "city": "Berlin", "postalCode": "10115"}),
        identify("u1", name="Ann B. Lee"),
        identify(None, email="Visitor@Example.com", name="Vis"),
        identify(None, name="anonymous only"),
        group("u1", "g1", name="Acme Inc", website="https://acme.example"),
        {"type": "track", "event": "Trial Started", "userId": "u1", "properties": {"trial_start_date": "2025-01-01"}},
    ]})
    delivery = fold_calls(calls)
    assert delivery.calls == ["identify", "identify", "identify", "identify", "group", "track"]
    assert delivery.skipped == 2  # the anonymous identify and the track call
    ann = delivery.changes["u1"]
    assert ann.creates and ann.fields == {"name": "Ann B. Lee", "email": "Ann@Example.com", "company": "Acme Inc",
                                          "country": "DE", "city": "Berlin", "zip": "10115",
                                          "website_url": "https://acme.example"}
    assert ann.custom == {"segment_group_id": "g1"}
    assert "lead_created_at" not in ann.fields  # SPEC: not imported from Segment
    assert delivery.changes["visitor@example.com"].fields["email"] == "Visitor@Example.com"
    # Group mode: accounts are the records; identify calls carry no account and are skipped.
    by_group = fold_calls(calls, "group")
    assert set(by_group.changes) == {"g1"} and by_group.changes["g1"].creates
    assert by_group.changes["g1"].fields == {"name": "Acme Inc", "company": "Acme Inc", "website_url": "https://acme.example"}


def test_an_email_trait_that_is_no_address_is_dropped() -> None:
    """Apps put "n/a" or a name in traits.email: the call counts by its userId, the value is not stored."""
    delivery = fold_calls(split_calls({"batch": [
        identify("u1", email="Ann@Example.com", name="Ann"),
        identify("u1", email="n/a"),  # does not overwrite the good address
        identify("u2", email="Bob Stone", name="Bob"),
        identify(None, email="not an address"),  # no userId and no usable email: anonymous
    ]}))
    assert delivery.changes["u1"].fields["email"] == "Ann@Example.com"
    assert "email" not in delivery.changes["u2"].fields and delivery.changes["u2"].fields["name"] == "Bob"
    assert set(delivery.changes) == {"u1", "u2"} and delivery.skipped == 1


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([identify("u1")], "JSON object"),
        ({"batch": []}, "non-empty list"),
        ({"batch": ["x"]}, "not an object"),
        ({"userId": "u1"}, "no known type"),
        ({"type": "identify", "userId": "u1", "traits": "x"}, "traits must be an object"),
    ],
)
def test_invalid_payloads(payload: Any, message: str) -> None:
    with pytest.raises(SegmentPayloadError, match=message):
        split_calls(payload)


def test_wrongly_typed_trait_is_refused() -> None:
    with pytest.raises(SegmentPayloadError, match="traits.email must be a string"):
        fold_calls([identify("u1", email={"x": 1})])


def test_segment_signature() -> None:
    body = json.dumps(identify("u1", email="a@b.co")).encode()
    verify_segment_signature(body, sign(body)["X-Signature"], SECRET)
    for header in (None, "", sign(body, "wrong")["X-Signature"], sign(body + b"\n")["X-Signature"]):
        with pytest.raises(WebhookSignatureError):
            verify_segment_signature(body, header, SECRET)


# --- the receiver ----------------------------------------------------------------------------------


def setup(engine: Engine, **settings: Any) -> TestClient:
    with engine.begin() as conn:
        create_source(conn, "seg", "segment", {"shared_secret": SECRET, **settings})
    return TestClient(create_app(engine))


def post(client: TestClient, payload: Any, secret: str = SECRET) -> Any:
    body = json.dumps(payload).encode()
    return client.post("/webhooks/seg", content=body, headers=sign(body, secret))


def rows(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {r["external_id"]: dict(r) for r in conn.execute(select(source_customers)).mappings()}


def test_receiver_creates_then_updates_partially(db_engine: Engine) -> None:
    client = setup(db_engine)
    first = post(client, identify("u1", email="ann@example.com", name="Ann Lee", company="Acme",
                                  createdAt="2019-05-01T00:00:00Z"))
    assert first.status_code == 200, first.text
    assert first.json()["created"] == 1 and first.json()["customers"] == ["u1"]
    # A later identify with only a new email keeps the name and company; a group call adds the website.
    second = post(client, {"batch": [identify("u1", email="ann@acme.example"),
                                     group("u1", "g-9", name="Acme", website="acme.example")]})
    assert second.json()["updated"] == 1
    stored = rows(db_engine)["u1"]
    assert (stored["name"], stored["email"], stored["company"], stored["website_url"]) == (
        "Ann Lee", "ann@acme.example", "Acme", "acme.example")
    assert stored["lead_created_at"] is None and stored["free_trial_started_at"] is None  # SPEC
    assert stored["custom"] == {"segment_group_id": "g-9"}
    with db_engine.connect() as conn:
        assert conn.execute(select(customers.c.lead_created_at)).scalar_one() is None
    # The same delivery again changes nothing.
    assert post(client, identify("u1", email="ann@acme.example")).json()["unchanged"] == 1


def test_group_call_for_an_unknown_user_creates_nothing(db_engine: Engine) -> None:
    client = setup(db_engine)
    response = post(client, group("u-unknown", "g1", name="Acme"))
    assert response.status_code == 200 and response.json()["customers"] == [] and response.json()["skipped"] == 1
    assert rows(db_engine) == {}


def test_create_on_group_makes_accounts_the_records(db_engine: Engine) -> None:
    client = setup(db_engine, create_on="group")
    response = post(client, {"batch": [group("u1", "acct-1", name="Globex", website="https://globex.example"),
                                       identify("u1", email="x@globex.example")]})
    assert response.status_code == 200 and response.json()["customers"] == ["acct-1"]
    assert rows(db_engine)["acct-1"]["name"] == "Globex"


@pytest.mark.parametrize("case", ["wrong_secret", "tampered", "unsigned"])
def test_bad_signature_is_401_and_stores_nothing(db_engine: Engine, case: str) -> None:
    client = setup(db_engine)
    body = json.dumps(identify("u1", email="a@b.co")).encode()
    headers = {"wrong_secret": sign(body, "nope"), "tampered": sign(body.replace(b"a@b.co", b"x@b.co")),
               "unsigned": {"Content-Type": "application/json"}}[case]
    response = client.post("/webhooks/seg", content=body, headers=headers)
    assert response.status_code == 401 and SECRET not in response.text
    assert rows(db_engine) == {}


def test_oversized_body_is_413(db_engine: Engine) -> None:
    client = setup(db_engine)
    payload = {"batch": [identify(f"u{i}", email=f"u{i}@example.com", bio="x" * 2000) for i in range(600)]}
    response = post(client, payload)
    assert response.status_code == 413 and rows(db_engine) == {}


def test_invalid_call_rejects_the_whole_batch(db_engine: Engine) -> None:
    client = setup(db_engine)
    response = post(
        client, {"batch": [identify("u1", email="a@b.co"), {"type": "identify", "userId": "u2", "traits": []}]}
    )
    assert response.status_code == 422 and "call 2" in response.json()["message"]
    bad_json = b"{not json"
    assert client.post("/webhooks/seg", content=bad_json, headers=sign(bad_json)).status_code == 422
    assert rows(db_engine) == {}
