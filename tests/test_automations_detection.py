"""Change triggers detected in the transaction of the change, on SQLite and PostgreSQL, exactly once.

Rules are applied as ``automations apply`` stores them; customers arrive through the real upsert (a
sync's batch), a real CSV import and manual edits; the outbox is read back from the database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from automations.apply import apply_definitions
from automations.rule_file import parse_rule_text
from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from jobs.imports import import_csv
from storage.customers import resolve_customer
from storage.edits import set_manual_edits
from storage.outbox import moment, occurrence_id
from storage.schema import automation_deliveries, automation_occurrences, customers
from storage.sources import create_source
from storage.upsert import upsert_records

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
HOOK = '{url: "http://127.0.0.1:9/hook", secret: "env:HOOK_SECRET"}'


def apply(engine, text: str, *, prune: bool = False):
    with engine.begin() as conn:
        return apply_definitions(conn, parse_rule_text(text), prune=prune)


def fired(engine, rule: str | None = None) -> list[tuple[str, str, str]]:
    """(rule, customer uuid, discriminator) of every occurrence that fired (has deliveries), sorted; one a
    merge passed on to another customer has none."""
    has_deliveries = select(automation_deliveries.c.occurrence_id).where(
        automation_deliveries.c.occurrence_id == automation_occurrences.c.id).exists()
    query = select(automation_occurrences.c.rule_name, automation_occurrences.c.customer_uuid,
                   automation_occurrences.c.discriminator).where(has_deliveries)
    if rule is not None:
        query = query.where(automation_occurrences.c.rule_name == rule)
    with engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(query))


def uuid_of(engine, ref: str) -> str:
    with engine.connect() as conn:
        cid = resolve_customer(conn, ref)
        return conn.execute(select(customers.c.uuid).where(customers.c.id == cid)).scalar_one()


def trial(ext: str, country: str, start: datetime | None, *, paid: datetime | None = None,
          name: str = "") -> SourceCustomerRecord:
    subs = None
    if start is not None:
        state = "active" if paid else "trialing"
        subs = [SubscriptionFact(f"sub_{ext}", state, trial_started_at=start, trial_ended_at=start + timedelta(days=14),
                                 first_paid_at=paid)]
    return SourceCustomerRecord(ext, name=name or f"Customer {ext}", email=f"{ext}@example.com", country=country,
                                lead_created_at=T0 - timedelta(days=2), free_trial_started_at=start,
                                subscriptions=subs)


def sync(engine, source: str, records: list[SourceCustomerRecord]):
    with engine.begin() as conn:
        from storage.sources import get_source

        ds = get_source(conn, source) or create_source(conn, source, "stripe")
        return upsert_records(conn, ds.id, records)


RULES = f"""
automations:
  - name: us-trials
    trigger: trial_started
    where: "country = US"
    actions:
      - webhook: {HOOK}
  - name: leads
    trigger: lead_created
    actions:
      - webhook: {HOOK}
      - slack: {{url: "env:SLACK_URL", text: "New lead {{{{ customer.name }}}}"}}
