"""automated workflows: rules, detection marks, occurrences and their deliveries

Revision ID: 0009_automations
Revises: 0008_sc_row_fp
Create Date: 2026-12-02 04:30:00

Four new tables, nothing existing changes (automations/, storage/outbox.py).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.types import UTCDateTime

revision = "0009_automations"
down_revision = "0008_sc_row_fp"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "automation_rules",
        sa.Column("id", _ID, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("trigger", sa.String(40), nullable=False),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("applied_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_automation_rules"),
        sa.UniqueConstraint("name", name="uq_automation_rules_name"),
    )
    op.create_table(
        "automation_marks",
        sa.Column("customer_id", _ID, nullable=False),
        sa.Column("lead_created_at", UTCDateTime(timezone=True)),
        sa.Column("free_trial_started_at", UTCDateTime(timezone=True)),
        sa.Column("subscriber_since", UTCDateTime(timezone=True)),
        sa.Column("status", sa.String(40)),
        sa.Column("status_seq", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_automation_marks"),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], ondelete="CASCADE",
                                name="fk_automation_marks_customer_id_customers"),
    )
    op.create_table(
        "automation_occurrences",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("rule_name", sa.String(100), nullable=False),
        sa.Column("trigger", sa.String(40), nullable=False),
        sa.Column("customer_uuid", sa.String(40), nullable=False),
        sa.Column("discriminator", sa.String(200), nullable=False),
        sa.Column("occurred_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("detected_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_automation_occurrences"),
    )
    op.create_index("ix_automation_occurrences_rule_name", "automation_occurrences", ["rule_name"])
    op.create_index("ix_automation_occurrences_customer_uuid", "automation_occurrences", ["customer_uuid"])
    op.create_table(
        "automation_deliveries",
        sa.Column("occurrence_id", sa.String(40), nullable=False),
        sa.Column("action_index", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_at", UTCDateTime(timezone=True)),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("occurrence_id", "action_index", name="pk_automation_deliveries"),
        sa.ForeignKeyConstraint(["occurrence_id"], ["automation_occurrences.id"], ondelete="CASCADE",
                                name="fk_automation_deliveries_occurrence_id_automation_occurrences"),
    )
    op.create_index("ix_automation_deliveries_status_next_attempt_at", "automation_deliveries",
                    ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("automation_deliveries")
    op.drop_table("automation_occurrences")
    op.drop_table("automation_marks")
    op.drop_table("automation_rules")
