"""Progress of long commands (rows read, rate, time left): drawn on a terminal, nothing on a pipe."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from fakes.demo import FakeVendorServer, population
from funnelsync.cli import app, common

ROOT = Path(__file__).resolve().parent.parent
LEADS = str(ROOT / "samples" / "leads.csv")


def _same_ids_other_emails(tmp_path):
    """The leads again under other emails: a second source whose customers the external_id rule merges."""
    text = (ROOT / "samples" / "leads.csv").read_text(encoding="utf-8-sig")
    other = tmp_path / "other.csv"
    other.write_text(text.replace("@", ".crm@"), encoding="utf-8")
    return str(other)


def _run(url, *args):
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "funnelsync", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=180)
    assert done.returncode == 0, done.stderr
    return done


def test_no_progress_on_a_pipe(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    _run(url, "init")
    imported = _run(url, "import", "csv", LEADS, "--source", "A")
    _run(url, "import", "csv", _same_ids_other_emails(tmp_path), "--source", "B", "--no-merge")
    merged = _run(url, "merge", "--auto")
    assert "Merged 60 customers" in merged.stdout
    for done in (imported, merged):
        assert not re.search(r"/s\b|\beta\b|━", done.stderr), done.stderr
        assert "\x1b[" not in done.stderr
    # stderr holds only the notes, one line each
    assert all(line.startswith(("note:", "Created")) for line in imported.stderr.splitlines()), imported.stderr


@pytest.fixture
def terminal(monkeypatch):
    """Progress drawn to a forced terminal (what a person sees), captured."""
    out = io.StringIO()
    monkeypatch.setattr(common, "err_console", Console(file=out, force_terminal=True, width=140, color_system=None))
    return out


def _invoke(url, *args):
    result = CliRunner().invoke(app, list(args), env={"FUNNELSYNC_DATABASE_URL": url})
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_import_and_merge_show_rows_rate_and_time_left_on_a_terminal(tmp_path, terminal):
    url = f"sqlite:///{tmp_path / 't.db'}"
    _invoke(url, "import", "csv", LEADS, "--source", "A")
    drawn = terminal.getvalue()
    assert "Importing leads.csv" in drawn and "60/60" in drawn and "rows" in drawn
    assert re.search(r"[\d,]+ rows/s", drawn) and "eta" in drawn
    _invoke(url, "import", "csv", _same_ids_other_emails(tmp_path), "--source", "B", "--no-merge")
    terminal.truncate(0)
    terminal.seek(0)
    merged = _invoke(url, "merge", "--auto")
    assert "Merged 60 customers" in merged.output
    drawn = terminal.getvalue()
    assert "merging duplicates" in drawn and "groups" in drawn and "eta" in drawn


def test_sync_shows_records_and_rate_on_a_terminal(tmp_path, terminal):
    url = f"sqlite:///{tmp_path / 's.db'}"
    with FakeVendorServer(population(30, seed=1)) as vendor:
        settings = vendor.stripe_settings()
        _invoke(url, "sources", "add", "Billing", "--kind", "stripe", "--set", f"api_key={settings['api_key']}",
                "--set", f"base_url={settings['base_url']}")
        synced = _invoke(url, "sync", "Billing")
    assert "Billing" in synced.output
    drawn = terminal.getvalue()
    assert "Billing customers" in drawn and "records" in drawn and "eta" in drawn
    assert re.search(r"\b30/30\b", drawn), drawn


def test_sync_draws_no_progress_on_a_pipe(tmp_path):
    """A sync piped to a file: its table on stdout, and on stderr nothing (no bar, no rate, no escape codes)."""
    url = f"sqlite:///{tmp_path / 'sp.db'}"
    with FakeVendorServer(population(30, seed=1)) as vendor:
        settings = vendor.stripe_settings()
        _run(url, "sources", "add", "Billing", "--kind", "stripe", "--set", f"api_key={settings['api_key']}",
             "--set", f"base_url={settings['base_url']}")
        synced = _run(url, "sync", "Billing")
    assert "Billing (stripe)" in synced.stdout and re.search(r"customers\s*│\s*30\b", synced.stdout), synced.stdout
    assert synced.stderr == "", synced.stderr


def _pending_trials(tmp_path, hook_url, count=3):
    """``count`` customers entering trials under a webhook rule: as many pending deliveries."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"""
automations:
  - name: trials
    trigger: trial_started
    actions:
      - webhook: {{url: "{hook_url}", secret: "env:HOOK_SECRET"}}
""", encoding="utf-8")
    trials = tmp_path / "trials.csv"
    trials.write_text("Customer ID,E-mail,Trial Start\n" + "".join(
        f"t{i},t{i}@example.com,2026-01-0{i + 1}T12:00:00Z\n" for i in range(count)), encoding="utf-8")
    return rules, trials


def test_automations_run_shows_detected_delivered_and_rate_on_a_terminal(tmp_path, terminal, monkeypatch):
    from fakes.hook_receiver import HookReceiver

    monkeypatch.setenv("HOOK_SECRET", "whsec_progress")
    hook = HookReceiver(secret="whsec_progress").start()
    try:
        url = f"sqlite:///{tmp_path / 'a.db'}"
        rules, trials = _pending_trials(tmp_path, hook.url)
        _invoke(url, "init")
        _invoke(url, "automations", "apply", str(rules))
        _invoke(url, "import", "csv", str(trials), "--source", "A")
        terminal.truncate(0)
        terminal.seek(0)
        ran = _invoke(url, "automations", "run")
    finally:
        hook.stop()
    assert "0 detected, 3 delivered, 0 pending, 0 failed." in ran.output
    assert len(hook.received) == 3 and all(r.signature_ok for r in hook.received)
    drawn = terminal.getvalue()
    assert "automations: 0 detected, 3 delivered" in drawn and "3/3" in drawn, drawn
    assert re.search(r"[\d,]+ deliveries/s", drawn), drawn


def test_automations_run_draws_no_progress_on_a_pipe(tmp_path):
    from fakes.hook_receiver import HookReceiver

    hook = HookReceiver(secret="whsec_progress").start()
    try:
        url = f"sqlite:///{tmp_path / 'a.db'}"
        rules, trials = _pending_trials(tmp_path, hook.url)
        env = {**os.environ, "FUNNELSYNC_DATABASE_URL": url, "PYTHONPATH": str(ROOT), "HOOK_SECRET": "whsec_progress"}

        def run(*args):
            done = subprocess.run([sys.executable, "-m", "funnelsync", *args], capture_output=True, text=True,
                                  env=env, cwd=ROOT, timeout=180)
            assert done.returncode == 0, done.stderr
            return done

        run("init")
        run("automations", "apply", str(rules))
        run("import", "csv", str(trials), "--source", "A")
        ran = run("automations", "run")
    finally:
        hook.stop()
    assert ran.stdout.strip() == "0 detected, 3 delivered, 0 pending, 0 failed."
    assert len(hook.received) == 3
    assert ran.stderr == "", ran.stderr
