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


def test_every_table_command_fits_80_columns_with_whole_headers(tmp_path, monkeypatch):
    """Each command that prints a table, at COLUMNS=80 on data with long names: no line wider than 80, no
    header cut or broken inside a word (cells fold instead)."""
    import json

    from fakes.demo import FakeVendorServer, population
    from fakes.hook_receiver import HookReceiver

    url = f"sqlite:///{tmp_path / 'tables.db'}"
    monkeypatch.setenv("HOOK_SECRET", "whsec_tables")
    runner = CliRunner()

    def run(*args, exit_code=0):
        result = runner.invoke(app, list(args), env={"FUNNELSYNC_DATABASE_URL": url, "COLUMNS": "80"})
        assert result.exit_code == exit_code, (args, result.output, result.exception)
        return result.output

    leads = (ROOT / "samples" / "leads.csv").read_text(encoding="utf-8-sig")
    other = tmp_path / "other.csv"
    other.write_text(leads.replace("@", ".crm@"), encoding="utf-8")
    bad = tmp_path / "bad.csv"
    bad.write_text("Customer ID,E-mail,Signup Date\nB-1,not an email address at all,2026-01-02\n", encoding="utf-8")
    rules = tmp_path / "rules.yaml"
    hook = HookReceiver(secret="whsec_tables").start()
    try:
        rules.write_text(f"""
automations:
  - name: trials-of-the-website-leads-with-a-long-name
    trigger: trial_started
    where: 'source = "Website leads with a long name"'
    actions:
      - webhook: {{url: "{hook.url}", secret: "env:HOOK_SECRET"}}
""", encoding="utf-8")
        trials = tmp_path / "trials.csv"
        trials.write_text("Customer ID,E-mail,Trial Start\nT-1,t1@example.com,2026-01-02T12:00:00Z\n", encoding="utf-8")
        tables = {
            ("import", "csv"): (run("import", "csv", str(ROOT / "samples" / "leads.csv"), "--source",
                                    "Website leads with a long name"), "created updated unchanged rejected"),
            ("import", "csv", "rejected"): (run("import", "csv", str(bad), "--source", "Website leads with a long name",
                                                exit_code=3), "row column value reason"),
        }
        run("import", "csv", str(other), "--source", "CRM export", "--no-merge")
        run("merge", "--auto")
        run("api-keys", "create", "a-rather-long-key-name-for-the-dashboard")
        run("automations", "apply", str(rules))
        run("import", "csv", str(trials), "--source", "Website leads with a long name")
        tables[("automations", "run", "--dry-run")] = (run("automations", "run", "--dry-run"),
                                                       "delivery automation trigger customer action attempts")
        run("automations", "run")
    finally:
        hook.stop()
    customer = json.loads(run("customers", "list", "--json"))[0]["uuid"]
    run("contacts", "add", "--customer", customer, "--first-name", "Augusta Ada", "--last-name", "King-Noel",
        "--email", "countess.of.lovelace@example.com", "--phone", "+44 20 7946 0000", "--title", "Analyst")
    with FakeVendorServer(population(5, seed=1)) as vendor:
        settings = vendor.stripe_settings()
        run("sources", "add", "Billing system of record", "--kind", "stripe", "--set", f"api_key={settings['api_key']}",
            "--set", f"base_url={settings['base_url']}")
        tables[("sync",)] = (run("sync", "Billing system of record"),
                             "stream fetched created updated unchanged seconds")
    from tests.test_connectors_google_play import JANUARY, zipped

    report = zipped(tmp_path / "salesreport_202501.zip", JANUARY)
    tables.update({
        ("import", "google-play-sales"): (
            run("import", "google-play-sales", str(report), "--source", "Google Play store of the app", exit_code=3),
            "subscriptions created updated unchanged no trial or payment skipped rows"),
        ("import", "jobs"): (run("import", "jobs"),
                             "job source file state created updated unchanged rejected started"),
        ("api-keys", "list"): (run("api-keys", "list"), "name prefix created revoked"),
        ("sources", "list"): (run("sources", "list"), "name kind uuid customers last sync enabled"),
        ("customers", "list"): (run("customers", "list", "--limit", "5"),
                                "uuid name email status lead trial paid sources"),
        ("customers", "show"): (run("customers", "show", customer), "uuid external_ids data_sources lead_created_at"),
        ("contacts", "list"): (run("contacts", "list"), "uuid customer name email phone title"),
        ("metrics",): (run("metrics"), "Period Leads +trial -trial Trials Conv T→P New subs Cycle d n"),
        ("metrics", "cohorts"): (run("metrics", "cohorts"), "Cohort Trials ≤7 d ≤14 d ≤30 d ≤60 d ≤90 d Converted"),
        ("merge", "--log"): (run("merge", "--log", "--limit", "3"), "when kind from into rule actor undone"),
        ("automations", "list"): (run("automations", "list"), "name trigger where actions applied"),
        ("automations", "deliveries"): (run("automations", "deliveries"),
                                        "delivery automation trigger customer action status attempts last error"),
        ("bulk-edit",): (run("bulk-edit", "--where", "country = US", "--set", "free_trial_started_at=2020-01-01"),
                         "applied skipped customer reason"),
    })
    # One-line messages are soft-wrapped on purpose (a pipe or a log gets each whole): only tables must fit.
    messages = ("Created the funnelsync schema", "note:", "Columns:", "Lifecycle changes:", "Merged duplicates:",
                "Merged ", "Bulk edit ", "Sources ", "Rejected rows written")
    for command, (text, headers) in tables.items():
        wide = [line for line in text.splitlines() if len(line) > 80 and not line.startswith(messages)]
        assert not wide, f"funnelsync {' '.join(command)} at 80 columns:\n{text}"
        for word in headers.split():
            assert re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text), (command, word, text)
