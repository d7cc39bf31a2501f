"""Guardrails: harm metrics (complaints, opt-outs, unsubscribes) that switch an experiment's
bandit group to its baseline when breached, and say so.

The check (`check_guardrails`, run by the learner after its reward pass, at most every
`GUARDRAIL_CHECK_EVERY`) aggregates, per group and in SQL, the decisions whose guardrail window
has passed and how many of them had at least one event of the metric inside the window: the
sufficient statistics of a 0/1 metric. Every decision of a group counts, whatever it was shown
(intention to treat: a no-consent or capped decision is part of what the group does). A
guardrail trips when, at its confidence, the bandit group's rate exceeds the holdout's by more
than `max_increase`, or exceeds `max_rate`.

Because the check looks again and again, it uses the always-valid mixture-SPRT interval
(`evaluation.lift.sequential_absolute_lift`), not a fixed-horizon Welch interval: the
probability that it ever trips when the threshold is not exceeded stays below
`1 - confidence` however often it looks, where repeated Welch tests would trip on noise
sooner or later.

A trip is written to `experiments.guardrail_trip` (what, when, the evidence), audited
(`guardrail.tripped`) and logged as a warning; every worker reads it inside each decision's
transaction, so all of them switch at their next decision. An operator clears it
(`guardrail.cleared`, with a comment); the check then counts only decisions made after the
clearing, so the evidence that tripped it does not trip it again at once.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from bandit_platform.domain.config import CompiledExperiment, Guardrail
from bandit_platform.domain.decisions import ExperimentStatus, Group
from bandit_platform.domain.errors import Conflict, InvalidInput, NotFound
from bandit_platform.evaluation.lift import Lift, SufficientStats, sequential_absolute_lift
from bandit_platform.service.platform import Platform
from bandit_platform.storage import repositories
from bandit_platform.storage.tables import AuditLogRow, DecisionRow, ExperimentRow, OutcomeRow

logger = logging.getLogger(__name__)

#: How often the learner checks the guardrails (on the platform's clock).
GUARDRAIL_CHECK_EVERY = timedelta(minutes=1)
#: Warning code when a guardrail's max_increase cannot be checked: the split has no holdout.
NO_HOLDOUT = "no_holdout"
TRIPPED_ACTION = "guardrail.tripped"
CLEARED_ACTION = "guardrail.cleared"
#: The mixture of the sequential interval is centred on effects of the size of the threshold
#: (its variance is the threshold squared), never narrower than this: a threshold of 0 would
#: otherwise make the mixture degenerate.
MIN_MIXING_SCALE = 1e-3
#: Two units valued 0: a control with mean 0 and no variance, against which the difference
#: interval is the one-sample interval of the other group's mean.
_CONSTANT_ZERO = SufficientStats(2, 0.0, 0.0)


@dataclass(frozen=True)
class GroupRate:
    """One group's rate of a guardrail metric, with its always-valid interval.

    Attributes:
        group: `bandit` or `holdout`.
        n: decisions whose window has passed.
        events: of those, how many had at least one event of the metric in the window.
        rate: `events / n` (None when n = 0).
        lower: lower end of the interval of the rate (None when n < 2).
        upper: upper end of the interval of the rate (None when n < 2).
    """

    group: str
    n: int
    events: int
    rate: float | None
    lower: float | None
    upper: float | None

    @property
    def stats(self) -> SufficientStats:
        """The sufficient statistics of the 0/1 metric (its squares equal its values)."""
        return SufficientStats(self.n, float(self.events), float(self.events))


@dataclass(frozen=True)
class GuardrailVerdict:
    """A guardrail evaluated on the data so far.

    Attributes:
        guardrail: the configured guardrail.
        bandit: the bandit group's rate.
        holdout: the holdout group's rate (None when the experiment has no holdout).
        increase: bandit minus holdout rate with its always-valid interval (None when not
            computable: no holdout, or fewer than 2 decisions in a group).
        ready: a threshold can be checked: its compared groups have `min_decisions`.
        breached: which threshold is exceeded at the guardrail's confidence (`max_increase`
            or `max_rate`), or None.
        warnings: coded warnings of the statistics (e.g. `zero_variance`).
    """

    guardrail: Guardrail
    bandit: GroupRate
    holdout: GroupRate | None
    increase: Lift | None
    ready: bool
    breached: str | None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class GuardrailTrip:
    """A guardrail that tripped during a check."""

    experiment: str
    metric: str
    at: datetime
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GuardrailReport:
    """What the API shows of an experiment's guardrails."""

    experiment: str
    since: datetime | None
    verdicts: list[GuardrailVerdict]
    trip: dict[str, Any] | None


