"""Google Play pull: the monthly ``sales/salesreport_YYYYMM.zip`` reports read with google-cloud-storage
from a local fake of the Cloud Storage JSON API (``STORAGE_EMULATOR_HOST``): every month on the first
run, then only a report whose object generation changed (the current month, rewritten as it goes), until
a month is final; unchanged rows write nothing.

Checked against the Play Console help on reports in Cloud Storage
(https://support.google.com/googleplay/android-developer/answer/6135870: the bucket
``pubsite_prod_rev_<developer id>``, ``sales/salesreport_YYYYMM.zip``, read by a service account) and
google-cloud-storage's ``client.py`` (``STORAGE_EMULATOR_HOST`` as the endpoint, anonymous credentials)
and ``blob.py`` (downloads from ``/download/storage/v1/b/BUCKET/o/NAME?alt=media&generation=…``).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from connectors.base import SettingsError
from connectors.google_play_storage import after_reading, reports, settle, to_read
from fakes.cloud_storage import FakeCloudStorage, serve
from jobs.google_play_bucket import BucketError, pull_sales_reports
from storage.schema import source_customers, subscriptions
from storage.sources import create_source

ROOT = str(Path(__file__).resolve().parents[1])
BUCKET = "pubsite_prod_rev_01234567890987654321"
HEADER = (
    "Order Number,Order Charged Date,Order Charged Timestamp,Financial Status,Device Model,Product Title,"
    "Package ID,Product Type,SKU ID,Currency of Sale,Item Price,Taxes Collected,Charged Amount,Country of Buyer,"
    "City of Buyer,State of Buyer,Postal Code of Buyer,Base Plan or Purchase Option ID,Offer ID"
)


def row(order: str, day: str, amount: str = "9.99", status: str = "Charged") -> str:
    stamp = int(datetime.fromisoformat(day + "T12:00:00+00:00").timestamp())
    return (f"{order},{day},{stamp},{status},sailfish,Pro (Acme App),com.acme.app,subscription,pro_monthly,USD,"
            f"{amount},0.00,{amount},US,Austin,TX,78701,monthly-autorenew,")


def report(month: str, *rows: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"salesreport_{month}.csv", "\n".join([HEADER, *rows]) + "\n")
    return buffer.getvalue()


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCloudStorage]:
    fake = FakeCloudStorage()
    with serve(fake) as host:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", host)
        yield fake


def add_play(engine: Engine, **settings: Any) -> None:
    with engine.begin() as conn:
        create_source(conn, "play", "google_play", settings or {"bucket": BUCKET})


def first_paid(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(source_customers.c.external_id, subscriptions.c.first_paid_at)
            .join(subscriptions, subscriptions.c.source_customer_id == source_customers.c.id)
        ).all()
    return {r.external_id: r.first_paid_at for r in rows}


def downloads(fake: FakeCloudStorage) -> list[str]:
    return [r for r in fake.requests if r.startswith("/download/")]


def test_reads_every_month_then_only_the_rewritten_one_until_final(db_engine: Engine, gcs: FakeCloudStorage) -> None:
    add_play(db_engine)
    gcs.put(BUCKET, "sales/salesreport_202604.zip", report("202604", row("GPA.1111-0000-0000-00001", "2026-04-03")))
    gcs.put(BUCKET, "sales/salesreport_202605.zip", report("202605", row("GPA.1111-0000-0000-00002", "2026-05-02")))
    gcs.put(BUCKET, "sales/salesreport_202606.zip", report("202606", row("GPA.1111-0000-0000-00003", "2026-06-01")))
    gcs.put(BUCKET, "sales/earnings_202605.zip", b"not a sales report")  # other files in the folder: ignored
    today = date(2026, 6, 2)
    first = pull_sales_reports(db_engine, "play", today=today)
    assert [m["month"] for m in first["read"]] == ["202604", "202605", "202606"] and first["created"] == 3
    assert first["final_through"] == "202604"  # May ended less than a week ago: it may still change
    assert first_paid(db_engine)["GPA.1111-0000-0000-00003"] == datetime(2026, 6, 1, 12, tzinfo=UTC)

    # Nothing changed in the bucket: nothing is downloaded again.
    before = len(downloads(gcs))
    again = pull_sales_reports(db_engine, "play", today=today)
    assert again["read"] == [] and len(downloads(gcs)) == before

    # Google rewrites June with a new day's rows (the old ones repeated): only June is read, and only the
    # new subscription is written.
    june = report("202606", row("GPA.1111-0000-0000-00003", "2026-06-01"),
                  row("GPA.1111-0000-0000-00004", "2026-06-09"))
    gcs.put(BUCKET, "sales/salesreport_202606.zip", june)
    third = pull_sales_reports(db_engine, "play", today=date(2026, 6, 10))
    assert [m["month"] for m in third["read"]] == ["202606"]
    assert (third["created"], third["updated"], third["unchanged"]) == (1, 0, 1)
    assert third["final_through"] == "202605"  # May, read as it stood a week after it ended, is final
    assert sorted(first_paid(db_engine)) == [f"GPA.1111-0000-0000-0000{i}" for i in range(1, 5)]

    # A final month is not looked at again, even if its object changes.
    gcs.put(BUCKET, "sales/salesreport_202604.zip", report("202604", row("GPA.9999-0000-0000-00009", "2026-04-09")))
    fourth = pull_sales_reports(db_engine, "play", today=date(2026, 6, 11))
    assert fourth["read"] == [] and "GPA.9999-0000-0000-00009" not in first_paid(db_engine)


def test_listing_pages_and_bad_settings(db_engine: Engine, gcs: FakeCloudStorage) -> None:
    for month in ("202601", "202602", "202603", "202604", "202605"):  # the fake pages two at a time
        day = f"{month[:4]}-{month[4:]}-05"
        gcs.put(BUCKET, f"sales/salesreport_{month}.zip", report(month, row(f"GPA.2222-0000-0000-{month}", day)))
    add_play(db_engine)
    summary = pull_sales_reports(db_engine, "play", today=date(2026, 7, 1))
    assert summary["reports"] == 5 and summary["created"] == 5 and summary["final_through"] == "202605"
    assert sum(1 for r in gcs.requests if r.startswith(f"/storage/v1/b/{BUCKET}/o?")) == 3, gcs.requests
    with db_engine.begin() as conn:
        create_source(conn, "typo", "google_play", {"bucket": "my-bucket"})
        create_source(conn, "gone", "google_play", {"bucket": "pubsite_prod_rev_999"})
    with pytest.raises(SettingsError, match="pubsite_prod_rev_"):
        pull_sales_reports(db_engine, "typo")
    with pytest.raises(BucketError, match="404"):
        pull_sales_reports(db_engine, "gone")


def test_month_rule_is_pure() -> None:
    class Blob:
        def __init__(self, name: str, generation: int) -> None:
            self.name, self.generation, self.updated = name, generation, None

    found = reports([Blob("sales/salesreport_202612.zip", 5), Blob("sales/salesreport_202613.zip", 1),
                     Blob("sales/salesreport_202611.zip", 3)])
    assert [r.month for r in found] == ["202611", "202612"]
    assert after_reading(None, found[0], date(2026, 12, 7)) == {"final_through": "", "read": {"202611": 3}}
    cursor = after_reading(None, found[0], date(2026, 12, 8))
    assert cursor == {"final_through": "202611", "read": {}}
    cursor = after_reading(cursor, found[1], date(2026, 12, 5))
    assert to_read(found, cursor) == [] and cursor["read"] == {"202612": 5}
    assert settle(cursor, found, date(2027, 1, 8))["final_through"] == "202612"


def test_cli_and_scheduled_flow_pull_the_bucket(db_engine: Engine, gcs: FakeCloudStorage, flow_db: str) -> None:
    """The doors: ``funnelsync sources add … --set bucket=…``, ``funnelsync import google-play-bucket`` and the
    ``google-play-reports`` flow that prefect.yaml schedules."""
    from flows.google_play import google_play_reports_flow

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "FUNNELSYNC_DATABASE_URL": flow_db, "PYTHONPATH": ROOT}
        return subprocess.run([sys.executable, "-m", "funnelsync", *args], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=120, check=False)

    added = cli("sources", "add", "play", "--kind", "google_play", "--set", f"bucket={BUCKET}")
    assert added.returncode == 0, added.stderr
    gcs.put(BUCKET, "sales/salesreport_202601.zip", report("202601", row("GPA.3333-0000-0000-00001", "2026-01-04")))
    pulled = cli("import", "google-play-bucket", "--source", "play", "--json")
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads(pulled.stdout)["created"] == 1
    gcs.put(BUCKET, "sales/salesreport_202602.zip", report("202602", row("GPA.3333-0000-0000-00002", "2026-02-04")))
    outcome = google_play_reports_flow(merge_after=False)
    [summary] = outcome["sources"]
    assert [m["month"] for m in summary["read"]] == ["202602"] and summary["created"] == 1
    missing = cli("import", "google-play-bucket", "--source", "nope")
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_service_account_key_is_kept_out_of_the_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A literal service-account key given to ``sources add`` is stored as a ``local-secret:`` reference."""
    from jobs.secrets import protect_settings, resolve_settings

    monkeypatch.setenv("FUNNELSYNC_HOME", str(tmp_path))
    key = json.dumps({"type": "service_account", "client_email": "reports@p.iam.gserviceaccount.com",
                      "private_key": "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"})
    stored = protect_settings("google_play", "play", {"bucket": BUCKET, "service_account": key})
    assert stored["bucket"] == BUCKET and stored["service_account"].startswith("local-secret:")
    assert "PRIVATE KEY" not in json.dumps(stored)
    assert resolve_settings(stored)["service_account"] == key
    with pytest.raises(ValueError, match="unknown setting"):
        protect_settings("google_play", "play", {"buckett": BUCKET})


