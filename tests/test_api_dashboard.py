"""The dashboard: served by the app behind the API key, with its assets, and no external URL anywhere."""

from __future__ import annotations

import re
from pathlib import Path

from tests.api_support import api_client, new_customer, new_source

STATIC = Path(__file__).resolve().parent.parent / "api" / "static"
# Anything a browser would fetch from elsewhere: absolute or protocol-relative URLs.
EXTERNAL = re.compile(r"(?:https?:)?//[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+", re.IGNORECASE)


def test_dashboard_page_and_assets(db_engine):
    client = api_client(db_engine)
    page = client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    for chart in ("Leads", "Free Trials", "Trial-to-Paid Conversion Rate", "Average Sales Cycle Length"):
        assert chart in html
    assert 'id="cohorts"' in html and 'id="customers"' in html and 'id="q"' in html
    referenced = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(referenced) == ["/dashboard/static/automations.css", "/dashboard/static/automations.js",
                                  "/dashboard/static/dashboard.css", "/dashboard/static/dashboard.js"]
    bodies = [html]
    assets = {}
    for path in referenced:
        asset = client.get(path)
        assert asset.status_code == 200, path
        bodies.append(asset.text)
        assets[path.rsplit("/", 1)[1]] = asset
    for name in ("dashboard.js", "automations.js"):
        assert assets[name].headers["content-type"].startswith("text/javascript")
    for endpoint in ("/v1/metrics/funnel", "/v1/metrics/trial-cohorts", "/v1/customers"):
        assert endpoint in assets["dashboard.js"].text
    for endpoint in ("/v1/automations", "/v1/automation_activity", "/v1/automation_deliveries"):
        assert endpoint in assets["automations.js"].text
    for text in bodies + [p.read_text() for p in STATIC.iterdir()]:
        assert EXTERNAL.search(text) is None, EXTERNAL.search(text)
    assert client.get("/dashboard/static/app.py").status_code == 404
    assert client.get("/dashboard/static/..%2Fapp.py").status_code == 404
    assert client.get("/", follow_redirects=False).headers["location"] == "/dashboard"
    # Link checkers and uptime probes ask with HEAD: the same status and headers, no body.
    head = client.head("/dashboard")
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/html") and head.content == b""
    assert client.head("/dashboard/static/dashboard.js").status_code == 200
    assert client.head("/health", auth=None).status_code == 200


