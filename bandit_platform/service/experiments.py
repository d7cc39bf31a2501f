"""Experiments: create, read, update (a new version, audited), approve, list and change status.

Only an approved configuration version runs (`ExperimentRow.approved_version`):

- a change to a draft or approved experiment (no traffic yet) makes a new version and a draft
  again, which an approver must approve (`approve`) before it can start;
- a change to a running or paused experiment does not touch the served configuration: it
  becomes a pending change request (`propose`); approving it (`approve_change`) applies it as
  the next version in the same transaction, rejecting it (`reject_change`) keeps the served one;
- no person approves what they proposed (four-eyes). Setup code that runs in-process (the
  demo, the simulator, `experiment apply --start`, tests) approves under its own actor name,
  which the audit log records; the HTTP app API offers no approval at all.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from bandit_platform.domain.config import (
    CompiledExperiment,
    ExperimentConfig,
    Explorer,
    config_to_builtins,
    validate_config,
)
from bandit_platform.domain.decisions import (
    APPROVAL_STATUSES,
    STATUS_TRANSITIONS,
    ChangeStatus,
    ExperimentStatus,
)
from bandit_platform.domain.errors import Conflict, InvalidInput, NotFound
from bandit_platform.policies.vw_adapter import model_arguments
from bandit_platform.service.learner import ensure_model
from bandit_platform.service.models import copy_snapshot, publish_snapshot
from bandit_platform.service.platform import Platform
from bandit_platform.service.policy_evaluation import (
    Candidate,
    CandidateSpec,
    PromotionRefused,
    evaluate_candidate,
)
from bandit_platform.storage import repositories
from bandit_platform.storage.tables import (
    ChangeRequestRow,
    ExperimentRow,
    ExperimentVersionRow,
    OfferRow,
)

#: The longest comment a proposal or decision keeps.
MAX_COMMENT = 2000
#: The actor prefix of a person signed in to the UI; four-eyes binds people.
PERSON_PREFIX = "user:"


@dataclass(frozen=True)
class ExperimentView:
    """An experiment as the API and UI show it."""

    key: str
    name: str
    status: ExperimentStatus
    version: int
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    #: The newest version an approver approved (None: never approved).
    approved_version: int | None = None


@dataclass(frozen=True)
class ChangeRequestView:
    """A proposed configuration change and where it stands."""

    id: int
    experiment_key: str
    base_version: int
    config: dict[str, Any]
    proposed_by: str
    proposed_at: datetime
    comment: str
    status: ChangeStatus
    decided_by: str | None
    decided_at: datetime | None
    decision_comment: str | None
    applied_version: int | None


@dataclass(frozen=True)
class ProposalResult:
    """What a configuration change did.

    Attributes:
        experiment: the experiment afterwards (for a running or paused one: unchanged).
        change: the pending change request it made, or None when the change was applied
            at once (a draft) or changed nothing.
    """

    experiment: ExperimentView
    change: ChangeRequestView | None


@dataclass(frozen=True)
class VersionView:
    """One stored configuration version."""

    version: int
    config: dict[str, Any]
    created_at: datetime
    created_by: str


def _view(row: ExperimentRow) -> ExperimentView:
    return ExperimentView(
        key=row.key,
        name=row.name,
        status=ExperimentStatus(row.status),
        version=row.version,
        config=row.config,
        created_at=row.created_at,
        updated_at=row.updated_at,
        approved_version=row.approved_version,
    )


def _change_view(row: ChangeRequestRow, key: str) -> ChangeRequestView:
    assert row.id is not None
    return ChangeRequestView(
        id=row.id,
        experiment_key=key,
        base_version=row.base_version,
        config=row.config,
        proposed_by=row.proposed_by,
        proposed_at=row.proposed_at,
        comment=row.comment,
        status=ChangeStatus(row.status),
        decided_by=row.decided_by,
        decided_at=row.decided_at,
        decision_comment=row.decision_comment,
        applied_version=row.applied_version,
    )


def _comment(comment: str, *, required: bool) -> str:
    text = comment.strip()
    if required and not text:
        raise InvalidInput("a comment is required", field="comment")
    if len(text) > MAX_COMMENT:
        raise InvalidInput(f"a comment has at most {MAX_COMMENT} characters", field="comment")
    return text


def _four_eyes(approver: str, proposer: str) -> None:
    """A person never approves (or rejects) what they proposed themselves."""
    if approver.startswith(PERSON_PREFIX) and approver == proposer:
        raise Conflict(
            "you proposed this change; another approver must decide on it", field="actor"
        )


def _append_version(
    session: Session, row: ExperimentRow, stored: dict[str, Any], now: datetime, actor: str
) -> None:
    """Make `stored` the experiment's configuration under the next version number."""
    assert row.id is not None
    row.version += 1
    row.config = stored
    row.updated_at = now
    session.add(row)
    session.add(
        ExperimentVersionRow(
            experiment_id=row.id,
            version=row.version,
            config=stored,
            created_at=now,
            created_by=actor,
        )
    )


