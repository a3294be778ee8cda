"""Google Sheets import through real gspread against a local fake Sheets API, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from connectors.files.sheets import SheetsError, open_client, spreadsheet_key
from fakes.google_sheets import SHEET_ID, FakeSheets, RedirectSession
from jobs.sheet_import import import_sheet, import_sheet_source
from storage.customers import customer_view, resolve_customer
from storage.schema import data_sources, import_row_fingerprints, source_customers

UTC = timezone.utc
ROWS = [
    ["Customer ID", "Name", "Email", "Signup Date", "Trial Start", "Notes"],
    ["L-1", "Ann", "ann@acme.io", "1/15/2024", "1/20/2024", "first"],
    ["L-2", "Bob", "bob@beta.io", "2/1/2024"],  # ragged: Google drops trailing empty cells
    [],  # a blank row in the sheet
    ["L-3", "Cy", "cy@gamma.io", "2/30/2024"],  # a date in neither order: its row is rejected
    ["", "Dee", "dee@delta.io", "1/2/2024 9:30 PM"],  # keyed by email
]


@pytest.fixture
def sheets() -> Iterator[FakeSheets]:
    fake = FakeSheets().start()
    yield fake
    fake.stop()


def _client(fake: FakeSheets):  # type: ignore[no-untyped-def]
    return open_client(session=RedirectSession(fake.base_url))


def _view(engine: Engine, ref: str) -> dict:  # type: ignore[type-arg]
    with engine.connect() as conn:
        cid = resolve_customer(conn, ref)
        assert cid is not None, ref
        return customer_view(conn, [cid])[0]


def test_sheet_import_with_a_429_then_only_changed_rows(db_engine: Engine, sheets: FakeSheets) -> None:
    sheets.set_rows(ROWS)
    sheets.fail_next(429)  # gspread's BackOffHTTPClient waits it out (2 s) and retries
    url = f"https://docs.google.com/spreadsheets/d/{SHEET_ID}/edit#gid=0"
    summary = import_sheet(db_engine, url, "Leads", "Sheet leads", client=_client(sheets), tz=UTC)
    assert (summary.created, summary.updated, summary.unchanged, summary.rejected) == (3, 0, 0, 1)
    assert summary.errors[0]["row"] == 5 and summary.errors[0]["column"] == "Signup Date"
    assert sheets.requests[0][1] == sheets.requests[1][1]  # the 429'd request was retried
    assert any("/values/" in path for _, path in sheets.requests)
    ann = _view(db_engine, "Sheet leads:L-1")
    assert ann["lead_created_at"] == "2024-01-15T00:00:00+00:00"  # month-first, decided by the column
    assert _view(db_engine, "Sheet leads:email:dee@delta.io")["lead_created_at"] == "2024-01-02T21:30:00+00:00"
    with db_engine.connect() as conn:
        assert conn.execute(select(data_sources.c.kind)).scalar_one() == "google_sheets"
        assert conn.execute(select(func.count()).select_from(import_row_fingerprints)).scalar_one() == 3

    # Second run: one row edited, one row removed, one added, the bad row still bad.
    rows = [list(r) for r in ROWS]
    rows[2] = ["L-2", "Bob Stone", "bob@beta.io", "2/1/2024"]
    del rows[1]
    rows.append(["L-4", "Eve", "eve@eps.io", "3/3/2024"])
    sheets.set_rows(rows)
    with db_engine.connect() as conn:
        before = {r.external_id: r.updated_at for r in conn.execute(select(source_customers))}
    again = import_sheet_source(db_engine, "Sheet leads", client=_client(sheets))
    assert (again.created, again.updated, again.unchanged, again.rejected) == (1, 1, 1, 1)
    bob = _view(db_engine, "Sheet leads:L-2")
    # No value left in the column decides its order ("2/1/2024", "3/3/2024"…): the order the first run
    # decided (month-first, kept in the source's settings) is used rather than refusing the sheet.
    assert bob["name"] == "Bob Stone" and bob["lead_created_at"] == "2024-02-01T00:00:00+00:00"
    with db_engine.connect() as conn:
        after = {r.external_id: r.updated_at for r in conn.execute(select(source_customers))}
        keys = {r.row_key for r in conn.execute(select(import_row_fingerprints.c.row_key))}
    assert after["email:dee@delta.io"] == before["email:dee@delta.io"]
    assert keys == {"L-2", "L-4", "email:dee@delta.io"}  # L-1 left the sheet: its fingerprint is gone

    third = import_sheet_source(db_engine, "Sheet leads", client=_client(sheets))
    assert (third.created, third.updated, third.unchanged, third.rejected) == (0, 0, 3, 1)
    # A full refresh (sheet taken from the source's settings) re-applies every row: the upsert finds
    # them unchanged and writes nothing.
    refresh = import_sheet(db_engine, source_name="Sheet leads", client=_client(sheets), full_refresh=True)
    assert (refresh.created, refresh.updated, refresh.unchanged, refresh.rejected) == (0, 0, 3, 1)
    with db_engine.connect() as conn:
        assert {r.external_id: r.updated_at for r in conn.execute(select(source_customers))} == after


def test_missing_spreadsheet_and_worksheet_fail_clearly(db_engine: Engine, sheets: FakeSheets) -> None:
    sheets.set_rows(ROWS)
    with pytest.raises(SheetsError, match="no worksheet 'Other'.*'Leads'"):
        import_sheet(db_engine, SHEET_ID, "Other", "S", client=_client(sheets), tz=UTC)
    with pytest.raises(SheetsError, match="not found"):
        import_sheet(db_engine, "1NoSuchSheetId_abcdefghijklmnopqrstuvwx", "Leads", "S", client=_client(sheets), tz=UTC)
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(data_sources)).scalar_one() == 0


def test_spreadsheet_key_and_credentials_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert spreadsheet_key(f"https://docs.google.com/spreadsheets/d/{SHEET_ID}/edit") == SHEET_ID
    with pytest.raises(SheetsError):
        spreadsheet_key("not an id")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with pytest.raises(SheetsError, match="--credentials"):
        open_client(None)
    bad = tmp_path / "key.json"
    bad.write_text(json.dumps({"type": "service_account"}))
    with pytest.raises(SheetsError, match="not a service-account key"):
        open_client(bad)


def test_cli_import_sheet_json(db_url: str, db_engine: Engine, sheets: FakeSheets,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from funnelsync.cli import app

    sheets.set_rows(ROWS)
    monkeypatch.setenv("FUNNELSYNC_DATABASE_URL", db_url)
    monkeypatch.setenv("FUNNELSYNC_TIMEZONE", "UTC")
    monkeypatch.setattr("connectors.files.sheets.open_client", lambda credentials=None: _client(sheets))
    result = CliRunner().invoke(app, ["import", "sheet", SHEET_ID, "--worksheet", "Leads", "--source", "Sheet",
                                      "--map", "Notes=custom.notes", "--json"])
    assert result.exit_code == 3, result.output
    out = json.loads(result.stdout)
    assert (out["created"], out["rejected"]) == (3, 1)
    assert _view(db_engine, "Sheet:L-1")["custom"] == {"notes": "first"}
