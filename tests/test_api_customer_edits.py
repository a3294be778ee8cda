"""``/v1/customers/{uuid}/edits``: the manual edits of a customer, and reverting one to the sources' value
(through the job ``funnelsync customers edit --unset`` uses), on SQLite and PostgreSQL."""

from __future__ import annotations

from storage.edits import manual_edits_of
from tests.api_support import api_client, new_customer, new_source


def test_list_and_revert_manual_edits(db_engine):
    client = api_client(db_engine)
    ds = new_source(client)
    made = new_customer(client, ds, "1", name="Ada", owner="source@x.io", country="US",
                        attributes={"tags": ["webinar"], "custom": {"seats": 3}})
    uuid = made["uuid"]
    assert client.get(f"/v1/customers/{uuid}/edits").json() == {"edits": []}
    edited = client.patch(f"/v1/customers/{uuid}", json={"owner": "rep@x.io", "country": "DE",
                                                         "attributes": {"custom": {"seats": "12"}}})
    assert edited.status_code == 200, edited.text
    edits = client.get(f"/v1/customers/{uuid}/edits").json()["edits"]
    assert [(e["field"], e["value"]) for e in edits] == [("country", "DE"), ("custom.seats", 12), ("owner", "rep@x.io")]
    assert all(e["actor"].startswith("api:fsk_") and e["edited_at"] for e in edits)

    reverted = client.delete(f"/v1/customers/{uuid}/edits/owner")
    assert reverted.status_code == 200, reverted.text
    body = reverted.json()
    assert body["owner"] == "source@x.io" and body["country"] == "DE"  # only the field asked for
    assert body["attributes"]["custom"] == {"seats": 12}
    assert client.delete(f"/v1/customers/{uuid}/edits/custom.seats").json()["attributes"]["custom"] == {"seats": 3}
    with db_engine.connect() as conn:
        from storage.customer_pages import customer_id_by_uuid

        assert manual_edits_of(conn, customer_id_by_uuid(conn, uuid)) == {"country": "DE"}

    missing = client.delete(f"/v1/customers/{uuid}/edits/owner")
    assert missing.status_code == 404 and "no manual edit of 'owner'" in missing.json()["message"]
    refused = client.delete(f"/v1/customers/{uuid}/edits/uuid")
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "field"
    assert client.delete("/v1/customers/cus_nobody/edits/owner").status_code == 404
    assert client.get("/v1/customers/cus_nobody/edits").status_code == 404
    assert client.delete(f"/v1/customers/{uuid}/edits/country", auth=None).status_code == 401
