"""``funnelsync demo`` as a new user runs it: a subprocess on the embedded SQLite default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from storage.db import make_engine
from storage.schema import customers, data_sources, merge_events

ROOT = Path(__file__).resolve().parent.parent


def test_demo_runs_the_flows_end_to_end_on_sqlite(prefect_harness: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "FUNNELSYNC_"))}
    env.update(
        FUNNELSYNC_HOME=str(tmp_path / "home"),  # no FUNNELSYNC_DATABASE_URL: the embedded SQLite file
        PREFECT_API_URL=prefect_harness,
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        COLUMNS="160",
    )
    for attempt in (1, 2):  # the second run must change nothing
        proc = subprocess.run([sys.executable, "-m", "funnelsync", "demo"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out = proc.stdout
        assert "Funnel by month" in out and "│ 2025-03 │" in out
        assert "Open the Prefect UI at" in out
        if attempt == 1:
            assert "60 created" in out and "40 created" in out and "16 created" in out
        else:
            assert "0 created" in out and "60 unchanged" in out
    engine = make_engine(f"sqlite:///{tmp_path / 'home' / 'funnelsync.db'}")
    with engine.connect() as conn:
        names = set(conn.execute(select(data_sources.c.name)).scalars())
        merges = conn.execute(select(func.count()).select_from(merge_events)).scalar_one()
        total = conn.execute(select(func.count()).select_from(customers)).scalar_one()
        settings = conn.execute(
            select(data_sources.c.settings).where(data_sources.c.name == "stripe-demo")
        ).scalar_one()
    engine.dispose()
    assert names == {"Website leads", "stripe-demo", "chargebee-demo"}
    assert merges > 0 and total == 116 - merges
    assert settings["api_key"] == "env:FUNNELSYNC_DEMO_STRIPE_KEY"  # only the reference is stored
