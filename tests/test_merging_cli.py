"""``funnelsync merge`` / ``unmerge`` run as a user runs them: a real process on a real database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select

from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from storage.customers import customer_view, resolve_customer
from storage.schema import customers, merge_events
from storage.sources import create_source
from storage.upsert import upsert_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "PYTHONPATH": ROOT, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "funnelsync", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120, check=False)


def t(month: int, day: int) -> datetime:
    return datetime(2025, month, day, tzinfo=UTC)


def seed(engine: Engine) -> tuple[str, str]:
    with engine.begin() as conn:
        crm = create_source(conn, "crm", "custom").id
        billing = create_source(conn, "billing", "stripe").id
        upsert_records(conn, crm, [
            SourceCustomerRecord("L-1", name="Jane", email="jane@acme.io", country="FR", lead_created_at=t(1, 1)),
            SourceCustomerRecord("L-2", name="Solo", email="solo@acme.io"),
        ], now=t(1, 1))
        upsert_records(conn, billing, [SourceCustomerRecord(
            "cus_9", email="JANE@acme.io", company="Acme",
            subscriptions=[SubscriptionFact("sub_9", "active", first_paid_at=t(2, 1))],
        )], now=t(3, 1))
        lead, sub = resolve_customer(conn, "crm:L-1"), resolve_customer(conn, "billing:cus_9")
        lead_uuid, sub_uuid = (v["uuid"] for v in customer_view(conn, [lead, sub]))
    return lead_uuid, sub_uuid


def count(engine: Engine, table) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_auto_dry_run_then_merge_then_log_json(db_engine: Engine, db_url: str) -> None:
    lead_uuid, sub_uuid = seed(db_engine)
    dry = run(db_url, "merge", "--auto", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True and report["rules"] == ["email", "external_id"]
    assert report["groups"] == [
        {"survivor": sub_uuid, "merged": [lead_uuid], "rule": "email", "keys": {"email": ["jane@acme.io"]}}
    ]
    assert count(db_engine, customers) == 3 and count(db_engine, merge_events) == 0

    text = run(db_url, "merge", "--auto", "--dry-run", "--rule", "email")
    assert text.returncode == 0, text.stderr
    assert f"{sub_uuid} <- {lead_uuid}" in text.stdout and "nothing written" in text.stdout

    done = run(db_url, "merge", "--auto", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["merged_customers"] == 1
    assert count(db_engine, customers) == 2

    log = run(db_url, "merge", "--log", "--customer", lead_uuid, "--json")
    assert log.returncode == 0, log.stderr
    (event,) = json.loads(log.stdout)
    assert (event["kind"], event["from"], event["into"], event["rule"], event["actor"]) == (
        "merge", lead_uuid, sub_uuid, "email", "auto"
    )
    assert run(db_url, "merge", "--log").returncode == 0


def test_manual_merge_by_external_ids_and_unmerge(db_engine: Engine, db_url: str) -> None:
    lead_uuid, sub_uuid = seed(db_engine)
    merged = run(db_url, "merge", "crm:L-1", "billing:cus_9", "--json")
    assert merged.returncode == 0, merged.stderr
    out = json.loads(merged.stdout)
    assert out["event"]["from"] == lead_uuid and out["event"]["into"] == sub_uuid
    assert out["customer"]["uuid"] == sub_uuid and out["customer"]["country"] == "FR"
    assert out["customer"]["company"] == "Acme" and out["customer"]["lead_created_at"] == t(1, 1).isoformat()

    # The merged-away uuid is gone; its external id now names the survivor.
    gone = run(db_url, "merge", lead_uuid, sub_uuid)
    assert gone.returncode == 1 and f"was merged into {sub_uuid}" in gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1
    shown = run(db_url, "customers", "show", lead_uuid)
    assert shown.returncode == 1 and f"merged into {sub_uuid}" in shown.stderr
    same = run(db_url, "merge", "crm:L-1", sub_uuid)
    assert same.returncode == 1 and "already the same customer" in same.stderr

    undone = run(db_url, "unmerge", sub_uuid, "--source-customer", "crm:L-1", "--json")
    assert undone.returncode == 0, undone.stderr
    body = json.loads(undone.stdout)
    assert body["restored"]["uuid"] == lead_uuid and body["restored"]["external_ids"] == ["L-1"]
    assert body["customer"]["country"] is None and body["event"]["kind"] == "unmerge"
    back = run(db_url, "customers", "show", lead_uuid, "--json")  # the undone merge no longer redirects
    assert back.returncode == 0 and json.loads(back.stdout)["uuid"] == lead_uuid
    again = run(db_url, "unmerge", sub_uuid, "--source-customer", "crm:L-1")
    assert again.returncode == 1 and "belongs to" in again.stderr
    own = run(db_url, "unmerge", sub_uuid, "--source-customer", "billing:cus_9")
    assert own.returncode == 1 and "own record" in own.stderr


def test_usage_errors_exit_2(db_engine: Engine, db_url: str) -> None:
    seed(db_engine)
    for args in (
        ["merge"],
        ["merge", "crm:L-1"],
        ["merge", "crm:L-1", "crm:L-2", "--auto"],
        ["merge", "crm:L-1", "crm:L-2", "--dry-run"],
        ["merge", "--auto", "--rule", "phone"],
        ["unmerge", "crm:L-1", "--source-customer", "L-2"],
    ):
        result = run(db_url, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert result.stdout == ""
    missing = run(db_url, "merge", "crm:nope", "crm:L-2")
    assert missing.returncode == 1 and "FROM customer 'crm:nope' not found" in missing.stderr
    assert count(db_engine, merge_events) == 0


def test_import_join_by_email_is_in_the_merge_log_and_unmerge_undoes_it(db_engine: Engine, db_url: str,
                                                                          tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``import csv`` puts WL-9 on the CRM's customer with its email (the oldest) as a logged merge; ``merge --log``
    lists it, ``unmerge … --source-customer "Website leads:WL-9"`` separates it; ``--no-join-by-email``
    gives the next new record its own customer."""
    lead_uuid, _lead_uuid = seed(db_engine)
    leads = tmp_path / "leads.csv"
    leads.write_text("external_id,name,email,lead_created_at\nWL-9,Jane Web,jane@acme.io,2025-01-02\n")
    # --no-merge: the seeded CRM and billing Janes stay apart, so only the join at import is in the log.
    imported = run(db_url, "import", "csv", str(leads), "--source", "Website leads", "--no-merge")
    assert imported.returncode == 0, imported.stderr
    assert "1 new records joined another source's customer by email" in imported.stderr
    with db_engine.connect() as conn:
        assert customer_view(conn, [resolve_customer(conn, "Website leads:WL-9")])[0]["uuid"] == lead_uuid

    log = run(db_url, "merge", "--log", "--customer", lead_uuid, "--json")
    assert log.returncode == 0, log.stderr
    (event,) = json.loads(log.stdout)
    assert (event["kind"], event["into"], event["rule"], event["actor"]) == ("merge", lead_uuid, "email-at-import",
                                                                              "import")
    assert "email-at-import" in run(db_url, "merge", "--log").stdout

    undone = run(db_url, "unmerge", lead_uuid, "--source-customer", "Website leads:WL-9", "--json")
    assert undone.returncode == 0, undone.stderr
    out = json.loads(undone.stdout)
    assert out["restored"]["uuid"] == event["from"] and out["restored"]["external_ids"] == ["WL-9"]
    assert out["customer"]["uuid"] == lead_uuid and out["customer"]["external_ids"] == ["L-1"]
    with db_engine.connect() as conn:
        assert resolve_customer(conn, "Website leads:WL-9") != resolve_customer(conn, "crm:L-1")

    more = tmp_path / "more.csv"
    more.write_text("external_id,name,email\nWL-11,Solo Web,solo@acme.io\n")
    apart = run(db_url, "import", "csv", str(more), "--source", "Website leads", "--no-join-by-email",
                "--no-merge")
    assert apart.returncode == 0, apart.stderr
    with db_engine.connect() as conn:
        assert resolve_customer(conn, "Website leads:WL-11") != resolve_customer(conn, "crm:L-2")
    assert len(json.loads(run(db_url, "merge", "--log", "--json").stdout)) == 2  # the merge and its unmerge


