"""API keys and secret settings: compared in constant time, stored hashed, refused at once when revoked, and
never in any output: a whole session (sources add, sync, import, the served API) is run with every logger at
DEBUG and all of its stdout and stderr is searched for the key and the secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from api.app import create_app
from fakes.server import serve
from fakes.stripe import StripeFake
from storage import api_keys as api_keys_module
from storage.api_keys import create_api_key, revoke_api_keys, verify_api_key
from storage.schema import api_keys

ROOT = Path(__file__).resolve().parent.parent
# The CLI with every logger (httpx, httpcore, uvicorn, sqlalchemy, ours) at DEBUG, on stderr.
DEBUG_CLI = (
    "import logging, sys; logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, force=True); "
    "from funnelsync.cli import main; sys.argv[0] = 'funnelsync'; main()"
)


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def test_keys_are_stored_as_hashes_only(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        key = create_api_key(conn, "ci")
        row = conn.execute(select(api_keys)).one()._mapping
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert row["prefix"] == key[:12] and all(key not in str(value) for value in row.values())


def test_key_check_compares_hashes_in_constant_time(db_engine: Engine, monkeypatch) -> None:
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a, b):  # the real comparison, recorded
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api_keys_module.hmac, "compare_digest", spy)
    with db_engine.begin() as conn:
        key = create_api_key(conn, "ci")
        near = key[:-1] + ("A" if key[-1] != "A" else "B")
        assert verify_api_key(conn, key) is True
        assert verify_api_key(conn, near) is False  # same prefix, one character off
        assert verify_api_key(conn, key[:12]) is False
        assert verify_api_key(conn, key + "x") is False
    stored = hashlib.sha256(key.encode()).hexdigest()
    assert calls[0] == (stored, stored)
    assert calls[1] == (stored, hashlib.sha256(near.encode()).hexdigest())


def test_revoked_key_is_refused_by_a_running_app_at_once(db_engine: Engine) -> None:
    """Revoked from another connection (as ``funnelsync api-keys revoke`` does) while the app runs."""
    with db_engine.begin() as conn:
        key = create_api_key(conn, "ci")
    client = TestClient(create_app(db_engine))
    for _ in range(3):
        assert client.get("/v1/ping", headers=_basic(key)).status_code == 200
    with db_engine.begin() as conn:
        assert revoke_api_keys(conn, "ci") == 1
    refused = client.get("/v1/ping", headers=_basic(key))
    assert refused.status_code == 401 and refused.json()["message"] == "invalid API key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_a_whole_session_never_prints_the_api_key_or_a_secret_setting(
    db_engine: Engine, db_url: str, tmp_path: Path
) -> None:
    secret = "sk_test_NEVER_PRINTED_31337"
    wrong_secret = "sk_test_WRONG_NEVER_PRINTED_7"
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "FUNNELSYNC_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    outputs: list[str] = []

    def cli(*args: str, expect: int = 0) -> None:
        done = subprocess.run([sys.executable, "-c", DEBUG_CLI, *args], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=120)
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == expect, done.stdout + done.stderr

    fake = StripeFake(n=12, page_size=5)
    fake.api_key = secret
    with serve(fake) as base_url:
        cli("sources", "add", "billing", "--kind", "stripe", "--set", f"api_key={secret}",
            "--set", f"base_url={base_url}", "--set", "page_size=5")
        cli("sync", "billing")
        cli("sources", "add", "wrong", "--kind", "stripe", "--set", f"api_key={wrong_secret}",
            "--set", f"base_url={base_url}")
        cli("sync", "wrong", expect=1)  # the vendor's 401: reported, the key it refused not shown
    leads = tmp_path / "leads.csv"
    leads.write_text("Customer ID,E-mail\nL-1,ada@example.com\nL-2,not-an-email\n")
    cli("import", "csv", str(leads), "--source", "leads", "--errors", str(tmp_path / "errors.csv"), expect=3)

    with db_engine.begin() as conn:
        key = create_api_key(conn, "session")
        revoked = create_api_key(conn, "revoked")
        revoke_api_keys(conn, "revoked")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", DEBUG_CLI, "serve", "--port", str(port)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/v1/customers", headers=_basic(key)).status_code == 200
            assert http.post("/v1/data_sources", json={"name": "crm"}, headers=_basic(key)).status_code == 201
            assert http.post("/v1/customers", json={"external_id": 1}, headers=_basic(key)).status_code == 422
            assert http.get("/v1/ping", headers=_basic(revoked)).status_code == 401
            assert http.get("/v1/ping", headers=_basic(key[:-2] + "zz")).status_code == 401
            assert http.get(f"/v1/nothing/{key[:12]}", headers=_basic(key)).status_code == 404
    finally:
        server.terminate()
        server_output, _ = server.communicate(timeout=20)
    outputs.append(server_output)

    everything = "\n".join(outputs)
    assert "GET /v1/customers" in server_output and "DEBUG" in everything  # the capture saw the run
    for needle in (secret, wrong_secret, key, revoked, key[:-2] + "zz", key[12:], revoked[12:]):
        assert needle not in everything, f"{needle[:6]}… appears in the output"
