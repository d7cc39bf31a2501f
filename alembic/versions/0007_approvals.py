"""Approval of experiment configurations.

`experiments.approved_version` is the newest configuration version an approver approved:
only that version may run. `change_requests` holds configurations proposed for running or
paused experiments; approving one applies it as the next version. Experiments that were
running or paused before approvals existed keep serving: their current version counts as
approved.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _time(name: str, *, nullable: bool = False) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("experiments", sa.Column("approved_version", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE experiments SET approved_version = version WHERE status IN ('running', 'paused')"
    )
    op.create_table(
        "change_requests",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("experiment_id", sa.Integer(), sa.ForeignKey("experiments.id"), nullable=False),
        sa.Column("base_version", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("proposed_by", sa.String(120), nullable=False),
        _time("proposed_at"),
        sa.Column("comment", sa.String(2000), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.String(120), nullable=True),
        _time("decided_at", nullable=True),
        sa.Column("decision_comment", sa.String(2000), nullable=True),
        sa.Column("applied_version", sa.Integer(), nullable=True),
    )
    op.create_index("ix_change_requests_experiment_id", "change_requests", ["experiment_id"])
    op.create_index("ix_change_requests_status", "change_requests", ["status"])


def downgrade() -> None:
    op.drop_index("ix_change_requests_status", table_name="change_requests")
    op.drop_index("ix_change_requests_experiment_id", table_name="change_requests")
    op.drop_table("change_requests")
    with op.batch_alter_table("experiments") as batch:
        batch.drop_column("approved_version")
