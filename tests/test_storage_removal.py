"""Removing the source customers a source reports deleted: re-projection, removal, the log of what went."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, func, select

from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from storage.customers import customer_view, resolve_customer
from storage.edits import manual_edits_of, set_manual_edits
from storage.merge import merge_customers
from storage.removal import remove_source_customers
from storage.schema import customers, manual_edits, merge_events, source_customers, subscriptions
from storage.sources import create_source
from storage.upsert import upsert_records


def t(month: int, day: int) -> datetime:
    return datetime(2025, month, day, tzinfo=UTC)


LEAD = SourceCustomerRecord(external_id="L-1", name="Jane Lead", email="jane@acme.io", lead_created_at=t(1, 1))
PAYER = SourceCustomerRecord(
    external_id="cus_B1", name="Jane Doe", email="jane@acme.io", company="Acme GmbH", lead_created_at=t(1, 10),
    free_trial_started_at=t(1, 3),
    subscriptions=[SubscriptionFact(external_id="sub_1", state="active", trial_started_at=t(1, 3),
                                    first_paid_at=t(2, 1))],
)


def count(conn, table) -> int:  # type: ignore[no-untyped-def]
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_removing_one_source_of_a_merged_customer_reprojects_from_the_rest(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        crm = create_source(conn, "crm", "custom").id
        billing = create_source(conn, "billing", "stripe").id
        upsert_records(conn, crm, [LEAD], now=t(1, 1))
        upsert_records(conn, billing, [PAYER], now=t(3, 1))
        lead_id, payer_id = resolve_customer(conn, "crm:L-1"), resolve_customer(conn, "billing:cus_B1")
        assert lead_id and payer_id
        merge_customers(conn, payer_id, lead_id)
        set_manual_edits(conn, lead_id, {"owner": "sam@us.io"}, "ann")
        (before,) = customer_view(conn, [lead_id])
        assert before["company"] == "Acme GmbH" and before["subscriber_since"] is not None

        removal = remove_source_customers(conn, billing, ["cus_B1"])
        (after,) = customer_view(conn, [lead_id])
        assert (removal.source_customers, removal.customers_deleted, removal.customers_kept) == (1, 0, 1)
        assert after["company"] is None and after["subscriber_since"] is None
        assert after["free_trial_started_at"] is None and after["lead_created_at"] == t(1, 1).isoformat()
        assert after["owner"] == "sam@us.io"  # the manual edit stays
        assert manual_edits_of(conn, lead_id).keys() == {"owner"}
        assert count(conn, subscriptions) == 0 and count(conn, source_customers) == 1


def test_a_customer_left_without_source_customers_goes_and_its_edits_are_logged(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        billing = create_source(conn, "billing", "stripe").id
        other = create_source(conn, "other", "stripe").id
        upsert_records(conn, billing, [PAYER], now=t(3, 1))
        upsert_records(conn, other, [SourceCustomerRecord(external_id="cus_B1", email="kept@x.io")], now=t(3, 1))
        payer_id = resolve_customer(conn, "billing:cus_B1")
        assert payer_id
        set_manual_edits(conn, payer_id, {"owner": "max@us.io", "custom.region": "EU"}, "max")
        uuid = conn.execute(select(customers.c.uuid).where(customers.c.id == payer_id)).scalar_one()

        removal = remove_source_customers(conn, billing, ["cus_B1", "cus_never_seen"])
        assert (removal.source_customers, removal.customers_deleted, removal.customers_kept) == (1, 1, 0)
        assert conn.execute(select(customers.c.id).where(customers.c.id == payer_id)).first() is None
        assert count(conn, manual_edits) == 0
        # The same external id in another source is another source customer: untouched.
        assert resolve_customer(conn, "other:cus_B1") is not None
        (event,) = conn.execute(select(merge_events)).mappings().all()
        assert event["kind"] == "delete" and event["rule"] == "source_deleted"
        assert event["from_customer_uuid"] == uuid
        snapshot = event["snapshot"]
        assert snapshot["customer"]["company"] == "Acme GmbH"
        assert {e["field"]: e["value"] for e in snapshot["manual_edits"]} == {"owner": "max@us.io",
                                                                                "custom.region": "EU"}
        assert snapshot["source_customers"] == [{"data_source_id": billing, "external_id": "cus_B1"}]

        again = remove_source_customers(conn, billing, ["cus_B1"])
        assert again.source_customers == 0 and count(conn, merge_events) == 1