def test_dashboard_sends_a_browser_without_a_key_to_the_sign_in_page(db_engine):
    client = api_client(db_engine)
    page = client.get("/dashboard", auth=None, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login"
    login = client.get("/login", auth=None)
    assert login.status_code == 200 and 'name="key"' in login.text and 'type="password"' in login.text
    # The data stays behind the key: the API answers 401 with the Basic challenge scripts expect.
    data = client.get("/v1/customers", auth=None)
    assert data.status_code == 401 and data.headers["www-authenticate"].startswith("Basic")
    assert client.get("/dashboard/data-range", auth=None).status_code == 401


def test_sign_in_opens_a_strict_httponly_session_and_writes_need_the_csrf_token(db_engine):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from storage.api_keys import create_api_key, revoke_api_keys

    with db_engine.begin() as conn:
        key = create_api_key(conn, "browser")
    browser = TestClient(create_app(db_engine))
    # A sign-in posted from another site's page (login CSRF: the victim signed in as the attacker) is refused.
    forged = browser.post("/login", data={"key": key}, headers={"Origin": "http://evil.example"},
                          follow_redirects=False)
    assert forged.status_code == 403 and "fs_session" not in forged.headers.get("set-cookie", "")
    wrong = browser.post("/login", data={"key": "fsk_not_a_key"}, follow_redirects=False)
    assert wrong.status_code == 401 and "not valid" in wrong.text and "fs_session" not in wrong.headers.get(
        "set-cookie", "")
    signed = browser.post("/login", data={"key": key}, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/dashboard"
    cookies = signed.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("fs_session="))
    csrf = next(c for c in cookies if c.startswith("fs_csrf="))
    assert "httponly" in session.lower() and "samesite=strict" in session.lower()
    assert "httponly" not in csrf.lower() and "samesite=strict" in csrf.lower()
    assert key not in session and key not in csrf  # the browser never holds the key
    token = csrf.split(";")[0].split("=", 1)[1]

    assert browser.get("/dashboard").status_code == 200
    assert browser.get("/v1/customers").status_code == 200
    created = browser.post("/v1/data_sources", json={"name": "from the browser"})
    assert created.status_code == 403 and "X-CSRF-Token" in created.text
    assert browser.post("/v1/data_sources", json={"name": "x"}, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    ok = browser.post("/v1/data_sources", json={"name": "from the browser"}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 201, ok.text
    # Basic keeps working for scripts, with no CSRF token.
    script = TestClient(create_app(db_engine))
    assert script.post("/v1/data_sources", json={"name": "script"}, auth=(key, "")).status_code == 201

    with db_engine.begin() as conn:
        revoke_api_keys(conn, "browser")  # a revoked key ends its sessions at once
    assert browser.get("/v1/customers").status_code == 401
    assert browser.get("/dashboard", follow_redirects=False).headers["location"] == "/login"
    out = browser.post("/logout", follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"


def test_customer_text_search_used_by_the_dashboard(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    acme = new_customer(client, ds, "1", name="Acme Rockets", email="ops@acme.io")
    new_customer(client, ds, "2", name="Beta", company="Beta 100% Ltd", email="b@beta.io")
    new_customer(client, ds, "3", name="Gamma", email="g_x@gamma.io")
    assert [c["uuid"] for c in client.get("/v1/customers", params={"q": "ROCK"}).json()["entries"]] == [acme["uuid"]]
    assert [c["name"] for c in client.get("/v1/customers", params={"q": "100%"}).json()["entries"]] == ["Beta"]
    assert [c["name"] for c in client.get("/v1/customers", params={"q": "g_x"}).json()["entries"]] == ["Gamma"]
    assert client.get("/v1/customers", params={"q": "_"}).json()["entries"][0]["name"] == "Gamma"
    assert client.get("/v1/customers", params={"q": "zzz"}).json()["entries"] == []


def test_customer_history_holds_each_record_s_reported_fields_raw_values_and_subscriptions(db_engine):
    """The customer page's source records: what each source reported, its raw payload as stored, its
    subscriptions; a record written through the API keeps the request's body as its raw values."""
    from datetime import UTC, datetime

    from funnelsync.records import SourceCustomerRecord, SubscriptionFact
    from storage.sources import create_source
    from storage.upsert import upsert_records

    client = api_client(db_engine)
    ds = new_source(client)
    by_api = new_customer(client, ds, "A-1", name="Ada", email="ada@example.com")
    trial = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    with db_engine.begin() as conn:
        billing = create_source(conn, "Billing", "custom", {})
        upsert_records(conn, billing.id, [SourceCustomerRecord(
            "cus_1", email="ada@example.com", city="London", free_trial_started_at=trial,
            raw={"id": "cus_1", "metadata": {"plan": "<b>pro</b>"}},
            subscriptions=[SubscriptionFact("sub_1", "trialing", trial_started_at=trial)])], link_new_by_email=True)
    history = client.get(f"/dashboard/customers/{by_api['uuid']}/history")
    assert history.status_code == 200, history.text
    records = history.json()["records"]
    assert [(r["data_source"], r["external_id"]) for r in records] == [("crm", "A-1"), ("Billing", "cus_1")]
    assert records[0]["raw"] == {"data_source_uuid": ds, "external_id": "A-1", "name": "Ada",
                                 "email": "ada@example.com"}
    assert records[0]["subscriptions"] == []
    assert records[0]["fields"]["name"] == "Ada" and records[0]["fields"]["city"] is None
    assert records[1]["raw"] == {"id": "cus_1", "metadata": {"plan": "<b>pro</b>"}}
    assert records[1]["fields"]["city"] == "London" and records[1]["fields"]["name"] is None
    assert records[1]["subscriptions"] == [{
        "external_id": "sub_1", "state": "trialing", "trial_started_at": "2026-03-01T09:30:00+00:00",
        "trial_ended_at": None, "first_paid_at": None, "cancelled_at": None}]
    assert client.get("/dashboard/customers/cus_missing/history").status_code == 404


def test_customer_history_names_the_record_that_undoes_each_merge_still_in_place(db_engine):
    """Each merge into the customer not undone yet names one record it brought (POST /v1/customers/unmerges of
    it undoes that merge and no other); an undone merge names none."""
    client = api_client(db_engine)
    ds = new_source(client)
    ada = new_customer(client, ds, "A-1", name="Ada")
    alan = new_customer(client, ds, "T-1", name="Alan")
    grace = new_customer(client, ds, "G-1", name="Grace")
    for other in (alan, grace):
        merged = client.post("/v1/customers/merges", json={"from": {"customer_uuid": other["uuid"]},
                                                            "into": {"customer_uuid": ada["uuid"]}})
        assert merged.status_code == 204, merged.text
    merges = client.get(f"/dashboard/customers/{ada['uuid']}/history").json()["merges"]
    assert [(m["from"], m["unmerge"]) for m in merges] == [
        (grace["uuid"], {"data_source_uuid": ds, "external_id": "G-1"}),
        (alan["uuid"], {"data_source_uuid": ds, "external_id": "T-1"}),
    ]
    undone = client.post("/v1/customers/unmerges", json={"customer_uuid": ada["uuid"], **merges[1]["unmerge"]})
    assert undone.status_code == 202, undone.text
    after = client.get(f"/dashboard/customers/{ada['uuid']}/history").json()["merges"]
    by_from = {m["from"]: m for m in after if m["kind"] == "merge"}
    assert by_from[alan["uuid"]]["undone_at"] and by_from[alan["uuid"]]["unmerge"] is None
    assert by_from[grace["uuid"]]["unmerge"] == {"data_source_uuid": ds, "external_id": "G-1"}
    assert client.get(f"/v1/customers/{alan['uuid']}").json()["external_ids"] == ["T-1"]
