"""The hot paths (``api.hot_paths``): ``GET /v1/customers/{uuid}``, ``/search?email=`` and
``POST /v1/customers`` answered ahead of the routes must say exactly what the routes say, and leave
everything they are not sure of to them.

A request the hot paths do not take (here: the same request with one more query parameter, which the
routes ignore) is answered by the route: comparing the two compares the bytes of both paths.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import HTTPException
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import require_api_key
from funnelsync.records import SourceCustomerRecord
from storage.api_keys import create_api_key, revoke_api_keys
from storage.merge import merge_customers
from storage.sources import create_source
from storage.upsert import upsert_records
from tests.api_support import api_client, new_customer, new_source


def _people(db_engine, client: TestClient) -> list[dict]:
    ds = new_source(client)
    made = [
        new_customer(client, ds, "ünï", name="Zoë Ångström 日本", email="Zoe@Example.com", country="FR",
                     lead_created_at="2024-02-29 23:59:59", free_trial_started_at="2024-03-01",
                     attributes={"tags": ["vip", "été"], "custom": [
                         {"type": "String", "key": "channel", "value": "naïve \"quoted\" \\ </script>"},
                         {"type": "Integer", "key": "seats", "value": 9007199254740993},
                         {"type": "Decimal", "key": "ratio", "value": 0.1},
                         {"type": "Boolean", "key": "paying", "value": False},
                         {"type": "Timestamp", "key": "seen", "value": "2024-05-01T10:00:00Z"}]}),
        new_customer(client, ds, "bare"),
        new_customer(client, ds, "twin", email="zoe@example.com", company="Twin & Co"),
    ]
    # A customer of two sources (joined by email at import), and one that a merge took away.
    with db_engine.begin() as conn:
        billing = create_source(conn, "billing", "stripe")
        upsert_records(conn, billing.id, [SourceCustomerRecord(
            external_id="cus_B", email="zoe@example.com", name="Other name",
            lead_created_at=datetime(2023, 1, 1, tzinfo=UTC))], link_new_by_email=True)
    return made


def test_the_hot_reads_send_the_routes_bytes(db_engine):
    client = api_client(db_engine)
    made = _people(db_engine, client)
    for customer in made:
        hot = client.get(f"/v1/customers/{customer['uuid']}")
        routed = client.get(f"/v1/customers/{customer['uuid']}", params={"routed": "1"})
        assert hot.status_code == routed.status_code == 200
        assert hot.content == routed.content
        assert hot.headers.items() == routed.headers.items()
    for email in ("zoe@example.com", " ZOE@example.com ", "bare@example.com", "not-an-email"):
        hot = client.get("/v1/customers/search", params={"email": email})
        routed = client.get("/v1/customers/search", params={"email": email, "per_page": "200"})
        assert hot.status_code == routed.status_code == 200
        assert hot.content == routed.content, email
    shared = client.get("/v1/customers/search", params={"email": "zoe@example.com"}).json()
    assert len(shared["entries"]) == 2 and shared["has_more"] is False
    assert any(len(entry["external_ids"]) == 2 for entry in shared["entries"])


def test_a_hot_create_answers_as_the_route_does(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    body = {"data_source_uuid": ds, "name": "Zoë", "email": "Zoe@Example.com", "lead_created_at": "2024-02-29",
            "attributes": {"tags": ["vip"], "custom": [{"type": "Decimal", "key": "ratio", "value": 0.1}]},
            "primary_contact": {"first_name": "Zoë", "email": "zoe@example.com"}}
    hot = client.post("/v1/customers", json={**body, "external_id": "hot"})
    routed = client.post("/v1/customers", params={"routed": "1"}, json={**body, "external_id": "routed"})
    assert hot.status_code == routed.status_code == 201
    assert hot.headers["content-type"] == routed.headers["content-type"]

    def unique(answer: dict) -> dict:
        own = {"id", "uuid", "external_id", "external_ids", "chartmogul-url", "created_at"}
        return {key: value for key, value in answer.items() if key not in own}

    assert unique(hot.json()) == unique(routed.json()) and hot.json()["external_ids"] == ["hot"]
    assert client.get(f"/v1/customers/{hot.json()['uuid']}").content == hot.content
    # Refusals: the same bytes, whichever answers.
    for wrong in ({**body, "external_id": "hot"}, {**body, "external_id": "x", "lead_created_at": "tomorrow"},
                  {**body, "external_id": "y", "data_source_uuid": "ds_nope"}, [], {"external_id": "z", "bad": 1}):
        refused_hot = client.post("/v1/customers", json=wrong)
        refused_routed = client.post("/v1/customers", params={"routed": "1"}, json=wrong)
        assert refused_hot.status_code == refused_routed.status_code == 422, wrong
        assert refused_hot.content == refused_routed.content
    not_json = client.post("/v1/customers", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 422 and not_json.json()["errors"][0]["field"] == "body"


def test_the_hot_reads_answer_without_the_routes(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    customer = new_customer(client, ds, "lead-1", email="lead@example.com")

    def closed() -> None:
        raise HTTPException(503, "the routes are closed")

    client.app.dependency_overrides[require_api_key] = closed  # type: ignore[attr-defined]
    assert client.get(f"/v1/customers/{customer['uuid']}").json()["uuid"] == customer["uuid"]
    assert client.get("/v1/customers/search", params={"email": "lead@example.com"}).json()["entries"][0]["uuid"] \
        == customer["uuid"]
    # What they leave to the routes meets the closed routes.
    for params in ({"email": "lead@example.com", "per_page": "5"}, {"email": "lead@example.com", "cursor": ""}):
        assert client.get("/v1/customers/search", params=params).status_code == 503
    assert client.get(f"/v1/customers/{customer['uuid']}", params={"x": "1"}).status_code == 503
    assert client.get("/v1/customers/cus_unknown").status_code == 503
    assert client.get(f"/v1/customers/{customer['uuid']}", auth=None).status_code == 503
    created = client.post("/v1/customers", json={"data_source_uuid": ds, "external_id": "lead-2"})
    assert created.status_code == 201 and created.json()["external_id"] == "lead-2"
    assert client.post("/v1/customers", params={"x": "1"}, json={"data_source_uuid": ds, "external_id": "lead-3"}
                       ).status_code == 503


def test_what_the_hot_reads_leave_to_the_routes_is_answered_as_before(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    kept = new_customer(client, ds, "kept", email="kept@example.com")
    gone = new_customer(client, ds, "gone", email="gone@example.com")
    with db_engine.begin() as conn:
        merge_customers(conn, gone["id"], kept["id"])
    merged = client.get(f"/v1/customers/{gone['uuid']}")
    assert merged.status_code == 404 and kept["uuid"] in merged.json()["message"]
    assert client.get("/v1/customers/cus_00000000-0000-7000-8000-000000000000").status_code == 404
    assert client.get(f"/v1/customers/{kept['uuid']}", auth=None).status_code == 401
    assert client.get(f"/v1/customers/{kept['uuid']}", auth=("fsk_wrong", "")).status_code == 401
    assert client.get("/v1/customers/search", params={"email": "  "}).json()["errors"][0]["field"] == "email"
    assert client.get("/v1/customers/search", params={"email": "a\x00@example.com"}).status_code == 422
    assert client.get(f"/v1/customers/{kept['uuid']}%00").status_code == 422


def test_a_revoked_key_is_refused_by_the_hot_paths_at_once_without_a_window(db_engine):
    with db_engine.begin() as conn:
        key = create_api_key(conn, "integration")
    client = TestClient(create_app(db_engine))
    client.auth = (key, "")
    customer = new_customer(client, new_source(client), "lead-1", email="lead@example.com")
    assert client.get(f"/v1/customers/{customer['uuid']}").status_code == 200
    assert client.get("/v1/customers/search", params={"email": "lead@example.com"}).status_code == 200
    with db_engine.begin() as conn:
        assert revoke_api_keys(conn, "integration") == 1
    assert client.get(f"/v1/customers/{customer['uuid']}").status_code == 401
    assert client.get("/v1/customers/search", params={"email": "lead@example.com"}).status_code == 401
    refused = client.post("/v1/customers", json={"data_source_uuid": customer["data_source_uuid"], "external_id": "x"})
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")


def test_a_signed_in_browser_reads_a_customer_through_the_routes(db_engine):
    with db_engine.begin() as conn:
        key = create_api_key(conn, "browser")
    script = TestClient(create_app(db_engine))
    script.auth = (key, "")
    customer = new_customer(script, new_source(script), "lead-1")
    browser = TestClient(create_app(db_engine))
    assert browser.post("/login", data={"key": key}, follow_redirects=False).status_code == 303
    shown = browser.get(f"/v1/customers/{customer['uuid']}")
    assert shown.status_code == 200 and shown.json() == script.get(f"/v1/customers/{customer['uuid']}").json()
    token = browser.cookies["fs_csrf"]
    ds = customer["data_source_uuid"]
    assert browser.post("/v1/customers", json={"data_source_uuid": ds, "external_id": "b"}).status_code == 403
    made = browser.post("/v1/customers", json={"data_source_uuid": ds, "external_id": "b"},
                        headers={"X-CSRF-Token": token})
    assert made.status_code == 201, made.text


def test_the_hot_reads_hold_none_of_the_apps_pooled_connections(db_engine):
    # Each app reads on SQLite with a connection of its own, not one kept from the engine's pool: apps made
    # one after another on one engine (a test suite, a hypothesis run) once exhausted the pool and hung.
    apps = [api_client(db_engine) for _ in range(3)]
    customer = new_customer(apps[0], new_source(apps[0]), "lead-1")
    for client in apps:
        assert client.get(f"/v1/customers/{customer['uuid']}").status_code == 200
    assert db_engine.pool.checkedout() == 0
