"""The run-automations flow on the real Prefect test server: chained after an import, every firing an
event with the customer as resource, a table artifact per rule; a second run delivers nothing again."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import select

from automations.apply import apply_definitions
from automations.rule_file import parse_rule_text
from fakes.hook_receiver import HookReceiver
from flows.automations import run_automations_flow
from flows.imports import import_file_flow
from storage.schema import automation_occurrences, customers
from tests.flow_support import artifact, run_id, wait_events

SECRET = "whsec_flow"


def test_an_import_flow_delivers_its_trials_and_emits_one_event_each(db_engine, flow_db, tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    receiver = HookReceiver(secret=SECRET).start()
    try:
        with db_engine.begin() as conn:
            apply_definitions(conn, parse_rule_text(f"""
automations:
  - name: flow-trials
    trigger: trial_started
    where: "country = US"
    actions: [{{webhook: {{url: "{receiver.url}", secret: "env:HOOK_SECRET"}}}}]
"""))
        path = tmp_path / "trials.csv"
        path.write_text("id,name,email,country,lead created at,free trial started at\n"
                        "1,Ada,ada@example.com,US,2026-01-01,2026-01-03\n"
                        "2,Bob,bob@example.com,DE,2026-01-02,2026-01-04\n"
                        "3,Cy,cy@example.com,US,2026-01-02,\n", encoding="utf-8")
        state = import_file_flow(str(path), "Leads", return_state=True)
        assert state.is_completed(), state.message
        assert state.result()["automations"] == {"detected": 0, "delivered": 1, "pending": 0, "failed": 0}
        (got,) = receiver.received
        assert got.signature_ok and got.json()["customer"]["email"] == "ada@example.com"
        with db_engine.connect() as conn:
            ada = conn.execute(select(customers.c.uuid).where(customers.c.email == "ada@example.com")).scalar_one()
        events = wait_events("funnelsync.automation.fired", f"funnelsync.customer.{ada}")
        assert len(events) == 1
        assert events[0].payload["automation"] == "flow-trials" and events[0].payload["status"] == "delivered"
        assert events[0].payload["occurrence"] == got.headers["idempotency-key"]

        again = run_automations_flow(return_state=True)
        assert again.result() == {"detected": 0, "delivered": 0, "pending": 0, "failed": 0}
        import_file_flow(str(path), "Leads")  # the same file again: nothing new
        assert len(receiver.received) == 1
        table = artifact(run_id(state), "table", "run-automations")
        assert json.loads(table.data) == [
            {"automation": "flow-trials", "detected": 0, "delivered": 1, "pending": 0, "failed": 0}]
    finally:
        receiver.stop()


def test_run_deployment_creates_one_flow_run_with_the_rendered_parameters(db_engine, flow_db):
    """A real deployment on the Prefect test server: the action creates a run of it (not waited for) with
    the template rendered, and a second delivery of the same occurrence creates no second run."""
    from prefect import flow
    from prefect.client.orchestration import get_client

    from automations.deployments import run_prefect_deployment
    from automations.dispatch import run_automations
    from funnelsync.records import SourceCustomerRecord
    from storage.sources import create_source
    from storage.upsert import upsert_records

    @flow(name="automation-target")
    def target(source: str) -> str:
        return source

    target.to_deployment(name="by-automation").apply()
    with db_engine.begin() as conn:
        apply_definitions(conn, parse_rule_text("""
automations:
  - name: resync
    trigger: lead_created
    actions:
      - run_deployment:
          {name: "automation-target/by-automation", parameters: {source: "{{ customer.data_sources[0] }}"}}
"""))
        ds = create_source(conn, "Website", "custom")
        upsert_records(conn, ds.id, [SourceCustomerRecord("w-1", name="Ada", lead_created_at=datetime.now(UTC))])
    summary = run_automations(db_engine, run_deployment=run_prefect_deployment)
    assert summary.delivered == 1
    with db_engine.connect() as conn:
        (occurrence,) = conn.execute(select(automation_occurrences.c.id)).scalars().all()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        mine = [r for r in runs if r.idempotency_key == occurrence]
        assert len(mine) == 1 and mine[0].parameters == {"source": "Website"}
    again = run_prefect_deployment("automation-target/by-automation", {"source": "Website"}, occurrence)
    assert again == str(mine[0].id)


def test_sync_source_and_sync_all_run_the_automations_when_they_end(db_engine, flow_db):
    """Chained after sync-source and sync-all: what a sync detected is delivered by the same flow run.
    The vendor is fakes.demo.FakeVendorServer (Stripe's and Chargebee's paging, auth and field names);
    the webhook's secret is a Prefect Secret block (``prefect-secret:``), which the receiver checks."""
    from prefect.blocks.system import Secret

    from fakes.demo import FakeVendorServer, population
    from flows.sync import sync_all_flow, sync_source_flow
    from storage.sources import create_source

    block = f"automation-hook-{db_engine.dialect.name}"
    Secret(value=SECRET).save(block, overwrite=True)
    receiver = HookReceiver(secret=SECRET).start()
    try:
        with FakeVendorServer(population(6, seed=5), population(4, seed=6, prefix="cb_")) as vendor:
            with db_engine.begin() as conn:
                apply_definitions(conn, parse_rule_text(f"""
automations:
  - name: new-customers
    trigger: customer_created
    actions: [{{webhook: {{url: "{receiver.url}", secret: "prefect-secret:{block}"}}}}]
"""))
                create_source(conn, "stripe-live", "stripe", vendor.stripe_settings())
            state = sync_source_flow("stripe-live", return_state=True)
            assert state.is_completed(), state.message
            assert state.result()["automations"] == {"detected": 0, "delivered": 6, "pending": 0, "failed": 0}
            assert artifact(run_id(state), "table", "run-automations") is not None
            with db_engine.begin() as conn:
                create_source(conn, "chargebee-live", "chargebee", vendor.chargebee_settings())
            everything = sync_all_flow(return_state=True)
            assert everything.is_completed(), everything.message
            assert everything.result()["automations"]["delivered"] == 4  # the Chargebee customers; Stripe's are known
        assert len(receiver.received) == 10 and all(r.signature_ok for r in receiver.received)
        assert len({r.headers["idempotency-key"] for r in receiver.received}) == 10
    finally:
        receiver.stop()
