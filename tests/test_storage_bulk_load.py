"""Large loads index after writing: the metric indexes are dropped, rebuilt, and never lost (both databases)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.schema import DropIndex

import storage.bulk_load as bulk_load
from flows.imports import import_csv
from storage.bulk_load import deferred_metric_indexes, missing_metric_indexes, restore_metric_indexes, should_defer
from storage.metrics import funnel_series
from storage.schema import METRIC_INDEXES, customers
from storage.sources import create_source

ROOT = str(Path(__file__).resolve().parents[1])
ALL = sorted(index.name for index in METRIC_INDEXES)  # type: ignore[type-var]


def _csv(tmp_path: Path, rows: int, name: str = "big.csv", domain: str = "example.com") -> Path:
    lines = ["Customer ID,Name,Email,Signup Date,Trial Start"]
    for i in range(rows):
        lines.append(f"c{i},Person {i},p{i}@{domain},2024-0{1 + i % 9}-1{i % 10},2024-0{1 + i % 9}-2{i % 8}")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_should_defer_only_loads_that_bring_mostly_new_rows(db_engine: Engine, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bulk_load, "BULK_MIN_ROWS", 10)
    with db_engine.begin() as conn:
        assert should_defer(conn, 10) is True  # empty table
        assert should_defer(conn, 9) is False  # under the floor
    import_csv(db_engine, _csv(tmp_path, 30), "leads", tz=timezone.utc)
    with db_engine.begin() as conn:
        source_id = create_source(conn, "other", "csv").id
        leads_id = conn.execute(text("SELECT id FROM data_sources WHERE name = 'leads'")).scalar_one()
        assert should_defer(conn, 30, leads_id) is False  # a re-import: all 30 are known to the source
        assert should_defer(conn, 45, leads_id) is False  # 15 new against 30 customers
        assert should_defer(conn, 29, source_id) is False  # fewer than the table holds
        assert should_defer(conn, 30, source_id) is True


def test_indexes_are_dropped_inside_and_rebuilt_after_even_on_failure(db_engine: Engine, monkeypatch) -> None:
    monkeypatch.setattr(bulk_load, "BULK_MIN_ROWS", 1)
    with deferred_metric_indexes(db_engine, 5) as deferred:
        assert deferred is True
        with db_engine.connect() as conn:
            assert sorted(missing_metric_indexes(conn)) == ALL
    with db_engine.connect() as conn:
        assert missing_metric_indexes(conn) == []
    with pytest.raises(RuntimeError), deferred_metric_indexes(db_engine, 5):
        raise RuntimeError("the import failed")
    with db_engine.connect() as conn:
        assert missing_metric_indexes(conn) == []


def test_restore_rebuilds_what_a_killed_import_left_out(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        conn.execute(DropIndex(METRIC_INDEXES[1]))
        assert missing_metric_indexes(conn) == [METRIC_INDEXES[1].name]
    assert restore_metric_indexes(db_engine) == [METRIC_INDEXES[1].name]
    assert restore_metric_indexes(db_engine) == []


def test_init_rebuilds_and_says_so(db_engine: Engine, db_url: str) -> None:
    with db_engine.begin() as conn:
        conn.execute(DropIndex(METRIC_INDEXES[0]))
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "PYTHONPATH": ROOT, "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "funnelsync", "init"], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "Rebuilt 1 metric index(es)" in result.stdout and METRIC_INDEXES[0].name in result.stdout
    with db_engine.connect() as conn:
        assert missing_metric_indexes(conn) == []


def test_a_deferred_import_lands_every_row_and_the_same_metrics(db_engine: Engine, monkeypatch, tmp_path: Path) -> None:
    """The same file imported with and without deferral gives the same customers and funnel."""
    monkeypatch.setattr(bulk_load, "BULK_MIN_ROWS", 50)
    path = _csv(tmp_path, 120)
    summary = import_csv(db_engine, path, "leads", tz=timezone.utc, batch_size=25)
    assert (summary.created, summary.rejected) == (120, 0)
    with db_engine.connect() as conn:
        assert missing_metric_indexes(conn) == []
        assert conn.execute(select(func.count()).select_from(customers)).scalar_one() == 120
        deferred = funnel_series(conn, date(2024, 1, 1), date(2024, 12, 31), "month", tz=ZoneInfo("UTC"))
    monkeypatch.setattr(bulk_load, "BULK_MIN_ROWS", 10**9)
    again = import_csv(db_engine, _csv(tmp_path, 120, "copy.csv", "example.org"), "leads-copy", tz=timezone.utc, batch_size=25)
    assert again.created == 120
    with db_engine.connect() as conn:
        both = funnel_series(conn, date(2024, 1, 1), date(2024, 12, 31), "month", tz=ZoneInfo("UTC"))
    for got, twice in zip(deferred, both):
        assert twice["leads"] == 2 * got["leads"] and twice["leads_with_trial"] == 2 * got["leads_with_trial"]
    assert sum(row["leads"] for row in deferred) == 120
