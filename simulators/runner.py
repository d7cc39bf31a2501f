"""Run a platform policy against the simulated world, in-process, through the service layer.

The runner plays the bank: for every visit of the world, in time order, it asks the
platform's `DecisionService` for a decision (exactly as the API does), draws the customer's
response from the ground-truth model, reports each event through `OutcomeService` when
simulated time reaches it, and lets the `Learner` close rewards and learn every
`learn_every_hours` of simulated time. The platform runs on its own SQLite file with a
simulated clock and seeded decision ids, so a run reproduces bit-for-bit from its seed.

Beside the platform's own decision log (exported as Parquet and dsjson), it records the truth
for every decision: the exact expected reward of the arm shown, of the policy's whole
probability vector, and of the best eligible arm (the oracle), hence the regret.
"""

from __future__ import annotations

import heapq
import json
import random
import tomllib
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import polars as pl

from bandit_platform.demo import demo_config
from bandit_platform.domain.access import Scope
from bandit_platform.domain.config import (
    ExperimentConfig,
    RewardHorizon,
    TrafficSplit,
    config_from_builtins,
)
from bandit_platform.domain.decisions import ExperimentStatus
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.decisions import DecisionRequest, DecisionService
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.export import export_log
from bandit_platform.service.learner import Learner
from bandit_platform.service.outcomes import OutcomeRequest, OutcomeService
from bandit_platform.service.platform import Platform
from bandit_platform.settings import Settings
from bandit_platform.storage.database import upgrade
from simulators.response import expected_reward, sample_outcomes
from simulators.world import World

PolicyKind = Literal["bandit", "uniform", "incumbent"]


class PolicySpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Which platform policy serves the simulated customers.

    `bandit`: the VW bandit with `explorer` (any explorer of the experiment schema);
    `uniform`: the A-B arm, uniform over eligible offers; `incumbent`: the A-B arm with the
    demo's incumbent rules.
    """

    kind: PolicyKind = "bandit"
    explorer: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"kind": "epsilon_greedy", "epsilon": 0.1}
    )


class SimulationConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One simulation run (a TOML file in `experiments/`)."""

    name: str
    seed: int = 1
    customers: int = 5000
    days: int = 30
    max_decisions: int | None = None
    learn_every_hours: float = 1.0
    publish_every_examples: int = 200
    policy: PolicySpec = msgspec.field(default_factory=PolicySpec)

    @classmethod
    def from_toml(cls, path: Path) -> SimulationConfig:
        """Read and validate a TOML run file."""
        return msgspec.convert(tomllib.loads(path.read_text()), cls)


@dataclass
class SimulationResult:
    """What a run produced."""

    config: SimulationConfig
    directory: Path
    decisions: int
    outcomes: int
    policy_value: float
    oracle_value: float
    realised_reward: float
    truth: pl.DataFrame = field(repr=False)

    @property
    def regret(self) -> float:
        """Cumulative expected regret against the oracle."""
        return float(self.truth["regret"].sum())

    def summary(self) -> dict[str, Any]:
        """The run's headline numbers (JSON-ready)."""
        return {
            "name": self.config.name,
            "seed": self.config.seed,
            "policy": msgspec.to_builtins(self.config.policy),
            "decisions": self.decisions,
            "outcomes": self.outcomes,
            "true_policy_value_per_decision": self.policy_value,
            "oracle_value_per_decision": self.oracle_value,
            "realised_reward_per_decision": self.realised_reward,
            "cumulative_regret": self.regret,
        }


