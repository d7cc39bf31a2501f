"""The reward join: outcomes inside a horizon's attribution window become one reward.

For every decision and every reward horizon of its experiment, once the horizon's reward wait
time has passed, exactly one row is written to the `rewards` ledger: the aggregation (`sum`,
`max` or `earliest`) of `weight x value` over the outcomes whose time lies inside the window,
or the horizon's default reward when there are none. The job is idempotent and transactional:
each batch is one transaction and the ledger's unique key (decision, horizon) makes a second
run, or a run after a crash half-way, write nothing twice. Every decision gets rewards (reports
use all groups); the `learnable` flag says whether the learner may use it.

The experiment's current reward definition applies to every decision whose reward has not
closed yet.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from bandit_platform.domain.config import RewardHorizon
from bandit_platform.service.platform import Platform
from bandit_platform.storage.tables import DecisionRow, ExperimentRow, OutcomeRow, RewardRow

#: Decisions closed per transaction.
BATCH_SIZE = 1000
#: How far before the last pass's cutoff the next pass looks again: a decision made up to this
#: long before the cutoff might commit after the pass read (its transaction still open, or its
#: worker's clock behind), so the clock-skew tolerance is added to this margin.
WATERMARK_MARGIN = timedelta(hours=1)

#: Per (experiment id, horizon name): decisions made before this time all have that reward.
Watermarks = dict[tuple[int, str], datetime]


@dataclass(frozen=True)
class OutcomeEvent:
    """The part of an outcome the reward needs."""

    event: str
    value: float
    occurred_at: datetime
    outcome_id: int


def horizon_reward(
    horizon: RewardHorizon,
    decided_at: datetime,
    outcomes: Iterable[OutcomeEvent],
    skew: timedelta = timedelta(0),
) -> tuple[float, int]:
    """The reward of one decision for one horizon, and how many outcomes made it.

    Outcomes count when their event has a weight and they occurred in
    `[decided_at - skew, decided_at + attribution window]`. Each contributes
    `weight x value`; `sum` adds them, `max` takes the largest, `earliest` takes the first to
    occur. With none, the horizon's default reward applies (count 0).
    """
    end = decided_at + timedelta(hours=horizon.attribution_window_hours)
    start = decided_at - skew
    counted = sorted(
        (o for o in outcomes if o.event in horizon.event_weights and start <= o.occurred_at <= end),
        key=lambda o: (o.occurred_at, o.outcome_id),
    )
    if not counted:
        return horizon.default_reward, 0
    contributions = [horizon.event_weights[o.event] * o.value for o in counted]
    if horizon.aggregation == "sum":
        return float(sum(contributions)), len(counted)
    if horizon.aggregation == "max":
        return float(max(contributions)), len(counted)
    return float(contributions[0]), len(counted)


def _insert_ignoring_duplicates(session: Session, rows: Sequence[dict[str, object]]) -> int:
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # Count the rows RETURNING gives back: the driver's rowcount of a multi-row INSERT ... ON
    # CONFLICT is -1 with psycopg 3, which made `close_rewards` report negative counts.
    statement = (
        insert(RewardRow)
        .values(list(rows))
        .on_conflict_do_nothing(index_elements=["decision_id", "horizon"])
        .returning(col(RewardRow.id))
    )
    return len(session.execute(statement).all())


def _close_batch(
    session: Session,
    experiment: ExperimentRow,
    horizon: RewardHorizon,
    now: datetime,
    skew: timedelta,
    batch_size: int,
    since: datetime | None = None,
) -> tuple[int, int]:
    """Close one batch of decisions made from `since` (all with None) until the horizon's
    cutoff; returns (candidates seen, rewards written)."""
    assert experiment.id is not None
    wait = timedelta(hours=horizon.reward_wait_hours or horizon.attribution_window_hours)
    cutoff = now - wait
    already = (
        select(RewardRow.decision_id)
        .where(RewardRow.decision_id == DecisionRow.id, RewardRow.horizon == horizon.name)
        .exists()
    )
    window = [col(DecisionRow.created_at) <= cutoff]
    if since is not None:
        window.append(col(DecisionRow.created_at) >= since)
    candidates = session.execute(
        sa.select(col(DecisionRow.id), col(DecisionRow.created_at), col(DecisionRow.learnable))
        .where(col(DecisionRow.experiment_id) == experiment.id, *window, ~already)
        .order_by(col(DecisionRow.created_at), col(DecisionRow.id))
        .limit(batch_size)
    ).all()
    if not candidates:
        return 0, 0
    ids = [c.id for c in candidates]
    events: dict[str, list[OutcomeEvent]] = defaultdict(list)
    for outcome in session.execute(
        sa.select(
            col(OutcomeRow.id),
            col(OutcomeRow.decision_id),
            col(OutcomeRow.event),
            col(OutcomeRow.value),
            col(OutcomeRow.occurred_at),
        ).where(col(OutcomeRow.decision_id).in_(ids))
    ):
        events[outcome.decision_id].append(
            OutcomeEvent(outcome.event, outcome.value, outcome.occurred_at, outcome.id)
        )
    rows: list[dict[str, object]] = []
    for candidate in candidates:
        reward, count = horizon_reward(horizon, candidate.created_at, events[candidate.id], skew)
        rows.append(
            {
                "decision_id": candidate.id,
                "experiment_id": experiment.id,
                "horizon": horizon.name,
                "reward": reward,
                "source": "outcomes" if count else "default",
                "outcome_count": count,
                "learnable": bool(candidate.learnable),
                "closed_at": now,
            }
        )
    return len(candidates), _insert_ignoring_duplicates(session, rows)


def close_rewards(
    platform: Platform, *, batch_size: int = BATCH_SIZE, watermarks: Watermarks | None = None
) -> int:
    """Close every reward whose wait time has passed, for every experiment and horizon.

    With `watermarks` (kept by the caller between passes, e.g. the learner), a pass reads only
    the decisions made since the previous pass's cutoff minus `WATERMARK_MARGIN` and the
    clock-skew tolerance, instead of the whole log; the first pass reads everything.

    Returns:
        How many rewards were written.
    """
    now = platform.clock()
    skew = timedelta(seconds=platform.settings.clock_skew_seconds)
    written = 0
    with platform.read_session() as session:
        experiments = session.exec(select(ExperimentRow)).all()
    for experiment in experiments:
        assert experiment.id is not None
        compiled = platform.compiled(experiment)
        for horizon in compiled.config.reward.horizons():
            mark = (experiment.id, horizon.name)
            since = None if watermarks is None else watermarks.get(mark)
            while True:
                with platform.session() as session, session.begin():
                    seen, added = _close_batch(
                        session, experiment, horizon, now, skew, batch_size, since
                    )
                written += added
                if seen < batch_size:
                    break
            if watermarks is not None:
                wait = timedelta(
                    hours=horizon.reward_wait_hours or horizon.attribution_window_hours
                )
                watermarks[mark] = now - wait - WATERMARK_MARGIN - skew
    return written
