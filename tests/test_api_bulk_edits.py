"""``POST /v1/customers/bulk_edits``: the bulk-edit job through the API, skipped customers with their reasons,
refusals naming the field, on SQLite and PostgreSQL."""

from __future__ import annotations

from tests.api_support import api_client, new_customer, new_source


def test_bulk_edit_applies_and_lists_the_skipped_with_reasons(db_engine):
    client = api_client(db_engine)
    ds = new_source(client, "Web")
    ada = new_customer(client, ds, "1", name="Ada", lead_created_at="2026-01-01", free_trial_started_at="2026-02-01")
    bob = new_customer(client, ds, "2", name="Bob", lead_created_at="2026-01-01")
    carol = new_customer(client, ds, "3", name="Carol", owner="keep@x.io")
    answer = client.post("/v1/customers/bulk_edits", json={
        "customers": [ada["uuid"], bob["uuid"], "cus_nobody", "Web:2"],
        "set": {"lead_created_at": "2026-03-01", "owner": "rep@x.io", "tags": "hot"}})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["applied"] == 1 and body["skipped"] == 3 and body["dry_run"] is False
    reasons = {s["customer"]: s["reason"] for s in body["skips"]}
    assert "trial" in reasons[ada["uuid"]] and reasons["cus_nobody"] == "no such customer"
    assert "same customer" in reasons["Web:2"]
    got = {c["name"]: c for c in client.get("/v1/customers").json()["entries"]}
    assert got["Bob"]["lead_created_at"].startswith("2026-03-01") and got["Bob"]["owner"] == "rep@x.io"
    assert got["Bob"]["attributes"]["tags"] == ["hot"]
    assert not got["Ada"]["owner"] and got["Ada"]["lead_created_at"].startswith("2026-01-01")  # skipped whole
    assert got["Carol"]["owner"] == "keep@x.io"  # not named, not touched

    dry = client.post("/v1/customers/bulk_edits", json={"customers": [carol["uuid"]], "set": {"owner": "z@x.io"},
                                                        "dry_run": True}).json()
    assert dry["applied"] == 1 and dry["dry_run"] is True
    assert client.get(f"/v1/customers/{carol['uuid']}").json()["owner"] == "keep@x.io"

    for payload, field in (({"customers": [], "set": {"owner": "a"}}, "customers"),
                           ({"customers": [bob["uuid"]], "set": {}}, "set"),
                           ({"customers": [bob["uuid"]], "set": {"lead_status": "Sleeping"}}, "set.lead_status"),
                           ({"customers": [bob["uuid"]], "set": {"email": "a@b.io"}}, "set.email"),
                           ({"customers": [bob["uuid"]], "set": {"owner": 5}}, "set.owner"),
                           ({"customers": [bob["uuid"]], "set": {"owner": "a"}, "dry_run": "yes"}, "dry_run"),
                           ({"customers": ["x"] * 1001, "set": {"owner": "a"}}, "customers")):
        refused = client.post("/v1/customers/bulk_edits", json=payload)
        assert refused.status_code == 422, (payload, refused.text)
        assert [e["field"] for e in refused.json()["errors"]] == [field]
    assert client.get(f"/v1/customers/{bob['uuid']}").json()["owner"] == "rep@x.io"
