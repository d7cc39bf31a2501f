"""Rate limits, sign-in throttling and consent erasure.

- `api_keys.rate_limit_per_second`: an app's request budget (null: the server's default).
- `rate_limit_windows`: requests granted per API key and one-second window, shared by every
  worker; workers claim budget from it in chunks.
- `sign_in_throttles`: failed sign-ins per username (known or not), and the lock they caused.
- `decisions.context_erased_at`: when a consent withdrawal erased the decision's context; such
  a decision keeps its probabilities and outcome for reports but is never learned from.
- `consent_withdrawals`: one row per withdrawal (pseudonymous key, time, rows erased).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time(name: str, *, nullable: bool = False) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("rate_limit_per_second", sa.Integer(), nullable=True))
    op.create_table(
        "rate_limit_windows",
        sa.Column("api_key_id", sa.Integer(), sa.ForeignKey("api_keys.id"), primary_key=True),
        sa.Column("window_start", _BIG, primary_key=True, autoincrement=False),
        sa.Column("granted", sa.Integer(), nullable=False),
    )
    op.create_table(
        "sign_in_throttles",
        sa.Column("username", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        _time("window_started_at"),
        _time("locked_until", nullable=True),
    )
    op.add_column("decisions", _time("context_erased_at", nullable=True))
    op.create_table(
        "consent_withdrawals",
        sa.Column("id", _BIG, primary_key=True),
        sa.Column("customer_key", sa.String(64), nullable=False),
        sa.Column("api_key_id", sa.Integer(), sa.ForeignKey("api_keys.id"), nullable=True),
        _time("withdrawn_at"),
        sa.Column("decisions_erased", sa.Integer(), nullable=False),
    )
    op.create_index("ix_consent_withdrawals_customer_key", "consent_withdrawals", ["customer_key"])


def downgrade() -> None:
    op.drop_index("ix_consent_withdrawals_customer_key", table_name="consent_withdrawals")
    op.drop_table("consent_withdrawals")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("context_erased_at")
    op.drop_table("sign_in_throttles")
    op.drop_table("rate_limit_windows")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("rate_limit_per_second")
