"""Flexible CSV import into storage, on SQLite and PostgreSQL: counts, rejections, keying, re-import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func, select

from connectors.files.rows import FileUnreadable
from jobs.imports import import_csv
from storage.customers import customer_view, resolve_customer
from storage.edits import set_manual_edits
from storage.imports import job_rejections
from storage.schema import customers, data_sources, import_jobs, source_customers

UTC = timezone.utc
ROOT = Path(__file__).resolve().parents[1]

LEADS = (
    "Customer ID;Full Name;E-mail;Company name;Country;Zip code;Website;Signup Date;Trial Start;Tags;Plan\r\n"
    "c1;Ann Smith;ann@acme.io;Acme;US;94103;acme.io;13/01/2024;2024-01-20T10:00:00Z;\"vip,beta\";Pro\r\n"
    "c2;Bob Stone;bob@beta.io;Beta;germany;10115;beta.io;02/02/2024;;;Basic\r\n"
    "c3;Carl;carl@gamma.io;Gamma;Narnia;;;03/02/2024;;;\r\n"  # row 4: bad country
    ";No Key;;;;;;04/02/2024;;;\r\n"  # row 5: neither id nor email
    "c5;Dora;dora@delta.io;Delta;FR;;;31/02/2024;;;\r\n"  # row 6: 31 Feb
    ";Eve;Eve@Epsilon.io;Epsilon;;;;05/02/2024;;;\r\n"  # row 7: keyed by email
)


def _write(tmp_path: Path, text: str, name: str = "leads.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def _view(engine: Engine, ref: str) -> dict:  # type: ignore[type-arg]
    with engine.connect() as conn:
        cid = resolve_customer(conn, ref)
        assert cid is not None, ref
        return customer_view(conn, [cid])[0]


def test_import_creates_rejects_and_reimports_unchanged(db_engine: Engine, tmp_path: Path) -> None:
    path = _write(tmp_path, LEADS)
    summary = import_csv(db_engine, path, "Leads", {"Plan": "custom.plan"}, tz=UTC)
    assert (summary.created, summary.updated, summary.unchanged, summary.rejected) == (3, 0, 0, 3)
    assert [(e["row"], e["column"]) for e in summary.errors] == [(4, "Country"), (5, "Customer ID"), (6, "Signup Date")]
    assert summary.errors[0]["value"] == "Narnia"

    ann = _view(db_engine, "Leads:c1")
    assert ann["name"] == "Ann Smith" and ann["company"] == "Acme" and ann["zip"] == "94103"
    assert ann["lead_created_at"] == "2024-01-13T00:00:00+00:00"  # day-first, decided by the column
    assert ann["free_trial_started_at"] == "2024-01-20T10:00:00+00:00"
    assert sorted(ann["tags"]) == ["beta", "vip"] and ann["custom"] == {"plan": "Pro"}
    assert _view(db_engine, "Leads:c2")["country"] == "DE"
    assert _view(db_engine, "Leads:email:eve@epsilon.io")["email"] == "Eve@Epsilon.io"

    with db_engine.connect() as conn:
        source = conn.execute(select(data_sources).where(data_sources.c.name == "Leads")).one()
        assert source.kind == "csv"
        job = conn.execute(select(import_jobs).where(import_jobs.c.uuid == summary.job_uuid)).one()
        assert (job.status, job.created, job.rejected) == ("done", 3, 3)
        assert [r["row"] for r in job_rejections(conn, job.id)] == [4, 5, 6]
        before = {r.external_id: (r.updated_at, r.fingerprint) for r in conn.execute(select(source_customers))}

    again = import_csv(db_engine, path, "Leads", {"Plan": "custom.plan"}, tz=UTC)
    assert (again.created, again.updated, again.unchanged, again.rejected) == (0, 0, 3, 3)
    with db_engine.connect() as conn:
        after = {r.external_id: (r.updated_at, r.fingerprint) for r in conn.execute(select(source_customers))}
        assert after == before  # nothing rewritten
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 3


def test_changed_rows_update_and_keyless_rows_match_existing_by_email(db_engine: Engine, tmp_path: Path) -> None:
    import_csv(db_engine, _write(tmp_path, "id,email,name\nA1,ann@acme.io,Ann\n"), "Leads", tz=UTC)
    second = _write(tmp_path, "email,name,trial start\nANN@acme.io,Ann B.,2024-03-01\nnew@acme.io,New,\n", "b.csv")
    summary = import_csv(db_engine, second, "Leads", tz=UTC)
    assert (summary.created, summary.updated, summary.unchanged) == (1, 1, 0)
    ann = _view(db_engine, "Leads:A1")  # the keyless row updated the record keyed A1
    assert ann["name"] == "Ann B." and ann["free_trial_started_at"] == "2024-03-01T00:00:00+00:00"
    assert _view(db_engine, "Leads:email:new@acme.io")["name"] == "New"
    assert import_csv(db_engine, second, "Leads", tz=UTC).unchanged == 2


def test_new_rows_link_to_existing_customers_by_email(db_engine: Engine, tmp_path: Path) -> None:
    import_csv(db_engine, _write(tmp_path, "id,email\nS1,jo@x.io\n"), "Billing", tz=UTC)
    import_csv(db_engine, _write(tmp_path, "id,email,signup date\nL9,JO@x.io,2024-01-05\n", "l.csv"), "Leads", tz=UTC)
    jo = _view(db_engine, "Billing:S1")
    assert sorted(jo["data_sources"]) == ["Billing", "Leads"]
    assert jo["lead_created_at"] == "2024-01-05T00:00:00+00:00"


def test_date_only_values_are_midnight_in_the_account_zone(db_engine: Engine, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNNELSYNC_TIMEZONE", "America/New_York")
    import_csv(db_engine, _write(tmp_path, "id,email,lead date\nA,a@x.io,2024-01-05\n"), "Leads")
    assert _view(db_engine, "Leads:A")["lead_created_at"] == "2024-01-05T05:00:00+00:00"


def test_subscriber_since_becomes_a_subscription(db_engine: Engine, tmp_path: Path) -> None:
    text = ("id,email,trial start,customer since,cancelled at\nA,a@x.io,2024-01-01,2024-01-15,\n"
            "B,b@x.io,2024-01-01,2024-01-15,2024-02-15\n")
    import_csv(db_engine, _write(tmp_path, text), "Leads", tz=UTC)
    a, b = _view(db_engine, "Leads:A"), _view(db_engine, "Leads:B")
    assert a["status"] == "Active" and a["subscriber_since"] == "2024-01-15T00:00:00+00:00"
    assert b["status"] == "Cancelled"


def test_manual_edits_survive_reimport_with_other_values(db_engine: Engine, tmp_path: Path) -> None:
    import_csv(db_engine, _write(tmp_path, "id,email,signup date,owner\nA,a@x.io,2024-01-05,sam\n"), "Leads", tz=UTC)
    with db_engine.begin() as conn:
        cid = resolve_customer(conn, "Leads:A")
        set_manual_edits(conn, cid, {"lead_created_at": datetime(2023, 12, 1, tzinfo=UTC)}, "test")
    other = _write(tmp_path, "id,email,signup date,owner\nA,a@x.io,2024-02-09,kim\n", "other.csv")
    summary = import_csv(db_engine, other, "Leads", tz=UTC)
    assert summary.updated == 1
    a = _view(db_engine, "Leads:A")
    assert a["lead_created_at"] == "2023-12-01T00:00:00+00:00" and a["owner"] == "kim"


def test_unreadable_file_imports_nothing(db_engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(FileUnreadable, match="--date-format"):
        import_csv(db_engine, _write(tmp_path, "id,signup\nA,01/02/2024\nB,03/04/2024\n"), "Leads", tz=UTC)
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(data_sources)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 0


def test_many_batches_and_duplicates_across_batches(db_engine: Engine, tmp_path: Path) -> None:
    lines = ["id,email,name"] + [f"k{i},u{i}@x.io,N{i}" for i in range(250)] + ["k7,dup@x.io,Dup"]
    path = _write(tmp_path, "\n".join(lines) + "\n")
    summary = import_csv(db_engine, path, "Leads", batch_size=40, tz=UTC)
    assert (summary.created, summary.rejected) == (250, 1)
    assert summary.errors[0]["row"] == 252 and "row 9" in summary.errors[0]["reason"]
    again = import_csv(db_engine, path, "Leads", batch_size=40, tz=UTC)
    assert (again.unchanged, again.updated, again.rejected) == (250, 0, 1)


def _cli(db_url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FUNNELSYNC_DATABASE_URL=db_url, FUNNELSYNC_TIMEZONE="UTC", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "funnelsync", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=cwd,
        timeout=120,
    )


def test_cli_json_exit_codes_and_errors_file(db_url: str, tmp_path: Path) -> None:
    path = _write(tmp_path, LEADS)
    errors = tmp_path / "rejected.csv"
    run = _cli(db_url, "import", "csv", str(path), "--source", "Leads", "--map", "Plan=custom.plan",
               "--errors", str(errors), "--json", cwd=tmp_path)
    assert run.returncode == 3, run.stderr
    out = json.loads(run.stdout)
    assert list(out) == ["created", "updated", "unchanged", "rejected", "errors"]
    assert (out["created"], out["rejected"]) == (3, 3)
    assert out["errors"][0] == {"row": 4, "column": "Country", "value": "Narnia",
                                "reason": "not a country: use an ISO-3166 alpha-2 code such as US, DE or FR"}
    assert errors.read_text().splitlines()[0] == "row,column,value,reason"
    assert len(errors.read_text().splitlines()) == 4

    good = _write(tmp_path, "id,email\nZ,z@x.io\n", "good.csv")
    run = _cli(db_url, "import", "csv", str(good), "--source", "Leads", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "created" in run.stdout

    bad = _write(tmp_path, "name,company\nA,B\n", "bad.csv")
    run = _cli(db_url, "import", "csv", str(bad), "--source", "Leads", "--json", cwd=tmp_path)
    assert run.returncode == 2 and run.stdout == ""
    assert "external_id or email" in run.stderr and "nothing imported" in run.stderr


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("bom-semicolon.csv", b"\xef\xbb\xbfID;Name;E-mail;Signup Date\r\nm1;Zo\xc3\xab;zoe@x.io;31/01/2024\r\n"),
        ("cp1252-tab.tsv", "ID\tName\tE-mail\tSignup Date\nm1\tZoë Ærø\tzoe@x.io\t01/31/2024\n".encode("cp1252")),
        ("quoted.csv", b'ID,Name,E-mail,Signup Date,,\n\nm1,"Zo\xc3\xab, ""the"" CEO\nline 2",zoe@x.io,2024-01-31,,\n'),
    ],
)
def test_messy_files_import(db_engine: Engine, tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    summary = import_csv(db_engine, path, "Messy", tz=UTC)
    assert (summary.created, summary.rejected) == (1, 0), summary.errors
    customer = _view(db_engine, "Messy:m1")
    assert customer["name"].startswith("Zo") and customer["lead_created_at"] == "2024-01-31T00:00:00+00:00"
    assert import_csv(db_engine, path, "Messy", tz=UTC).unchanged == 1


def test_import_killed_mid_file_then_rerun_lands_every_row_once(db_engine: Engine, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import jobs.imports as imports_module

    lines = ["id,email,name"] + [f"k{i},u{i}@x.io,N{i}" for i in range(100)]
    path = _write(tmp_path, "\n".join(lines) + "\n")
    real_upsert = imports_module.upsert_prepared
    calls = {"n": 0}

    def dying_upsert(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")  # the process dies inside the third batch's transaction
        return real_upsert(*args, **kwargs)

    monkeypatch.setattr(imports_module, "upsert_prepared", dying_upsert)
    with pytest.raises(KeyboardInterrupt):
        import_csv(db_engine, path, "Leads", batch_size=30, tz=UTC)
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(source_customers)).scalar_one() == 60
        assert conn.execute(select(import_jobs.c.status)).scalar_one() == "failed"
    monkeypatch.setattr(imports_module, "upsert_prepared", real_upsert)
    summary = import_csv(db_engine, path, "Leads", batch_size=30, tz=UTC)
    assert (summary.created, summary.unchanged) == (40, 60)
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(source_customers)).scalar_one() == 100
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 100


def test_duplicate_rejections_quote_the_cell_as_written(db_engine: Engine, tmp_path: Path) -> None:
    # The rejection used to show the derived key ('email:q@x.com'), which is not in the file.
    path = _write(tmp_path, "ID,Email,Name\n,q@x.com,Q1\n,Q@X.com,Q2\n7,z@x.com,Z\n 7 ,y@x.com,Y\n")
    summary = import_csv(db_engine, path, "Dups", {}, tz=UTC)
    assert (summary.created, summary.rejected) == (2, 2)
    assert [(e["row"], e["column"], e["value"]) for e in summary.errors] == [(3, "Email", "Q@X.com"), (5, "ID", " 7 ")]
    assert all(e["reason"].startswith("duplicate key: row ") for e in summary.errors)


def test_a_directory_is_named_as_such(db_engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(FileUnreadable, match="is a directory, not a file"):
        import_csv(db_engine, tmp_path, "Dir", {}, tz=UTC)


def test_out_of_range_dates_reject_their_row_not_the_import(db_engine: Engine, tmp_path: Path) -> None:
    # A 20-digit "epoch" and 0001-01-01 read in a zone east of UTC used to crash with an OverflowError traceback.
    text = ("ID,Signup Date\nok,2025-01-05\nhuge,99999999999999999999\nms,99999999999999999\n"
            "first,0001-01-01\nlast,9999-12-31T23:00:00-05:00\n")
    summary = import_csv(db_engine, _write(tmp_path, text), "Ranges", {}, tz=ZoneInfo("Europe/Berlin"))
    assert (summary.created, summary.rejected) == (1, 4)
    assert [e["row"] for e in summary.errors] == [3, 4, 5, 6]
    assert all("years 1 to 9999" in e["reason"] for e in summary.errors)
    assert _view(db_engine, "Ranges:ok")["lead_created_at"] == "2025-01-04T23:00:00+00:00"


def test_typed_custom_values_past_json_range_reject_their_row(db_engine: Engine, tmp_path: Path, db_url: str) -> None:
    # Were stored as 1e+23 (precision lost) and as Infinity, which made `customers show --json` print invalid JSON.
    text = "ID,Seats,Amount\nok,3,1.5\nbig,99999999999999999999999,1\ninf,1,1e400\n"
    summary = import_csv(db_engine, _write(tmp_path, text), "Typed",
                         {"Seats": "custom.seats:integer", "Amount": "custom.amount:decimal"}, tz=UTC)
    assert (summary.created, summary.rejected) == (1, 2)
    assert [(e["row"], e["column"]) for e in summary.errors] == [(3, "Seats"), (4, "Amount")]
    assert _view(db_engine, "Typed:ok")["custom"] == {"seats": 3, "amount": 1.5}
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)}
    for assignment in ("custom.n:integer=99999999999999999999999", "custom.d:decimal=1e400"):
        edit = subprocess.run([sys.executable, "-m", "funnelsync", "customers", "edit", "Typed:ok", "--set", assignment,
                               "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert edit.returncode == 2 and edit.stdout == "", (edit.stdout, edit.stderr)
    shown = subprocess.run([sys.executable, "-m", "funnelsync", "customers", "show", "Typed:ok", "--json"],
                           capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert json.loads(shown.stdout)["custom"] == {"seats": 3, "amount": 1.5}


def test_unwritable_errors_file_imports_nothing(db_engine: Engine, tmp_path: Path, db_url: str) -> None:
    # Used to crash with a FileNotFoundError traceback after the import job had been started.
    path = _write(tmp_path, "ID,Name\nu1,Ann\n")
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)}
    for kind in (["csv"], ["structured", "--type", "customers"]):
        text = "external_id,name\nu1,Ann\n" if kind[0] == "structured" else "ID,Name\nu1,Ann\n"
        path.write_text(text)
        result = subprocess.run([sys.executable, "-m", "funnelsync", "import", kind[0], str(path), "--source", "Leads",
                                 *kind[1:], "--errors", str(tmp_path / "missing" / "rejected.csv")],
                                capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [result.stderr.strip()] and "Traceback" not in result.stderr
        assert "--errors" in result.stderr and "rejected.csv" in result.stderr
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(import_jobs)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(customers)).scalar() == 0


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_a_quote_never_closed_refuses_the_file(db_engine: Engine, tmp_path: Path, encoding: str) -> None:
    # The lenient reader swallowed every later line into one value: 3 rows imported as 1 odd customer, exit 0.
    broken = _write(tmp_path, 'ID,Name\n"q1,Ann\nq2,Bob\nq3,Cy\n', encoding=encoding)
    with pytest.raises(FileUnreadable, match=r"row 2: a quoted value is opened and never closed"):
        import_csv(db_engine, broken, "Quotes", {}, tz=UTC)
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar() == 0
    # A real multi-line value in the last row (LF or CRLF, trailing blank lines) still imports.
    for text in ('ID,Notes\nq1,"two\nlines"\n', 'ID,Notes\r\nq1,"two\r\nlines"\r\n\r\n', 'ID,Notes\nq1,"a ""b""\nc"'):
        summary = import_csv(db_engine, _write(tmp_path, text, encoding=encoding), "Quotes", {}, tz=UTC)
        assert summary.rejected == 0 and summary.created + summary.updated == 1, text


def test_a_date_format_with_a_bad_directive_is_refused(db_engine: Engine, tmp_path: Path, db_url: str) -> None:
    # '%Q' used to be accepted, and then every date of the file failed with "not a date".
    path = _write(tmp_path, "ID,Signup Date\nd1,05.01.2025\n")
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "funnelsync", "import", "csv", str(path), "--source", "Fmt",
                             "--date-format", "%d.%Q.%Y"], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 2 and "bad directive" in result.stderr, result.stderr
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(import_jobs)).scalar() == 0
    summary = import_csv(db_engine, path, "Fmt", {}, "%d.%m.%Y", tz=UTC)
    assert summary.created == 1 and _view(db_engine, "Fmt:d1")["lead_created_at"] == "2025-01-05T00:00:00+00:00"


def test_nul_bytes_reject_their_row_on_both_databases(db_engine: Engine, tmp_path: Path) -> None:
    # PostgreSQL text cannot hold NUL: the import crashed there with a DataError (SQLite stored it).
    path = tmp_path / "nul.csv"
    path.write_bytes(b"ID,Name,Signup Date\nn1,a\x00b,2025-01-01\nn2,ok,20\x0025-01-01\nn3,fine,2025-01-02\n")
    summary = import_csv(db_engine, path, "Nul", {}, tz=UTC)
    assert (summary.created, summary.rejected) == (1, 2)
    assert [(e["row"], e["column"], e["value"]) for e in summary.errors] == [
        (2, "Name", "a\\0b"), (3, "Signup Date", "20\\025-01-01")]
    assert all("NUL byte" in e["reason"] for e in summary.errors)
    from storage.schema import import_rejections

    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(import_rejections)).scalar() == 2
    assert _view(db_engine, "Nul:n3")["name"] == "fine"


IMPORT_IN_CHILD_SCRIPT = r"""
import json, sys
from datetime import timezone
import jobs.imports as imports
import jobs.readahead as bulk
from storage.db import make_engine, upgrade

