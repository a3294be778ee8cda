"""Google Play: the payloads-URL receiver (API key Basic auth, dates only when carried) and the Daily
Sales Report import (header drift, trials and first payments, renewals, months in any order, re-import)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from api.app import create_app
from connectors.files.google_play_report import SalesReportError, read_sales_report, sales_orders
from connectors.google_play import GooglePlayPayloadError, payload_partial
from jobs.google_play_sales import import_sales_report
from storage.api_keys import create_api_key
from storage.schema import customers, source_customers, subscriptions
from storage.sources import create_source

# --- payloads URL ------------------------------------------------------------------------------------


def purchase(**customer: Any) -> dict[str, Any]:
    base = {"external_id": "user-42", "name": "Ann Lee", "email": "ann@example.com", "company": "Acme",
            "country": "de", "state": None, "city": "Berlin", "zip": "10115",
            "lead_created_at": "2025-01-02T10:00:00Z", "trial_started_at": "2025-01-02T10:05:00+01:00",
            "attributes": {"plan": "pro", "seats": 3, "nested": {"ignored": True}}}
    return {"purchase_data": {"product_id": "pro_monthly", "purchase_token": "kmnfbplcpbdhjjg.AO-J1Oz"},
            "customer": {**base, **customer}}


def test_payload_maps_to_a_partial_record() -> None:
    partial = payload_partial(purchase())
    assert partial.external_id == "user-42" and partial.creates
    assert partial.fields["country"] == "DE" and partial.fields["city"] == "Berlin" and "state" not in partial.fields
    assert partial.fields["lead_created_at"] == datetime(2025, 1, 2, 10, tzinfo=UTC)
    assert partial.fields["free_trial_started_at"] == datetime(2025, 1, 2, 9, 5, tzinfo=UTC)
    assert partial.custom == {"plan": "pro", "seats": 3, "google_play_product_id": "pro_monthly"}
    without_dates = payload_partial(purchase(lead_created_at=None, trial_started_at=""))
    assert "lead_created_at" not in without_dates.fields and "free_trial_started_at" not in without_dates.fields


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([], "JSON object"),
        ({"customer": {"external_id": "x"}}, "purchase_data and customer"),
        ({**purchase(), "purchase_data": {"product_id": "p"}}, "purchase_token"),
        (purchase(external_id=""), "external_id"),
        (purchase(country="Germany"), "alpha-2"),
        (purchase(lead_created_at="yesterday"), "lead_created_at"),
        (purchase(email={"a": 1}), "customer.email"),
        (purchase(attributes=[1]), "attributes"),
    ],
)
def test_invalid_payloads(payload: Any, message: str) -> None:
    with pytest.raises(GooglePlayPayloadError, match=message):
        payload_partial(payload)


def gp_setup(engine: Engine) -> tuple[TestClient, str]:
    with engine.begin() as conn:
        create_source(conn, "play", "google_play", {})
        key = create_api_key(conn, "play backend")
    return TestClient(create_app(engine)), key


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def stored_rows(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {r["external_id"]: dict(r) for r in conn.execute(select(source_customers)).mappings()}


def test_receiver_stores_purchases_and_keeps_dates_not_carried(db_engine: Engine) -> None:
    client, key = gp_setup(db_engine)
    response = client.post("/webhooks/play", json=purchase(), headers=basic(key))
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1 and response.json()["customers"] == ["user-42"]
    # A renewal payload without dates (and a new email) keeps the stored lead and trial dates.
    again = client.post("/webhooks/play", json=purchase(lead_created_at=None, trial_started_at=None,
                                                        email="ann@acme.example"), headers=basic(key))
    assert again.json()["updated"] == 1
    row = stored_rows(db_engine)["user-42"]
    assert row["email"] == "ann@acme.example" and row["lead_created_at"] == datetime(2025, 1, 2, 10, tzinfo=UTC)
    with db_engine.connect() as conn:
        cust = conn.execute(select(customers.c.free_trial_started_at, customers.c.country)).one()
    assert cust.free_trial_started_at == datetime(2025, 1, 2, 9, 5, tzinfo=UTC) and cust.country == "DE"
    # Lead created only when the payload carries it: a purchase without dates has none.
    client.post("/webhooks/play", json=purchase(external_id="user-7", lead_created_at=None, trial_started_at=None),
                headers=basic(key))
    assert stored_rows(db_engine)["user-7"]["lead_created_at"] is None


@pytest.mark.parametrize("auth", ["none", "wrong_key", "bearer"])
def test_receiver_refuses_without_a_valid_api_key(db_engine: Engine, auth: str) -> None:
    client, key = gp_setup(db_engine)
    headers = {"none": {}, "wrong_key": basic("not-a-key"), "bearer": {"Authorization": f"Bearer {key}"}}[auth]
    response = client.post("/webhooks/play", json=purchase(), headers=headers)
    assert response.status_code == 401 and key not in response.text
    assert stored_rows(db_engine) == {}


def test_receiver_422_and_413_store_nothing(db_engine: Engine) -> None:
    client, key = gp_setup(db_engine)
    assert client.post("/webhooks/play", json=purchase(country="Germany"), headers=basic(key)).status_code == 422
    assert client.post("/webhooks/play", content=b"{oops", headers=basic(key)).status_code == 422
    huge = purchase(attributes={"blob": "x" * (1024 * 1024)})
    assert client.post("/webhooks/play", json=huge, headers=basic(key)).status_code == 413
    assert stored_rows(db_engine) == {}


# --- Daily Sales Report --------------------------------------------------------------------------------

HEADER_2023 = (
    "Order Number,Order Charged Date,Order Charged Timestamp,Financial Status,Device Model,Product Title,"
    "Product ID,Product Type,SKU ID,Currency of Sale,Item Price,Taxes Collected,Charged Amount,City of Buyer,"
    "State of Buyer,Postal Code of Buyer,Country of Buyer"
)
# Newer files: "Package ID", base plan and offer columns, and one column order change.
HEADER_2025 = (
    "Order Number,Order Charged Date,Order Charged Timestamp,Financial Status,Device Model,Product Title,"
    "Package ID,Product Type,SKU ID,Currency of Sale,Item Price,Taxes Collected,Charged Amount,Country of Buyer,"
    "City of Buyer,State of Buyer,Postal Code of Buyer,Base Plan or Purchase Option ID,Offer ID"
)


def ts(day: str) -> int:
    return int(datetime.fromisoformat(day + "T12:00:00+00:00").timestamp())


def row_2025(order: str, day: str, status: str, kind: str, amount: str, country: str = "US") -> str:
    return (f"{order},{day},{ts(day)},{status},sailfish,Pro (Acme App),com.acme.app,{kind},pro_monthly,USD,{amount},"
            f"0.00,{amount},{country},Austin,TX,78701,monthly-autorenew,freetrial-7d")


def row_2023(order: str, day: str, status: str, kind: str, amount: str) -> str:
    return (f"{order},{day},{ts(day)},{status},walleye,Pro (Acme App),com.acme.app,{kind},pro_monthly,EUR,{amount},"
            f"0.00,{amount},Paris,,75001,FR")


def zipped(path: Path, csv_text: str) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(path.stem + ".csv", csv_text)
    path.write_bytes(buffer.getvalue())
    return path


JANUARY = "\n".join([
    HEADER_2025,
    row_2025("GPA.3381-0000-0000-00001", "2025-01-03", "Charged", "subscription", "0.00"),  # trial start
    row_2025("GPA.3381-0000-0000-00001..0", "2025-01-10", "Charged", "subscription", "9.99"),  # converted
    row_2025("GPA.3381-0000-0000-00002", "2025-01-05", "Charged", "subscription", "9.99", "GB"),  # paid at once
    row_2025("GPA.3381-0000-0000-00003", "2025-01-20", "Charged", "subscription", "0.00"),  # trial, not converted yet
    row_2025("GPA.3381-0000-0000-00004", "2025-01-21", "Charged", "inapp", "1.99"),  # not a subscription
    row_2025("GPA.3381-0000-0000-00005", "2025-01-22", "Refund", "subscription", "9.99"),  # only a refund
    "GPA.broken,2025-01-23,not-a-time,Charged,x,y,z,subscription,s,USD,1,0,1,US,,,,,",
]) + "\n"
FEBRUARY = "\n".join([
    HEADER_2023,
    row_2023("GPA.3381-0000-0000-00003..0", "2025-02-01", "Charged", "subscription", "9.99"),  # Jan trial converts
    row_2023("GPA.3381-0000-0000-00006", "2025-02-02", "Charged", "subscription", "0,00"),
]) + "\n"


def test_sales_report_rows_and_orders(tmp_path: Path) -> None:
    report = read_sales_report(zipped(tmp_path / "salesreport_202501.zip", JANUARY))
    assert len(report.rows) == 6 and report.skipped[0][0] == 8 and "unreadable" in report.skipped[0][1]
    skipped: list[tuple[int, str]] = []
    orders = sales_orders(report.rows, skipped)
    assert "inapp" in skipped[0][1]
    first = orders["GPA.3381-0000-0000-00001"]
    assert first.trial_started_at == datetime(2025, 1, 3, 12, tzinfo=UTC)
    assert first.first_paid_at == datetime(2025, 1, 10, 12, tzinfo=UTC)
    assert first.lead_created_at == first.trial_started_at and first.country == "US"
    assert orders["GPA.3381-0000-0000-00002"].trial_started_at is None
    assert orders["GPA.3381-0000-0000-00005"].lead_created_at is None  # refunds are no payment


def test_missing_required_column_fails_loudly(tmp_path: Path) -> None:
    bad = tmp_path / "salesreport_202501.csv"
    bad.write_text("Order Number,Charged Amount\nGPA.1,1.00\n", encoding="utf-8")
    with pytest.raises(SalesReportError, match="Financial Status.*Product Type"):
        read_sales_report(bad)
    (tmp_path / "x.zip").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(SalesReportError, match="zip"):
        read_sales_report(tmp_path / "x.zip")


def subs_by_order(engine: Engine) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(subscriptions)).mappings().all()
    return {r["external_id"]: dict(r) for r in rows}


def test_import_months_in_any_order_keeps_the_earliest_dates(db_engine: Engine, tmp_path: Path) -> None:
    jan = zipped(tmp_path / "salesreport_202501.zip", JANUARY)
    feb = zipped(tmp_path / "salesreport_202502.zip", FEBRUARY)
    first = import_sales_report(db_engine, "play", feb)  # February first: the Jan trial is not known yet
    assert first["created"] == 2
    summary = import_sales_report(db_engine, "play", jan)
    assert summary["created"] == 2 and summary["updated"] == 1 and summary["no_trial_or_payment"] == 1
    assert [r["line"] for r in summary["skipped_rows"]] == [6, 8]
    rows = stored_rows(db_engine)
    assert set(rows) == {"GPA.3381-0000-0000-0000" + str(i) for i in (1, 2, 3, 6)}
    late = rows["GPA.3381-0000-0000-00003"]  # trial in January, paid in February
    assert late["lead_created_at"] == datetime(2025, 1, 20, 12, tzinfo=UTC)
    assert late["free_trial_started_at"] == datetime(2025, 1, 20, 12, tzinfo=UTC)
    subs = subs_by_order(db_engine)
    assert subs["GPA.3381-0000-0000-00003"]["first_paid_at"] == datetime(2025, 2, 1, 12, tzinfo=UTC)
    assert subs["GPA.3381-0000-0000-00003"]["state"] == "active"
    assert subs["GPA.3381-0000-0000-00006"]["state"] == "trialing"
    assert rows["GPA.3381-0000-0000-00002"]["country"] == "GB"
    # Importing both again changes nothing.
    for path in (jan, feb):
        again = import_sales_report(db_engine, "play", path)
        assert again["created"] == 0 and again["updated"] == 0


def test_cli_imports_a_sales_report(db_url: str, db_engine: Engine, tmp_path: Path) -> None:
    jan = zipped(tmp_path / "salesreport_202501.zip", JANUARY)
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "FUNNELSYNC_HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "funnelsync", "import", "google-play-sales", str(jan), "--source",
                           "play", "--json"], check=False, capture_output=True, text=True, env=env, timeout=120)
    # Lines 6 (an in-app product) and 8 (an unreadable timestamp) were skipped: exit 3, as every import.
    assert done.returncode == 3, done.stderr
    assert json.loads(done.stdout)["created"] == 3
    clean = zipped(tmp_path / "salesreport_202502.zip", FEBRUARY)
    ok = subprocess.run([sys.executable, "-m", "funnelsync", "import", "google-play-sales", str(clean), "--source",
                         "play", "--json"], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    # A row with neither timestamp nor date: said in words, never Python's "Invalid isoformat string: ''".
    undated = zipped(tmp_path / "salesreport_202503.zip", "\n".join([
        HEADER_2025,
        "GPA.3381-0000-0000-00009,,,Charged,x,y,z,subscription,s,USD,1,0,1,US,,,,,",
    ]) + "\n")
    shown = subprocess.run([sys.executable, "-m", "funnelsync", "import", "google-play-sales", str(undated),
                            "--source", "play"], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == 3, shown.stderr
    assert "isoformat" not in shown.stdout + shown.stderr
    assert "line 2: unreadable row: no charged date (and no charged timestamp)" in shown.stdout
    missing = subprocess.run([sys.executable, "-m", "funnelsync", "import", "google-play-sales",
                              str(tmp_path / "nope.zip"), "--source", "play"], check=False, capture_output=True,
                             text=True, env=env, timeout=120)
    assert missing.returncode == 2 and "no such file" in missing.stderr
