"""Braintree: the lead date computed in the account time zone, trial and subscriber-since rules, the
first-import/incremental rule, GraphQL errors inside HTTP 200, and paging both APIs."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
import respx

from connectors.braintree import (
    BraintreeConnector,
    map_customer,
    map_subscription,
    minus_months,
    subscription_first_paid_at,
    subscription_lead_created_at,
    trial_start_day,
)
from connectors.http import ApiError, CredentialsError
from connectors.paging import PaginationLoopError
from fakes.braintree import MERCHANT, SETTINGS, populated

LA = ZoneInfo("America/Los_Angeles")
NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


def connector(page_size: int = 5, **overrides: str) -> BraintreeConnector:
    return BraintreeConnector(
        {**SETTINGS, "page_size": page_size, **overrides},
        source_name="bt",
        sleep_fn=lambda s: None,
        now=lambda: NOW,
        batch_size=1,
    )


def read(conn: BraintreeConnector, state: dict | None = None, full_refresh: bool = False) -> list:
    return list(conn.read("customers", state, full_refresh))


# --- pure rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "months", "expected"),
    [
        (date(2025, 3, 31), 1, date(2025, 2, 28)),
        (date(2024, 3, 31), 1, date(2024, 2, 29)),
        (date(2025, 1, 15), 1, date(2024, 12, 15)),
        (date(2025, 1, 31), 13, date(2023, 12, 31)),
        (date(2025, 5, 10), 0, date(2025, 5, 10)),
    ],
)
def test_minus_months_clamps_to_month_end(day: date, months: int, expected: date) -> None:
    assert minus_months(day, months) == expected


@pytest.mark.parametrize(
    ("duration", "unit", "expected"),
    [
        (14, "day", date(2025, 2, 28)),
        (1, "month", date(2025, 2, 14)),
        (None, None, date(2025, 3, 14)),
        (2, "Month", date(2025, 1, 14)),
    ],
)
def test_trial_start_day(duration: int | None, unit: str | None, expected: date) -> None:
    assert trial_start_day(date(2025, 3, 14), duration, unit) == expected


def trial_subscription(**overrides: object) -> dict:
    base = {
        "id": "sub_1",
        "status": "Active",
        "trial_period": True,
        "trial_duration": 1,
        "trial_duration_unit": "month",
        # 23:30 on 14 February in Los Angeles, already the 15th in UTC.
        "created_at": "2025-02-15T07:30:00Z",
        "first_billing_date": "2025-03-14",
        "price": "29.00",
        "current_billing_cycle": 0,
        "transactions": [],
    }
    return {**base, **overrides}


def test_lead_date_is_first_billing_minus_trial_in_the_account_zone() -> None:
    sub = trial_subscription()
    # Midnight of 14 Feb in Los Angeles (PST, UTC-8): not midnight UTC, and not the DST offset of March.
    assert subscription_lead_created_at(sub, LA) == datetime(2025, 2, 14, 8, tzinfo=UTC)
    assert subscription_lead_created_at(sub, ZoneInfo("UTC")) == datetime(2025, 2, 14, tzinfo=UTC)
    assert subscription_lead_created_at(sub, ZoneInfo("Asia/Tokyo")) == datetime(2025, 2, 13, 15, tzinfo=UTC)


def test_lead_date_read_from_the_account_zone_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUNNELSYNC_TIMEZONE", "America/Los_Angeles")
    node = {"legacyId": "c1", "createdAt": "2025-02-15T07:00:00.000000Z"}
    record = map_customer(node, [trial_subscription()])
    assert record.lead_created_at == datetime(2025, 2, 14, 8, tzinfo=UTC)
    assert record.free_trial_started_at == datetime(2025, 2, 15, 7, 30, tzinfo=UTC)
    fact = record.subscriptions[0]
    assert fact.state == "trialing" and fact.trial_ended_at == datetime(2025, 3, 14, 7, tzinfo=UTC)  # PDT


def test_without_trial_lead_date_is_first_billing_day_and_no_trial_dates() -> None:
    sub = trial_subscription(trial_period=False, first_billing_date="2025-03-14")
    record = map_customer({"legacyId": "c1", "createdAt": "2025-03-14T10:00:00Z"}, [sub], LA)
    assert record.lead_created_at == datetime(2025, 3, 14, 7, tzinfo=UTC)
    assert record.free_trial_started_at is None and record.subscriptions[0].trial_started_at is None


def test_lead_without_subscription_uses_customer_created_at() -> None:
    record = map_customer(
        {
            "legacyId": "c9",
            "id": "Y3VzdG9tZXJfYzk",
            "createdAt": "2025-01-01T00:00:00Z",
            "firstName": " Ada ",
            "lastName": None,
            "email": "ada@example.org",
        },
        [],
        LA,
    )
    assert record.external_id == "c9" and record.name == "Ada"
    assert record.lead_created_at == datetime(2025, 1, 1, tzinfo=UTC) and record.subscriptions == []


def test_subscriber_since_is_first_successful_non_zero_sale() -> None:
    sub = trial_subscription(
        transactions=[
            {
                "status": "processor_declined",
                "type": "sale",
                "amount": "29.00",
                "created_at": "2025-03-14T09:00:00Z",
            },
            {"status": "settled", "type": "sale", "amount": "0.00", "created_at": "2025-03-14T10:00:00Z"},
            {"status": "settled", "type": "credit", "amount": "29.00", "created_at": "2025-03-14T10:30:00Z"},
            {
                "status": "submitted_for_settlement",
                "type": "sale",
                "amount": "29.00",
                "created_at": "2025-03-15T11:00:00Z",
            },
            {"status": "settled", "type": "sale", "amount": "29.00", "created_at": "2025-04-14T11:00:00Z"},
        ]
    )
    assert subscription_first_paid_at(sub, LA) == datetime(2025, 3, 15, 11, tzinfo=UTC)
    fact = map_subscription(sub, LA)
    assert fact.state == "active" and fact.trial_started_at is not None


def test_subscriber_since_fallback_without_transactions() -> None:
    # A webhook subject may omit transactions: a billed cycle at a non-zero price counts on first billing.
    sub = trial_subscription(current_billing_cycle=1)
    del sub["transactions"]
    assert subscription_first_paid_at(sub, LA) == datetime(2025, 3, 14, 7, tzinfo=UTC)
    assert subscription_first_paid_at({**sub, "price": "0.00"}, LA) is None
    assert subscription_first_paid_at({**sub, "current_billing_cycle": 0}, LA) is None


@pytest.mark.parametrize(
    ("status", "paid", "state"),
    [
        ("Active", False, "trialing"),
        ("Active", True, "active"),
        ("Past Due", True, "past_due"),
        ("Canceled", True, "cancelled"),
        ("Expired", False, "cancelled"),
        ("Pending", False, "trialing"),
    ],
)
def test_subscription_states(status: str, paid: bool, state: str) -> None:
    txns = [{"status": "settled", "type": "sale", "amount": "29.00", "created_at": "2025-03-14T09:00:00Z"}]
    sub = trial_subscription(
        status=status,
        transactions=txns if paid else [],
        status_history=[{"status": status, "timestamp": "2025-05-01T00:00:00Z"}],
    )
    fact = map_subscription(sub, LA)
    assert fact.state == state
    assert (fact.cancelled_at == datetime(2025, 5, 1, tzinfo=UTC)) == (state == "cancelled")


# --- against the fake APIs ------------------------------------------------------------------------


@respx.mock
def test_first_import_brings_every_customer_with_joined_subscriptions() -> None:
    fake = populated(12)
    fake.install(respx)
    batches = read(connector())
    records = [r for b in batches for r in b.records]
    assert len(records) == 12 and len(batches) == 3  # GraphQL pages of 5
    by_id = {r.external_id: r for r in records}
    assert by_id["bt_cust_00002"].subscriptions == []  # a lead, imported on the first import
    paid = by_id["bt_cust_00000"]
    assert paid.subscriptions[0].external_id == "sub_00000" and paid.subscriptions[0].state == "active"
    assert paid.subscriptions[0].first_paid_at == datetime(2025, 3, 15, 20, tzinfo=UTC)
    assert by_id["bt_cust_00001"].subscriptions[0].state == "trialing"
    assert batches[-1].cursor == {"since": "2025-06-01T11:55:00Z", "watermark": "2025-06-01T11:55:00Z"}
    assert all(b.cursor.get("page_token") for b in batches[:-1])
    searches = [r for r in fake.requests if r.url.path.endswith("/subscriptions/advanced_search")]
    assert len(searches) == 2  # 8 subscriptions in id batches of the gateway's page size (4)
    assert all(
        r.url.path.startswith(f"/merchants/{MERCHANT}/") for r in fake.requests if "merchants" in str(r.url)
    )


@respx.mock
def test_killed_first_import_resumes_from_end_cursor() -> None:
    fake = populated(12)
    fake.install(respx)
    first = read(connector())[:2]
    rest = read(connector(), state=first[-1].cursor)
    ids = [r.external_id for b in first + rest for r in b.records]
    assert len(ids) == len(set(ids)) == 12


@respx.mock
def test_incremental_keeps_only_customers_with_subscription_or_transaction() -> None:
    fake = populated(6)
    fake.install(respx)
    cursor = read(connector())[-1].cursor
    later = datetime(2025, 6, 2, 9, tzinfo=UTC)
    fake.add_customer(100, later)  # a new lead: skipped on incremental
    new_trial = fake.add_customer(101, later + timedelta(hours=1))
    fake.add_subscription(
        new_trial,
        "sub_new",
        created=later + timedelta(hours=1),
        first_billing=date(2025, 6, 16),
        trial=(14, "day"),
    )
    # An old lead (imported on the first run) starts a trial now.
    fake.add_subscription(
        "bt_cust_00002", "sub_old_lead", created=later, first_billing=date(2025, 7, 2), trial=(1, "month")
    )
    batches = read(connector(), state=cursor)
    ids = sorted(r.external_id for b in batches for r in b.records)
    assert ids == ["bt_cust_00002", "bt_cust_00101"]
    assert batches[-1].cursor["since"] >= cursor["since"]
    gql = [r for r in fake.requests if r.url.path == "/graphql"][-1]
    assert b"greaterThanOrEqualTo" in gql.content


@respx.mock
def test_graphql_authentication_error_in_200_is_a_credentials_error() -> None:
    fake = populated(3)
    fake.install(respx)
    body = {
        "data": None,
        "errors": [
            {
                "message": "Authentication credentials are invalid",
                "extensions": {"errorClass": "AUTHENTICATION"},
            }
        ],
    }
    fake.inject("/graphql", [httpx.Response(200, json=body)])
    with pytest.raises(CredentialsError) as info:
        read(connector())
    assert (
        "bt" in str(info.value) and "AUTHENTICATION" in str(info.value) and "private_key" in str(info.value)
    )


@respx.mock
def test_xml_401_fails_fast() -> None:
    fake = populated(3)
    fake.install(respx)
    fake.inject(f"/merchants/{MERCHANT}/subscriptions/advanced_search_ids", [httpx.Response(401)])
    with pytest.raises(CredentialsError, match="private_key"):
        read(connector())


@respx.mock
def test_resource_limit_in_200_and_429_are_retried() -> None:
    fake = populated(6)
    fake.install(respx)
    limited = {
        "data": None,
        "errors": [{"message": "Too many requests", "extensions": {"errorClass": "RESOURCE_LIMIT"}}],
    }
    fake.inject("/graphql", [httpx.Response(200, json=limited)])
    fake.inject(
        f"/merchants/{MERCHANT}/subscriptions/advanced_search",
        [httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(503)],
    )
    slept: list[float] = []
    conn = BraintreeConnector(SETTINGS, source_name="bt", sleep_fn=slept.append, now=lambda: NOW)
    assert len([r for b in read(conn) for r in b.records]) == 6
    assert 2.0 in slept and len(slept) == 3


@respx.mock
def test_other_graphql_error_is_an_api_error() -> None:
    fake = populated(3)
    fake.install(respx)
    fake.inject(
        "/graphql",
        [
            httpx.Response(
                200,
                json={
                    "errors": [
                        {"message": "Variable $input invalid", "extensions": {"errorClass": "VALIDATION"}}
                    ]
                },
            )
        ],
    )
    with pytest.raises(ApiError, match="VALIDATION"):
        read(connector())


@respx.mock
def test_repeated_end_cursor_raises() -> None:
    fake = populated(12)
    fake.loop_path = "/graphql"
    fake.install(respx)
    with pytest.raises(PaginationLoopError):
        read(connector())


@respx.mock
def test_fetch_record_reads_customer_and_nested_subscriptions() -> None:
    fake = populated(3)
    fake.install(respx)
    conn = connector()
    record = conn.fetch_record("bt_cust_00000")
    assert record is not None and [s.external_id for s in record.subscriptions] == ["sub_00000"]
    assert record.subscriptions[0].first_paid_at is not None
    assert conn.fetch_record("bt_cust_00002") is None  # no subscription: not on a later import
    assert conn.fetch_record("bt_cust_00002", first_import=True) is not None
    assert conn.fetch_record("missing") is None
    assert conn.customer_of_token("tok_bt_cust_00001_0") == "bt_cust_00001"


@respx.mock
def test_unreachable_gateway_is_reported_under_its_own_setting() -> None:
    # Two endpoints, two settings: the message must name the one to fix (gateway_url), not base_url.
    respx.route(host="gateway.unreachable.test").mock(side_effect=httpx.ConnectError("refused"))
    respx.route(host="payments.braintree-api.com").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(ApiError) as caught:
        read(connector(gateway_url="https://gateway.unreachable.test"))
    assert "gateway_url https://gateway.unreachable.test" in str(caught.value)
