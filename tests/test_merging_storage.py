"""Merging on real SQLite and PostgreSQL: survivorship, detection, unmerge, re-sync, atomicity."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select

import storage.merge as merge_mod
from funnelsync.records import ContactRecord, SourceCustomerRecord, SubscriptionFact
from storage.customers import customer_view, resolve_customer
from storage.duplicates import find_duplicate_groups
from storage.edits import manual_edits_of, set_manual_edits
from storage.merge import (
    CustomerNotFound,
    MergeError,
    NothingToUnmerge,
    auto_merge,
    list_merge_events,
    merge_customers,
    unmerge,
)
from storage.schema import contacts, customers, manual_edits, merge_events, source_customers
from storage.sources import create_source
from storage.upsert import upsert_records


def t(month: int, day: int, hour: int = 0) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=UTC)


def lead_record(**overrides: Any) -> SourceCustomerRecord:
    fields: dict[str, Any] = {
        "external_id": "L-1", "name": "Jane Lead", "email": "jane@acme.io", "company": None, "country": "DE",
        "city": "Berlin",
        "website_url": "https://acme.io", "owner": "sam@us.io", "lead_status": "Working_Lead",
        "lead_created_at": t(1, 1), "free_trial_started_at": t(1, 5), "tags": ["webinar"],
        "custom": {"plan": "free", "channel": "ads"},
        "contacts": [ContactRecord(external_id="p1", first_name="Jane", email="jane@acme.io")],
    }
    fields.update(overrides)
    return SourceCustomerRecord(**fields)


def billing_record(**overrides: Any) -> SourceCustomerRecord:
    fields: dict[str, Any] = {
        "external_id": "cus_B1", "name": "Jane Doe", "email": "Jane@ACME.io", "company": "Acme GmbH",
        "lead_created_at": t(1, 10), "free_trial_started_at": t(1, 3), "tags": ["paying"], "custom": {"plan": "pro"},
        "subscriptions": [
            SubscriptionFact(external_id="sub_1", state="active", trial_started_at=t(1, 3), first_paid_at=t(2, 1))
        ],
    }
    fields.update(overrides)
    return SourceCustomerRecord(**fields)


def setup_pair(conn: Connection) -> tuple[int, int, int, int]:
    """A lead in a custom source (older) and the same person as a subscriber in billing (newer)."""
    crm = create_source(conn, "crm", "custom").id
    billing = create_source(conn, "billing", "stripe").id
    upsert_records(conn, crm, [lead_record()], now=t(1, 1))
    upsert_records(conn, billing, [billing_record()], now=t(3, 1))
    lead_id = resolve_customer(conn, "crm:L-1")
    sub_id = resolve_customer(conn, "billing:cus_B1")
    assert lead_id and sub_id and lead_id != sub_id
    return crm, billing, lead_id, sub_id


def dump(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row that merging touches, for exact before/after comparisons."""
    out = {}
    for table in (customers, source_customers, contacts, manual_edits, merge_events):
        out[table.name] = [tuple(r) for r in conn.execute(select(table).order_by(table.c.id))]
    return out