def test_sync_and_sync_all_pull_a_bucket_source_not_a_push_only_one(db_engine: Engine, gcs: FakeCloudStorage) -> None:
    """The bucket is a pulled stream (``sales_reports``): ``sync_source`` reads it as it reads any connector's,
    and the schedule's list of pulled sources holds a google_play source with a bucket, not one fed by pushes
    alone (its settings name nothing to pull)."""
    from jobs.sync import pulled_sources, sync_source
    from storage.sync_state import load_cursor

    add_play(db_engine)
    with db_engine.begin() as conn:
        create_source(conn, "play-push", "google_play", {"package_name": "com.acme.app"})
        assert pulled_sources(conn) == [("play", "google_play")]
    gcs.put(BUCKET, "sales/salesreport_202601.zip", report("202601", row("GPA.4444-0000-0000-00001", "2026-01-04")))
    first = sync_source(db_engine, "play")
    assert [s.stream for s in first.streams] == ["sales_reports"] and first.totals["created"] == 1
    # The renewal in February joins the January sign-up: its first payment stays January's.
    gcs.put(BUCKET, "sales/salesreport_202602.zip", report("202602", row("GPA.4444-0000-0000-00001..0", "2026-02-04")))
    second = sync_source(db_engine, "play")
    assert (second.totals["created"], second.totals["updated"]) == (0, 0)
    assert first_paid(db_engine)["GPA.4444-0000-0000-00001"] == datetime(2026, 1, 4, 12, tzinfo=UTC)
    with db_engine.connect() as conn:
        source_id = conn.execute(select(source_customers.c.data_source_id)).scalar_one()
        assert load_cursor(conn, source_id, "sales_reports")["watermark"] == "202602"
