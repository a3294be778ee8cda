"""A first import into an empty source takes the fast paths and leaves exactly what a mixed load leaves.

The fast paths of a first load (``jobs.imports``): the file is parsed in a reader process (where one can
be forked); the source is empty, so nothing is looked up (``storage.upsert.fresh_load``); a load that
brings as many new rows as the customer table holds drops the indexes it never reads and the metric
counts' triggers, and rebuilds and recounts them once at the end (``storage.bulk_load``). The mixed load
brings two thirds of the rows the general way: the file comes in two imports, the second into a source
that already holds the first third, below the deferral threshold and parsed in place, so its rows are
looked up, the known ones skipped unchanged and the new ones written batch by batch, joined by email to
the customers already stored, with the triggers counting as they go.

Both end with the same rows, value for value as the driver returns them (SQLite's epoch integers and
JSON text included): customers, source customers, subscriptions, lifecycle marks, tags, attributes and
the daily metric counts. Only what names a row or stamps the moment it was written (ids, public ids,
created, updated and link times) may differ. Rows share an email across batches and across the two
imports, so the join by email is part of both.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, inspect

import jobs.imports as imports
import storage.bulk_load as deferral
from jobs.imports import import_csv
from jobs.merging import merge_duplicates
from storage.lifecycle import collect_lifecycle_changes
from storage.sql import fetch_all
from tests.conftest import migrated_database

ROWS = 240
KNOWN = 80  # rows the mixed load's first import brings
BATCH = 25
HEADER = ["Customer ID", "Full Name", "E-mail", "Company", "Country", "Signup Date", "Trial Start",
          "Subscriber Since", "Plan", "Seats", "Tags"]


def _rows(seed: int = 20) -> list[list[str]]:
    rnd = random.Random(seed)
    t0 = datetime(2024, 1, 1, 9, 30)
    rows: list[list[str]] = []
    for i in range(ROWS):
        signup = t0 + timedelta(days=rnd.randrange(400), minutes=rnd.randrange(1440))
        trial = signup + timedelta(days=rnd.randrange(10)) if rnd.random() < 0.6 else None
        paid = trial + timedelta(days=14) if trial and rnd.random() < 0.4 else None
        if i % 9 == 4 and i > 20:  # the same person again, the email in another case (joins by email)
            email = rows[i - 17][2].upper()
        else:
            email = f"person{i}@example{i % 13}.com" if rnd.random() < 0.95 else ""
        rows.append([
            f"LEAD-{1000 + i}", f"Person {i}", email, f"Company {i % 31}" if rnd.random() < 0.8 else "",
            rnd.choice(["US", "GB", "DE", "FR", ""]), signup.strftime("%Y-%m-%d %H:%M"),
            trial.strftime("%Y-%m-%d %H:%M") if trial else "", paid.strftime("%Y-%m-%d") if paid else "",
            rnd.choice(["starter", "growth", ""]), str(rnd.randrange(1, 50)) if rnd.random() < 0.5 else "",
            ",".join(rnd.sample(["ads", "referral", "webinar", "partner"], rnd.randrange(3))),
        ])
    return rows


def _write(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


@pytest.fixture
def twin(db_engine: Engine, tmp_path: Path) -> Iterator[Engine]:
    """A second migrated, empty database of the same kind as ``db_engine``."""
    with migrated_database(db_engine.dialect.name, tmp_path, "twin") as engine:
        yield engine


def _columns(conn: Any, table: str, leave_out: set[str]) -> list[str]:
    return [c["name"] for c in inspect(conn).get_columns(table) if c["name"] not in leave_out]


def _state(engine: Engine) -> dict[str, Any]:
    """Every stored row the import leaves, keyed by what names it in the file (external ids)."""
    with engine.connect() as conn:
        keys: dict[int, tuple[str, ...]] = {}
        for customer_id, ids in fetch_all(conn, "SELECT customer_id, external_id FROM source_customers "
                                          "ORDER BY customer_id, external_id", ()):
            keys[customer_id] = (*keys.get(customer_id, ()), ids)

        def keyed(table: str, key_column: str, leave_out: set[str]) -> dict[tuple[str, ...], list[Any]]:
            names = _columns(conn, table, leave_out | {key_column})
            rows: dict[tuple[str, ...], list[Any]] = {}
            for row in fetch_all(conn, f"SELECT {key_column}, {', '.join(names)} FROM {table}", ()):  # noqa: S608 # nosec B608 # our names
                rows.setdefault(keys[row[0]], []).append(dict(zip(names, row[1:], strict=True)))
            for values in rows.values():
                values.sort(key=repr)
            return rows

        sc_names = _columns(conn, "source_customers",
                            {"id", "data_source_id", "customer_id", "linked_at", "created_at", "updated_at"})
        sources = {row[0]: dict(zip(sc_names, row[1:], strict=True)) for row in fetch_all(
            conn, f"SELECT external_id, {', '.join(sc_names)} FROM source_customers", ())}  # noqa: S608 # nosec B608 # our names
        sub_names = _columns(conn, "subscriptions", {"id", "source_customer_id", "updated_at"})
        subs = sorted(fetch_all(conn, f"SELECT sc.external_id, {', '.join('s.' + n for n in sub_names)} "  # noqa: S608 # nosec B608 # our names
                                "FROM subscriptions AS s JOIN source_customers AS sc ON sc.id = s.source_customer_id",
                                ()), key=repr)
        counts = sorted(fetch_all(conn, "SELECT * FROM metric_counts", ()), key=repr)
        return {
            "customers": keyed("customers", "id", {"uuid", "created_at", "updated_at"}),
            "source_customers": sources,
            "subscriptions": [tuple(row) for row in subs],
            "lifecycle_marks": keyed("lifecycle_marks", "customer_id", {"updated_at"}),
            "customer_tags": keyed("customer_tags", "customer_id", set()),
            "customer_attributes": keyed("customer_attributes", "customer_id", set()),
            "metric_counts": [tuple(row) for row in counts],
        }


def test_a_first_load_and_a_mixed_load_leave_the_same_rows(db_engine: Engine, twin: Engine, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _rows()
    whole = _write(tmp_path / "leads.csv", rows)
    tz = timezone.utc
    deferred: list[bool] = []
    real_enter = deferral.BulkLoad.__enter__

    def watching(self: deferral.BulkLoad) -> deferral.BulkLoad:
        entered = real_enter(self)
        deferred.append(self.deferred)
        return entered

    monkeypatch.setattr(deferral.BulkLoad, "__enter__", watching)

    def load(engine: Engine, path: Path) -> Any:
        return import_csv(engine, path, "leads", tz=tz, batch_size=BATCH)

    def mark_and_merge(engine: Engine) -> None:
        # What an import's door runs after it (jobs.runs.run_import), over every customer: the marks are
        # history (a step marked by an earlier import keeps the date it was marked with, even when a later
        # record moves it earlier), so both loads are marked once, at their end.
        with engine.begin() as conn:
            collect_lifecycle_changes(conn, updated_since=datetime(2000, 1, 1, tzinfo=timezone.utc))
        merge_duplicates(engine, None, False, actor="test", keep=0)

    # The first load: everything at once into an empty source, deferral on from 50 rows.
    monkeypatch.setattr(deferral, "BULK_MIN_ROWS", 50)
    monkeypatch.setattr(imports, "CHILD_READER_MIN_ROWS", 100)
    first = load(db_engine, whole)
    mark_and_merge(db_engine)
    # The mixed load: a third first, then the whole file into a source that holds that third (never deferred).
    monkeypatch.setattr(deferral, "BULK_MIN_ROWS", 10**9)
    monkeypatch.setattr(imports, "CHILD_READER_MIN_ROWS", 10**9)
    part = load(twin, _write(tmp_path / "part.csv", rows[:KNOWN]))
    mixed = load(twin, whole)
    mark_and_merge(twin)

    assert deferred == [True, False, False]
    assert (first.created, first.unchanged, first.rejected) == (ROWS, 0, 0)
    assert (part.created, mixed.created, mixed.unchanged, mixed.rejected) == (KNOWN, ROWS - KNOWN, KNOWN, 0)
    fast, slow = _state(db_engine), _state(twin)
    assert len(fast["source_customers"]) == ROWS
    joined = [key for key in fast["customers"] if len(key) > 1]
    assert joined and len(fast["customers"]) == ROWS - sum(len(key) - 1 for key in joined)
    assert fast["lifecycle_marks"] and fast["metric_counts"] and fast["customer_tags"]
    for table in fast:
        assert fast[table] == slow[table], table
