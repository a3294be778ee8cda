"""index source customers by (source, normalised email)

Revision ID: 0007_sc_email
Revises: 0006_seq_cache
Create Date: 2026-11-27 06:10:00

An import row without an external id is matched to its source's existing record by normalised email
(flows/imports.py). Without this index each batch of such rows read every record of the source: a file
of emails only took time growing with the square of its length.
"""
from __future__ import annotations

from alembic import op

revision = "0007_sc_email"
down_revision = "0006_seq_cache"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_source_customers_data_source_id_email_norm", "source_customers",
                    ["data_source_id", "email_norm"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_source_customers_data_source_id_email_norm", table_name="source_customers")
