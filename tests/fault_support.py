"""What the fault tests share: fresh databases of each kind, the CLI in its own process, whole-database snapshots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text

from storage.db import make_engine, upgrade
from storage.schema import metadata

ROOT = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get(
    "FUNNELSYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

# Tables whose content a run leaves behind; the job log is left out (a killed run is recorded there as
# interrupted, a clean run is not), as are the locks (empty once every run has ended).
SNAPSHOT_TABLES = ("data_sources", "customers", "source_customers", "subscriptions", "contacts", "sync_state",
                   "lifecycle_marks", "customer_tags", "customer_attributes", "automation_marks",
                   "automation_occurrences", "automation_deliveries", "import_row_fingerprints")
# Generated ids and clocks differ between two runs of the same data; everything else must not.
_VOLATILE = {"id", "uuid", "created_at", "updated_at", "linked_at", "last_success_at", "last_run_counts",
             "detected_at", "next_attempt_at", "delivered_at"}


@contextmanager
def fresh_database(kind: str, tmp_path: Path, label: str) -> Iterator[tuple[Engine, str]]:
    """A migrated, empty database of ``kind`` and its URL (a SQLite file, or a PostgreSQL schema dropped after)."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / f'{label}.db'}"
        engine = make_engine(url)
        upgrade(engine)
        try:
            yield engine, url
        finally:
            engine.dispose()
        return
    schema = f"f_{uuid.uuid4().hex[:16]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    url = f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        yield engine, url
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def cli_env(db_url: str, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "FUNNELSYNC_DATABASE_URL": db_url, "FUNNELSYNC_HOME": str(home), "PYTHONPATH": str(ROOT),
            **(extra or {})}


def cli(db_url: str, home: Path, *args: str, extra: dict[str, str] | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "funnelsync", *args], capture_output=True, text=True,
                          env=cli_env(db_url, home, extra), cwd=ROOT, timeout=timeout)


def start_cli(db_url: str, home: Path, *args: str, extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The CLI in its own process group (an import parses in a child process: a kill takes both)."""
    return subprocess.Popen([sys.executable, "-m", "funnelsync", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(db_url, home, extra), cwd=ROOT,
                            start_new_session=True)


# Cursors that are the clock of the run that saved them (Stripe's events ``since``): a later run saves a
# later one, so only their presence is compared.
_CLOCK_CURSOR_KEYS = {"since", "watermark"}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        value = {k: "<clock>" if k in _CLOCK_CURSOR_KEYS else v for k, v in value.items()}
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return None if value is None else str(value)


def snapshot(engine: Engine) -> dict[str, Counter[tuple[Any, ...]]]:
    """Every table's rows as a multiset, without generated ids, foreign ids and clocks.

    A multiset, not a set: a record stored twice shows as a count of two, which no clean run has.
    """
    out: dict[str, Counter[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for name in SNAPSHOT_TABLES:
            table = metadata.tables[name]
            cols = [c for c in table.columns if c.name not in _VOLATILE and not c.name.endswith("_id")]
            rows = conn.execute(select(*cols)).all()
            out[name] = Counter(tuple(_plain(v) for v in row) for row in rows)
    return out


def differences(clean: dict[str, Counter[tuple[Any, ...]]], other: dict[str, Counter[tuple[Any, ...]]]) -> str:
    """A short account of what differs (empty when nothing does)."""
    lines = []
    for name in clean:
        if clean[name] != other[name]:
            missing, extra = clean[name] - other[name], other[name] - clean[name]
            lines.append(f"{name}: {sum(clean[name].values())} vs {sum(other[name].values())} rows; "
                         f"missing {list(missing.items())[:2]}; extra {list(extra.items())[:2]}")
    return "\n".join(lines)
