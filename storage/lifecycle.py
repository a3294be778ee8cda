"""Lifecycle changes of customers since they were last announced.

The flows announce "lead created", "trial started" and "converted" as Prefect events. What a sync batch
changed is read here, coarsely: for a set of customer ids (what a batch touched) or every customer
updated since a moment, one query per chunk of ids compares the projected dates with the dates last
announced (``lifecycle_marks``), and one batched upsert records the new ones. A date that goes from none
to a value is a change; a date that moves (a merge found an earlier one) is not announced again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, or_, select

from storage.schema import customers, lifecycle_marks
from storage.sql import dialect_insert

CHUNK = 5_000

# (event kind, projected column) in the order a customer lives them.
LIFECYCLE_FIELDS: tuple[tuple[str, str], ...] = (
    ("lead_created", "lead_created_at"),
    ("trial_started", "free_trial_started_at"),
    ("converted", "subscriber_since"),
)


@dataclass(frozen=True, slots=True)
class LifecycleChange:
    """One customer reaching a lifecycle step: ``kind`` at ``at`` (the date from the data)."""

    customer_uuid: str
    kind: str
    at: datetime
    email: str | None
    name: str | None


def _chunks(ids: Iterable[int], size: int = CHUNK) -> Iterator[list[int]]:
    chunk: list[int] = []
    for customer_id in ids:
        chunk.append(customer_id)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _insert(conn: Connection) -> Any:
    return dialect_insert(conn, lifecycle_marks)


def _changes_for(conn: Connection, where) -> list[LifecycleChange]:  # type: ignore[no-untyped-def]
    m = lifecycle_marks
    rows = conn.execute(
        select(
            customers.c.id,
            customers.c.uuid,
            customers.c.email,
            customers.c.name,
            customers.c.lead_created_at,
            customers.c.free_trial_started_at,
            customers.c.subscriber_since,
            m.c.customer_id.label("marked"),
            m.c.lead_created_at.label("m_lead_created_at"),
            m.c.free_trial_started_at.label("m_free_trial_started_at"),
            m.c.subscriber_since.label("m_subscriber_since"),
        )
        .select_from(customers.outerjoin(m, m.c.customer_id == customers.c.id))
        .where(where)
    ).mappings()
    changes: list[LifecycleChange] = []
    marks: list[dict[str, object]] = []
    now = datetime.now(UTC)
    for row in rows:
        new = [
            LifecycleChange(row["uuid"], kind, row[col], row["email"], row["name"])
            for kind, col in LIFECYCLE_FIELDS
            if row[col] is not None and row[f"m_{col}"] is None
        ]
        if new or row["marked"] is None:
            changes.extend(new)
            marks.append(
                {
                    "customer_id": row["id"],
                    # Keep the first announced date: a later, earlier-dated merge is not a new step.
                    **{col: row[f"m_{col}"] or row[col] for _, col in LIFECYCLE_FIELDS},
                    "updated_at": now,
                }
            )
    if marks:
        stmt = _insert(conn)
        stmt = stmt.on_conflict_do_update(
            index_elements=[lifecycle_marks.c.customer_id],
            set_={
                "lead_created_at": stmt.excluded.lead_created_at,
                "free_trial_started_at": stmt.excluded.free_trial_started_at,
                "subscriber_since": stmt.excluded.subscriber_since,
                "updated_at": stmt.excluded.updated_at,
            },
        )
        conn.execute(stmt, marks)
    return changes


def _unannounced():  # type: ignore[no-untyped-def]
    """Customers with a step their marks do not hold (over ``customers`` outer-joined to the marks).

    A run killed after its writes committed but before it announced them leaves such customers behind;
    its rerun finds their rows unchanged, so "updated since the run began" alone would never announce
    them.
    """
    m = lifecycle_marks
    return or_(
        m.c.customer_id.is_(None),
        *(and_(customers.c[col].is_not(None), m.c[col].is_(None)) for _, col in LIFECYCLE_FIELDS),
    )


@dataclass(slots=True)
class LifecycleReport:
    """The lifecycle steps found: every one counted by kind, the first ``keep`` of them itemised."""

    changes: list[LifecycleChange] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, found: list[LifecycleChange], keep: int | None) -> None:
        for change in found:
            self.counts[change.kind] = self.counts.get(change.kind, 0) + 1
            if keep is None or len(self.changes) < keep:
                self.changes.append(change)


def collect_lifecycle_changes(
    conn: Connection,
    customer_ids: Iterable[int] | None = None,
    *,
    updated_since: datetime | None = None,
    keep: int | None = None,
) -> LifecycleReport:
    """Find and record the lifecycle steps not yet announced, a chunk of customers at a time.

    Give either the ids a batch touched or a moment: every customer updated since then is checked.
    Call it inside the caller's transaction; the marks are written there, so a rolled-back
    announcement is found again next time.

    Args:
        conn: a connection in a transaction.
        customer_ids: internal ids of the customers to check.
        updated_since: check every customer whose ``updated_at`` is at or after this moment, and every
            customer with a step not yet announced (what a killed run wrote and never announced).
        keep: itemise at most this many changes (all are counted and marked): a first sync of a
            million customers must not hold three million change objects.

    Returns:
        The steps found, in customer then lifecycle order.
    """
    if customer_ids is None:
        if updated_since is None:
            raise ValueError("give customer_ids or updated_since")
        customer_ids = (
            conn.execute(
                select(customers.c.id)
                .select_from(customers.outerjoin(lifecycle_marks, lifecycle_marks.c.customer_id == customers.c.id))
                .where(or_(customers.c.updated_at >= updated_since, _unannounced()))
                .order_by(customers.c.id)
            )
            .scalars()
            .all()
        )
    report = LifecycleReport()
    for chunk in _chunks(customer_ids):
        report.add(_changes_for(conn, customers.c.id.in_(chunk)), keep)
    return report
