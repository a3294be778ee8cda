"""Contacts added, read, edited and merged by hand (HTTP API, CLI).

Contacts a source reports are written by ``storage.upsert`` (``source_customer_id`` set, replaced on
re-sync); the ones created here have ``source_customer_id`` NULL, so no re-sync ever removes them.
Both kinds are read and edited through the same functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from storage.ids import new_uuid
from storage.schema import contacts, customers, data_sources, source_customers

# The fields of a contact a caller may set.
CONTACT_FIELDS = ("first_name", "last_name", "title", "email", "phone", "linked_in", "twitter", "notes", "position")


# Longest values a contact field takes (email: RFC 5321's path limit; linked_in: a URL).
CONTACT_MAX_LEN = {"email": 320, "notes": 65535, "linked_in": 2048}
MAX_POSITION = 2**31 - 1  # the 32-bit column
IDENTIFYING_FIELDS = ("first_name", "last_name", "email", "phone")


def check_contact_fields(
    data: Mapping[str, Any], *, creating: bool = False
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The contact fields present in ``data``, validated: the rules the HTTP API and the CLI share.

    Text is trimmed (empty → None); numbers are refused rather than turned into text; ``email`` needs
    something on both sides of an ``@``; ``position`` is a whole number from 0 to 2**31 - 1. A new
    contact needs one of first name, last name, email or phone.

    Returns:
        ``(fields, errors)``: the values to write, and ``(field, reason)`` for every value refused.
    """
    out: dict[str, Any] = {}
    errors: list[tuple[str, str]] = []
    for name in CONTACT_FIELDS:
        if name not in data:
            continue
        value = data[name]
        if name == "position":
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_POSITION
            ):
                errors.append((name, f"expected a whole number from 0 to {MAX_POSITION}, got {value!r}"))
            else:
                out[name] = value
            continue
        if value is None or (isinstance(value, str) and not value.strip()):
            out[name] = None
            continue
        if not isinstance(value, str):
            errors.append((name, f"expected a string, got {type(value).__name__}"))
            continue
        value = value.strip()
        limit = CONTACT_MAX_LEN.get(name, 255)
        if len(value) > limit:
            errors.append((name, f"at most {limit} characters, got {len(value)}"))
            continue
        if name == "email" and ("@" not in value or value.startswith("@") or value.endswith("@")):
            errors.append((name, f"not an email address: {value!r}"))
            continue
        out[name] = value
    if creating and not any(out.get(n) for n in IDENTIFYING_FIELDS):
        errors.append(("body", "a contact needs at least one of first_name, last_name, email, phone"))
    return out, errors


class ContactNotFound(LookupError):
    """No contact has that uuid."""


