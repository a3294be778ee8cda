"""GoCardless: the SPEC rule (payment-less customers only on a full re-sync, never a trial date),
subscriber since from collected payments, paging and incremental reads against a fake that pages."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
import respx

from connectors.gocardless import (
    CustomerActivity,
    GoCardlessConnector,
    first_paid_at,
    index_activity,
    map_customer,
    map_subscription,
    should_import,
)
from connectors.http import CredentialsError
from connectors.paging import PaginationLoopError
from fakes.gocardless import TOKEN, populated

UTC_TZ = ZoneInfo("UTC")
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def connector(page_size: int = 7, token: str = TOKEN) -> GoCardlessConnector:
    return GoCardlessConnector(
        {"access_token": token, "page_size": page_size},
        source_name="gc",
        sleep_fn=lambda s: None,
        now=lambda: NOW,
        batch_size=1,
    )


def read(conn: GoCardlessConnector, state: dict | None = None, full_refresh: bool = False) -> list:
    return list(conn.read("customers", state, full_refresh))


# --- pure mapping ---------------------------------------------------------------------------------


def payment(status: str, amount: int, charge_date: str, subscription: str | None = "SB1") -> dict:
    links = {"mandate": "MD1", **({"subscription": subscription} if subscription else {})}
    return {
        "id": f"PM-{status}-{charge_date}",
        "status": status,
        "amount": amount,
        "charge_date": charge_date,
        "created_at": "2025-01-01T00:00:00.000Z",
        "links": links,
    }


def test_first_paid_at_is_earliest_collected_non_zero_payment() -> None:
    payments = [
        payment("paid_out", 1500, "2025-03-01"),
        payment("confirmed", 1500, "2025-02-01"),
        payment("paid_out", 0, "2025-01-01"),  # zero: not a conversion
        payment("pending_submission", 1500, "2024-12-01"),  # not collected yet
        payment("failed", 1500, "2024-11-01"),
    ]
    assert first_paid_at(payments, UTC_TZ) == datetime(2025, 2, 1, tzinfo=UTC)


def test_charge_date_is_a_day_in_the_account_zone() -> None:
    la = ZoneInfo("America/Los_Angeles")
    assert first_paid_at([payment("paid_out", 100, "2025-02-01")], la) == datetime(2025, 2, 1, 8, tzinfo=UTC)


def test_one_off_payment_does_not_make_a_subscriber() -> None:
    sub = {"id": "SB1", "status": "active", "links": {"mandate": "MD1"}}
    fact = map_subscription(sub, [payment("paid_out", 5000, "2025-01-05", subscription=None)], UTC_TZ)
    assert fact.first_paid_at is None and fact.state == "active"


@pytest.mark.parametrize(
    ("status", "latest", "state"),
    [
        ("active", "paid_out", "active"),
        ("active", "failed", "past_due"),
        ("active", "charged_back", "past_due"),
        ("cancelled", "paid_out", "cancelled"),
        ("finished", "paid_out", "cancelled"),
        ("paused", "paid_out", "active"),
        ("pending_customer_approval", "pending_submission", "active"),
    ],
)
def test_subscription_state(status: str, latest: str, state: str) -> None:
    sub = {"id": "SB1", "status": status, "end_date": "2025-06-01", "links": {"mandate": "MD1"}}
    payments = [payment("paid_out", 1500, "2025-01-01"), payment(latest, 1500, "2025-02-01")]
    fact = map_subscription(sub, payments, UTC_TZ)
    assert fact.state == state
    assert fact.trial_started_at is None and fact.trial_ended_at is None
    assert (fact.cancelled_at is not None) == (state == "cancelled")


def test_customer_mapping_never_has_trial_dates_even_with_future_start_date() -> None:
    customer = {
        "id": "CU1",
        "created_at": "2025-01-02T03:04:05.678Z",
        "email": " a@b.co ",
        "given_name": "Ada",
        "family_name": "Lovelace",
        "company_name": "",
        "country_code": "gb",
        "city": "London",
        "region": None,
        "postal_code": "N1",
        "metadata": {"plan": "gold", "empty": ""},
    }
    # A subscription starting in the future is what some tools call a trial: SPEC says never.
    sub = {"id": "SB1", "status": "active", "start_date": "2030-01-01", "links": {"mandate": "MD1"}}
    record = map_customer(customer, CustomerActivity([sub], []), UTC_TZ)
    assert record.external_id == "CU1" and record.name == "Ada Lovelace" and record.email == "a@b.co"
    assert record.country == "GB" and record.company is None and record.custom == {"plan": "gold"}
    assert record.lead_created_at == datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert record.free_trial_started_at is None
    assert all(s.trial_started_at is None and s.trial_ended_at is None for s in record.subscriptions)


def test_company_only_customer_gets_company_as_name() -> None:
    record = map_customer({"id": "CU2", "company_name": "Acme Ltd", "created_at": None}, None, UTC_TZ)
    assert record.name == "Acme Ltd" and record.subscriptions == []


@pytest.mark.parametrize(
    ("payments", "full_refresh", "expected"),
    [([], False, False), ([], True, True), ([{"status": "pending_submission"}], False, True)],
)
def test_should_import(payments: list, full_refresh: bool, expected: bool) -> None:
    assert should_import(CustomerActivity([], payments), full_refresh=full_refresh) is expected
    if not payments:
        assert should_import(None, full_refresh=full_refresh) is full_refresh


# --- against the fake API -------------------------------------------------------------------------


@respx.mock
def test_full_refresh_pages_and_imports_every_customer() -> None:
    fake = populated(30)
    fake.install(respx)
    batches = read(connector(), full_refresh=True)
    ids = [r.external_id for b in batches for r in b.records]
    assert sorted(ids) == sorted(c["id"] for c in fake.data["customers"]) and len(ids) == 30
    assert len(batches) == 5  # 30 customers in pages of 7
    assert all(b.cursor.get("page_token") for b in batches[:-1]) and "page_token" not in batches[-1].cursor
    mark = "2025-06-01T11:55:00.000Z"
    assert batches[-1].cursor == {"since": mark, "watermark": mark}
    customer_calls = [r for r in fake.requests if r.url.path == "/customers"]
    assert [r.url.params.get("after") for r in customer_calls][1:] == [
        "CU000000000023",
        "CU000000000016",
        "CU000000000009",
        "CU000000000002",
    ]
    assert all(r.url.params["limit"] == "7" for r in customer_calls)
    assert all(r.headers["GoCardless-Version"] == "2015-07-06" for r in fake.requests)


@respx.mock
def test_first_sync_without_full_refresh_skips_payment_less_customers() -> None:
    fake = populated(30)
    fake.install(respx)
    records = [r for b in read(connector()) for r in b.records]
    assert len(records) == 20
    assert all(int(r.external_id[2:]) % 3 != 1 for r in records)
    paid = {r.external_id: r for r in records}["CU000000000002"]
    assert paid.subscriptions[0].first_paid_at == datetime(2025, 2, 3, tzinfo=UTC)
    assert paid.lead_created_at == datetime(2025, 1, 1, 11, tzinfo=UTC)
    assert all(r.free_trial_started_at is None for r in records)


@respx.mock
def test_killed_listing_resumes_at_the_next_page() -> None:
    fake = populated(30)
    fake.install(respx)
    first = read(connector(), full_refresh=True)[:2]  # killed after the second batch
    rest = read(connector(), state=first[-1].cursor)
    ids = [r.external_id for b in first + rest for r in b.records]
    assert len(ids) == len(set(ids)) == 30  # the resumed run stayed a full refresh


@respx.mock
def test_incremental_reads_events_and_keeps_the_rule() -> None:
    fake = populated(6)
    fake.install(respx)
    cursor = read(connector())[-1].cursor
    # A lead (no payment) gets a mandate and a payment; another lead only gets updated.
    lead = fake.find("customers", "CU000000000001")
    assert lead is not None
    fake.data["mandates"].append(
        {
            "id": "MD900",
            "created_at": "2025-06-02T00:00:00.000Z",
            "status": "active",
            "links": {"customer": lead["id"], "creditor": "CR123"},
        }
    )
    fake.data["payments"].append(
        {
            "id": "PM900",
            "created_at": "2025-06-02T00:01:00.000Z",
            "amount": 900,
            "charge_date": "2025-06-05",
            "status": "confirmed",
            "currency": "GBP",
            "links": {"mandate": "MD900"},
        }
    )
    fake.add_event(datetime(2025, 6, 2, 0, 1, tzinfo=UTC), "payments", "confirmed", {"payment": "PM900"})
    fake.add_event(
        datetime(2025, 6, 2, 0, 2, tzinfo=UTC), "customers", "updated", {"customer": "CU000000000004"}
    )
    batches = read(connector(), state=cursor)
    records = [r for b in batches for r in b.records]
    assert [r.external_id for r in records] == ["CU000000000001"]  # CU…4 has no payment: skipped
    assert records[0].subscriptions == []  # a one-off payment, not a subscription
    assert batches[-1].cursor == {
        "since": "2025-06-02T00:02:00.000Z",
        "watermark": "2025-06-02T00:02:00.000Z",
    }
    events_call = next(r for r in fake.requests if r.url.path == "/events")
    assert events_call.url.params["created_at[gt]"] == cursor["since"]


@respx.mock
def test_repeated_after_cursor_raises() -> None:
    fake = populated(30)
    fake.loop_path = "/customers"
    fake.install(respx)
    with pytest.raises(PaginationLoopError, match="a second time"):
        read(connector(), full_refresh=True)


@respx.mock
def test_bad_token_fails_fast_without_leaking_it() -> None:
    fake = populated(3)
    fake.install(respx)
    with pytest.raises(CredentialsError) as info:
        read(connector(token="wrong_token_abcdef"))
    assert "gc" in str(info.value) and "access_token" in str(info.value)
    assert "wrong_token_abcdef" not in str(info.value)
    assert sum(fake.calls.values()) == 1


@respx.mock
def test_rate_limit_and_server_error_are_retried() -> None:
    fake = populated(10)
    fake.install(respx)
    fake.inject(
        "/customers",
        [
            httpx.Response(
                429,
                headers={"Retry-After": "3"},
                json={"error": {"type": "invalid_api_usage", "errors": [{"reason": "rate_limit_exceeded"}]}},
            ),
            httpx.Response(500, json={"error": {"message": "internal"}}),
        ],
    )
    slept: list[float] = []
    conn = GoCardlessConnector(
        {"access_token": TOKEN}, source_name="gc", sleep_fn=slept.append, now=lambda: NOW
    )
    records = [r for b in read(conn, full_refresh=True) for r in b.records]
    assert len(records) == 10 and slept[0] == 3.0 and len(slept) == 2


@respx.mock
def test_fetch_record_for_webhooks() -> None:
    fake = populated(3)
    fake.install(respx)
    conn = connector()
    assert conn.fetch_record("CU000000000001") is None  # no payment: the rule excludes it
    record = conn.fetch_record("CU000000000002")
    assert record is not None and record.subscriptions[0].first_paid_at is not None
    assert conn.fetch_record("CU999999999999") is None  # gone


def test_index_activity_keeps_only_the_payments_the_mapping_needs() -> None:
    mandates = [{"id": "MD1", "links": {"customer": "CU1"}}, {"id": "MD2", "links": {"customer": "CU2"}}]
    subs = [{"id": "SB1", "status": "active", "links": {"mandate": "MD1"}}]
    monthly = [payment("paid_out", 1500, f"2024-{m:02d}-01") for m in range(1, 13)]
    monthly.append(payment("failed", 1500, "2025-01-01"))
    one_off = [
        payment("pending_submission", 500, "2025-01-02", subscription=None) | {"links": {"mandate": "MD2"}}
    ]
    activity = index_activity(mandates, subs, iter(monthly + one_off))
    kept = activity["CU1"].payments
    assert len(kept) == 2  # the first collected one and the latest one
    fact = map_subscription(subs[0], kept, UTC_TZ)
    assert fact.first_paid_at == datetime(2024, 1, 1, tzinfo=UTC) and fact.state == "past_due"
    assert should_import(activity["CU2"], full_refresh=False) and activity["CU2"].subscriptions == []
