"""A batch of merges leaves exactly what the same merges leave one at a time, on SQLite and PostgreSQL.

``auto_merge`` merges thousands of pairs per transaction with set-based statements (one ``UPDATE … FROM
unnest`` per table, ``COPY`` of the merge log on PostgreSQL, one re-projection per batch); a single
``merge_customers`` takes the small-statement path. Both run here on one data set with edits, contacts,
tags, custom attributes, subscriptions, automation marks, three-customer groups and a group found by
external id, each in a transaction that is rolled back, and every table a merge touches is compared.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, select

from automations.apply import apply_definitions
from automations.rule_file import parse_rule_text
from funnelsync.records import ContactRecord, SourceCustomerRecord, SubscriptionFact
from storage.customers import resolve_customer
from storage.duplicates import find_duplicate_groups
from storage.edits import set_manual_edits
from storage.merge import merge_batch, merge_customers, unmerge
from storage.schema import (
    automation_deliveries,
    automation_marks,
    automation_occurrences,
    contacts,
    customer_attributes,
    customer_tags,
    customers,
    manual_edits,
    merge_events,
    source_customers,
)
from storage.sources import create_source
from storage.upsert import upsert_records

N = 70  # groups: past the 50 rows from which the writers switch to their set-based statements
RULES = """
automations:
  - name: trials
    trigger: trial_started
    actions: [{webhook: {url: "http://127.0.0.1:9/hook", secret: "env:HOOK_SECRET"}}]
  - name: converted
    trigger: trial_converted
    actions: [{webhook: {url: "http://127.0.0.1:9/hook", secret: "env:HOOK_SECRET"}}]
