"""Manual entry (customers add/edit) and bulk edit: rules, skips with reasons, overrides surviving re-imports."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from funnelsync.cli import app
from funnelsync.edit_rules import skip_reason
from jobs.edits import BULK_FIELDS, EDIT_FIELDS, EditValueError, parse_assignment
from storage.customers import customer_view, resolve_customer

UTC = timezone.utc
NOW = datetime(2025, 6, 1, tzinfo=UTC)
D = lambda text: datetime.fromisoformat(text).replace(tzinfo=UTC)


# --- pure rules ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("status", "lead", "trial", "edits", "reason"),
    [
        ("New_Lead", None, None, {"lead_status": "Working_Lead"}, None),
        ("Active", None, None, {"lead_status": "Working_Lead"}, "cannot be set on a subscriber (status Active)"),
        ("Past_Due", None, None, {"owner": "kim"}, None),
        ("New_Lead", None, None, {"lead_created_at": D("2025-07-01")}, "lies in the future"),
        ("New_Lead", D("2025-03-01"), None, {"free_trial_started_at": D("2025-02-01")}, "would precede the lead date"),
        ("New_Lead", None, D("2025-02-01"), {"lead_created_at": D("2025-03-01")}, "would precede the lead date"),
        ("New_Lead", D("2025-03-01"), D("2025-03-05"), {"lead_created_at": D("2025-03-04")}, None),
        ("New_Lead", D("2025-03-01"), D("2025-02-01"), {"free_trial_started_at": None}, None),
        # Dates already in disagreement (as imported): an edit of other fields is not judged by them.
        ("New_Lead", D("2025-03-01"), D("2025-02-01"), {"owner": "kim", "tag.vip": True}, None),
        ("New_Lead", D("2025-03-01"), D("2025-02-01"), {"lead_created_at": D("2025-03-02")}, "would precede"),
    ],
)
def test_skip_reason(status, lead, trial, edits, reason) -> None:  # type: ignore[no-untyped-def]
    got = skip_reason(status, lead, trial, edits, NOW)
    assert (got is None) if reason is None else (reason in got)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("field", "text", "expected"),
    [
        ("lead_status", "working", {"lead_status": "Working_Lead"}),
        ("tags", "vip, beta", {"tag.vip": True, "tag.beta": True}),
        ("tag.churn-risk", "false", {"tag.churn-risk": False}),
        ("custom.seats:integer", "12", {"custom.seats": 12}),
        ("custom.plan", "Pro", {"custom.plan": "Pro"}),
        ("lead_created_at", "2025-01-31", {"lead_created_at": D("2025-01-31")}),
        ("lead_created_at", "31/01/2025", {"lead_created_at": D("2025-01-31")}),
        ("owner", "", {"owner": None}),
    ],
)
def test_parse_assignment(field: str, text: str, expected: dict) -> None:  # type: ignore[type-arg]
    assert parse_assignment(field, text, BULK_FIELDS, UTC) == expected


@pytest.mark.parametrize(
    ("field", "text", "allowed", "message"),
    [
        ("name", "X", BULK_FIELDS, "cannot be edited here"),
        ("lead_status", "Active", BULK_FIELDS, "not a lead status"),
        ("lead_created_at", "03/04/2025", BULK_FIELDS, "day-first and as month-first"),
        ("custom.seats:integer", "many", BULK_FIELDS, "not an integer"),
        ("country", "Atlantis", EDIT_FIELDS, "not a country"),
    ],
)
def test_parse_assignment_errors(field: str, text: str, allowed: tuple, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(EditValueError, match=message):
        parse_assignment(field, text, allowed, UTC)


# --- through the CLI, on both databases --------------------------------------------------------------

@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FUNNELSYNC_DATABASE_URL", db_url)
    monkeypatch.setenv("FUNNELSYNC_TIMEZONE", "UTC")
    runner = CliRunner()

    def run(*args: str, code: int = 0):  # type: ignore[no-untyped-def]
        result = runner.invoke(app, list(args))
        exit_code = getattr(result.exception, "exit_code", result.exit_code) if result.exception else result.exit_code
        assert exit_code == code, (result.output, result.exception)
        return result

    return run


def _view(engine: Engine, ref: str) -> dict:  # type: ignore[type-arg]
    with engine.connect() as conn:
        cid = resolve_customer(conn, ref)
        assert cid is not None, ref
        return customer_view(conn, [cid])[0]


def test_customers_add_and_edit(cli, db_engine: Engine) -> None:  # type: ignore[no-untyped-def]
    out = json.loads(cli("customers", "add", "--source", "Manual", "--external-id", "m-1", "--name", "Ada",
                         "--email", "ada@x.io", "--lead-created-at", "2025-01-10", "--free-trial-started-at",
                         "2025-01-12 09:30", "--json").stdout)
    assert out["lead_created_at"] == "2025-01-10T00:00:00+00:00"
    assert out["free_trial_started_at"] == "2025-01-12T09:30:00+00:00"
    cli("customers", "add", "--source", "Manual", "--external-id", "m-1", "--name", "Again", code=1)
    cli("customers", "add", "--source", "Manual", "--external-id", "m-2", "--name", "Bad",
        "--lead-created-at", "2025-02-10", "--free-trial-started-at", "2025-02-01", code=1)
    # A value that does not parse is a usage error (2), as it is for `customers edit --set`; nothing is added.
    cli("customers", "add", "--source", "Manual", "--external-id", "m-3", "--name", "Bad",
        "--lead-created-at", "2025-13-01", code=2)
    cli("customers", "add", "--source", "Manual", "--external-id", "m-3", "--name", "Bad", "--country", "Atlantis",
        code=2)
    cli("customers", "edit", "Manual:m-1", "--set", "lead_created_at=2025-13-01", code=2)
    with db_engine.connect() as conn:
        assert resolve_customer(conn, "Manual:m-3") is None

    edited = json.loads(cli("customers", "edit", "Manual:m-1", "--set", "lead_created_at=2025-01-05",
                            "--set", "tags=vip", "--set", "custom.seats:integer=3", "--json").stdout)
    assert edited["lead_created_at"] == "2025-01-05T00:00:00+00:00"
    assert edited["tags"] == ["vip"] and edited["custom"] == {"seats": 3}
    assert set(edited["manual_edits"]) == {"lead_created_at", "tag.vip", "custom.seats"}
    result = cli("customers", "edit", "Manual:m-1", "--set", "free_trial_started_at=2025-01-01", code=1)
    assert result.exception is not None and "would precede the lead date" in str(result.exception)
    cli("customers", "edit", "Manual:m-1", "--unset", "lead_created", code=2)  # a typo no longer passes silently
    assert _view(db_engine, "Manual:m-1")["lead_created_at"] == "2025-01-05T00:00:00+00:00"
    cli("customers", "edit", "Manual:m-1", "--unset", "lead_created_at")
    assert _view(db_engine, "Manual:m-1")["lead_created_at"] == "2025-01-10T00:00:00+00:00"


def test_manual_edits_survive_reimport_of_the_same_source(cli, db_engine: Engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = tmp_path / "a.csv"
    first.write_text("id,email,signup date,trial start,owner\nA,a@x.io,2025-01-10,2025-01-20,sam\n")
    cli("import", "csv", str(first), "--source", "Leads", "--json")
    cli("customers", "edit", "Leads:A", "--set", "lead_created_at=2025-01-02", "--set", "owner=kim",
        "--set", "tag.hot=true")
    second = tmp_path / "b.csv"
    second.write_text("id,email,signup date,trial start,owner,tags\nA,new@x.io,2025-01-15,2025-01-25,lee,cold\n")
    out = json.loads(cli("import", "csv", str(second), "--source", "Leads", "--json").stdout)
    assert out["updated"] == 1
    a = _view(db_engine, "Leads:A")
    assert a["lead_created_at"] == "2025-01-02T00:00:00+00:00"  # the override wins over the re-import
    assert a["owner"] == "kim" and "hot" in a["tags"]
    assert a["email"] == "new@x.io" and a["free_trial_started_at"] == "2025-01-25T00:00:00+00:00"


def _population(tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "pop.csv"
    path.write_text(
        "id,email,country,signup date,trial start,customer since\n"
        "L1,l1@x.io,US,2025-01-10,2025-01-12,\n"
        "L2,l2@x.io,US,2025-01-10,,\n"
        "S1,s1@x.io,DE,2025-01-01,2025-01-02,2025-01-20\n"
        "L3,l3@x.io,DE,2025-02-10,,\n"
    )
    cli("import", "csv", str(path), "--source", "Leads", "--json")


def test_bulk_edit_by_ids_skips_with_reasons(cli, db_engine: Engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _population(tmp_path, cli)
    ids = tmp_path / "ids.txt"
    ids.write_text("Leads:L1\nLeads:L2\n# a comment\n\nLeads:S1\nLeads:nope\nl3@X.io\n")
    out = json.loads(cli("bulk-edit", "--ids", str(ids), "--set", "lead_status=Qualified_Lead", "--set", "owner=kim",
                         "--json").stdout)
    assert out["applied"] == 3 and out["skipped"] == 2
    reasons = {s["customer"]: s["reason"] for s in out["skips"]}
    assert "cannot be set on a subscriber" in reasons["Leads:S1"] and reasons["Leads:nope"] == "no such customer"
    assert _view(db_engine, "Leads:L3")["lead_status"] == "Qualified_Lead"
    assert _view(db_engine, "Leads:S1")["owner"] is None

    out = json.loads(cli("bulk-edit", "--ids", str(ids), "--set", "lead_created_at=2025-01-13", "--json").stdout)
    reasons = {s["customer"]: s["reason"] for s in out["skips"]}
    assert out["applied"] == 2  # L2 and L3 have no trial date
    assert "would precede the lead date" in reasons["Leads:L1"]  # L1's trial started 2025-01-12
    assert "would precede the lead date" in reasons["Leads:S1"]
    future = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    out = json.loads(cli("bulk-edit", "--ids", str(ids), "--set", f"free_trial_started_at={future}", "--json").stdout)
    assert out["applied"] == 0 and all(
        "future" in s["reason"] or s["reason"] == "no such customer" for s in out["skips"]
    )


def test_bulk_edit_judges_only_the_fields_it_changes(cli, db_engine: Engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # An import may bring a trial date before the lead date (the vendor said so); an owner-only bulk
    # edit applies to that customer, a lead-date edit that keeps the disagreement is still skipped.
    path = tmp_path / "odd.csv"
    path.write_text("id,email,signup date,trial start\nO1,o1@x.io,2025-03-01,2025-02-01\nO2,o2@x.io,2025-01-01,\n")
    cli("import", "csv", str(path), "--source", "Leads", "--json")
    assert _view(db_engine, "Leads:O1")["free_trial_started_at"] == "2025-02-01T00:00:00+00:00"
    out = json.loads(cli("bulk-edit", "--where", "source = Leads", "--set", "owner=kim", "--json").stdout)
    assert (out["applied"], out["skipped"], out["skips"]) == (2, 0, [])
    assert _view(db_engine, "Leads:O1")["owner"] == "kim"
    out = json.loads(cli("bulk-edit", "--where", "source = Leads", "--set", "lead_created_at=2025-02-15",
                         "--json").stdout)
    assert (out["applied"], out["skipped"]) == (1, 1)
    assert "would precede the lead date" in out["skips"][0]["reason"]
    assert _view(db_engine, "Leads:O1")["lead_created_at"] == "2025-03-01T00:00:00+00:00"


def test_bulk_edit_where_and_csv(cli, db_engine: Engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _population(tmp_path, cli)
    out = json.loads(cli("bulk-edit", "--where", "country = US", "--set", "tags=us-team", "--json").stdout)
    assert (out["applied"], out["skipped"]) == (2, 0)
    assert _view(db_engine, "Leads:L2")["tags"] == ["us-team"] and _view(db_engine, "Leads:L3")["tags"] == []
    cli("bulk-edit", "--where", "country = = US", "--set", "owner=x", code=2)

    rows = tmp_path / "edits.csv"
    rows.write_text(
        "data_source;external_id;lead_status;free_trial_started_at;custom.region\n"
        "Leads;L2;working;2025-01-15;west\n"
        "Leads;L3;;2025-01-01;east\n"  # trial before L3's lead date
        "Leads;L1;bogus;;\n"
    )
    out = json.loads(cli("bulk-edit", "--csv", str(rows), "--set", "owner=ann", "--json").stdout)
    assert (out["applied"], out["skipped"]) == (1, 2)
    l2 = _view(db_engine, "Leads:L2")
    assert (l2["lead_status"], l2["owner"], l2["custom"]) == ("Working_Lead", "ann", {"region": "west"})
    assert l2["free_trial_started_at"] == "2025-01-15T00:00:00+00:00"
    reasons = [s["reason"] for s in out["skips"]]
    assert any("precede" in r for r in reasons) and any("row 4" in r and "lead status" in r for r in reasons)


def test_bulk_edit_ids_file_not_utf8_changes_nothing(cli, db_engine: Engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Used to apply the lines before the bad byte's block, then exit 1 with the bare codec message.
    cli("customers", "add", "--source", "Manual", "--external-id", "m-1", "--name", "Ada")
    ids = tmp_path / "ids.txt"
    ids.write_bytes(b"Manual:m-1\n\xe9t\xe9@example.com\n")
    result = cli("bulk-edit", "--ids", str(ids), "--set", "owner=kim@example.com", code=2)
    assert "line 2 is not UTF-8" in str(result.exception) + result.output
    assert _view(db_engine, "Manual:m-1")["owner"] is None


def test_bulk_edit_csv_cell_with_nul_skips_its_row(cli, db_engine: Engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # PostgreSQL text cannot hold NUL: the bulk edit crashed there with a DataError traceback.
    cli("customers", "add", "--source", "Manual", "--external-id", "m-1", "--name", "Ada")
    cli("customers", "add", "--source", "Manual", "--external-id", "m-2", "--name", "Bob")
    rows = tmp_path / "edits.csv"
    rows.write_bytes(b"customer,owner,custom.plan\nManual:m-1,a\x00b,pro\nManual:m-2,kim,p\x00q\n"
                     b"Manual:m-2,kim,pro\n")
    out = json.loads(cli("bulk-edit", "--csv", str(rows), "--json").stdout)
    assert (out["applied"], out["skipped"]) == (1, 2)
    assert all("NUL byte" in s["reason"] for s in out["skips"])
    assert _view(db_engine, "Manual:m-1")["owner"] is None
    assert _view(db_engine, "Manual:m-2")["custom"] == {"plan": "pro"}


def _matching(cli, where: str) -> int:  # type: ignore[no-untyped-def]
    return int(json.loads(cli("bulk-edit", "--where", where, "--set", "owner=probe", "--dry-run", "--json").stdout)[
        "applied"])


def test_custom_attribute_types_hold_across_cli_csv_and_bulk_edit(  # type: ignore[no-untyped-def]
    cli, db_engine: Engine, tmp_path: Path
) -> None:
    """One typing rule: bare text takes the attribute's declared type, a value that does not fit is refused
    naming the type, a new attribute's type is stated once."""
    typed = tmp_path / "typed.csv"
    typed.write_text("id,email,custom.seats:integer\nA,a@x.io,5\nB,b@x.io,3\n")
    first = cli("import", "csv", str(typed), "--source", "Leads", "--json")
    assert "custom.seats is a new custom attribute, typed Integer" in first.output

    edited = cli("customers", "edit", "Leads:A", "--set", "custom.seats=7", "--json")
    assert json.loads(edited.stdout)["custom"]["seats"] == 7  # a number, not the string "7"
    assert _matching(cli, "custom.seats = 7") == 1 and _matching(cli, "custom.seats >= 3") == 2
    bad = cli("customers", "edit", "Leads:A", "--set", "custom.seats=seven", code=1)
    assert "custom.seats is of type Integer" in str(bad.exception)
    clash = cli("customers", "edit", "Leads:A", "--set", "custom.seats:string=7", code=1)
    assert "custom.seats is of type Integer, not String" in str(clash.exception)
    assert _view(db_engine, "Leads:A")["custom"]["seats"] == 7

    fresh = cli("customers", "edit", "Leads:A", "--set", "custom.plan=pro")
    assert "custom.plan is a new custom attribute, typed String" in fresh.output

    untyped = tmp_path / "untyped.csv"
    untyped.write_text("id,email,custom.seats\nC,c@x.io,12\nB,b@x.io,many\n")
    out = json.loads(cli("import", "csv", str(untyped), "--source", "Leads", "--json", code=3).stdout)
    assert out["rejected"] == 1 and "custom.seats is of type Integer" in json.dumps(out)
    assert _view(db_engine, "Leads:B")["custom"]["seats"] == 3 and _matching(cli, "custom.seats = 12") == 1
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("id,email,custom.seats:boolean\nA,a@x.io,true\n")
    refused = cli("import", "csv", str(wrong), "--source", "Leads", code=2)
    assert "custom.seats is of type Integer, not Boolean" in str(refused.exception) + refused.output

    bulk = json.loads(cli("bulk-edit", "--where", "source = Leads", "--set", "custom.seats=9", "--json").stdout)
    assert bulk["applied"] == 3 and _matching(cli, "custom.seats = 9") == 3
    bulk = json.loads(cli("bulk-edit", "--where", "source = Leads", "--set", "custom.seats=lots", "--json").stdout)
    assert bulk["applied"] == 0 and all("custom.seats is of type Integer" in s["reason"] for s in bulk["skips"])
