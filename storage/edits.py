"""Manual edits (overrides): values a user set by hand, which no re-sync erases."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, delete, select

from funnelsync.normalize import normalize_country
from funnelsync.records import LEAD_STATUSES, PROFILE_FIELDS
from storage.outbox import detect_changes
from storage.projection import EDITABLE_DATE_FIELDS, reproject
from storage.schema import customers, manual_edits
from storage.sql import upsert_on_conflict

EDITABLE_FIELDS = (*PROFILE_FIELDS, *EDITABLE_DATE_FIELDS)


class EditError(ValueError):
    """A manual edit that cannot be applied (unknown field, bad value, lead status on a subscriber)."""


def validate_edit(field: str, value: Any) -> Any:
    """Check one edit and return the value in the form it is stored (JSON-ready).

    Raises:
        EditError: naming the field and why.
    """
    if field.startswith("custom."):
        if not field[7:]:
            raise EditError("custom attribute edits need a key: custom.<key>")
        if isinstance(value, datetime):
            return value.astimezone(timezone.utc).isoformat()
        return value
    if field.startswith("tag."):
        if not field[4:]:
            raise EditError("tag edits need a tag name: tag.<name>")
        return bool(value)
    if field not in EDITABLE_FIELDS:
        raise EditError(
            f"field {field!r} cannot be edited: use one of {', '.join(EDITABLE_FIELDS)}, custom.<key> or tag.<name>"
        )
    if field in EDITABLE_DATE_FIELDS:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise EditError(f"{field} must be a timezone-aware datetime")
        return value.astimezone(timezone.utc).isoformat()
    if field == "lead_status" and value is not None and value not in LEAD_STATUSES:
        raise EditError(f"lead_status must be one of {', '.join(LEAD_STATUSES)}, got {value!r}")
    if field == "country" and value is not None:
        try:
            return normalize_country(str(value))
        except ValueError as exc:
            raise EditError(str(exc)) from exc
    return value


def set_manual_edits(
    conn: Connection, customer_id: int, edits: Mapping[str, Any], actor: str = "cli"
) -> None:
    """Store manual edits of one customer and re-project it.

    A lead status cannot be set on a subscriber (``funnelsync.edit_rules``): that raises :class:`EditError`.
    """
    if not edits:
        return
    status = conn.execute(select(customers.c.status).where(customers.c.id == customer_id)).scalar_one_or_none()
    if status is None:
        raise EditError(f"no customer with id {customer_id}")
    if "lead_status" in edits and status in ("Active", "Past_Due", "Cancelled"):
        raise EditError(f"a lead status cannot be set on a subscriber (status {status})")
    now = datetime.now(timezone.utc)
    rows = [
        {"customer_id": customer_id, "field": f, "value": validate_edit(f, v), "actor": actor, "created_at": now}
        for f, v in edits.items()
    ]
    upsert_on_conflict(conn, manual_edits, rows, ["customer_id", "field"], ["value", "actor", "created_at"])
    reproject(conn, [customer_id])
    detect_changes(conn, [customer_id])


def clear_manual_edits(conn: Connection, customer_id: int, fields: Iterable[str]) -> None:
    """Remove manual edits so the sources' values show again."""
    conn.execute(
        delete(manual_edits).where(manual_edits.c.customer_id == customer_id, manual_edits.c.field.in_(list(fields)))
    )
    reproject(conn, [customer_id])
    detect_changes(conn, [customer_id])


def manual_edits_of(conn: Connection, customer_id: int) -> dict[str, Any]:
    """The stored manual edits of a customer, by field (JSON values as stored)."""
    return {
        row.field: row.value
        for row in conn.execute(
            select(manual_edits.c.field, manual_edits.c.value).where(manual_edits.c.customer_id == customer_id)
        )
    }


def manual_edit_rows(conn: Connection, customer_id: int) -> list[dict[str, Any]]:
    """The stored manual edits of a customer with who made each and when, by field name."""
    query = (select(manual_edits.c.field, manual_edits.c.value, manual_edits.c.actor, manual_edits.c.created_at)
             .where(manual_edits.c.customer_id == customer_id).order_by(manual_edits.c.field))
    return [{"field": row.field, "value": row.value, "actor": row.actor, "edited_at": row.created_at}
            for row in conn.execute(query)]
