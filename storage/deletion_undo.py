"""Undoing a source's deletion when the record comes back: the manual edits a removed customer had return.

``storage.removal`` deletes a customer left with no source customer and keeps, in a ``merge_events`` row
of kind ``delete`` (rule ``source_deleted``), its last values, its manual edits and the source customers
it lost. When one of those source customers is written again (a HubSpot contact restored, a Recurly
account reopened), ``restore_reappeared`` puts the logged manual edits on the customer that now holds
it (fields edited there since keep their new edit) and marks the event undone, so a deletion followed by
a restore loses nothing a user typed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from storage.merge_plan import row_from_json
from storage.projection import reproject
from storage.schema import manual_edits, merge_events, source_customers


def restore_reappeared(conn: Connection, data_source_id: int) -> int:
    """Undo the pending ``source_deleted`` events of this source whose source customer exists again.

    Returns how many events were undone. One query over the pending deletion events, one for the
    source customers they name: deletions are rare, so this runs after every sync of the source.
    """
    pending: dict[str, tuple[int, dict[str, Any]]] = {}
    events = conn.execute(
        select(merge_events.c.id, merge_events.c.snapshot).where(
            merge_events.c.kind == "delete", merge_events.c.rule == "source_deleted",
            merge_events.c.undone_at.is_(None))
        .order_by(merge_events.c.id)
    ).all()
    for event_id, snapshot in events:
        for lost in (snapshot or {}).get("source_customers") or []:
            if int(lost.get("data_source_id") or 0) == int(data_source_id):
                pending[str(lost["external_id"])] = (event_id, snapshot)  # the latest deletion wins
    if not pending:
        return 0
    back = conn.execute(
        select(source_customers.c.external_id, source_customers.c.customer_id).where(
            source_customers.c.data_source_id == data_source_id,
            source_customers.c.external_id.in_(sorted(pending)))
    ).all()
    undone: set[int] = set()
    touched: set[int] = set()
    now = datetime.now(UTC)
    for external_id, customer_id in back:
        event_id, snapshot = pending[str(external_id)]
        if event_id in undone:
            continue
        edited = set(conn.execute(
            select(manual_edits.c.field).where(manual_edits.c.customer_id == customer_id)).scalars())
        rows = []
        for logged in snapshot.get("manual_edits") or []:
            edit = row_from_json(manual_edits, logged)
            if edit["field"] in edited:
                continue
            rows.append({"customer_id": customer_id, "field": edit["field"], "value": edit["value"],
                         "actor": edit.get("actor") or "cli", "created_at": edit.get("created_at") or now})
        if rows:
            conn.execute(insert(manual_edits), rows)
        conn.execute(update(merge_events).where(merge_events.c.id == event_id).values(undone_at=now))
        undone.add(event_id)
        touched.add(customer_id)
    reproject(conn, touched)
    return len(undone)
