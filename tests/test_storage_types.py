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
