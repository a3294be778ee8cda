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
