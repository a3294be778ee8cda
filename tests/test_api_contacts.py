"""HTTP API contacts: create, list with filters and cursor, retrieve, update, delete, merge."""

from __future__ import annotations

import json

from sqlalchemy import select

from funnelsync.records import ContactRecord, SourceCustomerRecord
from storage.schema import contacts, data_sources
from storage.upsert import upsert_records
from tests.api_support import api_client, new_customer, new_source


def test_contacts_lifecycle(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    acme = new_customer(client, ds, "acme", name="Acme")
    beta = new_customer(client, ds, "beta", name="Beta")
    made = client.post("/v1/contacts", json={
        "customer_uuid": acme["uuid"], "data_source_uuid": ds, "first_name": "Ann", "last_name": "Lee",
        "email": "ann@acme.io", "title": "CTO", "phone": "+1 555", "linked_in": "https://linkedin.com/in/ann",
        "twitter": "@ann", "notes": "met at conf", "position": 1, "external_id": "crm-ann",
        "custom": [{"key": "Team", "value": "Platform"}],
    })
    assert made.status_code == 201, made.text
    ann = made.json()
    assert ann["uuid"].startswith("con_") and ann["customer_uuid"] == acme["uuid"]
    assert ann["customer_external_id"] == "acme" and ann["data_source_uuid"] == ds
    assert ann["custom"] == {"Team": "Platform"} and ann["external_id"] == "crm-ann"
    bob = client.post(
        f"/v1/customers/{acme['uuid']}/contacts", json={"data_source_uuid": ds, "first_name": "Bob"}
    ).json()
    assert bob["position"] == 2
    cid = client.post(
        "/v1/contacts", json={"customer_uuid": beta["uuid"], "data_source_uuid": ds, "email": "c@beta.io"}
    ).json()
    with db_engine.connect() as conn:
        assert conn.execute(select(contacts.c.source_customer_id)).scalars().all() == [None, None, None]

    assert [c["uuid"] for c in client.get("/v1/contacts", params={"email": "ANN@acme.io"}).json()["entries"]] == [
        ann["uuid"]
    ]
    by_customer = client.get("/v1/contacts", params={"customer_external_id": "acme"}).json()["entries"]
    assert [c["uuid"] for c in by_customer] == [ann["uuid"], bob["uuid"]]
    first = client.get("/v1/contacts", params={"per_page": 2}).json()
    assert first["has_more"] is True and len(first["entries"]) == 2
    rest = client.get("/v1/contacts", params={"per_page": 2, "cursor": first["cursor"]}).json()
    assert [c["uuid"] for c in rest["entries"]] == [cid["uuid"]] and rest["has_more"] is False
    assert len(client.get(f"/v1/customers/{acme['uuid']}/contacts").json()["entries"]) == 2

    assert client.get(f"/v1/contacts/{ann['uuid']}").json()["title"] == "CTO"
    patched = client.patch(
        f"/v1/contacts/{ann['uuid']}", json={"title": "CEO", "custom": [{"key": "Level", "value": 3}]}
    )
    assert patched.status_code == 200 and patched.json()["title"] == "CEO"
    assert patched.json()["custom"] == {"Team": "Platform", "Level": 3}
    assert client.patch(f"/v1/contacts/{ann['uuid']}", json={"position": "first"}).status_code == 422

    merged = client.post(f"/v1/contacts/{bob['uuid']}/merge/{ann['uuid']}")
    assert merged.status_code == 200
    assert merged.json()["first_name"] == "Bob" and merged.json()["email"] == "ann@acme.io"
    assert merged.json()["custom"] == {"Team": "Platform", "Level": 3}
    assert client.get(f"/v1/contacts/{ann['uuid']}").status_code == 404
    assert client.delete(f"/v1/contacts/{bob['uuid']}").status_code == 204
    assert client.get(f"/v1/contacts/{bob['uuid']}").status_code == 404


def test_contact_errors(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    other = new_source(client, "other")
    acme = new_customer(client, ds, "acme")
    missing = client.post("/v1/contacts", json={"first_name": "X"})
    assert missing.status_code == 422
    assert {e["field"] for e in missing.json()["errors"]} == {"customer_uuid", "data_source_uuid"}
    unknown = client.post("/v1/contacts", json={"customer_uuid": "cus_nope", "data_source_uuid": ds, "email": "a@b.c"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "customer_uuid"
    unlinked = client.post(
        "/v1/contacts", json={"customer_uuid": acme["uuid"], "data_source_uuid": other, "email": "a@b.c"}
    )
    assert unlinked.status_code == 422 and unlinked.json()["errors"][0]["field"] == "data_source_uuid"
    empty = client.post("/v1/contacts", json={"customer_uuid": acme["uuid"], "data_source_uuid": ds})
    assert empty.status_code == 422
    assert (
        client.post("/v1/customers/cus_nope/contacts", json={"data_source_uuid": ds, "email": "a@b.c"}).status_code
        == 404
    )
    assert client.get("/v1/contacts", params={"cursor": "bad"}).status_code == 422
    # A position past the integer column (was a 500) and a number past float range (was stored as null).
    base = {"customer_uuid": acme["uuid"], "data_source_uuid": ds, "first_name": "Big"}
    huge = client.post("/v1/contacts", json={**base, "position": 10**20})
    assert huge.status_code == 422 and huge.json()["errors"][0]["field"] == "position"
    raw = json.dumps({**base, "first_name": "Inf", "custom": {"k": 0}}).replace('"k": 0', '"k": 1e999')
    overflow = client.post("/v1/contacts", content=raw, headers={"Content-Type": "application/json"})
    assert overflow.status_code == 422 and "1e999" in overflow.json()["message"]
    assert client.get("/v1/contacts").json()["entries"] == []


def test_hand_made_contacts_survive_a_resync(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    acme = new_customer(client, ds, "acme")
    hand = client.post(
        "/v1/contacts", json={"customer_uuid": acme["uuid"], "data_source_uuid": ds, "email": "h@a.io"}
    ).json()
    with db_engine.begin() as conn:
        source_id = conn.execute(select(data_sources.c.id).where(data_sources.c.uuid == ds)).scalar_one()
        upsert_records(
            conn, source_id, [SourceCustomerRecord(external_id="acme", contacts=[ContactRecord(email="s@a.io")])]
        )
        upsert_records(conn, source_id, [SourceCustomerRecord(external_id="acme", contacts=[])])
    emails = [c["email"] for c in client.get(f"/v1/customers/{acme['uuid']}/contacts").json()["entries"]]
    assert emails == ["h@a.io"] and hand["uuid"]
