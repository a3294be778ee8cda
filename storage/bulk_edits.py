"""Batched manual edits for many customers at once (bulk edit), and batched customer references.

``storage.edits.set_manual_edits`` handles one customer (three statements); a bulk edit of a hundred
thousand customers must not cost three hundred thousand round trips, so here a whole batch is one
lookup, one executemany upsert of ``manual_edits`` and one re-projection.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, select

from storage.edits import validate_edit
from storage.outbox import detect_changes
from storage.projection import reproject
from storage.schema import customers, data_sources, manual_edits, source_customers
from storage.sql import upsert_on_conflict

CHUNK = 1000


@dataclass(frozen=True, slots=True)
class CustomerState:
    """What bulk-edit rules look at: status and the effective lead and trial dates."""

    customer_id: int
    uuid: str
    status: str
    lead_created_at: datetime | None
    free_trial_started_at: datetime | None


def customer_states(conn: Connection, customer_ids: Iterable[int]) -> dict[int, CustomerState]:
    """The current state of existing customers, by id (missing or merged-away ids are left out)."""
    ids = list(customer_ids)
    states: dict[int, CustomerState] = {}
    c = customers
    for start in range(0, len(ids), CHUNK):
        for row in conn.execute(
            select(c.c.id, c.c.uuid, c.c.status, c.c.lead_created_at, c.c.free_trial_started_at).where(
                c.c.id.in_(ids[start : start + CHUNK])
            )
        ):
            states[row.id] = CustomerState(row.id, row.uuid, row.status, row.lead_created_at, row.free_trial_started_at)
    return states


def resolve_refs(conn: Connection, refs: Iterable[str]) -> dict[str, int]:
    """Resolve many customer references at once: ``cus_…`` uuids, ``SOURCE:EXTERNAL_ID`` pairs, emails.

    An email matches customers by normalised email (the lowest id when several share it). Returns
    ``{ref: customer id}`` for the references found.
    """
    from funnelsync.normalize import normalize_email

    uuids: list[str] = []
    pairs: dict[str, list[tuple[str, str]]] = defaultdict(list)
    emails: dict[str, list[str]] = defaultdict(list)
    for ref in dict.fromkeys(r.strip() for r in refs if r and r.strip()):
        if ref.startswith("cus_"):
            uuids.append(ref)
        elif ":" in ref:
            source, _, external_id = ref.partition(":")
            pairs[source].append((ref, external_id))
        elif "@" in ref:
            email = normalize_email(ref)
            if email:
                emails[email].append(ref)
    found: dict[str, int] = {}
    for start in range(0, len(uuids), CHUNK):
        for uuid, cid in conn.execute(
            select(customers.c.uuid, customers.c.id).where(customers.c.uuid.in_(uuids[start : start + CHUNK]))
        ):
            found[uuid] = cid
    if pairs:
        sources = {
            key: ds_id
            for ds_id, name, uuid in conn.execute(select(data_sources.c.id, data_sources.c.name, data_sources.c.uuid))
            for key in (name, uuid)
        }
        for source, wanted in pairs.items():
            ds_id = sources.get(source)
            if ds_id is None:
                continue
            by_external = {external_id: ref for ref, external_id in wanted}
            keys = list(by_external)
            for start in range(0, len(keys), CHUNK):
                for external_id, cid in conn.execute(
                    select(source_customers.c.external_id, source_customers.c.customer_id).where(
                        source_customers.c.data_source_id == ds_id,
                        source_customers.c.external_id.in_(keys[start : start + CHUNK]),
                    )
                ):
                    found[by_external[external_id]] = cid
    email_keys = list(emails)
    for start in range(0, len(email_keys), CHUNK):
        for email, cid in conn.execute(
            select(customers.c.email_norm, customers.c.id)
            .where(customers.c.email_norm.in_(email_keys[start : start + CHUNK]))
            .order_by(customers.c.id.desc())
        ):
            for ref in emails[email]:
                found[ref] = cid  # descending order: the lowest id is written last and wins
    return found


def apply_manual_edits(
    conn: Connection, edits_by_customer: Mapping[int, Mapping[str, Any]], actor: str = "bulk-edit"
) -> int:
    """Store manual edits of many customers (one executemany) and re-project them; returns how many.

    Values must be checked by the caller's rules already; each is normalised with
    ``storage.edits.validate_edit`` (which raises ``EditError`` for an impossible field or value).
    """
    now = datetime.now(timezone.utc)
    rows = [
        {"customer_id": cid, "field": field, "value": validate_edit(field, value), "actor": actor, "created_at": now}
        for cid, edits in edits_by_customer.items()
        for field, value in edits.items()
    ]
    if not rows:
        return 0
    for start in range(0, len(rows), CHUNK * 5):
        upsert_on_conflict(
            conn,
            manual_edits,
            rows[start : start + CHUNK * 5],
            ["customer_id", "field"],
            ["value", "actor", "created_at"],
        )
    reproject(conn, list(edits_by_customer))
    detect_changes(conn, list(edits_by_customer))
    return len(edits_by_customer)
