"""The synthetic population: reproducible, realistic by segment, and valid demo contexts.

Tolerances are fixed up front: segment shares within 0.015 of their weights for 20,000
customers (about 5 standard errors); signal contrasts between segments are large effects
(ratios of 3 or more, shares well apart) with margins of at least 30 % over the values the
model implies.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np
import pytest

from bandit_platform.domain.config import CompiledExperiment
from bandit_platform.features.context import validate_context
from simulators.population import (
    SEGMENT_WEIGHTS,
    SEGMENTS,
    TRIGGERS,
    Customer,
    Population,
    hash_normal,
    hash_uniform,
    segment_counts,
)

N = 20_000


@pytest.fixture(scope="module")
def population() -> Population:
    return Population.generate(N, 5)


@pytest.fixture(scope="module")
def customers(population: Population) -> list[Customer]:
    return population.customers()


def _arrays(population: Population) -> dict[str, bytes]:
    return {
        f.name: np.asarray(getattr(population, f.name)).tobytes()
        for f in dataclasses.fields(population)
    }


def test_same_seed_gives_bit_for_bit_identical_population() -> None:
    first, second = Population.generate(4000, 11), Population.generate(4000, 11)
    assert _arrays(first) == _arrays(second)
    assert first.customers() == second.customers()


def test_different_seed_gives_a_different_population() -> None:
    first, second = Population.generate(4000, 11), Population.generate(4000, 12)
    assert not np.array_equal(first.segment, second.segment)
    assert first.customers(range(50)) != second.customers(range(50))


def test_one_customer_equals_its_row_in_a_batch(population: Population) -> None:
    batch = population.customers([3, 99, 1234])
    assert [population.customer(i) for i in (3, 99, 1234)] == batch


def test_generating_100k_customers_is_fast() -> None:
    # Bound: 10 s (the brief); it takes well under a second on a laptop.
    started = time.perf_counter()
    population = Population.generate(100_000, 1)
    population.customers(range(1000))
    assert len(population) == 100_000
    assert time.perf_counter() - started < 10.0


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError, match="seed"):
        Population.generate(10, -1)
    with pytest.raises(ValueError, match="size"):
        Population.generate(-1, 1)
    with pytest.raises(IndexError):
        Population.generate(10, 1).customer(10)


def test_every_context_passes_the_demo_allow_list(
    customers: list[Customer], demo: CompiledExperiment
) -> None:
    allowed = set(demo.context_fields)
    for customer in customers[:3000]:
        for trigger in TRIGGERS:
            validated = validate_context(customer.context(trigger), demo)
            assert set(validated.values) == allowed
            assert validated.dropped_protected == ()
            assert validated.values["trigger.event"] == trigger


def test_unknown_trigger_is_rejected(customers: list[Customer]) -> None:
    with pytest.raises(ValueError, match="trigger"):
        customers[0].context("coffee_break")


def test_protected_attributes_are_separate_and_never_in_the_context(
    customers: list[Customer], demo: CompiledExperiment
) -> None:
    protected_names = set(demo.config.protected_attributes)
    for customer in customers[:2000]:
        protected = customer.protected()
        assert set(protected) == {"gender", "ethnicity", "marital_status"}
        assert {f"profile.{name}" for name in protected} <= protected_names
        context = customer.context()
        for section in context.values():
            assert not set(section) & set(protected)
            assert "segment" not in section
        assert "latent" not in context


def test_segment_shares_follow_the_mixture(population: Population) -> None:
    counts = segment_counts(population)
    total = sum(SEGMENT_WEIGHTS)
    for name, weight in zip(SEGMENTS, SEGMENT_WEIGHTS, strict=True):
        assert abs(counts[name] / N - weight / total) < 0.015, name


def _by_segment(customers: list[Customer]) -> dict[str, list[Customer]]:
    groups: dict[str, list[Customer]] = {name: [] for name in SEGMENTS}
    for customer in customers:
        groups[customer.latent.segment].append(customer)
    return groups


def _mean(group: list[Customer], signal: Callable[[Customer], float]) -> float:
    return float(np.mean([signal(c) for c in group]))


def _rest(groups: dict[str, list[Customer]], name: str) -> list[Customer]:
    return [c for other, group in groups.items() if other != name for c in group]


def test_segment_signals_are_realistic(customers: list[Customer]) -> None:
    groups = _by_segment(customers)

    def contrast(name: str, signal: Callable[[Customer], float]) -> tuple[float, float]:
        return _mean(groups[name], signal), _mean(_rest(groups, name), signal)

    travel, others = contrast(
        "frequent_international_spender", lambda c: c.cash_flow.travel_spend_monthly
    )
    assert travel > 3 * others
    heavy, others = contrast(
        "frequent_international_spender", lambda c: c.cash_flow.travel_spend_monthly >= 500
    )
    assert heavy > 0.5
    assert others < 0.1

    revolving, others = contrast("revolving_borrower", lambda c: c.cash_flow.revolving_balance)
    assert revolving > 3 * others
    minimum, others = contrast("revolving_borrower", lambda c: c.cash_flow.pays_minimum_only)
    assert minimum > 3 * others

    rich, others = contrast("high_balance_saver", lambda c: c.cash_flow.balance >= 20_000)
    assert rich > 0.9
    assert others < 0.3

    overdrawn, others = contrast("paycheck_to_paycheck", lambda c: c.cash_flow.days_overdrawn_90d)
    assert overdrawn > 3 * others

    calculator, others = contrast(
        "aspiring_homebuyer", lambda c: "mortgage_calculator" in c.behavior.pages_viewed_7d
    )
    assert calculator > 3 * others

    assert all("mortgage" in c.profile.products_held for c in groups["homeowner"])
    assert _mean(groups["student"], lambda c: c.profile.age_band == "18_24") > 0.8
    assert all(c.profile.life_stage == "student" for c in groups["student"])
    assert _mean(groups["retiree"], lambda c: c.profile.life_stage == "retired") > 0.95


def test_needs_are_probabilities_and_match_segment_means(customers: list[Customer]) -> None:
    groups = _by_segment(customers)
    for customer in customers[:2000]:
        assert all(0.0 <= n <= 1.0 for n in customer.latent.needs)
    travel = _mean(groups["frequent_international_spender"], lambda c: c.latent.need("travel"))
    assert travel > 0.5
    debt = _mean(groups["revolving_borrower"], lambda c: c.latent.need("debt_consolidation"))
    assert debt > 0.4


def test_hashed_noise_is_counter_based_and_uniform() -> None:
    ids = np.arange(50_000, dtype=np.int64)
    u = hash_uniform(123, ids, 7, 3)
    assert np.array_equal(hash_uniform(123, ids[[17]], 7, 3), u[[17]])
    assert not np.array_equal(hash_uniform(123, ids, 8, 3), u)
    assert u.min() >= 0.0
    assert u.max() < 1.0
    # Mean of 50,000 uniforms: standard error 0.0013; 0.01 is about 8 standard errors.
    assert abs(u.mean() - 0.5) < 0.01
    z = hash_normal(123, ids, 7, 3)
    assert abs(z.mean()) < 0.03
    assert abs(z.std() - 1.0) < 0.03
