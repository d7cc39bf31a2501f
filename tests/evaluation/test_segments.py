"""Report rows with intervals from aggregates (`evaluation.segments`): known values from the
literature and from scipy, edge cases returned as warnings, never NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]

from bandit_platform.evaluation.lift import (
    SufficientStats,
    absolute_lift,
    adjust_p_values,
    relative_lift,
)
from bandit_platform.evaluation.segments import (
    FOUR_FIFTHS,
    SegmentTally,
    adjust_comparisons,
    compare,
    compare_groups,
    difference_of_proportions,
    disparity,
    expected_shares,
    finite,
    mean_estimate,
    proportion,
    segment_rows,
)


def stats_of(values: list[float]) -> SufficientStats:
    return SufficientStats.from_values(values)


def test_mean_estimate_is_students_t_interval() -> None:
    values = [0.0, 1.0, 0.5, 0.25, 2.0, 0.0, 1.5]
    found = mean_estimate(stats_of(values))
    lower, upper = stats.t.interval(
        0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values)
    )
    assert found.n == len(values)
    assert found.mean == pytest.approx(np.mean(values))
    assert (found.lower, found.upper) == pytest.approx((lower, upper))
    assert found.sd == pytest.approx(np.std(values, ddof=1))
    one = mean_estimate(stats_of([3.0]))
    assert (one.n, one.mean, one.lower, one.upper) == (1, 3.0, None, None)
    assert "too_few_units" in one.warnings
    assert mean_estimate(SufficientStats(0, 0.0, 0.0)).mean is None


def test_wilson_interval_known_values() -> None:
    # 0 of 10: [0, z^2 / (n + z^2)]
    z = stats.norm.ppf(0.975)
    empty = proportion(0, 10)
    assert empty.rate == 0.0
    assert empty.lower == 0.0
    assert empty.upper == pytest.approx(z * z / (10 + z * z))
    # Brown, Cai, DasGupta's style check: 81 of 263
    found = proportion(81, 263)
    assert (found.lower, found.upper) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert proportion(0, 0).rate is None
    with pytest.raises(ValueError, match="count"):
        proportion(5, 3)


def test_newcombe_difference_matches_the_paper() -> None:
    # Newcombe (1998), Table II, example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339
    found = difference_of_proportions(proportion(56, 70), proportion(48, 80))
    assert found.estimate == pytest.approx(0.2)
    assert (found.lower, found.upper) == pytest.approx((0.0524, 0.3339), abs=1e-4)
    assert found.method == "newcombe"
    assert found.p_value is not None
    same = difference_of_proportions(proportion(0, 5), proportion(0, 7))
    assert same.p_value is None
    assert "zero_variance" in same.warnings


def test_compare_equals_the_lift_functions() -> None:
    rng = np.random.default_rng(1)
    treatment = stats_of(list(rng.binomial(1, 0.3, 400).astype(float)))
    control = stats_of(list(rng.binomial(1, 0.2, 300).astype(float)))
    found = compare("primary", treatment, control, "holdout")
    assert found is not None
    absolute = absolute_lift(treatment, control)
    relative = relative_lift(treatment, control)
    assert found.absolute.estimate == pytest.approx(absolute.estimate)
    assert found.absolute.lower == pytest.approx(absolute.lower)
    assert found.absolute.p_value == pytest.approx(absolute.p_value)
    assert found.relative is not None
    assert found.relative.estimate == pytest.approx(relative.estimate)
    assert found.sequential.method == "msprt"
    assert found.sequential.lower is not None
    assert absolute.lower is not None
    assert found.sequential.lower < absolute.lower  # always valid: wider
    assert found.probability_to_beat is not None
    assert found.probability_to_beat > 0.5
    assert (found.n_treatment, found.n_control) == (400, 300)


def test_compare_edge_cases_are_warnings_not_nan() -> None:
    zeros = SufficientStats(50, 0.0, 0.0)
    some = stats_of([0.0, 1.0] * 25)
    found = compare("primary", some, zeros, "holdout")
    assert found is not None
    assert found.relative is None
    assert "zero_control_mean" in found.warnings
    flat = compare("primary", zeros, zeros, "ab")
    assert flat is not None
    assert flat.absolute.p_value is None
    assert "zero_variance" in flat.absolute.warnings
    assert compare("primary", some, SufficientStats(1, 1.0, 1.0), "ab") is None
    assert compare_groups("primary", {"holdout": some}) == ()
    assert [c.control for c in compare_groups("p", {"bandit": some, "ab": some})] == ["ab"]
    assert finite(math.nan) is None
    assert finite(math.inf) is None
    assert finite(1.5) == 1.5


def test_holm_across_comparisons() -> None:
    rng = np.random.default_rng(2)
    groups = [stats_of(list(rng.normal(mu, 1.0, 200))) for mu in (0.0, 0.1, 0.3)]
    comparisons = [compare(f"h{i}", groups[i], groups[0], "holdout") for i in range(1, 3)]
    flat = SufficientStats(10, 0.0, 0.0)
    constant = compare("flat", flat, flat, "holdout")
    ready = [c for c in [*comparisons, constant] if c is not None]
    adjusted = adjust_comparisons(ready)
    raw = [c.absolute.p_value for c in ready[:2]]
    assert [c.absolute.p_value_adjusted for c in adjusted[:2]] == pytest.approx(
        adjust_p_values([p for p in raw if p is not None], "holm")
    )
    assert adjusted[2].absolute.p_value_adjusted is None


def test_expected_shares_weight_versions_by_their_decisions() -> None:
    shares = expected_shares(
        {1: 300, 2: 100},
        {1: {"holdout": 10, "ab": 20, "bandit": 70}, 2: {"holdout": 50, "ab": 0, "bandit": 50}},
    )
    assert shares["holdout"] == pytest.approx((0.1 * 300 + 0.5 * 100) / 400)
    assert shares["ab"] == pytest.approx(0.2 * 300 / 400)
    assert sum(shares.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no split"):
        expected_shares({3: 5}, {})
    with pytest.raises(ValueError, match="no decisions"):
        expected_shares({}, {})


def _tally(offers: dict[str, int], rewards: list[float]) -> SegmentTally:
    tally = SegmentTally()
    total = sum(offers.values())
    values = iter(rewards)
    for offer, count in offers.items():
        for _ in range(count):
            tally.add(None if offer == "no_offer" else offer, {"primary": next(values, None)})
    assert tally.decisions == total
    return tally


def test_segment_rows_rates_and_lifts() -> None:
    rng = np.random.default_rng(3)
    tallies = {
        seg: {
            "holdout": _tally({"no_offer": 40}, list(rng.binomial(1, 0.1, 40).astype(float))),
            "bandit": _tally(
                {"a": 60, "b": 30, "no_offer": 10}, list(rng.binomial(1, 0.3, 95).astype(float))
            ),
        }
        for seg in ("s1", "s2", "s3")
    }
    rows = segment_rows(tallies, ["primary"])
    assert [r.segment for r in rows] == ["s1", "s2", "s3"]
    for row in rows:
        assert row.decisions == 140
        assert [g.group for g in row.groups] == ["holdout", "bandit"]
        bandit = row.groups[1]
        assert bandit.offer_rates["a"].rate == pytest.approx(0.6)
        assert sum(p.count for p in bandit.offer_rates.values()) == bandit.decisions
        assert bandit.rewards["primary"].n == 95  # five rewards still open
        (comparison,) = row.comparisons
        assert comparison.control == "holdout"
        assert comparison.absolute.p_value_adjusted is not None
    raw = [r.comparisons[0].absolute.p_value for r in rows]
    adjusted = adjust_p_values([p for p in raw if p is not None], "holm")
    assert [r.comparisons[0].absolute.p_value_adjusted for r in rows] == pytest.approx(adjusted)


def test_disparity_four_fifths_rule() -> None:
    tallies = {
        "f": _tally({"a": 30, "no_offer": 70}, [1.0] * 10 + [0.0] * 90),
        "m": _tally({"a": 50, "no_offer": 50}, [1.0] * 20 + [0.0] * 80),
    }
    found = disparity("gender", "bandit", tallies, "primary")
    assert (found.highest, found.lowest) == ("m", "f")
    assert found.impact_ratio == pytest.approx(0.6)
    assert found.flagged
    assert found.gap is not None
    assert found.gap.estimate == pytest.approx(0.2)
    assert [v.value for v in found.values] == ["f", "m"]
    assert found.values[0].offered.rate == pytest.approx(0.3)
    assert found.values[0].reward is not None
    assert found.values[0].reward.mean == pytest.approx(0.1)
    fair = disparity(
        "gender",
        "bandit",
        {"f": _tally({"a": 45, "no_offer": 55}, []), "m": _tally({"a": 50, "no_offer": 50}, [])},
        "primary",
    )
    assert fair.impact_ratio == pytest.approx(0.9)
    assert fair.impact_ratio >= FOUR_FIFTHS
    assert not fair.flagged
    assert fair.values[0].reward is None
    holdout = disparity(
        "gender",
        "holdout",
        {"f": _tally({"no_offer": 5}, []), "m": _tally({"no_offer": 4}, [])},
        "p",
    )
    assert holdout.impact_ratio is None
    assert not holdout.flagged
    assert "undefined_ratio" in holdout.warnings
    alone = disparity("gender", "bandit", {"f": _tally({"a": 3}, [])}, "p")
    assert alone.gap is None
    assert "too_few_units" in alone.warnings
