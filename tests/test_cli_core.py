"""The core commands, run as a user runs them (a real process, a real database)."""

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

from funnelsync.records import SourceCustomerRecord
from storage.sources import get_source
from storage.upsert import upsert_records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(db_url, *args, env_extra=None):
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "PYTHONPATH": ROOT, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "funnelsync", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_sources_customers_and_keys(db_engine, db_url):
    added = run(db_url, "sources", "add", "Leads CSV", "--kind", "csv", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["uuid"].startswith("ds_")
    dup = run(db_url, "sources", "add", "Leads CSV", "--kind", "csv")
    assert dup.returncode != 0 and "exists already" in dup.stderr and len(dup.stderr.strip().splitlines()) == 1
    bad = run(db_url, "sources", "add", "X", "--kind", "nope")
    assert bad.returncode != 0 and "unknown source kind" in bad.stderr

    with db_engine.begin() as conn:
        ds = get_source(conn, "Leads CSV")
        upsert_records(conn, ds.id, [SourceCustomerRecord(
            "L-1", name="Ada", email="ada@example.com",
            lead_created_at=datetime(2025, 1, 2, 3, 4, tzinfo=timezone.utc), tags=["beta"], custom={"plan": "pro"})])
    listed = run(db_url, "customers", "list", "--source", "Leads CSV", "--json")
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)
    assert len(items) == 1
    item = items[0]
    assert set(item) == {"uuid", "external_ids", "data_sources", "name", "email", "company", "country", "status",
                         "lead_status", "lead_created_at", "free_trial_started_at", "subscriber_since", "tags",
                         "custom"}
    assert item["external_ids"] == ["L-1"] and item["data_sources"] == ["Leads CSV"]
    assert item["lead_created_at"] == "2025-01-02T03:04:00+00:00"
    assert item["status"] == "New_Lead" and item["tags"] == ["beta"] and item["custom"] == {"plan": "pro"}

    shown = run(db_url, "customers", "show", "Leads CSV:L-1", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["uuid"] == item["uuid"]
    missing = run(db_url, "customers", "show", "cus_nope")
    assert missing.returncode == 1 and "no customer" in missing.stderr

    key = run(db_url, "api-keys", "create", "ci")
    assert key.returncode == 0
    assert key.stdout.strip().startswith("fsk_") and len(key.stdout.strip().splitlines()) == 1
    listed_keys = run(db_url, "api-keys", "list", "--json")
    assert key.stdout.strip() not in listed_keys.stdout
    revoked = run(db_url, "api-keys", "revoke", "ci")
    assert revoked.returncode == 0 and "Revoked 1" in revoked.stdout
    again = run(db_url, "api-keys", "revoke", "ci")
    assert again.returncode == 1 and "no live API key" in again.stderr


def test_init_twice(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    first = run(url, "init")
    second = run(url, "init")
    assert first.returncode == 0 and "upgraded" in first.stdout
    assert second.returncode == 0 and "up to date" in second.stdout


def test_usage_errors_are_one_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'u.db'}"
    missing = run(url, "sources", "add", "X")
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "--kind" in missing.stderr
    unknown = run(url, "no-such-command")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: No such command")
    helped = run(url, "--help")
    assert helped.returncode == 0 and "customers" in helped.stdout