def test_unmerge_splits_off_a_record_no_merge_brought_in(db_engine: Engine, db_url: str) -> None:
    """Two records of one source sharing an email share a customer without a merge: the CLI's unmerge
    splits one off into a new customer (as the API's does), instead of calling it the customer's own."""
    with db_engine.begin() as conn:
        sheet = create_source(conn, "Website leads", "csv").id
        upsert_records(conn, sheet, [SourceCustomerRecord("WL-1", email="kim@acme.io", name="Kim"),
                                     SourceCustomerRecord("WL-2", email="kim@acme.io", name="Kim again")],
                       link_new_by_email=True)
        shared = resolve_customer(conn, "Website leads:WL-1")
        assert resolve_customer(conn, "Website leads:WL-2") == shared
        (view,) = customer_view(conn, [shared])
    done = run(db_url, "unmerge", view["uuid"], "--source-customer", "Website leads:WL-2", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["restored"]["external_ids"] == ["WL-2"] and out["customer"]["external_ids"] == ["WL-1"]
    assert (out["event"]["kind"], out["event"]["rule"]) == ("unmerge", "split")
    # The original record cannot be split from its customer: a clear refusal, exit 1.
    refused = run(db_url, "unmerge", view["uuid"], "--source-customer", "Website leads:WL-1")
    assert refused.returncode == 1 and "original record" in refused.stderr
