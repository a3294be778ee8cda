"""HTTP API customers: create with lead and trial dates, cursor lists, search, edits that survive re-syncs."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime

from sqlalchemy import func, select

from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from storage.schema import customers, manual_edits, source_customers
from storage.sources import create_source
from storage.upsert import upsert_records
from tests.api_support import api_client, new_customer, new_source

READ_KEYS = {
    "id", "uuid", "external_id", "external_ids", "data_source_uuid", "data_source_uuids", "name", "company",
    "email", "status", "customer-since", "lead_created_at", "free_trial_started_at", "city", "state", "country",
    "zip", "address", "attributes", "mrr", "arr", "billing-system-url", "chartmogul-url", "billing-system-type",
    "currency", "currency-sign", "website_url",
}


def test_create_customer_with_lead_and_trial_dates(db_engine, monkeypatch):
    client = api_client(db_engine)
    ds = new_source(client)
    body = new_customer(
        client,
        ds,
        "lead-1",
        name="Acme",
        email="Ann@Acme.io",
        company="Acme Inc",
        country="us",
        state="US-NY",
        city="New York",
        zip="10001",
        lead_created_at="2022-10-14 00:00:00",
        free_trial_started_at="2022-10-20T12:30:00Z",
        owner="sales@example.com",
        website_url="https://acme.io",
        attributes={"tags": ["vip", "vip", "b2b"], "custom": [{"type": "Integer", "key": "seats", "value": 12}]},
        primary_contact={"first_name": "Ann", "last_name": "Lee", "email": "ann@acme.io"},
    )
    assert READ_KEYS <= set(body)
    assert body["uuid"].startswith("cus_") and isinstance(body["id"], int)
    assert body["external_id"] == "lead-1" and body["external_ids"] == ["lead-1"]
    assert body["data_source_uuid"] == ds and body["data_source_uuids"] == [ds]
    assert body["lead_created_at"] == "2022-10-14T00:00:00+00:00"
    assert body["free_trial_started_at"] == "2022-10-20T12:30:00+00:00"
    assert body["status"] == "New_Lead" and body["customer-since"] is None
    assert body["country"] == "US" and body["address"] == {
        "address_zip": "10001", "city": "New York", "state": "US-NY", "country": "US"}
    assert body["attributes"]["tags"] == ["vip", "b2b"]
    assert body["attributes"]["custom"] == {"seats": 12}
    assert body["billing-system-type"] == "Custom" and body["mrr"] == 0 and body["arr"] == 0
    assert client.get(f"/v1/customers/{body['uuid']}/contacts").json()["entries"][0]["first_name"] == "Ann"

    # Input without a zone is read in the account time zone (SPEC section 2).
    monkeypatch.setenv("FUNNELSYNC_TIMEZONE", "America/New_York")
    other = new_customer(client, ds, "lead-2", lead_created_at="2022-10-14 00:00:00")
    assert other["lead_created_at"] == "2022-10-14T04:00:00+00:00"


def test_create_refuses_invalid_fields_and_writes_nothing(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    new_customer(client, ds, "x1")
    duplicate = client.post("/v1/customers", json={"data_source_uuid": ds, "external_id": "x1"})
    assert duplicate.status_code == 422
    assert duplicate.json()["errors"][0]["field"] == "external_id"
    bad = client.post(
        "/v1/customers",
        json={
            "data_source_uuid": ds,
            "external_id": "x2",
            "email": "not-an-email",
            "country": "USA",
            "lead_created_at": "yesterday",
            "attributes": {"custom": [{"type": "Integer", "key": "seats", "value": "many"}]},
            "unknown_field": 1,
        },
    )
    assert bad.status_code == 422
    fields = {e["field"] for e in bad.json()["errors"]}
    assert fields == {"email", "country", "lead_created_at", "attributes.custom[0].value", "unknown_field"}
    assert "many" in bad.json()["message"]
    missing = client.post("/v1/customers", json={"name": "no ids"})
    assert {e["field"] for e in missing.json()["errors"]} == {"data_source_uuid", "external_id"}
    unknown_ds = client.post("/v1/customers", json={"data_source_uuid": "ds_nope", "external_id": "x3"})
    assert unknown_ds.status_code == 422 and unknown_ds.json()["errors"][0]["field"] == "data_source_uuid"
    with db_engine.begin() as conn:
        stripe = create_source(conn, "stripe-live", "stripe")
    integration = client.post("/v1/customers", json={"data_source_uuid": stripe.uuid, "external_id": "cus_1"})
    assert integration.status_code == 422 and "integration" in integration.json()["message"]
    typo = client.post("/v1/customers", json={
        "data_source_uuid": ds, "external_id": "x4", "primary_contact": {"email": "p@example.com", "phnoe": "1"}})
    assert typo.status_code == 422 and typo.json()["errors"][0]["field"] == "primary_contact.phnoe"
    assert client.post("/v1/customers", content=b"{not json").status_code == 422
    assert client.post("/v1/customers", json=[1, 2]).status_code == 422
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 1
        assert conn.execute(select(func.count()).select_from(source_customers)).scalar_one() == 1


def test_list_pages_with_cursor_and_filters(db_engine):
    client = api_client(db_engine)
    crm = new_source(client, "crm")
    web = new_source(client, "web")
    made = [new_customer(client, crm, f"c{i}", email=f"user{i}@example.com")["uuid"] for i in range(5)]
    made.append(new_customer(client, web, "w1", status="Working_Lead")["uuid"])

    seen, cursor, pages = [], None, 0
    while True:
        params = {"per_page": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/customers", params=params).json()
        assert set(page) == {"entries", "has_more", "cursor", "per_page"}
        seen += [c["uuid"] for c in page["entries"]]
        pages += 1
        if not page["has_more"]:
            assert page["cursor"] is None
            break
        cursor = page["cursor"]
    assert seen == made and pages == 3

    by_source = client.get("/v1/customers", params={"data_source_uuid": web}).json()["entries"]
    assert [c["uuid"] for c in by_source] == [made[5]]
    by_external = client.get("/v1/customers", params={"external_id": "c3"}).json()["entries"]
    assert [c["uuid"] for c in by_external] == [made[3]]
    by_status = client.get("/v1/customers", params={"status": "Working_Lead"}).json()["entries"]
    assert [c["uuid"] for c in by_status] == [made[5]]
    assert len(client.get("/v1/customers", params={"system": "Custom"}).json()["entries"]) == 6
    assert client.get("/v1/customers", params={"system": "Stripe"}).json()["entries"] == []
    assert len(client.get("/v1/customers", params={"system": "Import API"}).json()["entries"]) == 6
    legacy = client.get("/v1/customers", params={"page": 2, "per_page": 4}).json()
    assert [c["uuid"] for c in legacy["entries"]] == made[4:] and legacy["total_pages"] == 2

    for params, field in (({"cursor": "garbage"}, "cursor"), ({"per_page": 0}, "per_page"),
                          ({"per_page": 201}, "per_page"), ({"status": "Happy"}, "status"),
                          ({"system": "Nope"}, "system"), ({"page": 0}, "page")):
        response = client.get("/v1/customers", params=params)
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == field


def test_search_by_email(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    first = new_customer(client, ds, "a", email="Jane@Example.com")
    new_customer(client, ds, "b", email="other@example.com")
    found = client.get("/v1/customers/search", params={"email": "jane@example.com"}).json()
    assert [c["uuid"] for c in found["entries"]] == [first["uuid"]] and found["has_more"] is False
    assert client.get("/v1/customers/search", params={"email": "nobody@example.com"}).json()["entries"] == []
    # Text that is no email address matches nobody (it was "email_norm IS NULL": every customer without one).
    new_customer(client, ds, "c")
    for path in ("/v1/customers/search", "/v1/customers"):
        assert client.get(path, params={"email": "not-an-email"}).json()["entries"] == [], path
    assert client.get("/v1/customers/search").status_code == 422


def test_update_is_a_manual_edit_that_survives_resync(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    created = new_customer(client, ds, "lead-9", name="Old", lead_created_at="2023-01-01", city="Paris")
    uuid = created["uuid"]
    response = client.patch(f"/v1/customers/{uuid}", json={
        "lead_created_at": "2023-02-01T00:00:00Z", "free_trial_started_at": "2023-02-03", "status": "Qualified_Lead",
        "owner": "rep@example.com", "website_url": "https://new.example", "city": "Berlin",
        "attributes": {"tags": ["hot"], "custom": {"seats": 3}},
    })
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lead_created_at"] == "2023-02-01T00:00:00+00:00" and body["status"] == "Qualified_Lead"
    assert body["city"] == "Berlin" and body["attributes"] == {
        "tags": ["hot"],
        "stripe": {},
        "clearbit": {},
        "custom": {"seats": 3},
    }
    with db_engine.begin() as conn:
        edits = {r.field for r in conn.execute(select(manual_edits.c.field))}
        # Audit: who set them is the API key's public prefix, never the key.
        actors = set(conn.execute(select(manual_edits.c.actor)).scalars())
        assert len(actors) == 1 and re.fullmatch(r"api:fsk_[A-Za-z0-9_-]{8}", actors.pop())
        assert {"lead_created_at", "lead_status", "owner", "city", "tag.hot", "custom.seats"} <= edits
        source_id = conn.execute(select(source_customers.c.data_source_id)).scalar_one()
        # The source says something else again: the hand-made values still win.
        upsert_records(conn, source_id, [SourceCustomerRecord(
            external_id="lead-9", name="Resynced", city="Rome",
            lead_created_at=datetime(2022, 5, 5, tzinfo=UTC), tags=["cold"])])
    after = client.get(f"/v1/customers/{uuid}").json()
    assert after["name"] == "Resynced" and after["city"] == "Berlin"
    assert after["lead_created_at"] == "2023-02-01T00:00:00+00:00" and after["status"] == "Qualified_Lead"
    # A tag the source adds later shows; the tags set by hand stay.
    assert set(after["attributes"]["tags"]) == {"hot", "cold"} and after["owner"] == "rep@example.com"

    alias = client.patch(f"/v1/customers/{uuid}", json={"lead_status": "Unqualified_Lead"})
    assert alias.status_code == 200 and alias.json()["status"] == "Unqualified_Lead"
    # Both names with different values (a read object sent back with only lead_status changed): refused,
    # not resolved silently in favour of the stale one.
    both = client.patch(f"/v1/customers/{uuid}", json={"status": "Unqualified_Lead", "lead_status": "Working_Lead"})
    assert both.status_code == 422 and both.json()["errors"][0]["field"] == "lead_status"
    same = client.patch(f"/v1/customers/{uuid}", json={"status": "Working_Lead", "lead_status": "Working_Lead"})
    assert same.status_code == 200 and same.json()["status"] == "Working_Lead"
    untouched = client.patch(f"/v1/customers/{uuid}", json={"status": "Qualified_Lead", "lead_status": None})
    assert untouched.status_code == 200 and untouched.json()["status"] == "Qualified_Lead"
    put = client.put(f"/v1/customers/{uuid}", json={"company": "Put Inc"})
    assert put.status_code == 200 and put.json()["company"] == "Put Inc"
    bad = client.patch(f"/v1/customers/{uuid}", json={"status": "Active", "lead_created_at": "soon", "uuid": uuid})
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["errors"]} == {"status", "lead_created_at"}
    assert client.patch("/v1/customers/cus_missing", json={"city": "X"}).status_code == 404


def test_lead_status_refused_on_subscriber(db_engine):
    client = api_client(db_engine)
    with db_engine.begin() as conn:
        source = create_source(conn, "billing", "custom")
        paid = datetime(2024, 1, 1, tzinfo=UTC)
        upsert_records(conn, source.id, [SourceCustomerRecord(
            external_id="s1", email="sub@example.com",
            subscriptions=[SubscriptionFact(external_id="sub", state="active", first_paid_at=paid)])])
    sub = client.get("/v1/customers").json()["entries"][0]
    assert sub["status"] == "Active" and sub["customer-since"] == "2024-01-01T00:00:00+00:00"
    response = client.patch(f"/v1/customers/{sub['uuid']}", json={"status": "Working_Lead"})
    assert response.status_code == 422 and "subscriber" in response.json()["message"]
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(manual_edits)).scalar_one() == 0


def test_delete_customer(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    uuid = new_customer(client, ds, "gone", primary_contact={"email": "p@example.com"})["uuid"]
    assert client.delete(f"/v1/customers/{uuid}").status_code == 204
    assert client.get(f"/v1/customers/{uuid}").status_code == 404
    assert client.delete(f"/v1/customers/{uuid}").status_code == 404
    assert client.get("/v1/contacts").json()["entries"] == []
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(source_customers)).scalar_one() == 0
    # The external id is free again.
    assert new_customer(client, ds, "gone")["uuid"] != uuid


def test_auth_and_body_limits(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    for method, path in (("GET", "/v1/customers"), ("POST", "/v1/customers"), ("GET", "/v1/data_sources"),
                         ("GET", "/v1/contacts"), ("POST", "/v1/customers/attributes/tags")):
        assert client.request(method, path, auth=None).status_code == 401
        assert client.request(method, path, auth=("fsk_wrong", "")).status_code == 401
    huge = client.post("/v1/customers", json={"data_source_uuid": ds, "external_id": "big", "name": "x" * 2_000_000})
    assert huge.status_code == 413

    def chunks():  # no Content-Length: the cap is enforced while streaming
        yield b'{"data_source_uuid": "' + ds.encode() + b'", "external_id": "big2", "name": "'
        for _ in range(40):
            yield b"y" * 50_000
        yield b'"}'

    streamed = client.post("/v1/customers", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and "limit" in streamed.json()["message"]
    assert client.get("/v1/customers").json()["entries"] == []


def test_date_rules_of_manual_entry(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    before = client.post(
        "/v1/customers",
        json={
            "data_source_uuid": ds,
            "external_id": "t1",
            "lead_created_at": "2024-03-10",
            "free_trial_started_at": "2024-03-01",
        },
    )
    assert before.status_code == 422 and "precede" in before.json()["message"]
    future = client.post(
        "/v1/customers", json={"data_source_uuid": ds, "external_id": "t2", "lead_created_at": "2999-01-01"}
    )
    assert future.status_code == 422 and future.json()["errors"][0]["field"] == "lead_created_at"
    uuid = new_customer(client, ds, "t3", lead_created_at="2024-03-01", free_trial_started_at="2024-03-05")["uuid"]
    # The stored trial date counts: moving the lead date after it is refused, moving both is fine.
    late_lead = client.patch(f"/v1/customers/{uuid}", json={"lead_created_at": "2024-03-20"})
    assert late_lead.status_code == 422 and late_lead.json()["errors"][0]["field"] == "lead_created_at"
    both = client.patch(
        f"/v1/customers/{uuid}", json={"lead_created_at": "2024-03-20", "free_trial_started_at": "2024-03-21"}
    )
    assert both.status_code == 200 and both.json()["free_trial_started_at"] == "2024-03-21T00:00:00+00:00"
    assert client.patch(f"/v1/customers/{uuid}", json={"free_trial_started_at": "2999-01-01"}).status_code == 422
    assert client.get(f"/v1/customers/{uuid}").json()["lead_created_at"] == "2024-03-20T00:00:00+00:00"


def test_out_of_range_paging_parameters_are_422_not_500(db_engine):
    client = api_client(db_engine)
    new_customer(client, new_source(client), "a")
    huge_cursor = base64.urlsafe_b64encode(b"id:99999999999999999999999").decode().rstrip("=")
    for path, params in (
        ("/v1/customers", {"page": "99999999999999999999"}),
        ("/v1/customers", {"page": "\u00b2"}),
        ("/v1/customers", {"per_page": "\u00b2"}),
        ("/v1/contacts", {"per_page": "\u00b2"}),
        ("/v1/customers", {"cursor": huge_cursor}),
        ("/v1/contacts", {"cursor": huge_cursor}),
        ("/v1/metrics/funnel", {"start-date": "2024-01-01", "end-date": "2024-02-01", "within-days": "999999999"}),
    ):
        answer = client.get(path, params=params)
        assert answer.status_code == 422, (path, params, answer.status_code)


def test_api_and_cli_agree_on_empty_text(db_engine, db_url, monkeypatch):
    """``name``, ``company`` and ``email`` are "" when unknown in the API (the commercial product's
    convention: its client refuses null there) and in the CLI's --json alike; other text stays null."""
    from typer.testing import CliRunner

    from funnelsync.cli import app

    client = api_client(db_engine)
    ds = new_source(client)
    created = new_customer(client, ds, "E-1", name="Ada")
    api_view = client.get(f"/v1/customers/{created['uuid']}").json()
    monkeypatch.setenv("FUNNELSYNC_DATABASE_URL", db_url)
    runner = CliRunner()
    shown = runner.invoke(app, ["customers", "show", created["uuid"], "--json"])
    assert shown.exit_code == 0, shown.output
    cli_view = json.loads(shown.stdout)
    listed = json.loads(runner.invoke(app, ["customers", "list", "--json"]).stdout)[0]
    for view in (api_view, cli_view, listed):
        assert (view["name"], view["company"], view["email"]) == ("Ada", "", "")
    assert api_view["city"] is None and cli_view["city"] is None