"""


def test_trial_started_fires_once_for_the_matching_customers_across_resyncs(db_engine):
    sync(db_engine, "stripe", [trial("before", "US", T0)])  # there before the rule: not news to it
    apply(db_engine, RULES)
    records = [trial("us1", "US", T0), trial("de1", "DE", T0), trial("us-lead", "US", None)]
    sync(db_engine, "stripe", records)
    us1 = uuid_of(db_engine, "stripe:us1")
    expected_trial = [("us-trials", us1, moment(T0))]
    assert fired(db_engine, "us-trials") == expected_trial
    assert len(fired(db_engine, "leads")) == 3  # the three new customers are leads; "before" is not new
    with db_engine.connect() as conn:
        # One delivery per action: 1 for the trial rule, 2 for each lead.
        assert conn.execute(select(func.count()).select_from(automation_deliveries)).scalar_one() == 1 + 3 * 2
    sync(db_engine, "stripe", records)  # an unchanged re-sync
    changed = [trial("us1", "US", T0, name="Renamed"), *records[1:]]
    sync(db_engine, "stripe", changed)  # a changed one: not a new trial
    apply(db_engine, RULES)  # re-applying the same rules
    assert fired(db_engine, "us-trials") == expected_trial
    assert len(fired(db_engine, "leads")) == 3
    # The occurrence id is the digest of (rule, customer, trigger, discriminator).
    with db_engine.connect() as conn:
        ids = conn.execute(select(automation_occurrences.c.id).where(automation_occurrences.c.rule_name == "us-trials"))
        assert ids.scalars().all() == [occurrence_id("us-trials", us1, "trial_started", moment(T0))]


def test_a_lead_that_starts_a_trial_later_fires_then_and_an_earlier_date_from_a_merge_source_does_not(db_engine):
    apply(db_engine, RULES)
    sync(db_engine, "stripe", [trial("us2", "US", None)])
    assert fired(db_engine, "us-trials") == []
    sync(db_engine, "stripe", [trial("us2", "US", T0)])
    us2 = uuid_of(db_engine, "stripe:us2")
    assert fired(db_engine, "us-trials") == [("us-trials", us2, moment(T0))]
    # Another source reports an earlier trial start for the same customer: the date moves, nothing fires.
    sync(db_engine, "stripe", [trial("us2", "US", T0 - timedelta(days=3))])
    assert fired(db_engine, "us-trials") == [("us-trials", us2, moment(T0))]


def test_converted_and_status_changed(db_engine):
    apply(db_engine, f"""
automations:
  - name: converted
    trigger: trial_converted
    actions: [{{webhook: {HOOK}}}]
  - name: became-active
    trigger: status_changed
    to: Active
    actions: [{{webhook: {HOOK}}}]
  - name: any-change
    trigger: status_changed
    actions: [{{webhook: {HOOK}}}]
""")
    sync(db_engine, "stripe", [trial("a", "US", T0), trial("direct", "US", None)])
    assert fired(db_engine) == []  # new customers: no conversion, no status change
    paid = T0 + timedelta(days=14)
    sync(db_engine, "stripe", [trial("a", "US", T0, paid=paid)])
    # Paid without a trial: a status change, not a trial converted.
    direct = SourceCustomerRecord("direct", name="D", email="direct@example.com", country="US",
                                  subscriptions=[SubscriptionFact("sub_d", "active", first_paid_at=paid)])
    sync(db_engine, "stripe", [direct])
    a, d = uuid_of(db_engine, "stripe:a"), uuid_of(db_engine, "stripe:direct")
    assert fired(db_engine, "converted") == [("converted", a, moment(paid))]
    assert fired(db_engine, "became-active") == sorted([
        ("became-active", a, "New_Lead>Active#1"), ("became-active", d, "New_Lead>Active#1")])
    sync(db_engine, "stripe", [trial("a", "US", T0, paid=paid), direct])
    assert len(fired(db_engine)) == 5
    # Back and forth: each transition is an occurrence of its own.
    cancelled = SubscriptionFact("sub_d", "cancelled", first_paid_at=paid, cancelled_at=paid + timedelta(days=30))
    sync(db_engine, "stripe", [SourceCustomerRecord("direct", name="D", email="direct@example.com", country="US",
                                                    subscriptions=[cancelled])])
    sync(db_engine, "stripe", [direct])
    assert [r[2] for r in fired(db_engine, "any-change") if r[1] == d] == [
        "Active>Cancelled#2", "Cancelled>Active#3", "New_Lead>Active#1"]
    assert fired(db_engine, "became-active")[-1][2] in ("Cancelled>Active#3", "New_Lead>Active#1")
    assert len(fired(db_engine, "became-active")) == 3
    # Paid before the trial started (a later trial on another plan): no trial converted either.
    sync(db_engine, "stripe", [trial("early", "US", None)])
    sync(db_engine, "stripe", [SourceCustomerRecord(
        "early", name="E", email="early@example.com", country="US", free_trial_started_at=paid,
        subscriptions=[SubscriptionFact("sub_e0", "active", first_paid_at=T0),
                       SubscriptionFact("sub_e1", "trialing", trial_started_at=paid)])])
    with db_engine.connect() as conn:
        early = conn.execute(select(customers.c.subscriber_since, customers.c.free_trial_started_at)
                             .where(customers.c.email == "early@example.com")).one()
    assert early.subscriber_since < early.free_trial_started_at
    assert fired(db_engine, "converted") == [("converted", a, moment(paid))]


def test_a_manual_edit_fires_in_its_transaction_and_a_rolled_back_one_fires_nothing(db_engine):
    apply(db_engine, f"""
