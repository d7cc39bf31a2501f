"""Learning loop: reward ledger, learner lease, snapshot cursor, apprentice state.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rewards",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("decision_id", sa.String(36), sa.ForeignKey("decisions.id"), nullable=False),
        sa.Column("experiment_id", sa.Integer(), sa.ForeignKey("experiments.id"), nullable=False),
        sa.Column("horizon", sa.String(63), nullable=False),
        sa.Column("reward", sa.Float(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("outcome_count", sa.Integer(), nullable=False),
        sa.Column("learnable", sa.Boolean(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("decision_id", "horizon"),
    )
    op.create_index("ix_rewards_learning", "rewards", ["experiment_id", "horizon", "id"])
    op.create_table(
        "learner_leases",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
    )
    with op.batch_alter_table("model_snapshots") as batch:
        batch.add_column(
            sa.Column("last_reward_id", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("note", sa.String(200), nullable=False, server_default=""))
        batch.add_column(sa.Column("match_rate", sa.Float(), nullable=True))
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("apprentice_state", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("apprentice_state")
    with op.batch_alter_table("model_snapshots") as batch:
        batch.drop_column("match_rate")
        batch.drop_column("note")
        batch.drop_column("last_reward_id")
    op.drop_table("learner_leases")
    op.drop_index("ix_rewards_learning", table_name="rewards")
    op.drop_table("rewards")
