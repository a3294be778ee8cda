"""UTCDateTime: exact round trips on both databases; naive datetimes refused."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import StatementError

from storage.schema import data_sources
from storage.types import from_epoch_us, to_epoch_us

VALUES = [
    datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
    datetime(1970, 1, 1, tzinfo=timezone.utc),
    datetime(2025, 3, 30, 1, 30, 0, 123456, tzinfo=timezone(timedelta(hours=-7))),
    datetime(2038, 1, 19, 3, 14, 8, tzinfo=timezone.utc),
]


@pytest.mark.parametrize("value", VALUES)
def test_epoch_round_trip(value):
    assert from_epoch_us(to_epoch_us(value)) == value


def test_database_round_trip_and_naive_refused(db_engine):
    with db_engine.begin() as conn:
        for i, value in enumerate(VALUES):
            conn.execute(data_sources.insert().values(uuid=f"ds_{i}", name=f"s{i}", kind="csv", settings={},
                                                      enabled=True, created_at=value))
        stored = conn.execute(select(data_sources.c.created_at).order_by(data_sources.c.id)).scalars().all()
    assert stored == VALUES
    assert all(v.utcoffset() == timedelta(0) for v in stored)
    with pytest.raises(StatementError, match="naive"):
        with db_engine.begin() as conn:
            conn.execute(data_sources.insert().values(uuid="ds_n", name="n", kind="csv", settings={}, enabled=True,
                                                      created_at=datetime(2025, 1, 1)))


def test_load_json_answers_empty_containers_with_fresh_objects_and_parses_the_rest() -> None:
    from storage.types import load_json

    first = load_json("[]")
    first.append("x")
    assert load_json("[]") == [] and load_json(b"[]") == []
    assert load_json("{}") == {} and load_json(b"{}") == {}
    assert load_json('{"plan": "pro", "seats": 3}') == {"plan": "pro", "seats": 3}
    assert load_json(b'["vip"]') == ["vip"] and load_json("42") == 42 and load_json('""') == ""


def test_tags_and_custom_round_trip_through_both_databases(db_engine) -> None:  # noqa: ANN001
    """The engines decode JSON columns with ``load_json`` (psycopg's loader on PostgreSQL)."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from funnelsync.records import SourceCustomerRecord
    from storage.schema import customers
    from storage.sources import create_source
    from storage.upsert import upsert_records

    with db_engine.begin() as conn:
        source = create_source(conn, "crm", "custom").id
        upsert_records(conn, source, [SourceCustomerRecord(external_id="a", email="a@a.io"),
                                      SourceCustomerRecord(external_id="b", email="b@b.io", tags=["vip"],
                                                           custom={"plan": "pro"})],
                       now=datetime(2026, 1, 1, tzinfo=UTC))
        rows = conn.execute(select(customers.c.email, customers.c.tags, customers.c.custom)
                            .order_by(customers.c.email)).all()
        raw = conn.exec_driver_sql("SELECT tags, custom FROM customers ORDER BY email").all()
    assert [tuple(r) for r in rows] == [("a@a.io", [], {}), ("b@b.io", ["vip"], {"plan": "pro"})]
    if db_engine.dialect.name == "postgresql":
        assert [tuple(r) for r in raw] == [([], {}), (["vip"], {"plan": "pro"})]
    rows[0].tags.append("changed")
    with db_engine.connect() as conn:
        assert conn.execute(select(customers.c.tags).order_by(customers.c.email)).scalars().first() == []
