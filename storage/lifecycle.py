"""Lifecycle changes of customers since they were last announced.

The flows announce "lead created", "trial started" and "converted" as Prefect events. What a sync batch
changed is read here, in SQL over sets: for the customers in scope (the ids a batch touched, a chunk at a
time, or after a run every customer) the projected dates are compared with the dates last announced
(``lifecycle_marks``, outer-joined). One aggregate counts the new steps per kind, one query
ordered by customer id itemises the first ``keep`` of them, and one ``INSERT … SELECT … ON CONFLICT``
records the marks, so no Python object is built per customer. A date that goes from none to a value is
a change; a date that moves (a merge found an earlier one) is not announced again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, String, and_, bindparam, case, func, literal, or_, select, true

from storage.schema import customers, lifecycle_marks
from storage.sql import chunks, dialect_insert, ids_in

# Ids per statement when ids are given. Each chunk is one bound parameter; a chunk's statements hash or
# scan the marks once, so fewer, larger chunks cost less, bounded so one statement's id list stays small.
CHUNK = 50_000

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


@dataclass(slots=True)
class LifecycleReport:
    """The lifecycle steps found: every one counted by kind, the first ``keep`` of them itemised."""

    changes: list[LifecycleChange] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, found: list[LifecycleChange], keep: int | None) -> None:
        """Count ``found`` and itemise as many of them as ``keep`` leaves room for."""
        for change in found:
            self.counts[change.kind] = self.counts.get(change.kind, 0) + 1
            if keep is None or len(self.changes) < keep:
                self.changes.append(change)


_MARKS_JOIN = customers.outerjoin(lifecycle_marks, lifecycle_marks.c.customer_id == customers.c.id)


def _reached(col: str) -> Any:
    """The customer has the step of ``col`` and its mark does not (a new step)."""
    return and_(customers.c[col].is_not(None), lifecycle_marks.c[col].is_(None))


def _any_reached() -> Any:
    return or_(*(_reached(col) for _, col in LIFECYCLE_FIELDS))


def _unannounced() -> Any:
    """Customers with a step their marks do not hold, or no mark at all (over ``_MARKS_JOIN``).

    A run killed after its writes committed but before it announced them leaves such customers behind;
    its rerun finds their rows unchanged, so "updated since the run began" alone would never announce
    them.
    """
    return or_(lifecycle_marks.c.customer_id.is_(None), _any_reached())


def _ids_scope(conn: Connection, ids: Sequence[int]) -> Any:
    """``customers.id`` among ``ids``, each chunk's statements binding one parameter.

    PostgreSQL takes an array (``storage.sql.ids_in``); on SQLite a JSON array read by ``json_each``:
    SQLAlchemy's expanding ``IN`` binds and renders every id again for each of a chunk's statements, which
    cost more than the statements themselves.
    """
    if conn.dialect.name != "sqlite":
        return ids_in(conn, customers.c.id, ids)
    each = func.json_each(bindparam(None, json.dumps(list(ids)), type_=String(), unique=True)).table_valued("value")
    return customers.c.id.in_(select(each.c.value))


def _count(conn: Connection, scope: Any) -> tuple[list[int], int]:
    """New steps in ``scope`` per kind (``LIFECYCLE_FIELDS`` order), and how many customers there lack a mark."""
    row = conn.execute(
        select(
            *(func.count(case((_reached(col), 1))) for _, col in LIFECYCLE_FIELDS),
            func.count(case((lifecycle_marks.c.customer_id.is_(None), 1))),
        )
        .select_from(_MARKS_JOIN)
        # Only these can add to a count; the common rerun that finds nothing aggregates no row.
        .where(scope, _unannounced())
    ).one()
    return [int(n) for n in row[:-1]], int(row[-1])


def _itemise(conn: Connection, scope: Any, limit: int | None) -> list[LifecycleChange]:
    """The first ``limit`` new steps (all if None) of the customers in ``scope``, in id then lifecycle order."""
    m = lifecycle_marks
    query = (
        select(
            customers.c.uuid,
            customers.c.email,
            customers.c.name,
            *(customers.c[col] for _, col in LIFECYCLE_FIELDS),
            *(m.c[col] for _, col in LIFECYCLE_FIELDS),
        )
        .select_from(_MARKS_JOIN)
        .where(scope, _any_reached())
        .order_by(customers.c.id)
    )
    if limit is not None:
        # A customer with a new step has at least one: this many customers hold the first ``limit`` steps.
        query = query.limit(limit)
    width = len(LIFECYCLE_FIELDS)
    changes: list[LifecycleChange] = []
    for uuid, email, name, *dates in conn.execute(query):
        for (kind, _), at, marked in zip(LIFECYCLE_FIELDS, dates[:width], dates[width:], strict=True):
            if at is not None and marked is None:
                if len(changes) == limit:
                    return changes
                changes.append(LifecycleChange(uuid, kind, at, email, name))
    return changes


def _mark(conn: Connection, scope: Any, now: datetime) -> None:
    """Record the marks of every customer in ``scope`` that has none or has a new step, in one statement."""
    m = lifecycle_marks
    cols = [col for _, col in LIFECYCLE_FIELDS]
    source = (
        select(
            customers.c.id,
            # Keep the first announced date: a later, earlier-dated merge is not a new step.
            *(func.coalesce(m.c[col], customers.c[col]) for col in cols),
            literal(now, m.c.updated_at.type),
        )
        .select_from(_MARKS_JOIN)
        # Never without a WHERE: SQLite would read "INSERT … SELECT … ON CONFLICT" as a join's ON.
        .where(scope, _unannounced())
    )
    stmt = dialect_insert(conn, m).from_select(["customer_id", *cols, "updated_at"], source)
    stmt = stmt.on_conflict_do_update(
        index_elements=[m.c.customer_id], set_={c: stmt.excluded[c] for c in (*cols, "updated_at")}
    )
    conn.execute(stmt)


def collect_lifecycle_changes(
    conn: Connection,
    customer_ids: Iterable[int] | None = None,
    *,
    updated_since: datetime | None = None,
    keep: int | None = None,
) -> LifecycleReport:
    """Find and record the lifecycle steps not yet announced.

    Give either the ids a batch touched (checked a chunk at a time) or a moment: every customer updated
    since then is checked, all in one pass. Call it inside the caller's transaction; the marks are written
    there, so a rolled-back announcement is found again next time.

    Args:
        conn: a connection in a transaction.
        customer_ids: internal ids of the customers to check.
        updated_since: check every customer whose ``updated_at`` is at or after this moment, and every
            customer with a step not yet announced (what a killed run wrote and never announced): in
            effect every customer with a step its marks lack, or with no marks.
        keep: itemise at most this many changes (all are counted and marked): a first sync of a
            million customers must not hold three million change objects.

    Returns:
        The steps found, in customer id then lifecycle order.
    """
    if customer_ids is None:
        if updated_since is None:
            raise ValueError("give customer_ids or updated_since")
        # Every customer, in one pass: one updated since then whose marks hold all its steps adds nothing
        # to count, itemise or mark, so the moment itself need not be compared.
        scopes = [true()]
    else:
        ordered = sorted(set(customer_ids))
        scopes = [_ids_scope(conn, chunk) for chunk in chunks(ordered, CHUNK)]
    now = datetime.now(UTC)
    totals = [0] * len(LIFECYCLE_FIELDS)
    changes: list[LifecycleChange] = []
    for scope in scopes:
        # Counted and itemised before the marks are written: afterwards nothing in scope is new.
        found, unmarked = _count(conn, scope)
        if not any(found) and not unmarked:
            continue
        totals = [t + n for t, n in zip(totals, found, strict=True)]
        room = None if keep is None else keep - len(changes)
        if any(found) and (room is None or room > 0):
            changes.extend(_itemise(conn, scope, room))
        _mark(conn, scope, now)
    return LifecycleReport(changes, {kind: n for (kind, _), n in zip(LIFECYCLE_FIELDS, totals, strict=True) if n})
