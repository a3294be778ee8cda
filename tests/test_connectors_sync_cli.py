"""``funnelsync sources add`` (secrets kept out of the database) and ``funnelsync sync``, as a user runs them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from sqlalchemy import Engine

from fakes.server import serve
from fakes.stripe import StripeFake
from storage.sources import get_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(
    db_url: str, home: Path, *args: str, env_extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "FUNNELSYNC_HOME": str(home), "PYTHONPATH": ROOT,
           **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "funnelsync", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_sources_add_keeps_literal_secrets_out_of_the_database(db_engine: Engine, db_url: str, tmp_path: Path) -> None:
    key = "sk_test_LITERAL_never_in_db_99"
    added = run(db_url, tmp_path, "sources", "add", "billing", "--kind", "stripe", "--set", f"api_key={key}")
    assert added.returncode == 0, added.stderr
    with db_engine.connect() as conn:
        settings = get_source(conn, "billing").settings
    assert settings["api_key"].startswith("local-secret:") and key not in json.dumps(settings)
    secret_file = tmp_path / "secrets" / settings["api_key"].split(":", 1)[1]
    assert secret_file.read_text() == key
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600

    # A refused duplicate leaves no copy of its literal key behind on disk.
    dup = run(db_url, tmp_path, "sources", "add", "billing", "--kind", "stripe", "--set", "api_key=sk_test_DUP_77")
    assert dup.returncode != 0 and "exists already" in dup.stderr
    assert [f.read_text() for f in (tmp_path / "secrets").iterdir()] == [key]

    # Nor does one refused because the database is at an older schema (only `init` upgrades it).
    from alembic.script import ScriptDirectory

    from storage.db import MIGRATIONS_DIR, head_revision, make_engine, upgrade

    old_home = tmp_path / "old"
    old_home.mkdir()
    old_engine = make_engine(f"sqlite:///{old_home}/old.db")
    upgrade(old_engine, ScriptDirectory(str(MIGRATIONS_DIR)).get_revision(head_revision()).down_revision)
    old_engine.dispose()
    refused = run(f"sqlite:///{old_home}/old.db", old_home, "sources", "add", "x", "--kind", "stripe",
                  "--set", "api_key=sk_test_UNINIT_1")
    assert refused.returncode != 0 and "funnelsync init" in refused.stderr and not (old_home / "secrets").exists()

    env_ref = run(db_url, tmp_path, "sources", "add", "billing2", "--kind", "stripe", "--set", "api_key=env:STRIPE_KEY")
    assert env_ref.returncode == 0, env_ref.stderr
    with db_engine.connect() as conn:
        assert get_source(conn, "billing2").settings["api_key"] == "env:STRIPE_KEY"

    typo = run(db_url, tmp_path, "sources", "add", "billing3", "--kind", "stripe", "--set", "apikey=x")
    assert typo.returncode != 0 and "unknown setting" in typo.stderr and len(typo.stderr.strip().splitlines()) == 1


def test_sync_command_counts_progress_and_errors(db_engine: Engine, db_url: str, tmp_path: Path) -> None:
    fake = StripeFake(n=25, page_size=10)
    with serve(fake) as base_url:
        added = run(db_url, tmp_path, "sources", "add", "stripe-live", "--kind", "stripe",
                    "--set", "api_key=env:FS_TEST_STRIPE_KEY", "--set", f"base_url={base_url}", "--set", "page_size=10")
        assert added.returncode == 0, added.stderr
        env = {"FS_TEST_STRIPE_KEY": fake.api_key}

        first = run(db_url, tmp_path, "sync", "stripe-live", "--json", env_extra=env)
        assert first.returncode == 0, first.stderr
        report = json.loads(first.stdout)
        assert report["total"]["created"] == 25 and report["total"]["fetched"] >= 25
        assert [s["stream"] for s in report["streams"]] == ["customers", "events"]

        second = run(db_url, tmp_path, "sync", "stripe-live", env_extra=env)
        assert second.returncode == 0, second.stderr
        assert "customers" in second.stdout and "unchanged" in second.stdout and "total" in second.stdout

        again = json.loads(run(db_url, tmp_path, "sync", "stripe-live", "--json", env_extra=env).stdout)
        assert again["total"]["created"] == 0 and again["total"]["updated"] == 0

        full = json.loads(
            run(db_url, tmp_path, "sync", "stripe-live", "--full-refresh", "--json", env_extra=env).stdout
        )
        assert full["full_refresh"] is True and full["total"]["unchanged"] == 25 and full["total"]["updated"] == 0

        wrong = "sk_test_WRONG_wrong_WRONG"
        bad = run(db_url, tmp_path, "sync", "stripe-live", "--json", env_extra={"FS_TEST_STRIPE_KEY": wrong})
        assert bad.returncode != 0 and bad.stdout == ""
        assert len(bad.stderr.strip().splitlines()) == 1
        assert "stripe-live" in bad.stderr and "401" in bad.stderr and "api_key" in bad.stderr
        assert wrong not in bad.stderr

        unset = run(db_url, tmp_path, "sync", "stripe-live", env_extra={"FS_TEST_STRIPE_KEY": ""})
        assert unset.returncode != 0 and "FS_TEST_STRIPE_KEY" in unset.stderr and "not set" in unset.stderr
        assert unset.stdout == ""  # no stray line from a progress display in a pipe

    unknown = run(db_url, tmp_path, "sync", "nope")
    assert unknown.returncode == 2 and "no data source named 'nope'" in unknown.stderr
