"""The ground-truth response model: valid probabilities, reproducible draws, and an exact
expected reward that Monte-Carlo confirms.

Tolerances are fixed up front: a Monte-Carlo mean of N draws must lie within 4 standard errors
(sample standard deviation / sqrt(N)) of the exact expectation (two-sided chance of a miss
6e-5 per comparison under the model; the seeds are fixed, so the outcome is deterministic);
closed forms are checked against numerical integration within 1e-6.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import pytest

from bandit_platform.domain.config import NO_OFFER, Arm, CompiledExperiment, RewardHorizon
from bandit_platform.service.rewards import OutcomeEvent as PlatformEvent
from bandit_platform.service.rewards import horizon_reward
from simulators.population import NEEDS, Customer, Population
from simulators.response import (
    OFFER_KEYS,
    OFFERS,
    SURFACES,
    UNIFORMS_PER_DRAW,
    Situation,
    UnknownArm,
    arm_keys,
    discounted_hypoexponential_cdf,
    draw_outcomes,
    expected_reward,
    hypoexponential_cdf,
    realised_reward,
    realised_rewards,
    response_probabilities,
    sample_outcomes,
)

ALL_ARMS = arm_keys()
WINDOWS = (0.05, 1.0, 24.0, 168.0, 720.0)
WEIGHT_SETS: tuple[tuple[dict[str, float], float], ...] = (
    ({"click": 0.1, "apply": 0.5, "convert": 1.0}, 0.0),  # the demo's
    ({"apply": 1.0}, 0.0),  # first weighted stage is not the click; organic does not count
    ({"convert": 1.0, "dismiss": -0.2}, 0.05),
    ({"click": 0.3, "dismiss": -0.5, "convert": 2.0, "unused": 9.0}, -0.1),
)
MC_DRAWS = 120_000
AGGREGATIONS: tuple[Literal["sum", "max", "earliest"], ...] = ("sum", "max", "earliest")


def _horizons() -> list[RewardHorizon]:
    return [
        RewardHorizon(
            name=f"h{i}",
            event_weights=weights,
            attribution_window_hours=window,
            default_reward=default,
            aggregation=aggregation,
        )
        for i, ((weights, default), window, aggregation) in enumerate(
            itertools.product(WEIGHT_SETS, WINDOWS, AGGREGATIONS)
        )
    ]


HORIZONS = _horizons()


@pytest.fixture(scope="module")
def situations() -> list[Situation]:
    customers = Population.generate(300, 17).customers()
    return [
        Situation(
            customer=c,
            trigger=("app_open", "low_balance", "paycheck_deposit", "large_purchase")[i % 4],
            surface=SURFACES[i % 3],
            time_seconds=float(i * 4111 % 86_400),
            exposures={"budgeting_tool": (1.0,) * (i % 3)},
        )
        for i, c in enumerate(customers)
    ]


def test_offer_table_matches_the_demo_experiment(demo: CompiledExperiment) -> None:
    assert list(OFFER_KEYS) == [o.key for o in demo.config.offers]
    for offer in demo.config.offers:
        assert OFFERS[offer.key].variants == tuple((v.key, v.tone) for v in offer.variants)
        assert OFFERS[offer.key].need in NEEDS
    assert [a.key for a in demo.arms] == ALL_ARMS


@pytest.mark.parametrize(
    "arm",
    [
        "credit_builder/basic",
        "high_yield_savings/loud",
        "high_yield_savings",
        Arm("credit_builder", "basic"),
        Arm("budgeting_tool", None),
        Arm(None, "alerts"),
    ],
)
def test_unknown_arms_raise(keen_situation: Situation, arm: Arm | str) -> None:
    demo_horizon = RewardHorizon(name="h", event_weights={"convert": 1.0})
    with pytest.raises(UnknownArm):
        response_probabilities(keen_situation, arm)
    with pytest.raises(UnknownArm):
        expected_reward(keen_situation, arm, demo_horizon)
    with pytest.raises(UnknownArm):
        sample_outcomes(np.random.default_rng(0), keen_situation, arm)


def test_situation_validates_its_fields(keen_customer: Customer) -> None:
    with pytest.raises(UnknownArm):
        Situation(keen_customer, exposures={"credit_builder": (1.0,)})
    with pytest.raises(ValueError, match="exposure"):
        Situation(keen_customer, exposures={"budgeting_tool": (-1.0,)})
    with pytest.raises(ValueError, match="surface"):
        Situation(keen_customer, surface="billboard")
    with pytest.raises(ValueError, match="trigger"):
        Situation(keen_customer, trigger="coffee_break")


def test_probabilities_are_valid(situations: list[Situation]) -> None:
    for situation in situations:
        for arm in ALL_ARMS:
            p = response_probabilities(situation, arm)
            for value in (p.click, p.dismiss, p.apply, p.convert, p.organic):
                assert 0.0 <= value <= 1.0
            assert p.click + p.dismiss <= 1.0
            assert math.isclose(sum(p.organic_offers), 1.0)
            assert p.organic > 0.0


def test_no_offer_converts_only_organically(
    situations: list[Situation], demo_horizon: RewardHorizon
) -> None:
    for situation in situations[:50]:
        p = response_probabilities(situation, NO_OFFER)
        assert (p.click, p.dismiss, p.apply, p.convert) == (0.0, 0.0, 0.0, 0.0)
        assert p.organic > 0.0
        assert expected_reward(situation, NO_OFFER, demo_horizon) > 0.0
        assert expected_reward(situation, Arm(None, None), demo_horizon) == expected_reward(
            situation, NO_OFFER, demo_horizon
        )
    rng = np.random.default_rng(3)
    events = [e for _ in range(3000) for e in sample_outcomes(rng, situations[0], NO_OFFER)]
    assert events
    assert all(e.event == "convert" and e.organic for e in events)


def test_organic_conversion_does_not_depend_on_the_arm(keen_situation: Situation) -> None:
    organic = {response_probabilities(keen_situation, a).organic for a in ALL_ARMS}
    assert len(organic) == 1


def test_fatigue_lowers_response(keen_situation: Situation, demo_horizon: RewardHorizon) -> None:
    arm = "high_yield_savings/rate"
    exposures: list[tuple[float, ...]] = [(), (100.0,), (5.0,), (5.0, 20.0), (1.0, 5.0, 20.0)]
    clicks, rewards = [], []
    for ages in exposures:
        situation = dataclasses.replace(keen_situation, exposures={"high_yield_savings": ages})
        clicks.append(response_probabilities(situation, arm).click)
        rewards.append(expected_reward(situation, arm, demo_horizon))
    assert clicks == sorted(clicks, reverse=True)
    assert len(set(clicks)) == len(clicks)
    assert rewards == sorted(rewards, reverse=True)
    # Exposures of another offer do not tire this one.
    other = dataclasses.replace(keen_situation, exposures={"budgeting_tool": (1.0, 2.0)})
    assert response_probabilities(other, arm).click == clicks[0]


def test_needs_drive_response(keen_situation: Situation) -> None:
    customer = keen_situation.customer
    for offer in OFFER_KEYS:
        arm = f"{offer}/{OFFERS[offer].variants[0][0]}"
        index = NEEDS.index(OFFERS[offer].need)
        values = []
        for need in (0.05, 0.4, 0.9):
            needs = list(customer.latent.needs)
            needs[index] = need
            latent = dataclasses.replace(customer.latent, needs=tuple(needs))
            situation = dataclasses.replace(
                keen_situation, customer=dataclasses.replace(customer, latent=latent)
            )
            p = response_probabilities(situation, arm)
            values.append((p.click, p.apply, p.click * p.apply * p.convert))
        for stage in range(3):
            assert values[0][stage] < values[1][stage] < values[2][stage]


def test_the_message_matters_modestly(situations: list[Situation]) -> None:
    ratios = []
    for situation in situations:
        for offer in OFFER_KEYS:
            first, second = (f"{offer}/{v}" for v, _ in OFFERS[offer].variants)
            ratios.append(
                response_probabilities(situation, first).click
                / response_probabilities(situation, second).click
            )
    logs = np.abs(np.log(ratios))
    # Bounds from the model: a variant shifts the click log-odds by its tone affinity (segment
    # means differ by at most 0.6, individual noise sd 0.1) and its message fit (range at most
    # 0.45), so |log ratio| <= 0.6 + 4 x 0.14 + 0.45 ~ 1.6; on average it should be a modest
    # 0.1-0.4 (the need alone moves the log-odds by up to 3.2).
    assert logs.max() < 1.6
    assert np.quantile(logs, 0.95) < math.log(2.0)
    assert 0.1 < logs.mean() < 0.4


def test_trigger_and_surface_matter(keen_situation: Situation) -> None:
    arm = "overdraft_protection/no_fees"
    plain = dataclasses.replace(keen_situation, trigger="app_open", surface="home_feed")
    timely = dataclasses.replace(
        keen_situation, trigger="low_balance", surface="transaction_detail"
    )
    assert (
        response_probabilities(timely, arm).click > 1.5 * response_probabilities(plain, arm).click
    )


def test_same_seed_draws_identical_outcomes(keen_situation: Situation) -> None:
    def run(seed: int) -> list[object]:
        rng = np.random.default_rng(seed)
        return [sample_outcomes(rng, keen_situation, arm) for arm in ALL_ARMS * 20]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_single_draws_are_the_rows_of_a_batch(keen_situation: Situation) -> None:
    arm = "budgeting_tool/alerts"
    rng = np.random.default_rng(9)
    single = [sample_outcomes(rng, keen_situation, arm) for _ in range(800)]
    batch = draw_outcomes(
        np.random.default_rng(9), response_probabilities(keen_situation, arm), 800
    )
    assert single == [batch.events(i, keen_situation.time_seconds) for i in range(800)]
    # Each draw consumes a fixed amount of randomness.
    rng = np.random.default_rng(9)
    sample_outcomes(rng, keen_situation, arm)
    reference = np.random.default_rng(9)
    reference.random(UNIFORMS_PER_DRAW)
    assert rng.random() == reference.random()


def test_events_are_consistent(keen_situation: Situation) -> None:
    rng = np.random.default_rng(4)
    for arm in ALL_ARMS:
        for _ in range(300):
            events = sample_outcomes(rng, keen_situation, arm)
            funnel = [e.event for e in events if not e.organic]
            assert [e.delay_hours for e in events] == sorted(e.delay_hours for e in events)
            assert funnel in ([], ["dismiss"], ["click"], ["click", "apply"],
                              ["click", "apply", "convert"])  # fmt: skip
            for event in events:
                assert event.delay_hours >= 0
                assert event.value == 1.0
                assert event.time_seconds == pytest.approx(
                    keen_situation.time_seconds + 3600.0 * event.delay_hours
                )
                if not event.organic:
                    assert arm.startswith(f"{event.offer}/")


def test_rewards_agree_with_the_platforms_reward_join(keen_situation: Situation) -> None:
    decided = datetime(2026, 3, 1, 12, tzinfo=UTC)
    rng = np.random.default_rng(12)
    for arm in ALL_ARMS:
        draws = draw_outcomes(rng, response_probabilities(keen_situation, arm), 400)
        for horizon in HORIZONS[::7]:
            vector = realised_rewards(draws, horizon)
            for i in range(len(draws)):
                events = draws.events(i)
                platform = [
                    PlatformEvent(e.event, e.value, decided + timedelta(hours=e.delay_hours), k)
                    for k, e in enumerate(events)
                ]
                assert realised_reward(events, horizon) == vector[i]
                assert horizon_reward(horizon, decided, platform)[0] == pytest.approx(vector[i])


def test_hypoexponential_closed_forms_match_numerical_integration() -> None:
    rates = [10.0, 0.5, 1.0 / 24.0]
    t = np.linspace(0.0, 300.0, 600_001)
    # References: the exponential and the textbook two-stage CDF; the three-stage CDF must
    # be a CDF and agree with the trapezoid integral of its exact density.
    assert hypoexponential_cdf(rates[:1], 2.0) == pytest.approx(1 - math.exp(-20.0))
    l1, l2 = rates[:2]
    two = 1 - (l2 * math.exp(-l1 * 3.0) - l1 * math.exp(-l2 * 3.0)) / (l2 - l1)
    assert hypoexponential_cdf(rates[:2], 3.0) == pytest.approx(two, abs=1e-12)
    cdf = np.asarray([hypoexponential_cdf(rates, x) for x in t[::20_000]])
    assert np.all(np.diff(cdf) >= 0)
    assert cdf[0] == 0.0
    # discounted form: int_0^w f(s) e^{-r s} ds, by the trapezoid rule on the exact density.
    density = np.zeros_like(t)
    density += sum(
        a * li * np.exp(-li * t)
        for a, li in zip(
            [
                math.prod(lj / (lj - li) for j, lj in enumerate(rates) if j != i)
                for i, li in enumerate(rates)
            ],
            rates,
            strict=True,
        )
    )
    r, w = 1.0 / 120.0, 168.0
    mask = t <= w
    numeric = np.trapezoid(density[mask] * np.exp(-r * t[mask]), t[mask])
    assert discounted_hypoexponential_cdf(rates, r, w) == pytest.approx(numeric, abs=1e-6)
    assert np.trapezoid(density[mask], t[mask]) == pytest.approx(
        hypoexponential_cdf(rates, w), abs=1e-6
    )
    with pytest.raises(ValueError, match="differ"):
        hypoexponential_cdf([1.0, 1.0], 1.0)


@pytest.mark.parametrize("arm", ALL_ARMS)
def test_expected_reward_matches_monte_carlo(keen_situation: Situation, arm: str) -> None:
    seed = ALL_ARMS.index(arm)
    probabilities = response_probabilities(keen_situation, arm)
    draws = draw_outcomes(np.random.default_rng(seed), probabilities, MC_DRAWS)
    for horizon in HORIZONS:
        rewards = realised_rewards(draws, horizon)
        exact = expected_reward(keen_situation, arm, horizon)
        standard_error = rewards.std(ddof=1) / math.sqrt(MC_DRAWS)
        assert abs(rewards.mean() - exact) <= 4 * standard_error + 1e-12, (
            horizon,
            rewards.mean(),
            exact,
            standard_error,
        )


def test_expected_reward_matches_monte_carlo_on_ordinary_customers(
    situations: list[Situation], demo_horizon: RewardHorizon
) -> None:
    # One draw per (situation, arm): the mean over 300 x 13 x 40 draws against the mean of the
    # exact values; the standard error is computed from the per-cell sample variances.
    rng = np.random.default_rng(77)
    estimates, variances, exact = [], [], []
    for situation in situations:
        for arm in ALL_ARMS:
            rewards = realised_rewards(
                draw_outcomes(rng, response_probabilities(situation, arm), 40), demo_horizon
            )
            estimates.append(rewards.mean())
            variances.append(rewards.var(ddof=1) / 40)
            exact.append(expected_reward(situation, arm, demo_horizon))
    cells = len(exact)
    standard_error = math.sqrt(sum(variances)) / cells
    assert abs(np.mean(estimates) - np.mean(exact)) <= 4 * standard_error


def test_expected_reward_orderings(keen_situation: Situation) -> None:
    def horizon(window: float, aggregation: Literal["sum", "max", "earliest"]) -> RewardHorizon:
        return RewardHorizon(
            name="h",
            event_weights={"click": 0.1, "apply": 0.5, "convert": 1.0},
            attribution_window_hours=window,
            aggregation=aggregation,
        )

    for arm in ALL_ARMS:
        for aggregation in AGGREGATIONS:
            values = [
                expected_reward(keen_situation, arm, horizon(w, aggregation)) for w in WINDOWS
            ]
            assert values == sorted(values)
        for w in WINDOWS:
            total = expected_reward(keen_situation, arm, horizon(w, "sum"))
            largest = expected_reward(keen_situation, arm, horizon(w, "max"))
            assert expected_reward(keen_situation, arm, horizon(w, "earliest")) <= largest + 1e-15
            assert largest <= total + 1e-15
    # With no reward events possible, every horizon gives its default.
    nothing = RewardHorizon(name="h", event_weights={"renewed": 1.0}, default_reward=0.25)
    assert expected_reward(keen_situation, ALL_ARMS[0], nothing) == pytest.approx(0.25)
