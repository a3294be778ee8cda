"""Helpers for the HTTP API tests: an authenticated TestClient and a data source to write into."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from storage.api_keys import create_api_key


def api_client(engine: Engine) -> TestClient:
    """A TestClient of the app on ``engine``, sending a fresh API key as HTTP Basic user name."""
    with engine.begin() as conn:
        key = create_api_key(conn, "tests")
    client = TestClient(create_app(engine))
    client.auth = (key, "")
    return client


def new_source(client: TestClient, name: str = "crm") -> str:
    """Create an API data source and return its uuid."""
    response = client.post("/v1/data_sources", json={"name": name})
    assert response.status_code == 201, response.text
    return str(response.json()["uuid"])


def new_customer(client: TestClient, ds: str, external_id: str, **fields: Any) -> dict[str, Any]:
    """Create a customer and return its JSON."""
    response = client.post("/v1/customers", json={"data_source_uuid": ds, "external_id": external_id, **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())