forks = []
real = bulk.read_in_child
def counting(make, depth=2):
    forks.append(bulk.can_read_in_child())
    return real(make, depth)
imports.read_in_child = counting
imports.CHILD_READER_MIN_ROWS = 0
engine = make_engine(sys.argv[1])
upgrade(engine)
out = []
for _ in range(2):
    s = imports.import_csv(engine, sys.argv[2], "leads", tz=timezone.utc, batch_size=7)
    out.append([s.created, s.updated, s.unchanged, s.rejected,
                [(e["row"], e["column"], e["reason"]) for e in s.errors]])
print(json.dumps({"forks": forks, "runs": out}))
"""


def test_a_file_of_new_rows_is_parsed_in_a_child_process_with_the_same_outcome(db_url: str, tmp_path: Path) -> None:
    """The reader process prepares rows for the database it writes to (times differ by dialect)."""
    import json
    import subprocess
    import sys

    lines = ["Customer ID,Name,Email,Signup Date"]
    for i in range(40):
        lines.append(f"c{i},Person {i},p{i}@example.com,2024-03-{1 + i % 28:02d}")
    lines[5] = "c3,Again,again@example.com,2024-03-01"  # a repeated key: rejected (file row 6)
    lines[9] = "c8,Bad date,bad@example.com,2024-13-45"  # rejected (file row 10)
    path = tmp_path / "leads.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_IN_CHILD_SCRIPT, db_url, str(path)],
        capture_output=True, text=True, cwd=root, timeout=120, check=False,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "FUNNELSYNC_HOME": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["forks"] == [True]  # the first import forked its reader; the re-import parsed in place
    first, again = out["runs"]
    assert first[:4] == [38, 0, 0, 2] and again[:4] == [0, 0, 38, 2]
    assert [(row, column) for row, column, _ in first[4]] == [(6, "Customer ID"), (10, "Signup Date")]
    assert first[4] == again[4]


# ---- a re-import skips the rows the source holds as they are, without parsing them


def _count_parsed_rows(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Spy on the real row parser: the numbers of the rows it parsed."""
    from connectors.files.flexible_csv import RowMapper

    parsed: list[int] = []
    real = RowMapper.map

    def spying(self, values, row):  # type: ignore[no-untyped-def]
        parsed.append(row)
        return real(self, values, row)

    monkeypatch.setattr(RowMapper, "map", spying)
    return parsed


