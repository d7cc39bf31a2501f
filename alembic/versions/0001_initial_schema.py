"""Initial schema: experiments, offers, decisions, outcomes, snapshots, audit, keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _time(name: str, *, nullable: bool = False) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(63), nullable=False, unique=True),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        _time("created_at"),
        _time("updated_at"),
    )
    op.create_table(
        "experiment_versions",
        sa.Column("experiment_id", sa.Integer(), sa.ForeignKey("experiments.id"), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("config", sa.JSON(), nullable=False),
        _time("created_at"),
        sa.Column("created_by", sa.String(120), nullable=False),
    )
    op.create_table(
        "offers",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("experiment_id", sa.Integer(), sa.ForeignKey("experiments.id"), nullable=False),
        sa.Column("key", sa.String(63), nullable=False),
        sa.Column("product", sa.String(63), nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("eligibility", sa.String(2000), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("variants", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("experiment_id", "key"),
    )
    op.create_index("ix_offers_experiment_id", "offers", ["experiment_id"])
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False, unique=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(120), nullable=False),
        _time("created_at"),
        _time("revoked_at", nullable=True),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("experiment_id", sa.Integer(), sa.ForeignKey("experiments.id"), nullable=False),
        sa.Column("experiment_version", sa.Integer(), nullable=False),
        sa.Column("api_key_id", sa.Integer(), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("customer_key", sa.String(64), nullable=False),
        sa.Column("surface", sa.String(63), nullable=False),
        sa.Column("group", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("eligible", sa.JSON(), nullable=False),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("chosen_offer", sa.String(63), nullable=True),
        sa.Column("chosen_variant", sa.String(63), nullable=True),
        sa.Column("propensity", sa.Float(), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=True),
        sa.Column("learnable", sa.Boolean(), nullable=False),
        sa.Column("explanation", sa.String(500), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        _time("requested_at", nullable=True),
        _time("created_at"),
        sa.UniqueConstraint("api_key_id", "request_id"),
    )
    op.create_index("ix_decisions_experiment_id", "decisions", ["experiment_id"])
    op.create_index(
        "ix_decisions_customer_time", "decisions", ["experiment_id", "customer_key", "created_at"]
    )
    op.create_table(
        "outcomes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("decision_id", sa.String(36), sa.ForeignKey("decisions.id"), nullable=False),
        sa.Column("api_key_id", sa.Integer(), sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("event", sa.String(63), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        _time("occurred_at"),
        _time("received_at"),
        sa.Column("idempotency_key", sa.String(128), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.UniqueConstraint("api_key_id", "idempotency_key"),
    )
    op.create_index("ix_outcomes_decision_id", "outcomes", ["decision_id"])
    op.create_table(
        "model_snapshots",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("experiment_id", sa.Integer(), sa.ForeignKey("experiments.id"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("arguments", sa.JSON(), nullable=False),
        sa.Column("checksum", sa.String(64), nullable=False),
        sa.Column("examples_seen", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        _time("created_at"),
        sa.UniqueConstraint("experiment_id", "version"),
    )
    op.create_index("ix_model_snapshots_experiment_id", "model_snapshots", ["experiment_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True),
        _time("at"),
        sa.Column("actor", sa.String(120), nullable=False),
        sa.Column("action", sa.String(63), nullable=False),
        sa.Column("experiment_id", sa.Integer(), sa.ForeignKey("experiments.id"), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_experiment_id", "audit_log", ["experiment_id"])
    op.create_table(
        "counters",
        sa.Column("name", sa.String(120), primary_key=True),
        sa.Column("value", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "counters",
        "audit_log",
        "model_snapshots",
        "outcomes",
        "decisions",
        "api_keys",
        "offers",
        "experiment_versions",
        "experiments",
    ):
        op.drop_table(table)
