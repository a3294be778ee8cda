"""What a verified webhook delivery writes: the records read again from the vendor, or partial records
completed with what the source said before, each delivery in ONE transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, Engine, select

from connectors.push import PartialRecord, complete
from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from storage.deletion_undo import restore_reappeared
from storage.schema import source_customers, subscriptions
from storage.upsert import UpsertResult, upsert_records


def store_records(engine: Engine, data_source_id: Any, records: Sequence[SourceCustomerRecord]) -> UpsertResult:
    """Upsert a delivery's records in one transaction."""
    with engine.begin() as conn:
        result = upsert_records(conn, data_source_id, records)
        if result.created:  # a record the source had deleted may be back: its manual edits return
            restore_reappeared(conn, data_source_id)
        return result


def store_partials(
    engine: Engine, data_source_id: Any, partials: list[PartialRecord]
) -> tuple[list[SourceCustomerRecord], UpsertResult]:
    """Complete a push delivery's partial records with the stored values and upsert them, in one transaction.

    Returns:
        The records written (an update-only partial without a stored record is dropped) and the counts.
    """
    with engine.begin() as conn:
        records = complete_partials(conn, data_source_id, partials)
        return records, upsert_records(conn, data_source_id, records)


def complete_partials(
    conn: Connection, data_source_id: Any, partials: list[PartialRecord]
) -> list[SourceCustomerRecord]:
    """Records for a push delivery: each partial overlaid on the stored values; update-only ones without
    a stored record are dropped."""
    partials = _resolve_subscription_keys(conn, data_source_id, partials)
    stored = _stored_values(conn, data_source_id, [p.external_id for p in partials])
    known = {p.external_id: stored[p.external_id]["id"] for p in partials if p.external_id in stored}
    subs = _stored_subscriptions(conn, [known[p.external_id] for p in partials
                                        if p.subscriptions is not None and p.external_id in known])
    records = [complete(p, stored.get(p.external_id), subs.get(known.get(p.external_id))) for p in partials]
    return [r for r in records if r is not None]


def _resolve_subscription_keys(
    conn: Connection, data_source_id: Any, partials: list[PartialRecord]
) -> list[PartialRecord]:
    """Partials keyed by a subscription id re-keyed by the customer that has it; dropped when none has it."""
    sub_ids = [p.external_id for p in partials if p.by_subscription]
    if not sub_ids:
        return partials
    rows = conn.execute(
        select(subscriptions.c.external_id, source_customers.c.external_id.label("customer"))
        .join(source_customers, source_customers.c.id == subscriptions.c.source_customer_id)
        .where(source_customers.c.data_source_id == data_source_id, subscriptions.c.external_id.in_(sub_ids))
    ).all()
    owner = {str(r.external_id): str(r.customer) for r in rows}
    return [
        replace(p, external_id=owner[p.external_id], by_subscription=False, creates=False) if p.by_subscription else p
        for p in partials
        if not p.by_subscription or p.external_id in owner
    ]


def _stored_subscriptions(conn: Connection, source_customer_ids: list[Any]) -> dict[Any, list[SubscriptionFact]]:
    """The stored subscriptions of these source customers (one query), keyed by source customer id."""
    found: dict[Any, list[SubscriptionFact]] = {}
    if not source_customer_ids:
        return found
    rows = conn.execute(
        select(subscriptions).where(subscriptions.c.source_customer_id.in_(source_customer_ids))
    ).mappings()
    for row in rows:
        found.setdefault(row["source_customer_id"], []).append(
            SubscriptionFact(
                external_id=str(row["external_id"]), state=str(row["state"]),
                trial_started_at=row["trial_started_at"], trial_ended_at=row["trial_ended_at"],
                first_paid_at=row["first_paid_at"], cancelled_at=row["cancelled_at"],
            )
        )
    return found


def _stored_values(conn: Connection, data_source_id: Any, external_ids: list[str]) -> dict[str, dict[str, Any]]:
    """What the source said before about these external ids (one query), keyed by external id."""
    if not external_ids:
        return {}
    rows = conn.execute(
        select(source_customers).where(
            source_customers.c.data_source_id == data_source_id, source_customers.c.external_id.in_(external_ids)
        )
    ).mappings()
    return {str(row["external_id"]): dict(row) for row in rows}
