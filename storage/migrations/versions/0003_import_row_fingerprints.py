"""import row fingerprints (sheet imports apply only changed rows)

Revision ID: 0003_row_fingerprints
Revises: 0001
Create Date: 2026-11-27 02:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_row_fingerprints"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "import_row_fingerprints",
        sa.Column("data_source_id", _ID, nullable=False),
        sa.Column("stream", sa.String(length=255), nullable=False),
        sa.Column("row_key", sa.String(length=400), nullable=False),
        sa.Column("fingerprint", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["data_source_id"], ["data_sources.id"],
            name=op.f("fk_import_row_fingerprints_data_source_id_data_sources"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("data_source_id", "stream", "row_key", name=op.f("pk_import_row_fingerprints")),
    )


def downgrade() -> None:
    op.drop_table("import_row_fingerprints")