ROWS = "id,name,email,signup date\n" + "".join(f"k{i},Name {i},n{i}@x.io,2024-02-{1 + i:02d}\n" for i in range(6))


def test_a_reimport_parses_only_rows_the_source_does_not_hold_as_they_are(
        db_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from storage.sources import get_source
    from storage.upsert import upsert_records

    path = _write(tmp_path, ROWS)
    assert import_csv(db_engine, path, "Leads", tz=UTC).created == 6
    parsed = _count_parsed_rows(monkeypatch)
    again = import_csv(db_engine, path, "Leads", tz=UTC, batch_size=4)
    assert (again.created, again.updated, again.unchanged, again.rejected) == (0, 0, 6, 0)
    assert parsed == []  # nothing parsed: every row digest matched
    with db_engine.connect() as conn:
        assert conn.execute(select(import_jobs.c.unchanged).where(import_jobs.c.uuid == again.job_uuid)).scalar() == 6

    # One row edited in the file, one record changed by another writer (an API push): both are read again.
    edited = path.read_text().replace("k2,Name 2,", "k2,Renamed,")
    path.write_text(edited)
    with db_engine.begin() as conn:
        from funnelsync.records import SourceCustomerRecord

        source_id = get_source(conn, "Leads").id
        upsert_records(conn, source_id, [SourceCustomerRecord("k4", name="From the API", email="n4@x.io")])
    parsed.clear()
    third = import_csv(db_engine, path, "Leads", tz=UTC)
    assert (third.created, third.updated, third.unchanged) == (0, 2, 4)
    assert parsed == [4, 6]  # file rows of k2 and k4
    assert _view(db_engine, "Leads:k2")["name"] == "Renamed"
    assert _view(db_engine, "Leads:k4")["name"] == "Name 4"  # the file's values are back
    parsed.clear()
    assert import_csv(db_engine, path, "Leads", tz=UTC).unchanged == 6 and parsed == []


def test_rows_are_read_again_when_how_they_read_changes(
        db_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, ROWS)
    import_csv(db_engine, path, "Leads", tz=UTC)
    parsed = _count_parsed_rows(monkeypatch)
    # Another account time zone moves every date-only value: no stored digest may match.
    moved = import_csv(db_engine, path, "Leads", tz=ZoneInfo("America/New_York"))
    assert (moved.updated, moved.unchanged) == (6, 0) and len(parsed) == 6
    assert _view(db_engine, "Leads:k0")["lead_created_at"] == "2024-02-01T05:00:00+00:00"
    parsed.clear()
    # Another mapping: the name column read as a custom attribute.
    remapped = import_csv(db_engine, path, "Leads", {"name": "custom.label"}, tz=ZoneInfo("America/New_York"))
    assert remapped.updated == 6 and len(parsed) == 6


def test_a_repeated_key_is_rejected_even_when_its_first_row_is_skipped(
        db_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, ROWS + "k1,Someone else,other@x.io,2024-03-01\n")
    first = import_csv(db_engine, path, "Leads", tz=UTC)
    assert (first.created, first.rejected) == (6, 1)
    parsed = _count_parsed_rows(monkeypatch)
    again = import_csv(db_engine, path, "Leads", tz=UTC)
    assert (again.unchanged, again.rejected) == (6, 1)
    assert [(e["row"], e["column"]) for e in again.errors] == [(8, "id")]
    assert "duplicate key: row 3" in again.errors[0]["reason"]
    assert parsed == [8]


@pytest.mark.parametrize("batch_size", [5000, 1])
def test_rows_sharing_an_email_share_a_customer_wherever_the_batches_end(db_engine: Engine, tmp_path: Path,
                                                                           batch_size: int) -> None:
    """An imported row links to the customer of an earlier row with its email, in the same batch or not."""
    path = _write(tmp_path, "Customer ID,Name,Email,Signup Date\n"
                            "A1,Ada,ada@example.com,2024-03-05\n"
                            "B1,Bob,bob@example.com,2024-03-06\n"
                            "A2,Ada Lovelace, ADA@Example.com ,2024-02-01\n")
    summary = import_csv(db_engine, path, "Leads", batch_size=batch_size, tz=UTC)
    assert (summary.created, summary.rejected) == (3, 0)
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 2
        owners = dict(conn.execute(select(source_customers.c.external_id, source_customers.c.customer_id)).all())
    assert owners["A1"] == owners["A2"] != owners["B1"]
    ada = _view(db_engine, "Leads:A2")
    assert sorted(ada["external_ids"]) == ["A1", "A2"]
    assert ada["name"] == "Ada"  # the first row's customer, its own values first
    assert ada["lead_created_at"].startswith("2024-02-01")  # the earliest date of the two
