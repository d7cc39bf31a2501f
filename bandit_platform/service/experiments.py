"""Experiments: create, read, update (a new version, audited), list and change status."""

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
from bandit_platform.domain.decisions import STATUS_TRANSITIONS, ExperimentStatus
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
from bandit_platform.storage.tables import ExperimentRow, ExperimentVersionRow, OfferRow


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


def _view(row: ExperimentRow) -> ExperimentView:
    return ExperimentView(
        key=row.key,
        name=row.name,
        status=ExperimentStatus(row.status),
        version=row.version,
        config=row.config,
        created_at=row.created_at,
        updated_at=row.updated_at,
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
        """Replace the configuration: the version increments and an audit row is written.

        Raises:
            InvalidInput: invalid configuration, or a body whose key differs from the URL's.
            NotFound: no such experiment.
            Conflict: the experiment is stopped.
        """
        if config.key != key:
            raise InvalidInput("the key cannot change", field="key")
        compiled = validate_config(config)
        now = self.platform.clock()
        stored = config_to_builtins(config)
        with self._write() as session:
            row = self._require(session, key, lock=True)
            if row.status == ExperimentStatus.STOPPED:
                raise Conflict("a stopped experiment cannot change", field="status")
            assert row.id is not None
            changed = _changed_sections(row.config, stored)
            if not changed:
                return _view(row)
            if (
                row.status != ExperimentStatus.DRAFT
                and row.config.get("reward", {}).get("name", "primary") != config.reward.name
            ):
                # A new learning horizon would close every old decision again under the new
                # name and the learner would learn the whole history twice.
                raise InvalidInput(
                    "the learning horizon cannot be renamed once the experiment has started; "
                    "add a report horizon instead",
                    field="reward.name",
                )
            row.name = config.name
            _append_version(session, row, stored, now, actor)
            self._sync_offers(session, row.id, compiled)
            if row.status == ExperimentStatus.RUNNING:
                ensure_model(self.platform, session, experiment=row, compiled=compiled, at=now)
            repositories.audit(
                session,
                at=now,
                actor=actor,
                action="experiment.update",
                experiment_id=row.id,
                details={"version": row.version, "changed": changed},
            )
            return _view(row)

    def get(self, key: str) -> ExperimentView:
        """One experiment. Raises NotFound."""
        with self.platform.read_session() as session:
            return _view(self._require(session, key))

    def all(self) -> list[ExperimentView]:
        """Every experiment, newest first."""
        with self.platform.read_session() as session:
            return [_view(row) for row in repositories.experiments(session)]

    def change_status(self, key: str, status: ExperimentStatus, actor: str) -> ExperimentView:
        """Move the experiment along draft -> running <-> paused -> stopped.

        Starting publishes a cold model snapshot when none fits the explorer yet.

        Raises:
            NotFound: no such experiment.
            Conflict: the transition is not allowed.
        """
        now = self.platform.clock()
        with self._write() as session:
            row = self._require(session, key, lock=True)
            assert row.id is not None
            current = ExperimentStatus(row.status)
            if status == current:
                return _view(row)
            if status not in STATUS_TRANSITIONS[current]:
                raise Conflict(f"cannot go from {current.value} to {status.value}", field="status")
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

    def audit_log(self, key: str) -> list[dict[str, Any]]:
        """The experiment's audit rows, newest first."""
        with self.platform.read_session() as session:
            row = self._require(session, key)
            return [
                {"at": a.at, "actor": a.actor, "action": a.action, "details": a.details}
                for a in repositories.audit_log(session, row.id)
            ]

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
        _append_version(session, row, config_to_builtins(config), now, actor)
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
