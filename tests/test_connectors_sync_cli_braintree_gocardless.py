"""``funnelsync sources add`` and ``funnelsync sync`` for Braintree and GoCardless, as a user runs them:
a real CLI process against the fake APIs served on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine

from fakes.braintree import BraintreeFake
from fakes.gocardless import GoCardlessFake
from fakes.server import serve
from storage.sources import get_source
from tests.test_connectors_sync_cli import run


def test_gocardless_sync_skips_payment_less_customers_until_full_refresh(
    db_engine: Engine, db_url: str, tmp_path: Path
) -> None:
    fake = GoCardlessFake(n=25, page_size=10)
    with serve(fake) as base_url:
        added = run(
            db_url,
            tmp_path,
            "sources",
            "add",
            "gc",
            "--kind",
            "gocardless",
            "--set",
            "access_token=env:FS_TEST_GC_TOKEN",
            "--set",
            f"base_url={base_url}",
            "--set",
            "page_size=10",
            "--set",
            "webhook_secret=literal-webhook-secret",
        )
        assert added.returncode == 0, added.stderr
        with db_engine.connect() as conn:
            settings = get_source(conn, "gc").settings
        assert settings["webhook_secret"].startswith("local-secret:")  # a secret setting: kept out of the DB
        env = {"FS_TEST_GC_TOKEN": fake.api_key}

        first = run(db_url, tmp_path, "sync", "gc", "--json", env_extra=env)
        assert first.returncode == 0, first.stderr
        report = json.loads(first.stdout)
        assert report["total"]["created"] == len(fake.expected_ids()) < 25  # only customers with a payment
        assert report["total"]["fetched"] == 25

        again = json.loads(run(db_url, tmp_path, "sync", "gc", "--json", env_extra=env).stdout)
        assert again["total"]["created"] == 0 and again["total"]["updated"] == 0

        full = json.loads(
            run(db_url, tmp_path, "sync", "gc", "--full-refresh", "--json", env_extra=env).stdout
        )
        assert full["total"]["created"] == 25 - len(fake.expected_ids()) and full["total"]["updated"] == 0

        bad = run(
            db_url, tmp_path, "sync", "gc", "--json", env_extra={"FS_TEST_GC_TOKEN": "wrong_token_123456"}
        )
        assert bad.returncode != 0 and bad.stdout == "" and len(bad.stderr.strip().splitlines()) == 1
        assert "401" in bad.stderr and "access_token" in bad.stderr and "wrong_token_123456" not in bad.stderr


def test_braintree_sync_through_the_cli(db_engine: Engine, db_url: str, tmp_path: Path) -> None:
    fake = BraintreeFake(n=25, page_size=10)
    with serve(fake) as base_url:
        settings = fake.settings()
        added = run(
            db_url,
            tmp_path,
            "sources",
            "add",
            "bt",
            "--kind",
            "braintree",
            "--set",
            f"merchant_id={settings['merchant_id']}",
            "--set",
            f"public_key={settings['public_key']}",
            "--set",
            "private_key=env:FS_TEST_BT_KEY",
            "--set",
            f"base_url={base_url}/graphql",
            "--set",
            f"gateway_url={base_url}",
            "--set",
            "page_size=10",
        )
        assert added.returncode == 0, added.stderr
        env = {"FS_TEST_BT_KEY": fake.api_key}
        first = run(db_url, tmp_path, "sync", "bt", "--json", env_extra=env)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["total"]["created"] == 25  # the first import brings every customer
        again = json.loads(run(db_url, tmp_path, "sync", "bt", "--json", env_extra=env).stdout)
        assert again["total"]["created"] == 0 and again["total"]["updated"] == 0
