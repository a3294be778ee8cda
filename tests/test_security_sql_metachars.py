"""SQL metacharacters (``'``, ``";--``, ``%``, ``_``, ``\\``) go through every door as data: stored as typed,
found as typed (and only where they are), and the schema intact afterwards; NUL, which PostgreSQL text cannot
hold, is refused with an error naming the field. SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, inspect, select

from jobs.imports import import_csv
from storage.filter_grammar import FilterError
from storage.filters import build_filter, select_customer_ids
from storage.schema import customers
from tests.api_support import api_client, new_source

# Each is a value a real customer record may hold; together they cover quoting, comments, LIKE wildcards
# and the escape character.
META = [
    "O'Brien",
    'x";--',
    "'; DROP TABLE customers;--",
    "100%",
    "a_b",
    "back\\slash",
    "%_\\'\"",
]
TEXT_FIELDS = ("name", "company", "city", "zip", "owner")


def _schema(engine: Engine) -> dict[str, list[str]]:
    found = inspect(engine)
    return {table: sorted(c["name"] for c in found.get_columns(table)) for table in sorted(found.get_table_names())}


def _quote(value: str) -> str:
    """A filter literal: double quotes, with ``"`` and ``\\`` escaped by a backslash."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_api_fields_and_search_store_and_find_metacharacters_as_typed(db_engine: Engine) -> None:
    schema = _schema(db_engine)
    client = api_client(db_engine)
    # Source names are a restricted alphabet: a quote is refused by name, and the allowed '-', '_', '.' kept.
    refused = client.post("/v1/data_sources", json={"name": "crm';--"})
    assert refused.status_code == 422 and "invalid source name" in refused.json()["errors"][0]["reason"]
    ds = new_source(client, "crm_100-x.y")
    assert [s["name"] for s in client.get("/v1/data_sources").json()["data_sources"]] == ["crm_100-x.y"]
    made: dict[str, str] = {}
    for i, value in enumerate(META):
        body = {"data_source_uuid": ds, "external_id": f"{value}#{i}", "email": f"m{i}@example.com",
                **{field: value for field in TEXT_FIELDS},
                "attributes": {"tags": [value], "custom": [{"type": "String", "key": "note", "value": value}]}}
        response = client.post("/v1/customers", json=body)
        assert response.status_code == 201, response.text
        made[value] = response.json()["uuid"]
    # Decoys a wildcard or a stripped quote would wrongly match.
    for i, decoy in enumerate(["OBrien", "100x", "axb", "backslash", "x\";"]):
        response = client.post("/v1/customers", json={"data_source_uuid": ds, "external_id": f"decoy{i}",
                                                      "name": decoy})
        assert response.status_code == 201, response.text

    for value, uuid in made.items():
        got = client.get(f"/v1/customers/{uuid}").json()
        assert [got[f] for f in ("name", "company", "owner")] == [value, value, value]
        assert got["address"]["city"] == value and got["address"]["address_zip"] == value
        assert got["external_id"].startswith(value) and got["attributes"]["tags"] == [value]
        assert got["attributes"]["custom"] == {"note": value}
        # q: substring search (LIKE underneath) finds exactly the customers holding the text.
        found = client.get("/v1/customers", params={"q": value}).json()["entries"]
        assert {c["uuid"] for c in found} == {u for v, u in made.items() if value.lower() in v.lower()}, value
        by_id = client.get("/v1/customers", params={"external_id": got["external_id"]}).json()["entries"]
        assert [c["uuid"] for c in by_id] == [uuid]

    quoted = client.post("/v1/customers", json={"data_source_uuid": ds, "external_id": "q1",
                                                 "email": "o'brien+x%_@example.com"}).json()["uuid"]
    search = client.get("/v1/customers/search", params={"email": "o'brien+x%_@example.com"}).json()["entries"]
    assert [c["uuid"] for c in search] == [quoted]
    assert client.get("/v1/customers/search", params={"email": "o'brien+x%%@example.com"}).json()["entries"] == []

    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == len(META) + 6
    assert _schema(db_engine) == schema


