"""``funnelsync sources show|edit|disable|enable|remove`` and ``list --json``, run as a user runs them (a real
process, a real database on SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from jobs.sync import pulled_sources
from storage.edits import set_manual_edits
from storage.merge import merge_customers
from storage.schema import customers, manual_edits, merge_events, source_customers, subscriptions
from storage.sources import create_source, get_source
from storage.upsert import upsert_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "sk_test_LIVE_SECRET_4242"


def run(db_url: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "FUNNELSYNC_HOME": str(home), "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "funnelsync", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def count(engine: Engine, table: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def test_show_and_list_json_mask_secrets_and_count(db_engine: Engine, db_url: str, tmp_path: Path) -> None:
    added = run(db_url, tmp_path, "sources", "add", "billing", "--kind", "stripe", "--set", f"api_key={SECRET}")
    assert added.returncode == 0, added.stderr
    with db_engine.begin() as conn:
        # A literal secret stored by an older version (or by hand): shown masked all the same.
        create_source(conn, "legacy", "stripe", {"api_key": "sk_test_OLD_LITERAL_77", "page_size": 20})
        upsert_records(conn, get_source(conn, "billing").id, [SourceCustomerRecord("cus_1", email="a@x.io")])
    shown = run(db_url, tmp_path, "sources", "show", "billing", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["kind"] == "stripe" and data["enabled"] is True and data["source_customers"] == 1
    assert data["settings"]["api_key"].startswith("local-secret:") and SECRET not in shown.stdout
    legacy = json.loads(run(db_url, tmp_path, "sources", "show", "legacy", "--json").stdout)
    assert legacy["settings"] == {"api_key": "****", "page_size": 20}
    text = run(db_url, tmp_path, "sources", "show", "legacy")
    assert text.returncode == 0 and "api_key = ****" in text.stdout and "OLD_LITERAL" not in text.stdout
    listed = run(db_url, tmp_path, "sources", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    items = {item["name"]: item for item in json.loads(listed.stdout)}
    assert set(items) == {"billing", "legacy"} and items["billing"]["source_customers"] == 1
    assert "OLD_LITERAL" not in listed.stdout and SECRET not in listed.stdout
    missing = run(db_url, tmp_path, "sources", "show", "biling")
    assert missing.returncode == 2 and "no data source named 'biling' (known: billing, legacy)" in missing.stderr


def test_edit_changes_only_the_named_settings_and_checks_them(db_engine: Engine, db_url: str, tmp_path: Path) -> None:
    assert run(db_url, tmp_path, "sources", "add", "billing", "--kind", "stripe",
               "--set", f"api_key={SECRET}", "--set", "page_size=20").returncode == 0
    with db_engine.connect() as conn:
        before = dict(get_source(conn, "billing").settings)
    old_file = tmp_path / "secrets" / before["api_key"].split(":", 1)[1]
    assert old_file.read_text() == SECRET

    edited = run(db_url, tmp_path, "sources", "edit", "billing", "--set", "page_size=50", "--json")
    assert edited.returncode == 0, edited.stderr
    assert json.loads(edited.stdout)["changed"] == ["page_size"]
    with db_engine.connect() as conn:
        assert dict(get_source(conn, "billing").settings) == {**before, "page_size": "50"}

    typo = run(db_url, tmp_path, "sources", "edit", "billing", "--set", "apikey=x")
    assert typo.returncode == 1 and "apikey" in typo.stderr
    with db_engine.connect() as conn:
        assert dict(get_source(conn, "billing").settings) == {**before, "page_size": "50"}

    rotated = run(db_url, tmp_path, "sources", "edit", "billing", "--set", "api_key=sk_test_NEW_9")
    assert rotated.returncode == 0 and "api_key" in rotated.stdout and "sk_test_NEW_9" not in rotated.stdout
    with db_engine.connect() as conn:
        ref = get_source(conn, "billing").settings["api_key"]
    assert ref.startswith("local-secret:") and ref != before["api_key"] and not old_file.exists()
    assert (tmp_path / "secrets" / ref.split(":", 1)[1]).read_text() == "sk_test_NEW_9"

    renamed = run(db_url, tmp_path, "sources", "edit", "billing", "--rename", "stripe-live", "--unset", "page_size")
    assert renamed.returncode == 0, renamed.stderr
    with db_engine.connect() as conn:
        row = get_source(conn, "stripe-live")
    assert row is not None and "page_size" not in row.settings
    nothing = run(db_url, tmp_path, "sources", "edit", "stripe-live", "--unset", "nope")
    assert nothing.returncode == 1 and "no setting nope" in nothing.stderr


def test_disabled_source_is_skipped_by_sync_all_and_refused_by_sync(
    db_engine: Engine, db_url: str, tmp_path: Path
) -> None:
    added = run(db_url, tmp_path, "sources", "add", "billing", "--kind", "stripe", "--set", "api_key=env:NOPE")
    assert added.returncode == 0, added.stderr
    assert run(db_url, tmp_path, "sources", "add", "other", "--kind", "chargebee", "--set", "site=acme",
               "--set", "api_key=env:NOPE").returncode == 0
    disabled = run(db_url, tmp_path, "sources", "disable", "billing")
    assert disabled.returncode == 0 and "Disabled source billing" in disabled.stdout
    with db_engine.connect() as conn:
        assert pulled_sources(conn) == [("other", "chargebee")]
    listed = {i["name"]: i["enabled"] for i in json.loads(run(db_url, tmp_path, "sources", "list", "--json").stdout)}
    assert listed == {"billing": False, "other": True}
    refused = run(db_url, tmp_path, "sync", "billing")
    assert refused.returncode == 1 and "source 'billing' is disabled" in refused.stderr
    again = run(db_url, tmp_path, "sources", "disable", "billing")
    assert again.returncode == 0 and "already disabled" in again.stdout
    assert run(db_url, tmp_path, "sources", "enable", "billing").returncode == 0
    with db_engine.connect() as conn:
        assert sorted(pulled_sources(conn)) == [("billing", "stripe"), ("other", "chargebee")]


def test_remove_asks_for_yes_says_what_and_keeps_the_logs(db_engine: Engine, db_url: str, tmp_path: Path) -> None:
    lead = datetime(2025, 1, 5, tzinfo=UTC)
    with db_engine.begin() as conn:
        gone = create_source(conn, "old-crm", "csv")
        kept = create_source(conn, "billing", "csv")
        upsert_records(conn, gone.id, [
            SourceCustomerRecord("A", name="Ada", email="ada@x.io", lead_created_at=lead),
            SourceCustomerRecord("B", name="Bob", email="bob@x.io"),
            SourceCustomerRecord("C", name="Cy", email="cy@x.io"),
        ])
        upsert_records(conn, kept.id, [SourceCustomerRecord(
            "cus_9", email="ada2@x.io",
            subscriptions=[SubscriptionFact("sub_1", "active", first_paid_at=lead)],
        )])
        linked = {r.external_id: (r.id, r.uuid) for r in conn.execute(
            select(source_customers.c.external_id, customers.c.id, customers.c.uuid).join(customers)
        )}
        uuid = {ext: pair[1] for ext, pair in linked.items()}
        merge_customers(conn, linked["A"][0], linked["cus_9"][0], rule="manual")
        set_manual_edits(conn, linked["B"][0], {"owner": "sales@x.io"})
    asked = run(db_url, tmp_path, "sources", "remove", "old-crm")
    assert asked.returncode == 1 and "--yes" in asked.stderr
    assert "3 source customer records" in asked.stdout and "1 customers that only this source knows" in asked.stdout
    with db_engine.connect() as conn:
        assert get_source(conn, "old-crm") is not None
    done = run(db_url, tmp_path, "sources", "remove", "old-crm", "--yes", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["source_customers"] == 3 and report["customers_deleted"] == 1  # C: nobody else, no edits
    assert report["customers_kept"] == 1 and report["manual_edits_kept"] == 1 and report["merge_events_kept"] == 1
    with db_engine.connect() as conn:
        assert get_source(conn, "old-crm") is None
        survivor = conn.execute(select(customers).where(customers.c.uuid == uuid["cus_9"])).mappings().one()
        bob = conn.execute(select(customers).where(customers.c.uuid == uuid["B"])).mappings().one()
    # The merged customer lost what only old-crm said (Ada's name and lead date), keeps billing's.
    assert survivor["name"] is None and survivor["lead_created_at"] is None and survivor["email"] == "ada2@x.io"
    assert bob["owner"] == "sales@x.io"
    assert count(db_engine, customers) == 2 and count(db_engine, source_customers) == 1
    assert count(db_engine, subscriptions) == 1
    assert count(db_engine, merge_events) == 1 and count(db_engine, manual_edits) == 1
