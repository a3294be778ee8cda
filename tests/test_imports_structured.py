"""Structured CSV import (strict templates), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from connectors.files.rows import FileUnreadable
from connectors.files.structured_csv import SAMPLES_DIR
from jobs.imports import import_structured
from storage.customers import resolve_customer
from storage.schema import contacts, data_sources, source_customers

UTC = timezone.utc


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _count(engine: Engine, table) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_sample_templates_import_and_reimport_unchanged(db_engine: Engine) -> None:
    first = import_structured(db_engine, SAMPLES_DIR / "customers.csv", "Structured", "customers", tz=UTC)
    assert (first.created, first.rejected) == (2, 0)
    people = import_structured(db_engine, SAMPLES_DIR / "contacts.csv", "Structured", "contacts", tz=UTC)
    assert (people.created, people.rejected) == (2, 0)
    again = import_structured(db_engine, SAMPLES_DIR / "contacts.csv", "Structured", "contacts", tz=UTC)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)
    assert import_structured(db_engine, SAMPLES_DIR / "customers.csv", "Structured", "customers", tz=UTC).unchanged == 2
    with db_engine.connect() as conn:
        cid = resolve_customer(conn, "Structured:cus-1001")
        row = conn.execute(select(contacts).where(contacts.c.customer_id == cid)).one()
    assert (row.first_name, row.title, row.notes) == ("Jane", "CTO", "Signed the trial, wants SSO")


@pytest.mark.parametrize(
    ("kind", "header", "message"),
    [
        ("customers", "external_id,name,email,favourite_colour", "unknown column 'favourite_colour'"),
        ("customers", "external_id,email", "missing required column name"),
        ("customers", "Customer ID,Name", "unknown column 'Customer ID'.*missing required column external_id"),
        ("contacts", "first_name,email", "missing required column customer_external_id"),
    ],
)
def test_template_refuses_the_file_before_writing(db_engine: Engine, tmp_path: Path, kind: str, header: str,
                                                  message: str) -> None:
    path = _write(tmp_path, "s.csv", header + "\nx,y\n")
    with pytest.raises(FileUnreadable, match=message):
        import_structured(db_engine, path, "Structured", kind, tz=UTC)
    assert _count(db_engine, data_sources) == 0 and _count(db_engine, source_customers) == 0


def test_structured_rows_rejected_with_reasons(db_engine: Engine, tmp_path: Path) -> None:
    customers_file = _write(tmp_path, "c.csv", (
        "EXTERNAL_ID,Name,email,lead_created_at\n"  # column names are compared case-insensitively
        "a1,Ann,ann@x.io,2025-01-02\n"
        "a2,,bob@x.io,2025-01-02\n"  # row 3: name is required
        ",Cy,cy@x.io,\n"  # row 4: external_id is required (no email keying in the strict template)
    ))
    summary = import_structured(db_engine, customers_file, "S", "customers", tz=UTC)
    assert (summary.created, summary.rejected) == (1, 2)
    assert [(e["row"], e["column"], e["reason"]) for e in summary.errors] == [
        (3, "Name", "Name is required"), (4, "EXTERNAL_ID", "EXTERNAL_ID is required")]
    contacts_file = _write(tmp_path, "p.csv", (
        "customer_external_id,first_name,last_name,email\n"
        "a1,Ann,Smith,ann@x.io\n"
        "a1,Al,Smith,\n"  # a second contact of the same customer, matched by name
        "zz,Nobody,,nobody@x.io\n"  # row 4: unknown customer
        "a1,Ann,Smith,ann@x.io\n"  # row 5: duplicate contact
    ))
    people = import_structured(db_engine, contacts_file, "S", "contacts", tz=UTC)
    assert (people.created, people.rejected) == (2, 2)
    assert [e["row"] for e in people.errors] == [4, 5]
    assert "import the customers first" in people.errors[0]["reason"]


def test_cli_structured_refusal_exit_code(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from funnelsync.cli import app

    monkeypatch.setenv("FUNNELSYNC_DATABASE_URL", db_url)
    path = _write(tmp_path, "s.csv", "external_id,name,shoe_size\n1,A,42\n")
    result = CliRunner().invoke(
        app, ["import", "structured", str(path), "--source", "S", "--type", "customers", "--json"]
    )
    assert getattr(result.exception, "exit_code", None) == 2
    assert "shoe_size" in str(result.exception) and "nothing imported" in str(result.exception)
    good = CliRunner().invoke(app, ["import", "structured", str(SAMPLES_DIR / "customers.csv"), "--source", "S",
                                    "--type", "customers", "--json"])
    assert good.exit_code == 0 and '"created": 2' in good.stdout