automations:
  - name: working
    trigger: status_changed
    from: New_Lead
    to: Working_Lead
    where: "country = US"
    actions: [{{webhook: {HOOK}}}]
""")
    sync(db_engine, "stripe", [trial("e1", "US", None), trial("e2", "DE", None)])
    with db_engine.connect() as conn:
        e1, e2 = resolve_customer(conn, "stripe:e1"), resolve_customer(conn, "stripe:e2")
    with pytest.raises(RuntimeError), db_engine.begin() as conn:
        set_manual_edits(conn, e1, {"lead_status": "Working_Lead"})
        raise RuntimeError("the edit's transaction fails after the edit")
    assert fired(db_engine) == []
    with db_engine.begin() as conn:
        set_manual_edits(conn, e1, {"lead_status": "Working_Lead"})
        set_manual_edits(conn, e2, {"lead_status": "Working_Lead"})  # not in the US
    assert fired(db_engine) == [("working", uuid_of(db_engine, "stripe:e1"), "New_Lead>Working_Lead#1")]
    # A bulk edit fires in its batch too; back to New_Lead and again to Working_Lead is a second change.
    from storage.bulk_edits import apply_manual_edits

    with db_engine.begin() as conn:
        apply_manual_edits(conn, {e1: {"lead_status": "New_Lead"}, e2: {"lead_status": "New_Lead"}})
    with db_engine.begin() as conn:
        apply_manual_edits(conn, {e1: {"lead_status": "Working_Lead"}, e2: {"lead_status": "Working_Lead"}})
    assert [r[2] for r in fired(db_engine)] == ["New_Lead>Working_Lead#1", "New_Lead>Working_Lead#3"]


def test_a_csv_import_fires_once_however_often_it_is_imported(db_engine, tmp_path):
    apply(db_engine, f"""
automations:
  - name: csv-trials
    trigger: trial_started
    actions: [{{webhook: {HOOK}}}]
""")
    path = tmp_path / "leads.csv"
    path.write_text("id,name,email,country,lead created at,free trial started at\n"
                    "1,Ada,ada@example.com,US,2026-01-01,2026-01-03\n"
                    "2,Bob,bob@example.com,DE,2026-01-02,\n", encoding="utf-8")
    import_csv(db_engine, path, "Leads")
    import_csv(db_engine, path, "Leads")
    assert len(fired(db_engine)) == 1
    path.write_text(path.read_text().replace("2026-01-02,\n", "2026-01-02,2026-01-04\n"), encoding="utf-8")
    import_csv(db_engine, path, "Leads")
    import_csv(db_engine, path, "Leads")
    assert len(fired(db_engine)) == 2


def test_backfill_fires_once_for_who_is_already_there_and_prune_removes(db_engine):
    sync(db_engine, "stripe", [trial("old1", "US", T0), trial("old2", "DE", T0), trial("old3", "US", None)])
    text = f"""
automations:
  - name: trials-so-far
    trigger: trial_started
    where: "country = US"
    backfill: true
    actions: [{{webhook: {HOOK}}}]
"""
    result = apply(db_engine, text)
    assert result.backfilled == {"trials-so-far": 1}
    assert fired(db_engine) == [("trials-so-far", uuid_of(db_engine, "stripe:old1"), moment(T0))]
    again = apply(db_engine, text)
    assert again.outcome.unchanged == ["trials-so-far"] and again.backfilled == {}
    assert len(fired(db_engine)) == 1
    other = f"""