def create_contact(
    conn: Connection, customer_id: int, fields: Mapping[str, Any], *, custom: Mapping[str, Any] | None = None,
    external_id: str | None = None,
) -> int:
    """Add a hand-made contact to a customer and return its id.

    Args:
        conn: a connection inside the caller's transaction.
        customer_id: the customer the person belongs to.
        fields: any of :data:`CONTACT_FIELDS`; ``position`` defaults to after the customer's last contact.
        custom: custom fields of the contact.
        external_id: the contact's id in the caller's system, if any.
    """
    now = datetime.now(UTC)
    values = {name: fields.get(name) for name in CONTACT_FIELDS}
    if values["position"] is None:
        last = conn.execute(
            select(func.max(contacts.c.position)).where(contacts.c.customer_id == customer_id)
        ).scalar()
        values["position"] = int(last or 0) + 1
    result = conn.execute(
        contacts.insert().values(
            uuid=new_uuid("con"), customer_id=customer_id, source_customer_id=None, contact_key=None,
            external_id=external_id, custom=dict(custom or {}), created_at=now, updated_at=now, **values,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def contact_id(conn: Connection, uuid: str) -> int:
    """The id of the contact ``uuid``.

    Raises:
        ContactNotFound: when there is none.
    """
    found = conn.execute(select(contacts.c.id).where(contacts.c.uuid == uuid)).scalar()
    if found is None:
        raise ContactNotFound(f"no contact with uuid {uuid!r}")
    return int(found)


def list_contact_ids(
    conn: Connection, *, after_id: int = 0, limit: int | None = None, customer_id: int | None = None,
    email: str | None = None, customer_external_id: str | None = None,
) -> list[int]:
    """Contact ids in id order after a cursor id, with optional filters.

    ``customer_external_id`` matches contacts of any customer that has a source customer with that
    external id (a merged customer answers to every external id it holds).
    """
    stmt = select(contacts.c.id).where(contacts.c.id > after_id).order_by(contacts.c.id)
    if customer_id is not None:
        stmt = stmt.where(contacts.c.customer_id == customer_id)
    if email is not None:
        stmt = stmt.where(func.lower(contacts.c.email) == email.strip().lower())
    if customer_external_id is not None:
        owners = select(source_customers.c.customer_id).where(source_customers.c.external_id == customer_external_id)
        stmt = stmt.where(contacts.c.customer_id.in_(owners))
    if limit is not None:
        stmt = stmt.limit(limit)
    return [row[0] for row in conn.execute(stmt)]


def contact_view(conn: Connection, contact_ids: Sequence[int]) -> list[dict[str, Any]]:
    """JSON-ready contacts in the order of ``contact_ids`` (missing ids left out).

    ``data_source_uuid`` and ``customer_external_id`` name the source customer that reported the
    contact, or for a hand-made contact the customer's first-linked source customer.
    """
    if not contact_ids:
        return []
    ids = list(contact_ids)
    rows = {
        r["id"]: r
        for r in conn.execute(
            select(contacts, customers.c.uuid.label("customer_uuid"))
            .join(customers, customers.c.id == contacts.c.customer_id)
            .where(contacts.c.id.in_(ids))
        ).mappings()
    }
    customer_ids = {r["customer_id"] for r in rows.values()}
    own_link: dict[int, tuple[str, str]] = {}
    first_link: dict[int, tuple[str, str]] = {}
    if customer_ids:
        for link in conn.execute(
            select(source_customers.c.id, source_customers.c.customer_id, source_customers.c.external_id,
                   data_sources.c.uuid)
            .join(data_sources, data_sources.c.id == source_customers.c.data_source_id)
            .where(source_customers.c.customer_id.in_(customer_ids))
            .order_by(source_customers.c.customer_id, source_customers.c.linked_at, source_customers.c.id)
        ):
            own_link[link[0]] = (link[2], link[3])
            first_link.setdefault(link[1], (link[2], link[3]))
    out = []
    for cid in ids:
        row = rows.get(cid)
        if row is None:
            continue
        owner = own_link.get(row["source_customer_id"]) or first_link.get(row["customer_id"])
        external_id, ds_uuid = owner or (None, None)
        out.append({
            "id": row["id"],
            "uuid": row["uuid"],
            "customer_id": row["customer_id"],
            "customer_uuid": row["customer_uuid"],
            "customer_external_id": external_id,
            "data_source_uuid": ds_uuid,
            "external_id": row["external_id"],
            **{name: row[name] for name in CONTACT_FIELDS},
            "custom": dict(row["custom"] or {}),
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
        })
    return out


def update_contact(
    conn: Connection, contact_pk: int, fields: Mapping[str, Any], *, custom: Mapping[str, Any] | None = None
) -> None:
    """Change some fields of a contact; ``custom`` keys are merged into its custom fields."""
    values: dict[str, Any] = {name: fields[name] for name in CONTACT_FIELDS if name in fields}
    if custom:
        current = conn.execute(select(contacts.c.custom).where(contacts.c.id == contact_pk)).scalar() or {}
        values["custom"] = {**current, **custom}
    if not values:
        return
    values["updated_at"] = datetime.now(UTC)
    conn.execute(update(contacts).where(contacts.c.id == contact_pk).values(values))


def delete_contact(conn: Connection, contact_pk: int) -> None:
    """Delete one contact."""
    conn.execute(delete(contacts).where(contacts.c.id == contact_pk))


def merge_contacts(conn: Connection, into_pk: int, from_pk: int) -> None:
    """Merge contact ``from_pk`` into ``into_pk``: empty fields of INTO are filled from FROM, custom
    fields are united (INTO wins a conflict), and FROM is deleted.

    Raises:
        ValueError: when both are the same contact.
    """
    if into_pk == from_pk:
        raise ValueError("a contact cannot be merged into itself")
    rows = {
        r["id"]: r for r in conn.execute(select(contacts).where(contacts.c.id.in_([into_pk, from_pk]))).mappings()
    }
    into, other = rows[into_pk], rows[from_pk]
    values: dict[str, Any] = {
        name: other[name]
        for name in (*CONTACT_FIELDS, "external_id")
        if into[name] in (None, "") and other[name] not in (None, "")
    }
    values["custom"] = {**(other["custom"] or {}), **(into["custom"] or {})}
    values["updated_at"] = datetime.now(UTC)
    conn.execute(update(contacts).where(contacts.c.id == into_pk).values(values))
    conn.execute(delete(contacts).where(contacts.c.id == from_pk))
