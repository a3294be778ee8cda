"""HubSpot: the lifecycle rule, property times, search incremental with lookback and the 10,000-result
cap, the v3 webhook signature (official vector) and the receiver on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from api.app import create_app
from connectors.hubspot import HubSpotConnector, parse_hubspot_time
from connectors.signatures import WebhookSignatureError, hubspot_signature_v3, verify_hubspot_signature
from fakes.hubspot import HubSpotFake, iso_ms
from storage.schema import customers, source_customers
from storage.sources import create_source

VECTOR = json.loads((Path(__file__).parent / "fixtures/payloads/hubspot/webhook_signature_v3_vector.json").read_text())


def connector(fake: HubSpotFake, **extra: Any) -> HubSpotConnector:
    return HubSpotConnector({**fake.settings(), **extra}, source_name="hs", sleep_fn=lambda s: None)


def read(conn: HubSpotConnector, state: dict[str, Any] | None = None) -> tuple[list[Any], dict[str, Any]]:
    batches = list(conn.read("contacts", state, False))
    return [r for b in batches for r in b.records], batches[-1].cursor if batches else (state or {})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-15T09:30:00.123Z", datetime(2024, 1, 15, 9, 30, 0, 123000, tzinfo=UTC)),
        ("2024-01-15T09:30:00+02:00", datetime(2024, 1, 15, 7, 30, tzinfo=UTC)),
        ("2024-01-15", datetime(2024, 1, 15, tzinfo=UTC)),
        ("1705311000000", datetime(2024, 1, 15, 9, 30, tzinfo=UTC)),  # legacy epoch ms
        ("1705311000", datetime(2024, 1, 15, 9, 30, tzinfo=UTC)),
        ("", None),
        (None, None),
    ],
)
def test_property_times(value: str | None, expected: datetime | None) -> None:
    assert parse_hubspot_time(value) == expected


def contact(**props: Any) -> dict[str, Any]:
    base = {"createdate": "2024-01-01T10:00:00.000Z", "lastmodifieddate": "2024-02-01T10:00:00.000Z",
            "hs_object_id": "101", "email": " Ann@Example.com ", "firstname": "Ann", "lastname": "Lee"}
    return {"id": "101", "properties": {**base, **props}, "archived": False}


def test_lifecycle_rule_and_dates() -> None:
    hs = HubSpotConnector({"access_token": "t", "trial_property": "trial_start"})
    assert hs.contact_record(contact(lifecyclestage="subscriber")) is None
    assert hs.contact_record(contact(lifecyclestage="")) is None
    assert hs.contact_record(contact()) is None  # no stage at all
    # Lead date wins over createdate; the mapped trial property is read (date-only is midnight UTC).
    rec = hs.contact_record(contact(lifecyclestage="customer", hs_lifecyclestage_lead_date="2024-01-05T08:00:00Z",
                                    trial_start="2024-01-07"))
    assert rec is not None and rec.external_id == "101" and rec.name == "Ann Lee" and rec.email == "Ann@Example.com"
    assert rec.lead_created_at == datetime(2024, 1, 5, 8, tzinfo=UTC)
    assert rec.free_trial_started_at == datetime(2024, 1, 7, tzinfo=UTC)
    # No lead date: createdate. A malformed trial value does not stop the sync.
    rec = hs.contact_record(contact(lifecyclestage="lead", trial_start="not a date"))
    assert rec is not None and rec.lead_created_at == datetime(2024, 1, 1, 10, tzinfo=UTC)
    assert rec.free_trial_started_at is None
    # A custom stage counts once HubSpot stamped a lead date; without trial_property no trial date.
    plain = HubSpotConnector({"access_token": "t"})
    rec = plain.contact_record(contact(lifecyclestage="1234567", hs_lifecyclestage_lead_date="1704441600000",
                                       trial_start="2024-01-07"))
    assert rec is not None and rec.free_trial_started_at is None
    assert rec.lead_created_at == datetime(2024, 1, 5, 8, tzinfo=UTC)
    assert plain.contact_record(contact(lifecyclestage="1234567")) is None
    custom = HubSpotConnector({"access_token": "t", "lifecycle_stages": "lead,1234567"})
    assert custom.contact_record(contact(lifecyclestage="1234567")) is not None


def test_full_list_requests_the_properties_and_maps_the_rule() -> None:
    fake = HubSpotFake(n=12, page_size=5)
    with respx.mock as router:
        fake.install(router)
        records, cursor = read(connector(fake))
        sent = router.calls[0].request.url.params
    assert sent["limit"] == "5" and "hs_lifecyclestage_lead_date" in sent["properties"].split(",")
    assert "trial_started_at" in sent["properties"].split(",")
    assert {r.external_id for r in records} == fake.expected_ids()  # subscribers 0 and 10 left out
    by_id = {r.external_id: r for r in records}
    person = fake.people[1]  # a trialing lead
    assert by_id[person.id].lead_created_at == datetime.fromtimestamp(person.created + 3600, UTC).replace(
        microsecond=123000
    )
    assert by_id[person.id].free_trial_started_at is not None
    assert cursor["since"] == cursor["watermark"] and "page_token" not in cursor


def test_incremental_search_uses_lookback_and_picks_up_changes() -> None:
    fake = HubSpotFake(n=12, page_size=5)
    with respx.mock as router:
        fake.install(router)
        _, cursor = read(connector(fake))
        # A subscriber becomes a lead now: its lastmodifieddate moves past the watermark.
        changed = fake.contacts[10]
        changed["properties"].update(lifecyclestage="lead", lastmodifieddate=iso_ms(int(time.time()) - 5),
                                     hs_lifecyclestage_lead_date=iso_ms(int(time.time()) - 5))
        records, after = read(connector(fake), cursor)
    body = fake.search_bodies[0]
    gte = body["filterGroups"][0]["filters"][0]
    assert gte["propertyName"] == "lastmodifieddate" and gte["operator"] == "GTE"
    assert int(gte["value"]) == cursor["since"] - 30 * 60_000  # the lookback
    assert changed["id"] in {r.external_id for r in records}
    assert after["watermark"] > cursor["watermark"]


def test_search_cap_restarts_the_window_by_object_id() -> None:
    fake = HubSpotFake(n=25, page_size=10)
    fake.search_cap = 20
    for c in fake.contacts:  # everything modified recently: every contact matches the search
        c["properties"]["lastmodifieddate"] = iso_ms(int(time.time()) - 60)
    with respx.mock as router:
        fake.install(router)
        hs = connector(fake)
        hs.search_result_cap = 20
        records, _ = read(hs, {"since": 1, "watermark": 1})
    assert {r.external_id for r in records} == fake.expected_ids()
    offsets = [(b.get("after"), [f["value"] for f in b["filterGroups"][0]["filters"][1:]]) for b in fake.search_bodies]
    # Two pages in the first window, then a new window after the last id seen (never after=20: a 400).
    assert offsets == [(None, []), ("10", []), (None, [fake.contacts[19]["id"]])]


def test_search_cap_restart_resumes_from_a_saved_token() -> None:
    fake = HubSpotFake(n=25, page_size=10)
    fake.search_cap = 20
    with respx.mock as router:
        fake.install(router)
        hs = connector(fake)
        hs.search_result_cap = 20
        state = {"since": 1, "watermark": 1, "page_token": f"{fake.contacts[19]['id']}:"}
        records, _ = read(hs, state)
    assert [r.external_id for r in records] == [c["id"] for i, c in enumerate(fake.contacts[20:], 20) if i % 10]


# --- webhook signature -----------------------------------------------------------------------------

def official(**overrides: Any) -> dict[str, Any]:
    args = {
        "method": VECTOR["http_method"], "uris": [VECTOR["uri"]], "payload": VECTOR["raw_body"].encode(),
        "signature_header": VECTOR["signature_header"]["X-HubSpot-Signature-v3"],
        "timestamp_header": VECTOR["timestamp_header"]["X-HubSpot-Request-Timestamp"],
        "client_secret": VECTOR["client_secret"], "clock": lambda: 1693657560000 / 1000 + 10,
    }
    return {**args, **overrides}


def test_official_hubspot_vector_verifies() -> None:
    verify_hubspot_signature(**official())
    # The same request seen through a proxy that percent-encoded the URI still verifies.
    verify_hubspot_signature(**official(uris=["https%3A%2F%2Fwww.example.com%2Fwebhook_uri"]))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"payload": b"{'example_field':'example_valuE'}"}, "does not match"),
        ({"client_secret": "zzzzzzzz-yyyy-yyyy-yyyy-yyyyyyyyyyyy"}, "does not match"),
        ({"uris": ["https://www.example.com/other"]}, "does not match"),
        ({"clock": lambda: 1693657560 + 301}, "older than"),
        ({"signature_header": None}, "missing"),
        ({"timestamp_header": "yesterday"}, "milliseconds"),
        ({"client_secret": ""}, "no HubSpot app client secret"),
    ],
)
def test_hubspot_signature_refusals(override: dict[str, Any], message: str) -> None:
    with pytest.raises(WebhookSignatureError, match=message) as info:
        verify_hubspot_signature(**official(**override))
    assert VECTOR["client_secret"] not in str(info.value)


# --- the receiver ----------------------------------------------------------------------------------

SECRET = "hs-client-secret-0123456789"
URL = "http://testserver/webhooks/hs"


def hs_setup(engine: Engine, **settings: Any) -> tuple[TestClient, HubSpotFake]:
    fake = HubSpotFake(n=12, page_size=5)
    with engine.begin() as conn:
        create_source(conn, "hs", "hubspot", {**fake.settings(), "webhook_client_secret": SECRET, **settings})
    fake.install(respx)
    return TestClient(create_app(engine)), fake


def signed(body: bytes, uri: str = URL, secret: str = SECRET, age_s: float = 0) -> dict[str, str]:
    stamp = str(int((time.time() - age_s) * 1000))
    return {"X-HubSpot-Signature-v3": hubspot_signature_v3("POST", uri, body, stamp, secret),
            "X-HubSpot-Request-Timestamp": stamp, "Content-Type": "application/json"}


def events(*pairs: tuple[str, str]) -> bytes:
    return json.dumps([
        {"eventId": 100 + i, "subscriptionId": 2001, "portalId": 62515, "appId": 1160452, "occurredAt": 1717000000000,
         "subscriptionType": kind, "attemptNumber": 0, "objectId": int(object_id), "changeFlag": "NEW",
         "changeSource": "CRM", "propertyName": "lifecyclestage", "propertyValue": "lead"}
        for i, (kind, object_id) in enumerate(pairs)
    ]).encode()


def stored(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(source_customers.c.external_id)).scalars())


@respx.mock
def test_receiver_refetches_changed_contacts(db_engine: Engine) -> None:
    client, fake = hs_setup(db_engine)
    lead, subscriber = fake.contacts[1]["id"], fake.contacts[0]["id"]
    body = events(("contact.propertyChange", lead), ("contact.creation", subscriber), ("contact.deletion", lead),
                  ("contact.propertyChange", "999999"))  # a contact deleted since: 207 with an error
    response = client.post("/webhooks/hs", content=body, headers=signed(body))
    assert response.status_code == 200, response.text
    assert response.json()["customers"] == [lead] and response.json()["created"] == 1
    # One batch read for the whole delivery (HubSpot wants an answer within 5 s), not a GET per event.
    reads = [c.request for c in respx.calls if c.request.url.path.startswith("/crm/")]
    assert [(r.method, r.url.path) for r in reads] == [("POST", "/crm/v3/objects/contacts/batch/read")]
    assert json.loads(reads[0].content)["inputs"] == [{"id": lead}, {"id": subscriber}, {"id": "999999"}]
    assert stored(db_engine) == [lead]  # the subscriber is not a lead: nothing stored for it
    with db_engine.connect() as conn:
        email = conn.execute(select(customers.c.email)).scalar_one()
    assert email == fake.people[1].email


@respx.mock
@pytest.mark.parametrize("case", ["tampered", "wrong_secret", "stale", "unsigned", "other_url"])
def test_receiver_refuses_bad_signatures(db_engine: Engine, case: str) -> None:
    client, fake = hs_setup(db_engine)
    body = events(("contact.propertyChange", fake.contacts[1]["id"]))
    headers = {
        "tampered": signed(body.replace(b"CRM", b"API")),
        "wrong_secret": signed(body, secret="not-the-secret"),
        "stale": signed(body, age_s=301),
        "unsigned": {"Content-Type": "application/json"},
        "other_url": signed(body, uri="https://evil.example/webhooks/hs"),
    }[case]
    response = client.post("/webhooks/hs", content=body, headers=headers)
    assert response.status_code == 401, response.text
    assert SECRET not in response.text
    assert stored(db_engine) == [] and not [c for c in respx.calls if "/crm/" in c.request.url.path]


@respx.mock
def test_receiver_uses_the_configured_public_url_and_rejects_non_arrays(db_engine: Engine) -> None:
    client, fake = hs_setup(db_engine, webhook_url="https://hooks.example.com/webhooks/hs")
    body = events(("object.propertyChange", fake.contacts[2]["id"]))
    body = body.replace(b'"objectId"', b'"objectTypeId": "0-1", "objectId"')
    response = client.post("/webhooks/hs", content=body, headers=signed(body, uri="https://hooks.example.com/webhooks/hs"))
    assert response.status_code == 200 and response.json()["created"] == 1
    bad = b'{"subscriptionType": "contact.creation"}'
    response = client.post("/webhooks/hs", content=bad, headers=signed(bad, uri="https://hooks.example.com/webhooks/hs"))
    assert response.status_code == 422 and stored(db_engine) == [fake.contacts[2]["id"]]


# --- companies as customers -------------------------------------------------------------------------

def company(i: int, stage: str, country: str = "DE") -> dict[str, Any]:
    return {"id": str(9000 + i), "archived": False, "createdAt": "2024-03-01T08:00:00Z",
            "updatedAt": "2024-03-02T08:00:00Z",
            "properties": {"name": f"Acme {i}", "domain": f"acme{i}.example", "website": None, "city": "Berlin",
                           "state": None, "zip": "10115", "country": country, "createdate": "2024-03-01T08:00:00Z",
                           "hs_lastmodifieddate": "2024-03-02T08:00:00.000Z", "lifecyclestage": stage,
                           "hs_lifecyclestage_lead_date": "2024-03-01T09:00:00Z" if stage != "subscriber" else None,
                           "hs_object_id": str(9000 + i)}}


def test_companies_object_type_reads_companies_with_the_same_rule() -> None:
    pages = {None: ([company(0, "lead"), company(1, "subscriber")], "9002"),
             "9002": ([company(2, "customer", "Germany")], None)}

    def list_companies(request: Any) -> Any:
        if request.url.params.get("archived") == "true":  # no company was archived
            return httpx.Response(200, json={"results": []})
        items, nxt = pages[request.url.params.get("after")]
        assert "hs_lastmodifieddate" in request.url.params["properties"].split(",")
        body: dict[str, Any] = {"results": items}
        if nxt:
            body["paging"] = {"next": {"after": nxt, "link": "…"}}
        return httpx.Response(200, json=body)

    searches: list[dict[str, Any]] = []

    def search(request: Any) -> Any:
        searches.append(json.loads(request.content))
        return httpx.Response(200, json={"total": 1, "results": [company(2, "customer")]})

    hs = HubSpotConnector({"access_token": "t", "base_url": "https://hs.test", "object_type": "companies"},
                          sleep_fn=lambda s: None)
    assert [s.name for s in hs.streams] == ["companies"]
    with respx.mock as router:
        router.get("https://hs.test/crm/v3/objects/companies").mock(side_effect=list_companies)
        router.post("https://hs.test/crm/v3/objects/companies/search").mock(side_effect=search)
        batches = list(hs.read("companies", None, False))
        records = [r for b in batches for r in b.records]
        again = list(hs.read("companies", batches[-1].cursor, False))
    assert [r.external_id for r in records] == ["9000", "9002"]  # the subscriber company is left out
    first = records[0]
    assert (first.name, first.company, first.website_url, first.country) == ("Acme 0", "Acme 0", "acme0.example", "DE")
    assert first.lead_created_at == datetime(2024, 3, 1, 9, tzinfo=UTC)
    assert records[1].country is None  # free-text country names are not alpha-2 codes
    assert searches[0]["filterGroups"][0]["filters"][0]["propertyName"] == "hs_lastmodifieddate"
    assert [r.external_id for b in again for r in b.records] == ["9002"]
    # A contacts source reads no companies (the sync engine iterates the instance's streams).
    assert list(HubSpotConnector({"access_token": "t"}).read("companies", None, False)) == []


def test_webhook_events_are_picked_by_the_sources_object_type() -> None:
    from connectors.push import WebhookContext

    body = json.dumps([
        {"subscriptionType": "contact.propertyChange", "objectId": 1},
        {"subscriptionType": "company.propertyChange", "objectId": 2},
        {"subscriptionType": "object.creation", "objectTypeId": "0-2", "objectId": 3},
        {"subscriptionType": "object.creation", "objectTypeId": "0-1", "objectId": 4},
    ]).encode()
    headers = {k.lower(): v for k, v in signed(body).items()}
    for object_type, expected in (("companies", ["2", "3"]), ("contacts", ["1", "4"])):
        settings = {"webhook_client_secret": SECRET, "object_type": object_type}
        delivery = HubSpotConnector.parse_webhook(settings, headers, body, WebhookContext(url=URL))
        assert delivery.customer_ids == expected
