"""the metric count trigger functions run without JIT (PostgreSQL)

Their statements read transition tables without statistics, so the planner's guess of their size puts a
statement of a few thousand rows past jit_above_cost, and compiling it cost far more than running it
(storage/metric_counts.py). New databases get the setting from ``metric_counts.install``; this sets it on
the functions of existing ones. No row changes; SQLite has no JIT.

Revision ID: 0013_metric_counts_without_jit
Revises: 0012_metric_counts
"""

from __future__ import annotations

from alembic import op

from storage.metric_counts import PG_FUNCTIONS

revision = "0013_metric_counts_without_jit"
down_revision = "0012_metric_counts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    for function in PG_FUNCTIONS:
        conn.exec_driver_sql(f"ALTER FUNCTION {function}() SET jit = off")


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    for function in PG_FUNCTIONS:
        conn.exec_driver_sql(f"ALTER FUNCTION {function}() RESET jit")
