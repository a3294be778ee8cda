"""HTTP API merges and unmerges: a merged-away uuid answers 404, its external ids belong to the survivor."""

from __future__ import annotations

from sqlalchemy import func, select

from storage.schema import merge_events
from tests.api_support import api_client, new_customer, new_source


def test_merge_by_uuid_then_unmerge(db_engine):
    client = api_client(db_engine)
    crm = new_source(client, "crm")
    billing = new_source(client, "billing")
    lead = new_customer(client, crm, "lead-1", email="jo@example.com", lead_created_at="2024-01-05",
                        free_trial_started_at="2024-01-10", attributes={"tags": ["lead"]})
    paying = new_customer(client, billing, "acct-7", name="Jo Ltd", lead_created_at="2024-02-01",
                          attributes={"tags": ["billing"]})
    client.post(f"/v1/customers/{lead['uuid']}/attributes/tags", json={"tags": ["by-hand"]})
    contact = client.post("/v1/contacts", json={"customer_uuid": lead["uuid"], "data_source_uuid": crm,
                                                "email": "jo@example.com"}).json()

    response = client.post("/v1/customers/merges", json={
        "from": {"customer_uuid": lead["uuid"]}, "into": {"customer_uuid": paying["uuid"]}})
    assert response.status_code == 204 and response.content == b""
    gone = client.get(f"/v1/customers/{lead['uuid']}")
    assert gone.status_code == 404 and f"merged into {paying['uuid']}" in gone.json()["message"]
    survivor = client.get(f"/v1/customers/{paying['uuid']}").json()
    assert survivor["external_ids"] == ["acct-7", "lead-1"]
    assert set(survivor["data_source_uuids"]) == {crm, billing}
    assert survivor["email"] == "jo@example.com" and survivor["name"] == "Jo Ltd"
    assert survivor["lead_created_at"] == "2024-01-05T00:00:00+00:00"
    assert survivor["free_trial_started_at"] == "2024-01-10T00:00:00+00:00"
    assert set(survivor["attributes"]["tags"]) == {"lead", "billing", "by-hand"}
    # The merged-away record's external id now names the survivor.
    found = client.get("/v1/customers", params={"data_source_uuid": crm, "external_id": "lead-1"}).json()["entries"]
    assert [c["uuid"] for c in found] == [paying["uuid"]]
    assert client.get(f"/v1/contacts/{contact['uuid']}").json()["customer_uuid"] == paying["uuid"]
    assert len(client.get("/v1/customers").json()["entries"]) == 1

    undone = client.post("/v1/customers/unmerges", json={
        "customer_uuid": paying["uuid"], "data_source_uuid": crm, "external_id": "lead-1",
        "move_to_new_customer": ["tasks", "notes"]})
    assert undone.status_code == 202, undone.text
    assert undone.json()["restored_customer_uuid"] == lead["uuid"]
    back = client.get(f"/v1/customers/{lead['uuid']}").json()
    assert back["external_ids"] == ["lead-1"] and "by-hand" in back["attributes"]["tags"]
    assert client.get(f"/v1/customers/{paying['uuid']}").json()["external_ids"] == ["acct-7"]
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(merge_events)).scalar_one() == 2


def test_merge_by_external_ids_and_errors(db_engine):
    client = api_client(db_engine)
    crm = new_source(client, "crm")
    billing = new_source(client, "billing")
    a = new_customer(client, crm, "cus_187544")
    b = new_customer(client, billing, "34916129")
    ok = client.post("/v1/customers/merges", json={
        "from": {"data_source_uuid": crm, "external_id": "cus_187544"},
        "into": {"data_source_uuid": billing, "external_id": "34916129"}})
    assert ok.status_code == 204
    assert client.get(f"/v1/customers/{a['uuid']}").status_code == 404
    assert client.get(f"/v1/customers/{b['uuid']}").json()["external_ids"] == ["34916129", "cus_187544"]

    gone = client.post(
        "/v1/customers/merges", json={"from": {"customer_uuid": a["uuid"]}, "into": {"customer_uuid": b["uuid"]}}
    )
    assert gone.status_code == 404 and "from" in gone.json()["message"]
    same = client.post("/v1/customers/merges", json={
        "from": {"data_source_uuid": crm, "external_id": "cus_187544"}, "into": {"customer_uuid": b["uuid"]}})
    assert same.status_code == 422
    assert client.post("/v1/customers/merges", json={"from": {"customer_uuid": b["uuid"]}}).status_code == 422
    assert (
        client.post("/v1/customers/merges", json={"from": {}, "into": {"customer_uuid": b["uuid"]}}).status_code == 422
    )
    own = client.post("/v1/customers/unmerges", json={
        "customer_uuid": b["uuid"], "data_source_uuid": billing, "external_id": "34916129"})
    assert own.status_code == 422 and own.json()["errors"][0]["field"] == "external_id"
    missing = client.post("/v1/customers/unmerges", json={"customer_uuid": b["uuid"]})
    assert {e["field"] for e in missing.json()["errors"]} == {"data_source_uuid", "external_id"}
    bad_move = client.post(
        "/v1/customers/unmerges",
        json={
            "customer_uuid": b["uuid"],
            "data_source_uuid": crm,
            "external_id": "cus_187544",
            "move_to_new_customer": ["x"],
        },
    )
    assert bad_move.status_code == 422
    assert client.get(f"/v1/customers/{b['uuid']}").json()["external_ids"] == ["34916129", "cus_187544"]


