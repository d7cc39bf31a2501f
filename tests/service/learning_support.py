"""Helpers shared by the learning-loop tests: experiment configs built from the demo's, decisions
and outcomes through the real services, and reads through a fresh engine (committed data only).

Decision ids are uuid4 and experiment salts random, so single draws are not reproducible;
contexts and outcome rules are seeded, and every statistical check has its tolerance stated.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa

from bandit_platform.demo import DEMO_EXPERIMENT_KEY, demo_config
from bandit_platform.domain.access import AppIdentity
from bandit_platform.domain.config import (
    ABArm,
    ExperimentConfig,
    LearningSettings,
    Offer,
    RewardDefinition,
    TrafficSplit,
)
from bandit_platform.domain.decisions import Decision, ExperimentStatus, Group
from bandit_platform.policies.assignment import assign_group
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.decisions import DecisionRequest, DecisionService
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.outcomes import OutcomeRequest, OutcomeService
from bandit_platform.service.platform import Platform
from bandit_platform.storage import repositories
from bandit_platform.storage.database import create_engine
from tests.conftest import Demo

Context = dict[str, dict[str, Any]]
DEMO = demo_config()
SURFACE = "home_feed"
ALL_BANDIT = TrafficSplit(holdout=0, ab=0, bandit=100)

#: Matches incumbent rule 1 of the demo (high_yield_savings) and makes every offer eligible.
RULE_ONE: Context = {
    "profile": {
        "products_held": ["checking"],
        "income_band": "high",
        "credit_score_band": "excellent",
    },
    "cash_flow": {
        "balance": 6000.0,
        "days_overdrawn_90d": 4.0,
        "travel_spend_monthly": 700.0,
        "revolving_balance": 3000.0,
    },
    "behavior": {"pages_viewed_7d": ["mortgage_calculator"], "device": "ios"},
    "trigger": {"event": "app_open"},
}


def demo_variant(key: str, **changes: Any) -> ExperimentConfig:
    """The demo configuration under another key, with `changes` applied."""
    return msgspec.structs.replace(DEMO, key=key, **changes)


def learning(**changes: Any) -> LearningSettings:
    """The demo's learning settings with `changes` applied; publishing waits a day of the
    platform's clock unless given (tests advance it by hours, and count on the examples
    cadence)."""
    return msgspec.structs.replace(DEMO.learning, **{"publish_every_seconds": 86_400.0, **changes})


def short_reward(**changes: Any) -> RewardDefinition:
    """The demo's reward with a one-hour window and wait (so tests advance the clock an hour),
    learned as `primary`, without the demo's report horizons unless given."""
    values: dict[str, Any] = {
        "name": "primary",
        "attribution_window_hours": 1.0,
        "reward_wait_hours": 1.0,
        "report_horizons": [],
    }
    return msgspec.structs.replace(DEMO.reward, **{**values, **changes})


def offer(key: str) -> Offer:
    """A demo offer with one variant that everyone is eligible for."""
    found = next(o for o in DEMO.offers if o.key == key)
    return msgspec.structs.replace(found, eligibility="true", variants=found.variants[:1])


def two_offer_world(key: str, **changes: Any) -> ExperimentConfig:
    """Two always-eligible offers (A = high_yield_savings, B = premium_travel_card), no
    no-offer arm, no caps, everyone in the bandit group, one-hour reward."""
    values: dict[str, Any] = {
        "offers": [offer("high_yield_savings"), offer("premium_travel_card")],
        "include_no_offer": False,
        "traffic": ALL_BANDIT,
        "ab_arm": ABArm(),
        "fallback_offer": "high_yield_savings",
        "frequency_caps": [],
        "reward": short_reward(event_weights={"convert": 1.0}),
    }
    return demo_variant(key, **{**values, **changes})


def start(platform: Platform, config: ExperimentConfig) -> None:
    """Create the experiment, approve it (as `test`, audited) and start it (which publishes
    model v1)."""
    experiments = ExperimentService(platform)
    experiments.create(config, actor="test")
    experiments.approve(config.key, actor="test", comment="test setup")
    experiments.change_status(config.key, ExperimentStatus.RUNNING, actor="test")


