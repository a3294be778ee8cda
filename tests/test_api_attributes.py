"""HTTP API tags and custom attributes: typed, validated, stored as manual edits."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from funnelsync.records import SourceCustomerRecord
from storage.schema import custom_attribute_definitions, data_sources, manual_edits
from storage.upsert import upsert_records
from tests.api_support import api_client, new_customer, new_source


def test_tags_add_remove_and_by_email(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    uuid = new_customer(client, ds, "a", email="tag@example.com", attributes={"tags": ["from-source"]})["uuid"]
    twin = new_customer(client, ds, "b", email="TAG@example.com")["uuid"]
    added = client.post(f"/v1/customers/{uuid}/attributes/tags", json={"tags": ["vip", "b2b"]})
    assert added.status_code == 200 and sorted(added.json()["tags"]) == ["b2b", "from-source", "vip"]
    removed = client.request("DELETE", f"/v1/customers/{uuid}/attributes/tags", json={"tags": ["from-source", "vip"]})
    assert removed.json() == {"tags": ["b2b"]}
    with db_engine.begin() as conn:
        edits = dict(conn.execute(select(manual_edits.c.field, manual_edits.c.value)).all())
        assert edits == {"tag.vip": False, "tag.b2b": True, "tag.from-source": False}
        # A re-sync that still reports the removed tag does not bring it back.
        source_id = conn.execute(select(data_sources.c.id)).scalar_one()
        upsert_records(
            conn,
            source_id,
            [SourceCustomerRecord(external_id="a", name="Renamed", email="tag@example.com", tags=["from-source"])],
        )
    assert client.get(f"/v1/customers/{uuid}/attributes").json()["tags"] == ["b2b"]

    by_email = client.post("/v1/customers/attributes/tags", json={"email": "tag@example.com", "tags": ["newsletter"]})
    assert by_email.status_code == 200
    assert sorted(c["uuid"] for c in by_email.json()["entries"]) == sorted([uuid, twin])
    assert all("newsletter" in c["attributes"]["tags"] for c in by_email.json()["entries"])

    for payload in ({}, {"tags": "vip"}, {"tags": []}, {"tags": [""]}, {"tags": [3]}):
        assert client.post(f"/v1/customers/{uuid}/attributes/tags", json=payload).status_code == 422
    assert client.post("/v1/customers/attributes/tags", json={"tags": ["x"]}).status_code == 422
    assert client.post("/v1/customers/cus_nope/attributes/tags", json={"tags": ["x"]}).status_code == 404


def test_custom_attributes_typed(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    uuid = new_customer(client, ds, "a", email="c@example.com")["uuid"]
    added = client.post(f"/v1/customers/{uuid}/attributes/custom", json={"custom": [
        {"type": "String", "key": "channel", "value": "Facebook", "source": "integration"},
        {"type": "Integer", "key": "seats", "value": 12},
        {"type": "Decimal", "key": "score", "value": "4.5"},
        {"type": "Timestamp", "key": "demo_at", "value": "2024-03-01T10:00:00+01:00"},
        {"type": "Boolean", "key": "paying", "value": False},
    ]})
    assert added.status_code == 200, added.text
    assert added.json() == {"custom": {
        "channel": "Facebook", "seats": 12, "score": 4.5, "demo_at": "2024-03-01T09:00:00+00:00", "paying": False}}
    with db_engine.connect() as conn:
        types = dict(
            conn.execute(select(custom_attribute_definitions.c.key, custom_attribute_definitions.c.type)).all()
        )
    assert types == {
        "channel": "String",
        "seats": "Integer",
        "score": "Decimal",
        "demo_at": "Timestamp",
        "paying": "Boolean",
    }

    updated = client.put(f"/v1/customers/{uuid}/attributes/custom", json={"custom": {"seats": 20, "paying": "true"}})
    assert (
        updated.status_code == 200
        and updated.json()["custom"]["seats"] == 20
        and updated.json()["custom"]["paying"] is True
    )

    wrong = [
        ({"custom": [{"type": "Integer", "key": "n", "value": "lots"}]}, "custom[0].value"),
        ({"custom": [{"type": "Integer", "key": "b", "value": True}]}, "custom[0].value"),
        ({"custom": [{"type": "Decimal", "key": "d", "value": "abc"}]}, "custom[0].value"),
        ({"custom": [{"type": "Decimal", "key": "d", "value": "NaN"}]}, "custom[0].value"),
        ({"custom": [{"type": "Timestamp", "key": "t", "value": "next week"}]}, "custom[0].value"),
        ({"custom": [{"type": "Boolean", "key": "f", "value": "maybe"}]}, "custom[0].value"),
        ({"custom": [{"type": "String", "key": "s", "value": 5}]}, "custom[0].value"),
        ({"custom": [{"type": "String", "key": "s", "value": "x" * 256}]}, "custom[0].value"),
        ({"custom": [{"type": "Money", "key": "m", "value": 5}]}, "custom[0].type"),
        ({"custom": [{"type": "String", "key": "bad key!", "value": "v"}]}, "custom[0].key"),
        ({"custom": [{"type": "String", "key": "seats", "value": "v"}]}, "custom[0].type"),
        ({"custom": [{"type": "String", "key": "nov"}]}, "custom[0]"),
        ({"custom": {"seats": "twenty"}}, "custom.seats"),
        ({}, "custom"),
    ]
    for payload, field in wrong:
        response = client.post(f"/v1/customers/{uuid}/attributes/custom", json=payload)
        assert response.status_code == 422, payload
        assert response.json()["errors"][0]["field"] == field, response.json()
    assert client.get(f"/v1/customers/{uuid}/attributes").json()["custom"]["seats"] == 20

    left = client.request("DELETE", f"/v1/customers/{uuid}/attributes/custom", json={"custom": ["channel", "score"]})
    assert left.status_code == 200 and set(left.json()["custom"]) == {"seats", "demo_at", "paying"}

    by_email = client.post("/v1/customers/attributes/custom", json={
        "email": "c@example.com", "custom": [{"type": "String", "key": "plan", "value": "pro"}]})
    assert by_email.json()["entries"][0]["attributes"]["custom"]["plan"] == "pro"


def test_custom_attribute_edit_survives_resync(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    uuid = new_customer(client, ds, "a", attributes={"custom": [{"type": "String", "key": "plan", "value": "free"}]})[
        "uuid"
    ]
    client.put(f"/v1/customers/{uuid}/attributes/custom", json={"custom": {"plan": "enterprise"}})
    with db_engine.begin() as conn:
        source_id = conn.execute(select(data_sources.c.id)).scalar_one()
        upsert_records(conn, source_id, [SourceCustomerRecord(
            external_id="a", custom={"plan": "starter"}, lead_created_at=datetime(2024, 1, 1, tzinfo=UTC))])
    assert client.get(f"/v1/customers/{uuid}").json()["attributes"]["custom"] == {"plan": "enterprise"}


def test_custom_number_out_of_range_is_refused_not_rounded(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    uuid = new_customer(client, ds, "n")["uuid"]
    path = f"/v1/customers/{uuid}/attributes/custom"
    largest = 2**63 - 1
    ok = client.post(path, json={"custom": [{"type": "Integer", "key": "seats", "value": largest}]})
    assert ok.status_code == 200 and ok.json()["custom"] == {"seats": largest}
    assert client.get(f"/v1/customers/{uuid}/attributes").json()["custom"] == {"seats": largest}
    # Past 64 bits the stored JSON turned it into 1e+23; a decimal string past float range into Infinity.
    for item in ({"type": "Integer", "key": "seats", "value": 10**23},
                 {"type": "Integer", "key": "seats", "value": str(-(2**63) - 1)},
                 {"type": "Decimal", "key": "ratio", "value": "1e400"}):
        refused = client.post(path, json={"custom": [item]})
        assert refused.status_code == 422, item
        assert refused.json()["errors"][0]["field"] == "custom[0].value"
    assert client.get(f"/v1/customers/{uuid}/attributes").json()["custom"] == {"seats": largest}


def test_one_key_with_two_types_in_one_request_is_refused(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    twice = [{"type": "Integer", "key": "plan", "value": 1}, {"type": "String", "key": "plan", "value": "pro"}]
    created = client.post("/v1/customers", json={
        "data_source_uuid": ds, "external_id": "t", "attributes": {"custom": twice}})
    assert created.status_code == 422 and created.json()["errors"][0]["field"] == "attributes.custom[1].type"
    uuid = new_customer(client, ds, "u")["uuid"]
    added = client.post(f"/v1/customers/{uuid}/attributes/custom", json={"custom": twice})
    assert added.status_code == 422 and added.json()["errors"][0]["field"] == "custom[1].type"
    with db_engine.connect() as conn:
        assert conn.execute(select(custom_attribute_definitions.c.key)).all() == []


def test_a_bare_json_value_types_a_new_key_as_every_door_does(db_engine):
    """The update form ``{key: value}`` of a new key takes the JSON value's type by the same inference as
    the other doors (funnelsync.attributes.type_of), and the key then holds to it, on create as on update."""
    from funnelsync.attributes import type_of

    client = api_client(db_engine)
    ds = new_source(client)
    values = {"n": 3, "r": 0.5, "v": True, "s": "x"}
    created = client.post("/v1/customers", json={
        "data_source_uuid": ds, "external_id": "a", "attributes": {"custom": values}})
    assert created.status_code in (200, 201), created.text
    uuid = new_customer(client, ds, "b")["uuid"]
    later = client.put(f"/v1/customers/{uuid}/attributes/custom", json={"custom": {"m": 2.0, "n": "4"}})
    assert later.status_code == 200 and later.json()["custom"] == {"m": 2.0, "n": 4}, later.text
    with db_engine.connect() as conn:
        defs = custom_attribute_definitions
        types = dict(conn.execute(select(defs.c.key, defs.c.type)).all())
    assert types == {"n": "Integer", "r": "Decimal", "v": "Boolean", "s": "String", "m": "Decimal"}
    assert types == {key: type_of(value) for key, value in {**values, "m": 2.0}.items()}
    refused = client.put(f"/v1/customers/{uuid}/attributes/custom", json={"custom": {"v": "perhaps"}})
    assert refused.status_code == 422 and "Boolean" in refused.json()["errors"][0]["reason"]
