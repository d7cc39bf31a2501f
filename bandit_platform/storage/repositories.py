"""Queries and writes, one function per question the services ask of the database."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from bandit_platform.storage.tables import (
    ApiKeyRow,
    AuditLogRow,
    ChangeRequestRow,
    CounterRow,
    DecisionRow,
    ExperimentRow,
    ExperimentVersionRow,
    ModelSnapshotRow,
    OfferRow,
    OutcomeRow,
)

_EXPERIMENTS = cast(sa.Table, getattr(ExperimentRow, "__table__"))  # noqa: B009 (untyped)
_DECISIONS = cast(sa.Table, getattr(DecisionRow, "__table__"))  # noqa: B009


@dataclass(frozen=True, slots=True)
class ExperimentHead:
    """What a decision needs of an experiment row: everything but its configuration, which
    workers compile once per version."""

    id: int
    key: str
    version: int
    status: str
    salt: str
    apprentice_state: str | None
    #: The guardrail trip (None while every guardrail holds), read with the head so that every
    #: worker switches to the baseline at its next decision without another query.
    guardrail_trip: dict[str, Any] | None


# The decision path's statements are built once: each decision only binds its parameters.
_HEAD_BY_KEY = sa.select(
    _EXPERIMENTS.c.id,
    _EXPERIMENTS.c.key,
    _EXPERIMENTS.c.version,
    _EXPERIMENTS.c.status,
    _EXPERIMENTS.c.salt,
    _EXPERIMENTS.c.apprentice_state,
    _EXPERIMENTS.c.guardrail_trip,
).where(_EXPERIMENTS.c.key == sa.bindparam("key"))
_OFFERS_SHOWN = sa.select(_DECISIONS.c.chosen_offer, _DECISIONS.c.created_at).where(
    _DECISIONS.c.experiment_id == sa.bindparam("experiment_id"),
    _DECISIONS.c.customer_key == sa.bindparam("customer_key"),
    _DECISIONS.c.created_at >= sa.bindparam("since"),
    _DECISIONS.c.chosen_offer.is_not(None),
)
_INSERT_DECISION = sa.insert(_DECISIONS)
_OUTCOMES = cast(sa.Table, getattr(OutcomeRow, "__table__"))  # noqa: B009
_OUTCOME_BY_KEY = sa.select(_OUTCOMES).where(
    _OUTCOMES.c.api_key_id == sa.bindparam("api_key_id"),
    _OUTCOMES.c.idempotency_key == sa.bindparam("key"),
)
_DECISION_FOR_OUTCOME = sa.select(
    _DECISIONS.c.api_key_id, _DECISIONS.c.experiment_id, _DECISIONS.c.created_at
).where(_DECISIONS.c.id == sa.bindparam("id"))
_EXPERIMENT_VERSION = sa.select(_EXPERIMENTS.c.version).where(
    _EXPERIMENTS.c.id == sa.bindparam("id")
)
_INSERT_OUTCOME = sa.insert(_OUTCOMES).returning(_OUTCOMES.c.id)


def experiment_head(session: Session, key: str) -> ExperimentHead | None:
    """The experiment with this key without its configuration, or None."""
    row = session.connection().execute(_HEAD_BY_KEY, {"key": key}).first()
    return None if row is None else ExperimentHead(*row)


def insert_decision(session: Session, values: Mapping[str, Any]) -> None:
    """Write one decision row (columns of `DecisionRow`) in the caller's transaction."""
    session.connection().execute(_INSERT_DECISION, dict(values))


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


#: A customer lock's key: the two 32-bit halves of PostgreSQL's two-key advisory lock space
#: (apart from the one-key space that other locks use).
CustomerLockKey = tuple[int, int]

_LOCK_CUSTOMERS = sa.text(
    "SELECT pg_advisory_xact_lock(a, b) "
    "FROM unnest(CAST(:a AS integer[]), CAST(:b AS integer[])) WITH ORDINALITY AS t(a, b, i) "
    "ORDER BY i"
)


def customer_lock_key(experiment_key: str, customer_key: str) -> CustomerLockKey:
    """The lock key of one customer (pseudonym) in one experiment (by key).

    Computed without the database, so that a batch of decisions can take every lock it needs
    before it reads anything.
    """
    digest = hashlib.sha256(f"{experiment_key}\x00{customer_key}".encode()).digest()
    return (
        int.from_bytes(digest[:4], "big", signed=True),
        int.from_bytes(digest[4:8], "big", signed=True),
    )


