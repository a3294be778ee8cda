"""The metrics CLI (JSON shape, table, errors) and the /v1/metrics API agree with storage.metrics."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from storage.api_keys import create_api_key
from storage.metrics import funnel_series, trial_cohorts
from tests.metrics_support import customer_row, insert_customers

ROOT = Path(__file__).resolve().parents[1]


def _populate(engine: Engine) -> None:
    with engine.begin() as conn:
        insert_customers(
            conn,
            [
                customer_row(
                    country="US",
                    lead_created_at=datetime(2025, 1, 3, tzinfo=UTC),
                    free_trial_started_at=datetime(2025, 1, 5, tzinfo=UTC),
                    subscriber_since=datetime(2025, 2, 10, 12, tzinfo=UTC),
                ),
                customer_row(
                    country="DE",
                    lead_created_at=datetime(2025, 1, 4, tzinfo=UTC),
                    free_trial_started_at=datetime(2025, 1, 6, tzinfo=UTC),
                ),
                customer_row(
                    country="DE",
                    lead_created_at=datetime(2025, 1, 9, tzinfo=UTC),
                    free_trial_started_at=datetime(2025, 1, 10, tzinfo=UTC),
                ),
                customer_row(
                    country="DE",
                    lead_created_at=datetime(2025, 1, 11, tzinfo=UTC),
                    free_trial_started_at=datetime(2025, 1, 12, tzinfo=UTC),
                ),
                customer_row(lead_created_at=datetime(2025, 3, 1, tzinfo=UTC)),
            ],
        )


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "FUNNELSYNC_TIMEZONE": "UTC", "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "-m", "funnelsync", *args],
        cwd=ROOT,
        env=env,
        capture_output=True, check=False,
        text=True,
        timeout=120,
    )


def test_cli_json_is_exactly_the_spec_shape(db_engine: Engine, db_url: str) -> None:
    _populate(db_engine)
    done = _cli(
        db_url, "metrics", "--start", "2025-01-01", "--end", "2025-03-31", "--interval", "month", "--json"
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert list(data) == ["interval", "start", "end", "series"]
    assert (data["interval"], data["start"], data["end"]) == ("month", "2025-01-01", "2025-03-31")
    jan, feb, mar = data["series"]
    assert jan == {
        "period": "2025-01-01",
        "leads": 4,
        "leads_with_trial": 4,
        "non_trial_leads": 0,
        "free_trials": 4,
        "trials_converted": 1,
        "trial_to_paid_rate": 0.25,
        "new_subscribers": 0,
        "avg_sales_cycle_days": None,
        "sales_cycle_n": 0,
    }
    assert feb["avg_sales_cycle_days"] == 38.5 and feb["sales_cycle_n"] == 1 and feb["new_subscribers"] == 1
    assert mar["leads"] == 1 and mar["non_trial_leads"] == 1
    with db_engine.connect() as conn:
        assert data["series"] == funnel_series(conn, date(2025, 1, 1), date(2025, 3, 31), "month")


def test_cli_filters_within_days_table_and_cohorts(db_engine: Engine, db_url: str) -> None:
    _populate(db_engine)
    done = _cli(
        db_url, "metrics", "--start", "2025-01-01", "--end", "2025-01-31", "--where", "country = DE", "--json"
    )
    assert json.loads(done.stdout)["series"][0]["leads"] == 3
    done = _cli(
        db_url, "metrics", "--start", "2025-01-01", "--end", "2025-01-31", "--within-days", "7", "--json"
    )
    assert json.loads(done.stdout)["series"][0]["trials_converted"] == 0
    table = _cli(db_url, "metrics", "--start", "2025-01-01", "--end", "2025-03-31")
    assert table.returncode == 0, table.stderr
    assert "2025-02-01" in table.stdout and "25.0%" in table.stdout and "Leads" in table.stdout
    assert any(ch in table.stdout for ch in "▁█")  # the sparklines
    cohorts = _cli(db_url, "metrics", "cohorts", "--start", "2025-01-01", "--end", "2025-02-28", "--json")
    assert cohorts.returncode == 0, cohorts.stderr
    data = json.loads(cohorts.stdout)
    assert data["windows"] == [7, 14, 30, 60, 90]
    assert data["cohorts"][0]["size"] == 4 and data["cohorts"][0]["share_within"]["60"] == 0.25
    assert data["cohorts"][1]["rate"] is None


def test_cli_errors_are_one_line(db_engine: Engine, db_url: str) -> None:
    bad_filter = _cli(
        db_url, "metrics", "--start", "2025-01-01", "--end", "2025-01-31", "--where", "colour = red"
    )
    assert bad_filter.returncode == 2 and bad_filter.stdout == ""
    assert "unknown field 'colour'" in bad_filter.stderr and len(bad_filter.stderr.strip().splitlines()) == 1
    bad_date = _cli(db_url, "metrics", "--start", "2025-13-01", "--json")
    assert bad_date.returncode == 2 and "expected a date as YYYY-MM-DD" in bad_date.stderr
    bad_interval = _cli(db_url, "metrics", "cohorts", "--start", "2025-01-01", "--interval", "fortnight")
    assert bad_interval.returncode == 2 and "fortnight" in bad_interval.stderr


def _basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def test_api_returns_the_same_numbers(db_engine: Engine) -> None:
    _populate(db_engine)
    with db_engine.begin() as conn:
        key = create_api_key(conn, "metrics")
    client = TestClient(create_app(db_engine))
    params = {"start-date": "2025-01-01", "end-date": "2025-03-31", "interval": "month"}
    assert client.get("/v1/metrics/funnel", params=params).status_code == 401
    answer = client.get("/v1/metrics/funnel", params=params, headers=_basic(key))
    assert answer.status_code == 200, answer.text
    with db_engine.connect() as conn:
        assert answer.json() == {
            "interval": "month",
            "start": "2025-01-01",
            "end": "2025-03-31",
            "series": funnel_series(conn, date(2025, 1, 1), date(2025, 3, 31), "month"),
        }
        filtered = client.get(
            "/v1/metrics/funnel",
            headers=_basic(key),
            params={**params, "within-days": 60, "where": ["country = US"]},
        ).json()
        assert filtered["series"] == funnel_series(
            conn, date(2025, 1, 1), date(2025, 3, 31), "month", 60, ["country = US"]
        )
        cohorts = client.get("/v1/metrics/trial-cohorts", params=params, headers=_basic(key)).json()
        assert cohorts["cohorts"] == trial_cohorts(conn, date(2025, 1, 1), date(2025, 3, 31), "month")
    bad = client.get("/v1/metrics/funnel", headers=_basic(key), params={**params, "where": "colour = red"})
    assert bad.status_code == 400 and "unknown field 'colour'" in bad.json()["message"]
    assert bad.json()["errors"][0]["field"] == "where"
    bad = client.get("/v1/metrics/funnel", headers=_basic(key), params={**params, "interval": "decade"})
    assert bad.status_code == 400
    bad = client.get("/v1/metrics/funnel", headers=_basic(key), params={"start-date": "2025-01-01"})
    assert bad.status_code == 422
