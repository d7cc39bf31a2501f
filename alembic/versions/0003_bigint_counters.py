"""64-bit ids and counters for the growing tables (PostgreSQL; SQLite's INTEGER is 64-bit).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = (
    ("outcomes", "id"),
    ("rewards", "id"),
    ("audit_log", "id"),
    ("model_snapshots", "examples_seen"),
    ("model_snapshots", "last_reward_id"),
    ("counters", "value"),
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger())