def _mixing_variance(threshold: float) -> float:
    return max(threshold, MIN_MIXING_SCALE) ** 2


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def group_rate(group: str, n: int, events: int, scale: float, confidence: float) -> GroupRate:
    """A group's rate with the always-valid interval of its mean (mixture scale `scale`)."""
    if n < 2:
        return GroupRate(group, n, events, events / n if n else None, None, None)
    stats = SufficientStats(n, float(events), float(events))
    interval = sequential_absolute_lift(stats, _CONSTANT_ZERO, _mixing_variance(scale), confidence)
    return GroupRate(
        group,
        n,
        events,
        events / n,
        _finite(max(interval.lower, 0.0)),
        _finite(min(interval.upper, 1.0)),
    )


def evaluate_guardrail(
    guardrail: Guardrail, bandit: tuple[int, int], holdout: tuple[int, int] | None
) -> GuardrailVerdict:
    """Evaluate a guardrail on (decisions, decisions with the event) per group.

    `max_increase` is breached when the lower end of the always-valid interval of
    `rate_bandit - rate_holdout` (mixture-SPRT, `sequential_absolute_lift` with mixing variance
    `max_increase^2`) exceeds it; `max_rate` when the lower end of the bandit rate's interval
    does. The two-sided interval at `confidence` is used for a one-sided decision, which keeps
    the chance of a false trip at any look below `1 - confidence` (conservatively).
    A threshold is not checked until each group it compares has `min_decisions`;
    `max_increase` not at all without a holdout (warning `no_holdout`).
    """
    rate_scale = guardrail.max_rate if guardrail.max_rate is not None else guardrail.max_increase
    increase_scale = guardrail.max_increase if guardrail.max_increase is not None else rate_scale
    # validate_config requires at least one of the two thresholds.
    assert rate_scale is not None
    assert increase_scale is not None
    bandit_rate = group_rate(Group.BANDIT.value, *bandit, rate_scale, guardrail.confidence)
    holdout_rate = (
        None
        if holdout is None
        else group_rate(Group.HOLDOUT.value, *holdout, rate_scale, guardrail.confidence)
    )
    increase = None
    if holdout_rate is not None and bandit_rate.n >= 2 and holdout_rate.n >= 2:
        increase = sequential_absolute_lift(
            bandit_rate.stats,
            holdout_rate.stats,
            _mixing_variance(increase_scale),
            guardrail.confidence,
        )
    rate_ready = bandit_rate.n >= guardrail.min_decisions
    increase_ready = (
        rate_ready
        and guardrail.max_increase is not None
        and holdout_rate is not None
        and holdout_rate.n >= guardrail.min_decisions
    )
    breached = None
    if (
        increase_ready
        and increase is not None
        and guardrail.max_increase is not None
        and increase.lower > guardrail.max_increase
    ):
        breached = "max_increase"
    elif (
        rate_ready
        and guardrail.max_rate is not None
        and bandit_rate.lower is not None
        and bandit_rate.lower > guardrail.max_rate
    ):
        breached = "max_rate"
    warnings = list(increase.warnings) if increase is not None else []
    if guardrail.max_increase is not None and holdout_rate is None:
        warnings.append(NO_HOLDOUT)
    ready = increase_ready or (rate_ready and guardrail.max_rate is not None)
    return GuardrailVerdict(
        guardrail, bandit_rate, holdout_rate, increase, ready, breached, tuple(warnings)
    )


def _within_window(session: Session, window: timedelta) -> sa.ColumnElement[bool]:
    """`outcome.occurred_at <= decision.created_at + window`, in the database's dialect."""
    occurred = col(OutcomeRow.occurred_at)
    created = col(DecisionRow.created_at)
    if session.get_bind().dialect.name == "postgresql":
        return occurred <= created + sa.literal(window, sa.Interval())
    # SQLite stores timestamps as ISO text: compare them as Julian days.
    days = window.total_seconds() / 86_400.0
    return sa.func.julianday(occurred) <= sa.func.julianday(created) + days


