"""Tests of sticky group assignment (invariant 3).

Statistical tests are deterministic: the customer ids come from a fixed-seed generator and the
hash is fixed, so each test either always passes or always fails. Tolerances, fixed up front:
the chi-square goodness-of-fit p-value must exceed 0.001 and every observed share must be
within 0.5 percentage points of the configured one (about 5 standard errors at n = 100,000).
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from bandit_platform.domain.config import TrafficSplit
from bandit_platform.domain.decisions import Group
from bandit_platform.policies.assignment import BUCKETS, assign_group, bucket

N_CUSTOMERS = 100_000
P_VALUE_MIN = 0.001
SHARE_TOLERANCE = 0.005
GROUPS = (Group.HOLDOUT, Group.AB, Group.BANDIT)


def customer_ids(n: int, seed: int) -> list[str]:
    """Pseudonymous customer ids like the service's (hex of a keyed hash), from a fixed seed."""
    rng = random.Random(seed)
    return [f"{rng.getrandbits(128):032x}" for _ in range(n)]


CUSTOMERS = customer_ids(N_CUSTOMERS, seed=20_240_601)


def _split(holdout: float, ab: float, bandit: float) -> TrafficSplit:
    return TrafficSplit(holdout=holdout, ab=ab, bandit=bandit)


@settings(max_examples=200, deadline=None)
@given(customer=st.text(max_size=64), salt=st.text(max_size=64))
def test_bucket_is_deterministic_and_in_range(customer: str, salt: str) -> None:
    first = bucket(customer, salt)
    assert 0 <= first < BUCKETS
    assert bucket(customer, salt) == first


@settings(max_examples=200, deadline=None)
@given(
    customer=st.text(max_size=64),
    salt=st.text(max_size=64),
    shares=st.sampled_from([(10, 20, 70), (5, 45, 50), (33.33, 33.33, 33.34), (0, 50, 50)]),
)
def test_assignment_is_sticky(customer: str, salt: str, shares: tuple[float, float, float]) -> None:
    split = _split(*shares)
    assert assign_group(customer, salt, split) == assign_group(customer, salt, split)


def test_assignment_does_not_depend_on_call_order() -> None:
    """A pure function: assigning in reverse order gives every customer the same group."""
    split = _split(10, 20, 70)
    sample = CUSTOMERS[:2000]
    forward = {c: assign_group(c, "salt-a", split) for c in sample}
    backward = {c: assign_group(c, "salt-a", split) for c in reversed(sample)}
    assert forward == backward


@pytest.mark.parametrize(
    "shares",
    [(10, 20, 70), (5, 45, 50), (1, 4, 95)],
    ids=["10-20-70", "5-45-50", "1-4-95"],
)
def test_split_matches_configuration(shares: tuple[float, float, float]) -> None:
    """Chi-square goodness of fit (the SRM test) over 100,000 customers."""
    split = _split(*shares)

    counts = Counter(assign_group(c, "experiment-salt-7f3a", split) for c in CUSTOMERS)
    observed = [counts[group] for group in GROUPS]
    expected = [N_CUSTOMERS * share / 100 for share in shares]

    result = stats.chisquare(observed, expected)
    assert result.pvalue > P_VALUE_MIN, (observed, expected)
    for count, share in zip(observed, shares, strict=True):
        assert abs(count / N_CUSTOMERS - share / 100) < SHARE_TOLERANCE


def test_buckets_are_uniform() -> None:
    """The buckets themselves are uniform: chi-square over 100 bands of 100 buckets."""
    bands = Counter(bucket(c, "experiment-salt-7f3a") // 100 for c in CUSTOMERS)
    result = stats.chisquare([bands[band] for band in range(BUCKETS // 100)])
    assert result.pvalue > P_VALUE_MIN


@pytest.mark.parametrize(
    ("shares", "group"),
    [
        ((0, 0, 100), Group.BANDIT),
        ((100, 0, 0), Group.HOLDOUT),
        ((0, 100, 0), Group.AB),
    ],
    ids=["all-bandit", "all-holdout", "all-ab"],
)
def test_extreme_split_is_exact(shares: tuple[float, float, float], group: Group) -> None:
    split = _split(*shares)
    assert {assign_group(c, "salt", split) for c in CUSTOMERS[:20_000]} == {group}


def test_zero_share_group_is_empty() -> None:
    split = _split(0, 30, 70)
    groups = {assign_group(c, "salt", split) for c in CUSTOMERS[:20_000]}
    assert groups == {Group.AB, Group.BANDIT}


def test_same_salt_same_groups_different_salt_decorrelates() -> None:
    """A new experiment (salt) reshuffles customers independently of other experiments.

    Chi-square test of independence between a customer's group under two salts, with the
    same p-value floor as the goodness-of-fit tests.
    """
    split = _split(10, 20, 70)
    first = [assign_group(c, "experiment-a", split) for c in CUSTOMERS]
    again = [assign_group(c, "experiment-a", split) for c in CUSTOMERS]
    other = [assign_group(c, "experiment-b", split) for c in CUSTOMERS]

    assert first == again
    table = Counter(zip(first, other, strict=True))
    contingency = [[table[(a, b)] for b in GROUPS] for a in GROUPS]
    result = stats.chi2_contingency(contingency)
    assert result.pvalue > P_VALUE_MIN
    # and the groups do differ for a large share of customers
    moved = sum(a != b for a, b in zip(first, other, strict=True)) / N_CUSTOMERS
    expected_moved = 1 - (0.1**2 + 0.2**2 + 0.7**2)
    assert abs(moved - expected_moved) < SHARE_TOLERANCE


def test_buckets_under_two_salts_are_uncorrelated() -> None:
    first = [bucket(c, "experiment-a") for c in CUSTOMERS]
    other = [bucket(c, "experiment-b") for c in CUSTOMERS]

    correlation = stats.pearsonr(first, other)
    # |r| < 0.015 is about 4.7 standard errors (1 / sqrt(n)) at n = 100,000
    assert abs(correlation.statistic) < 0.015
