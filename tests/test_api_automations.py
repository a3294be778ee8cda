"""``/v1/automations`` through the real app: create, list, read, replace, delete, 422 field errors; and a
customer written through the API firing a rule in the same request."""

from __future__ import annotations

from sqlalchemy import func, select

from storage.schema import automation_occurrences, automation_rules
from tests.api_support import api_client, new_customer, new_source

RULE = {
    "name": "api-trials", "trigger": "trial_started", "where": "country = US",
    "actions": [{"webhook": {"url": "https://hooks.example.com/x", "secret": "literal-api-secret"}},
                {"slack": {"url": "env:SLACK_URL", "text": "Trial: {{ customer.name }}"}}],
}


def test_rules_through_the_api(db_engine, tmp_path, monkeypatch):
    monkeypatch.setenv("FUNNELSYNC_HOME", str(tmp_path))
    client = api_client(db_engine)
    created = client.post("/v1/automations", json=RULE)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "api-trials" and body["where"] == "country = US"
    secret = body["actions"][0]["webhook"]["secret"]
    assert secret.startswith("local-secret:") and "literal-api-secret" not in created.text
    assert client.post("/v1/automations", json=RULE).status_code == 409

    listed = client.get("/v1/automations").json()["entries"]
    assert [r["name"] for r in listed] == ["api-trials"]
    assert client.get("/v1/automations/api-trials").json()["trigger"] == "trial_started"
    assert client.get("/v1/automations/nope").status_code == 404

    bad = client.post("/v1/automations", json={
        "name": "bad", "trigger": "trial_expired",
        "actions": [{"webhook": {"url": "ftp://x", "secret": "s"}}, {"slack": {"url": "env:S", "text": "{{ x }}"}}]})
    assert bad.status_code == 422
    fields = {e["field"]: e["reason"] for e in bad.json()["errors"]}
    assert set(fields) == {"days_after", "actions.0.webhook.url", "actions.1.slack.text"}
    assert "days_after" in fields["days_after"]
    unknown_source = client.put("/v1/automations/bad", json={**RULE, "name": "bad", "where": "source = Nowhere"})
    assert unknown_source.status_code == 422
    assert unknown_source.json()["errors"][0]["field"] == "where"
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(automation_rules)).scalar_one() == 1

    # A customer written through the API fires the rule in the same request's transaction.
    ds = new_source(client)
    new_customer(client, ds, "c-1", name="Ada", email="ada@example.com", country="US",
                 free_trial_started_at="2026-01-03T00:00:00Z")
    new_customer(client, ds, "c-2", name="Bob", email="bob@example.com", country="DE",
                 free_trial_started_at="2026-01-03T00:00:00Z")
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(automation_occurrences)).scalar_one() == 1

    replaced = client.put("/v1/automations/api-trials", json={**RULE, "where": "country = DE"})
    assert replaced.status_code == 200 and replaced.json()["where"] == "country = DE"
    # The same literal secret: the stored reference is kept, not a new file.
    assert replaced.json()["actions"][0]["webhook"]["secret"] == secret
    assert client.delete("/v1/automations/api-trials").status_code == 204
    assert client.delete("/v1/automations/api-trials").status_code == 404
    assert client.get("/v1/automations").json()["entries"] == []


def test_deliveries_activity_and_replay_through_the_api(db_engine, monkeypatch):
    """The Automations panel's data: failed deliveries with their last error, the last 24 h per rule, and a
    replay that delivers to a real receiver on 127.0.0.1 (which checks the signature)."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from automations.dispatch import run_automations
    from fakes.hook_receiver import HookReceiver

    monkeypatch.setenv("PANEL_SECRET", "whsec_panel")
    hook = HookReceiver(secret="whsec_panel", default=500).start()
    try:
        client = api_client(db_engine)
        rule = {"name": "panel", "trigger": "trial_started",
                "actions": [{"webhook": {"url": hook.url, "secret": "env:PANEL_SECRET", "max_attempts": 1}}]}
        assert client.post("/v1/automations", json=rule).status_code == 201
        ds = new_source(client)
        for ext in ("p-1", "p-2"):
            new_customer(client, ds, ext, email=f"{ext}@example.com", free_trial_started_at="2026-01-03T00:00:00Z")
        assert run_automations(db_engine, retry_delays=(0.01,)).failed == 2

        failed = client.get("/v1/automation_deliveries", params={"status": "failed"})
        assert failed.status_code == 200, failed.text
        entries = failed.json()["entries"]
        assert [e["status"] for e in entries] == ["failed", "failed"]
        assert all(e["automation"] == "panel" and "answered HTTP 500" in e["last_error"] for e in entries)
        assert "whsec_panel" not in failed.text
        assert client.get("/v1/automation_deliveries", params={"status": "delivered"}).json()["entries"] == []

        activity = client.get("/v1/automation_activity").json()["entries"]
        assert activity == [{"automation": "panel", "detected": 2, "delivered": 0, "failed": 2, "pending": 0}]

        hook.default = 200
        target = entries[0]
        replayed = client.post(f"/v1/automation_deliveries/{target['id']}/replay")
        assert replayed.status_code == 200, replayed.text
        body = replayed.json()
        assert (body["delivered"], body["failed"]) == (1, 0)
        assert [(d["id"], d["status"]) for d in body["deliveries"]] == [(target["id"], "delivered")]
        (received,) = hook.received[-1:]
        assert received.signature_ok and received.headers["idempotency-key"] == target["occurrence_id"]
        assert len(hook.received) == 3  # two first attempts, one replay: the other failed one was left alone

        # Detected more than 24 h ago: out of the window; its delivery's outcome today still counts.
        with db_engine.begin() as conn:
            conn.execute(update(automation_occurrences).where(automation_occurrences.c.id == target["occurrence_id"])
                         .values(detected_at=datetime.now(UTC) - timedelta(days=2)))
        activity = client.get("/v1/automation_activity").json()["entries"]
        assert activity == [{"automation": "panel", "detected": 1, "delivered": 1, "failed": 1, "pending": 0}]
        assert client.get("/v1/automation_activity", params={"hours": "72"}).json()["entries"][0]["detected"] == 2
    finally:
        hook.stop()

    assert client.post("/v1/automation_deliveries/occ_nope:0/replay").status_code == 404
    for path, params, field in (("/v1/automation_deliveries", {"status": "lost"}, "status"),
                                ("/v1/automation_deliveries", {"limit": "0"}, "limit"),
                                ("/v1/automation_activity", {"hours": "a day"}, "hours")):
        refused = client.get(path, params=params)
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == field
