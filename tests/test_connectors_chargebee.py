"""Chargebee v2 list semantics: strict ``updated_at[after]``, ``include_deleted=true``.

Checked against chargebee-python ``chargebee/models/customer/operations.py`` (``ListParams``:
``include_deleted: NotRequired[bool]``, ``updated_at: Filters.TimestampFilter``) and the API reference's
timestamp filter (``after``: strictly greater than), as Airbyte's source-chargebee also reads them
(``include_deleted=true``, ``sort_by[asc]=updated_at``).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import respx
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from api.app import create_app
from fakes.chargebee import ChargebeeFake
from jobs.sync import sync_source
from storage.schema import customers, merge_events, source_customers
from storage.sources import create_source


@pytest.fixture
def router() -> Iterator[respx.Router]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


def synced(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        rows = conn.execute(select(source_customers.c.external_id, customers.c.email)
                            .join(customers, customers.c.id == source_customers.c.customer_id))
        return {r.external_id: r.email for r in rows}


def test_chargebee_change_in_the_watermark_second_is_read(router: respx.Router, db_engine: Engine) -> None:
    """``updated_at[after]`` is strict: a customer changed in the same second as the watermark, after the
    run that set it, is read by the next run (the incremental read starts a lookback earlier)."""
    fake = ChargebeeFake(n=5)
    fake.install(router)
    with db_engine.begin() as conn:
        create_source(conn, "cb", "chargebee", fake.settings())
    sync_source(db_engine, "cb", sleep_fn=lambda s: None)
    newest = max(fake.people, key=lambda p: p.updated)
    other = fake.people[0] if newest is not fake.people[0] else fake.people[1]
    other.email, other.updated = "changed@example.org", newest.updated  # the watermark's second
    again = sync_source(db_engine, "cb", sleep_fn=lambda s: None)
    assert synced(db_engine)[other.id] == "changed@example.org"
    customers_stream = next(s for s in again.streams if s.stream == "customers")
    # The overlap read again is de-duplicated by the upsert: only the changed customer is written.
    assert (customers_stream.created, customers_stream.updated) == (0, 1)


def test_chargebee_deleted_customer_is_listed_and_removed(router: respx.Router, db_engine: Engine) -> None:
    """With ``include_deleted=true`` a deleted customer comes back with ``deleted: true``; it is removed."""
    fake = ChargebeeFake(n=5)
    fake.install(router)
    with db_engine.begin() as conn:
        create_source(conn, "cb", "chargebee", fake.settings())
    sync_source(db_engine, "cb", sleep_fn=lambda s: None)
    gone = fake.people[2]
    fake.delete_customer(gone, max(p.updated for p in fake.people) + 100)
    summary = sync_source(db_engine, "cb", sleep_fn=lambda s: None)
    assert set(synced(db_engine)) == fake.expected_ids() and gone.id not in synced(db_engine)
    assert summary.totals["deleted"] == 1
    lists = [c.request for c in router.calls if c.request.url.path.endswith("/customers")]
    assert lists and all(r.url.params.get("include_deleted") == "true" for r in lists)
    with db_engine.connect() as conn:
        assert conn.execute(select(merge_events.c.kind)).scalars().all() == ["delete"]


def test_chargebee_customer_deleted_webhook_removes_the_source_customer(
    router: respx.Router, db_engine: Engine
) -> None:
    """A ``customer_deleted`` event (behind the webhook's HTTP Basic pair) removes the customer at once."""
    fake = ChargebeeFake(n=3)
    fake.install(router)
    settings = {**fake.settings(), "webhook_username": "cb", "webhook_password": "cb-pass"}
    with db_engine.begin() as conn:
        create_source(conn, "cb", "chargebee", settings)
    sync_source(db_engine, "cb", sleep_fn=lambda s: None)
    gone = fake.people[1]
    fake.delete_customer(gone, max(p.updated for p in fake.people) + 100)
    event = {"id": "ev_del", "occurred_at": gone.updated, "object": "event", "api_version": "v2",
             "event_type": "customer_deleted", "webhook_status": "scheduled",
             "content": {"customer": {**fake.customer(gone), "deleted": True}}}
    auth = {"Authorization": "Basic " + base64.b64encode(b"cb:cb-pass").decode()}
    response = TestClient(create_app(db_engine)).post("/webhooks/cb", json=event, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["deleted"] == 1 and gone.id not in synced(db_engine)
