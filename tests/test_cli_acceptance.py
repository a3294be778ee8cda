"""Acceptance checks found by using the CLI as a user does (a real process, stderr a pipe, both databases)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(db_url, *args):
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "PYTHONPATH": ROOT, "FUNNELSYNC_TIMEZONE": "UTC"}
    return subprocess.run([sys.executable, "-m", "funnelsync", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_failures_print_exactly_one_line_on_stderr(db_engine, db_url, tmp_path):
    # A progress bar on a non-terminal stderr used to leave an empty line before the error.
    two_emails = tmp_path / "two.csv"
    two_emails.write_text("ID,Email,E-mail\n1,a@b.com,c@d.com\n")
    failures = [
        (run(db_url, "import", "csv", str(two_emails), "--source", "Leads"), 2, "both match email"),
        (run(db_url, "import", "structured", str(two_emails), "--source", "Legacy", "--type", "customers"), 2, None),
        (run(db_url, "bulk-edit", "--where", "bogus = 1", "--set", "owner=x"), 2, "unknown field 'bogus'"),
    ]
    for result, code, message in failures:
        assert result.returncode == code, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert message is None or message in lines[0]
    # Successful runs in a pipe leave stderr empty (no bar remnants) and stdout holds only the table.
    ok = tmp_path / "ok.csv"
    ok.write_text("ID,Email\n1,a@b.com\n2,b@b.com\n")
    imported = run(db_url, "import", "csv", str(ok), "--source", "Leads")
    assert imported.returncode == 0 and imported.stderr == "", imported.stderr
    merged = run(db_url, "merge", "--auto")
    assert merged.returncode == 0 and merged.stderr == "", merged.stderr


def test_database_errors_say_which_setting_and_hide_the_password(db_engine, db_url):
    bad = run("notaurl", "customers", "list")
    assert bad.returncode == 1 and bad.stderr.splitlines() == [bad.stderr.strip()]
    assert "FUNNELSYNC_DATABASE_URL" in bad.stderr
    unreachable = run("postgresql://bob:hunter2pw@127.0.0.1:1/db", "customers", "list", "--json")
    assert unreachable.returncode == 1 and unreachable.stdout == ""
    assert "127.0.0.1:1/db" in unreachable.stderr and "hunter2pw" not in unreachable.stderr
    assert unreachable.stderr.splitlines() == [unreachable.stderr.strip()]
