"""The set-based ``collect_lifecycle_changes`` finds and records what the row-by-row one did.

``reference_collect`` is the implementation it replaced, kept here as the reference: every customer in
scope read as a row, a ``LifecycleChange`` built for each of its new steps, the marks upserted as dicts.
Its one change is an ``ORDER BY`` on the chunk's query: it had none, so its order within a chunk was
whatever the database returned (on PostgreSQL an updated row moves), while its docstring promised customer
order, which the new one keeps by id.

Seeded random states (customers with dates set or not, marks missing, partial, or holding a later date than
the customer's as after a merge found an earlier one, customers updated before or after the moment) are
run through both, each in a transaction rolled back afterwards, on SQLite and PostgreSQL: same counts,
same itemised changes in the same order, same ``lifecycle_marks`` rows after.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, and_, delete, insert, or_, select

import storage.lifecycle as lifecycle
from storage.lifecycle import LIFECYCLE_FIELDS, LifecycleChange, LifecycleReport, collect_lifecycle_changes
from storage.schema import customers, lifecycle_marks
from storage.sql import dialect_insert

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SINCE = T0 + timedelta(days=30)
MARKED_AT = T0 - timedelta(days=400)  # every mark the state starts with was written then
CHUNK = 7  # both implementations, small: the states span several chunks
COLS = [col for _, col in LIFECYCLE_FIELDS]


# --- the reference: the row-by-row implementation, as it was ---------------------------------------

def _reference_chunks(ids: Iterable[int], size: int) -> Iterator[list[int]]:
    chunk: list[int] = []
    for customer_id in ids:
        chunk.append(customer_id)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _reference_changes_for(conn: Connection, where: Any) -> list[LifecycleChange]:
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
        .order_by(customers.c.id)  # the one change (see the module docstring)
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
                    **{col: row[f"m_{col}"] or row[col] for _, col in LIFECYCLE_FIELDS},
                    "updated_at": now,
                }
            )
    if marks:
        stmt = dialect_insert(conn, lifecycle_marks)
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


def _reference_unannounced() -> Any:
    m = lifecycle_marks
    return or_(
        m.c.customer_id.is_(None),
        *(and_(customers.c[col].is_not(None), m.c[col].is_(None)) for _, col in LIFECYCLE_FIELDS),
    )


def reference_collect(
    conn: Connection,
    customer_ids: Iterable[int] | None = None,
    *,
    updated_since: datetime | None = None,
    keep: int | None = None,
) -> LifecycleReport:
    if customer_ids is None:
        assert updated_since is not None
        customer_ids = (
            conn.execute(
                select(customers.c.id)
                .select_from(customers.outerjoin(lifecycle_marks, lifecycle_marks.c.customer_id == customers.c.id))
                .where(or_(customers.c.updated_at >= updated_since, _reference_unannounced()))
                .order_by(customers.c.id)
            )
            .scalars()
            .all()
        )
    report = LifecycleReport()
    for chunk in _reference_chunks(customer_ids, CHUNK):
        report.add(_reference_changes_for(conn, customers.c.id.in_(chunk)), keep)
    return report


# --- random states ----------------------------------------------------------------------------------

def _date(rnd: random.Random) -> datetime | None:
    if rnd.random() < 0.35:
        return None
    # Microseconds too: SQLite stores integer epoch microseconds, compared and copied exactly.
    return T0 + timedelta(days=rnd.randint(0, 60), microseconds=rnd.randint(0, 999_999))


def _seed_state(conn: Connection, rnd: random.Random) -> list[int]:
    """Write a random set of customers and marks; return the customer ids."""
    conn.execute(delete(lifecycle_marks))
    conn.execute(delete(customers))
    n = rnd.randint(0, 40)
    ids = rnd.sample(range(1, 200), n)
    # Some states have no dates at all: nothing to announce, yet customers without marks get theirs.
    blank = rnd.random() < 0.15
    rows: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    for i in ids:
        dates = {col: None if blank else _date(rnd) for col in COLS}
        rows.append({
            "id": i, "uuid": f"cus_{i:04d}", "created_at": T0,
            # Some updated since the moment, some before it (only their unannounced steps count then).
            "updated_at": SINCE + timedelta(seconds=rnd.choice((-5, 0, 5))),
            "email": None if rnd.random() < 0.2 else f"c{i}@example.com",
            "name": None if rnd.random() < 0.2 else f"Customer {i}",
            "status": "New_Lead", "tags": [], "custom": {}, "has_subscriptions": False,
            **dates,
        })
        shape = rnd.random()
        if shape < 0.3:
            continue  # never marked
        mark: dict[str, Any] = {"customer_id": i, "updated_at": MARKED_AT}
        for col in COLS:
            pick, date = rnd.random(), dates[col]
            if shape < 0.5:
                mark[col] = date  # fully announced
            elif pick < 0.4:
                mark[col] = None  # a step the mark lacks
            elif date is None:
                mark[col] = _date(rnd)  # announced, then the date went
            elif pick < 0.7:
                mark[col] = date
            else:
                # Announced at a later date: a merge since found an earlier one.
                mark[col] = date + timedelta(days=rnd.randint(1, 9), microseconds=rnd.randint(1, 999))
        marks.append(mark)
    if rows:
        conn.execute(insert(customers), rows)
    if marks:
        conn.execute(insert(lifecycle_marks), marks)
    return ids


def _marks_after(conn: Connection) -> list[tuple[Any, ...]]:
    """Every mark, with whether this run wrote it (its ``updated_at`` moved) instead of its exact time."""
    m = lifecycle_marks
    return [
        (*row[:-1], row[-1] != MARKED_AT)
        for row in conn.execute(select(m.c.customer_id, *(m.c[col] for col in COLS), m.c.updated_at)
                                .order_by(m.c.customer_id))
    ]


def _run(engine: Engine, seed: int, collect: Any, args: dict[str, Any]) -> tuple[Any, ...]:
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            _seed_state(conn, random.Random(seed))
            report = collect(conn, **args)
            return dict(report.counts), list(report.changes), _marks_after(conn)
        finally:
            trans.rollback()


@pytest.mark.parametrize("keep", [None, 0, 1, 5])
def test_set_based_collect_matches_the_row_by_row_reference(
    db_engine: Engine, keep: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lifecycle, "CHUNK", CHUNK)
    compared = 0
    for seed in range(30):
        rnd = random.Random(seed * 7919)
        with db_engine.connect() as conn:
            trans = conn.begin()
            ids = _seed_state(conn, random.Random(seed))
            trans.rollback()
        picked = sorted(rnd.sample(ids, rnd.randint(0, len(ids))))
        # The new one sorts and deduplicates what it is given; the reference's order is its input's.
        shuffled = picked + rnd.sample(picked, len(picked) // 3)
        rnd.shuffle(shuffled)
        for reference_args, args in (
            ({"updated_since": SINCE, "keep": keep}, {"updated_since": SINCE, "keep": keep}),
            ({"customer_ids": picked, "keep": keep}, {"customer_ids": shuffled, "keep": keep}),
        ):
            expected = _run(db_engine, seed, reference_collect, reference_args)
            got = _run(db_engine, seed, collect_lifecycle_changes, args)
            assert got[0] == expected[0], f"seed {seed} {args}: counts"
            assert got[1] == expected[1], f"seed {seed} {args}: itemised changes"
            assert got[2] == expected[2], f"seed {seed} {args}: lifecycle_marks after"
            compared += bool(expected[0])
    assert compared > 15  # most states had something to find


def test_only_the_kept_changes_are_built(db_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first import of many customers builds ``keep`` change objects, not one per step of every customer."""
    built: list[LifecycleChange] = []

    def counting(*args: Any) -> LifecycleChange:
        built.append(LifecycleChange(*args))
        return built[-1]

    monkeypatch.setattr(lifecycle, "LifecycleChange", counting)
    with db_engine.begin() as conn:
        conn.execute(insert(customers), [
            {"id": i, "uuid": f"cus_{i}", "created_at": T0, "updated_at": SINCE, "status": "New_Lead", "tags": [],
             "custom": {}, "has_subscriptions": False, **{col: T0 for col in COLS}}
            for i in range(1, 61)
        ])
        report = collect_lifecycle_changes(conn, updated_since=SINCE, keep=5)
    assert report.counts == {kind: 60 for kind, _ in LIFECYCLE_FIELDS}
    assert [(c.customer_uuid, c.kind) for c in report.changes] == [
        ("cus_1", "lead_created"), ("cus_1", "trial_started"), ("cus_1", "converted"),
        ("cus_2", "lead_created"), ("cus_2", "trial_started"),
    ]
    assert len(built) == 5