automations:
  - name: other
    trigger: customer_created
    actions: [{{webhook: {HOOK}}}]
"""
    pruned = apply(db_engine, other, prune=True)
    assert pruned.outcome.removed == ["trials-so-far"] and pruned.outcome.created == ["other"]
    sync(db_engine, "stripe", [trial("old4", "US", T0)])
    assert [r[0] for r in fired(db_engine)] == ["other", "trials-so-far"]


def test_an_existing_rule_applied_again_with_backfill_fires_once_for_who_is_already_there(db_engine):
    """Turning ``backfill: true`` on for a stored rule backfills it then, once: re-applying the same file
    fires nothing more, and a customer the rule already fired for is not fired for again."""
    sync(db_engine, "stripe", [trial("b1", "US", None), trial("b2", "US", T0)])
    plain = f"""
automations:
  - name: us-trials
    trigger: trial_started
    where: "country = US"
    actions: [{{webhook: {HOOK}}}]
"""
    assert apply(db_engine, plain).backfilled == {}
    assert fired(db_engine) == []
    sync(db_engine, "stripe", [trial("b1", "US", T0)])  # b1's trial starts after the rule: it fires
    assert fired(db_engine) == [("us-trials", uuid_of(db_engine, "stripe:b1"), moment(T0))]
    with_backfill = plain.replace("    actions:", "    backfill: true\n    actions:")
    result = apply(db_engine, with_backfill)
    assert result.outcome.updated == ["us-trials"] and result.backfilled == {"us-trials": 1}
    assert sorted(fired(db_engine)) == sorted([
        ("us-trials", uuid_of(db_engine, "stripe:b1"), moment(T0)),
        ("us-trials", uuid_of(db_engine, "stripe:b2"), moment(T0)),
    ])
    again = apply(db_engine, with_backfill)
    assert again.outcome.unchanged == ["us-trials"] and again.backfilled == {}
    assert len(fired(db_engine)) == 2


def test_rules_added_after_a_period_without_rules_do_not_fire_for_that_period(db_engine):
    apply(db_engine, f"""
automations:
  - name: first
    trigger: trial_started
    actions: [{{webhook: {HOOK}}}]
""")
    sync(db_engine, "stripe", [trial("p1", "US", None)])
    apply(db_engine, "automations: []", prune=True)  # no rule: nothing keeps track
    sync(db_engine, "stripe", [trial("p1", "US", T0)])  # the trial starts while no rule exists
    apply(db_engine, f"""
automations:
  - name: second
    trigger: trial_started
    actions: [{{webhook: {HOOK}}}]
""")
    sync(db_engine, "stripe", [trial("p1", "US", T0, name="touched")])
    assert fired(db_engine) == []


MERGE_RULES = f"""
automations:
  - name: trials
    trigger: trial_started
    actions: [{{webhook: {HOOK}}}]
  - name: status
    trigger: status_changed
    actions: [{{webhook: {HOOK}}}]
  - name: created
    trigger: customer_created
    actions: [{{webhook: {HOOK}}}]