def lock_customers(session: Session, keys: Iterable[CustomerLockKey]) -> None:
    """Serialise decisions for these customers of these experiments until the transaction ends.

    SQLite transactions already hold the database's write lock (BEGIN IMMEDIATE); PostgreSQL
    takes a transaction-scoped advisory lock per key, in one statement and in sorted order, so
    that two transactions locking overlapping sets cannot deadlock each other.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    ordered = sorted(set(keys))
    if not ordered:
        return
    session.connection().execute(
        _LOCK_CUSTOMERS, {"a": [a for a, _ in ordered], "b": [b for _, b in ordered]}
    )


_DECISION_BY_REQUEST_ID = sa.select(_DECISIONS.c.id).where(
    _DECISIONS.c.api_key_id == sa.bindparam("api_key_id"),
    _DECISIONS.c.request_id == sa.bindparam("request_id"),
)


def decision_by_request_id(
    session: Session, api_key_id: int, request_id: str
) -> DecisionRow | None:
    """The decision an app already asked for with this request id, or None.

    Almost every request id is new: a Core query for the id answers those without building
    ORM objects, and only a replay loads the row.
    """
    found = session.connection().execute(
        _DECISION_BY_REQUEST_ID, {"api_key_id": api_key_id, "request_id": request_id}
    )
    decision_id = found.scalar()
    if decision_id is None:
        return None
    return session.get(DecisionRow, decision_id)


def offers_shown_since(
    session: Session, experiment_id: int, customer_key: str, since: datetime
) -> list[tuple[str, datetime]]:
    """(offer key, time) of every offer shown to the customer in the experiment since `since`."""
    rows = session.connection().execute(
        _OFFERS_SHOWN,
        {"experiment_id": experiment_id, "customer_key": customer_key, "since": since},
    )
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


def outcome_by_idempotency_key(
    session: Session, api_key_id: int, key: str
) -> Mapping[str, Any] | None:
    """The outcome (its columns) stored earlier under this idempotency key, or None."""
    row = (
        session.connection()
        .execute(_OUTCOME_BY_KEY, {"api_key_id": api_key_id, "key": key})
        .mappings()
        .first()
    )
    return None if row is None else {str(name): value for name, value in row.items()}


@dataclass(frozen=True, slots=True)
class DecisionForOutcome:
    """What storing an outcome needs of its decision."""

    api_key_id: int
    experiment_id: int
    created_at: datetime


def decision_for_outcome(session: Session, decision_id: str) -> DecisionForOutcome | None:
    """The decision an outcome refers to, or None."""
    row = session.connection().execute(_DECISION_FOR_OUTCOME, {"id": decision_id}).first()
    return None if row is None else DecisionForOutcome(*row)


def experiment_version(session: Session, experiment_id: int) -> int:
    """The current configuration version of an experiment."""
    return int(
        session.connection().execute(_EXPERIMENT_VERSION, {"id": experiment_id}).scalar_one()
    )


def insert_outcome(session: Session, values: Mapping[str, Any]) -> int:
    """Write one outcome row (columns of `OutcomeRow`) and return its id."""
    return int(session.connection().execute(_INSERT_OUTCOME, dict(values)).scalar_one())


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


def audit_log(
    session: Session,
    experiment_id: int | None = None,
    *,
    action: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> Sequence[AuditLogRow]:
    """Audit rows, newest first, for one experiment or for all, optionally of one action
    (or, for an action ending in `.`, of every action with that prefix) and paged."""
    query = select(AuditLogRow).order_by(col(AuditLogRow.id).desc())
    if experiment_id is not None:
        query = query.where(AuditLogRow.experiment_id == experiment_id)
    if action:
        query = query.where(
            col(AuditLogRow.action).startswith(action, autoescape=True)
            if action.endswith(".")
            else AuditLogRow.action == action
        )
    if offset:
        query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return session.exec(query).all()


def audit_actions(session: Session, experiment_id: int) -> list[str]:
    """The distinct actions in one experiment's audit log, sorted."""
    query = (
        select(AuditLogRow.action)
        .where(AuditLogRow.experiment_id == experiment_id)
        .distinct()
        .order_by(col(AuditLogRow.action))
    )
    return list(session.exec(query).all())


def change_requests(
    session: Session, experiment_id: int | None = None, *, status: str | None = None
) -> Sequence[ChangeRequestRow]:
    """Change requests, newest first, of one experiment or all, optionally of one status."""
    query = select(ChangeRequestRow).order_by(col(ChangeRequestRow.id).desc())
    if experiment_id is not None:
        query = query.where(ChangeRequestRow.experiment_id == experiment_id)
    if status is not None:
        query = query.where(ChangeRequestRow.status == status)
    return session.exec(query).all()


def change_request(
    session: Session, change_id: int, *, for_update: bool = False
) -> ChangeRequestRow | None:
    """One change request by id (locked for the transaction when `for_update`)."""
    query = select(ChangeRequestRow).where(ChangeRequestRow.id == change_id)
    if for_update:
        # Read again under the lock: an earlier read in this session may be stale.
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.exec(query).first()


def experiment_version_row(
    session: Session, experiment_id: int, version: int
) -> ExperimentVersionRow | None:
    """One stored configuration version."""
    return session.get(ExperimentVersionRow, (experiment_id, version))


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
