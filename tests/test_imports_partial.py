"""Re-imports that map fewer columns, or leave cells empty, change only what they map, on SQLite and
PostgreSQL: flexible CSV (keyed by id and by email), structured customers and contacts."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from jobs.imports import import_csv, import_structured
from storage.customers import customer_view, resolve_customer
from storage.metrics import funnel_series
from storage.schema import contacts, source_customers

UTC = timezone.utc
ROOT = Path(__file__).resolve().parents[1]

FULL = (
    "external_id,name,email,country,signup date,trial start,tags,plan\n"
    "A,Ann Smith,ann@acme.io,US,2024-01-05,2024-01-09,\"vip,beta\",Pro\n"
    "B,Bob Stone,bob@beta.io,DE,2024-01-10,,,Basic\n"
    "C,Cid Moss,cid@gamma.io,FR,2024-01-20,,,\n"
)


def _write(tmp_path: Path, text: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _view(engine: Engine, ref: str) -> dict:  # type: ignore[type-arg]
    with engine.connect() as conn:
        cid = resolve_customer(conn, ref)
        assert cid is not None, ref
        return customer_view(conn, [cid])[0]


def _january(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        row = funnel_series(conn, date(2024, 1, 1), date(2024, 1, 31), "month", tz=None)[0]
    return row["leads"], row["free_trials"]


def _ann_as_first_imported(ann: dict) -> None:  # type: ignore[type-arg]
    assert ann["name"] == "Ann Smith" and ann["email"] == "ann@acme.io" and ann["country"] == "US"
    assert ann["lead_created_at"] == "2024-01-05T00:00:00+00:00"
    assert ann["free_trial_started_at"] == "2024-01-09T00:00:00+00:00"
    assert sorted(ann["tags"]) == ["beta", "vip"] and ann["custom"] == {"plan": "Pro"}


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNNELSYNC_TIMEZONE", "UTC")


def test_a_file_mapping_only_owner_changes_only_the_owner(db_engine: Engine, tmp_path: Path) -> None:
    import_csv(db_engine, _write(tmp_path, FULL, "full.csv"), "M", {"plan": "custom.plan"}, tz=UTC)
    assert _january(db_engine) == (3, 1)
    own = _write(tmp_path, "external_id,owner\nA,new-owner@x.io\n", "own.csv")
    summary = import_csv(db_engine, own, "M", tz=UTC)
    assert (summary.created, summary.updated, summary.unchanged) == (0, 1, 0)
    ann = _view(db_engine, "M:A")
    assert ann["owner"] == "new-owner@x.io"
    _ann_as_first_imported(ann)
    assert _january(db_engine) == (3, 1)
    # The same narrow file again changes nothing, and the full file again finds only the owner different
    # from what it says... which it does not map either: nothing changes.
    assert import_csv(db_engine, own, "M", tz=UTC).unchanged == 1
    again = import_csv(db_engine, _write(tmp_path, FULL, "full.csv"), "M", {"plan": "custom.plan"}, tz=UTC)
    assert (again.updated, again.unchanged) == (0, 3)
    assert _view(db_engine, "M:A")["owner"] == "new-owner@x.io"


def test_a_file_keyed_by_email_changes_only_what_it_maps(db_engine: Engine, tmp_path: Path) -> None:
    import_csv(db_engine, _write(tmp_path, FULL, "full.csv"), "M", {"plan": "custom.plan"}, tz=UTC)
    by_email = _write(tmp_path, "email,owner,plan\nann@acme.io,kim,Enterprise\n", "owner.csv")
    summary = import_csv(db_engine, by_email, "M", {"plan": "custom.plan"}, tz=UTC)
    assert (summary.created, summary.updated) == (0, 1)
    ann = _view(db_engine, "M:A")
    assert ann["owner"] == "kim" and ann["custom"] == {"plan": "Enterprise"}
    assert ann["name"] == "Ann Smith" and ann["country"] == "US" and sorted(ann["tags"]) == ["beta", "vip"]
    assert ann["free_trial_started_at"] == "2024-01-09T00:00:00+00:00"
    assert _january(db_engine) == (3, 1)
    # Keyed by email, rows have no row digest: the unchanged re-import is found unchanged by the upsert.
    assert import_csv(db_engine, by_email, "M", {"plan": "custom.plan"}, tz=UTC).unchanged == 1


def test_empty_cells_keep_the_stored_value_unless_asked_to_clear(db_engine: Engine, tmp_path: Path) -> None:
    import_csv(db_engine, _write(tmp_path, FULL, "full.csv"), "M", {"plan": "custom.plan"}, tz=UTC)
    blanks = _write(tmp_path, "external_id,name,country,trial start,tags,plan,owner\nA,,,,,,sam\n", "blank.csv")
    kept = import_csv(db_engine, blanks, "M", {"plan": "custom.plan"}, tz=UTC)
    assert kept.updated == 1
    ann = _view(db_engine, "M:A")
    assert ann["owner"] == "sam"
    _ann_as_first_imported(ann)

    cleared = import_csv(db_engine, blanks, "M", {"plan": "custom.plan"}, tz=UTC, empty_cells="clear")
    assert cleared.updated == 1  # the same file read another way is read again, not skipped by its digest
    ann = _view(db_engine, "M:A")
    assert ann["name"] is None and ann["country"] is None and ann["free_trial_started_at"] is None
    assert ann["tags"] == [] and ann["custom"] == {}
    # Not mapped, not cleared: the email and the lead date stay.
    assert ann["email"] == "ann@acme.io" and ann["lead_created_at"] == "2024-01-05T00:00:00+00:00"
    assert ann["owner"] == "sam"
    assert _january(db_engine) == (3, 0)


def test_empty_subscription_cells_keep_the_subscription(db_engine: Engine, tmp_path: Path) -> None:
    first = "external_id,email,customer since\nA,a@x.io,2024-01-15\n"
    import_csv(db_engine, _write(tmp_path, first, "a.csv"), "M", tz=UTC)
    import_csv(db_engine, _write(tmp_path, "external_id,owner,customer since\nA,kim,\n", "b.csv"), "M", tz=UTC)
    a = _view(db_engine, "M:A")
    assert a["status"] == "Active" and a["subscriber_since"] == "2024-01-15T00:00:00+00:00" and a["owner"] == "kim"
    import_csv(db_engine, _write(tmp_path, "external_id,owner,customer since\nA,kim,\n", "b.csv"), "M", tz=UTC,
               empty_cells="clear")
    assert _view(db_engine, "M:A")["subscriber_since"] is None


def test_the_cli_leaves_unmapped_fields_and_offers_empty_cells(db_url: str, tmp_path: Path) -> None:
    env = dict(os.environ, FUNNELSYNC_DATABASE_URL=db_url, FUNNELSYNC_TIMEZONE="UTC", PYTHONPATH=str(ROOT))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "funnelsync", *args], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=120)

    full = _write(tmp_path, FULL, "full.csv")
    assert run("import", "csv", str(full), "--source", "M", "--map", "plan=custom.plan").returncode == 0
    own = _write(tmp_path, "external_id,owner\nA,new-owner@x.io\n", "own.csv")
    done = run("import", "csv", str(own), "--source", "M", "--json")
    assert done.returncode == 0, done.stderr
    assert '"updated": 1' in done.stdout
    shown = run("customers", "show", "M:A", "--json")
    assert shown.returncode == 0, shown.stderr
    assert "Ann Smith" in shown.stdout and "new-owner@x.io" in shown.stdout and "2024-01-09" in shown.stdout
    bad = run("import", "csv", str(own), "--source", "M", "--empty-cells", "erase")
    assert bad.returncode != 0 and "--empty-cells 'erase'" in bad.stderr


STRUCTURED = (
    "external_id,name,email,company,country,lead_created_at,free_trial_started_at\n"
    "cus-1,Acme,ops@acme.io,Acme Inc,US,2024-01-05,2024-01-09\n"
)


def test_a_narrower_structured_customers_file_changes_only_its_columns(db_engine: Engine, tmp_path: Path) -> None:
    import_structured(db_engine, _write(tmp_path, STRUCTURED, "c.csv"), "S", "customers", tz=UTC)
    narrow = _write(tmp_path, "external_id,name,city\ncus-1,Acme,Boston\n", "n.csv")
    assert import_structured(db_engine, narrow, "S", "customers", tz=UTC).updated == 1
    acme = _view(db_engine, "S:cus-1")
    assert acme["city"] == "Boston" and acme["company"] == "Acme Inc" and acme["email"] == "ops@acme.io"
    assert acme["free_trial_started_at"] == "2024-01-09T00:00:00+00:00"


def test_a_narrower_contacts_file_changes_only_its_columns(db_engine: Engine, tmp_path: Path) -> None:
    import_structured(db_engine, _write(tmp_path, STRUCTURED, "c.csv"), "S", "customers", tz=UTC)
    jane = ("customer_external_id,first_name,last_name,title,email,phone,linked_in,twitter,notes\n"
            "cus-1,Jane,Doe,CTO,jane@acme.io,+1 415 555 0100,https://www.linkedin.com/in/janedoe,@janedoe,"
            "\"Signed the trial, wants SSO\"\n")
    import_structured(db_engine, _write(tmp_path, jane, "p.csv"), "S", "contacts", tz=UTC)
    narrow = _write(tmp_path, "customer_external_id,email,first_name,title\ncus-1,jane@acme.io,Janet,\n", "q.csv")
    summary = import_structured(db_engine, narrow, "S", "contacts", tz=UTC)
    assert (summary.created, summary.updated) == (0, 1)

    def jane_row():  # type: ignore[no-untyped-def]
        with db_engine.connect() as conn:
            return conn.execute(select(contacts)).one()

    row = jane_row()
    assert (row.first_name, row.last_name, row.title, row.phone) == ("Janet", "Doe", "CTO", "+1 415 555 0100")
    assert (row.linked_in, row.twitter, row.notes) == (
        "https://www.linkedin.com/in/janedoe", "@janedoe", "Signed the trial, wants SSO")
    assert import_structured(db_engine, narrow, "S", "contacts", tz=UTC).unchanged == 1
    import_structured(db_engine, narrow, "S", "contacts", tz=UTC, empty_cells="clear")
    row = jane_row()
    assert row.title is None and row.first_name == "Janet" and row.last_name == "Doe"


def test_a_partial_record_of_a_new_key_creates_it_with_what_it_has(db_engine: Engine, tmp_path: Path) -> None:
    import_csv(db_engine, _write(tmp_path, FULL, "full.csv"), "M", {"plan": "custom.plan"}, tz=UTC)
    import_csv(db_engine, _write(tmp_path, "external_id,owner\nZ,zed@x.io\n", "z.csv"), "M", tz=UTC)
    zed = _view(db_engine, "M:Z")
    assert zed["owner"] == "zed@x.io" and zed["name"] is None
    with db_engine.connect() as conn:
        assert conn.execute(select(source_customers.c.external_id).order_by(
            source_customers.c.external_id)).scalars().all() == ["A", "B", "C", "Z"]


def test_contact_columns_of_a_narrower_flexible_file_leave_the_others(db_engine: Engine, tmp_path: Path) -> None:
    first = ("external_id,email,contact first name,contact last name,contact title,contact email\n"
             "A,a@x.io,Jane,Doe,CTO,jane@x.io\n")
    import_csv(db_engine, _write(tmp_path, first, "a.csv"), "M",
               {"contact first name": "contact.first_name", "contact last name": "contact.last_name",
                "contact title": "contact.title", "contact email": "contact.email"}, tz=UTC)
    narrow = "external_id,contact email,contact title\nA,jane@x.io,VP Engineering\n"
    import_csv(db_engine, _write(tmp_path, narrow, "b.csv"), "M",
               {"contact email": "contact.email", "contact title": "contact.title"}, tz=UTC)
    with db_engine.connect() as conn:
        row = conn.execute(select(contacts)).one()
    assert (row.first_name, row.last_name, row.title, row.email) == ("Jane", "Doe", "VP Engineering", "jane@x.io")


def test_a_narrower_sheet_changes_only_its_columns(db_engine: Engine) -> None:
    """The fake serves values the way the Sheets API's values.get does (fakes/google_sheets.py)."""
    from connectors.files.sheets import open_client
    from fakes.google_sheets import SHEET_ID, FakeSheets, RedirectSession
    from jobs.sheet_import import import_sheet

    fake = FakeSheets().start()
    try:
        client = open_client(session=RedirectSession(fake.base_url))
        fake.set_rows([["Customer ID", "Name", "Email", "Signup Date", "Trial Start"],
                       ["L-1", "Ann", "ann@acme.io", "2024-01-15", "2024-01-20"]])
        import_sheet(db_engine, SHEET_ID, "Leads", "Sheet", client=client, tz=UTC)
        fake.set_rows([["Customer ID", "Owner"], ["L-1", "kim"]])
        assert import_sheet(db_engine, SHEET_ID, "Leads", "Sheet", client=client, tz=UTC).updated == 1
        ann = _view(db_engine, "Sheet:L-1")
        assert ann["owner"] == "kim" and ann["name"] == "Ann" and ann["email"] == "ann@acme.io"
        assert ann["free_trial_started_at"] == "2024-01-20T00:00:00+00:00"
        fake.set_rows([["Customer ID", "Name", "Owner"], ["L-1", "", "sam"]])
        import_sheet(db_engine, SHEET_ID, "Leads", "Sheet", client=client, tz=UTC)
        assert _view(db_engine, "Sheet:L-1")["name"] == "Ann"
        import_sheet(db_engine, SHEET_ID, "Leads", "Sheet", client=client, tz=UTC, empty_cells="clear")
        ann = _view(db_engine, "Sheet:L-1")
        assert ann["name"] is None and ann["owner"] == "sam" and ann["email"] == "ann@acme.io"
    finally:
        fake.stop()


