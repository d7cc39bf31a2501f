"""SQLModel tables. The schema is created only by the Alembic migrations in `alembic/`.

A test compares these tables with the migrated schema, so the two cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; attach a timezone")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _json() -> Any:
    return sa.Column(sa.JSON, nullable=False)


#: A 64-bit integer on PostgreSQL; SQLite's INTEGER is already 64-bit, and only a column
#: declared exactly INTEGER PRIMARY KEY is its auto-incrementing row id.
BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _big_id() -> Any:
    return sa.Column(BigInt, primary_key=True)


def _big(*, nullable: bool) -> Any:
    return sa.Column(BigInt, nullable=nullable)


def _time(*, index: bool = False) -> Any:
    return sa.Column(UTCDateTime(), nullable=False, index=index)


class ExperimentRow(SQLModel, table=True):
    """An experiment: its current configuration version and status."""

    __tablename__ = "experiments"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=63, unique=True)
    name: str = Field(max_length=120)
    status: str = Field(max_length=16)
    version: int
    salt: str = Field(max_length=64)
    config: dict[str, Any] = Field(sa_column=_json())
    created_at: datetime = Field(sa_column=_time())
    updated_at: datetime = Field(sa_column=_time())
    apprentice_state: str | None = Field(default=None, max_length=16)
    guardrail_trip: dict[str, Any] | None = Field(
        default=None, sa_column=sa.Column(sa.JSON(none_as_null=True), nullable=True)
    )
    #: The newest configuration version an approver approved; only that version may run.
    approved_version: int | None = Field(default=None)


class ExperimentVersionRow(SQLModel, table=True):
    """Every configuration an experiment has had, one row per version."""

    __tablename__ = "experiment_versions"

    experiment_id: int = Field(foreign_key="experiments.id", primary_key=True)
    version: int = Field(primary_key=True)
    config: dict[str, Any] = Field(sa_column=_json())
    created_at: datetime = Field(sa_column=_time())
    created_by: str = Field(max_length=120)


class ChangeRequestRow(SQLModel, table=True):
    """A proposed configuration for a running or paused experiment, waiting for approval.

    Approving it applies it as the experiment's next version (`applied_version`).
    """

    __tablename__ = "change_requests"

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiments.id", index=True)
    base_version: int
    config: dict[str, Any] = Field(sa_column=_json())
    proposed_by: str = Field(max_length=120)
    proposed_at: datetime = Field(sa_column=_time())
    comment: str = Field(max_length=2000)
    status: str = Field(max_length=16, index=True)
    decided_by: str | None = Field(default=None, max_length=120)
    decided_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    decision_comment: str | None = Field(default=None, max_length=2000)
    applied_version: int | None = Field(default=None)


class OfferRow(SQLModel, table=True):
    """The offers of an experiment's current configuration, for reports and joins."""

    __tablename__ = "offers"
    __table_args__ = (sa.UniqueConstraint("experiment_id", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiments.id", index=True)
    key: str = Field(max_length=63)
    product: str = Field(max_length=63)
    name: str = Field(max_length=120)
    eligibility: str = Field(max_length=2000)
    features: dict[str, Any] = Field(sa_column=_json())
    variants: list[Any] = Field(sa_column=_json())
    active: bool = True


class ApiKeyRow(SQLModel, table=True):
    """An app's API key: only its SHA-256 hash is stored; the prefix finds the row."""

    __tablename__ = "api_keys"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120)
    prefix: str = Field(max_length=16, unique=True)
    key_hash: str = Field(max_length=64)
    scopes: str = Field(max_length=120)
    created_at: datetime = Field(sa_column=_time())
    revoked_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    #: Requests per second this key may make; None: the server's default.
    rate_limit_per_second: int | None = None


class RateLimitWindowRow(SQLModel, table=True):
    """Requests granted to an API key in one one-second window, shared by every worker."""

    __tablename__ = "rate_limit_windows"

    api_key_id: int = Field(foreign_key="api_keys.id", primary_key=True)
    window_start: int = Field(sa_column=sa.Column(BigInt, primary_key=True, autoincrement=False))
    granted: int


class DecisionRow(SQLModel, table=True):
    """One answered decision, written before the answer leaves the service."""

    __tablename__ = "decisions"
    __table_args__ = (
        sa.UniqueConstraint("api_key_id", "request_id"),
        sa.Index("ix_decisions_customer_time", "experiment_id", "customer_key", "created_at"),
        sa.Index("ix_decisions_experiment_time", "experiment_id", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    experiment_id: int = Field(foreign_key="experiments.id", index=True)
    experiment_version: int
    api_key_id: int = Field(foreign_key="api_keys.id")
    request_id: str | None = Field(default=None, max_length=128)
    customer_key: str = Field(max_length=64)
    surface: str = Field(max_length=63)
    group: str = Field(max_length=16)
    reason: str = Field(max_length=32)
    context: dict[str, Any] = Field(sa_column=_json())
    eligible: list[str] = Field(sa_column=_json())
    probabilities: dict[str, float] = Field(sa_column=_json())
    chosen_offer: str | None = Field(default=None, max_length=63)
    chosen_variant: str | None = Field(default=None, max_length=63)
    propensity: float
    model_version: int | None = None
    learnable: bool
    explanation: str = Field(max_length=500)
    request_hash: str = Field(max_length=64)
    requested_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))
    created_at: datetime = Field(sa_column=_time())
    #: Set when a consent withdrawal erased `context`; such a row is never learned from.
    context_erased_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))


