"""The dashboard's Automations panel in a real browser (the fixtures of test_dashboard_browser.py: Debian's
Chromium driven by Playwright, the app served by uvicorn on a seeded SQLite database).

A rule whose text carries markup is shown as text; its last 24 hours are counted; a failed delivery is
listed with its last error, and its Replay button delivers it to a real receiver on 127.0.0.1 that checks
the signature. No secret reaches the page.
"""

from __future__ import annotations

from datetime import UTC, datetime

from automations.apply import apply_definitions
from automations.dispatch import run_automations
from automations.rule_file import parse_rule_text
from fakes.hook_receiver import HookReceiver
from funnelsync.records import SourceCustomerRecord
from storage.outbox import list_deliveries
from storage.sources import get_source
from storage.upsert import upsert_records
from tests.test_dashboard_browser import _sign_in, browser, server  # noqa: F401 - the fixtures

SECRET = "whsec_browser_7f3a"
SLACK_TEXT = 'Trial: {{ customer.name }} <img src=x onerror="window.__xss_rule=1">'
RULES = """
automations:
  - name: browser-hooks
    trigger: trial_started
    where: "country = US"
    actions:
      - webhook: {{url: "{url}", secret: "env:PANEL_HOOK_SECRET", max_attempts: 1}}
      - slack: {{url: "env:PANEL_SLACK_URL", text: '{text}'}}
"""


def _rows(page, selector):
    return page.eval_on_selector_all(selector, "rows => rows.map(r => [...r.cells].map(c => c.textContent))")


def test_automations_panel_shows_rules_as_text_counts_and_replays_a_failed_delivery(
        server, browser, sqlite_engine, monkeypatch):  # noqa: F811 - the imported fixtures
    url, key = server
    hook = HookReceiver(secret=SECRET, default=500).start()
    monkeypatch.setenv("PANEL_HOOK_SECRET", SECRET)
    monkeypatch.setenv("PANEL_SLACK_URL", hook.url + "?slack-token-9c1e")
    try:
        with sqlite_engine.begin() as conn:
            apply_definitions(conn, parse_rule_text(RULES.format(url=hook.url, text=SLACK_TEXT)))
        with sqlite_engine.begin() as conn:
            ds = get_source(conn, "Website leads")
            upsert_records(conn, ds.id, [
                SourceCustomerRecord("T-1", name="Trial Person", email="trial@person.example", country="US",
                                     free_trial_started_at=datetime.now(UTC)),
                SourceCustomerRecord("T-2", name="Elsewhere", email="else@where.example", country="DE",
                                     free_trial_started_at=datetime.now(UTC)),
            ])
        # The webhook fails for good (one attempt allowed); the Slack message stays pending.
        ran = run_automations(sqlite_engine, retry_delays=(0.01, 0.01))
        assert (ran.failed, ran.pending) == (1, 1)
        with sqlite_engine.connect() as conn:
            (failed,) = list_deliveries(conn, status="failed")

        page = _sign_in(browser, url, key)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.reload()
        page.wait_for_selector('#automation-rules tr[data-automation="browser-hooks"]')
        (rule,) = _rows(page, "#automation-rules tbody tr")
        assert rule[:3] == ["browser-hooks", "trial_started", "country = US"]
        assert f"webhook to 127.0.0.1:{hook.url.split(':')[2].split('/')[0]}" in rule[3]
        assert "slack: " + SLACK_TEXT in rule[3]  # the markup as text
        assert rule[4:] == ["1", "0", "1"]  # detected, delivered, failed in the last 24 h (T-2 is not US)
        assert page.evaluate("window.__xss_rule") is None
        assert page.query_selector("#automations img") is None

        (row,) = _rows(page, "#automation-failed tbody tr")
        assert row[0] == failed.id and row[1] == "browser-hooks" and row[3] == "webhook" and row[4] == "1"
        assert f"{hook.url} answered HTTP 500" in row[5]
        panel = page.inner_text("#automations")
        for secret in (SECRET, "PANEL_HOOK_SECRET", "slack-token-9c1e", "PANEL_SLACK_URL"):
            assert secret not in panel and secret not in page.content()

        hook.default = 200
        before = len(hook.received)
        page.click(f'#automation-failed tr[data-delivery="{failed.id}"] button.replay')
        page.wait_for_function(
            "id => document.getElementById('automation-status').textContent === id + ': delivered.'", arg=failed.id)
        page.wait_for_selector("#automation-failed td.empty")
        assert page.inner_text("#automation-failed tbody") == "No failed deliveries."
        page.wait_for_function("() => document.querySelector('#automation-rules tbody tr').cells[5].textContent"
                               " === '1'")
        assert _rows(page, "#automation-rules tbody tr")[0][4:] == ["1", "1", "0"]

        (replayed,) = hook.received[before:]
        assert replayed.signature_ok is True
        assert replayed.headers["idempotency-key"] == failed.occurrence_id
        assert replayed.json()["customer"]["email"] == "trial@person.example"
        with sqlite_engine.connect() as conn:
            assert [d.status for d in list_deliveries(conn) if d.id == failed.id] == ["delivered"]
        assert errors == []
    finally:
        hook.stop()
