"""Model snapshots: versioned, checksummed VW models stored in the database."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlmodel import Session

from bandit_platform.domain.config import CompiledExperiment
from bandit_platform.policies.vw_adapter import ContextualBanditModel, model_arguments
from bandit_platform.storage import repositories
from bandit_platform.storage.tables import ModelSnapshotRow


def publish_snapshot(
    session: Session,
    *,
    experiment_id: int,
    model: ContextualBanditModel,
    examples_seen: int,
    at: datetime,
) -> ModelSnapshotRow:
    """Store the model as the experiment's next version (in the caller's transaction)."""
    data = model.serialize()
    version = (repositories.latest_snapshot_version(session, experiment_id) or 0) + 1
    row = ModelSnapshotRow(
        experiment_id=experiment_id,
        version=version,
        arguments=model.arguments,
        checksum=hashlib.sha256(data).hexdigest(),
        examples_seen=examples_seen,
        size_bytes=len(data),
        data=data,
        created_at=at,
    )
    session.add(row)
    session.flush()
    return row


def ensure_model(
    session: Session, *, experiment_id: int, experiment: CompiledExperiment, at: datetime
) -> ModelSnapshotRow | None:
    """Publish a cold model when the experiment has none for its current explorer.

    Returns the new snapshot, or None when the newest one already fits the configuration.
    """
    arguments = model_arguments(experiment.config.explorer)
    newest = repositories.latest_snapshot_version(session, experiment_id)
    if newest is not None:
        row = repositories.snapshot(session, experiment_id, newest)
        if row is not None and row.arguments == arguments:
            return None
    return publish_snapshot(
        session,
        experiment_id=experiment_id,
        model=ContextualBanditModel(arguments),
        examples_seen=0,
        at=at,
    )
