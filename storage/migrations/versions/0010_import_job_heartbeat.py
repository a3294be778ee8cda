"""import jobs say which process runs them and when it last committed a batch

Revision ID: 0010_import_heartbeat
Revises: 0009_automations
Create Date: 2026-12-02 05:00:00

A process killed outright (SIGKILL, a lost machine) cannot mark its job failed: the row stayed
"running" forever. The job now records its process id and host when it starts, and a heartbeat with
every committed batch, so a job whose process is gone (same host) or whose heartbeat is stale (any
host) is shown as interrupted, and the next import of the same file into the same source resumes it.
Nullable, no default: adding them rewrites no row (older jobs have no process to judge by).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import storage.types

revision = "0010_import_heartbeat"
down_revision = "0009_automations"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("import_jobs") as batch:
        batch.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", storage.types.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("import_jobs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("host")
        batch.drop_column("pid")