def test_the_row_digest_tells_a_narrower_file_and_the_empty_cells_mode_apart(db_engine: Engine,
                                                                             tmp_path: Path) -> None:
    from connectors.files.flexible_csv import FlexibleCsvFile

    def signature(text: str, **options: str) -> bytes:
        source = FlexibleCsvFile(_write(tmp_path, text, "sig.csv"), tz=UTC, **options)
        source.prepare()
        return source.row_signature()

    assert signature("external_id,owner\nA,kim\n") != signature("external_id,name\nA,kim\n")
    assert signature("external_id,owner\nA,kim\n") != signature("external_id,owner\nA,kim\n", empty_cells="clear")
    # The same cell values under other columns: not skipped as unchanged, and not "everything else empty".
    import_csv(db_engine, _write(tmp_path, "external_id,owner,name\nA,kim,Ann\n", "a.csv"), "M", tz=UTC)
    narrower = import_csv(db_engine, _write(tmp_path, "external_id,name\nA,kim\n", "b.csv"), "M", tz=UTC)
    assert (narrower.updated, narrower.unchanged) == (1, 0)
    a = _view(db_engine, "M:A")
    assert a["name"] == "kim" and a["owner"] == "kim"


def test_a_file_mapping_one_subscription_date_keeps_the_other(db_engine: Engine, tmp_path: Path) -> None:
    first = "external_id,email,customer since,cancelled at\nA,a@x.io,2024-01-15,2024-02-20\n"
    import_csv(db_engine, _write(tmp_path, first, "a.csv"), "M", tz=UTC)
    assert _view(db_engine, "M:A")["status"] == "Cancelled"
    since_only = "external_id,customer since\nA,2024-01-10\n"
    assert import_csv(db_engine, _write(tmp_path, since_only, "b.csv"), "M", tz=UTC).updated == 1
    a = _view(db_engine, "M:A")
    assert a["status"] == "Cancelled" and a["subscriber_since"] == "2024-01-10T00:00:00+00:00"
    assert import_csv(db_engine, _write(tmp_path, since_only, "b.csv"), "M", tz=UTC).unchanged == 1
    cancel_only = "external_id,cancelled at\nA,2024-03-01\n"
    import_csv(db_engine, _write(tmp_path, cancel_only, "c.csv"), "M", tz=UTC)
    a = _view(db_engine, "M:A")
    assert a["status"] == "Cancelled" and a["subscriber_since"] == "2024-01-10T00:00:00+00:00"


