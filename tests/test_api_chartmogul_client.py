"""The official ``chartmogul`` Python client, pointed at a real uvicorn server of ours, does its calls.

Nothing is mocked between the client and us: the client's own HTTP code (requests) talks to uvicorn on
127.0.0.1 and parses our answers with its own marshmallow schemas.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import chartmogul
import pytest
import uvicorn
from sqlalchemy import Engine

from api.app import create_app
from storage.api_keys import create_api_key


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def cm_config(db_engine: Engine) -> Iterator[chartmogul.Config]:
    """A chartmogul Config whose uri points at our app served by uvicorn in a thread."""
    with db_engine.begin() as conn:
        key = create_api_key(conn, "chartmogul-client")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(db_engine), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    config = chartmogul.Config(key, request_timeout=10, max_retries=0)
    # Config.uri is a class attribute; the instance override points this config (only) at us.
    config.uri = f"http://127.0.0.1:{port}/v1"
    try:
        yield config
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_official_client_against_our_server(cm_config, monkeypatch):
    monkeypatch.delenv("FUNNELSYNC_TIMEZONE", raising=False)  # naive dates below are read as UTC
    config = cm_config
    assert chartmogul.Ping.ping(config).get().data == "pong!"
    account = chartmogul.Account.retrieve(config).get()
    assert account.time_zone == "UTC" and account.week_start_on == "monday"
    ds = chartmogul.DataSource.create(config, data={"name": "In-house CRM"}).get()
    assert ds.uuid.startswith("ds_") and ds.name == "In-house CRM"
    listed = chartmogul.DataSource.all(config).get()
    assert [d.uuid for d in listed.data_sources] == [ds.uuid]
    assert chartmogul.DataSource.retrieve(config, uuid=ds.uuid).get().name == "In-house CRM"

    lead = chartmogul.Customer.create(config, data={
        "data_source_uuid": ds.uuid, "external_id": "lead-001", "name": "Adam Smith", "email": "adam@smith.com",
        "country": "US", "city": "New York", "lead_created_at": "2022-10-14 00:00:00",
        "free_trial_started_at": "2022-10-20 00:00:00",
        "attributes": {"tags": ["important"], "custom": [{"type": "String", "key": "channel", "value": "Facebook"}]},
    }).get()
    assert lead.uuid.startswith("cus_") and lead.external_id == "lead-001"
    assert lead.lead_created_at == datetime(2022, 10, 14, tzinfo=UTC)
    assert lead.free_trial_started_at == datetime(2022, 10, 20, tzinfo=UTC)
    assert lead.status == "New_Lead" and lead.customer_since is None
    assert lead.attributes.tags == ["important"] and lead.attributes.custom == {"channel": "Facebook"}
    assert lead.address.city == "New York" and lead.billing_system_type == "Custom"

    others = [
        chartmogul.Customer.create(config, data={
            "data_source_uuid": ds.uuid, "external_id": f"lead-{i:03d}", "name": f"Lead {i}",
            "email": f"lead{i}@example.com", "lead_created_at": "2023-01-01T00:00:00Z"}).get()
        for i in range(2, 6)
    ]

    # Cursor pagination over three pages, exactly as a client script would loop.
    seen, pages = [], 0
    page = chartmogul.Customer.all(config, per_page=2).get()
    while True:
        pages += 1
        seen += [c.uuid for c in page.entries]
        if not page.has_more:
            break
        page = chartmogul.Customer.all(config, per_page=2, cursor=page.cursor).get()
    assert seen == [lead.uuid] + [c.uuid for c in others] and pages == 3
    filtered = chartmogul.Customer.all(config, data_source_uuid=ds.uuid, external_id="lead-003").get()
    assert [c.uuid for c in filtered.entries] == [others[1].uuid]

    got = chartmogul.Customer.retrieve(config, uuid=lead.uuid).get()
    assert got.name == "Adam Smith" and got.email == "adam@smith.com"

    modified = chartmogul.Customer.modify(config, uuid=lead.uuid, data={
        "lead_created_at": "2022-10-01T00:00:00Z", "free_trial_started_at": "2022-10-05T00:00:00Z",
        "status": "Working_Lead", "company": "Smith & Co", "website_url": "https://smith.com"}).get()
    assert modified.lead_created_at == datetime(2022, 10, 1, tzinfo=UTC)
    assert modified.status == "Working_Lead" and modified.company == "Smith & Co"
    assert modified.website_url == "https://smith.com"

    found = chartmogul.Customer.search(config, email="adam@smith.com").get()
    assert [c.uuid for c in found.entries] == [lead.uuid]

    contact = chartmogul.Contact.create(config, data={
        "customer_uuid": lead.uuid, "data_source_uuid": ds.uuid, "first_name": "Adam", "last_name": "Smith",
        "email": "adam@smith.com", "title": "CEO", "custom": [{"key": "Nickname", "value": "Ad"}]}).get()
    assert (
        contact.uuid.startswith("con_") and contact.customer_uuid == lead.uuid and contact.custom == {"Nickname": "Ad"}
    )
    chartmogul.Customer.createContact(
        config, uuid=lead.uuid, data={"data_source_uuid": ds.uuid, "first_name": "Eve"}
    ).get()
    contacts = chartmogul.Contact.all(config, email="adam@smith.com").get()
    assert [c.uuid for c in contacts.entries] == [contact.uuid] and contacts.has_more is False
    assert len(chartmogul.Customer.contacts(config, uuid=lead.uuid).get().entries) == 2

    tags = chartmogul.Tags.add(config, uuid=lead.uuid, data={"tags": ["vip", "b2b"]}).get()
    assert set(tags.tags) == {"important", "vip", "b2b"}
    tags = chartmogul.Tags.remove(config, uuid=lead.uuid, data={"tags": ["important"]}).get()
    assert set(tags.tags) == {"vip", "b2b"}
    by_email = chartmogul.Tags.add_by_email(config, data={"email": "adam@smith.com", "tags": ["newsletter"]}).get()
    assert [c.uuid for c in by_email.entries] == [lead.uuid]

    custom = chartmogul.CustomAttributes.add(config, uuid=lead.uuid, data={"custom": [
        {"type": "Integer", "key": "seats", "value": 12}, {"type": "Boolean", "key": "paying", "value": False}]}).get()
    assert custom.custom == {"channel": "Facebook", "seats": 12, "paying": False}
    custom = chartmogul.CustomAttributes.update(config, uuid=lead.uuid, data={"custom": {"seats": 20}}).get()
    assert custom.custom["seats"] == 20
    with pytest.raises(chartmogul.APIError) as refused:
        chartmogul.CustomAttributes.update(config, uuid=lead.uuid, data={"custom": {"seats": "twenty"}}).get()
    assert b"Integer" in refused.value.args[0]
    attributes = chartmogul.Attributes.retrieve(config, uuid=lead.uuid).get()
    assert attributes.custom["seats"] == 20 and "newsletter" in attributes.tags

    # Merge the lead into a customer of another source, then undo it.
    billing = chartmogul.DataSource.create(config, data={"name": "Billing import"}).get()
    payer = chartmogul.Customer.create(config, data={
        "data_source_uuid": billing.uuid, "external_id": "acct-9", "name": "Smith & Co billing"}).get()
    assert chartmogul.Customer.merge(config, data={
        "from": {"customer_uuid": lead.uuid}, "into": {"customer_uuid": payer.uuid}}).get() is None
    with pytest.raises(chartmogul.APIError):
        chartmogul.Customer.retrieve(config, uuid=lead.uuid).get()
    survivor = chartmogul.Customer.retrieve(config, uuid=payer.uuid).get()
    assert survivor.external_ids == ["acct-9", "lead-001"] and survivor.email == "adam@smith.com"
    assert survivor.lead_created_at == datetime(2022, 10, 1, tzinfo=UTC)
    assert chartmogul.Customer.unmerge(config, data={
        "customer_uuid": payer.uuid, "data_source_uuid": ds.uuid, "external_id": "lead-001",
        "move_to_new_customer": []}).get() is None
    assert chartmogul.Customer.retrieve(config, uuid=lead.uuid).get().external_ids == ["lead-001"]

    # The rest of the client's customer, contact and attribute calls.
    put = chartmogul.Customer.update(config, uuid=lead.uuid, data={"city": "Boston", "zip": "02101"}).get()
    assert put.city == "Boston" and put.address.address_zip == "02101"
    eve = chartmogul.Contact.all(config, customer_external_id="lead-001").get().entries[-1]
    assert chartmogul.Contact.retrieve(config, uuid=eve.uuid).get().first_name == "Eve"
    eve = chartmogul.Contact.modify(config, uuid=eve.uuid, data={"title": "CTO", "phone": "+1 555 0100"}).get()
    assert eve.title == "CTO"
    merged = chartmogul.Contact.merge(config, into_uuid=contact.uuid, from_uuid=eve.uuid).get()
    assert merged.uuid == contact.uuid and merged.phone == "+1 555 0100" and merged.title == "CEO"
    other = chartmogul.Contact.create(config, data={
        "customer_uuid": lead.uuid, "data_source_uuid": ds.uuid, "email": "temp@smith.com"}).get()
    assert chartmogul.Contact.destroy(config, uuid=other.uuid).get() is None
    left = chartmogul.CustomAttributes.remove(config, uuid=lead.uuid, data={"custom": ["paying"]}).get()
    assert "paying" not in left.custom and left.custom["seats"] == 20
    assert chartmogul.Customer.destroy(config, uuid=others[0].uuid).get() is None
    with pytest.raises(chartmogul.APIError):
        chartmogul.Customer.retrieve(config, uuid=others[0].uuid).get()
    assert chartmogul.DataSource.destroy(config, uuid=billing.uuid).get() is None
    with pytest.raises(chartmogul.APIError):  # its only source is gone, so is the customer
        chartmogul.Customer.retrieve(config, uuid=payer.uuid).get()

    with pytest.raises(chartmogul.APIError) as unauthorised:
        chartmogul.Customer.all(_other_key(config)).get()
    assert unauthorised.value.__cause__.response.status_code == 401


def _other_key(config: chartmogul.Config) -> chartmogul.Config:
    wrong = chartmogul.Config("fsk_not_a_key", max_retries=0)
    wrong.uri = config.uri
    return wrong