def test_survivorship_field_by_field(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        _, _, lead_id, sub_id = setup_pair(conn)
        lead_uuid = customer_view(conn, [lead_id])[0]["uuid"]
        sub_uuid = customer_view(conn, [sub_id])[0]["uuid"]
    result = auto_merge(db_engine)
    assert result.merged_customers == 1
    assert [(g.survivor.id, [m.id for m in g.others], g.rule) for g in result.groups] == [
        (sub_id, [lead_id], "email")
    ]
    with db_engine.connect() as conn:
        (view,) = customer_view(conn, [sub_id])
        assert customer_view(conn, [lead_id]) == []
        assert resolve_customer(conn, lead_uuid) is None
        assert resolve_customer(conn, "crm:L-1") == sub_id
        contact_owner = conn.execute(select(contacts.c.customer_id)).scalars().all()
    assert view["uuid"] == sub_uuid
    assert view["name"] == "Jane Doe"  # survivor's value
    assert view["email"] == "Jane@ACME.io"
    assert view["company"] == "Acme GmbH"
    assert view["country"] == "DE"  # the survivor has none: taken from the other
    assert view["city"] == "Berlin"
    assert view["website_url"] == "https://acme.io"
    assert view["owner"] == "sam@us.io"
    assert view["lead_status"] == "Working_Lead"
    assert view["lead_created_at"] == t(1, 1).isoformat()  # earliest of the two
    assert view["free_trial_started_at"] == t(1, 3).isoformat()  # earliest of the two
    assert view["subscriber_since"] == t(2, 1).isoformat()
    assert view["status"] == "Active"
    assert sorted(view["tags"]) == ["paying", "webinar"]
    assert view["custom"] == {"plan": "pro", "channel": "ads"}  # survivor wins the conflict
    assert view["external_ids"] == ["cus_B1", "L-1"]
    assert contact_owner == [sub_id]


def test_oldest_survives_without_subscriptions(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        a = create_source(conn, "a", "custom").id
        b = create_source(conn, "b", "csv").id
        upsert_records(conn, b, [SourceCustomerRecord(external_id="x", email="Bob@x.io", name="New")], now=t(5, 1))
        upsert_records(conn, a, [SourceCustomerRecord(external_id="y", email="bob@x.io", name="Old")], now=t(4, 1))
        old_id = resolve_customer(conn, "a:y")
        groups = find_duplicate_groups(conn)
    assert [g.survivor.id for g in groups] == [old_id]
    with db_engine.begin() as conn:
        for g in groups:
            for other in g.others:
                merge_customers(conn, other.id, g.survivor.id, rule=g.rule)
        assert conn.execute(select(customers.c.name)).scalars().all() == ["Old"]


def test_manual_edits_survive_the_merge(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        _, _, lead_id, sub_id = setup_pair(conn)
        set_manual_edits(conn, lead_id, {"zip": "10115", "company": "Lead Co", "lead_created_at": t(1, 2),
                                         "custom.plan": "trial", "custom.region": "EU", "tag.hot": True}, "ann")
        set_manual_edits(conn, sub_id, {"owner": "max@us.io", "free_trial_started_at": t(1, 20)}, "max")
        merge_customers(conn, lead_id, sub_id)
        (view,) = customer_view(conn, [sub_id])
        edits = manual_edits_of(conn, sub_id)
    assert view["zip"] == "10115"  # the survivor had none: the other's edit fills the gap
    assert view["company"] == "Acme GmbH"  # the survivor's value wins over the other's edit
    assert view["owner"] == "max@us.io"  # the survivor's edit wins
    assert view["custom"] == {"plan": "pro", "channel": "ads", "region": "EU"}
    assert "hot" in view["tags"]
    # Earliest dates of what each showed: the lead's edit (Jan 2) replaced its source's Jan 1, the
    # survivor showed Jan 10, so the merged customer shows Jan 2 (not the overridden Jan 1).
    assert view["lead_created_at"] == t(1, 2).isoformat()
    # The survivor's trial edit (Jan 20) is later than the lead's trial (Jan 5): the earliest wins.
    assert view["free_trial_started_at"] == t(1, 5).isoformat()
    assert set(edits) == {"owner", "free_trial_started_at", "lead_created_at", "zip", "custom.region", "tag.hot"}


def test_three_way_group_merges_into_one_survivor(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        a = create_source(conn, "a", "custom").id
        b = create_source(conn, "b", "stripe").id
        c = create_source(conn, "c", "hubspot").id
        upsert_records(conn, a, [SourceCustomerRecord(external_id="1", email="kim@k.io", lead_created_at=t(3, 1))],
                       now=t(1, 1))
        upsert_records(conn, b, [SourceCustomerRecord(
            external_id="s1", email="KIM@k.io", subscriptions=[SubscriptionFact("sub", "active", first_paid_at=t(4, 1))]
        )], now=t(2, 1))
        # Same external id as in source b but another email: joined to the group through another rule.
        upsert_records(conn, c, [SourceCustomerRecord(external_id="s1", email="kim@other.io", name="Kim",
                                                      lead_created_at=t(2, 1))], now=t(1, 15))
        survivor = resolve_customer(conn, "b:s1")
    result = auto_merge(db_engine, ["email", "external_id"])
    assert len(result.groups) == 1
    assert result.groups[0].survivor.id == survivor
    assert result.groups[0].rules == ["email", "external_id"]
    assert result.merged_customers == 2
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar() == 1
        (view,) = customer_view(conn, [survivor])
        assert len(list_merge_events(conn)) == 2
    assert view["name"] == "Kim"
    assert view["lead_created_at"] == t(2, 1).isoformat()
    assert sorted(view["data_sources"]) == ["a", "b", "c"]
    # A second run finds nothing: merged customers do not come back as duplicates.
    assert auto_merge(db_engine).groups == []


def test_domain_rule_is_off_by_default_and_ignores_free_mail(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        a = create_source(conn, "a", "custom").id
        upsert_records(conn, a, [
            SourceCustomerRecord(external_id="1", email="a@acme.io", website_url="https://www.acme.io"),
            SourceCustomerRecord(external_id="2", email="b@acme.io", website_url="acme.io/about"),
            SourceCustomerRecord(external_id="3", email="x@gmail.com", website_url="https://gmail.com"),
            SourceCustomerRecord(external_id="4", email="y@gmail.com", website_url="gmail.com"),
        ], now=t(1, 1))
        assert find_duplicate_groups(conn) == []
        groups = find_duplicate_groups(conn, ["domain"])
    assert [(len(g.members), g.rule, g.keys) for g in groups] == [(2, "domain", {"domain": ["acme.io"]})]


def test_email_rule_folds_gmail_aliases_only_where_they_are_aliases(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        a = create_source(conn, "a", "custom").id
        upsert_records(conn, a, [
            SourceCustomerRecord(external_id="1", email="j.doe+trial@gmail.com"),
            SourceCustomerRecord(external_id="2", email="JDoe@googlemail.com"),
            SourceCustomerRecord(external_id="3", email="j.doe@acme.io"),
            SourceCustomerRecord(external_id="4", email="jdoe@acme.io"),
        ], now=t(1, 1))
        groups = find_duplicate_groups(conn, ["email"])
    assert [g.keys for g in groups] == [{"email": ["jdoe@gmail.com"]}]


def test_dry_run_writes_nothing(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        setup_pair(conn)
        before = dump(conn)
    result = auto_merge(db_engine, ["email", "external_id", "domain"], dry_run=True)
    assert len(result.groups) == 1 and result.merged_customers == 0
    with db_engine.connect() as conn:
        assert dump(conn) == before


def test_unmerge_restores_exactly(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        _, _, lead_id, sub_id = setup_pair(conn)
        set_manual_edits(conn, lead_id, {"zip": "10115", "free_trial_started_at": t(1, 2), "tag.hot": True}, "ann")
        set_manual_edits(conn, sub_id, {"owner": "max@us.io", "lead_created_at": t(1, 9)}, "max")
    with db_engine.connect() as conn:
        views_before = customer_view(conn, [lead_id, sub_id])
        edits_before = {i: manual_edits_of(conn, i) for i in (lead_id, sub_id)}
        contacts_before = conn.execute(select(contacts.c.id, contacts.c.customer_id)).all()
        links_before = conn.execute(
            select(source_customers.c.id, source_customers.c.customer_id, source_customers.c.linked_at)
            .order_by(source_customers.c.id)
        ).all()
    with db_engine.begin() as conn:
        merge_customers(conn, lead_id, sub_id, actor="tester")
        assert customer_view(conn, [lead_id]) == []
        assert manual_edits_of(conn, sub_id)["lead_created_at"] == t(1, 1).isoformat()
    with db_engine.begin() as conn:
        event = unmerge(conn, sub_id, "crm:L-1", actor="tester")
    assert event.kind == "unmerge"
    with db_engine.connect() as conn:
        assert customer_view(conn, [lead_id, sub_id]) == views_before
        assert {i: manual_edits_of(conn, i) for i in (lead_id, sub_id)} == edits_before
        assert conn.execute(select(contacts.c.id, contacts.c.customer_id)).all() == contacts_before
        assert conn.execute(
            select(source_customers.c.id, source_customers.c.customer_id, source_customers.c.linked_at)
            .order_by(source_customers.c.id)
        ).all() == links_before
        log = list_merge_events(conn, views_before[1]["uuid"])
    assert [e.kind for e in log] == ["unmerge", "merge"]
    assert log[1].undone_at is not None and log[0].from_customer_uuid == views_before[0]["uuid"]
    # Auto-merge respects the user's decision and leaves the pair apart; a manual merge still works.
    assert auto_merge(db_engine).groups == []
    with db_engine.begin() as conn:
        merge_customers(conn, lead_id, sub_id)
        assert customer_view(conn, [lead_id]) == []


def test_unmerge_takes_along_contacts_synced_after_the_merge(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        crm, _, lead_id, sub_id = setup_pair(conn)
        merge_customers(conn, lead_id, sub_id)
        upsert_records(conn, crm, [lead_record(contacts=[
            ContactRecord(external_id="p1", first_name="Jane", email="jane@acme.io"),
            ContactRecord(external_id="p2", first_name="Joe", email="joe@acme.io"),
        ])])
        assert conn.execute(select(contacts.c.customer_id)).scalars().all() == [sub_id, sub_id]
        unmerge(conn, sub_id, "crm:L-1")
        assert conn.execute(select(contacts.c.customer_id)).scalars().all() == [lead_id, lead_id]


def test_unmerge_refuses_the_customers_own_record_and_strangers(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        _, _, _lead_id, sub_id = setup_pair(conn)
        with pytest.raises(NothingToUnmerge, match="own record"):
            unmerge(conn, sub_id, "billing:cus_B1")
        with pytest.raises(NothingToUnmerge, match="belongs to"):
            unmerge(conn, sub_id, "crm:L-1")
        with pytest.raises(CustomerNotFound):
            unmerge(conn, sub_id, "crm:nope")


def test_chained_merges_unmerge_step_by_step(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        src = create_source(conn, "s", "custom").id
        upsert_records(conn, src, [SourceCustomerRecord(external_id=x, name=x) for x in "ABC"], now=t(1, 1))
        a, b, c = (resolve_customer(conn, f"s:{x}") for x in "ABC")
        merge_customers(conn, a, b)
        merge_customers(conn, b, c)
        # Link order: C's own record, then B's records in B's own order (B, then A merged into B).
        assert customer_view(conn, [c])[0]["external_ids"] == ["C", "B", "A"]
        assert customer_view(conn, [c])[0]["name"] == "C"
        unmerge(conn, c, "s:A")  # the latest merge that moved A's record: B (holding A) comes back
        assert sorted(customer_view(conn, [b])[0]["external_ids"]) == ["A", "B"]
        unmerge(conn, b, "s:A")
        assert [v["external_ids"] for v in customer_view(conn, [a, b, c])] == [["A"], ["B"], ["C"]]


def test_resync_after_merge_keeps_the_merge(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        crm, billing, _lead_id, sub_id = setup_pair(conn)
    auto_merge(db_engine)
    with db_engine.begin() as conn:
        # Both sources send their records again, one of them changed.
        upsert_records(conn, crm, [lead_record(city="Hamburg")], now=t(6, 1))
        upsert_records(conn, billing, [billing_record()], now=t(6, 1))
        # A later import matching the merged record by email links to it with link_new_by_email.
        upsert_records(conn, crm, [lead_record(external_id="L-2", email="jane@ACME.io", city="Munich")],
                       link_new_by_email=True)
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar() == 1
        assert resolve_customer(conn, "crm:L-1") == sub_id
        (view,) = customer_view(conn, [sub_id])
    assert view["city"] == "Hamburg"
    assert sorted(view["external_ids"]) == ["L-1", "L-2", "cus_B1"]
    assert auto_merge(db_engine).groups == []


def test_failure_mid_merge_leaves_both_customers_as_they_were(
    db_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with db_engine.begin() as conn:
        _, _, lead_id, sub_id = setup_pair(conn)
        set_manual_edits(conn, lead_id, {"zip": "10115"}, "ann")
        before = dump(conn)

    def broken_reproject(conn: Connection, ids: Any) -> int:
        raise RuntimeError("disk full")  # after every other write of the merge has run

    monkeypatch.setattr(merge_mod, "reproject", broken_reproject)
    with pytest.raises(RuntimeError, match="disk full"), db_engine.begin() as conn:
        merge_customers(conn, lead_id, sub_id)
    with pytest.raises(RuntimeError, match="disk full"):
        auto_merge(db_engine)
    with db_engine.connect() as conn:
        assert dump(conn) == before


def test_metrics_count_a_merged_pair_once(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        setup_pair(conn)

    def leads_in_january() -> int:
        with db_engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(customers).where(
                    customers.c.lead_created_at >= t(1, 1), customers.c.lead_created_at < t(2, 1)
                )
            ).scalar_one()

    assert leads_in_january() == 2
    auto_merge(db_engine)
    assert leads_in_january() == 1


def test_merge_errors(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        _, _, lead_id, sub_id = setup_pair(conn)
        with pytest.raises(MergeError, match="itself"):
            merge_customers(conn, sub_id, sub_id)
        with pytest.raises(CustomerNotFound):
            merge_customers(conn, lead_id, 999_999)
    with pytest.raises(ValueError, match="unknown merge rule 'phone'"):
        auto_merge(db_engine, ["phone"])


def test_many_groups_merge_in_batches(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        a = create_source(conn, "a", "custom").id
        b = create_source(conn, "b", "stripe").id
        upsert_records(conn, a, [SourceCustomerRecord(external_id=f"a{i}", email=f"u{i}@x.io", name=f"A{i}")
                                 for i in range(60)], now=t(1, 1))
        upsert_records(conn, b, [SourceCustomerRecord(external_id=f"b{i}", email=f"U{i}@x.io", company=f"C{i}")
                                 for i in range(0, 60, 2)], now=t(2, 1))
    seen: list[tuple[int, int]] = []
    result = auto_merge(db_engine, batch_size=7, progress=lambda done, total: seen.append((done, total)))
    assert result.merged_customers == 30 and seen[-1] == (30, 30) and len(seen) == 5
    with db_engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(customers)).scalar() == 60
        (view,) = customer_view(conn, [resolve_customer(conn, "b:b4")])
    assert (view["name"], view["company"]) == ("A4", "C4")


def test_detection_inside_a_transaction_restores_session_settings(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        setup_pair(conn)
        settings = "SELECT current_setting('work_mem') || '/' || current_setting('max_parallel_workers_per_gather')"
        before = conn.exec_driver_sql(settings).scalar() if conn.dialect.name == "postgresql" else None
        first = find_duplicate_groups(conn)
        assert [g.as_json() for g in find_duplicate_groups(conn)] == [g.as_json() for g in first]
        after = conn.exec_driver_sql(settings).scalar() if conn.dialect.name == "postgresql" else None
    assert len(first) == 1 and before == after


# ---------------------------------------------------------------------------------------------------
# Joins by email at import: merges like any other


def test_a_join_by_email_at_import_is_a_logged_merge_that_unmerge_undoes(db_engine: Engine) -> None:
    """A new record whose email another source's customer has joins it as a merge (rule email-at-import):
    in the merge log, separable by ``unmerge`` into the customer the import would have made, and kept
    apart from then on by the automatic merge."""
    with db_engine.begin() as conn:
        billing = create_source(conn, "billing", "stripe").id
        leads = create_source(conn, "Website leads", "csv").id
        upsert_records(conn, billing, [billing_record()], now=t(3, 1))
        sub_id = resolve_customer(conn, "billing:cus_B1")
        result = upsert_records(conn, leads, [
            lead_record(external_id="WL-9", email="jane@acme.io", contacts=None),
            lead_record(external_id="WL-10", email="jane@acme.io", contacts=None, city="Munich"),
        ], link_new_by_email=True, now=t(4, 1))
        assert result.joined == 2 and len(result.join_events) == 1
        assert resolve_customer(conn, "Website leads:WL-9") == sub_id
        (event,) = list_merge_events(conn)
        sub_uuid = customer_view(conn, [sub_id])[0]["uuid"]
        assert (event.kind, event.into_customer_uuid, event.rule, event.actor) == (
            "merge", sub_uuid, "email-at-import", "import")
        assert event == result.join_events[0]

        back = unmerge(conn, sub_id, "Website leads:WL-9")
        assert (back.kind, back.from_customer_uuid, back.rule) == ("unmerge", event.from_customer_uuid,
                                                                    "email-at-import")
        restored = resolve_customer(conn, "Website leads:WL-9")
        assert restored not in (None, sub_id) and resolve_customer(conn, "Website leads:WL-10") == restored
        restored_view, sub_view = customer_view(conn, [restored, sub_id])
    assert restored_view["uuid"] == event.from_customer_uuid
    assert sorted(restored_view["external_ids"]) == ["WL-10", "WL-9"]
    assert restored_view["name"] == "Jane Lead" and restored_view["lead_created_at"] == t(1, 1).isoformat()
    assert sub_view["external_ids"] == ["cus_B1"] and sub_view["name"] == "Jane Doe"
    # The user said they are two customers: the email rule does not join them again.
    assert auto_merge(db_engine).groups == []


def test_records_of_one_source_sharing_an_email_share_a_customer_without_a_merge(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        leads = create_source(conn, "Website leads", "csv").id
        upsert_records(conn, leads, [lead_record(external_id="WL-1", contacts=None),
                                     lead_record(external_id="WL-2", contacts=None)], link_new_by_email=True)
        # A later batch of the same source finds that customer: still one source's records, no merge.
        later = upsert_records(conn, leads, [lead_record(external_id="WL-3", contacts=None)], link_new_by_email=True)
        assert later.joined == 0
        ids = {resolve_customer(conn, f"Website leads:WL-{i}") for i in (1, 2, 3)}
        assert len(ids) == 1 and list_merge_events(conn) == []


def test_without_the_join_a_new_record_gets_its_own_customer(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        billing = create_source(conn, "billing", "stripe").id
        leads = create_source(conn, "Website leads", "csv").id
        upsert_records(conn, billing, [billing_record()])
        result = upsert_records(conn, leads, [lead_record(external_id="WL-9", contacts=None)],
                                link_new_by_email=False)
        assert result.joined == 0 and list_merge_events(conn) == []
        assert resolve_customer(conn, "Website leads:WL-9") != resolve_customer(conn, "billing:cus_B1")
