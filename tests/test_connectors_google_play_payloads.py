"""The payloads URL keeps ``attributes: {tags: [...], custom: [{type, key, value}]}``.

Checked against the commercial product's documented request (dev.chartmogul.com, "Importing Google Play
purchase payloads"; ../shared/reference/payloads/google_play/chartmogul_payloads_url_request.json):
``"attributes": {"tags": ["OnePlus", "multi_device"]}``, and its custom attribute shape
``{"type": "String|Integer|Decimal|Timestamp|Boolean", "key": …, "value": …}``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from api.app import create_app
from connectors.google_play import GooglePlayPayloadError, payload_partial
from storage.api_keys import create_api_key
from storage.schema import customers, source_customers
from storage.sources import create_source

EXAMPLE = Path(__file__).parent / "fixtures/payloads/google_play/chartmogul_payloads_url_request.json"


def documented(**attributes: Any) -> dict[str, Any]:
    body = json.loads(EXAMPLE.read_text())
    body.pop("_endpoint", None)
    body["customer"]["attributes"] = {**body["customer"]["attributes"], **attributes}
    return body


def test_tags_and_typed_custom_attributes_are_kept() -> None:
    partial = payload_partial(documented(custom=[
        {"type": "String", "key": "channel", "value": "ads"},
        {"type": "Integer", "key": "seats", "value": 3},
        {"type": "Decimal", "key": "ltv", "value": 12.5},
        {"type": "Boolean", "key": "vip", "value": True},
        {"type": "Timestamp", "key": "onboarded", "value": "2019-01-02T10:00:00Z"},
    ]))
    assert partial.tags == ["OnePlus", "multi_device"]
    assert partial.custom == {"channel": "ads", "seats": 3, "ltv": 12.5, "vip": True,
                              "onboarded": "2019-01-02T10:00:00+00:00", "google_play_product_id": "monthly_basic"}


@pytest.mark.parametrize(("attributes", "message"), [
    ({"tags": "OnePlus"}, "tags must be a list"),
    ({"custom": {"seats": 3}}, "custom must be a list"),
    ({"custom": [{"type": "Integer", "key": "seats", "value": "three"}]}, r"custom\[0\]: value 'three'"),
    ({"custom": [{"type": "Colour", "key": "c", "value": "red"}]}, "not one of String"),
    ({"custom": [{"type": "String", "value": "x"}]}, "needs a key"),
])
def test_malformed_attributes_are_refused_with_where_and_why(attributes: dict[str, Any], message: str) -> None:
    with pytest.raises(GooglePlayPayloadError, match=message):
        payload_partial(documented(**attributes))


def test_receiver_stores_the_tags_and_custom_attributes(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        create_source(conn, "play", "google_play", {})
        key = create_api_key(conn, "play backend")
    client = TestClient(create_app(db_engine))
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    body = documented(custom=[{"type": "Integer", "key": "seats", "value": 3}])
    assert client.post("/webhooks/play", json=body, headers=auth).status_code == 200
    again = documented(tags=["multi_device", "annual"])
    assert client.post("/webhooks/play", json=again, headers=auth).status_code == 200
    with db_engine.connect() as conn:
        row = conn.execute(select(source_customers.c.tags, source_customers.c.custom)).one()
        shown = conn.execute(select(customers.c.tags, customers.c.custom)).one()
    assert row.tags == ["OnePlus", "multi_device", "annual"] and row.custom["seats"] == 3
    assert set(shown.tags) == {"OnePlus", "multi_device", "annual"} and shown.custom["seats"] == 3
    bad = documented(tags=[1])
    assert client.post("/webhooks/play", json=bad, headers=auth).status_code == 422