def apply_change(platform: Platform, key: str, config: ExperimentConfig, actor: str) -> None:
    """Change a running experiment: `actor` proposes, a second actor (`test-approver`)
    approves, and the change serves."""
    experiments = ExperimentService(platform)
    proposal = experiments.propose(key, config, actor)
    assert proposal.change is not None
    experiments.approve_change(proposal.change.id, "test-approver", "test change")


def identity(demo: Demo) -> AppIdentity:
    """The demo API key's identity (all scopes)."""
    found = ApiKeyService(demo.platform).verify(demo.api_key)
    assert found is not None
    return found


def decide(
    platform: Platform,
    app: AppIdentity,
    customer: str,
    context: Context | None = None,
    *,
    experiment: str = DEMO_EXPERIMENT_KEY,
    consent: bool | None = True,
) -> Decision:
    """One decision through `DecisionService`."""
    return DecisionService(platform).decide(
        DecisionRequest(
            experiment=experiment,
            customer_id=customer,
            context=RULE_ONE if context is None else context,
            surface=SURFACE,
            consent=consent,
        ),
        app,
    )


_keys: Iterator[int] = itertools.count()


def report(
    platform: Platform,
    app: AppIdentity,
    decision: Decision,
    event: str,
    at: datetime,
    value: float = 1.0,
) -> None:
    """One outcome through `OutcomeService` (a fresh idempotency key each time)."""
    OutcomeService(platform).record(
        OutcomeRequest(
            decision_id=decision.decision_id,
            event=event,
            value=value,
            occurred_at=at,
            idempotency_key=f"k-{next(_keys)}",
        ),
        app,
    )


def rows(platform: Platform, sql: str | sa.Select[Any], **params: Any) -> list[dict[str, Any]]:
    """Rows read through a NEW engine: only committed data is visible.

    A `select` of a table gives typed values (booleans, aware datetimes) on both databases;
    raw SQL gives what the driver gives.
    """
    statement = sa.text(sql) if isinstance(sql, str) else sql
    engine = create_engine(platform.settings.database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(statement, params)]
    finally:
        engine.dispose()


def scalar(platform: Platform, sql: str, **params: Any) -> Any:
    """The single value of a query (through a NEW engine)."""
    (row,) = rows(platform, sql, **params)
    (value,) = row.values()
    return value


def counter(platform: Platform, name: str) -> int:
    """An operational counter's value (0 when never incremented)."""
    found = rows(platform, "SELECT value FROM counters WHERE name = :name", name=name)
    return int(found[0]["value"]) if found else 0


def experiment_id(platform: Platform, key: str) -> int:
    return int(scalar(platform, "SELECT id FROM experiments WHERE key = :key", key=key))


def customers_in(platform: Platform, key: str, group: Group, prefix: str, count: int) -> list[str]:
    """`count` customer ids that the experiment's sticky split puts in `group`."""
    with platform.session() as session:
        row = repositories.experiment_by_key(session, key)
    assert row is not None
    traffic = platform.compiled(row).config.traffic
    found = []
    for index in range(100_000):
        customer = f"{prefix}-{index}"
        if assign_group(platform.pseudonym(customer), row.salt, traffic) == group:
            found.append(customer)
            if len(found) == count:
                return found
    raise AssertionError(f"fewer than {count} customers fall in {group}")


# Ranges straddle the thresholds the demo's rules test.
_NUMBER_RANGES = {
    "cash_flow.balance": (-500.0, 30_000.0),
    "cash_flow.revolving_balance": (0.0, 6_000.0),
    "cash_flow.days_overdrawn_90d": (0.0, 8.0),
    "cash_flow.travel_spend_monthly": (0.0, 1_500.0),
}


def random_context(rng: random.Random) -> Context:
    """A context over the demo's allow-list; each field present with probability 0.85."""
    context: Context = {}
    for spec in DEMO.context_fields:
        if rng.random() > 0.85:
            continue
        section, name = spec.name.split(".", 1)
        value: Any
        if spec.type == "number":
            low, high = _NUMBER_RANGES.get(spec.name, (0.0, 100.0))
            value = round(rng.uniform(low, high), 2)
        elif spec.type == "boolean":
            value = rng.random() < 0.5
        elif spec.type == "category":
            assert spec.values is not None
            value = rng.choice(spec.values)
        else:
            assert spec.values is not None
            value = rng.sample(spec.values, rng.randint(0, len(spec.values)))
        context.setdefault(section, {})[name] = value
    return context
