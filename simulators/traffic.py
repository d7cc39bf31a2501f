"""Realistic traffic for a running platform: simulated customers played into a real experiment.

The demo (`bandit-platform demo`) uses this so that a fresh service has decisions, outcomes,
closed rewards and learned model versions to show. Unlike a research run (`runner`), it plays
into the platform's own database and experiment, with random decision ids and the
platform's pseudonym key, through the same services the API calls. Its simulated clock runs
in the past and stops at the present: the visits fill `days` days that end one reward window
before now, so that the rewards of most decisions have closed and been learned by the time the
service starts serving (the service's own learner closes the rest as real time passes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bandit_platform.domain.access import Scope
from bandit_platform.domain.config import ExperimentConfig, config_from_builtins
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.decisions import DecisionService
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.platform import Platform
from bandit_platform.settings import Settings
from simulators.runner import InProcessPort, SimulatedClock, SimulationConfig, play
from simulators.world import World


@dataclass(frozen=True)
class TrafficSummary:
    """What was played into the experiment."""

    decisions: int
    outcomes: int
    first_decision_at: datetime
    last_event_at: datetime


def traffic_start(experiment: ExperimentConfig, days: int, end: datetime) -> datetime:
    """Midnight (UTC) of the first simulated day: `days` days of visits end one learning
    reward window (plus an hour) before `end`, so that their rewards have closed by then."""
    horizon = experiment.reward.learning_horizon()
    closing = timedelta(
        hours=max(horizon.attribution_window_hours, horizon.reward_wait_hours or 0.0) + 1.0
    )
    start = end - closing - timedelta(days=days)
    return start.replace(hour=0, minute=0, second=0, microsecond=0)


def play_traffic(
    settings: Settings,
    experiment_key: str,
    *,
    customers: int = 500,
    days: int = 14,
    seed: int = 7,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TrafficSummary:
    """Play `days` days of `customers` simulated customers into the running experiment.

    Decisions, outcomes and hourly learner passes go through the platform's services on a
    simulated clock that stops at `now` (the wall clock by default), one learning reward
    window after the last visit; events later than `now` are not played.

    Raises:
        NotFound: no such experiment. Conflict: it is not running.
    """
    end = now or datetime.now(UTC)
    clock = SimulatedClock(end)
    platform = Platform(settings, clock=clock)
    try:
        experiment = config_from_builtins(ExperimentService(platform).get(experiment_key).config)
        clock.start = clock.now = traffic_start(experiment, days, end)
        key = ApiKeyService(platform).create("demo-traffic", {Scope.DECIDE, Scope.OUTCOME})
        port = InProcessPort(platform, clock, key.identity, DecisionService(platform))
        config = SimulationConfig(name="demo-traffic", seed=seed, customers=customers, days=days)
        world = World(customers, seed, days)
        rows, outcomes = play(
            config,
            experiment,
            world,
            clock,
            port,
            progress,
            until_seconds=(end - clock.start).total_seconds(),
        )
        # The traffic's own key stops working once the traffic has been played.
        ApiKeyService(platform).revoke(key.prefix, actor="demo-traffic")
    finally:
        platform.close()
    return TrafficSummary(
        decisions=len(rows),
        outcomes=outcomes,
        first_decision_at=clock.at(float(rows[0]["time_seconds"])) if rows else clock.start,
        last_event_at=clock.now,
    )