def group_counts(
    session: Session,
    experiment_id: int,
    guardrail: Guardrail,
    now: datetime,
    since: datetime | None = None,
) -> dict[str, tuple[int, int]]:
    """Per group: (decisions made after `since` whose window has passed by `now`, how many
    of them had at least one event of the guardrail's metric inside the window)."""
    window = timedelta(hours=guardrail.window_hours)
    has_event = (
        sa.select(col(OutcomeRow.id))
        .where(
            col(OutcomeRow.decision_id) == col(DecisionRow.id),
            col(OutcomeRow.event) == guardrail.metric,
            _within_window(session, window),
        )
        .exists()
    )
    conditions = [
        col(DecisionRow.experiment_id) == experiment_id,
        col(DecisionRow.created_at) <= now - window,
    ]
    if since is not None:
        conditions.append(col(DecisionRow.created_at) > since)
    rows = session.execute(
        sa.select(
            col(DecisionRow.group),
            sa.func.count(),
            sa.func.count(sa.case((has_event, 1))),
        )
        .where(*conditions)
        .group_by(col(DecisionRow.group))
    ).all()
    return {str(group): (int(n), int(events)) for group, n, events in rows}


def last_cleared(session: Session, experiment_id: int) -> datetime | None:
    """When an operator last cleared the experiment's guardrail trip, or None."""
    at: datetime | None = session.execute(
        sa.select(sa.func.max(col(AuditLogRow.at))).where(
            col(AuditLogRow.experiment_id) == experiment_id,
            col(AuditLogRow.action) == CLEARED_ACTION,
        )
    ).scalar_one_or_none()
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # stored in UTC
    return at


def baseline_of(compiled: CompiledExperiment) -> str:
    """What the bandit group is served while tripped: `incumbent_rules` when the A-B arm
    defines them, else `no_offer` (the holdout's treatment)."""
    return "incumbent_rules" if compiled.config.ab_arm.kind == "incumbent_rules" else "no_offer"


def _verdicts(
    session: Session,
    experiment_id: int,
    compiled: CompiledExperiment,
    now: datetime,
    since: datetime | None,
) -> list[GuardrailVerdict]:
    has_holdout = compiled.config.traffic.holdout > 0.0
    verdicts = []
    for guardrail in compiled.config.guardrails:
        counts = group_counts(session, experiment_id, guardrail, now, since)
        bandit = counts.get(Group.BANDIT.value, (0, 0))
        holdout = counts.get(Group.HOLDOUT.value, (0, 0)) if has_holdout else None
        verdicts.append(evaluate_guardrail(guardrail, bandit, holdout))
    return verdicts


def _rate_json(rate: GroupRate | None) -> dict[str, Any] | None:
    if rate is None:
        return None
    return {
        "n": rate.n,
        "events": rate.events,
        "rate": rate.rate,
        "lower": rate.lower,
        "upper": rate.upper,
    }


def trip_details(
    verdict: GuardrailVerdict, compiled: CompiledExperiment, at: datetime, version: int
) -> dict[str, Any]:
    """The stored record of a trip: what, when, the evidence and what is served instead."""
    guardrail = verdict.guardrail
    if verdict.breached == "max_increase":
        assert verdict.increase is not None
        threshold = guardrail.max_increase
        interval = {
            "kind": "increase",
            "estimate": verdict.increase.estimate,
            "lower": verdict.increase.lower,
            "upper": verdict.increase.upper,
            "method": verdict.increase.method,
        }
    else:
        threshold = guardrail.max_rate
        interval = {
            "kind": "rate",
            "estimate": verdict.bandit.rate,
            "lower": verdict.bandit.lower,
            "upper": verdict.bandit.upper,
            "method": "msprt",
        }
    interval["confidence"] = guardrail.confidence
    return {
        "metric": guardrail.metric,
        "at": at.isoformat(),
        "threshold": {"kind": verdict.breached, "value": threshold},
        "rates": {
            "bandit": verdict.bandit.rate,
            "holdout": verdict.holdout.rate if verdict.holdout is not None else None,
        },
        "n": {
            "bandit": verdict.bandit.n,
            "holdout": verdict.holdout.n if verdict.holdout is not None else None,
        },
        "events": {
            "bandit": verdict.bandit.events,
            "holdout": verdict.holdout.events if verdict.holdout is not None else None,
        },
        "interval": interval,
        "window_hours": guardrail.window_hours,
        "experiment_version": version,
        "baseline": baseline_of(compiled),
    }


