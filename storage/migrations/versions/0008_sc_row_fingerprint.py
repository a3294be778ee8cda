"""source customers remember the file row they were last written from

Revision ID: 0008_sc_row_fp
Revises: 0007_sc_email
Create Date: 2026-11-27 11:00:00

A CSV re-import reads the row fingerprint (a digest of the row's raw values and of everything that
decides how they are read: headers, mapping, date orders, time zone) of each key it meets and skips the
rows whose fingerprint is the stored one without parsing them (flows/imports.py). Any other write of the
source customer (a sync, a push, an import of a changed row) sets it again, to null when the record did
not come from a file row. Nullable, no default: adding it rewrites no row.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_sc_row_fp"
down_revision = "0007_sc_email"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("source_customers") as batch:
        batch.add_column(sa.Column("row_fingerprint", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("source_customers") as batch:
        batch.drop_column("row_fingerprint")
