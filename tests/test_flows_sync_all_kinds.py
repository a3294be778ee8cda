"""sync-all over a database holding a source of every kind: the kinds declared pulled are synced (each by its
connector, the sheet by the sheet import), the others are left alone by declaration, and nothing fails.

Each pulled connector reads its fake API served on 127.0.0.1 (``fakes/<kind>.py``), the sheet a local fake
Sheets API through real gspread.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from connectors.base import Feed
from connectors.files.sheets import open_client
from connectors.registry import is_connector_kind, kinds, kinds_fed
from fakes.base import fake_of
from fakes.google_sheets import SHEET_ID, FakeSheets, RedirectSession
from flows.sync import sync_all_flow
from storage.schema import data_sources, source_customers
from storage.sources import create_source

SHEET_ROWS = [["Customer ID", "Name", "Email"], ["S-1", "Ann", "ann@acme.io"], ["S-2", "Bob", "bob@beta.io"]]
PUSHED_ONLY_SETTINGS: dict[str, dict[str, Any]] = {"segment": {"shared_secret": "seg-secret"}}


def stored_by_source(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(data_sources.c.name, func.count(source_customers.c.id))
            .join(source_customers, source_customers.c.data_source_id == data_sources.c.id, isouter=True)
            .group_by(data_sources.c.name)
        ).all()
    return {name: count for name, count in rows}


def test_sync_all_syncs_the_pulled_kinds_and_leaves_the_others(
    db_engine: Engine, flow_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulled = kinds_fed(Feed.PULLED)
    expected: dict[str, int] = {}
    with ExitStack() as stack:
        sheets = FakeSheets().start()
        stack.callback(sheets.stop)
        sheets.set_rows(SHEET_ROWS)
        monkeypatch.setattr("connectors.files.sheets.open_client",
                            lambda credentials=None: open_client(session=RedirectSession(sheets.base_url)))
        with db_engine.begin() as conn:
            for kind in kinds():
                name = f"every-{kind}"
                if is_connector_kind(kind):
                    fake_class = fake_of(kind)
                    assert fake_class is not None, kind
                    fake = fake_class()
                    stack.enter_context(fake.served())
                    create_source(conn, name, kind, fake.settings())
                    expected[name] = len(fake.expected_ids())
                elif kind in pulled:  # the sheet, set up as `funnelsync import sheet` leaves it
                    create_source(conn, name, kind, {"spreadsheet_id": SHEET_ID, "worksheet": "Leads", "mapping": {}})
                    expected[name] = len(SHEET_ROWS) - 1
                else:
                    create_source(conn, name, kind, PUSHED_ONLY_SETTINGS.get(kind, {}))
            # A Google Play source without a bucket is fed by pushes alone: nothing to pull.
            create_source(conn, "push-google_play", "google_play", {"package_name": "com.acme.app"})
        state = sync_all_flow(merge_after=False, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["failed"] == []
    assert sorted(s["source"] for s in result["sources"]) == sorted(f"every-{kind}" for kind in pulled)
    assert all(s["status"] == "completed" for s in result["sources"])
    # Google Play's bucket is pulled; a Google Play source without one is left alone, as the push-only kinds.
    left_alone = {f"every-{kind}" for kind in kinds() if kind not in pulled} | {"push-google_play"}
    assert "every-google_play" in expected and "every-segment" in left_alone
    stored = stored_by_source(db_engine)
    assert {name: stored[name] for name in expected} == expected
    assert all(stored[name] == 0 for name in left_alone)