class OutcomeRow(SQLModel, table=True):
    """One event a customer did after a decision."""

    __tablename__ = "outcomes"
    __table_args__ = (sa.UniqueConstraint("api_key_id", "idempotency_key"),)

    id: int | None = Field(default=None, sa_column=_big_id())
    decision_id: str = Field(foreign_key="decisions.id", index=True, max_length=36)
    api_key_id: int = Field(foreign_key="api_keys.id")
    event: str = Field(max_length=63)
    value: float
    occurred_at: datetime = Field(sa_column=_time())
    received_at: datetime = Field(sa_column=_time())
    idempotency_key: str = Field(max_length=128)
    request_hash: str = Field(max_length=64)
    late: bool


class ModelSnapshotRow(SQLModel, table=True):
    """A versioned, checksummed VW model of an experiment."""

    __tablename__ = "model_snapshots"
    __table_args__ = (sa.UniqueConstraint("experiment_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    experiment_id: int = Field(foreign_key="experiments.id", index=True)
    version: int
    arguments: list[str] = Field(sa_column=_json())
    checksum: str = Field(max_length=64)
    examples_seen: int = Field(sa_column=_big(nullable=False))
    size_bytes: int
    data: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))
    created_at: datetime = Field(sa_column=_time())
    last_reward_id: int = Field(default=0, sa_column=_big(nullable=False))
    note: str = Field(default="", max_length=200)
    match_rate: float | None = None
    evidence: dict[str, Any] | None = Field(
        default=None, sa_column=sa.Column(sa.JSON(none_as_null=True), nullable=True)
    )


class RewardRow(SQLModel, table=True):
    """The closed reward of one decision for one reward horizon, written exactly once.

    Its `id` orders rewards as they close; the learner's cursor is the last id it learned.
    """

    __tablename__ = "rewards"
    __table_args__ = (
        sa.UniqueConstraint("decision_id", "horizon"),
        sa.Index("ix_rewards_learning", "experiment_id", "horizon", "id"),
    )

    id: int | None = Field(default=None, sa_column=_big_id())
    decision_id: str = Field(foreign_key="decisions.id", max_length=36)
    experiment_id: int = Field(foreign_key="experiments.id")
    horizon: str = Field(max_length=63)
    reward: float
    source: str = Field(max_length=16)
    outcome_count: int
    learnable: bool
    closed_at: datetime = Field(sa_column=_time())


class LearnerLeaseRow(SQLModel, table=True):
    """Which process is the learner now; operators read it, the lock itself enforces it."""

    __tablename__ = "learner_leases"

    name: str = Field(primary_key=True, max_length=63)
    holder: str = Field(max_length=200)
    acquired_at: datetime = Field(sa_column=_time())
    heartbeat_at: datetime = Field(sa_column=_time())
    details: dict[str, Any] = Field(sa_column=_json())


class AuditLogRow(SQLModel, table=True):
    """Who changed what, when: configuration versions, status changes, keys."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, sa_column=_big_id())
    at: datetime = Field(sa_column=_time(index=True))
    actor: str = Field(max_length=120)
    action: str = Field(max_length=63)
    experiment_id: int | None = Field(default=None, foreign_key="experiments.id", index=True)
    details: dict[str, Any] = Field(sa_column=_json())


class CounterRow(SQLModel, table=True):
    """Named operational counters shared by every worker (e.g. rejected outcomes)."""

    __tablename__ = "counters"

    name: str = Field(primary_key=True, max_length=120)
    value: int = Field(default=0, sa_column=_big(nullable=False))


class UserRow(SQLModel, table=True):
    """A person who signs in to the web UI: a scrypt password hash, never the password."""

    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=64, unique=True)
    password_hash: str = Field(max_length=255)
    role: str = Field(max_length=16)
    created_at: datetime = Field(sa_column=_time())
    disabled_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))


class UiSessionRow(SQLModel, table=True):
    """A web UI session: only the SHA-256 of its token is stored."""

    __tablename__ = "ui_sessions"

    token_hash: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(foreign_key="users.id", index=True)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=_time())
    last_seen_at: datetime = Field(sa_column=_time())
    expires_at: datetime = Field(sa_column=_time())
    revoked_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))


class SignInThrottleRow(SQLModel, table=True):
    """Failed sign-ins for one username (known or not) and the lock they caused."""

    __tablename__ = "sign_in_throttles"

    username: str = Field(primary_key=True, max_length=64)
    failures: int
    window_started_at: datetime = Field(sa_column=_time())
    locked_until: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime()))


class ConsentWithdrawalRow(SQLModel, table=True):
    """A customer withdrew consent: their stored context was erased (pseudonymous key only)."""

    __tablename__ = "consent_withdrawals"

    id: int | None = Field(default=None, sa_column=_big_id())
    customer_key: str = Field(max_length=64, index=True)
    api_key_id: int | None = Field(default=None, foreign_key="api_keys.id")
    withdrawn_at: datetime = Field(sa_column=_time())
    decisions_erased: int
