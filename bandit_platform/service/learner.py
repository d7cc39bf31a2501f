"""The learner: joined rewards -> VW updates -> versioned model snapshots.

One learner runs at a time (see `service.leader`). Each `run_once`:

1. closes the rewards whose wait time has passed (`service.rewards.close_rewards`);
2. for every running or paused experiment, continues from the newest snapshot (reloading it
   when another learner, a warm start or a rollback published a newer one), learns from the
   learnable rewards of the experiment's learning horizon past the snapshot's cursor, in the
   order they closed, with cost = -reward and the logged propensity;
3. publishes a snapshot when `publish_every_examples` new examples were learned, or when
   `publish_every_seconds` passed with at least one.

A crash between learning and publishing loses nothing: the next learner resumes from the
newest snapshot and its cursor, and learns the same examples again.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bandit_platform.domain.config import NO_OFFER, CompiledExperiment
from bandit_platform.domain.decisions import DecisionReason, ExperimentStatus
from bandit_platform.features.context import Namespaces, arm_namespaces, context_namespaces
from bandit_platform.policies.vw_adapter import ContextualBanditModel, model_arguments
from bandit_platform.service.guardrails import GUARDRAIL_CHECK_EVERY, check_guardrails
from bandit_platform.service.models import publish_snapshot
from bandit_platform.service.platform import Platform
from bandit_platform.service.rewards import Watermarks, close_rewards
from bandit_platform.storage import repositories
from bandit_platform.storage.tables import DecisionRow, ExperimentRow, ModelSnapshotRow, RewardRow

logger = logging.getLogger(__name__)

#: How many recent imitated decisions the apprentice match rate is measured on.
MATCH_WINDOW = 200


@dataclass
class LoggedExample:
    """A learnable decision with its closed reward, ready for VW."""

    reward_id: int
    shared: Namespaces
    actions: list[Namespaces]
    chosen: int
    reward: float
    propensity: float
    imitation: bool = False


@dataclass
class _State:
    model: ContextualBanditModel
    version: int
    cursor: int
    examples_seen: int
    pending: int = 0
    #: When this learner loaded or last published the model (the platform's clock).
    last_publish: datetime | None = None
    matches: deque[bool] = field(default_factory=lambda: deque(maxlen=MATCH_WINDOW))
    imitated: int = 0

    @property
    def match_rate(self) -> float | None:
        """Share of recent imitated decisions on which the model agreed with the rules."""
        return sum(self.matches) / len(self.matches) if self.matches else None


@dataclass(frozen=True)
class LearnerReport:
    """What one pass of the learner did."""

    rewards_closed: int
    examples_learned: dict[str, int]
    snapshots_published: dict[str, int]
    #: Experiment key -> the guardrail metric that tripped in this pass.
    guardrails_tripped: dict[str, str] = field(default_factory=dict)


def logged_example(
    decision: DecisionRow,
    reward_id: int,
    reward: float,
    compiled: CompiledExperiment,
    current: CompiledExperiment | None = None,
) -> LoggedExample | None:
    """Rebuild the VW example of a logged decision; None when it cannot be learned.

    `compiled` is the configuration the decision was made under (its offers); `current` the
    experiment's configuration now: only context fields it still allows, and that are not
    protected now, reach the model, so marking a field protected takes effect on old logs too.
    """
    if decision.chosen_offer is None:
        chosen_key = NO_OFFER
    else:
        chosen_key = f"{decision.chosen_offer}/{decision.chosen_variant}"
    try:
        chosen = decision.eligible.index(chosen_key)
        actions = [arm_namespaces(compiled, key) for key in decision.eligible]
    except (ValueError, KeyError):
        return None
    allowed = (current or compiled).context_fields
    protected = (current or compiled).protected
    context = {
        name: value
        for name, value in decision.context.items()
        if name in allowed and name not in protected
    }
    return LoggedExample(
        reward_id=reward_id,
        shared=context_namespaces(context),
        actions=actions,
        chosen=chosen,
        reward=reward,
        propensity=decision.propensity,
        imitation=decision.reason == DecisionReason.APPRENTICE,
    )


def learnable_examples(
    platform: Platform,
    session: Session,
    experiment: ExperimentRow,
    after: int,
    limit: int,
) -> list[LoggedExample]:
    """Examples of the experiment's learning horizon with reward id > `after`.

    Learnable decisions (bandit and uniform A-B, with a real propensity) and apprentice
    decisions (the incumbent rules' choice, for imitation); never a decision whose context a
    consent withdrawal erased (`context_erased_at`), whose reward stays for reports only.
    """
    assert experiment.id is not None
    current = platform.compiled(experiment)
    horizon = current.config.reward.name
    rows = session.execute(
        sa.select(RewardRow, DecisionRow)
        .join(DecisionRow, col(DecisionRow.id) == col(RewardRow.decision_id))
        .where(
            col(RewardRow.experiment_id) == experiment.id,
            col(RewardRow.horizon) == horizon,
            sa.or_(
                col(RewardRow.learnable).is_(True),
                col(DecisionRow.reason) == DecisionReason.APPRENTICE.value,
            ),
            col(RewardRow.id) > after,
            col(DecisionRow.context_erased_at).is_(None),
        )
        .order_by(col(RewardRow.id))
        .limit(limit)
    ).all()
    examples = []
    for reward, decision in rows:
        assert reward.id is not None
        compiled = platform.compiled_version(session, experiment.id, decision.experiment_version)
        example = logged_example(decision, reward.id, reward.reward, compiled, current)
        if example is None:
            logger.warning("decision %s cannot be rebuilt for learning; skipped", decision.id)
            example = LoggedExample(reward.id, {}, [], -1, 0.0, 1.0)
        examples.append(example)
    return examples


def ensure_model(
    platform: Platform,
    session: Session,
    *,
    experiment: ExperimentRow,
    compiled: CompiledExperiment,
    at: datetime,
    force: bool = False,
) -> ModelSnapshotRow | None:
    """Publish a model for the configured explorer when the newest snapshot does not fit it
    (or always, with `force`).

    The new model is warm-started: trained on every learnable, closed reward of the learning
    horizon logged so far (none on a new experiment, which gives a cold model), so that a
    change of explorer does not throw away what was learned.

    Returns:
        The new snapshot, or None when the newest one already fits the configuration.
    """
    assert experiment.id is not None
    arguments = model_arguments(compiled.config.explorer)
    newest = repositories.latest_snapshot_version(session, experiment.id)
    if newest is not None and not force:
        row = repositories.snapshot(session, experiment.id, newest)
        if row is not None and row.arguments == arguments:
            return None
    model = ContextualBanditModel(arguments)
    learned, cursor = 0, 0
    while True:
        examples = learnable_examples(platform, session, experiment, cursor, 5000)
        for example in examples:
            if example.chosen >= 0:
                apply_example(model, example)
                learned += 1
            cursor = example.reward_id
        if len(examples) < 5000:
            break
    note = f"warm start from {learned} logged decisions" if learned else "cold start"
    return publish_snapshot(
        session,
        experiment_id=experiment.id,
        model=model,
        examples_seen=learned,
        at=at,
        last_reward_id=cursor,
        note=note,
    )


class Learner:
    """Learns online from closed rewards and publishes snapshots. Not thread-safe: one runs."""

    def __init__(self, platform: Platform, *, batch_size: int = 2000) -> None:
        self.platform = platform
        self.batch_size = batch_size
        self._states: dict[int, _State] = {}
        #: Where the reward join's previous pass stopped, per experiment and horizon.
        self._watermarks: Watermarks = {}
        #: When this learner last checked the guardrails (the platform's clock).
        self._guardrails_checked: datetime | None = None

    def _state(self, session: Session, experiment: ExperimentRow) -> _State | None:
        assert experiment.id is not None
        newest = repositories.latest_snapshot_version(session, experiment.id)
        state = self._states.get(experiment.id)
        if newest is None:
            return None
        if state is not None and state.version == newest:
            return state
        for version in range(newest, 0, -1):
            row = repositories.snapshot(session, experiment.id, version)
            if row is None or not repositories.snapshot_is_intact(row):
                continue
            try:
                model = ContextualBanditModel(row.arguments, model_data=row.data)
            except Exception:
                logger.exception("snapshot v%s of %s does not load", version, experiment.key)
                continue
            state = _State(
                model,
                newest,
                row.last_reward_id,
                row.examples_seen,
                last_publish=self.platform.clock(),
            )
            self._states[experiment.id] = state
            return state
        return None

    def run_once(self) -> LearnerReport:
        """Close rewards, learn from the new ones, publish snapshots when due."""
        closed = close_rewards(self.platform, watermarks=self._watermarks)
        # Right after the join, on the single learner; at most every GUARDRAIL_CHECK_EVERY
        # (each check scans the decisions past their windows). A trip switches every worker.
        tripped: dict[str, str] = {}
        now = self.platform.clock()
        if (
            self._guardrails_checked is None
            or now - self._guardrails_checked >= GUARDRAIL_CHECK_EVERY
        ):
            tripped = {t.experiment: t.metric for t in check_guardrails(self.platform, now)}
            self._guardrails_checked = now
        learned: dict[str, int] = {}
        published: dict[str, int] = {}
        with self.platform.session() as session:
            experiments = session.exec(
                select(ExperimentRow).where(
                    col(ExperimentRow.status).in_(
                        [ExperimentStatus.RUNNING.value, ExperimentStatus.PAUSED.value]
                    )
                )
            ).all()
        for experiment in experiments:
            count, version = self._learn(experiment)
            if count:
                learned[experiment.key] = count
            if version is not None:
                published[experiment.key] = version
                assert experiment.id is not None
                self.platform.forget_model_checks(experiment.id)
        return LearnerReport(closed, learned, published, tripped)

    def _maybe_go_online(
        self, experiment: ExperimentRow, compiled: CompiledExperiment, state: _State
    ) -> bool:
        """Leave apprentice mode once the model matches the rules often enough."""
        learning = compiled.config.learning
        rate = state.match_rate
        if (
            not learning.apprentice
            or experiment.apprentice_state == "online"
            or rate is None
            or state.imitated < learning.apprentice_min_examples
            or rate < learning.apprentice_match_rate
        ):
            return False
        now = self.platform.clock()
        with self.platform.session() as session, session.begin():
            row = session.get(ExperimentRow, experiment.id)
            assert row is not None
            row.apprentice_state = "online"
            session.add(row)
            repositories.audit(
                session,
                at=now,
                actor="learner",
                action="apprentice.online",
                experiment_id=row.id,
                details={"match_rate": rate, "imitated": state.imitated},
            )
        experiment.apprentice_state = "online"
        logger.info("experiment %s leaves apprentice mode at match rate %.3f", experiment.key, rate)
        return True

    def _learn(self, experiment: ExperimentRow) -> tuple[int, int | None]:
        assert experiment.id is not None
        compiled = self.platform.compiled(experiment)
        learning = compiled.config.learning
        with self.platform.session() as session:
            state = self._state(session, experiment)
        if state is None:
            return 0, None
        if state.model.arguments != model_arguments(compiled.config.explorer):
            # The explorer changed and no matching snapshot exists yet; the experiment
            # service publishes one (warm-started) on the change.
            return 0, None
        total = 0
        while True:
            # A short read per batch: SQLite readers here hold the write lock, so learning
            # happens outside the transaction.
            with self.platform.session() as session:
                examples = learnable_examples(
                    self.platform, session, experiment, state.cursor, self.batch_size
                )
            for example in examples:
                if example.chosen >= 0:
                    agreed = apply_example(state.model, example)
                    if agreed is not None:
                        state.matches.append(agreed)
                        state.imitated += 1
                    state.examples_seen += 1
                    state.pending += 1
                    total += 1
                state.cursor = example.reward_id
            if len(examples) < self.batch_size:
                break
        switched = self._maybe_go_online(experiment, compiled, state)
        due = (
            switched
            or state.pending >= learning.publish_every_examples
            or (
                state.pending > 0
                and state.last_publish is not None
                and (self.platform.clock() - state.last_publish).total_seconds()
                >= learning.publish_every_seconds
            )
        )
        if not due:
            return total, None
        with self.platform.session() as session, session.begin():
            newest = repositories.latest_snapshot_version(session, experiment.id)
            if newest != state.version:
                # Someone else published meanwhile (a rollback or a warm start): theirs wins;
                # the next pass reloads it and continues from its cursor.
                self._states.pop(experiment.id, None)
                return total, None
            row = publish_snapshot(
                session,
                experiment_id=experiment.id,
                model=state.model,
                examples_seen=state.examples_seen,
                at=self.platform.clock(),
                last_reward_id=state.cursor,
                note=(
                    "apprentice reached its match rate: online from now"
                    if switched
                    else f"{state.pending} new examples"
                ),
                match_rate=state.match_rate,
            )
        state.version = row.version
        state.pending = 0
        state.last_publish = self.platform.clock()
        return total, row.version


def apply_example(model: ContextualBanditModel, example: LoggedExample) -> bool | None:
    """Learn one logged example: a bandit update, or an imitation lesson.

    Returns:
        For an imitation lesson, whether the model already agreed with the rules; else None.
    """
    if example.imitation:
        return imitate(model, example)
    model.learn(example.shared, example.actions, example.chosen, example.reward, example.propensity)
    return None


def imitate(model: ContextualBanditModel, example: LoggedExample) -> bool:
    """Teach the model the rules' choice; True when it already agreed before this lesson.

    Every arm is labelled (reward 1 for the rules' choice, 0 for the others, probability 1),
    so the model's scores rank the rules' choice first where it has learned them.
    """
    probabilities = model.predict(example.shared, example.actions)
    agreed = max(range(len(probabilities)), key=probabilities.__getitem__) == example.chosen
    for index in range(len(example.actions)):
        reward = 1.0 if index == example.chosen else 0.0
        model.learn(example.shared, example.actions, index, reward, 1.0)
    return agreed


class LearnerRunner:
    """Runs the learner in a background thread of a worker while it holds the lease.

    Every worker starts one; the lease makes exactly one of them learn. The others retry the
    lease every `interval_seconds`, so one takes over when the holder dies.
    """

    def __init__(self, platform: Platform, *, interval_seconds: float = 1.0) -> None:
        from bandit_platform.service.leader import LearnerLease

        self.platform = platform
        self.interval_seconds = interval_seconds
        self.lease = LearnerLease(platform)
        self.learner = Learner(platform)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_report: LearnerReport | None = None
        self.last_error: str | None = None

    def start(self) -> None:
        """Start the background thread."""
        self._thread = threading.Thread(target=self._loop, name="learner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop learning and give the lease up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            if self._thread.is_alive():
                # Still inside a pass: keep the lease (the process exit frees it) rather than
                # let a second learner start beside this one.
                logger.warning("learner pass still running at shutdown; lease kept until exit")
                return
        self.lease.release()

    def step(self) -> LearnerReport | None:
        """One pass: take or keep the lease, then learn once if held."""
        if not (self.lease.try_acquire() and self.lease.alive()):
            self.learner = Learner(self.platform)  # a new holder starts from the snapshots
            return None
        report = self.learner.run_once()
        self.last_report = report
        self.lease.heartbeat(
            {
                "rewards_closed": report.rewards_closed,
                "examples_learned": report.examples_learned,
                "snapshots_published": report.snapshots_published,
            }
        )
        return report

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
                self.last_error = None
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.exception("learner pass failed")
            self._stop.wait(self.interval_seconds)
