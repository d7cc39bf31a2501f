"""Property tests of probability vectors: validation, the exploration floor and the draw.

Invariant 2: every logged probability vector is valid and keeps each eligible offer at or above
the floor, whatever the model emitted (NaN, negatives, zeros, float32 rounding, overflow).

The frequency test is deterministic (fixed seeds); its tolerance, fixed up front: the
chi-square goodness-of-fit p-value must exceed 0.001.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from scipy import stats

from bandit_platform.domain.config import (
    Bagging,
    EpsilonDecay,
    EpsilonGreedy,
    Explorer,
    Softmax,
    SquareCB,
)
from bandit_platform.policies.probabilities import (
    EPSILON_HALF_LIFE_EXAMPLES,
    check_probabilities,
    decayed_epsilon,
    decision_seed,
    draw,
    is_valid,
    served_probabilities,
)

P_VALUE_MIN = 0.001
UNCHANGED_TOLERANCE = 1e-12

#: Anything a model (or a bug) could emit: NaN, infinities, negatives, subnormals, huge values.
raw_entries = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 1.0, -1.0, 5e-324, 1e-300, 1.7e308, math.nan, math.inf]
)
raw_vectors = st.lists(raw_entries, min_size=1, max_size=20)
floors = st.floats(min_value=0.0, max_value=0.5) | st.sampled_from([0.0, 0.005, 0.01, 0.5])
weights = st.lists(st.floats(min_value=0.0, max_value=1e6), min_size=1, max_size=20).filter(
    lambda ws: math.fsum(ws) > 0.0
)


def _normalised(ws: list[float]) -> list[float]:
    total = math.fsum(ws)
    return [w / total for w in ws]


@st.composite
def float32_vectors(draw_: st.DrawFn) -> list[float]:
    """A proper probability vector rounded through float32, as VW reports it."""
    ws = draw_(weights)
    return [float(p) for p in np.asarray(_normalised(ws), dtype=np.float32)]


@st.composite
def vectors_with_zeros(draw_: st.DrawFn) -> list[float]:
    """A valid vector in which some entries are exactly zero."""
    ws = draw_(st.lists(st.sampled_from([0.0, 0.0, 1.0, 2.5, 1e-6, 7.0]), min_size=1, max_size=12))
    assume(any(w > 0 for w in ws))
    return _normalised(ws)


# --------------------------------------------------------------------------------------------
# check_probabilities
# --------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(raw=raw_vectors | float32_vectors() | vectors_with_zeros(), floor=floors)
@example(raw=[1.7e308, 1.7e308], floor=0.01)  # finite entries whose sum overflows
@example(raw=[math.nan, 0.5, 0.5], floor=0.01)
@example(raw=[-0.1, 0.6, 0.5], floor=0.01)
@example(raw=[0.0, 0.0, 0.0], floor=0.01)
@example(raw=[0.0, 1.0], floor=0.5)
@example(raw=[0.0, 0.0, 1.0], floor=0.5)  # a floor above 1/k becomes 1/k
@example(raw=[5e-324, 0.0], floor=0.0)
def test_check_always_returns_a_valid_vector(raw: list[float], floor: float) -> None:
    checked = check_probabilities(raw, floor)
    k = len(raw)

    assert len(checked.probabilities) == k
    assert is_valid(checked.probabilities, floor=min(floor, 1.0 / k))
    assert all(type(p) is float for p in checked.probabilities)
    if checked.replaced:
        assert checked.probabilities == tuple(1.0 / k for _ in range(k))


@settings(max_examples=200, deadline=None)
@given(raw=raw_vectors | float32_vectors() | vectors_with_zeros(), floor=floors)
def test_order_of_entries_is_preserved(raw: list[float], floor: float) -> None:
    """Normalising and flooring are monotone: a larger raw score never gets a smaller share."""
    checked = check_probabilities(raw, floor)
    assume(not checked.replaced)
    result = checked.probabilities

    for i, j in itertools.permutations(range(len(raw)), 2):
        if raw[i] < raw[j]:
            assert result[i] <= result[j]
        elif raw[i] == raw[j]:
            assert result[i] == result[j]


@settings(max_examples=200, deadline=None)
@given(raw=vectors_with_zeros(), floor=st.floats(min_value=1e-4, max_value=0.5))
def test_zeros_are_floored_in_order(raw: list[float], floor: float) -> None:
    checked = check_probabilities(raw, floor)
    k = len(raw)
    effective = min(floor, 1.0 / k)
    assume(min(raw) < effective)

    assert checked.floored
    assert not checked.replaced
    assert min(checked.probabilities) >= effective - 1e-12
    best = max(range(k), key=raw.__getitem__)
    assert checked.probabilities[best] == max(checked.probabilities)


@settings(max_examples=200, deadline=None)
@given(ws=st.lists(st.floats(min_value=1e-3, max_value=1.0), min_size=1, max_size=20), floor=floors)
def test_valid_vector_above_floor_is_unchanged(ws: list[float], floor: float) -> None:
    k = len(ws)
    effective = min(floor, 1.0 / k)
    # Mixing with the floor gives a proper probability vector with every entry above it.
    probabilities = [effective + (1.0 - k * effective) * p for p in _normalised(ws)]
    assume(is_valid(probabilities))
    assume(min(probabilities) >= effective + 1e-9)

    checked = check_probabilities(probabilities, floor)

    assert not checked.floored
    assert not checked.replaced
    for before, after in zip(probabilities, checked.probabilities, strict=True):
        assert abs(before - after) <= UNCHANGED_TOLERANCE


def test_empty_vector_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        check_probabilities([], 0.01)


@pytest.mark.parametrize(
    ("raw", "floor", "expected"),
    [
        ([0.7, 0.2, 0.1], 0.01, (0.7, 0.2, 0.1)),
        ([7.0, 2.0, 1.0], 0.0, (0.7, 0.2, 0.1)),
        # floor + (1 - k * floor) * p
        ([1.0, 0.0], 0.1, (0.9, 0.1)),
        ([0.0, 0.0, 1.0], 0.5, (1 / 3, 1 / 3, 1 / 3)),
        ([math.nan, 1.0], 0.01, (0.5, 0.5)),
        ([-1.0, 2.0], 0.01, (0.5, 0.5)),
        ([0.0, 0.0], 0.01, (0.5, 0.5)),
    ],
)
def test_check_examples(raw: list[float], floor: float, expected: tuple[float, ...]) -> None:
    assert check_probabilities(raw, floor).probabilities == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("vector", "floor", "valid"),
    [
        ([], 0.0, False),
        ([1.0], 0.0, True),
        ([0.5, 0.5], 0.5, True),
        ([0.5, 0.5 + 2e-6], 0.0, False),
        ([0.5, 0.5 + 5e-7], 0.0, True),
        ([0.995, 0.005], 0.01, False),
        ([math.nan, 1.0], 0.0, False),
        ([math.inf, 0.0], 0.0, False),
        ([1.5, -0.5], 0.0, False),
    ],
)
def test_is_valid(vector: list[float], floor: float, valid: bool) -> None:
    assert is_valid(vector, floor) is valid


# --------------------------------------------------------------------------------------------
# served_probabilities: the bandit's served vector (decision path and integrity check)
# --------------------------------------------------------------------------------------------

#: Explorers VW applies itself: the served vector is the checked prediction.
VW_EXPLORERS: list[Explorer] = [
    EpsilonGreedy(epsilon=0.1),
    Softmax(lambda_=2.0),
    SquareCB(),
    Bagging(bag_size=3),
]


@pytest.mark.parametrize("explorer", VW_EXPLORERS, ids=lambda e: e.__struct_config__.tag)
@pytest.mark.parametrize("raw", [[0.7, 0.2, 0.1], [1.0, 0.0, 0.0], [math.nan, 1.0], [0.9]])
def test_served_vector_of_vw_explorers_is_the_checked_prediction(
    explorer: Explorer, raw: list[float]
) -> None:
    served = served_probabilities(raw, explorer=explorer, examples_seen=12_345, floor=0.01)
    assert served == check_probabilities(raw, 0.01)


@pytest.mark.parametrize(
    ("raw", "examples_seen", "expected"),
    [
        # eps = 0.2: (1 - eps) * p / sum(p) + eps / k
        ([1.0, 0.0, 0.0], 0, (0.8 + 0.2 / 3, 0.2 / 3, 0.2 / 3)),
        # half-life examples halve eps to 0.1
        ([1.0, 0.0, 0.0], EPSILON_HALF_LIFE_EXAMPLES, (0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3)),
        # the prediction is normalised by its sum before the mix
        ([2.0, 2.0], 0, (0.5, 0.5)),
        ([3.0, 1.0], 3 * EPSILON_HALF_LIFE_EXAMPLES, (0.95 * 0.75 + 0.025, 0.95 * 0.25 + 0.025)),
    ],
)
def test_epsilon_decay_mixes_in_the_decayed_uniform_share(
    raw: list[float], examples_seen: int, expected: tuple[float, ...]
) -> None:
    served = served_probabilities(
        raw, explorer=EpsilonDecay(epsilon=0.2), examples_seen=examples_seen, floor=0.0
    )
    assert not served.replaced
    assert not served.floored
    assert served.probabilities == pytest.approx(expected, abs=1e-12)


def test_decayed_epsilon_halves_at_the_half_life() -> None:
    explorer = EpsilonDecay(epsilon=0.2)
    assert decayed_epsilon(explorer, 0) == 0.2
    assert decayed_epsilon(explorer, EPSILON_HALF_LIFE_EXAMPLES) == pytest.approx(0.1)
    assert decayed_epsilon(explorer, 9 * EPSILON_HALF_LIFE_EXAMPLES) == pytest.approx(0.02)


def test_epsilon_decay_vector_is_floored_after_the_mix() -> None:
    """A mixed share below the floor is raised by `check_probabilities`, after the mix."""
    raw = [1.0, 0.0, 0.0, 0.0]
    eps = decayed_epsilon(EpsilonDecay(epsilon=0.01), 0)
    mixed = [(1.0 - eps) * p + eps / 4 for p in raw]

    served = served_probabilities(
        raw, explorer=EpsilonDecay(epsilon=0.01), examples_seen=0, floor=0.05
    )

    assert served.floored
    assert served == check_probabilities(mixed, 0.05)
    assert min(served.probabilities) >= 0.05 - 1e-12


@settings(max_examples=200, deadline=None)
@given(
    raw=raw_vectors | float32_vectors() | vectors_with_zeros(),
    floor=floors,
    epsilon=st.floats(min_value=0.0, max_value=1.0),
    examples_seen=st.integers(0, 10**9),
)
@example(raw=[math.nan, 0.5], floor=0.01, epsilon=0.2, examples_seen=0)
@example(raw=[0.0, 0.0], floor=0.01, epsilon=0.0, examples_seen=0)
@example(raw=[1.7e308, 1.7e308], floor=0.01, epsilon=0.2, examples_seen=0)
def test_served_vector_is_always_valid(
    raw: list[float], floor: float, epsilon: float, examples_seen: int
) -> None:
    k = len(raw)
    for explorer in (EpsilonDecay(epsilon=epsilon), EpsilonGreedy(epsilon=epsilon)):
        served = served_probabilities(
            raw, explorer=explorer, examples_seen=examples_seen, floor=floor
        )
        assert len(served.probabilities) == k
        assert is_valid(served.probabilities, floor=min(floor, 1.0 / k))
        if served.replaced:
            assert served.probabilities == tuple(1.0 / k for _ in range(k))


def test_served_vector_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        served_probabilities([], explorer=EpsilonDecay(), examples_seen=0, floor=0.01)


# --------------------------------------------------------------------------------------------
# draw and decision_seed
# --------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(probabilities=vectors_with_zeros() | float32_vectors(), seed=st.integers(0, 2**64 - 1))
def test_draw_is_deterministic_and_never_picks_a_zero(
    probabilities: list[float], seed: int
) -> None:
    index = draw(probabilities, seed)

    assert 0 <= index < len(probabilities)
    assert probabilities[index] > 0.0
    assert draw(probabilities, seed) == index


def test_draw_never_picks_a_zero_when_rounding_falls_short() -> None:
    """When the cumulative sum stays under the uniform draw, the last positive entry wins."""
    short = [0.25, 0.25, 0.0, 0.0]  # sums to 0.5: half the draws fall past the end
    picks = Counter(draw(short, seed) for seed in range(2000))
    assert set(picks) == {0, 1}


@pytest.mark.slow
def test_draw_frequencies_match_the_vector() -> None:
    """200,000 decisions with seeds derived like the service's: chi-square goodness of fit."""
    probabilities = [0.5, 0.25, 0.0, 0.15, 0.07, 0.03, 0.0]
    n = 200_000

    counts = Counter(
        draw(probabilities, decision_seed("experiment-salt", f"decision-{i}")) for i in range(n)
    )

    assert counts[2] == 0
    assert counts[6] == 0
    positive = [i for i, p in enumerate(probabilities) if p > 0]
    observed = [counts[i] for i in positive]
    expected = [n * probabilities[i] for i in positive]
    assert stats.chisquare(observed, expected).pvalue > P_VALUE_MIN


def test_decision_seed_is_reproducible_and_differs_across_decisions() -> None:
    ids = [f"decision-{i}" for i in range(20_000)]

    seeds = [decision_seed("salt", decision_id) for decision_id in ids]

    assert seeds == [decision_seed("salt", decision_id) for decision_id in ids]
    assert len(set(seeds)) == len(ids)
    assert all(0 <= seed < 2**64 for seed in seeds)
    # another experiment draws independently for the same decision id
    assert all(decision_seed("other", i) != s for i, s in zip(ids[:1000], seeds, strict=False))


@settings(max_examples=200, deadline=None)
@given(salt=st.text(max_size=40), first=st.text(max_size=40), second=st.text(max_size=40))
def test_decision_seed_differs_for_different_ids(salt: str, first: str, second: str) -> None:
    assume(first != second)
    assert decision_seed(salt, first) != decision_seed(salt, second)
