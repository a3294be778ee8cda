"""the outbox's deliveries keep no foreign key to their occurrences

Revision ID: 0011_outbox_without_fk
Revises: 0010_import_heartbeat
Create Date: 2026-12-02 10:00:00

A delivery is written only with its occurrence, in the same statement (storage/outbox.py), and
occurrences are never deleted, so the key guarded nothing; its check, once per delivery, was most of
the cost of enqueueing the occurrences of a large import. No row changes.
"""
from __future__ import annotations

from alembic import op

revision = "0011_outbox_without_fk"
down_revision = "0010_import_heartbeat"
branch_labels = None
depends_on = None

_FK = "fk_automation_deliveries_occurrence_id_automation_occurrences"


def upgrade() -> None:
    with op.batch_alter_table("automation_deliveries") as batch:
        batch.drop_constraint(_FK, type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("automation_deliveries") as batch:
        batch.create_foreign_key(_FK, "automation_occurrences", ["occurrence_id"], ["id"], ondelete="CASCADE")