def _changed_sections(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


class ExperimentService:
    """Owns the transactions that change experiments."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A write transaction; afterwards this worker looks again for the newest model (a
        start, update, rollback or warm start may have published one) and, when it rolled
        back, forgets the configurations it compiled meanwhile."""
        try:
            with self.platform.session() as session, session.begin():
                yield session
        except BaseException:
            self.platform.forget_compiled()
            raise
        finally:
            self.platform.forget_model_checks()

    def _reviewable_draft(
        self, session: Session, key: str, version: int | None, verb: str
    ) -> ExperimentRow:
        """The draft under review, locked; the reviewed `version` must still be current."""
        row = self._require(session, key, lock=True)
        if row.status != ExperimentStatus.DRAFT:
            raise Conflict(
                f"only a draft is {verb}; this experiment is {row.status}", field="status"
            )
        if version is not None and version != row.version:
            raise Conflict(
                f"version {version} is no longer current (now {row.version}); review again",
                field="version",
            )
        return row

    def _require(self, session: Session, key: str, *, lock: bool = False) -> ExperimentRow:
        row = repositories.experiment_by_key(session, key, for_update=lock)
        if row is None:
            raise NotFound(f"no experiment {key!r}", field="experiment")
        return row

    def _sync_offers(
        self, session: Session, experiment_id: int, compiled: CompiledExperiment
    ) -> None:
        existing = repositories.offers_of(session, experiment_id)
        for offer in compiled.config.offers:
            row = existing.pop(offer.key, None) or OfferRow(
                experiment_id=experiment_id,
                key=offer.key,
                product="",
                name="",
                eligibility="",
                features={},
                variants=[],
            )
            row.product = offer.product
            row.name = offer.name
            row.eligibility = offer.eligibility
            row.features = dict(offer.features)
            row.variants = [v.key for v in offer.variants]
            row.active = True
            session.add(row)
        for row in existing.values():
            # Offers stay for the decisions that name them; they only stop being active.
            row.active = False
            session.add(row)

    def create(
        self, config: ExperimentConfig, actor: str, *, salt: str | None = None
    ) -> ExperimentView:
        """Create an experiment in draft at version 1.

        `salt` (random unless given, e.g. by a seeded simulation) keys the sticky assignment
        and the decisions' draws.

        Raises:
            InvalidInput: the configuration is invalid (field named).
            Conflict: an experiment with the key exists.
        """
        compiled = validate_config(config)
        now = self.platform.clock()
        stored = config_to_builtins(config)
        try:
            with self._write() as session:
                if repositories.experiment_by_key(session, config.key) is not None:
                    raise Conflict(f"experiment {config.key!r} already exists", field="key")
                row = ExperimentRow(
                    key=config.key,
                    name=config.name,
                    status=ExperimentStatus.DRAFT,
                    version=1,
                    salt=salt or secrets.token_hex(16),
                    config=stored,
                    created_at=now,
                    updated_at=now,
                )
                session.add(row)
                session.flush()
                assert row.id is not None
                session.add(
                    ExperimentVersionRow(
                        experiment_id=row.id,
                        version=1,
                        config=stored,
                        created_at=now,
                        created_by=actor,
                    )
                )
                self._sync_offers(session, row.id, compiled)
                repositories.audit(
                    session,
                    at=now,
                    actor=actor,
                    action="experiment.create",
                    experiment_id=row.id,
                    details={"version": 1},
                )
                return _view(row)
        except IntegrityError as exc:
            # Two creations of one key at once: the database's unique key decides.
            raise Conflict(f"experiment {config.key!r} already exists", field="key") from exc

    def update(self, key: str, config: ExperimentConfig, actor: str) -> ExperimentView:
        """Change the configuration (see `propose`); the experiment afterwards.

        For a running or paused experiment the served configuration stays until an approver
        approves the change request this makes (`ExperimentView` is then unchanged).
        """
        return self.propose(key, config, actor).experiment

    def propose(
        self, key: str, config: ExperimentConfig, actor: str, comment: str = ""
    ) -> ProposalResult:
        """Change the configuration, audited.

        A draft or approved experiment (no traffic yet) gets the next version at once and is
        a draft again: it needs approval before it can start. A running or paused experiment
        keeps serving its version: the change becomes a pending change request (replacing,
        as `withdrawn`, an earlier pending one) that an approver approves or rejects.
        A configuration equal to the current one changes nothing.

        Raises:
            InvalidInput: invalid configuration, a body whose key differs from the URL's, or
                a too long comment.
            NotFound: no such experiment.
            Conflict: the experiment is stopped.
        """
        if config.key != key:
            raise InvalidInput("the key cannot change", field="key")
        compiled = validate_config(config)
        note = _comment(comment, required=False)
        now = self.platform.clock()
        stored = config_to_builtins(config)
        with self._write() as session:
            row = self._require(session, key, lock=True)
            if row.status == ExperimentStatus.STOPPED:
                raise Conflict("a stopped experiment cannot change", field="status")
            assert row.id is not None
            changed = _changed_sections(row.config, stored)
            if not changed:
                return ProposalResult(_view(row), None)
            if (
                row.status not in APPROVAL_STATUSES
                and row.config.get("reward", {}).get("name", "primary") != config.reward.name
            ):
                # A new learning horizon would close every old decision again under the new
                # name and the learner would learn the whole history twice.
                raise InvalidInput(
                    "the learning horizon cannot be renamed once the experiment has started; "
                    "add a report horizon instead",
                    field="reward.name",
                )
            if row.status in APPROVAL_STATUSES:
                row.name = config.name
                previous = ExperimentStatus(row.status)
                row.status = ExperimentStatus.DRAFT
                _append_version(session, row, stored, now, actor)
                self._sync_offers(session, row.id, compiled)
                details: dict[str, Any] = {"version": row.version, "changed": changed}
                if note:
                    details["comment"] = note
                if previous == ExperimentStatus.APPROVED:
                    details["approval"] = "needed again"
                repositories.audit(
                    session,
                    at=now,
                    actor=actor,
                    action="experiment.update",
                    experiment_id=row.id,
                    details=details,
                )
                return ProposalResult(_view(row), None)
            for pending in repositories.change_requests(
                session, row.id, status=ChangeStatus.PENDING
            ):
                pending.status = ChangeStatus.WITHDRAWN
                pending.decided_by = actor
                pending.decided_at = now
                pending.decision_comment = "replaced by a newer proposal"
                session.add(pending)
                repositories.audit(
                    session,
                    at=now,
                    actor=actor,
                    action="change.withdrawn",
                    experiment_id=row.id,
                    details={"change": pending.id, "reason": "replaced by a newer proposal"},
                )
            change = ChangeRequestRow(
                experiment_id=row.id,
                base_version=row.version,
                config=stored,
                proposed_by=actor,
                proposed_at=now,
                comment=note,
                status=ChangeStatus.PENDING,
            )
            session.add(change)
            session.flush()
            repositories.audit(
                session,
                at=now,
                actor=actor,
                action="change.proposed",
                experiment_id=row.id,
                details={
                    "change": change.id,
                    "base_version": row.version,
                    "changed": changed,
                    "comment": note,
                },
            )
            return ProposalResult(_view(row), _change_view(change, row.key))

    def approve(
        self, key: str, actor: str, comment: str, *, version: int | None = None
    ) -> ExperimentView:
        """Approve a draft's configuration: the experiment becomes `approved` and may start.

        Args:
            key: the experiment.
            actor: who approves (a person `user:NAME`, or in-process setup code).
            comment: why (required).
            version: the version the approver reviewed; when it is no longer the current
                one the approval is refused. None: the current version.

        Raises:
            NotFound: no such experiment.
            InvalidInput: no comment.
            Conflict: not a draft, the reviewed version is outdated, or the approver wrote
                this version (four-eyes).
        """
        note = _comment(comment, required=True)
        now = self.platform.clock()
        with self._write() as session:
            row = self._reviewable_draft(session, key, version, "approved")
            assert row.id is not None
            written = repositories.experiment_version_row(session, row.id, row.version)
            assert written is not None
            _four_eyes(actor, written.created_by)
            row.approved_version = row.version
            row.status = ExperimentStatus.APPROVED
            row.updated_at = now
            session.add(row)
            repositories.audit(
                session,
                at=now,
                actor=actor,
                action="experiment.approved",
                experiment_id=row.id,
                details={"version": row.version, "comment": note},
            )
            return _view(row)

    def reject(
        self, key: str, actor: str, comment: str, *, version: int | None = None
    ) -> ExperimentView:
        """Send a draft back to its editors with a comment (it stays a draft; audited).

        Raises:
            NotFound: no such experiment.
            InvalidInput: no comment.
            Conflict: not a draft, or the reviewed version is outdated.
        """
        note = _comment(comment, required=True)
        now = self.platform.clock()
        with self._write() as session:
            row = self._reviewable_draft(session, key, version, "rejected")
            repositories.audit(
                session,
                at=now,
                actor=actor,
                action="experiment.rejected",
                experiment_id=row.id,
                details={"version": row.version, "comment": note},
            )
            return _view(row)

    def _pending(self, session: Session, change_id: int) -> tuple[ChangeRequestRow, ExperimentRow]:
        found = repositories.change_request(session, change_id)
        if found is None:
            raise NotFound(f"no change request {change_id}", field="change")
        # The experiment's row first, as `propose` does, so that the two never deadlock.
        row = session.get(ExperimentRow, found.experiment_id, with_for_update=True)
        assert row is not None
        change = repositories.change_request(session, change_id, for_update=True)
        assert change is not None
        if change.status != ChangeStatus.PENDING:
            raise Conflict(f"change request {change_id} is {change.status}", field="change")
        return change, row

    def approve_change(self, change_id: int, actor: str, comment: str) -> ChangeRequestView:
        """Apply a pending change request as the experiment's next (approved) version.

        In one transaction: the version is written, its offers synchronised, a fitting model
        published if the experiment is running, `approved_version` set, and the change and
        the update audited.

        Raises:
            NotFound: no such change request.
            InvalidInput: no comment, or the configuration no longer validates.
            Conflict: the request is not pending, the approver proposed it (four-eyes), the
                experiment stopped or its configuration changed since the proposal.
        """
        note = _comment(comment, required=True)
        now = self.platform.clock()
        with self._write() as session:
            change, row = self._pending(session, change_id)
            assert row.id is not None
            _four_eyes(actor, change.proposed_by)
            if row.status not in (ExperimentStatus.RUNNING, ExperimentStatus.PAUSED):
                raise Conflict(f"the experiment is {row.status}", field="status")
            if row.version != change.base_version:
                raise Conflict(
                    f"the configuration changed since the proposal (version "
                    f"{change.base_version}, now {row.version}); propose it again",
                    field="change",
                )
            config = msgspec.convert(change.config, ExperimentConfig)
            compiled = validate_config(config)
            changed = _changed_sections(row.config, change.config)
            row.name = config.name
            _append_version(session, row, change.config, now, change.proposed_by)
            row.approved_version = row.version
            self._sync_offers(session, row.id, compiled)
            if row.status == ExperimentStatus.RUNNING:
                ensure_model(self.platform, session, experiment=row, compiled=compiled, at=now)
            change.status = ChangeStatus.APPROVED
            change.decided_by = actor
            change.decided_at = now
            change.decision_comment = note
            change.applied_version = row.version
            session.add(change)
            repositories.audit(
                session,
                at=now,
                actor=actor,
                action="change.approved",
                experiment_id=row.id,
                details={"change": change_id, "version": row.version, "comment": note},
            )
            repositories.audit(
                session,
                at=now,
                actor=change.proposed_by,
                action="experiment.update",
                experiment_id=row.id,
                details={
                    "version": row.version,
                    "changed": changed,
                    "change": change_id,
                    "approved_by": actor,
                },
            )
            return _change_view(change, row.key)

    def reject_change(self, change_id: int, actor: str, comment: str) -> ChangeRequestView:
        """Reject a pending change request: the served configuration stays (audited).

        Raises:
            NotFound: no such change request.
            InvalidInput: no comment.
            Conflict: the request is not pending.
        """
        return self._close_change(change_id, actor, comment, ChangeStatus.REJECTED)

    def withdraw_change(self, change_id: int, actor: str, comment: str = "") -> ChangeRequestView:
        """The proposer takes a pending change request back (audited).

        Raises:
            NotFound: no such change request.
            Conflict: not pending, or `actor` did not propose it.
        """
        return self._close_change(change_id, actor, comment, ChangeStatus.WITHDRAWN)

    def _close_change(
        self, change_id: int, actor: str, comment: str, status: ChangeStatus
    ) -> ChangeRequestView:
        note = _comment(comment, required=status == ChangeStatus.REJECTED)
        now = self.platform.clock()
        with self._write() as session:
            change, row = self._pending(session, change_id)
            if status == ChangeStatus.WITHDRAWN and actor != change.proposed_by:
                raise Conflict("only the proposer withdraws a change request", field="actor")
            change.status = status
            change.decided_by = actor
            change.decided_at = now
            change.decision_comment = note
            session.add(change)
            repositories.audit(
                session,
                at=now,
                actor=actor,
                action=f"change.{status.value}",
                experiment_id=row.id,
                details={"change": change_id, "comment": note},
            )
            return _change_view(change, row.key)

    def change(self, change_id: int) -> ChangeRequestView:
        """One change request. Raises NotFound."""
        with self.platform.read_session() as session:
            found = repositories.change_request(session, change_id)
            if found is None:
                raise NotFound(f"no change request {change_id}", field="change")
            row = session.get(ExperimentRow, found.experiment_id)
            assert row is not None
            return _change_view(found, row.key)

    def changes(
        self, key: str | None = None, *, status: ChangeStatus | None = None
    ) -> list[ChangeRequestView]:
        """Change requests, newest first, of one experiment or of all."""
        with self.platform.read_session() as session:
            experiment_id = None if key is None else self._require(session, key).id
            keys = {r.id: r.key for r in repositories.experiments(session)}
            return [
                _change_view(c, keys[c.experiment_id])
                for c in repositories.change_requests(
                    session, experiment_id, status=None if status is None else status.value
                )
            ]

    def version(self, key: str, version: int) -> VersionView:
        """One stored configuration version. Raises NotFound."""
        with self.platform.read_session() as session:
            row = self._require(session, key)
            assert row.id is not None
            found = repositories.experiment_version_row(session, row.id, version)
            if found is None:
                raise NotFound(f"no version {version} of {key!r}", field="version")
            return VersionView(
                version=found.version,
                config=found.config,
                created_at=found.created_at,
                created_by=found.created_by,
            )

    def get(self, key: str) -> ExperimentView:
        """One experiment. Raises NotFound."""
        with self.platform.read_session() as session:
            return _view(self._require(session, key))

    def all(self) -> list[ExperimentView]:
        """Every experiment, newest first."""
        with self.platform.read_session() as session:
            return [_view(row) for row in repositories.experiments(session)]

    def change_status(self, key: str, status: ExperimentStatus, actor: str) -> ExperimentView:
        """Move the experiment along approved -> running <-> paused -> stopped (or stop it).

        Starting or resuming needs the current version approved; starting publishes a cold
        model snapshot when none fits the explorer yet. Draft and approved are reached only
        by a configuration change and by `approve`.

        Raises:
            NotFound: no such experiment.
            Conflict: the transition is not allowed, or the version is not approved.
        """
        now = self.platform.clock()
        with self._write() as session:
            row = self._require(session, key, lock=True)
            assert row.id is not None
            current = ExperimentStatus(row.status)
            if status == current:
                return _view(row)
            if (
                status == ExperimentStatus.RUNNING
                and current != ExperimentStatus.STOPPED
                and row.approved_version != row.version
            ):
                raise Conflict(f"version {row.version} is not approved", field="status")
            if status in APPROVAL_STATUSES or status not in STATUS_TRANSITIONS[current]:
                hint = "; an approver approves a draft" if status in APPROVAL_STATUSES else ""
                raise Conflict(
                    f"cannot go from {current.value} to {status.value}{hint}", field="status"
                )
            if status == ExperimentStatus.RUNNING:
                ensure_model(
                    self.platform,
                    session,
                    experiment=row,
                    compiled=self.platform.compiled(row),
                    at=now,
                )
            row.status = status
            row.updated_at = now
            session.add(row)
            repositories.audit(
                session,
                at=now,
                actor=actor,
                action="experiment.status",
                experiment_id=row.id,
                details={"from": current.value, "to": status.value},
            )
            return _view(row)

    def audit_log(
        self,
        key: str,
        *,
        action: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """The experiment's audit rows, newest first; optionally of one action (a prefix
        ending in `.`, such as `change.`, selects a family) and paged."""
        with self.platform.read_session() as session:
            row = self._require(session, key)
            return [
                {"at": a.at, "actor": a.actor, "action": a.action, "details": a.details}
                for a in repositories.audit_log(
                    session, row.id, action=action, limit=limit, offset=offset
                )
            ]

    def audit_actions(self, key: str) -> list[str]:
        """The distinct actions in the experiment's audit log."""
        with self.platform.read_session() as session:
            row = self._require(session, key)
            assert row.id is not None
            return repositories.audit_actions(session, row.id)

    def models(self, key: str) -> list[dict[str, Any]]:
        """The experiment's model snapshots, newest first (without their bytes)."""
        with self.platform.read_session() as session:
            row = self._require(session, key)
            assert row.id is not None
            return [
                {
                    "version": s.version,
                    "created_at": s.created_at,
                    "examples_seen": s.examples_seen,
                    "checksum": s.checksum,
                    "size_bytes": s.size_bytes,
                    "intact": repositories.snapshot_is_intact(s),
                    "note": s.note,
                    "match_rate": s.match_rate,
                    "evidence": s.evidence,
                }
                for s in repositories.snapshots(session, row.id)
            ]

    def rollback_model(self, key: str, version: int, actor: str) -> dict[str, Any]:
        """Serve an earlier model again: its bytes become the newest version.

        The learner continues from the rolled-back model and does not learn again from the
        rewards the discarded versions had learned.

        Raises:
            NotFound: no such experiment or version.
            InvalidInput: the chosen snapshot is corrupt, or was trained for another explorer
                than the configured one.
        """
        now = self.platform.clock()
        with self._write() as session:
            row = self._require(session, key, lock=True)
            assert row.id is not None
            source = repositories.snapshot(session, row.id, version)
            if source is None:
                raise NotFound(f"no model version {version}", field="version")
            if not repositories.snapshot_is_intact(source):
                raise InvalidInput(f"model version {version} is corrupt", field="version")
            if source.arguments != model_arguments(self.platform.compiled(row).config.explorer):
                # Serving it would contradict the configured explorer, and the learner would
                # stop: it only continues models that fit the configuration.
                raise InvalidInput(
                    f"model version {version} was trained for another explorer; change the "
                    "explorer back first",
                    field="version",
                )
            newest = repositories.snapshot(
                session, row.id, repositories.latest_snapshot_version(session, row.id) or 0
            )
            cursor = newest.last_reward_id if newest is not None else source.last_reward_id
            copy = copy_snapshot(
                session,
                source=source,
                at=now,
                last_reward_id=cursor,
                note=f"rollback to v{version}",
            )
            repositories.audit(
                session,
                at=now,
                actor=actor,
                action="model.rollback",
                experiment_id=row.id,
                details={"to_version": version, "new_version": copy.version},
            )
            return {"version": copy.version, "rolled_back_to": version}

    def promote_candidate(
        self,
        key: str,
        spec: CandidateSpec,
        actor: str,
        *,
        candidate: Candidate | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Judge a candidate model against the served one off-policy; serve it if it passes.

        The gate is `policy_evaluation.evaluate_candidate` (trained on the log before the
        cutoff unless `candidate` is given; passes when its one-sided lower bound beats the
        incumbent's). A candidate that passes becomes the newest version, with the gate's
        evidence stored on it (audited `model.promoted`); the learner continues from it with
        the rewards after the last one it was trained on. A candidate for another explorer
        than the configured one also sets the configuration's explorer (a new configuration
        version, audited `experiment.update`). A refusal is audited
        (`model.promotion_refused`) and publishes nothing. `dry_run` writes nothing at all.

        Returns:
            `promoted`, the new `version` (None unless promoted), `would_promote` and the
            `evidence`.

        Raises:
            NotFound: no such experiment, or no snapshot to compare with.
            InvalidInput: a spec field out of range or too few rows (field named), or a
                candidate model whose arguments do not fit its explorer.
            PromotionRefused: the gate refused (409, carries the evidence).
            Conflict: the served model or the configuration changed during the evaluation.
        """
        if candidate is not None and candidate.model.arguments != model_arguments(
            candidate.explorer
        ):
            raise InvalidInput("the model's arguments do not fit its explorer", field="candidate")
        verdict = evaluate_candidate(self.platform, key, spec, candidate=candidate, actor=actor)
        evidence = verdict.evidence
        result: dict[str, Any] = {
            "promoted": False,
            "would_promote": verdict.promote,
            "version": None,
            "evidence": evidence,
        }
        if dry_run:
            return result
        now = self.platform.clock()
        with self._write() as session:
            row = self._require(session, key, lock=True)
            assert row.id is not None
            newest = repositories.latest_snapshot_version(session, row.id) or 0
            if newest != verdict.newest_version or row.version != verdict.config_version:
                raise Conflict(
                    "a model was published or the configuration changed while the candidate "
                    "was evaluated; evaluate it again",
                    field="candidate",
                )
            if not verdict.promote:
                repositories.audit(
                    session,
                    at=now,
                    actor=actor,
                    action="model.promotion_refused",
                    experiment_id=row.id,
                    details=evidence,
                )
            else:
                chosen = verdict.candidate
                if chosen.explorer != self.platform.compiled(row).config.explorer:
                    self._set_explorer(session, row, chosen.explorer, actor, now)
                snapshot = publish_snapshot(
                    session,
                    experiment_id=row.id,
                    model=chosen.model,
                    examples_seen=chosen.examples_seen,
                    at=now,
                    last_reward_id=chosen.last_reward_id,
                    note=f"promoted {chosen.note}",
                    evidence=evidence,
                )
                repositories.audit(
                    session,
                    at=now,
                    actor=actor,
                    action="model.promoted",
                    experiment_id=row.id,
                    details={"version": snapshot.version, **evidence},
                )
                result.update(promoted=True, version=snapshot.version)
        if not verdict.promote:
            raise PromotionRefused(
                "the candidate's lower bound does not beat the served model's "
                f"({evidence['candidate']['lower']} <= {evidence['incumbent']['lower']})",
                evidence=evidence,
            )
        return result

    def _set_explorer(
        self, session: Session, row: ExperimentRow, explorer: Explorer, actor: str, now: datetime
    ) -> None:
        """A new configuration version that differs from the current one by its explorer."""
        assert row.id is not None
        config = msgspec.structs.replace(self.platform.compiled(row).config, explorer=explorer)
        validate_config(config)
        approved = row.approved_version == row.version
        _append_version(session, row, config_to_builtins(config), now, actor)
        if approved:
            # The promotion gate (off-policy evidence, stored and audited) is the approval of
            # an explorer change: the approved logic (offers, rules, split, caps) is unchanged.
            row.approved_version = row.version
        repositories.audit(
            session,
            at=now,
            actor=actor,
            action="experiment.update",
            experiment_id=row.id,
            details={"version": row.version, "changed": ["explorer"], "by": "model promotion"},
        )

    def warm_start(self, key: str, actor: str) -> dict[str, Any]:
        """Train a new model from every logged learnable decision and serve it (audited)."""
        now = self.platform.clock()
        with self._write() as session:
            row = self._require(session, key, lock=True)
            snapshot = ensure_model(
                self.platform,
                session,
                experiment=row,
                compiled=self.platform.compiled(row),
                at=now,
                force=True,
            )
            assert snapshot is not None
            repositories.audit(
                session,
                at=now,
                actor=actor,
                action="model.warm_start",
                experiment_id=row.id,
                details={"version": snapshot.version, "examples": snapshot.examples_seen},
            )
            return {"version": snapshot.version, "examples_seen": snapshot.examples_seen}
