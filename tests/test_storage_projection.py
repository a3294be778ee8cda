"""The projection rule, as a pure function, and applied through manual edits and re-syncs."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from storage.customers import customer_view, resolve_customer
from storage.edits import EditError, set_manual_edits
from storage.projection import jsonable_custom, project
from storage.schema import customer_attributes, customer_tags, customers
from storage.sources import create_source
from storage.upsert import upsert_records

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def test_project_rules():
    first = {"name": "Ada", "email": None, "company": "Acme", "lead_created_at": T0 + timedelta(days=3),
             "free_trial_started_at": None, "tags": ["a"], "custom": {"plan": "pro", "seats": 3}}
    second = {"name": "Ada L.", "email": "ADA@x.io", "company": "Other", "lead_created_at": T0,
              "free_trial_started_at": T0 + timedelta(days=1), "tags": ["b", "a"], "custom": {"plan": "free", "x": 1}}
    out = project([first, second], [{"state": "active", "first_paid_at": T0 + timedelta(days=9)},
                                    {"state": "cancelled", "first_paid_at": T0 + timedelta(days=5)}],
                  {"company": "Edited", "tag.b": False, "tag.vip": True, "custom.seats": 10})
    assert out["name"] == "Ada"  # first in link order
    assert out["email"] == "ADA@x.io" and out["email_norm"] == "ada@x.io"  # taken where the first has none
    assert out["company"] == "Edited"  # the edit wins
    assert out["lead_created_at"] == T0  # earliest
    assert out["free_trial_started_at"] == T0 + timedelta(days=1)
    assert out["subscriber_since"] == T0 + timedelta(days=5)
    assert out["status"] == "Active"
    assert out["tags"] == ["a", "vip"]
    assert out["custom"] == {"plan": "pro", "seats": 10, "x": 1}


def test_project_date_edit_wins_even_when_later():
    src = {"lead_created_at": T0, "free_trial_started_at": None, "tags": [], "custom": {}}
    out = project([src], [], {"lead_created_at": T0 + timedelta(days=2)})
    assert out["lead_created_at"] == T0 + timedelta(days=2)


def _record(ext, **kw):
    return SourceCustomerRecord(external_id=ext, **kw)


def test_edits_survive_resync(db_engine):
    with db_engine.begin() as conn:
        ds = create_source(conn, "billing", "stripe")
        upsert_records(conn, ds.id, [_record("c1", name="Ada", owner="x@corp", lead_created_at=T0)])
        cid = resolve_customer(conn, "billing:c1")
        set_manual_edits(conn, cid, {"owner": "me@corp", "lead_created_at": T0 - timedelta(days=10),
                                     "tag.vip": True, "custom.tier": "gold"})
    with db_engine.begin() as conn:
        # The source now reports other values: the source customer changes, the edits stay in force.
        result = upsert_records(conn, ds.id, [_record("c1", name="Ada Lovelace", owner="y@corp",
                                                      lead_created_at=T0 + timedelta(days=1))])
        assert result.updated == 1
        view = customer_view(conn, [cid])[0]
    assert view["name"] == "Ada Lovelace"
    assert view["owner"] == "me@corp"
    assert view["lead_created_at"] == (T0 - timedelta(days=10)).isoformat()
    assert view["tags"] == ["vip"] and view["custom"] == {"tier": "gold"}
    with db_engine.connect() as conn:
        assert conn.execute(select(customer_tags.c.tag)).scalars().all() == ["vip"]
        assert conn.execute(select(customer_attributes.c.value_text)).scalars().all() == ["gold"]


def test_earliest_dates_across_sources(db_engine):
    with db_engine.begin() as conn:
        csv = create_source(conn, "leads", "csv")
        billing = create_source(conn, "billing", "stripe")
        upsert_records(conn, csv.id, [_record("L1", email="a@x.io", lead_created_at=T0 + timedelta(days=5))])
        # Linked to the same customer by email: the earliest date of the two sources wins.
        upsert_records(
            conn,
            billing.id,
            [
                _record(
                    "B1",
                    email="A@x.io",
                    lead_created_at=T0,
                    free_trial_started_at=T0 + timedelta(days=1),
                    subscriptions=[SubscriptionFact("sub_1", "active", first_paid_at=T0 + timedelta(days=15))],
                )
            ],
            link_new_by_email=True,
        )
        rows = conn.execute(select(customers.c.lead_created_at, customers.c.free_trial_started_at,
                                   customers.c.subscriber_since, customers.c.status)).all()
    assert rows == [(T0, T0 + timedelta(days=1), T0 + timedelta(days=15), "Active")]


def test_lead_status_refused_on_subscriber(db_engine):
    with db_engine.begin() as conn:
        ds = create_source(conn, "billing", "stripe")
        upsert_records(conn, ds.id, [_record("c1", subscriptions=[SubscriptionFact("s", "active", first_paid_at=T0)])])
        cid = resolve_customer(conn, "billing:c1")
        with pytest.raises(EditError, match="subscriber"):
            set_manual_edits(conn, cid, {"lead_status": "Working_Lead"})
        with pytest.raises(EditError, match="cannot be edited"):
            set_manual_edits(conn, cid, {"subscriber_since": T0})


# ---- the fast path for new customers equals the general rule

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from storage.row_values import _record_fields, new_customer_row  # noqa: E402

_dates = st.one_of(st.none(), st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1),
                                           timezones=st.just(timezone.utc)))
_text = st.one_of(st.none(), st.just(""), st.text(min_size=1, max_size=8))
_subs = st.one_of(st.none(), st.lists(st.builds(
    SubscriptionFact, external_id=st.text(min_size=1, max_size=4),
    state=st.sampled_from(["trialing", "active", "past_due", "cancelled"]), first_paid_at=_dates), max_size=3))


@settings(max_examples=150, deadline=None)
@given(name=_text, email=st.one_of(_text, st.emails()), website=st.one_of(_text, st.just("https://www.Acme.io/x")),
       lead=_dates, trial=_dates, subs=_subs, tags=st.lists(st.sampled_from(["a", "b", "c"]), max_size=4),
       status=st.one_of(st.none(), st.sampled_from(["New_Lead", "Working_Lead"])))
def test_new_customer_row_equals_project(name, email, website, lead, trial, subs, tags, status):
    rec = SourceCustomerRecord("x", name=name, email=email, website_url=website, lead_created_at=lead,
                               free_trial_started_at=trial, subscriptions=subs, tags=tags, lead_status=status,
                               custom={"k": 1})
    expected = project([_record_fields(rec)],
                       [{"state": s.state, "first_paid_at": s.first_paid_at} for s in subs or ()], {})
    row = new_customer_row(rec, 1, T0)
    for key, value in expected.items():
        assert row[key] == value, key


@settings(max_examples=150, deadline=None)
@given(name=_text, email=st.one_of(_text, st.emails()), website=st.one_of(_text, st.just("https://www.Acme.io/x")),
       lead=_dates, trial=_dates, subs=_subs, tags=st.lists(st.sampled_from(["a", "b", "c"]), max_size=4),
       status=st.one_of(st.none(), st.sampled_from(["New_Lead", "Working_Lead"])),
       custom=st.sampled_from([{}, {"k": 1}, {"when": datetime(2024, 5, 1, tzinfo=timezone.utc), "x": "y"}]),
       raw=st.sampled_from([None, {}, {"id": "x", "n": [1, 2]}]), sqlite_times=st.booleans())
def test_fresh_row_tuples_equal_the_dict_rows(name, email, website, lead, trial, subs, tags, status, custom, raw,
                                               sqlite_times):
    """The prepared values of a first import write exactly what the dict rows would."""
    from storage.row_values import _record_fields, prepare_record
    from storage.upsert import CUSTOMER_COLUMNS, CUSTOMER_OWN_COLUMNS, SC_COLUMNS
    from storage.writers import _row_builder

    rec = SourceCustomerRecord("x", name=name, email=email, website_url=website, lead_created_at=lead,
                               free_trial_started_at=trial, subscriptions=subs, tags=tags, lead_status=status,
                               custom=custom, raw=raw)
    prepared = prepare_record(rec, sqlite_times)
    email_norm = prepared.email_norm
    expected_customer = _row_builder(CUSTOMER_COLUMNS, sqlite_times)(
        new_customer_row(rec, 7, T0, "cus_1", email_norm))
    if sqlite_times:
        # SQLite copies the rest of a new customer's row from its source customer (tested by the round trips).
        assert (
            tuple(expected_customer[CUSTOMER_COLUMNS.index(c)] for c in CUSTOMER_OWN_COLUMNS)
            == prepared.customer_values
        )
    else:
        assert expected_customer[4:] == prepared.customer_values
    # The source customer row as a dict, column by column: what the upsert writes, the ids and stamps aside.
    sc_row = _record_fields(rec)
    sc_row.update(id=3, data_source_id=2, external_id=rec.external_id, customer_id=7, linked_at=T0,
                  email_norm=email_norm, custom=jsonable_custom(rec.custom), raw=rec.raw,
                  fingerprint="f" * 48, created_at=T0, updated_at=T0, row_fingerprint=None)
    expected_sc = _row_builder(SC_COLUMNS, sqlite_times)(sc_row)
    assert expected_sc[5:-4] == prepared.sc_values
    if subs is None:
        assert prepared.subscriptions is None
    else:
        last = {s.external_id: s for s in subs}
        assert [v[0] for v in prepared.subscriptions] == list(last)
        assert [v[1] for v in prepared.subscriptions] == [s.state for s in last.values()]


def test_reproject_writes_only_the_columns_that_changed(db_engine):
    """SQLite rewrites the entries of every index whose column an UPDATE names, changed or not (and runs the
    metric counts' trigger): the re-projection names only the changed columns, and mirrors tags and
    attributes again only when they changed. The stored rows still equal the projection."""
    from sqlalchemy import event, update

    from storage.projection import reproject
    from storage.schema import source_customers

    now = datetime(2026, 2, 1, tzinfo=timezone.utc)
    with db_engine.begin() as conn:
        source = create_source(conn, "crm", "custom").id
        upsert_records(conn, source, [
            SourceCustomerRecord(external_id="a", name="Ann", email="ann@a.io", tags=["vip"], custom={"plan": "pro"}),
            SourceCustomerRecord(external_id="b", name="Bob", email="bob@b.io", tags=["new"]),
        ], now=now)
        ann, bob = resolve_customer(conn, "crm:a"), resolve_customer(conn, "crm:b")
    statements: list[str] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        statements.append(statement)

    with db_engine.begin() as conn:
        sc = source_customers
        conn.execute(update(sc).where(sc.c.external_id == "a").values(name="Annie"))
        conn.execute(update(sc).where(sc.c.external_id == "b").values(tags=["new", "trial"]))
        event.listen(db_engine, "before_cursor_execute", capture)
        try:
            assert reproject(conn, [ann, bob]) == 2
        finally:
            event.remove(db_engine, "before_cursor_execute", capture)
        (ann_row,) = customer_view(conn, [ann])
        (bob_row,) = customer_view(conn, [bob])
        tags = {(r.customer_id, r.tag) for r in conn.execute(select(customer_tags.c.customer_id, customer_tags.c.tag))}
        attributes = [r.customer_id for r in conn.execute(select(customer_attributes.c.customer_id))]
    updates = [s for s in statements if s.lstrip().upper().startswith("UPDATE CUSTOMERS")]
    assert len(updates) == 2
    assert any('name' in s and 'tags' not in s for s in updates)
    assert any('tags' in s and 'name' not in s for s in updates)
    assert all('email_norm' not in s and 'lead_created_at' not in s for s in updates)
    # Ann's tags and attributes were not touched, Bob's tags were mirrored again.
    deletes = [s for s in statements if "customer_tags" in s and s.lstrip().upper().startswith("DELETE")]
    assert len(deletes) == 1
    assert (ann_row["name"], ann_row["tags"], bob_row["tags"]) == ("Annie", ["vip"], ["new", "trial"])
    assert tags == {(ann, "vip"), (bob, "new"), (bob, "trial")} and attributes == [ann]
