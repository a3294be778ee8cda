"""The one custom-attribute typing rule (funnelsync/attributes.py) at the doors the first pass missed:
the Google Sheets import and ``funnelsync customers add``; SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import timezone

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from connectors.files.rows import FileUnreadable
from funnelsync.cli import app
from jobs.imports import import_csv
from jobs.sheet_import import import_rows
from storage.customers import customer_view, resolve_customer
from storage.projection import attribute_types
from storage.schema import source_customers

UTC = timezone.utc


def _view(engine: Engine, ref: str) -> dict:  # type: ignore[type-arg]
    with engine.connect() as conn:
        cid = resolve_customer(conn, ref)
        assert cid is not None, ref
        return customer_view(conn, [cid])[0]


def _types(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return attribute_types(conn)


def _seed_integer_seats(engine: Engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    typed = tmp_path / "typed.csv"
    typed.write_text("id,email,custom.seats:integer\nA,a@x.io,5\n")
    import_csv(engine, typed, "Leads", tz=UTC)
    assert _types(engine) == {"seats": "Integer"}


def test_a_sheet_column_takes_the_attributes_type_and_refuses_what_does_not_fit(
    db_engine: Engine, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """Bare sheet text takes the declared type (12 is the number 12), a cell that does not fit is rejected
    naming the type, a column typed otherwise is refused before anything is written, and a new key's
    type is stated once."""
    _seed_integer_seats(db_engine, tmp_path)
    rows = [["id", "email", "custom.seats", "custom.plan"], ["B", "b@x.io", "12", "pro"], ["C", "c@x.io", "many", "x"]]
    summary = import_rows(db_engine, rows, "Sheet", "sheet/Leads", tz=UTC)
    assert (summary.created, summary.rejected) == (1, 1)
    assert _view(db_engine, "Sheet:B")["custom"] == {"seats": 12, "plan": "pro"}
    assert "custom.seats is of type Integer" in summary.errors[0]["reason"]
    assert summary.notes.count("custom.plan is a new custom attribute, typed String") == 1
    assert not any("custom.seats is a new" in note for note in summary.notes)
    assert _types(db_engine) == {"seats": "Integer", "plan": "String"}

    wrong = [["id", "email", "custom.seats:boolean"], ["D", "d@x.io", "true"]]
    with pytest.raises(FileUnreadable, match="custom.seats is of type Integer, not Boolean"):
        import_rows(db_engine, wrong, "Sheet", "sheet/Leads", tz=UTC)
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(source_customers)).scalar() == 2

    fresh = [["id", "email", "custom.renewal:timestamp"], ["B", "b@x.io", "2025-03-01"]]
    summary = import_rows(db_engine, fresh, "Sheet", "sheet/Other", tz=UTC)
    assert "custom.renewal is a new custom attribute, typed Timestamp" in summary.notes
    assert _types(db_engine)["renewal"] == "Timestamp"  # it was registered String (the cell's ISO text)
    assert _view(db_engine, "Sheet:B")["custom"]["renewal"] == "2025-03-01T00:00:00+00:00"


def test_a_timestamp_column_of_a_file_types_its_new_attribute_timestamp(db_engine: Engine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The output said "typed Timestamp" while the key was registered String, so a later bare
    `--set custom.renewal=soon` was accepted as text."""
    path = tmp_path / "renewals.csv"
    path.write_text("id,email,custom.renewal:timestamp\nA,a@x.io,2025-03-01\n")
    summary = import_csv(db_engine, path, "Leads", tz=UTC)
    assert "custom.renewal is a new custom attribute, typed Timestamp" in summary.notes
    assert _types(db_engine) == {"renewal": "Timestamp"}
    later = tmp_path / "later.csv"
    later.write_text("id,email,custom.renewal\nB,b@x.io,soon\n")
    assert import_csv(db_engine, later, "Leads", tz=UTC).rejected == 1


def test_customers_add_sets_custom_attributes_by_the_one_rule(
    db_url: str, db_engine: Engine, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """`customers add --set custom.seats=7` stores the number on an Integer attribute (so the filter finds
    it), refuses 'seven' naming the type and adds nothing, refuses an explicit other type, and states a new
    attribute's type."""
    _seed_integer_seats(db_engine, tmp_path)
    monkeypatch.setenv("FUNNELSYNC_DATABASE_URL", db_url)
    monkeypatch.setenv("FUNNELSYNC_TIMEZONE", "UTC")
    runner = CliRunner()

    def add(external_id: str, *sets: str):  # type: ignore[no-untyped-def]
        args = ["customers", "add", "--source", "Manual", "--external-id", external_id, "--name", external_id]
        for assignment in sets:
            args += ["--set", assignment]
        return runner.invoke(app, [*args, "--json"])

    added = add("m-1", "custom.seats=7", "custom.tier=gold", "tags=vip,b2b")
    assert added.exit_code == 0, added.output
    view = json.loads(added.stdout)
    assert view["custom"] == {"seats": 7, "tier": "gold"} and sorted(view["tags"]) == ["b2b", "vip"]
    assert "custom.tier is a new custom attribute, typed String" in added.stderr
    assert "custom.seats is a new" not in added.stderr
    found = runner.invoke(app, ["bulk-edit", "--where", "custom.seats = 7", "--set", "owner=probe", "--dry-run",
                                "--json"])
    assert json.loads(found.stdout)["applied"] == 1

    def refused(result):  # type: ignore[no-untyped-def]
        return getattr(result.exception, "exit_code", result.exit_code), f"{result.exception} {result.output}"

    code, said = refused(add("m-2", "custom.seats=seven"))
    assert code == 1 and "custom.seats is of type Integer" in said
    code, said = refused(add("m-3", "custom.seats:string=7"))
    assert code == 1 and "custom.seats is of type Integer, not String" in said
    with db_engine.connect() as conn:
        assert resolve_customer(conn, "Manual:m-2") is None and resolve_customer(conn, "Manual:m-3") is None
    code, said = refused(add("m-4", "owner=kim"))
    assert code == 2 and "--owner" in said  # a named option, not --set
    assert _types(db_engine) == {"seats": "Integer", "tier": "String"}
