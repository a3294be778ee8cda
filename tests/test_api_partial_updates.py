"""Every door changes only the fields it is given: the HTTP API's PATCH (absent = untouched, null = cleared)
and bulk edits (only the fields named, an empty CSV cell leaves the field), on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import Engine

from funnelsync.records import SourceCustomerRecord
from jobs.imports import import_csv
from storage.customers import customer_view, resolve_customer
from tests.api_support import api_client, new_source

ROOT = Path(__file__).resolve().parents[1]
UTC = timezone.utc


def test_customer_patch_leaves_absent_fields_and_clears_nulls(db_engine: Engine) -> None:
    client = api_client(db_engine)
    ds = new_source(client)
    made = client.post("/v1/customers", json={
        "data_source_uuid": ds, "external_id": "lead-1", "name": "Ada Ltd", "email": "ada@example.com",
        "company": "Ada", "country": "US", "city": "Boston", "lead_created_at": "2024-01-05",
        "free_trial_started_at": "2024-01-09",
        "attributes": {"tags": ["webinar"], "custom": [{"type": "String", "key": "channel", "value": "Ads"}]},
    })
    assert made.status_code == 201, made.text
    uuid = made.json()["uuid"]

    owner = client.patch(f"/v1/customers/{uuid}", json={"owner": "kim@example.com"})
    assert owner.status_code == 200, owner.text
    body = owner.json()
    assert body["owner"] == "kim@example.com"
    assert (body["name"], body["email"], body["company"], body["country"], body["city"]) == (
        "Ada Ltd", "ada@example.com", "Ada", "US", "Boston")
    assert body["lead_created_at"].startswith("2024-01-05") and body["free_trial_started_at"].startswith("2024-01-09")
    assert body["attributes"]["tags"] == ["webinar"] and body["attributes"]["custom"] == {"channel": "Ads"}

    cleared = client.patch(f"/v1/customers/{uuid}", json={"city": None, "free_trial_started_at": None})
    assert cleared.status_code == 200, cleared.text
    body = cleared.json()
    assert body["city"] is None and body["free_trial_started_at"] is None
    assert body["owner"] == "kim@example.com" and body["company"] == "Ada"
    assert body["lead_created_at"].startswith("2024-01-05") and body["attributes"]["tags"] == ["webinar"]


def test_contact_patch_leaves_absent_fields_and_clears_nulls(db_engine: Engine) -> None:
    client = api_client(db_engine)
    ds = new_source(client)
    customer = client.post("/v1/customers", json={"data_source_uuid": ds, "external_id": "c-1", "name": "Acme"})
    made = client.post(f"/v1/customers/{customer.json()['uuid']}/contacts", json={
        "data_source_uuid": ds, "first_name": "Jane", "last_name": "Doe", "title": "CTO", "email": "jane@acme.io",
        "phone": "+1 415 555 0100", "linked_in": "https://www.linkedin.com/in/janedoe", "twitter": "@janedoe",
        "notes": "wants SSO",
    })
    assert made.status_code == 201, made.text
    uuid = made.json()["uuid"]
    changed = client.patch(f"/v1/contacts/{uuid}", json={"title": "CEO"})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["title"], body["first_name"], body["last_name"], body["phone"], body["twitter"], body["notes"]) == (
        "CEO", "Jane", "Doe", "+1 415 555 0100", "@janedoe", "wants SSO")
    cleared = client.patch(f"/v1/contacts/{uuid}", json={"notes": None, "twitter": None}).json()
    assert cleared["notes"] is None and cleared["twitter"] is None
    assert cleared["title"] == "CEO" and cleared["linked_in"] == "https://www.linkedin.com/in/janedoe"


def test_bulk_edits_change_only_the_fields_named(db_engine: Engine, db_url: str, tmp_path: Path) -> None:
    leads = tmp_path / "leads.csv"
    leads.write_text("external_id,name,email,signup date,trial start,tags,lead status\n"
                     "A,Ann,ann@x.io,2024-01-05,2024-01-09,vip,working\n"
                     "B,Bob,bob@x.io,2024-01-06,,beta,qualified\n")
    import_csv(db_engine, leads, "Leads", tz=UTC)
    edits = tmp_path / "edits.csv"
    edits.write_text("customer,owner,lead_status\nLeads:A,kim,\nLeads:B,,Unqualified_Lead\n")
    env = dict(os.environ, FUNNELSYNC_DATABASE_URL=db_url, FUNNELSYNC_TIMEZONE="UTC", PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-m", "funnelsync", "bulk-edit", "--csv", str(edits), "--json"],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr

    with db_engine.connect() as conn:
        a, b = customer_view(conn, [resolve_customer(conn, "Leads:A"), resolve_customer(conn, "Leads:B")])
    assert a["owner"] == "kim" and a["lead_status"] == "Working_Lead"  # its empty lead_status cell changed nothing
    assert (a["name"], a["email"], a["tags"]) == ("Ann", "ann@x.io", ["vip"])
    assert a["lead_created_at"].startswith("2024-01-05") and a["free_trial_started_at"].startswith("2024-01-09")
    assert b["owner"] is None and b["lead_status"] == "Unqualified_Lead"
    assert (b["name"], b["tags"]) == ("Bob", ["beta"]) and b["lead_created_at"].startswith("2024-01-06")


def test_customer_patch_of_custom_attributes_leaves_absent_keys_and_clears_nulls(db_engine: Engine) -> None:
    """A custom attribute given as null is cleared, the keys not given stay, on PATCH /v1/customers/{uuid}
    and PATCH …/attributes/custom alike."""
    client = api_client(db_engine)
    ds = new_source(client)
    made = client.post("/v1/customers", json={
        "data_source_uuid": ds, "external_id": "c-1", "name": "Ada",
        "attributes": {"tags": ["webinar"], "custom": [{"type": "Integer", "key": "seats", "value": 3},
                                                       {"type": "String", "key": "plan", "value": "pro"},
                                                       {"type": "String", "key": "region", "value": "EU"}]},
    })
    assert made.status_code == 201, made.text
    uuid = made.json()["uuid"]
    seats = client.patch(f"/v1/customers/{uuid}", json={"attributes": {"custom": {"seats": None}}})
    assert seats.status_code == 200, seats.text
    assert seats.json()["attributes"]["custom"] == {"plan": "pro", "region": "EU"}
    assert seats.json()["attributes"]["tags"] == ["webinar"] and seats.json()["name"] == "Ada"
    plan = client.patch(f"/v1/customers/{uuid}/attributes/custom", json={"custom": {"plan": None}})
    assert plan.status_code == 200 and plan.json() == {"custom": {"region": "EU"}}, plan.text


def test_customer_patch_judges_only_the_fields_it_changes(db_engine: Engine) -> None:
    """An imported customer whose trial precedes its lead date: an owner-only PATCH is applied, a PATCH
    of its lead date is refused naming the rule (as bulk edits judge)."""
    client = api_client(db_engine)
    ds = new_source(client)
    imported = client.post("/v1/customers", json={"data_source_uuid": ds, "external_id": "odd", "name": "Odd"})
    assert imported.status_code == 201, imported.text
    # The source itself reports dates that disagree (an import or a sync does not judge them).
    with db_engine.begin() as conn:
        from storage.sources import get_source
        from storage.upsert import upsert_records

        source = get_source(conn, ds)
        assert source is not None
        upsert_records(conn, source.id, [SourceCustomerRecord(
            "odd", name="Odd", lead_created_at=datetime(2024, 3, 1, tzinfo=UTC),
            free_trial_started_at=datetime(2024, 2, 1, tzinfo=UTC))])
    uuid = imported.json()["uuid"]
    owner = client.patch(f"/v1/customers/{uuid}", json={"owner": "kim@example.com"})
    assert owner.status_code == 200 and owner.json()["owner"] == "kim@example.com", owner.text
    lead = client.patch(f"/v1/customers/{uuid}", json={"lead_created_at": "2024-03-02"})
    assert lead.status_code == 422 and "would precede the lead date" in lead.text
    assert client.get(f"/v1/customers/{uuid}").json()["lead_created_at"].startswith("2024-03-01")
