"""The shared filter grammar: parsing (table-driven), error messages, and SQL on both databases."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, insert, select

from storage.filter_grammar import FilterError, parse_filter, parse_filters
from storage.filters import build_filter, select_customer_ids
from storage.schema import custom_attribute_definitions
from tests.metrics_support import NOW, add_source, attribute, customer_row, insert_customers, link, tag


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("country = US", [("country", None, "=", ["US"])]),
        ("country=US", [("country", None, "=", ["US"])]),
        ("country in (US, de)", [("country", None, "in", ["US", "de"])]),
        ("country NOT IN (US,DE)", [("country", None, "not in", ["US", "DE"])]),
        (
            "status != Cancelled and tag = vip",
            [("status", None, "!=", ["Cancelled"]), ("tag", None, "=", ["vip"])],
        ),
        ("custom.seats >= 10", [("custom", "seats", ">=", ["10"])]),
        ('custom.Plan = "Pro plan"', [("custom", "Plan", "=", ["Pro plan"])]),
        ("attr.x <> 'it\\'s'", [("custom", "x", "!=", ["it's"])]),
        ("data_source = 'Stripe EU'", [("source", None, "=", ["Stripe EU"])]),
        ("owner == ann@example.com", [("owner", None, "=", ["ann@example.com"])]),
        (
            "lead_created_at < 2025-01-01T00:00:00+01:00",
            [("lead_created_at", None, "<", ["2025-01-01T00:00:00+01:00"])],
        ),
    ],
)
def test_parse(expression: str, expected: list[tuple]) -> None:
    got = [(c.field, c.key, c.op, [v.text for v in c.values]) for c in parse_filter(expression)]
    assert got == expected


@pytest.mark.parametrize(
    ("expression", "position", "reason"),
    [
        ("", 1, "empty filter"),
        ("colour = red", 1, "unknown field 'colour'"),
        ("country US", 9, "expected an operator"),
        ("country = ", 11, "expected a value, found the end"),
        ("country = US OR country = DE", 14, "OR is not supported"),
        ("country in US", 12, "expected '(' after in"),
        ("country in (US DE)", 16, "expected ',' or ')'"),
        ("country = 'US", 11, "unterminated quoted value"),
        ("custom. = 1", 1, "custom attribute key missing"),
        ("country = US country = DE", 14, "expected AND"),
    ],
)
def test_parse_errors_say_what_where_why(expression: str, position: int, reason: str) -> None:
    with pytest.raises(FilterError) as info:
        parse_filter(expression)
    assert info.value.position == position - 1
    assert reason in str(info.value)
    assert repr(expression) in str(info.value)


def test_several_expressions_and_together() -> None:
    conditions = parse_filters(["country = US", "tag = vip AND owner = a"])
    assert [c.field for c in conditions] == ["country", "tag", "owner"]


def _ids(engine: Engine, *expressions: str, tz: ZoneInfo | None = None) -> set[str]:
    with engine.connect() as conn:
        clause = build_filter(conn, list(expressions), tz=tz)
        rows = conn.execute(select_customer_ids(clause)).scalars().all()
        from storage.schema import customers

        uuids = dict(conn.execute(select(customers.c.id, customers.c.uuid)).all())
    return {uuids[i].removeprefix("cus_") for i in rows}


@pytest.fixture
def population(db_engine: Engine) -> Engine:
    """Five customers with sources, tags and typed attributes."""
    with db_engine.begin() as conn:
        ids = insert_customers(
            conn,
            [
                customer_row(
                    uuid="cus_a",
                    country="US",
                    status="Active",
                    owner="Ann@Example.com",
                    lead_created_at=datetime(2025, 1, 1, 5, tzinfo=UTC),
                ),
                customer_row(
                    uuid="cus_b",
                    country="DE",
                    status="Working_Lead",
                    lead_status="Working_Lead",
                    lead_created_at=datetime(2024, 12, 31, 23, 30, tzinfo=UTC),
                ),
                customer_row(
                    uuid="cus_c",
                    country=None,
                    status="Cancelled",
                    lead_created_at=datetime(2025, 1, 2, 0, 0, tzinfo=UTC),
                ),
                customer_row(uuid="cus_d", country="FR", status="New_Lead"),
                customer_row(uuid="cus_e", country="US", status="Past_Due", owner="bob@example.com"),
            ],
        )
        a, b, c, d, _e = ids
        stripe = add_source(conn, "Stripe EU", "stripe")
        sheet = add_source(conn, "Leads sheet", "google_sheets")
        link(conn, stripe, a, "cus_1")
        link(conn, stripe, b, "cus_2")
        link(conn, sheet, b, "row_2")
        link(conn, sheet, c, "row_3")
        tag(conn, a, "VIP", "beta")
        tag(conn, b, "beta")
        conn.execute(
            insert(custom_attribute_definitions),
            [
                {"key": "seats", "type": "Integer", "created_at": NOW},
                {"key": "plan", "type": "String", "created_at": NOW},
                {"key": "renews", "type": "Timestamp", "created_at": NOW},
                {"key": "partner", "type": "Boolean", "created_at": NOW},
            ],
        )
        attribute(conn, a, "seats", value_number=12.0)
        attribute(conn, b, "seats", value_number=3.0)
        attribute(conn, a, "plan", value_text="Pro")
        attribute(conn, c, "plan", value_text="Free")
        attribute(conn, b, "renews", value_time=datetime(2025, 6, 1, 12, tzinfo=UTC))
        attribute(conn, a, "partner", value_bool=True)
        attribute(conn, b, "partner", value_bool=False)
        attribute(conn, d, "code", value_text="123")
    return db_engine


@pytest.mark.parametrize(
    ("expressions", "expected"),
    [
        (["country = us"], {"a", "e"}),
        (["country != US"], {"b", "c", "d"}),  # no country is "not US"
        (["country in (DE, FR)"], {"b", "d"}),
        (["country not in (DE, FR)"], {"a", "c", "e"}),
        (["status = active"], {"a"}),
        (["status in (Cancelled, Past_Due)"], {"c", "e"}),
        (["lead_status = Working_Lead"], {"b"}),
        (["owner = ann@example.com"], {"a"}),
        (["source = 'Stripe EU'"], {"a", "b"}),
        (["source = ds_leadssheet"], {"b", "c"}),
        (["source != 'Stripe EU'"], {"c", "d", "e"}),
        (["source_kind = google_sheets"], {"b", "c"}),
        (["tag = vip"], {"a"}),
        (["tag != beta"], {"c", "d", "e"}),
        (["tag in (vip, beta)"], {"a", "b"}),
        (["custom.seats > 5"], {"a"}),
        (["custom.seats <= 3"], {"b"}),
        (["custom.seats = 3"], {"b"}),
        (["custom.seats != 3"], {"a", "c", "d", "e"}),
        (["custom.plan = pro"], {"a"}),
        (["custom.plan in (Free, Enterprise)"], {"c"}),
        (["custom.renews > 2025-05-31"], {"b"}),
        (["custom.renews = 2025-06-01"], {"b"}),
        (["custom.renews < 2025-06-01"], set()),
        (["custom.partner = true"], {"a"}),
        (["custom.partner = false"], {"b"}),
        (["custom.code = '123'"], {"d"}),  # undeclared, quoted → text
        (["custom.code = 123"], set()),  # undeclared, bare number → number column, no match
        (["lead_created_at = 2025-01-01"], {"a"}),
        (["lead_created_at > 2025-01-01"], {"c"}),
        (["lead_created_at <= 2025-01-01"], {"a", "b"}),
        (["lead_created_at >= 2025-01-01T05:00:00Z"], {"a", "c"}),
        (["country = US AND status = Active", "tag = beta"], {"a"}),
        ([], {"a", "b", "c", "d", "e"}),
    ],
)
def test_filters_select_the_right_customers(
    population: Engine, expressions: list[str], expected: set[str]
) -> None:
    assert _ids(population, *expressions) == expected


def test_bare_dates_are_local_days_in_the_account_zone(population: Engine) -> None:
    # In New York, 2024-12-31 23:30 UTC is still Dec 31 and 2025-01-01 05:00 UTC is Jan 1 at midnight.
    tz = ZoneInfo("America/New_York")
    assert _ids(population, "lead_created_at = 2024-12-31", tz=tz) == {"b"}
    assert _ids(population, "lead_created_at = 2025-01-01", tz=tz) == {"a", "c"}


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("country = USA", "ISO-3166 alpha-2"),
        ("status = Paying", "not a customer status"),
        ("lead_status = Active", "not a lead status"),
        ("custom.seats > many", "holds numbers"),
        ("custom.partner = maybe", "holds true/false"),
        ("tag > vip", "operator > does not apply"),
        ("source = Nowhere", "no data source named 'Nowhere'"),
        ("lead_created_at < yesterday", "is not a date"),
    ],
)
def test_compile_errors(population: Engine, expression: str, reason: str) -> None:
    with population.connect() as conn, pytest.raises(FilterError) as info:
        build_filter(conn, expression)
    assert reason in str(info.value)
