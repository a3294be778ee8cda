"""metrics: funnel counts per UTC hour and country, kept by triggers on customers

The funnel series read these counts instead of scanning every customer (storage/metric_counts.py).
The upgrade creates the two tables and the triggers, then counts the existing customers once (in
SHARE mode on PostgreSQL, so no write slips between the recount and the triggers).

Revision ID: 0012_metric_counts
Revises: 0011_outbox_without_fk
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.types
from storage import metric_counts

revision = "0012_metric_counts"
down_revision = "0011_outbox_without_fk"
branch_labels = None
depends_on = None


def _columns() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("family", sa.Integer(), nullable=False),
        sa.Column("at", storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.Column("k", sa.BigInteger(), nullable=False),
        sa.Column("cycle_s", sa.BigInteger(), nullable=False),
        sa.Column("cycle_us", sa.BigInteger(), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "metric_counts", *_columns(), sa.PrimaryKeyConstraint("family", "at", "country", name="pk_metric_counts")
    )
    op.create_table("metric_count_deltas", *_columns())
    conn = op.get_bind()
    metric_counts.install(conn)
    metric_counts.rebuild(conn)


def downgrade() -> None:
    metric_counts.uninstall(op.get_bind())
    op.drop_table("metric_count_deltas")
    op.drop_table("metric_counts")