def test_filters_take_metacharacters_as_values(db_engine: Engine) -> None:
    schema = _schema(db_engine)
    client = api_client(db_engine)
    ds = new_source(client)
    uuids = {}
    for i, value in enumerate(META + ["OBrien", "100x", "axb"]):
        body = {"data_source_uuid": ds, "external_id": f"f{i}", "name": value, "company": value,
                "attributes": {"tags": [value], "custom": [{"type": "String", "key": "note", "value": value}]}}
        response = client.post("/v1/customers", json=body)
        assert response.status_code == 201, response.text
        uuids[value] = response.json()["id"]
    with db_engine.connect() as conn:
        for value in META:
            for expression in (f"name = {_quote(value)}", f"company in ({_quote(value)}, nobody)",
                               f"tag = {_quote(value)}", f"custom.note = {_quote(value)}"):
                ids = conn.execute(select_customer_ids(build_filter(conn, expression))).scalars().all()
                assert ids == [uuids[value]], expression
            everyone_else = conn.execute(
                select_customer_ids(build_filter(conn, f"name != {_quote(value)}"))).scalars().all()
            assert uuids[value] not in everyone_else and len(everyone_else) == len(uuids) - 1
    # The metrics API takes the same filters from the query string.
    response = client.get("/v1/metrics/funnel", params={
        "start-date": "2020-01-01", "end-date": "2030-12-31", "where": f"name = {_quote(META[2])}"})
    assert response.status_code == 200, response.text
    assert _schema(db_engine) == schema


def test_nul_is_refused_naming_the_field(db_engine: Engine) -> None:
    client = api_client(db_engine)
    ds = new_source(client)
    created = client.post("/v1/customers", json={"data_source_uuid": ds, "external_id": "n1", "name": "a\x00b"})
    assert created.status_code == 422 and "name" in created.text and "NUL" in created.text
    listed = client.get("/v1/customers", params={"q": "a\x00b"})
    assert listed.status_code == 422 and "NUL" in listed.text
    searched = client.get("/v1/customers/search", params={"email": "a\x00@b.co"})
    assert searched.status_code == 422 and "email" in searched.text
    metrics = client.get("/v1/metrics/funnel", params={
        "start-date": "2024-01-01", "end-date": "2024-12-31", "where": "name = \"a\x00b\""})
    assert metrics.status_code == 422 and "NUL" in metrics.text
    with db_engine.connect() as conn:
        with pytest.raises(FilterError, match="NUL"):
            build_filter(conn, 'name = "a\x00b"')
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 0


def test_import_fields_store_metacharacters_as_typed_and_refuse_nul(db_engine: Engine, tmp_path: Path) -> None:
    schema = _schema(db_engine)
    path = tmp_path / "meta.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Customer ID", "E-mail", "Full Name", "Company", "City", "Tags", "Note"])
        for i, value in enumerate(META):
            writer.writerow([f"{value}#{i}", f"i{i}@example.com", value, value, value, value, value])
        writer.writerow(["nul-row", "nul@example.com", "a\x00b", "", "", "", ""])
    errors = tmp_path / "errors.csv"
    summary = import_csv(db_engine, path, "file_-.", mapping={"Note": "custom.note"}, errors_path=errors)
    assert (summary.created, summary.rejected) == (len(META), 1)
    assert summary.errors[0]["column"] == "Full Name" and "NUL" in summary.errors[0]["reason"]
    with db_engine.connect() as conn:
        rows = conn.execute(select(customers.c.name, customers.c.company, customers.c.city, customers.c.tags,
                                   customers.c.custom).order_by(customers.c.id)).all()
        for value, row in zip(META, rows, strict=True):
            tags = row.tags if isinstance(row.tags, list) else json.loads(row.tags)
            custom = row.custom if isinstance(row.custom, dict) else json.loads(row.custom)
            assert (row.name, row.company, row.city, tags, custom["note"]) == (value, value, value, [value], value)
    assert _schema(db_engine) == schema