"""


def test_a_merge_passes_the_occurrences_on_and_an_unmerge_fires_nothing(db_engine):
    from storage.merge import merge_customers, unmerge

    apply(db_engine, MERGE_RULES)
    # Two records of one person: a lead in the CRM, a trial in billing (its trial fired for it).
    sync(db_engine, "stripe", [trial("crm-1", "US", None)])
    sync(db_engine, "stripe", [SourceCustomerRecord("bill-1", name="Same", email="same@example.com", country="US",
                                          free_trial_started_at=T0 - timedelta(days=1),
                                          subscriptions=[SubscriptionFact("sb", "trialing",
                                                                          trial_started_at=T0 - timedelta(days=1))])])
    before = fired(db_engine)
    assert [r[0] for r in before].count("trials") == 1 and [r[0] for r in before].count("created") == 2
    with db_engine.begin() as conn:
        into, gone = resolve_customer(conn, "stripe:crm-1"), resolve_customer(conn, "stripe:bill-1")
        merge_customers(conn, gone, into)
    # The survivor now has the trial the merged-away one had: nothing fires again, not on a re-sync either.
    sync(db_engine, "stripe", [trial("crm-1", "US", None, name="touched")])
    assert fired(db_engine) == before
    with db_engine.begin() as conn:
        unmerge(conn, into, "stripe:bill-1")
    sync(db_engine, "stripe", [trial("crm-1", "US", None, name="touched again")])
    with db_engine.connect() as conn:
        back = resolve_customer(conn, "stripe:bill-1")
    with db_engine.begin() as conn:
        set_manual_edits(conn, back, {"owner": "x@example.com"})  # the customer that came back is touched
    assert fired(db_engine) == before


def detect_time(engine) -> dict[str, int]:
    """One run's detection of the time-based triggers (what ``automations run`` does first), now."""
    from storage.automation_rules import TIME_TRIGGERS, list_rules
    from storage.outbox import detect_time_triggers

    with engine.begin() as conn:
        return detect_time_triggers(conn, list_rules(conn, TIME_TRIGGERS), datetime.now(UTC))


def timed(ext: str, start: datetime | None, ends: datetime | None) -> SourceCustomerRecord:
    subs = None if start is None else [SubscriptionFact(f"sub_{ext}", "trialing", trial_started_at=start,
                                                        trial_ended_at=ends)]
    return SourceCustomerRecord(ext, name=f"Customer {ext}", email=f"{ext}@example.com", country="US",
                                lead_created_at=datetime.now(UTC) - timedelta(days=50), free_trial_started_at=start,
                                subscriptions=subs)


def test_a_merge_passes_time_trigger_occurrences_on_and_an_unmerge_fires_none_of_them(db_engine):
    """trial_ending and trial_expired are found by the runs, not by the change: a merge must hand the
    survivor what fired for the merged-away customer (whose trial and subscription it now holds), and an
    unmerge must not make the customers it separates fire for moments reached while they were one."""
    from storage.merge import merge_customers, unmerge

    now = datetime.now(UTC)
    apply(db_engine, f"""
automations:
  - name: ending
    trigger: trial_ending
    days_before: 3
    backfill: true
    actions: [{{webhook: {HOOK}}}]
  - name: expired
    trigger: trial_expired
    days_after: 30
    backfill: true
    actions: [{{webhook: {HOOK}}}]
""")
    sync(db_engine, "stripe", [timed("crm-2", None, None),
                               timed("bill-2", now - timedelta(days=40), now + timedelta(days=2))])
    assert detect_time(db_engine) == {"ending": 1, "expired": 1}  # both for bill-2
    with db_engine.begin() as conn:
        into, gone = resolve_customer(conn, "stripe:crm-2"), resolve_customer(conn, "stripe:bill-2")
        merge_customers(conn, gone, into)
    # The survivor holds bill-2's trial and subscription now: what fired for them does not fire again.
    assert detect_time(db_engine) == {"ending": 0, "expired": 0}
    # The survivor's own record brings a trial of its own while merged: its subscription's end is news,
    # its later start is not (the merged customer's trial began with bill-2's).
    sync(db_engine, "stripe", [timed("crm-2", now - timedelta(days=35), now + timedelta(days=2.5))])
    assert detect_time(db_engine) == {"ending": 1, "expired": 0}
    before = fired(db_engine)
    with db_engine.begin() as conn:
        unmerge(conn, into, "stripe:bill-2")
    # Apart again, crm-2's trial start is its own (35 days ago, expired): reached before the unmerge.
    assert detect_time(db_engine) == {"ending": 0, "expired": 0}
    assert fired(db_engine) == before
    from storage.outbox import activity_by_rule

    with db_engine.connect() as conn:  # what was passed on is not counted as detected again
        counts = activity_by_rule(conn, now - timedelta(hours=1))
    assert (counts["ending"]["detected"], counts["expired"]["detected"]) == (2, 1)
