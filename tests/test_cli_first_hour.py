"""A new user's first hour with the command: the install, the help, the tables on an 80-column terminal."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

from typer.testing import CliRunner

from funnelsync.cli import app
from funnelsync.cli.common import FittingConsole
from funnelsync.cli.demo import funnel_table

ROOT = Path(__file__).resolve().parent.parent
# What Typer prints in the type column of a parameter: <bool>, <str>, <int>, <path>, <list[str]> ...
TYPE_PLACEHOLDER = re.compile(r"<(bool|str|int|float|path|file|dir|datetime|list\[\w+\]|[a-z]+ range)>")


def _all_commands(group, path=()):
    yield path
    for name, sub in getattr(group, "commands", {}).items():
        yield from _all_commands(sub, (*path, name))


def test_pyproject_license_is_an_spdx_string():
    """setuptools ≥ 77 warns on the table form (`license = {text = …}`) at every install."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    setuptools_req = next(r for r in project["build-system"]["requires"] if r.startswith("setuptools"))
    assert setuptools_req == "setuptools>=77"


def test_help_shows_no_type_placeholders():
    import typer.main

    runner = CliRunner()
    paths = list(_all_commands(typer.main.get_command(app)))
    assert ("import", "csv") in paths and ("metrics", "cohorts") in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "100"})
        assert result.exit_code == 0, (path, result.output)
        found = TYPE_PLACEHOLDER.findall(result.output)
        assert not found, f"funnelsync {' '.join(path)} --help shows {found}:\n{result.output}"
    # The placeholders that remain name the value, and flags show none.
    csv_help = runner.invoke(app, ["import", "csv", "--help"], env={"COLUMNS": "100"}).output
    assert re.search(r"--source\s+SOURCE\s", csv_help)
    assert re.search(r"--json\s+Print only", csv_help)


def _render(table, width=80):
    console = FittingConsole(width=width, record=True, force_terminal=False, color_system=None)
    console.print(table)
    return console.export_text()


def _header_words(table):
    return [word for column in table.columns for word in str(column.header).split()]


def test_demo_table_fits_80_columns_with_whole_headers():
    row = {"period": "2026-03-01", "leads": 1234, "free_trials": 456, "trials_converted": 123,
           "trial_to_paid_rate": 0.2697, "new_subscribers": 1789, "avg_sales_cycle_days": 123.4}
    table = funnel_table(SimpleNamespace(customers=12345, merged=678, series=[row] * 3))
    text = _render(table)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    for word in _header_words(table):
        assert re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text), (word, text)
    assert "26.97%" not in text and "27.0%" in text and "123.4 days" in text


def test_customers_list_on_a_pipe_fits_80_columns(tmp_path):
    """On a pipe Rich lays out for 80 columns: the real command's table keeps its headers whole."""
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}", "PYTHONPATH": str(ROOT)}
    env.pop("COLUMNS", None)

    def run(*args):
        done = subprocess.run([sys.executable, "-m", "funnelsync", *args], capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("init")
    run("customers", "add", "--source", "Website leads with a long name", "--external-id", "L-1",
        "--name", "Margaret Hamilton-Berners-Lee", "--email", "margaret.hamilton@initech.example",
        "--lead-created-at", "2026-01-02", "--free-trial-started-at", "2026-01-09")
    text = run("customers", "list")
    assert max(len(line) for line in text.splitlines()) <= 80
    for word in ("uuid", "name", "email", "status", "lead", "trial", "paid", "sources"):
        assert re.search(rf"\b{word}\b", text), (word, text)
    assert "…" not in text
