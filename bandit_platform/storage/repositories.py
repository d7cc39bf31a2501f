"""Queries and writes, one function per question the services ask of the database."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from bandit_platform.storage.tables import (
    ApiKeyRow,
    AuditLogRow,
    CounterRow,
    DecisionRow,
    ExperimentRow,
    ExperimentVersionRow,
    ModelSnapshotRow,
    OfferRow,
    OutcomeRow,
)


def experiment_by_key(
    session: Session, key: str, *, for_update: bool = False
) -> ExperimentRow | None:
    """The experiment with this key, or None; `for_update` locks its row (PostgreSQL) until
    the transaction ends, so that concurrent changes of one experiment queue up."""
    query = select(ExperimentRow).where(ExperimentRow.key == key)
    if for_update:
        query = query.with_for_update()
    return session.exec(query).first()


def experiments(session: Session) -> Sequence[ExperimentRow]:
    """Every experiment, newest first."""
    return session.exec(select(ExperimentRow).order_by(col(ExperimentRow.id).desc())).all()


def offers_of(session: Session, experiment_id: int) -> dict[str, OfferRow]:
    """The offer rows of an experiment by key."""
    rows = session.exec(select(OfferRow).where(OfferRow.experiment_id == experiment_id)).all()
    return {row.key: row for row in rows}


def api_key_by_prefix(session: Session, prefix: str) -> ApiKeyRow | None:
    """The API key row with this public prefix, or None."""
    return session.exec(select(ApiKeyRow).where(ApiKeyRow.prefix == prefix)).first()


def lock_customer(session: Session, experiment_id: int, customer_key: str) -> None:
    """Serialise decisions for one customer of one experiment until the transaction ends.

    SQLite transactions already hold the database's write lock (BEGIN IMMEDIATE); PostgreSQL
    takes a transaction-scoped advisory lock on the pair.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    lock_id = int(customer_key[:15], 16) ^ (experiment_id << 1)
    session.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})


def decision_by_request_id(
    session: Session, api_key_id: int, request_id: str
) -> DecisionRow | None:
    """The decision an app already asked for with this request id, or None."""
    return session.exec(
        select(DecisionRow).where(
            DecisionRow.api_key_id == api_key_id, DecisionRow.request_id == request_id
        )
    ).first()


def offers_shown_since(
    session: Session, experiment_id: int, customer_key: str, since: datetime
) -> list[tuple[str, datetime]]:
    """(offer key, time) of every offer shown to the customer in the experiment since `since`."""
    rows = session.execute(
        sa.select(col(DecisionRow.chosen_offer), col(DecisionRow.created_at)).where(
            col(DecisionRow.experiment_id) == experiment_id,
            col(DecisionRow.customer_key) == customer_key,
            col(DecisionRow.created_at) >= since,
            col(DecisionRow.chosen_offer).is_not(None),
        )
    ).all()
    return [(str(offer), created_at) for offer, created_at in rows]


def latest_snapshot_version(session: Session, experiment_id: int) -> int | None:
    """The newest model snapshot version of an experiment, or None."""
    result = session.execute(
        sa.select(sa.func.max(ModelSnapshotRow.version)).where(
            col(ModelSnapshotRow.experiment_id) == experiment_id
        )
    ).scalar_one_or_none()
    return None if result is None else int(result)


def snapshot(session: Session, experiment_id: int, version: int) -> ModelSnapshotRow | None:
    """One model snapshot, or None."""
    return session.exec(
        select(ModelSnapshotRow).where(
            ModelSnapshotRow.experiment_id == experiment_id, ModelSnapshotRow.version == version
        )
    ).first()


def snapshot_is_intact(row: ModelSnapshotRow) -> bool:
    """True when the snapshot's bytes match its SHA-256 checksum."""
    return hashlib.sha256(row.data).hexdigest() == row.checksum


def snapshots(session: Session, experiment_id: int) -> Sequence[ModelSnapshotRow]:
    """Every snapshot of an experiment, newest first."""
    return session.exec(
        select(ModelSnapshotRow)
        .where(ModelSnapshotRow.experiment_id == experiment_id)
        .order_by(col(ModelSnapshotRow.version).desc())
    ).all()


def experiment_version_config(
    session: Session, experiment_id: int, version: int
) -> dict[str, object] | None:
    """The configuration an experiment had at `version`, or None."""
    row = session.get(ExperimentVersionRow, (experiment_id, version))
    return None if row is None else row.config


def outcome_by_idempotency_key(session: Session, api_key_id: int, key: str) -> OutcomeRow | None:
    """The outcome stored earlier under this idempotency key, or None."""
    return session.exec(
        select(OutcomeRow).where(
            OutcomeRow.api_key_id == api_key_id, OutcomeRow.idempotency_key == key
        )
    ).first()


def audit(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    experiment_id: int | None,
    details: dict[str, object],
) -> None:
    """Append one row to the audit log (in the caller's transaction)."""
    session.add(
        AuditLogRow(at=at, actor=actor, action=action, experiment_id=experiment_id, details=details)
    )


def audit_log(session: Session, experiment_id: int | None = None) -> Sequence[AuditLogRow]:
    """Audit rows, newest first, for one experiment or for all."""
    query = select(AuditLogRow).order_by(col(AuditLogRow.id).desc())
    if experiment_id is not None:
        query = query.where(AuditLogRow.experiment_id == experiment_id)
    return session.exec(query).all()


def increment_counter(session: Session, name: str, by: int = 1) -> None:
    """Add to a named counter, creating it at zero first (atomic upsert)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(CounterRow).values(name=name, value=by)
    statement = statement.on_conflict_do_update(
        index_elements=["name"], set_={"value": CounterRow.value + by}
    )
    session.execute(statement)


def counters(session: Session) -> dict[str, int]:
    """Every counter by name."""
    return {row.name: row.value for row in session.exec(select(CounterRow)).all()}
