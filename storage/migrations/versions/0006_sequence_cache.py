"""PostgreSQL: id sequences of the bulk-written tables hand out blocks per session

Revision ID: 0006_seq_cache
Revises: 0005_locks_marks
Create Date: 2026-11-27 05:20:00

A first import draws two ids per record (customer and source customer) and COPY draws one per
subscription and contact. Uncached, every ``nextval`` takes the sequence's buffer lock and every 32nd
writes WAL, a large share of the server's time per new record. With a cache each
session takes a block at once. The cost is gaps in the internal ids when a session ends with part of a
block unused; public ids (uuid) are unaffected. SQLite has no sequences (storage/ids.py allocates there).
"""
from __future__ import annotations

from alembic import op

revision = "0006_seq_cache"
down_revision = "0005_locks_marks"
branch_labels = None
depends_on = None

TABLES = ("customers", "source_customers", "subscriptions", "contacts")
CACHE = 1000


def _set_cache(size: int) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        # Table names are the constants above; the sequence is looked up, not spelled out, so a
        # schema-qualified or renamed sequence is found too.
        op.execute(
            f"DO $$ BEGIN EXECUTE format('ALTER SEQUENCE %s CACHE {size}', "
            f"pg_get_serial_sequence('{table}', 'id')); END $$"
        )


def upgrade() -> None:
    _set_cache(CACHE)


def downgrade() -> None:
    _set_cache(1)
