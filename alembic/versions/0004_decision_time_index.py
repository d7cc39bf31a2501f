"""An index on (experiment, decision time): the reward join reads only recent decisions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_decisions_experiment_time", "decisions", ["experiment_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_decisions_experiment_time", table_name="decisions")
