"""source locks and lifecycle marks

Revision ID: 0005_locks_marks
Revises: 0004_metrics
Create Date: 2026-11-27 01:50:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.types

revision = "0005_locks_marks"
down_revision = "0004_metrics"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "source_locks",
        sa.Column("lock_key", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("acquired_at", storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("lock_key", name=op.f("pk_source_locks")),
    )
    op.create_table(
        "lifecycle_marks",
        sa.Column("customer_id", _ID, nullable=False),
        sa.Column("lead_created_at", storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("free_trial_started_at", storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("subscriber_since", storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customers.id"],
            name=op.f("fk_lifecycle_marks_customer_id_customers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("customer_id", name=op.f("pk_lifecycle_marks")),
    )


def downgrade() -> None:
    op.drop_table("lifecycle_marks")
    op.drop_table("source_locks")
