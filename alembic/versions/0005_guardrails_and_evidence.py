"""Guardrail trips on experiments and promotion evidence on model snapshots.

`experiments.guardrail_trip` is null while every guardrail holds; once one trips it holds what
tripped, when and the evidence, and the bandit group is served the baseline arm until an
operator clears it. `model_snapshots.evidence` holds the off-policy comparison that promoted a
candidate model (null for snapshots the online learner published).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("experiments") as batch:
        batch.add_column(sa.Column("guardrail_trip", sa.JSON(), nullable=True))
    with op.batch_alter_table("model_snapshots") as batch:
        batch.add_column(sa.Column("evidence", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_snapshots") as batch:
        batch.drop_column("evidence")
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("guardrail_trip")
