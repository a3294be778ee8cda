"""Intercom: companies become customers with their linked contacts (SPEC dates), paging by cursor and by
page number, the contact-change feed, X-RateLimit-Reset, and the X-Hub-Signature receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import respx
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from api.app import create_app
from connectors.intercom import IntercomConnector, IntercomPaginator, company_record
from connectors.paging import PageRequest
from connectors.signatures import WebhookSignatureError, verify_intercom_signature
from fakes.intercom import IntercomFake
from storage.schema import contacts, source_customers
from storage.sources import create_source


def connector(fake: IntercomFake, slept: list[float] | None = None, **extra: Any) -> IntercomConnector:
    sink = slept if slept is not None else []
    return IntercomConnector({**fake.settings(), **extra}, source_name="ic", sleep_fn=sink.append)


def read_all(conn: IntercomConnector, states: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    records: dict[str, Any] = {}
    cursors: dict[str, Any] = {}
    for stream in ("companies", "contacts"):
        for batch in conn.read(stream, (states or {}).get(stream), False):
            for record in batch.records:
                records[record.external_id] = record
            cursors[stream] = batch.cursor
    return records, cursors


def test_companies_become_customers_with_their_contacts_only() -> None:
    fake = IntercomFake(n=6, page_size=4)
    with respx.mock as router:
        fake.install(router)
        records, _ = read_all(connector(fake))
    assert set(records) == fake.expected_ids()
    first = records[fake.companies[0]["id"]]  # remote_created_at given: your app's creation date wins
    assert first.free_trial_started_at == datetime.fromtimestamp(fake.people[0].created, UTC)
    assert first.lead_created_at == first.free_trial_started_at
    assert first.website_url == "https://www.company0.example" and first.custom == {"intercom_plan": "Pro"}
    second = records[fake.companies[1]["id"]]  # no remote_created_at: Intercom's created_at
    assert second.lead_created_at == datetime.fromtimestamp(fake.people[1].created + 120, UTC)
    # Company 2 has three contacts over two pages of /companies/{id}/contacts (page numbers followed).
    third = records[fake.companies[2]["id"]]
    assert [c.email for c in third.contacts] == [fake.people[2].email, f"lead1.{fake.people[2].email}",
                                                 f"lead2.{fake.people[2].email}"]
    assert third.contacts[0].first_name == "First2" and third.contacts[0].last_name == "Last2"
    assert third.email == fake.people[2].email and third.country == "DE"
    every_contact = {c.email for r in records.values() for c in r.contacts}
    assert not any(e.startswith("loner") for e in every_contact)  # contacts without a company: never
    assert all(r.subscriptions == [] for r in records.values())


def test_paginator_follows_cursor_page_numbers_and_url_links() -> None:
    pager = IntercomPaginator()
    cursor = {"data": [1], "pages": {"page": 1, "total_pages": 3, "next": {"page": 2, "starting_after": "WzJd"}}}
    assert pager.next_token(cursor) == "WzJd"
    assert pager.apply(PageRequest("/companies", {"per_page": 50}), "WzJd").params == {
        "per_page": 50,
        "starting_after": "WzJd",
    }
    search = pager.apply(
        PageRequest("/contacts/search", method="POST", json_body={"pagination": {"per_page": 150}}), "WzJd"
    )
    assert search.json_body["pagination"] == {"per_page": 150, "starting_after": "WzJd"}
    legacy = {"companies": [1], "pages": {"next": "https://api.intercom.io/companies?per_page=50&page=2", "page": 1}}
    assert pager.items(legacy) == [1] and pager.next_token(legacy) == "page:2"
    assert pager.apply(PageRequest("/companies"), "page:2").params == {"page": "2"}
    assert pager.next_token({"data": [1], "pages": {"page": 2, "total_pages": 2}}) is None
    assert pager.next_token({"data": [1], "pages": {"page": 1, "total_pages": 2}}) == "page:2"


def test_incremental_run_rebuilds_companies_whose_contacts_changed() -> None:
    fake = IntercomFake(n=8, page_size=5)
    with respx.mock as router:
        fake.install(router)
        _, cursors = read_all(connector(fake))
        before = len(router.calls)
        # A lead of company 4 changes its email now: the change feed must rebuild company 4.
        changed = next(c for c in fake.contacts if c["id"] == "65f0c0ffee4-1")
        changed.update(email="renamed@example.com", updated_at=int(time.time()))
        records, after = read_all(connector(fake, lookback_seconds=3600), cursors)
        rebuilt = {c.request.url.path.split("/")[2] for c in list(router.calls)[before:]
                   if c.request.url.path.endswith("/contacts")}
    # Companies updated within the lookback of the watermark (6 and 7, an hour apart) and company 4,
    # whose contact changed; the unchanged older companies cost no contact requests.
    assert rebuilt == {fake.companies[i]["id"] for i in (4, 6, 7)}
    assert "renamed@example.com" in {c.email for c in records[fake.companies[4]["id"]].contacts}
    query = fake.search_bodies[-1]["query"]
    assert query == {"field": "updated_at", "operator": ">", "value": cursors["contacts"]["since"] - 86_400}
    assert fake.search_bodies[-1]["sort"] == {"field": "updated_at", "order": "ascending"}
    assert after["contacts"]["watermark"] >= changed["updated_at"] - 1


def test_companies_are_listed_with_the_documented_list_endpoint() -> None:
    """``POST /companies/list`` is "List all companies" (Intercom-OpenAPI descriptions/2.14
    api.intercom.io.yaml, operationId ``listAllCompanies``: query ``page``, ``per_page``, ``order``);
    ``GET /companies`` is ``retrieveCompany``, one company by ``company_id`` or ``name``. The fake
    answers a bare ``GET /companies`` as the retrieve endpoint does: not found."""
    fake = IntercomFake(n=23, page_size=5)
    with respx.mock as router:
        fake.install(router)
        records, _ = read_all(connector(fake))
        lists = [c.request for c in router.calls if c.request.url.path == "/companies/list"]
        bare = [c.request for c in router.calls if c.request.url.path == "/companies"]
    assert set(records) == fake.expected_ids()
    assert not bare and all(r.method == "POST" for r in lists)
    # The probe (per_page=1), then pages 1-5 of five.
    assert [r.url.params.get("page") for r in lists] == [None, None, "2", "3", "4", "5"]


def test_rate_limit_reset_header_is_honoured() -> None:
    fake = IntercomFake(n=3, page_size=5)
    reset = int(time.time()) + 9
    limits = {"X-RateLimit-Limit": "167", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}
    fake.inject("/companies/list", [httpx.Response(429, headers=limits,
                                              json={"type": "error.list", "errors": [{"code": "rate_limit_exceeded",
                                                    "message": "Exceeded rate limit of 167 in 10_seconds"}]})])
    slept: list[float] = []
    with respx.mock as router:
        fake.install(router)
        records, _ = read_all(connector(fake, slept))
    assert len(records) == 3 and len(slept) == 1 and 7 <= slept[0] <= 9


# --- webhooks ---------------------------------------------------------------------------------------

SECRET = "ic-client-secret-abcdef"


def sign(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"X-Hub-Signature": "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
            "Content-Type": "application/json"}


def test_intercom_signature() -> None:
    body = b'{"type":"notification_event","topic":"ping"}'
    verify_intercom_signature(body, sign(body)["X-Hub-Signature"], SECRET)
    for header, message in [
        (None, "missing"),
        ("md5=abc", "malformed"),
        (sign(body, "other")["X-Hub-Signature"], "does not match"),
        (sign(body + b" ")["X-Hub-Signature"], "does not match"),
    ]:
        with pytest.raises(WebhookSignatureError, match=message):
            verify_intercom_signature(body, header, SECRET)


def notification(topic: str, item: dict[str, Any]) -> bytes:
    return json.dumps({"type": "notification_event", "app_id": "abc123de", "id": "notif_ccd8a4d0-f965-11e3-a367",
                       "topic": topic, "delivery_status": "pending", "delivery_attempts": 1,
                       "created_at": 1717000000, "first_sent_at": 1717000000,
                       "data": {"type": "notification_event_data", "item": item}}).encode()


def ic_setup(engine: Engine) -> tuple[TestClient, IntercomFake]:
    fake = IntercomFake(n=4, page_size=5)
    with engine.begin() as conn:
        create_source(conn, "ic", "intercom", {**fake.settings(), "webhook_secret": SECRET})
    fake.install(respx)
    return TestClient(create_app(engine)), fake


@respx.mock
def test_receiver_rebuilds_the_contacts_company(db_engine: Engine) -> None:
    client, fake = ic_setup(db_engine)
    contact = next(c for c in fake.contacts if c["id"] == "65f0c0ffee2-0")
    body = notification("contact.user.updated", contact)
    response = client.post("/webhooks/ic", content=body, headers=sign(body))
    assert response.status_code == 200, response.text
    assert response.json()["customers"] == [fake.companies[2]["id"]] and response.json()["created"] == 1
    with db_engine.connect() as conn:
        assert list(conn.execute(select(source_customers.c.external_id)).scalars()) == [fake.companies[2]["id"]]
        assert len(list(conn.execute(select(contacts.c.email)).scalars())) == 3
    loner = next(c for c in fake.contacts if c["id"] == "65f0c0ffeex0")
    body = notification("contact.lead.created", loner)  # linked to no company: nothing to import
    assert client.post("/webhooks/ic", content=body, headers=sign(body)).json()["customers"] == []
    body = notification("company.updated", fake.companies[1])
    assert client.post("/webhooks/ic", content=body, headers=sign(body)).json()["created"] == 1


@respx.mock
@pytest.mark.parametrize("case", ["tampered", "wrong_secret", "unsigned"])
def test_receiver_refuses_bad_signatures(db_engine: Engine, case: str) -> None:
    client, fake = ic_setup(db_engine)
    body = notification("company.updated", fake.companies[1])
    headers = {"tampered": sign(body.replace(b"pending", b"retry")), "wrong_secret": sign(body, "nope"),
               "unsigned": {"Content-Type": "application/json"}}[case]
    response = client.post("/webhooks/ic", content=body, headers=headers)
    assert response.status_code == 401 and SECRET not in response.text
    with db_engine.connect() as conn:
        assert conn.execute(select(source_customers.c.id)).first() is None
    assert not [c for c in respx.calls if c.request.url.path.startswith("/companies")]


@respx.mock
def test_receiver_rejects_payload_without_topic(db_engine: Engine) -> None:
    client, _ = ic_setup(db_engine)
    body = b'{"type": "notification_event", "data": {}}'
    assert client.post("/webhooks/ic", content=body, headers=sign(body)).status_code == 422


def test_company_record_without_contacts_or_dates() -> None:
    record = company_record({"id": "c1", "name": " Acme ", "created_at": None, "remote_created_at": 0}, [])
    assert record.name == "Acme" and record.lead_created_at is None and record.contacts == []


def test_more_companies_than_the_list_pages_are_scrolled() -> None:
    """Past 10,000 companies the list cannot page ("there is a limit of 10,000 Companies that can be
    returned ... please use the Scroll API", List all companies); ``GET /companies/scroll``, then
    ``?scroll_param=`` until "data will be empty", and a scroll cannot be continued from a point
    (Intercom API reference 2.x, Scroll over all companies, ``scrollOverAllCompanies``)."""
    fake = IntercomFake(n=23, page_size=5)
    with respx.mock as router:
        fake.install(router)
        ic = connector(fake)
        ic.list_limit = 20  # 23 companies > the limit: the list endpoint would refuse to page that far
        # Even a saved list cursor is dropped: a scroll cannot be resumed.
        batches = list(ic.read("companies", {"since": None, "page_token": "WzEwXQ=="}, False))
        scrolls = [c.request.url.params.get("scroll_param") for c in router.calls
                   if c.request.url.path == "/companies/scroll"]
    assert {r.external_id for b in batches for r in b.records} == fake.expected_ids()
    assert scrolls == [None] + ["25b649f7-4d33-4ef6-88f5-60e5b8244309"] * 3  # 10 + 10 + 3, then an empty page
    assert "page_token" not in batches[-1].cursor