def _trip(
    platform: Platform, experiment: ExperimentRow, verdict: GuardrailVerdict, now: datetime
) -> GuardrailTrip | None:
    """Write the trip unless the experiment changed meanwhile (stopped, paused, tripped)."""
    with platform.session() as session, session.begin():
        row = repositories.experiment_by_key(session, experiment.key, for_update=True)
        if (
            row is None
            or row.id is None
            or row.status != ExperimentStatus.RUNNING
            or row.guardrail_trip is not None
        ):
            return None
        details = trip_details(verdict, platform.compiled(row), now, row.version)
        row.guardrail_trip = details
        row.updated_at = now
        session.add(row)
        repositories.audit(
            session,
            at=now,
            actor="guardrails",
            action=TRIPPED_ACTION,
            experiment_id=row.id,
            details=details,
        )
    logger.warning(
        "guardrail %s tripped on experiment %s (%s exceeded): the bandit group is served "
        "the baseline (%s)",
        details["metric"],
        row.key,
        details["threshold"]["kind"],
        details["baseline"],
    )
    return GuardrailTrip(row.key, verdict.guardrail.metric, now, details)


def check_guardrails(platform: Platform, now: datetime | None = None) -> list[GuardrailTrip]:
    """Evaluate the guardrails of every running experiment without a trip; trip the breached.

    At most one guardrail trips per experiment and check (the first breached, in
    configuration order). Meant for the single learner process; a concurrent second check
    writes nothing twice (the trip is written only while none is stored).

    Returns:
        The trips written by this check.
    """
    now = now or platform.clock()
    with platform.read_session() as session:
        experiments = session.exec(
            select(ExperimentRow).where(col(ExperimentRow.status) == ExperimentStatus.RUNNING.value)
        ).all()
    trips = []
    for experiment in experiments:
        assert experiment.id is not None
        # Filtered here, not in SQL: the JSON column stores a cleared trip as JSON null,
        # which `IS NULL` does not match.
        if experiment.guardrail_trip is not None:
            continue
        compiled = platform.compiled(experiment)
        if not compiled.config.guardrails:
            continue
        with platform.read_session() as session:
            since = last_cleared(session, experiment.id)
            verdicts = _verdicts(session, experiment.id, compiled, now, since)
        breached = next((v for v in verdicts if v.breached is not None), None)
        if breached is None:
            continue
        trip = _trip(platform, experiment, breached, now)
        if trip is not None:
            trips.append(trip)
    return trips


class GuardrailService:
    """Reads and clears an experiment's guardrails (the API's use cases)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def report(self, key: str) -> GuardrailReport:
        """The configured guardrails with the current rates per group, and the trip if any.

        Raises:
            NotFound: no such experiment.
        """
        now = self.platform.clock()
        with self.platform.read_session() as session:
            row = repositories.experiment_by_key(session, key)
            if row is None or row.id is None:
                raise NotFound(f"no experiment {key!r}", field="experiment")
            compiled = self.platform.compiled(row)
            since = last_cleared(session, row.id)
            verdicts = _verdicts(session, row.id, compiled, now, since)
            return GuardrailReport(row.key, since, verdicts, row.guardrail_trip)

    def clear(self, key: str, comment: str, actor: str) -> GuardrailReport:
        """Clear the trip: the bandit group is served the bandit again (audited with the
        comment). Later checks count only decisions made from now on.

        Raises:
            InvalidInput: an empty comment.
            NotFound: no such experiment.
            Conflict: no guardrail has tripped.
        """
        if not comment.strip():
            raise InvalidInput("say why the guardrail is cleared", field="comment")
        now = self.platform.clock()
        with self.platform.session() as session, session.begin():
            row = repositories.experiment_by_key(session, key, for_update=True)
            if row is None or row.id is None:
                raise NotFound(f"no experiment {key!r}", field="experiment")
            if row.guardrail_trip is None:
                raise Conflict("no guardrail has tripped on this experiment", field="experiment")
            trip = row.guardrail_trip
            row.guardrail_trip = None
            row.updated_at = now
            session.add(row)
            repositories.audit(
                session,
                at=now,
                actor=actor,
                action=CLEARED_ACTION,
                experiment_id=row.id,
                details={
                    "comment": comment,
                    "metric": trip.get("metric"),
                    "tripped_at": trip.get("at"),
                },
            )
        logger.warning(
            "guardrail %s of experiment %s cleared by %s", trip.get("metric"), key, actor
        )
        # The bandit serves again: look for the newest model at once rather than after the
        # refresh interval.
        self.platform.forget_model_checks(row.id)
        return self.report(key)