class SimulatedClock:
    """The platform's clock during a run: set by the runner, never by the wall."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> datetime:
        """The time `seconds` after the start of day 0."""
        return self.start + timedelta(seconds=seconds)


def experiment_for(config: SimulationConfig) -> ExperimentConfig:
    """The demo experiment, with every customer in the group that runs the chosen policy."""
    document = msgspec.to_builtins(demo_config())
    document["key"] = f"sim-{config.name}"[:63]
    document["name"] = f"Simulation {config.name}"[:120]
    split = {"bandit": (0, 0, 100), "uniform": (0, 100, 0), "incumbent": (0, 100, 0)}
    holdout, ab, bandit = split[config.policy.kind]
    document["traffic"] = msgspec.to_builtins(TrafficSplit(holdout=holdout, ab=ab, bandit=bandit))
    if config.policy.kind == "uniform":
        document["ab_arm"] = {"kind": "uniform"}
    document["explorer"] = dict(config.policy.explorer)
    document.setdefault("learning", {})
    document["learning"]["publish_every_examples"] = config.publish_every_examples
    return config_from_builtins(document)


def _seeded_ids(seed: int) -> Callable[[], str]:
    source = random.Random(seed)
    return lambda: str(uuid.UUID(int=source.getrandbits(128), version=4))


def run_simulation(
    config: SimulationConfig,
    directory: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> SimulationResult:
    """Run `config` and write its logs and truth into `directory` (replacing a previous run).

    Writes `simulation.db` (the platform's database), `<experiment>.parquet` and `.dsjson`
    (the platform's export), `truth.parquet` (per decision: expected reward of the arm shown,
    of the policy, of the oracle; regret) and `summary.json`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    database = directory / "simulation.db"
    for stale in directory.glob("simulation.db*"):
        stale.unlink()
    url = f"sqlite:///{database}"
    upgrade(url)

    world = World(config.customers, config.seed, config.days)
    start = datetime(world.start.year, world.start.month, world.start.day, tzinfo=UTC)
    clock = SimulatedClock(start)
    settings = Settings(
        database_url=url,
        pseudonym_key=f"simulation-{config.seed:016d}".encode(),
        durable=False,
        model_refresh_seconds=0.0,
    )
    platform = Platform(settings, clock=clock, new_id=_seeded_ids(config.seed))
    try:
        return _run(config, directory, world, clock, platform, progress)
    finally:
        platform.close()


def _run(
    config: SimulationConfig,
    directory: Path,
    world: World,
    clock: SimulatedClock,
    platform: Platform,
    progress: Callable[[int, int], None] | None,
) -> SimulationResult:
    experiment = experiment_for(config)
    experiments = ExperimentService(platform)
    experiments.create(experiment, "simulator", salt=f"{config.seed:032x}")
    experiments.change_status(experiment.key, ExperimentStatus.RUNNING, "simulator")
    app = ApiKeyService(platform).create("simulator", {Scope.DECIDE, Scope.OUTCOME}).identity
    decide = DecisionService(platform).decide
    record = OutcomeService(platform).record
    learner = Learner(platform)
    horizon: RewardHorizon = experiment.reward.learning_horizon()
    rng = np.random.default_rng(config.seed + 1)

    visits = list(world.visits())
    if config.max_decisions is not None:
        visits = visits[: config.max_decisions]
    total = len(visits)
    customers_by_day: dict[int, set[int]] = defaultdict(set)
    for visit in visits:
        customers_by_day[visit.day].add(visit.customer_id)
    pending: list[tuple[float, int, str, str, float]] = []
    sequence = 0
    outcomes_posted = 0
    exposures: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    learn_every = config.learn_every_hours * 3600.0
    next_learn = learn_every
    states: dict[int, Any] = {}
    state_day = -1
    rows: list[dict[str, Any]] = []

    def post_until(seconds: float) -> None:
        nonlocal outcomes_posted
        while pending and pending[0][0] <= seconds:
            at, _, decision_id, event, value = heapq.heappop(pending)
            clock.now = clock.at(at)
            record(
                OutcomeRequest(
                    decision_id=decision_id,
                    event=event,
                    value=value,
                    occurred_at=clock.now,
                    idempotency_key=f"{decision_id}-{outcomes_posted}",
                ),
                app,
            )
            outcomes_posted += 1

    for index, visit in enumerate(visits):
        seconds = float(visit.time_seconds)
        while next_learn <= seconds:
            post_until(next_learn)
            clock.now = clock.at(next_learn)
            learner.run_once()
            next_learn += learn_every
        post_until(seconds)
        clock.now = clock.at(seconds)
        if visit.day != state_day:
            ids = sorted(customers_by_day[visit.day])
            states = {s.customer_id: s for s in world.customer_states(visit.day, ids)}
            state_day = visit.day
        customer = states[visit.customer_id]
        ages = {
            offer: [(seconds - shown) / 3600.0 for shown in times]
            for offer, times in exposures[visit.customer_id].items()
        }
        situation = world.situation(visit, exposures=ages, customer=customer)
        decision = decide(
            DecisionRequest(
                experiment=experiment.key,
                customer_id=f"sim-customer-{visit.customer_id}",
                context=customer.context(visit.trigger),
                surface=visit.surface,
                consent=True,
            ),
            app,
        )
        chosen = "no_offer" if decision.offer is None else f"{decision.offer}/{decision.variant}"
        values = {arm: expected_reward(situation, arm, horizon) for arm in decision.eligible}
        policy_value = sum(p * values[arm] for arm, p in decision.probabilities.items())
        oracle_value = max(values.values())
        for event in sample_outcomes(rng, situation, chosen):
            sequence += 1
            heapq.heappush(
                pending,
                (event.time_seconds, sequence, decision.decision_id, event.event, event.value),
            )
        if decision.offer is not None:
            exposures[visit.customer_id][decision.offer].append(seconds)
        rows.append(
            {
                "decision_id": decision.decision_id,
                "time_seconds": seconds,
                "customer_id": visit.customer_id,
                "segment": customer.latent.segment,
                "group": decision.group.value,
                "reason": decision.reason.value,
                "arm": chosen,
                "propensity": decision.propensity,
                "expected_reward": values[chosen],
                "policy_expected_reward": policy_value,
                "oracle_expected_reward": oracle_value,
                "regret": oracle_value - policy_value,
                "model_version": decision.model_version,
            }
        )
        if progress is not None:
            progress(index + 1, total)

    # Let every window close: post the remaining events, then close and learn once more.
    end = max((p[0] for p in pending), default=float(visits[-1].time_seconds) if visits else 0.0)
    post_until(end)
    wait = (horizon.reward_wait_hours or horizon.attribution_window_hours) * 3600.0
    clock.now = clock.at(end + wait + 3600.0)
    learner.run_once()

    truth = pl.DataFrame(rows)
    export_log(platform, experiment.key, directory)
    ledger = pl.read_parquet(directory / f"{experiment.key}.parquet")
    realised_column = f"reward_{horizon.name}"
    realised_mean = (
        float(ledger.select(pl.col(realised_column).mean()).item() or 0.0) if ledger.height else 0.0
    )
    truth = truth.with_columns(
        pl.col("policy_expected_reward").cum_sum().alias("cumulative_policy_reward"),
        pl.col("oracle_expected_reward").cum_sum().alias("cumulative_oracle_reward"),
        pl.col("regret").cum_sum().alias("cumulative_regret"),
    )
    truth.write_parquet(directory / "truth.parquet")
    n = max(truth.height, 1)
    result = SimulationResult(
        config=config,
        directory=directory,
        decisions=truth.height,
        outcomes=outcomes_posted,
        policy_value=float(truth["policy_expected_reward"].sum()) / n,
        oracle_value=float(truth["oracle_expected_reward"].sum()) / n,
        realised_reward=realised_mean,
        truth=truth,
    )
    (directory / "summary.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    return result
