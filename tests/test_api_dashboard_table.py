"""The dashboard's customer table (sort, search, status, source, segment filter, paging), its CSV export
(formula-escaped) and what the segment controls offer, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io

from tests.api_support import api_client, new_customer, new_source


def _seed(client):
    web = new_source(client, "Website")
    crm = new_source(client, "CRM")
    new_customer(client, web, "1", name="bob", email="bob@b.io", country="US", lead_created_at="2026-01-05",
                 owner="ann@x.io", attributes={"tags": ["vip"], "custom": {"seats": 12}})
    new_customer(client, web, "2", name="Alice", email="alice@a.io", country="DE", lead_created_at="2026-03-01",
                 attributes={"custom": {"seats": 3}})
    new_customer(client, crm, "3", name="=HYPERLINK(\"http://x\")", email="eve@e.io", country="US",
                 lead_created_at="2026-02-01", status="Working_Lead", attributes={"tags": ["vip", "beta"]})
    new_customer(client, crm, "4", name="Carol", email="carol@c.io")  # no lead date: last in either order
    return web, crm


def _names(client, **params):
    response = client.get("/dashboard/customers", params=params)
    assert response.status_code == 200, response.text
    return [c["name"] for c in response.json()["entries"]], response.json()


def test_table_sorts_filters_and_pages(db_engine):
    client = api_client(db_engine)
    web, crm = _seed(client)
    names, body = _names(client)  # default: newest lead first, undated last
    assert names == ["Alice", '=HYPERLINK("http://x")', "bob", "Carol"] and body["total"] == 4
    assert _names(client, sort="lead_created_at", order="asc")[0] == ["bob", '=HYPERLINK("http://x")', "Alice",
                                                                       "Carol"]
    assert _names(client, sort="name", order="asc")[0] == ['=HYPERLINK("http://x")', "Alice", "bob", "Carol"]
    assert _names(client, sort="name", order="desc")[0] == ["Carol", "bob", "Alice", '=HYPERLINK("http://x")']
    assert _names(client, q="ALI")[0] == ["Alice"]
    assert _names(client, status="Working_Lead")[0] == ['=HYPERLINK("http://x")']
    assert sorted(_names(client, data_source_uuid=crm)[0]) == ['=HYPERLINK("http://x")', "Carol"]
    assert _names(client, where=["tag = vip", "country = US"], sort="name", order="asc")[0] == [
        '=HYPERLINK("http://x")', "bob"]
    assert _names(client, where="custom.seats >= 10")[0] == ["bob"]
    page2, body = _names(client, sort="name", order="asc", per_page=3, page=2)
    assert page2 == ["Carol"] and body["total"] == 4 and body["pages"] == 2

    for params, field in (({"where": "country ="}, "where"), ({"sort": "uuid; drop"}, "sort"),
                          ({"order": "up"}, "order"), ({"status": "Nope"}, "status"), ({"page": "0"}, "page"),
                          ({"per_page": "201"}, "per_page"), ({"where": "source = Nowhere"}, "where")):
        refused = client.get("/dashboard/customers", params=params)
        assert refused.status_code == 422, (params, refused.text)
        assert refused.json()["errors"][0]["field"] == field


def test_csv_export_is_the_whole_view_formula_escaped(db_engine):
    client = api_client(db_engine)
    _seed(client)
    response = client.get("/dashboard/customers.csv", params={"where": "tag = vip", "sort": "name", "order": "asc",
                                                               "per_page": 1})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    # Every row of the view (not one page), in the view's order; the formula-like name is defused.
    assert [r["name"] for r in rows] == ['\'=HYPERLINK("http://x")', "bob"]
    assert rows[1]["country"] == "US" and rows[1]["owner"] == "ann@x.io" and rows[1]["tags"] == "vip"
    assert rows[1]["lead_created_at"].startswith("2026-01-0") and rows[0]["status"] == "Working_Lead"
    assert sorted(rows[0]["tags"].split(";")) == ["beta", "vip"]
    assert client.get("/dashboard/customers.csv", params={"where": "nope = 1"}).status_code == 422
    assert client.get("/dashboard/customers.csv", auth=None).status_code == 401


def test_segment_choices(db_engine):
    client = api_client(db_engine)
    _seed(client)
    body = client.get("/dashboard/segments").json()
    assert [s["name"] for s in body["sources"]] == ["CRM", "Website"] and all(s["writable"] for s in body["sources"])
    assert body["countries"] == ["DE", "US"] and body["owners"] == ["ann@x.io"]
    assert body["tags"] == ["beta", "vip"] and {"key": "seats", "type": "Integer"} in body["attributes"]
    assert "Active" in body["statuses"] and "New_Lead" in body["statuses"]
    assert client.get("/dashboard/segments", auth=None).status_code == 401
