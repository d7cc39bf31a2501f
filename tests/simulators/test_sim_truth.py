"""Exact policy values, lift and the oracle, checked against Monte-Carlo.

Tolerances are fixed up front: a Monte-Carlo policy value must lie within 4 standard errors
(stratified by situation: sqrt(sum_s var_s / K) / S) of the exact value; orderings between
exact values are checked exactly (1e-12).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pytest

from bandit_platform.domain.config import NO_OFFER, Arm, CompiledExperiment, RewardHorizon
from bandit_platform.features.context import validate_context
from simulators.response import (
    Situation,
    UnknownArm,
    arm_keys,
    draw_outcomes,
    expected_reward,
    realised_rewards,
    response_probabilities,
)
from simulators.truth import (
    Policy,
    eligible_arm_keys,
    fixed_policy,
    oracle_arm,
    oracle_policy,
    policy_value,
    true_lift,
    uniform_policy,
)
from simulators.world import World

DRAWS_PER_SITUATION = 300
EARLIEST_DAY = RewardHorizon(
    name="day", event_weights={"click": 0.1, "convert": 1.0}, attribution_window_hours=24.0,
    aggregation="earliest", default_reward=-0.01,
)  # fmt: skip


@pytest.fixture(scope="module")
def situations() -> list[Situation]:
    world = World(2000, 31, 30)
    visits = world.visits_on(10)[:150] + world.visits_on(11)[:150]
    result = []
    for i, visit in enumerate(visits):
        exposures = {"budgeting_tool": (3.0, 40.0)} if i % 4 == 0 else {}
        result.append(world.situation(visit, exposures=exposures))
    return result


@pytest.fixture(scope="module")
def eligible(demo: CompiledExperiment) -> Callable[[Situation], Sequence[str]]:
    cache: dict[int, list[str]] = {}

    def arms(situation: Situation) -> list[str]:
        key = id(situation)
        if key not in cache:
            cache[key] = eligible_arm_keys(situation, demo)
        return cache[key]

    return arms


def _monte_carlo(
    policy: Policy, situations: list[Situation], horizon: RewardHorizon, seed: int
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means, variances = [], []
    for situation in situations:
        distribution = policy(situation)
        keys = list(distribution)
        counts = rng.multinomial(DRAWS_PER_SITUATION, [distribution[k] for k in keys])
        rewards = np.concatenate(
            [
                realised_rewards(
                    draw_outcomes(rng, response_probabilities(situation, key), int(count)),
                    horizon,
                )
                for key, count in zip(keys, counts, strict=True)
                if count
            ]
        )
        means.append(rewards.mean())
        variances.append(rewards.var(ddof=1) / DRAWS_PER_SITUATION)
    return float(np.mean(means)), math.sqrt(sum(variances)) / len(situations)


@pytest.mark.parametrize("horizon_name", ["demo", "earliest"])
@pytest.mark.parametrize("policy_name", ["uniform", "oracle", "fixed", "holdout"])
def test_policy_value_matches_monte_carlo(
    situations: list[Situation],
    eligible: Callable[[Situation], Sequence[str]],
    demo_horizon: RewardHorizon,
    policy_name: str,
    horizon_name: str,
) -> None:
    horizon = demo_horizon if horizon_name == "demo" else EARLIEST_DAY
    policy = {
        "uniform": uniform_policy(eligible),
        "oracle": oracle_policy(horizon, eligible),
        "fixed": fixed_policy("overdraft_protection/no_fees", eligible=eligible),
        "holdout": fixed_policy(NO_OFFER),
    }[policy_name]
    exact = policy_value(policy, situations, horizon)
    estimate, standard_error = _monte_carlo(policy, situations, horizon, seed=len(policy_name))
    assert abs(estimate - exact) <= 4 * standard_error


def test_the_oracle_beats_every_fixed_policy(
    situations: list[Situation],
    eligible: Callable[[Situation], Sequence[str]],
    demo_horizon: RewardHorizon,
) -> None:
    oracle = policy_value(oracle_policy(demo_horizon, eligible), situations, demo_horizon)
    fixed = {
        key: policy_value(fixed_policy(key, eligible=eligible), situations, demo_horizon)
        for key in arm_keys()
    }
    assert all(oracle >= value - 1e-12 for value in fixed.values())
    assert oracle >= policy_value(uniform_policy(eligible), situations, demo_horizon)
    # The ground truth leaves room to learn: the best single arm is well short of the oracle.
    assert max(fixed.values()) < 0.9 * oracle
    for situation in situations[:50]:
        arms = eligible(situation)
        best = oracle_arm(situation, arms, demo_horizon)
        best_value = expected_reward(situation, best, demo_horizon)
        assert all(best_value >= expected_reward(situation, a, demo_horizon) - 1e-15 for a in arms)


def test_lift_is_the_difference_of_values_and_real_against_the_holdout(
    situations: list[Situation],
    eligible: Callable[[Situation], Sequence[str]],
    demo_horizon: RewardHorizon,
) -> None:
    uniform = uniform_policy(eligible)
    holdout = fixed_policy(NO_OFFER)
    lift = true_lift(uniform, holdout, situations, demo_horizon)
    assert lift == pytest.approx(
        policy_value(uniform, situations, demo_horizon)
        - policy_value(holdout, situations, demo_horizon),
        abs=1e-15,
    )
    assert lift > 0
    assert true_lift(uniform, uniform, situations, demo_horizon) == 0.0
    assert policy_value(holdout, situations, demo_horizon) > 0  # organic conversions


def test_invalid_policies_are_rejected(
    situations: list[Situation], demo_horizon: RewardHorizon
) -> None:
    def constant(distribution: Mapping[str, float]) -> Policy:
        return lambda _situation: distribution

    with pytest.raises(ValueError, match="sum"):
        policy_value(constant({NO_OFFER: 0.5}), situations[:3], demo_horizon)
    with pytest.raises(ValueError, match="not in"):
        policy_value(
            constant({NO_OFFER: 1.5, "budgeting_tool/alerts": -0.5}), situations[:3], demo_horizon
        )
    with pytest.raises(UnknownArm):
        policy_value(constant({"credit_builder/basic": 1.0}), situations[:3], demo_horizon)
    with pytest.raises(ValueError, match="at least one"):
        policy_value(constant({NO_OFFER: 1.0}), [], demo_horizon)
    with pytest.raises(ValueError, match="at least one"):
        oracle_arm(situations[0], [], demo_horizon)


def test_oracle_arm_accepts_arms_and_keeps_the_first_of_ties(
    situations: list[Situation], demo_horizon: RewardHorizon
) -> None:
    situation = situations[0]
    assert oracle_arm(situation, [NO_OFFER, Arm(None, None)], demo_horizon) == NO_OFFER
    best = oracle_arm(situation, arm_keys(), demo_horizon)
    assert oracle_arm(situation, [Arm(*best.split("/")), NO_OFFER], demo_horizon) == best


def test_eligible_arms_follow_the_demo_rules(
    situations: list[Situation], demo: CompiledExperiment
) -> None:
    every = arm_keys()
    for situation in situations:
        keys = eligible_arm_keys(situation, demo)
        assert keys[-1] == NO_OFFER
        assert set(keys) <= set(every)
        # The same rules on the platform's validated context give the same offers.
        values = validate_context(situation.context(), demo).values
        offers = {o for o in demo.offers if demo.eligibility[o].evaluate(values)}
        assert {k.split("/")[0] for k in keys[:-1]} == offers
        held = situation.customer.profile.products_held
        if "savings" in held:
            assert not any(k.startswith("high_yield_savings/") for k in keys)
    # budgeting_tool is always eligible in the demo
    assert all("budgeting_tool/insights" in eligible_arm_keys(s, demo) for s in situations)
