"""Exact ground truth for policies: expected reward per decision, lift and the oracle.

A policy is a function from a `Situation` to `{arm key: probability}` over arm keys as the
platform writes them (`offer/variant` or `no_offer`). Over a snapshot of situations
`s_1..s_N`, the value of policy `pi` for a reward horizon is

    V(pi) = (1 / N) sum_i sum_a pi(a | s_i) E[R | s_i, a],

with `E[R | s, a]` from `simulators.response.expected_reward` (exact, closed form). The
lift of `pi_a` over `pi_b` is `V(pi_a) - V(pi_b)` on the same situations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from bandit_platform.domain.config import NO_OFFER, Arm, CompiledExperiment, RewardHorizon
from simulators.response import (
    DEFAULT_MODEL,
    ResponseModel,
    Situation,
    UnknownArm,
    arm_keys,
    expected_reward,
    parse_arm,
)

Policy = Callable[[Situation], Mapping[str, float]]

#: Largest accepted deviation of a policy's probabilities from summing to 1.
PROBABILITY_TOLERANCE = 1e-9


def _key(arm: Arm | str) -> str:
    return arm.key if isinstance(arm, Arm) else arm


def check_distribution(distribution: Mapping[str, float]) -> None:
    """Check a policy's output: known arms, probabilities in [0, 1] summing to 1.

    Raises:
        UnknownArm: for an unknown arm key.
        ValueError: for a negative, non-finite or non-normalised probability.
    """
    total = 0.0
    for key, probability in distribution.items():
        parse_arm(key)
        if not (math.isfinite(probability) and 0.0 <= probability <= 1.0 + PROBABILITY_TOLERANCE):
            raise ValueError(f"probability of {key!r} is {probability!r}, not in [0, 1]")
        total += probability
    if abs(total - 1.0) > PROBABILITY_TOLERANCE:
        raise ValueError(f"probabilities sum to {total!r}, not 1")


def policy_value(
    policy: Policy,
    situations: Sequence[Situation],
    horizon: RewardHorizon,
    *,
    model: ResponseModel = DEFAULT_MODEL,
) -> float:
    """Exact expected reward per decision, `V(pi) = mean_i sum_a pi(a | s_i) E[R | s_i, a]`.

    Raises:
        ValueError: for no situations or an invalid distribution (see `check_distribution`).
        UnknownArm: for an unknown arm.
    """
    if not situations:
        raise ValueError("policy_value needs at least one situation")
    total = 0.0
    for situation in situations:
        distribution = policy(situation)
        check_distribution(distribution)
        total += sum(
            probability * expected_reward(situation, key, horizon, model=model)
            for key, probability in distribution.items()
            if probability > 0.0
        )
    return total / len(situations)


def true_lift(
    policy_a: Policy,
    policy_b: Policy,
    situations: Sequence[Situation],
    horizon: RewardHorizon,
    *,
    model: ResponseModel = DEFAULT_MODEL,
) -> float:
    """`V(policy_a) - V(policy_b)` on the same situations (for example bandit minus holdout)."""
    return policy_value(policy_a, situations, horizon, model=model) - policy_value(
        policy_b, situations, horizon, model=model
    )


def arm_values(
    situation: Situation,
    arms: Sequence[Arm | str],
    horizon: RewardHorizon,
    *,
    model: ResponseModel = DEFAULT_MODEL,
) -> dict[str, float]:
    """`E[R | s, a]` of each arm, by arm key."""
    return {_key(a): expected_reward(situation, a, horizon, model=model) for a in arms}


def oracle_arm(
    situation: Situation,
    eligible_arms: Sequence[Arm | str],
    horizon: RewardHorizon,
    *,
    model: ResponseModel = DEFAULT_MODEL,
) -> str:
    """The eligible arm with the highest exact expected reward (the first one on ties).

    Raises:
        ValueError: for an empty `eligible_arms`.
    """
    if not eligible_arms:
        raise ValueError("oracle_arm needs at least one eligible arm")
    values = arm_values(situation, eligible_arms, horizon, model=model)
    best = _key(eligible_arms[0])
    for key, value in values.items():
        if value > values[best]:
            best = key
    return best


def eligible_arm_keys(situation: Situation, experiment: CompiledExperiment) -> list[str]:
    """Arm keys whose offer's eligibility rule holds for the situation's context.

    Evaluates the experiment's compiled rules on the flat context (as the platform does) and
    appends `no_offer` when the experiment includes it. Offers the simulated bank does not
    have raise.

    Raises:
        UnknownArm: for an experiment offer or variant without ground truth here.
    """
    flat = situation.customer.flat_context(situation.trigger)
    keys: list[str] = []
    for offer in experiment.config.offers:
        if experiment.eligibility[offer.key].evaluate(flat):
            for variant in offer.variants:
                key = f"{offer.key}/{variant.key}"
                parse_arm(key)
                keys.append(key)
    if experiment.config.include_no_offer:
        keys.append(NO_OFFER)
    return keys


def fixed_policy(
    arm: Arm | str,
    fallback: str = NO_OFFER,
    eligible: Callable[[Situation], Sequence[str]] | None = None,
) -> Policy:
    """Always show `arm`; when `eligible` is given and excludes it, show `fallback`."""
    key = _key(arm)
    parse_arm(key)
    parse_arm(fallback)

    def policy(situation: Situation) -> Mapping[str, float]:
        if eligible is not None and key not in eligible(situation):
            return {fallback: 1.0}
        return {key: 1.0}

    return policy


def uniform_policy(eligible: Callable[[Situation], Sequence[str]] | None = None) -> Policy:
    """Uniform over the eligible arm keys (all 13 demo arms when `eligible` is None)."""
    every = arm_keys()

    def policy(situation: Situation) -> Mapping[str, float]:
        keys = list(eligible(situation)) if eligible is not None else every
        if not keys:
            raise UnknownArm("no eligible arm")
        return {k: 1.0 / len(keys) for k in keys}

    return policy


def ab_uniform_distribution(eligible: Sequence[str]) -> dict[str, float]:
    """The platform's uniform A-B arm over the eligible arm keys: uniform over the offers
    (`no_offer` counts as one), then over each offer's eligible variants.

    This is what `DecisionService` serves the A-B group with `ab_arm.kind = "uniform"`; it
    differs from `uniform_policy` (uniform over arms) when offers have several variants.

    Raises:
        ValueError: for no eligible arm.
    """
    if not eligible:
        raise ValueError("ab_uniform_distribution needs at least one eligible arm")
    variants: dict[str, int] = {}
    for key in eligible:
        offer = key.split("/", 1)[0]
        variants[offer] = variants.get(offer, 0) + 1
    share = 1.0 / len(variants)
    return {key: share / variants[key.split("/", 1)[0]] for key in eligible}


def oracle_policy(
    horizon: RewardHorizon,
    eligible: Callable[[Situation], Sequence[str]] | None = None,
    *,
    model: ResponseModel = DEFAULT_MODEL,
) -> Policy:
    """Deterministically show `oracle_arm` among the eligible arms (all when None)."""
    every = arm_keys()

    def policy(situation: Situation) -> Mapping[str, float]:
        keys = list(eligible(situation)) if eligible is not None else every
        return {oracle_arm(situation, keys, horizon, model=model): 1.0}

    return policy
