"""Per (source, stream) sync state: the cursor committed with the last batch, last success, counts."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, select

from storage.schema import source_customers, subscriptions, sync_state
from storage.sql import upsert_on_conflict


def load_cursor(conn: Connection, data_source_id: int, stream: str) -> dict[str, Any] | None:
    """The cursor committed for this stream, None before the first batch."""
    return conn.execute(
        select(sync_state.c.cursor).where(
            sync_state.c.data_source_id == data_source_id, sync_state.c.stream == stream
        )
    ).scalar_one_or_none()


def save_cursor(
    conn: Connection,
    data_source_id: int,
    stream: str,
    cursor: dict[str, Any] | None,
    counts: dict[str, Any] | None = None,
    *,
    success: bool = False,
) -> None:
    """Store the cursor a batch reached, in the caller's transaction (so it commits with the batch).

    Args:
        counts: the run's counts so far (fetched, created, ...), shown by ``sources list``.
        success: mark the stream's run as finished successfully now.
    """
    now = datetime.now(timezone.utc)
    values: dict[str, Any] = {
        "data_source_id": data_source_id,
        "stream": stream,
        "cursor": cursor,
        "updated_at": now,
    }
    update_cols = ["cursor", "updated_at"]
    if counts is not None:
        values["last_run_counts"] = counts
        update_cols.append("last_run_counts")
    if success:
        values["last_success_at"] = now
        update_cols.append("last_success_at")
    upsert_on_conflict(conn, sync_state, [values], ["data_source_id", "stream"], update_cols)


def reset_cursors(conn: Connection, data_source_id: int) -> None:
    """Forget every stream's cursor of a source (a full re-sync starts from the beginning)."""
    conn.execute(
        sync_state.update().where(sync_state.c.data_source_id == data_source_id).values(cursor=None)
    )


def source_states(conn: Connection, data_source_id: int) -> list[dict[str, Any]]:
    """Every stream's state of a source."""
    rows = conn.execute(select(sync_state).where(sync_state.c.data_source_id == data_source_id))
    return [dict(r._mapping) for r in rows]


OPEN_STATES = ("trialing", "active", "past_due")


def open_subscription_states(conn: Connection, data_source_id: int) -> dict[str, str]:
    """The subscriptions a source last reported as not ended (trialing, active, past due): external id →
    state. A source whose API cannot list changes (Braintree) re-reads these to see them end."""
    sc, sub = source_customers, subscriptions
    rows = conn.execute(
        select(sub.c.external_id, sub.c.state)
        .join(sc, sc.c.id == sub.c.source_customer_id)
        .where(sc.c.data_source_id == data_source_id, sub.c.state.in_(OPEN_STATES))
    )
    return {r.external_id: r.state for r in rows}
