"""A throwaway, migrated database for the bench scripts: a temporary SQLite file or a fresh PostgreSQL schema.

PostgreSQL comes from ``FUNNELSYNC_TEST_POSTGRES_URL`` (default: the local test server); the schema and
everything in it is dropped when the block ends, failed or not.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text

from storage.db import make_engine, upgrade

POSTGRES_URL = os.environ.get("FUNNELSYNC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextmanager
def bench_database(kind: str) -> Iterator[str]:
    """Yield the URL of an empty database of ``kind`` (sqlite or postgresql) at the newest schema."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="funnelsync-bench-") as folder:
            url = f"sqlite:///{folder}/bench.db"
            _migrate(url)
            yield url
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"  # our own hex: safe to quote into DDL
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in POSTGRES_URL else "?"
        url = f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
        _migrate(url)
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _migrate(url: str) -> None:
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
