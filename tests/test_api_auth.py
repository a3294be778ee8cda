"""HTTP Basic with an API key as user name: 401 without, 200 with; /health is open."""

import base64

from fastapi.testclient import TestClient

from api.app import create_app
from storage.api_keys import create_api_key


def _basic(user, password=""):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_api_key_auth(db_engine):
    with db_engine.begin() as conn:
        key = create_api_key(conn, "test")
    client = TestClient(create_app(db_engine))
    assert client.get("/health").status_code == 200
    assert client.get("/v1/ping").status_code == 401
    assert client.get("/v1/ping", headers=_basic("fsk_wrong")).status_code == 401
    assert client.get("/v1/ping", headers={"Authorization": "Bearer " + key}).status_code == 401
    ok = client.get("/v1/ping", headers=_basic(key))
    assert ok.status_code == 200 and ok.json() == {"data": "pong!"}


def test_framework_errors_answer_in_the_documented_shape(db_engine):
    # docs/api.md: every error is {"code", "message", "errors"}, not FastAPI's {"detail"}.
    with db_engine.begin() as conn:
        key = create_api_key(conn, "test")
    client = TestClient(create_app(db_engine))
    missing = client.get("/v1/customers")
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Basic")
    assert missing.json() == {"code": 401, "message": "missing HTTP Basic credentials (API key as user name)"}
    unknown = client.get("/v1/no-such-thing", headers=_basic(key))
    assert unknown.status_code == 404 and unknown.json()["code"] == 404
    invalid = client.get("/v1/metrics/funnel", params={"start-date": "soon"}, headers=_basic(key))
    assert invalid.status_code == 422 and invalid.json()["code"] == 422
    assert {e["field"] for e in invalid.json()["errors"]} == {"start-date", "end-date"}
    assert "start-date" in invalid.json()["message"]


def test_revoked_key_answers_401_and_no_cdn_docs(db_engine):
    from storage.api_keys import revoke_api_keys

    with db_engine.begin() as conn:
        key = create_api_key(conn, "ci")
        other = create_api_key(conn, "other")
    client = TestClient(create_app(db_engine))
    assert client.get("/v1/ping", headers=_basic(key)).status_code == 200
    with db_engine.begin() as conn:
        assert revoke_api_keys(conn, "short") == 0
        assert revoke_api_keys(conn, key[:12]) == 1
    assert client.get("/v1/ping", headers=_basic(key)).status_code == 401
    assert client.get("/v1/ping", headers=_basic(other)).status_code == 200
    with db_engine.begin() as conn:
        assert revoke_api_keys(conn, "other") == 1
    assert client.get("/v1/ping", headers=_basic(other)).status_code == 401
    # Swagger UI would load from a CDN: not served; the schema is.
    assert client.get("/docs").status_code == 404
    assert client.get("/openapi.json").status_code == 200
