"""HubSpot's documented 429 and archived objects.

Checked against https://developers.hubspot.com/docs/api/usage-details (the 429 body: ``"errorType":
"RATE_LIMIT"``, ``"policyName"`` naming the limit hit, daily or secondly; headers
``X-HubSpot-RateLimit-Interval-Milliseconds``, no ``Retry-After`` promised) and the CRM v3 objects
reference (``GET /crm/v3/objects/contacts?archived=true`` lists only archived objects; search never
returns them), as hubspot-api-python's README advises (urllib3 ``Retry(status_forcelist=(429,))``).
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import respx
from sqlalchemy import Engine, select

from connectors.hubspot import HubSpotConnector
from fakes.hubspot import HubSpotFake
from jobs.sync import sync_source
from storage.schema import merge_events, source_customers
from storage.sources import create_source


def ten_secondly(headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(429, headers=headers or {}, json={
        "status": "error", "message": "You have reached your ten_secondly_rolling limit.", "errorType": "RATE_LIMIT",
        "correlationId": "c033cdaa-2c40-4a64-ae48-b4cec88dad24", "policyName": "TEN_SECONDLY_ROLLING",
        "requestId": "3d3e35b7-0dae-4b9f-a6e3-9c230cbcf8dd"})


def read_all(connector: HubSpotConnector) -> list[Any]:
    return [r for b in connector.read("contacts", None, False) for r in b.records]


def test_hubspot_429_without_retry_after_waits_out_the_ten_second_window() -> None:
    """Four 429s in a row (contention) without ``Retry-After``: each wait is the whole rolling window, so
    the fifth attempt lands in a fresh one; the old 0.5 → 4 s backoff (7.5 s in all) gave up inside it."""
    fake = HubSpotFake(n=6, page_size=10)
    fake.inject(fake.main_path, [ten_secondly() for _ in range(4)])
    slept: list[float] = []
    with respx.mock as router:
        fake.install(router)
        records = read_all(HubSpotConnector(fake.settings(), sleep_fn=slept.append))
    assert {r.external_id for r in records} == fake.expected_ids()
    assert slept == [10.0, 10.0, 10.0, 10.0]


def test_hubspot_429_window_follows_the_interval_header() -> None:
    fake = HubSpotFake(n=3, page_size=10)
    fake.inject(fake.main_path, [ten_secondly({"X-HubSpot-RateLimit-Interval-Milliseconds": "15000",
                                               "X-HubSpot-RateLimit-Max": "190",
                                               "X-HubSpot-RateLimit-Remaining": "0"})])
    slept: list[float] = []
    with respx.mock as router:
        fake.install(router)
        read_all(HubSpotConnector(fake.settings(), sleep_fn=slept.append))
    assert slept == [15.0]


def test_hubspot_archived_contact_is_removed(db_engine: Engine) -> None:
    """An archived contact is gone from the list and search; the run lists ``archived=true`` and removes it."""
    fake = HubSpotFake(n=6, page_size=10)
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        with db_engine.begin() as conn:
            create_source(conn, "hs", "hubspot", fake.settings())
        sync_source(db_engine, "hs", sleep_fn=lambda s: None)
        gone = fake.people[1].id
        fake.archive(gone, int(time.time()))
        summary = sync_source(db_engine, "hs", sleep_fn=lambda s: None)
        archived_calls = [c for c in router.calls if c.request.url.params.get("archived") == "true"]
    with db_engine.connect() as conn:
        left = set(conn.execute(select(source_customers.c.external_id)).scalars())
        kinds = conn.execute(select(merge_events.c.kind)).scalars().all()
    assert left == fake.expected_ids() and gone not in left
    assert summary.totals["deleted"] == 1 and kinds == ["delete"] and archived_calls


def test_hubspot_deletion_webhook_removes_the_contacts_that_read_back_gone(db_engine: Engine) -> None:
    """A signed delivery of ``contact.deletion`` events (the legacy CRM subscription type HubSpot's webhook
    configuration lists, ``changeFlag: DELETED``) removes the contacts at once. HubSpot promises no order
    of deliveries, so each is confirmed by the batch read: a contact that still reads (restored since)
    stays, one archived (not returned) goes."""
    import json

    from fastapi.testclient import TestClient

    from api.app import create_app
    from connectors.signatures import hubspot_signature_v3

    fake = HubSpotFake(n=6, page_size=10)
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        with db_engine.begin() as conn:
            create_source(conn, "hs", "hubspot", {**fake.settings(), "webhook_client_secret": "hs-secret"})
        sync_source(db_engine, "hs", sleep_fn=lambda s: None)
        gone, restored = fake.people[1].id, fake.people[2].id
        fake.archive(gone, int(time.time()))
        now_ms = int(time.time() * 1000)
        body = json.dumps([
            {"eventId": 100 + n, "subscriptionId": 2471, "portalId": 62515, "appId": 1160452,
             "occurredAt": now_ms, "subscriptionType": "contact.deletion", "attemptNumber": 0,
             "objectId": int(object_id), "changeFlag": "DELETED", "changeSource": "CRM_UI"}
            for n, object_id in enumerate((gone, restored))]).encode()
        url = "http://testserver/webhooks/hs"
        stamp = str(now_ms)
        headers = {"X-HubSpot-Signature-v3": hubspot_signature_v3("POST", url, body, stamp, "hs-secret"),
                   "X-HubSpot-Request-Timestamp": stamp, "Content-Type": "application/json"}
        response = TestClient(create_app(db_engine)).post("/webhooks/hs", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["deleted"] == 1
    with db_engine.connect() as conn:
        left = set(conn.execute(select(source_customers.c.external_id)).scalars())
    assert gone not in left and restored in left and left == fake.expected_ids()


def test_a_deleted_contact_restored_in_hubspot_gets_its_manual_edits_back(db_engine: Engine) -> None:
    """HubSpot keeps a deleted contact in its recycling bin for 90 days and can restore it (listed again,
    ``contact.restore`` to webhooks). The customer removed with it left its manual edits in its ``delete``
    event; when the contact comes back, the edits come back and the event is marked undone."""
    from jobs.edits import edit_customer
    from storage.schema import customers

    fake = HubSpotFake(n=6, page_size=10)
    with respx.mock(assert_all_called=False) as router:
        fake.install(router)
        with db_engine.begin() as conn:
            create_source(conn, "hs", "hubspot", fake.settings())
        sync_source(db_engine, "hs", sleep_fn=lambda s: None)
        contact = fake.people[1].id

        def customer_of() -> Any:
            with db_engine.connect() as conn:
                return conn.execute(select(customers).join(
                    source_customers, source_customers.c.customer_id == customers.c.id).where(
                    source_customers.c.external_id == contact)).mappings().first()

        edit_customer(db_engine, customer_of()["id"], {"name": "Ann (typed by hand)"})
        fake.archive(contact, int(time.time()))
        sync_source(db_engine, "hs", sleep_fn=lambda s: None)
        assert customer_of() is None
        fake.restore(contact, int(time.time()) + 5)
        sync_source(db_engine, "hs", sleep_fn=lambda s: None)
    back = customer_of()
    assert back is not None and back["name"] == "Ann (typed by hand)"
    with db_engine.connect() as conn:
        events = conn.execute(select(merge_events.c.kind, merge_events.c.undone_at)).all()
    assert [e.kind for e in events] == ["delete"] and events[0].undone_at is not None
