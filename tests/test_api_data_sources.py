"""HTTP API data sources: create, list, retrieve, delete with what they reported."""

from __future__ import annotations

from sqlalchemy import func, select

from storage.schema import customers
from tests.api_support import api_client, new_customer, new_source


def test_data_sources_crud_and_cascade(db_engine):
    client = api_client(db_engine)
    created = client.post("/v1/data_sources", json={"name": "In-house CRM"})
    assert created.status_code == 201
    body = created.json()
    assert body["uuid"].startswith("ds_") and body["name"] == "In-house CRM" and body["system"] == "Import API"
    assert body["created_at"].endswith("+00:00")
    keep = new_source(client, "website")
    listed = client.get("/v1/data_sources").json()
    assert list(listed) == ["data_sources"] and {d["name"] for d in listed["data_sources"]} == {
        "In-house CRM",
        "website",
    }
    assert [d["uuid"] for d in client.get("/v1/data_sources", params={"name": "website"}).json()["data_sources"]] == [
        keep
    ]
    assert client.get(f"/v1/data_sources/{body['uuid']}").json()["name"] == "In-house CRM"

    dup = client.post("/v1/data_sources", json={"name": "In-house CRM"})
    assert dup.status_code == 422 and dup.json()["errors"][0]["field"] == "name"
    assert client.post("/v1/data_sources", json={}).status_code == 422
    typo = client.post("/v1/data_sources", json={"name": "Other CRM", "sytem": "Custom"})
    assert typo.status_code == 422 and typo.json()["errors"][0]["field"] == "sytem"
    assert "Other CRM" not in {d["name"] for d in client.get("/v1/data_sources").json()["data_sources"]}
    assert client.post("/v1/data_sources", json={"name": "bad:name"}).status_code == 422
    assert client.get("/v1/data_sources/ds_nope").status_code == 404

    only_here = new_customer(client, body["uuid"], "x", email="x@example.com")
    kept = new_customer(client, keep, "y", email="y@example.com")
    assert client.delete(f"/v1/data_sources/{body['uuid']}").status_code == 204
    assert client.get(f"/v1/data_sources/{body['uuid']}").status_code == 404
    assert client.get(f"/v1/customers/{only_here['uuid']}").status_code == 404
    assert client.get(f"/v1/customers/{kept['uuid']}").status_code == 200
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 1