def test_a_sheet_is_unchanged_only_under_the_same_columns_and_keeps_its_empty_cells_mode(
    db_engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sheet's row fingerprints include its header: the same cell values under other columns are applied
    (not skipped as unchanged, nor read as "everything else empty"). `funnelsync import sheet
    --empty-cells clear` clears a mapped field whose cell is empty, and the scheduled re-run
    (``import_sheet_source``) keeps that mode; a column the sheet does not have is never cleared.
    The fake serves values the way the Sheets API's values.get does (fakes/google_sheets.py)."""
    from typer.testing import CliRunner

    from connectors.files.sheets import open_client
    from fakes.google_sheets import SHEET_ID, FakeSheets, RedirectSession
    from funnelsync.cli import app
    from jobs.sheet_import import import_sheet, import_sheet_source

    fake = FakeSheets().start()
    try:
        client = open_client(session=RedirectSession(fake.base_url))
        fake.set_rows([["Customer ID", "Owner", "Name", "Email"], ["L-1", "kim", "Ann", "ann@acme.io"]])
        import_sheet(db_engine, SHEET_ID, "Leads", "Sheet", client=client, tz=UTC)
        fake.set_rows([["Customer ID", "Name"], ["L-1", "kim"]])
        moved = import_sheet(db_engine, SHEET_ID, "Leads", "Sheet", client=client, tz=UTC)
        assert (moved.updated, moved.unchanged) == (1, 0)
        ann = _view(db_engine, "Sheet:L-1")
        assert (ann["name"], ann["owner"], ann["email"]) == ("kim", "kim", "ann@acme.io")

        fake.set_rows([["Customer ID", "Name", "Owner"], ["L-1", "Ann", ""]])
        monkeypatch.setenv("FUNNELSYNC_DATABASE_URL", db_url)
        monkeypatch.setattr("connectors.files.sheets.open_client", lambda credentials=None: client)
        ran = CliRunner().invoke(app, ["import", "sheet", SHEET_ID, "--worksheet", "Leads", "--source", "Sheet",
                                       "--empty-cells", "clear", "--no-merge", "--json"])
        assert ran.exit_code == 0, ran.output
        ann = _view(db_engine, "Sheet:L-1")
        assert (ann["name"], ann["owner"], ann["email"]) == ("Ann", None, "ann@acme.io")

        # The owner is set by another sheet version, then emptied again: the scheduled run clears it too.
        fake.set_rows([["Customer ID", "Name", "Owner"], ["L-1", "Ann", "sam"]])
        import_sheet_source(db_engine, "Sheet", client=client)
        assert _view(db_engine, "Sheet:L-1")["owner"] == "sam"
        fake.set_rows([["Customer ID", "Name", "Owner"], ["L-1", "Ann", ""]])
        assert import_sheet_source(db_engine, "Sheet", client=client).updated == 1
        ann = _view(db_engine, "Sheet:L-1")
        assert (ann["name"], ann["owner"], ann["email"]) == ("Ann", None, "ann@acme.io")
    finally:
        fake.stop()
