"""Separating a source customer that was never merged in into a new customer, and the unmerge of either kind.

``storage.merge.unmerge`` undoes a logged merge and brings the merged-away customer back; an import's join
by email is logged as such a merge (``storage.merge.log_joins``). A source customer can still share a
customer without any merge: records of one source sharing an email, or joins an import made before they
were logged. The commercial product's unmerge call separates such a record too, into a new customer with
a new uuid; this module does that, and logs it in the merge log. ``separate`` is the unmerge every door
(the CLI, the API) calls: the logged merge undone when there is one, else the split.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, insert, select, update

from storage.ids import allocate_ids, new_uuid
from storage.merge import MergeEvent, NothingToUnmerge, resolve_source_customer, unmerge
from storage.projection import reproject
from storage.schema import contacts, customers, merge_events, source_customers


class CannotSplit(ValueError):
    """The source customer is the customer's only record, or belongs to another customer."""


def separate(conn: Connection, customer_id: int, source_customer_ref: int | tuple[int, str] | str,
             actor: str) -> MergeEvent:
    """Separate a source customer from ``customer_id``: undo the merge that brought it in, else split it off.

    Returns the ``unmerge`` event logged (``from`` is the customer restored or created).

    Raises:
        CustomerNotFound: the customer or the source customer does not exist.
        CannotSplit: no merge brought the record in and it is the customer's original record (the reason
            names both).
        MergeError: the merge cannot be undone (see ``storage.merge.unmerge``).
    """
    try:
        return unmerge(conn, customer_id, source_customer_ref, actor=actor)
    except NothingToUnmerge as exc:
        sc_id = resolve_source_customer(conn, source_customer_ref)
        try:
            return split_source_customer(conn, customer_id, sc_id, actor=actor)
        except CannotSplit as why:
            raise CannotSplit(f"{exc}; {why}") from None


def split_source_customer(conn: Connection, customer_id: int, source_customer_id: int,
                          actor: str = "api") -> MergeEvent:
    """Move one source customer (with its subscriptions and the contacts it reported) to a new customer.

    Both customers are re-projected from the records they now hold; manual edits stay with the
    original customer. Returns the ``unmerge`` event logged (rule ``split``; ``from`` is the new customer).

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
    event = MergeEvent(uuid=new_uuid("mrg"), kind="unmerge", from_customer_uuid=uuid, into_customer_uuid=into_uuid,
                       rule="split", actor=actor, created_at=now)
    conn.execute(insert(merge_events).values(
        uuid=event.uuid, kind="unmerge", from_customer_uuid=uuid, into_customer_uuid=into_uuid, rule="split",
        actor=actor, created_at=now, snapshot={"split_source_customer": source_customer_id},
    ))
    reproject(conn, [customer_id, new_id])
    return event
