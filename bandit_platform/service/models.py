"""Model snapshots: versioned, checksummed VW models stored in the database."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlmodel import Session

from bandit_platform.policies.vw_adapter import ContextualBanditModel
from bandit_platform.storage import repositories
from bandit_platform.storage.tables import ModelSnapshotRow


def publish_snapshot(
    session: Session,
    *,
    experiment_id: int,
    model: ContextualBanditModel,
    examples_seen: int,
    at: datetime,
    last_reward_id: int = 0,
    note: str = "",
    match_rate: float | None = None,
    evidence: dict[str, Any] | None = None,
) -> ModelSnapshotRow:
    """Store the model as the experiment's next version (in the caller's transaction).

    `last_reward_id` is the learner's cursor: the model has learned every learnable reward up
    to it, so a learner that loads this snapshot continues after it. `evidence` is why the
    version was published (e.g. the promotion gate's off-policy estimates), stored with it.
    """
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
        last_reward_id=last_reward_id,
        note=note[:200],
        match_rate=match_rate,
        evidence=evidence,
    )
    session.add(row)
    session.flush()
    return row


def copy_snapshot(
    session: Session,
    *,
    source: ModelSnapshotRow,
    at: datetime,
    last_reward_id: int,
    note: str,
    evidence: dict[str, Any] | None = None,
) -> ModelSnapshotRow:
    """Publish the bytes of an earlier snapshot as the newest version (a rollback), with
    `evidence` of why (None keeps none: the source's evidence was about its own publication).
    """
    version = (repositories.latest_snapshot_version(session, source.experiment_id) or 0) + 1
    row = ModelSnapshotRow(
        experiment_id=source.experiment_id,
        version=version,
        arguments=list(source.arguments),
        checksum=source.checksum,
        examples_seen=source.examples_seen,
        size_bytes=source.size_bytes,
        data=source.data,
        created_at=at,
        last_reward_id=last_reward_id,
        note=note[:200],
        match_rate=source.match_rate,
        evidence=evidence,
    )
    session.add(row)
    session.flush()
    return row
