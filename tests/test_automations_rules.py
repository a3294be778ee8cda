"""Rule files: validated whole, every error at its line; ``automations validate|apply`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from automations.rule_file import RuleFileError, parse_rule_text
from automations.rules import rule_document, validate_rule
from automations.templates import TemplateError, check_template, render, slack_escape
from storage.automation_rules import list_rules
from storage.schema import automation_rules

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOOD = """\
automations:
  - name: us-trials
    trigger: trial_started
    where: "country = US"
    backfill: false
    actions:
      - webhook: {url: "https://hooks.example.com/x", secret: "env:HOOK_SECRET", max_attempts: 8}
      - slack: {url: "env:SLACK_WEBHOOK_URL", text: "Trial started: {{ customer.name }} <{{ customer.email }}>"}
      - set: {owner: "sales@example.com", lead_status: Working_Lead, tag: trial, "custom.stage": trial}
      - run_deployment: {name: "sync-source/sync-source", parameters: {source: "{{ customer.data_sources[0] }}"}}
  - name: dupes
    trigger: duplicate_found
    actions:
      - merge: duplicate
  - name: expired
    trigger: trial_expired
    days_after: 30
    actions:
      - webhook: {url: "https://hooks.example.com/y", secret: literal-secret}
"""


def run(db_url, *args, env_extra=None):
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "PYTHONPATH": ROOT, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "funnelsync", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def errors_of(text: str) -> list[str]:
    with pytest.raises(RuleFileError) as caught:
        parse_rule_text(text, "rules.yaml")
    return [str(e) for e in caught.value.errors]


def test_the_issue_example_is_valid_and_round_trips():
    definitions = parse_rule_text(GOOD)
    assert [d["name"] for d in definitions] == ["us-trials", "dupes", "expired"]
    first = definitions[0]
    assert [a["kind"] for a in first["actions"]] == ["webhook", "slack", "set", "run_deployment"]
    assert first["actions"][2]["fields"] == {"owner": "sales@example.com", "lead_status": "Working_Lead",
                                             "tag": ["trial"], "custom.stage": "trial"}
    assert definitions[2]["params"] == {"days_after": 30}
    assert definitions[2]["actions"][0]["max_attempts"] == 8  # the default
    for definition in definitions:
        again, errors = validate_rule(rule_document(definition))
        assert errors == [] and again == definition


@pytest.mark.parametrize(("text", "expected"), [
    ("automations:\n  - name: a b\n    trigger: lead_created\n    actions: [{merge: duplicate}]\n",
     ["rules.yaml:2: name is required: 1 to 100 letters, digits, - or _",
      "rules.yaml:4: merge applies only to trigger duplicate_found"]),
    ("automations:\n  - name: a\n    trigger: lead_created\n    where: \"country = \"\n    actions:\n"
     "      - webhook: {url: \"ftp://x\", secret: s}\n",
     ["rules.yaml:4: filter 'country = ' at character 11: expected a value, found the end of the filter",
      "rules.yaml:6: url must be an http(s) URL or a secret reference (env:VAR, prefect-secret:BLOCK)"]),
    ("automations:\n  - name: a\n    trigger: trial_ending\n    actions:\n"
     "      - slack: {url: \"env:S\", text: \"{{ customer.nickname }}\"}\n",
     ["rules.yaml:2: trigger trial_ending needs days_before: a whole number of days",
      "rules.yaml:5: unknown field customer.nickname (fields: uuid, name, email, company, country, state, city, "
      "zip, website_url, owner, status, lead_status, lead_created_at, free_trial_started_at, subscriber_since, "
      "created_at, tags, external_ids, data_sources, data_source_uuids, custom.KEY)"]),
    ("automations:\n  - name: a\n    trigger: lead_created\n    actions: [{webhook: {url: \"https://x\", secret: s}}]\n"
     "  - name: a\n    trigger: lead_created\n    actions: [{webhook: {url: \"https://x\", secret: s}}]\n",
     ["rules.yaml:5: a second rule named 'a'"]),
    ("automations:\n  - name: a\n    name: b\n", ["rules.yaml:3: key 'name' given twice"]),
    ("automations:\n  - name: [a\n", None),
])
def test_errors_name_their_line(text, expected):
    errors = errors_of(text)
    if expected is None:  # a YAML syntax error: its line and that it is no YAML
        assert len(errors) == 1 and errors[0].startswith("rules.yaml:") and "not valid YAML" in errors[0]
    else:
        assert [e for e in errors if e in expected] == expected, errors


def test_templates_are_checked_and_rendered_with_escaping():
    check_template("Hi {{ customer.name }} ({{customer.custom.plan}}) from {{ customer.data_sources[0] }}")
    with pytest.raises(TemplateError):
        check_template("{{ customer.name | upper }}")
    with pytest.raises(TemplateError):
        check_template("{{ customer.name }")
    customer = {"name": "<!channel> & co", "custom": {"plan": "pro"}, "data_sources": ["Stripe"]}
    text = render("Hi {{ customer.name }} {{ customer.custom.plan }} {{ customer.data_sources[0] }} "
                  "{{ customer.email }}", customer, slack_escape)
    assert text == "Hi &lt;!channel&gt; &amp; co pro Stripe "


def test_apply_stores_refuses_whole_and_prunes(db_engine, db_url, tmp_path):
    good = tmp_path / "rules.yaml"
    good.write_text(GOOD, encoding="utf-8")
    checked = run(db_url, "automations", "validate", str(good))
    assert checked.returncode == 0, checked.stderr
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(automation_rules)).scalar_one() == 0

    applied = run(db_url, "automations", "apply", str(good), "--json",
                  env_extra={"FUNNELSYNC_HOME": str(tmp_path / "home")})
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["created"] == ["us-trials", "dupes", "expired"]
    with db_engine.connect() as conn:
        stored = {r.name: r for r in list_rules(conn)}
    # The literal secret is kept in a local secret file; the database holds only its reference.
    secret = stored["expired"].actions[0]["secret"]
    assert secret.startswith("local-secret:") and "literal-secret" not in json.dumps(stored["expired"].definition)
    again = run(db_url, "automations", "apply", str(good), "--json",
                env_extra={"FUNNELSYNC_HOME": str(tmp_path / "home")})
    assert json.loads(again.stdout)["unchanged"] == ["us-trials", "dupes", "expired"], again.stderr
    changed = tmp_path / "changed.yaml"
    changed.write_text(GOOD.replace('where: "country = US"', 'where: "country = DE"'), encoding="utf-8")
    updated = run(db_url, "automations", "apply", str(changed), "--json",
                  env_extra={"FUNNELSYNC_HOME": str(tmp_path / "home")})
    assert json.loads(updated.stdout)["updated"] == ["us-trials"], updated.stderr
    with db_engine.connect() as conn:
        assert {r.name: r.where for r in list_rules(conn)}["us-trials"] == "country = DE"

    bad = tmp_path / "bad.yaml"
    dupes = "    trigger: duplicate_found\n"
    with_where = GOOD.replace(dupes, dupes + "    where: 'source = Nope'\n")
    new_rule = ("  - name: new-rule\n    trigger: lead_created\n"
                "    actions: [{webhook: {url: \"https://x\", secret: s}}]\n")
    bad.write_text(with_where + new_rule, encoding="utf-8")
    refused = run(db_url, "automations", "apply", str(bad), "--prune")
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"error: {bad}:13: filter 'source = Nope' at character 10: no data source named " \
                                     "'Nope' (known: none yet)"
    broken = tmp_path / "broken.yaml"
    broken.write_text(GOOD.replace("days_after: 30", "days_after: soon"), encoding="utf-8")
    refused = run(db_url, "automations", "apply", str(broken))
    assert refused.returncode == 2
    assert refused.stderr.strip() == f"error: {broken}:17: days_after is a whole number of days from 0 to 3650"
    checked = run(db_url, "automations", "validate", str(broken))
    assert (checked.returncode, checked.stderr) == (2, refused.stderr)
    with db_engine.connect() as conn:  # refused whole: the new rule is not there, nothing was pruned
        assert sorted(r.name for r in list_rules(conn)) == ["dupes", "expired", "us-trials"]

    only_one = tmp_path / "one.yaml"
    only_one.write_text(GOOD.split("  - name: dupes")[0], encoding="utf-8")
    pruned = run(db_url, "automations", "apply", str(only_one), "--prune", "--json",
                 env_extra={"FUNNELSYNC_HOME": str(tmp_path / "home")})
    assert json.loads(pruned.stdout)["removed"] == ["dupes", "expired"], pruned.stderr
    listed = run(db_url, "automations", "list", "--json")
    assert [r["name"] for r in json.loads(listed.stdout)] == ["us-trials"]
