"""index source customers by (normalised email, source)

Revision ID: 0007_sc_email
Revises: 0006_seq_cache
Create Date: 2026-11-27 06:10:00

An import row without an external id is matched to its source's existing record by normalised email
(flows/imports.py). Without this index each batch of such rows read every record of the source: a file
of emails only took time growing with the square of its length. The email leads: with the source first,
PostgreSQL took this index for the batch lookup by (source, external id) on a young table and read the
whole source per key.
"""
from __future__ import annotations

from alembic import op

revision = "0007_sc_email"
down_revision = "0006_seq_cache"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_source_customers_email_norm_data_source_id", "source_customers",
                    ["email_norm", "data_source_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_source_customers_email_norm_data_source_id", table_name="source_customers")
