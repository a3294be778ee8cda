"""The schema on first use: an empty database gets it from any command; an older one is upgraded only by
``init`` (every other command says so in one line); one newer than the code is refused by name.

Each test takes a database that is really empty: a new SQLite file, or a new PostgreSQL database created
on the local server for the test and dropped after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from storage.db import current_revision, head_revision, make_engine, upgrade
from tests.conftest import POSTGRES_URL

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path):
    """The URL of a database with no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"fs_fresh_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = make_engine(POSTGRES_URL).url
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(url, *args):
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "funnelsync", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=180)


def test_import_csv_straight_after_install_creates_the_schema(empty_url):
    engine = make_engine(empty_url)
    assert inspect(engine).get_table_names() == []
    done = run(empty_url, "import", "csv", str(ROOT / "samples" / "leads.csv"), "--source", "Website leads", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["created"] == 60
    assert done.stderr.startswith("Created the funnelsync schema")
    assert current_revision(engine) == head_revision()
    again = run(empty_url, "customers", "list", "--json")
    assert again.returncode == 0 and len(json.loads(again.stdout)) == 60
    assert "Created" not in again.stderr  # only the first use creates it
    engine.dispose()


def test_an_older_schema_is_upgraded_by_init_and_named_by_every_other_command(empty_url):
    from alembic.script import ScriptDirectory

    from storage.db import MIGRATIONS_DIR

    previous = ScriptDirectory(str(MIGRATIONS_DIR)).get_revision(head_revision()).down_revision
    engine = make_engine(empty_url)
    upgrade(engine, previous)
    for args in (("customers", "list"), ("import", "csv", str(ROOT / "samples" / "leads.csv"), "--source", "L"),
                 ("metrics", "--json")):
        refused = run(empty_url, *args)
        assert refused.returncode == 1, (args, refused.stdout)
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert f"is at schema {previous}" in lines[0] and head_revision() in lines[0]
        assert "run `funnelsync init` to upgrade" in lines[0]
    assert current_revision(engine) == previous  # no command but init changes the schema
    init = run(empty_url, "init")
    assert init.returncode == 0 and f"upgraded from {previous} to schema {head_revision()}" in init.stdout
    assert run(empty_url, "customers", "list").returncode == 0
    engine.dispose()


def test_a_schema_newer_than_the_code_is_refused_by_name(empty_url):
    engine = make_engine(empty_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099_from_the_future'"))
    for args in (("customers", "list"), ("init",)):
        refused = run(empty_url, *args)
        assert refused.returncode == 1, (args, refused.stdout)
        assert "0099_from_the_future" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
        assert "newer than this code" in refused.stderr
    assert current_revision(engine) == "0099_from_the_future"
    engine.dispose()


def test_tables_of_something_else_are_not_touched(empty_url):
    engine = make_engine(empty_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE invoices (id INTEGER PRIMARY KEY)"))
    refused = run(empty_url, "customers", "list")
    assert refused.returncode == 1 and "no funnelsync schema version" in refused.stderr
    assert inspect(engine).get_table_names() == ["invoices"]
    engine.dispose()
