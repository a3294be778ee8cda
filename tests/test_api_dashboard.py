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
    assert sorted(referenced) == ["/dashboard/static/dashboard.css", "/dashboard/static/dashboard.js"]
    bodies = [html]
    for path in referenced:
        asset = client.get(path)
        assert asset.status_code == 200, path
        bodies.append(asset.text)
    assert client.get("/dashboard/static/dashboard.js").headers["content-type"].startswith("text/javascript")
    script = bodies[2] if referenced[1].endswith(".js") else bodies[1]
    for endpoint in ("/v1/metrics/funnel", "/v1/metrics/trial-cohorts", "/v1/customers"):
        assert endpoint in script
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


def test_dashboard_needs_the_api_key(db_engine):
    client = api_client(db_engine)
    for path in ("/dashboard", "/dashboard/static/dashboard.js"):
        response = client.get(path, auth=None)
        assert response.status_code == 401
        # The Basic challenge makes a browser show its login prompt (API key as user name).
        assert response.headers["www-authenticate"].startswith("Basic")


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
