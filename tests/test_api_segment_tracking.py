"""Segment's HTTP tracking API at ``/segment/NAME/v1/…``, driven by the real SDKs in sync mode against the
app served by uvicorn: identify and group land as customers without lead dates; a wrong write key is 401
and stores nothing.

Checked against Segment's HTTP API source docs
(https://www.twilio.com/docs/segment/connections/sources/catalog/libraries/server/http-api: the write key as
the Basic user with an empty password, ``/v1/batch`` with ``{"batch": [...]}``, errors answered as JSON)
and the SDKs' own request code: ``segment/analytics/request.py`` of segment-analytics-python (Basic
``writeKey:``, ``writeKey`` also in the body, ``POST {host}/v1/batch``, gzip optional) and
``rudderstack/analytics/request.py`` and ``client.py`` of rudder-sdk-python (Basic auth, gzip on by default,
an identify's traits sent in ``context.traits``).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
import rudderstack.analytics.client as rudder_client
import segment.analytics as segment_analytics
from fastapi.testclient import TestClient
from rudderstack.analytics.request import APIError as RudderAPIError
from segment.analytics.request import APIError as SegmentAPIError
from sqlalchemy import Engine, select

from api.app import create_app
from storage.schema import customers, source_customers
from storage.sources import create_source
from tests.live_server import serve

WRITE_KEY = "wk_live_3f9a1c"


def add_segment(engine: Engine, name: str = "web", **settings: Any) -> None:
    with engine.begin() as conn:
        create_source(conn, name, "segment", settings or {"write_key": WRITE_KEY})


def stored(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(source_customers)).mappings()
        return {str(r["external_id"]): dict(r) for r in rows}


def customer_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(customers)).mappings()]


@pytest.fixture
def live(db_engine: Engine) -> Iterator[str]:
    add_segment(db_engine)
    with serve(db_engine) as url:
        yield url


def test_segment_sdk_identify_and_group_land_as_customers_without_lead_dates(db_engine: Engine, live: str) -> None:
    client = segment_analytics.Client(WRITE_KEY, host=f"{live}/segment/web", sync_mode=True, max_retries=0)
    client.identify("user-42", {"name": "Ann Lee", "email": "ann@example.com", "createdAt": "2025-01-02T10:00:00Z",
                                "address": {"country": "de", "city": "Berlin"}})
    client.group("user-42", "acct-7", {"name": "Acme GmbH", "website": "https://acme.example"})
    client.track("user-42", "Signed Up")  # acknowledged, stores nothing of its own
    rows = stored(db_engine)
    assert list(rows) == ["user-42"]
    row = rows["user-42"]
    assert (row["name"], row["email"], row["company"], row["country"], row["city"]) == (
        "Ann Lee", "ann@example.com", "Acme GmbH", "DE", "Berlin"
    )
    assert row["lead_created_at"] is None and row["free_trial_started_at"] is None
    [cust] = customer_rows(db_engine)
    assert cust["email"] == "ann@example.com" and cust["lead_created_at"] is None


def test_rudderstack_sdk_gzipped_batch_lands_identify_and_group(db_engine: Engine, live: str) -> None:
    client = rudder_client.Client(WRITE_KEY, host=f"{live}/segment/web", sync_mode=True, max_retries=0)
    client.identify("user-9", {"firstName": "Bo", "lastName": "Chen", "email": "bo@example.com"})
    client.group("user-9", "acct-9", {"name": "Chen & Co"})
    row = stored(db_engine)["user-9"]
    assert (row["name"], row["email"], row["company"]) == ("Bo Chen", "bo@example.com", "Chen & Co")
    assert row["lead_created_at"] is None


def test_wrong_write_key_is_401_and_stores_nothing(db_engine: Engine, live: str) -> None:
    wrong = segment_analytics.Client("not-the-key", host=f"{live}/segment/web", sync_mode=True, max_retries=0)
    with pytest.raises(SegmentAPIError) as seg_err:
        wrong.identify("user-1", {"email": "x@example.com"})
    assert seg_err.value.status == 401
    rudder = rudder_client.Client("not-the-key", host=f"{live}/segment/web", sync_mode=True, max_retries=0)
    with pytest.raises(RudderAPIError) as rud_err:
        rudder.identify("user-2", {"email": "y@example.com"})
    assert rud_err.value.status == 401
    assert stored(db_engine) == {}


def test_single_call_endpoints_and_source_without_write_key(db_engine: Engine) -> None:
    add_segment(db_engine)
    add_segment(db_engine, "hooks", shared_secret="only-a-secret")
    http = TestClient(create_app(db_engine))
    auth = (WRITE_KEY, "")
    ok = http.post("/segment/web/v1/identify", json={"userId": "u-1", "traits": {"email": "u1@example.com"}}, auth=auth)
    assert ok.status_code == 200, ok.text
    body = gzip.compress(json.dumps({"userId": "u-1", "groupId": "g-1", "traits": {"name": "Umbra"}}).encode())
    grouped = http.post("/segment/web/v1/group", content=body, auth=auth,
                        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert grouped.status_code == 200, grouped.text
    assert stored(db_engine)["u-1"]["company"] == "Umbra"
    # A call whose type contradicts its path, and a path that is no call: 422, nothing changes.
    assert http.post("/segment/web/v1/identify", json={"type": "group", "groupId": "g"}, auth=auth).status_code == 422
    assert http.post("/segment/web/v1/nonsense", json={"userId": "u-2"}, auth=auth).status_code == 422
    # The Webhooks-destination-only source has no write key: its tracking API refuses everything.
    refused = http.post("/segment/hooks/v1/identify", json={"userId": "u-3"}, auth=("only-a-secret", ""))
    assert refused.status_code == 401
    assert "only-a-secret" not in refused.text
    assert sorted(stored(db_engine)) == ["u-1"]


def test_write_key_in_the_body_without_an_authorization_header(db_engine: Engine) -> None:
    """Segment's "writeKey authentication": the key as the body's ``writeKey``, no header (the HTTP API
    docs' curl example for ``/v1/track``; segment-docs pull request 6147)."""
    add_segment(db_engine)
    http = TestClient(create_app(db_engine))
    call = {"userId": "u-7", "traits": {"email": "u7@example.com"}}
    assert http.post("/segment/web/v1/identify", json={**call, "writeKey": WRITE_KEY}).status_code == 200
    assert http.post("/segment/web/v1/identify", json={**call, "userId": "u-8", "writeKey": "nope"}).status_code == 401
    assert http.post("/segment/web/v1/identify", json={**call, "userId": "u-9"}).status_code == 401
    unreadable = http.post("/segment/web/v1/batch", content=b"{not json", headers={"Content-Type": "application/json"})
    assert unreadable.status_code == 401
    # A Basic header, when sent, is what counts: a right key in the body does not save a wrong header.
    wrong_header = http.post("/segment/web/v1/identify", json={**call, "userId": "u-10", "writeKey": WRITE_KEY},
                             auth=("wrong", ""))
    assert wrong_header.status_code == 401
    assert sorted(stored(db_engine)) == ["u-7"]