"""


def t(month: int, day: int) -> datetime:
    return datetime(2025, month, day, tzinfo=UTC)


def build(engine: Engine) -> list[tuple[int, int, str]]:
    """The data set; returns the pairs detection finds, as ``auto_merge`` would merge them."""
    with engine.begin() as conn:
        apply_definitions(conn, parse_rule_text(RULES))
        crm = create_source(conn, "crm", "custom").id
        billing = create_source(conn, "billing", "stripe").id
        support = create_source(conn, "support", "custom").id
        upsert_records(conn, crm, [
            SourceCustomerRecord(
                f"L{i}", name=f"Lead {i}", email=f"u{i}@x.io", country=("DE", "US", None)[i % 3],
                city="Berlin" if i % 4 else None, lead_created_at=t(1, 1 + i % 28),
                free_trial_started_at=t(1, 10) if i % 5 == 0 else None,
                tags=["webinar"] if i % 2 else [], custom={"plan": "free", "n": i} if i % 3 else {},
                contacts=[ContactRecord(external_id=f"p{i}", first_name="P", email=f"u{i}@x.io")] if i % 5 == 0
                else None,
            )
            for i in range(N)
        ], now=t(1, 1))
        upsert_records(conn, billing, [
            SourceCustomerRecord(
                f"B{i}", email=f"U{i}@X.io", company=f"Company {i}", country="FR" if i % 2 else None,
                lead_created_at=t(1, 20) if i % 4 == 0 else None, tags=["paying"], custom={"plan": "pro"},
                subscriptions=[SubscriptionFact(f"sub{i}", "active" if i % 3 else "trialing",
                                                trial_started_at=t(1, 15),
                                                first_paid_at=t(2, 1) + timedelta(days=i % 9) if i % 3 else None)],
            )
            for i in range(N)
        ], now=t(2, 1))
        # A third record for some people (three-customer groups), and records found only by external id.
        upsert_records(conn, support, [
            *(SourceCustomerRecord(f"S{i}", email=f"u{i}@x.io", zip=f"{10000 + i}", tags=["support"],
                                   lead_created_at=t(1, 2))
              for i in range(0, N, 7)),
            *(SourceCustomerRecord(f"L{i}", email=f"other{i}@y.io", state="BE", custom={"plan": "support"})
              for i in range(3, N, 11)),
        ], now=t(3, 1))
        for i in range(N):
            lead = resolve_customer(conn, f"crm:L{i}")
            paying = resolve_customer(conn, f"billing:B{i}")
            assert lead and paying
            if i % 6 == 0:
                set_manual_edits(conn, lead, {"zip": "10115", "lead_created_at": t(1, 3), "tag.vip": True}, "ann")
            if i % 9 == 0:
                set_manual_edits(conn, paying, {"owner": "ann@x.io", "free_trial_started_at": t(1, 12)}, "bob")
            if i % 10 == 0:
                set_manual_edits(conn, lead, {"city": "Paris", "custom.tier": "gold"}, "ann")
                set_manual_edits(conn, paying, {"city": "Lyon"}, "bob")
    with engine.connect() as conn:
        groups = find_duplicate_groups(conn)
    assert any(len(g.others) > 1 for g in groups) and any("external_id" in g.rules for g in groups)
    return [(m.id, g.survivor.id, g.rule) for g in groups for m in g.others]


def _rows(conn: Connection, table: Any, drop: tuple[str, ...] = ()) -> list[tuple[Any, ...]]:
    columns = [c for c in table.columns if c.name not in drop]
    return sorted((tuple(r) for r in conn.execute(select(*columns))), key=repr)


def _snapshot(snapshot: dict[str, Any]) -> dict[str, Any]:
    # The survivor's edits a merge rewrote carry the time (and row id) of the merge that wrote them.
    into_edits = {
        field: {**change, "before": None if change["before"] is None else
                {k: v for k, v in change["before"].items() if k not in ("id", "created_at")}}
        for field, change in snapshot.get("into_edits", {}).items()
    }
    return {**snapshot, "into_edits": into_edits}


def state(conn: Connection) -> dict[str, Any]:
    """Every row merging writes, without what only says when it ran (times of now, serial ids)."""
    sc = source_customers
    link_order = [
        (row.customer_id, row.id)
        for row in conn.execute(select(sc.c.customer_id, sc.c.id).order_by(sc.c.customer_id, sc.c.linked_at, sc.c.id))
    ]
    edits = [
        (*row[:-1], None if row.actor.startswith("merge:") else row.created_at)
        for row in conn.execute(select(manual_edits.c.customer_id, manual_edits.c.field, manual_edits.c.value,
                                       manual_edits.c.actor, manual_edits.c.created_at))
    ]
    me = merge_events
    events = [
        (row.kind, row.from_customer_uuid, row.into_customer_uuid, row.rule, row.actor, row.undone_at,
         _snapshot(row.snapshot))
        for row in conn.execute(select(me).order_by(me.c.id))
    ]
    o = automation_occurrences
    return {
        "customers": _rows(conn, customers, drop=("updated_at",)),
        "source_customers": _rows(conn, sc, drop=("linked_at",)),
        "link_order": link_order,
        "contacts": _rows(conn, contacts),
        "manual_edits": sorted(edits, key=repr),
        "merge_events": events,
        "customer_tags": _rows(conn, customer_tags),
        "customer_attributes": _rows(conn, customer_attributes),
        "automation_marks": _rows(conn, automation_marks),
        "occurrences": _rows(conn, o, drop=("detected_at",)),
        "deliveries": _rows(conn, automation_deliveries, drop=("id", "next_attempt_at", "updated_at")),
        "metric_counts": [tuple(r) for r in conn.exec_driver_sql(
            "SELECT family, at, country, sum(n), sum(k), sum(cycle_s), sum(cycle_us) FROM "
            "(SELECT * FROM metric_counts UNION ALL SELECT * FROM metric_count_deltas) AS c "
            "GROUP BY family, at, country HAVING sum(n) <> 0 OR sum(k) <> 0 ORDER BY family, at, country"
        )],
    }


def test_a_batch_of_merges_is_the_same_merges_one_at_a_time(db_engine: Engine) -> None:
    pairs = build(db_engine)
    assert len(pairs) >= 50
    with db_engine.connect() as conn:
        with conn.begin() as tx:
            one_by_one = [merge_customers(conn, f, i, rule, actor="auto") for f, i, rule in pairs]
            expected = state(conn)
            tx.rollback()
        with conn.begin() as tx:
            batched = merge_batch(conn, pairs, actor="auto")
            got = state(conn)
            tx.rollback()
    assert [(e.from_customer_uuid, e.into_customer_uuid, e.rule) for e in batched] == [
        (e.from_customer_uuid, e.into_customer_uuid, e.rule) for e in one_by_one
    ]
    assert len(got["merge_events"]) == len(pairs)
    for table in expected:
        assert got[table] == expected[table], table


def test_a_batch_merge_is_undone_by_unmerge_as_a_single_one_is(db_engine: Engine) -> None:
    pairs = build(db_engine)
    with db_engine.connect() as conn:
        before = state(conn)
    with db_engine.begin() as conn:
        merge_batch(conn, pairs, actor="auto")
    # Undo every merge, the latest first (three-customer groups unmerge step by step).
    with db_engine.begin() as conn:
        me = merge_events
        for row in conn.execute(select(me).order_by(me.c.id.desc())).all():
            into = conn.execute(select(customers.c.id).where(customers.c.uuid == row.into_customer_uuid)).scalar_one()
            record = row.snapshot["source_customers"][0]["id"]
            unmerge(conn, into, record)
    with db_engine.connect() as conn:
        after = state(conn)
    for table in ("customers", "source_customers", "contacts", "customer_tags", "customer_attributes",
                  "metric_counts"):
        assert after[table] == before[table], table
    assert sorted(after["manual_edits"], key=repr) == sorted(before["manual_edits"], key=repr)
