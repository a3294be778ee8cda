"""PostgreSQL: the sync's connection terminated mid-batch (``pg_terminate_backend`` from the test, as an
administrator or a failover would): that batch rolls back whole, the run fails with the database's reason,
the batches before it stay with their cursor, and the rerun completes with every record once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import respx
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.exc import DBAPIError

from fakes.stripe import StripeFake
from jobs.sync import sync_source
from storage.db import make_engine
from storage.schema import source_customers, subscriptions
from storage.sources import create_source
from storage.sync_state import load_cursor
from tests.conftest import POSTGRES_URL


@pytest.fixture
def fake() -> Iterator[StripeFake]:
    api = StripeFake(n=25, page_size=10)
    with respx.mock(assert_all_called=False) as router:
        api.install(router)
        yield api


def _counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.execute(select(func.count()).select_from(source_customers)).scalar_one(),
                conn.execute(select(func.count()).select_from(subscriptions)).scalar_one())


@pytest.mark.parametrize("db_engine", ["postgresql"], indirect=True)
def test_connection_terminated_mid_batch_rolls_the_batch_back_and_the_rerun_completes(
    db_engine: Engine, fake: StripeFake
) -> None:
    with db_engine.begin() as conn:
        source_id = create_source(conn, "billing", "stripe", {**fake.settings(), "concurrency": 1}).id
    admin = make_engine(POSTGRES_URL)
    committed: list[Any] = []
    killed: list[int] = []

    def kill_in_second_batch(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        # The first batch has committed (progress reported it); kill the second in its first write.
        if committed and not killed and "source_customers" in statement and statement.lstrip()[:6] in (
                "INSERT", "UPDATE"):
            pid = cursor.connection.info.backend_pid
            with admin.begin() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            killed.append(pid)

    event.listen(db_engine, "before_cursor_execute", kill_in_second_batch)
    try:
        with pytest.raises(DBAPIError) as info:
            sync_source(db_engine, "billing", sleep_fn=lambda s: None, batch_size=10,
                        progress=lambda summary: committed.append(summary.created))
    finally:
        event.remove(db_engine, "before_cursor_execute", kill_in_second_batch)
        admin.dispose()
    assert killed and "terminat" in str(info.value.orig).lower()
    stored, subs = _counts(db_engine)
    assert stored == 10  # the first batch whole, nothing of the second
    with db_engine.connect() as conn:
        cursor = load_cursor(conn, source_id, "customers")
        sub_owners = conn.execute(select(func.count(func.distinct(subscriptions.c.source_customer_id)))).scalar_one()
    assert cursor is not None and cursor.get("page_token") and sub_owners <= 10

    rerun = sync_source(db_engine, "billing", sleep_fn=lambda s: None, batch_size=10)
    assert next(s for s in rerun.streams if s.stream == "customers").created == 15
    with db_engine.connect() as conn:
        ids = conn.execute(select(source_customers.c.external_id)).scalars().all()
    assert sorted(ids) == sorted(fake.expected_ids())  # every record once
