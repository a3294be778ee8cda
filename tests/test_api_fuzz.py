"""Whatever JSON a client sends, the API answers 2xx or a 4xx naming the field: never a 500, never half a write."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from storage.schema import customers, manual_edits
from tests.api_support import api_client, new_customer, new_source

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.sampled_from(["2024-01-01", "2024-02-30", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00",
                     "US", "New_Lead", "Active", "a@b.co", "", " ", "nul\x00inside"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=6)
FIELDS = ["name", "email", "company", "country", "state", "city", "zip", "lead_created_at", "free_trial_started_at",
          "owner", "website_url", "status", "attributes", "primary_contact"]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def send(client: Any, method: str, path: str, body: Any) -> Any:
    """Send any JSON, NaN and Infinity included (Python's json reads them, so a server must cope)."""
    return client.request(method, path, content=json.dumps(body, allow_nan=True),
                          headers={"Content-Type": "application/json"})


@SETTINGS
@given(payload=st.dictionaries(st.sampled_from(FIELDS), values, max_size=5))
def test_fuzzed_create_and_update(db_engine, payload):
    client = api_client(db_engine)
    ds = client.get("/v1/data_sources").json()["data_sources"]
    ds_uuid = ds[0]["uuid"] if ds else new_source(client)
    with db_engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(customers)).scalar_one()
    external_id = f"fuzz-{before}"
    created = send(
        client, "POST", "/v1/customers", {"data_source_uuid": ds_uuid, "external_id": external_id, **payload}
    )
    assert created.status_code in (201, 422), created.text
    with db_engine.connect() as conn:
        after = conn.execute(select(func.count()).select_from(customers)).scalar_one()
    assert after == before + (created.status_code == 201)
    if created.status_code == 422:
        assert created.json()["errors"] and all(e["field"] and e["reason"] for e in created.json()["errors"])

    target = new_customer(client, ds_uuid, f"target-{before}")["uuid"]
    with db_engine.connect() as conn:
        edits_before = conn.execute(select(func.count()).select_from(manual_edits)).scalar_one()
    updated = send(client, "PATCH", f"/v1/customers/{target}", payload)
    assert updated.status_code in (200, 422), updated.text
    if updated.status_code == 422:
        with db_engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(manual_edits)).scalar_one() == edits_before
    for path in ("attributes/custom", "attributes/tags"):
        response = send(client, "POST", f"/v1/customers/{target}/{path}", {"custom": payload, "tags": payload})
        assert response.status_code in (200, 422), response.text
    contact = send(client, "POST", "/v1/contacts", {
        "customer_uuid": target, "data_source_uuid": ds_uuid, "first_name": payload.get("name"),
        "email": payload.get("email"), "notes": payload.get("owner"), "custom": payload.get("attributes")})
    assert contact.status_code in (201, 422), contact.text


def test_values_no_database_can_store_are_refused(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    uuid = new_customer(client, ds, "a")["uuid"]
    cases = [
        (
            "POST",
            "/v1/contacts",
            {"customer_uuid": uuid, "data_source_uuid": ds, "first_name": "A", "custom": {"x": float("nan")}},
        ),
        (
            "POST",
            "/v1/customers",
            {
                "data_source_uuid": ds,
                "external_id": "b",
                "primary_contact": {"first_name": "x", "custom": [{"key": "k", "value": float("inf")}]},
            },
        ),
        ("POST", "/v1/customers", {"data_source_uuid": ds, "external_id": "c", "name": "x\x00y"}),
        ("PUT", f"/v1/customers/{uuid}/attributes/custom", {"custom": {"k\x00": "v"}}),
    ]
    for method, path, body in cases:
        response = send(client, method, path, body)
        assert response.status_code == 422, (path, response.text)
    for path, params in (("/v1/customers", {"q": "a\x00"}), ("/v1/customers/search", {"email": "a\x00@x.io"}),
                         ("/v1/contacts", {"email": "\x00"}), ("/v1/customers/cus_%00", {})):
        assert client.get(path, params=params).status_code == 422, path
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 1
    assert client.get(f"/v1/customers/{uuid}/contacts").json()["entries"] == []
