"""Shared fixtures of the simulator tests: the demo experiment and small seeded worlds."""

from __future__ import annotations

import dataclasses

import pytest

from bandit_platform.demo import demo_config
from bandit_platform.domain.config import CompiledExperiment, RewardHorizon, validate_config
from simulators.population import Customer, Population
from simulators.response import Situation
from simulators.world import World


@pytest.fixture(scope="session")
def demo() -> CompiledExperiment:
    return validate_config(demo_config())


@pytest.fixture(scope="session")
def demo_horizon(demo: CompiledExperiment) -> RewardHorizon:
    return demo.config.reward.learning_horizon()


@pytest.fixture(scope="session")
def small_world() -> World:
    return World(3000, 21, 400)


@pytest.fixture(scope="session")
def keen_customer() -> Customer:
    """A customer with strong needs and a good credit score: large, easily measured rates."""
    base = Population.generate(50, 3).customer(7)
    latent = dataclasses.replace(
        base.latent,
        needs=(0.8, 0.75, 0.7, 0.85, 0.8, 0.9),
        credit_score=760.0,
    )
    return dataclasses.replace(base, latent=latent)


@pytest.fixture(scope="session")
def keen_situation(keen_customer: Customer) -> Situation:
    return Situation(
        customer=keen_customer,
        trigger="paycheck_deposit",
        surface="post_login_banner",
        time_seconds=19.5 * 3600.0,
        exposures={"budgeting_tool": (30.0,), "overdraft_protection": (2.0, 50.0)},
    )