def test_unmerge_separates_a_record_linked_by_email(db_engine):
    from datetime import UTC, datetime

    from funnelsync.records import SourceCustomerRecord
    from storage.merge import list_merge_events
    from storage.sources import create_source
    from storage.upsert import upsert_records

    client = api_client(db_engine)
    crm = new_source(client, "crm")
    lead = new_customer(client, crm, "lead-1", email="sam@example.com", lead_created_at="2024-01-01")
    with db_engine.begin() as conn:
        sheet = create_source(conn, "sheet", "google_sheets")
        upsert_records(conn, sheet.id, [SourceCustomerRecord(
            external_id="row-7", email="sam@example.com", name="Sam from the sheet",
            free_trial_started_at=datetime(2024, 1, 3, tzinfo=UTC))], link_new_by_email=True)
    assert client.get(f"/v1/customers/{lead['uuid']}").json()["external_ids"] == ["lead-1", "row-7"]

    with db_engine.connect() as conn:
        (joined,) = list_merge_events(conn, lead["uuid"])
    assert (joined.kind, joined.rule) == ("merge", "email-at-import")

    split = client.post("/v1/customers/unmerges", json={
        "customer_uuid": lead["uuid"], "data_source_uuid": sheet.uuid, "external_id": "row-7"})
    assert split.status_code == 202, split.text
    new_uuid = split.json()["restored_customer_uuid"]
    assert new_uuid.startswith("cus_") and new_uuid != lead["uuid"]
    # The answer names the event it logged: the unmerge of the import's join, restoring its customer.
    with db_engine.connect() as conn:
        undone = list_merge_events(conn, lead["uuid"])[0]
    assert split.json()["merge_event"] == undone.uuid
    assert (undone.kind, undone.rule, undone.from_customer_uuid) == ("unmerge", "email-at-import", new_uuid)
    assert new_uuid == joined.from_customer_uuid
    separated = client.get(f"/v1/customers/{new_uuid}").json()
    assert separated["external_ids"] == ["row-7"] and separated["name"] == "Sam from the sheet"
    assert separated["free_trial_started_at"] == "2024-01-03T00:00:00+00:00"
    original = client.get(f"/v1/customers/{lead['uuid']}").json()
    assert original["external_ids"] == ["lead-1"] and original["free_trial_started_at"] is None
    # The customer's only record cannot be separated from it.
    last = client.post("/v1/customers/unmerges", json={
        "customer_uuid": lead["uuid"], "data_source_uuid": crm, "external_id": "lead-1"})
    assert last.status_code == 422 and "original record" in last.json()["message"]
    unknown = client.post("/v1/customers/unmerges", json={
        "customer_uuid": lead["uuid"], "data_source_uuid": crm, "external_id": "nope"})
    assert unknown.status_code == 404


def test_unmerge_of_a_record_no_merge_brought_in_answers_the_split_it_logs(db_engine):
    """Two records of one source sharing an email share a customer without a merge: the API's unmerge
    splits one off and answers the event it wrote to the merge log, as the CLI's unmerge does."""
    from funnelsync.records import SourceCustomerRecord
    from storage.customers import customer_view, resolve_customer
    from storage.merge import list_merge_events
    from storage.sources import create_source
    from storage.upsert import upsert_records

    client = api_client(db_engine)
    with db_engine.begin() as conn:
        sheet = create_source(conn, "sheet", "google_sheets")
        upsert_records(conn, sheet.id, [SourceCustomerRecord(external_id="row-1", email="kim@example.com"),
                                        SourceCustomerRecord(external_id="row-2", email="kim@example.com")],
                       link_new_by_email=True)
        shared = resolve_customer(conn, "sheet:row-1")
        assert shared == resolve_customer(conn, "sheet:row-2") and list_merge_events(conn) == []
        customer_uuid = customer_view(conn, [shared])[0]["uuid"]
    split = client.post("/v1/customers/unmerges", json={
        "customer_uuid": customer_uuid, "data_source_uuid": sheet.uuid, "external_id": "row-2"})
    assert split.status_code == 202, split.text
    with db_engine.connect() as conn:
        (event,) = list_merge_events(conn)
    assert split.json()["merge_event"] == event.uuid and event.uuid.startswith("mrg_")
    assert (event.kind, event.rule, event.from_customer_uuid) == ("unmerge", "split",
                                                                  split.json()["restored_customer_uuid"])
