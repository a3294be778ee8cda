"""Separating a source customer that was never merged in (linked by email at import) into a new customer.

``storage.merge.unmerge`` undoes a logged merge and brings the merged-away customer back. A source
customer can also share a customer without any merge: an import that links new records by email puts
them straight onto the existing customer. The commercial product's unmerge call separates such a record
too, into a new customer with a new uuid; this module does that, and logs it in the merge log.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select, update

from storage.ids import allocate_ids, new_uuid
from storage.projection import reproject
from storage.schema import contacts, customers, merge_events, source_customers


class CannotSplit(ValueError):
    """The source customer is the customer's only record, or belongs to another customer."""


def split_source_customer(conn: Connection, customer_id: int, source_customer_id: int, actor: str = "api") -> str:
    """Move one source customer (with its subscriptions and the contacts it reported) to a new customer.

    Both customers are re-projected from the records they now hold; manual edits stay with the
    original customer. Returns the new customer's uuid.

    Raises:
        CannotSplit: when the record is not this customer's, or is its original (first-linked) one.
    """
    sc = source_customers
    owner = conn.execute(select(sc.c.customer_id).where(sc.c.id == source_customer_id)).scalar()
    if owner != customer_id:
        raise CannotSplit("that record does not belong to this customer")
    first = conn.execute(
        select(sc.c.id).where(sc.c.customer_id == customer_id).order_by(sc.c.linked_at, sc.c.id).limit(1)
    ).scalar()
    if first == source_customer_id:
        # The first-linked record is the customer's own identity (the projection reads it first):
        # separating it would leave the uuid with someone else's record.
        raise CannotSplit("it is the customer's original record (the only one, or the first linked): "
                          "separate the other records from it instead")
    now = datetime.now(UTC)
    new_id = allocate_ids(conn, "customers", 1)[0]
    uuid = new_uuid("cus")
    conn.execute(insert(customers).values(id=new_id, uuid=uuid, created_at=now, updated_at=now, status="New_Lead",
                                          tags=[], custom={}, has_subscriptions=False))
    conn.execute(update(sc).where(sc.c.id == source_customer_id).values(customer_id=new_id, linked_at=now))
    conn.execute(update(contacts).where(contacts.c.source_customer_id == source_customer_id).values(customer_id=new_id))
    into_uuid = conn.execute(select(customers.c.uuid).where(customers.c.id == customer_id)).scalar_one()
    conn.execute(insert(merge_events).values(
        uuid=new_uuid("mrg"), kind="unmerge", from_customer_uuid=uuid, into_customer_uuid=into_uuid, rule="split",
        actor=actor, created_at=now, snapshot={"split_source_customer": source_customer_id},
    ))
    reproject(conn, [customer_id, new_id])
    return uuid
