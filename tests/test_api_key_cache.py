"""``funnelsync serve``'s short-lived trust in a live API key (``create_app(key_cache_seconds=…)``).

A key found live is not checked again for the window; a revoked key stops working once it has passed;
a refused key is never remembered; what is remembered is the key's hash, never the key.
"""

import time

from fastapi.testclient import TestClient

from api.app import create_app
from storage.api_keys import create_api_key, key_digest, revoke_api_keys

WINDOW = 1.0


def test_a_revoked_key_stops_working_once_the_window_has_passed(db_engine):
    with db_engine.begin() as conn:
        key = create_api_key(conn, "script")
    app = create_app(db_engine, key_cache_seconds=WINDOW)
    client = TestClient(app)
    assert client.get("/v1/ping", auth=(key, "")).status_code == 200
    with db_engine.begin() as conn:
        assert revoke_api_keys(conn, "script") == 1
    # Within the window the key is trusted still (this is the documented cost of the cache) ...
    assert client.get("/v1/ping", auth=(key, "")).status_code == 200
    time.sleep(WINDOW + 0.2)
    # ... and after it, refused, and it stays refused.
    assert client.get("/v1/ping", auth=(key, "")).status_code == 401
    assert client.get("/v1/ping", auth=(key, "")).status_code == 401
    assert key not in str(app.state.live_keys.__dict__)


def test_a_refused_key_is_not_remembered_and_the_hash_is_the_cache_key(db_engine):
    app = create_app(db_engine, key_cache_seconds=60)
    client = TestClient(app)
    with db_engine.begin() as conn:
        key = create_api_key(conn, "late")
    wrong = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert client.get("/v1/ping", auth=(wrong, "")).status_code == 401
    assert not app.state.live_keys.fresh(key_digest(wrong))
    assert client.get("/v1/ping", auth=(key, "")).status_code == 200
    assert app.state.live_keys.fresh(key_digest(key))
    assert key not in str(app.state.live_keys.__dict__)


def test_without_a_window_every_request_is_checked(db_engine):
    with db_engine.begin() as conn:
        key = create_api_key(conn, "ci")
    client = TestClient(create_app(db_engine))
    assert client.get("/v1/ping", auth=(key, "")).status_code == 200
    with db_engine.begin() as conn:
        revoke_api_keys(conn, "ci")
    assert client.get("/v1/ping", auth=(key, "")).status_code == 401
