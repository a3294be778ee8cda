"""``funnelsync demo`` as a new user runs it: a subprocess on the embedded SQLite default."""

from __future__ import annotations

import base64
import csv
import os
import re
import socket
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from flows.demo import SAMPLE_CSV, dated_sample
from storage.api_keys import verify_api_key
from storage.db import make_engine
from storage.schema import customers, data_sources, merge_events

ROOT = Path(__file__).resolve().parent.parent


def _months_back(today: date, n: int) -> str:
    index = today.year * 12 + today.month - 1 - n
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FUNNELSYNC_"))}
    env.update(
        FUNNELSYNC_HOME=str(tmp_path / "home"),  # no FUNNELSYNC_DATABASE_URL: the embedded SQLite file
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        COLUMNS="160",
        **extra,
    )
    return env


def test_the_bundled_leads_are_moved_into_the_last_twelve_months(tmp_path: Path) -> None:
    today = date(2026, 12, 2)
    with SAMPLE_CSV.open(encoding="utf-8-sig", newline="") as handle:
        before = list(csv.DictReader(handle))
    out = dated_sample(SAMPLE_CSV, tmp_path, today)
    with out.open(encoding="utf-8", newline="") as handle:
        after = list(csv.DictReader(handle))
    assert [r["Customer ID"] for r in after] == [r["Customer ID"] for r in before]
    signups = [datetime.strptime(r["Signup Date"], "%Y-%m-%d %H:%M").date() for r in after]
    assert max(signups) < today.replace(day=1) and min(signups) >= date(2025, 12, 1)
    assert max(s.strftime("%Y-%m") for s in signups) == "2026-11"
    # Whole months: each month keeps as many leads as the bundled file has in its month.
    assert sorted(Counter(r["Signup Date"][:7] for r in before).values()) == sorted(
        Counter(s.strftime("%Y-%m") for s in signups).values()
    )
    assert dated_sample(SAMPLE_CSV, tmp_path / "again", today).read_text() == out.read_text()


def test_demo_runs_the_flows_end_to_end_on_sqlite(prefect_harness: str, tmp_path: Path) -> None:
    env = _env(tmp_path, PREFECT_API_URL=prefect_harness)
    today = datetime.now(UTC).date()
    proc = subprocess.run([sys.executable, "-m", "funnelsync", "demo"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    # Dated relative to today: the last month before this one has figures, a year ago has none.
    assert "Funnel by month" in out and f"│ {_months_back(today, 1)} │" in out
    assert f"│ {_months_back(today, 13)} │" not in out
    assert "Open the Prefect UI at" in out
    assert "60 created" in out and "40 created" in out and "16 created" in out
    first_key = re.search(r"sign in with the API key (fsk_\S+)", out)
    assert first_key and "http://127.0.0.1:8000/dashboard" in out

    # Again, with --serve: nothing changes, and the API and the dashboard stay up afterwards.
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "funnelsync", "demo", "--serve", "--port", str(port)], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            if line.startswith("Dashboard:"):
                break
        again = "".join(lines)
        assert "0 created" in again and "60 unchanged" in again
        key = re.search(r"sign in with the API key (fsk_\S+?);", again).group(1)
        auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        for _ in range(100):
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert health.status_code == 200
        page = httpx.get(f"http://127.0.0.1:{port}/dashboard", headers={"Authorization": auth}, timeout=10)
        assert page.status_code == 200 and "<html" in page.text.lower()
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/customers", headers={"Authorization": auth}, timeout=10)
        assert listed.status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
    engine = make_engine(f"sqlite:///{tmp_path / 'home' / 'funnelsync.db'}")
    with engine.connect() as conn:
        names = set(conn.execute(select(data_sources.c.name)).scalars())
        merges = conn.execute(select(func.count()).select_from(merge_events)).scalar_one()
        total = conn.execute(select(func.count()).select_from(customers)).scalar_one()
        settings = conn.execute(
            select(data_sources.c.settings).where(data_sources.c.name == "stripe-demo")
        ).scalar_one()
        assert verify_api_key(conn, key)
        assert not verify_api_key(conn, first_key.group(1))  # the previous demo key was revoked
        latest = conn.execute(select(func.max(customers.c.lead_created_at))).scalar_one()
    engine.dispose()
    assert names == {"Website leads", "stripe-demo", "chargebee-demo"}
    assert merges > 0 and total == 116 - merges
    assert settings["api_key"] == "env:FUNNELSYNC_DEMO_STRIPE_KEY"  # only the reference is stored
    assert latest.date() <= today and latest.date() > today - timedelta(days=62)


@pytest.mark.slow
def test_demo_ui_starts_a_prefect_server_and_stops_it(tmp_path: Path) -> None:
    env = _env(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "funnelsync", "demo", "--ui"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ui = re.search(r"Prefect UI: (http://127\.0\.0\.1:(\d+))", proc.stdout)
    assert ui, proc.stdout
    assert f"Open the Prefect UI at {ui.group(1)}" in proc.stdout
    with pytest.raises(httpx.HTTPError):  # stopped on exit
        httpx.get(f"{ui.group(1)}/api/health", timeout=2)
