"""metrics: composite date indexes for index-only funnel scans

Each metric family scans one date column over the requested periods and reads one more date of the
same row (leads: the trial date; trials: subscriber since; new subscribers: the lead date). With the
second date in the index the scan never visits the table. The composite indexes replace the three
single-column ones of 0001 (their leading column serves the same range lookups), so writes do not pay
for extra indexes.

Revision ID: 0004_metrics
Revises: 0003_row_fingerprints
"""

from __future__ import annotations

from alembic import op

revision = "0004_metrics"
down_revision = "0003_row_fingerprints"
branch_labels = None
depends_on = None

PAIRS = (
    ("lead_created_at", "free_trial_started_at"),
    ("free_trial_started_at", "subscriber_since"),
    ("subscriber_since", "lead_created_at"),
)


def upgrade() -> None:
    for first, second in PAIRS:
        op.create_index(f"ix_customers_{first}_{second}", "customers", [first, second], unique=False)
        op.drop_index(f"ix_customers_{first}", table_name="customers")


def downgrade() -> None:
    for first, second in PAIRS:
        op.create_index(f"ix_customers_{first}", "customers", [first], unique=False)
        op.drop_index(f"ix_customers_{first}_{second}", table_name="customers")
