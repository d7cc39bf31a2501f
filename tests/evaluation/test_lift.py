"""Lift, CUPED, sequential intervals, probability to beat, p-value adjustment and SRM.

Tolerances, fixed before running (every simulation uses a seeded numpy generator):

- against scipy: relative 1e-8 (sufficient statistics lose a little to the sum of squares);
- interval coverage at 95%, 1,000 replications: within [0.93, 0.97] (about 3 binomial SDs);
- A-A false-positive rate at 5%, 2,000 replications: within [0.04, 0.06];
- CUPED: mean estimate within 3 Monte-Carlo SEs of the truth; variance ratio within 0.06 of
  `1 - rho^2`;
- sequential: time-uniform coverage >= 0.95 over 50 looks; naive repeated Welch error >= 0.10;
- probability to beat: A-A mean within [0.47, 0.53]; large effect > 0.999; Beta-Binomial
  within 0.003 of 10^6 Monte-Carlo draws;
- SRM: clean-data flag rate at alpha = 0.05 within [0.04, 0.06] over 4,000 replications.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bandit_platform.evaluation.lift import (
    NEAR_ZERO_CONTROL,
    ZERO_VARIANCE,
    CupedStats,
    SufficientStats,
    absolute_lift,
    adjust_p_values,
    cuped_lift,
    expected_shares_from_propensities,
    probability_to_beat,
    probability_to_beat_binary,
    relative_lift,
    sample_ratio_mismatch,
    sequential_absolute_lift,
)

RTOL = 1e-8


def _stats_rows(values: np.ndarray) -> list[SufficientStats]:
    """Sufficient statistics of each row of a (replications x units) array, vectorised."""
    n = values.shape[1]
    totals = values.sum(axis=1)
    squares = np.square(values).sum(axis=1)
    return [SufficientStats(n, float(t), float(s)) for t, s in zip(totals, squares, strict=True)]


# --- sufficient statistics ------------------------------------------------------------------


def test_sufficient_stats_mean_variance_and_combine() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(3.0, 2.0, 40), rng.normal(1.0, 0.5, 25)
    sa, sb = SufficientStats.from_values(a), SufficientStats.from_values(b)
    both = np.concatenate([a, b])
    combined = sa.combine(sb)
    assert combined.n == 65
    assert combined.mean == pytest.approx(both.mean(), rel=RTOL)
    assert combined.variance == pytest.approx(both.var(ddof=1), rel=RTOL)
    assert math.isnan(SufficientStats(0, 0.0, 0.0).mean)
    assert math.isnan(SufficientStats(1, 2.0, 4.0).variance)


@pytest.mark.parametrize(
    ("n", "total", "squares"), [(-1, 0.0, 0.0), (2, math.nan, 1.0), (2, 1.0, -1.0)]
)
def test_sufficient_stats_rejects_invalid(n: int, total: float, squares: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        SufficientStats(n, total, squares)


# --- Welch ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n_t", "n_c", "sd_t", "sd_c", "shift"),
    [(50, 50, 1.0, 1.0, 0.0), (30, 200, 3.0, 0.5, 0.4), (1000, 15, 0.2, 2.0, -1.0)],
)
@pytest.mark.parametrize("confidence", [0.9, 0.95])
def test_welch_matches_scipy(
    n_t: int, n_c: int, sd_t: float, sd_c: float, shift: float, confidence: float
) -> None:
    rng = np.random.default_rng(7)
    t = rng.normal(10.0 + shift, sd_t, n_t)
    c = rng.normal(10.0, sd_c, n_c)
    expected = stats.ttest_ind(t, c, equal_var=False)
    ci = expected.confidence_interval(confidence_level=confidence)
    # from raw values, and from statistics aggregated in two chunks as SQL partitions would
    half = n_t // 2
    from_chunks = SufficientStats.from_values(t[:half]).combine(
        SufficientStats.from_values(t[half:])
    )
    for treatment in (SufficientStats.from_values(t), from_chunks):
        lift = absolute_lift(treatment, SufficientStats.from_values(c), confidence)
        assert lift.method == "welch"
        assert lift.estimate == pytest.approx(t.mean() - c.mean(), rel=RTOL, abs=1e-12)
        assert lift.statistic == pytest.approx(expected.statistic, rel=RTOL)
        assert lift.p_value == pytest.approx(expected.pvalue, rel=RTOL)
        assert lift.df == pytest.approx(expected.df, rel=RTOL)
        assert lift.lower == pytest.approx(ci.low, rel=RTOL)
        assert lift.upper == pytest.approx(ci.high, rel=RTOL)
        assert lift.warnings == ()


def test_welch_zero_variance_is_a_warning_not_an_error() -> None:
    flat = SufficientStats.from_values([2.0, 2.0, 2.0])
    lift = absolute_lift(flat, SufficientStats.from_values([1.0, 1.0]))
    assert lift.warnings == (ZERO_VARIANCE,)
    assert lift.estimate == lift.lower == lift.upper == 1.0
    assert math.isnan(lift.p_value)


@pytest.mark.parametrize(
    ("treatment", "control", "confidence", "match"),
    [
        (SufficientStats(1, 1.0, 1.0), SufficientStats(5, 5.0, 6.0), 0.95, "treatment"),
        (SufficientStats(5, 5.0, 6.0), SufficientStats(0, 0.0, 0.0), 0.95, "control"),
        (SufficientStats(5, 5.0, 6.0), SufficientStats(5, 5.0, 6.0), 1.0, "confidence"),
    ],
)
def test_lift_rejects_invalid(
    treatment: SufficientStats, control: SufficientStats, confidence: float, match: str
) -> None:
    for function in (absolute_lift, relative_lift):
        with pytest.raises(ValueError, match=match):
            function(treatment, control, confidence)


def test_aa_false_positive_rate() -> None:
    rng = np.random.default_rng(11)
    t = rng.exponential(2.0, (2000, 200))
    c = rng.exponential(2.0, (2000, 200))
    p = np.array(
        [absolute_lift(a, b).p_value for a, b in zip(_stats_rows(t), _stats_rows(c), strict=True)]
    )
    rate = float(np.mean(p < 0.05))
    assert 0.04 <= rate <= 0.06, rate


# --- relative lift ----------------------------------------------------------------------------


def test_relative_lift_refuses_zero_control_mean() -> None:
    treatment = SufficientStats.from_values([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="control"):
        relative_lift(treatment, SufficientStats.from_values([-1.0, 1.0]))


def test_relative_lift_warns_near_zero_control() -> None:
    treatment = SufficientStats.from_values([1.0, 2.0, 3.0])
    lift = relative_lift(treatment, SufficientStats.from_values([-1.0, 1.1, -0.5, 0.6]))
    assert NEAR_ZERO_CONTROL in lift.warnings


def test_relative_lift_delta_method_coverage() -> None:
    rng = np.random.default_rng(3)
    mean_c, true_relative = 1.0, 0.05
    # skewed revenue-like metric (lognormal), 1,000 replications of two groups of 500
    sigma = 0.8
    mu_c = math.log(mean_c) - sigma**2 / 2
    mu_t = math.log(mean_c * (1 + true_relative)) - sigma**2 / 2
    t = rng.lognormal(mu_t, sigma, (1000, 500))
    c = rng.lognormal(mu_c, sigma, (1000, 500))
    lifts = [relative_lift(a, b) for a, b in zip(_stats_rows(t), _stats_rows(c), strict=True)]
    covered = np.mean([lift.lower <= true_relative <= lift.upper for lift in lifts])
    assert 0.93 <= covered <= 0.97, covered
    assert all(lift.method == "delta" and lift.df == math.inf for lift in lifts)


# --- CUPED ------------------------------------------------------------------------------------


def test_cuped_stats_from_values_and_combine() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=30)
    y = 2 * x + rng.normal(size=30)
    whole = CupedStats.from_values(y, x)
    parts = CupedStats.from_values(y[:10], x[:10]).combine(CupedStats.from_values(y[10:], x[10:]))
    assert parts.covariance == pytest.approx(np.cov(x, y)[0, 1], rel=RTOL)
    assert whole.covariance == pytest.approx(parts.covariance, rel=RTOL)
    with pytest.raises(ValueError, match="one length"):
        CupedStats.from_values(y, x[:5])


def test_cuped_without_correlation_is_close_to_welch() -> None:
    rng = np.random.default_rng(6)
    t = CupedStats.from_values(rng.normal(1.0, size=400), rng.normal(size=400))
    c = CupedStats.from_values(rng.normal(size=400), rng.normal(size=400))
    result = cuped_lift(t, c)
    assert abs(result.correlation) < 0.1
    assert result.lift.standard_error == pytest.approx(result.unadjusted.standard_error, rel=0.02)


def test_cuped_unbiased_reduces_variance_and_covers() -> None:
    rng = np.random.default_rng(8)
    reps, n, rho, effect = 1000, 300, 0.7, 0.1
    x = rng.normal(size=(2, reps, n))
    noise = rng.normal(size=(2, reps, n))
    y = 5.0 + rho * x + math.sqrt(1 - rho**2) * noise
    y[0] += effect
    rows_t = [CupedStats.from_values(y[0, r], x[0, r]) for r in range(reps)]
    rows_c = [CupedStats.from_values(y[1, r], x[1, r]) for r in range(reps)]
    results = [cuped_lift(a, b) for a, b in zip(rows_t, rows_c, strict=True)]
    adjusted = np.array([r.lift.estimate for r in results])
    plain = np.array([r.unadjusted.estimate for r in results])
    assert abs(adjusted.mean() - effect) <= 3 * adjusted.std(ddof=1) / math.sqrt(reps)
    ratio = adjusted.var(ddof=1) / plain.var(ddof=1)
    assert abs(ratio - (1 - rho**2)) <= 0.06, ratio
    reported = np.mean([r.variance_reduction for r in results])
    assert abs(reported - (1 - rho**2)) <= 0.02, reported
    observed = np.mean([r.observed_variance_ratio for r in results])
    assert abs(observed - (1 - rho**2)) <= 0.02, observed
    covered = np.mean([r.lift.lower <= effect <= r.lift.upper for r in results])
    assert 0.93 <= covered <= 0.97, covered
    assert all(r.lift.method == "cuped-welch" for r in results)


# --- sequential -------------------------------------------------------------------------------


@pytest.mark.slow
def test_sequential_interval_is_time_uniform_where_naive_peeking_is_not() -> None:
    rng = np.random.default_rng(13)
    reps, looks, step, effect = 500, 50, 100, 0.2
    t = rng.normal(effect, 1.0, (reps, looks * step))
    c = rng.normal(0.0, 1.0, (reps, looks * step))

    def cumulative(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        blocks = values.reshape(reps, looks, step)
        return blocks.sum(axis=2).cumsum(axis=1), np.square(blocks).sum(axis=2).cumsum(axis=1)

    (t_sum, t_sq), (c_sum, c_sq) = cumulative(t), cumulative(c)
    sequential_miss = naive_miss = 0
    for r in range(reps):
        seq_missed = naive_missed = False
        for k in range(looks):
            n = (k + 1) * step
            st = SufficientStats(n, float(t_sum[r, k]), float(t_sq[r, k]))
            sc = SufficientStats(n, float(c_sum[r, k]), float(c_sq[r, k]))
            if not seq_missed:
                seq = sequential_absolute_lift(st, sc, mixing_variance=0.01)
                seq_missed = not seq.lower <= effect <= seq.upper
            if not naive_missed:
                naive = absolute_lift(st, sc)
                naive_missed = not naive.lower <= effect <= naive.upper
            if seq_missed and naive_missed:
                break
        sequential_miss += seq_missed
        naive_miss += naive_missed
    assert 1 - sequential_miss / reps >= 0.95, sequential_miss / reps
    assert naive_miss / reps >= 0.10, naive_miss / reps


def test_sequential_interval_is_wider_than_welch_and_p_value_bounded() -> None:
    rng = np.random.default_rng(2)
    t = SufficientStats.from_values(rng.normal(0.3, 1.0, 2000))
    c = SufficientStats.from_values(rng.normal(0.0, 1.0, 2000))
    seq = sequential_absolute_lift(t, c, mixing_variance=0.01)
    fixed = absolute_lift(t, c)
    assert seq.method == "msprt"
    assert seq.lower < fixed.lower
    assert seq.upper > fixed.upper
    assert 0.0 <= seq.p_value <= 1.0
    assert seq.p_value < 0.05  # a 0.3 SD effect on 2,000 per arm is detected
    with pytest.raises(ValueError, match="mixing_variance"):
        sequential_absolute_lift(t, c, mixing_variance=0.0)


# --- probability to beat ----------------------------------------------------------------------


def test_probability_to_beat_normal() -> None:
    rng = np.random.default_rng(17)
    t = rng.normal(size=(1000, 100))
    c = rng.normal(size=(1000, 100))
    aa = [probability_to_beat(a, b) for a, b in zip(_stats_rows(t), _stats_rows(c), strict=True)]
    assert 0.47 <= float(np.mean(aa)) <= 0.53
    same = SufficientStats.from_values(t[0])
    assert probability_to_beat(same, same) == pytest.approx(0.5)
    big = SufficientStats.from_values(t[0] + 1.0)
    assert probability_to_beat(big, same) > 0.999
    assert probability_to_beat(same, big) < 0.001


@pytest.mark.parametrize(
    ("s_t", "n_t", "s_c", "n_c"),
    [
        (30, 100, 20, 100),
        (5, 1000, 4, 1200),
        (480, 10000, 500, 10000),
        (0, 10, 1, 10),
        (5000, 10000, 5_000_000, 10_000_000),  # narrow control posterior inside the range
    ],
)
def test_probability_to_beat_binary_matches_monte_carlo(
    s_t: int, n_t: int, s_c: int, n_c: int
) -> None:
    rng = np.random.default_rng(19)
    draws = 1_000_000
    p_t = rng.beta(1 + s_t, 1 + n_t - s_t, draws)
    p_c = rng.beta(1 + s_c, 1 + n_c - s_c, draws)
    monte_carlo = float(np.mean(p_t > p_c))
    assert probability_to_beat_binary(s_t, n_t, s_c, n_c) == pytest.approx(monte_carlo, abs=0.003)


def test_probability_to_beat_binary_aa_and_large_effect() -> None:
    assert probability_to_beat_binary(200, 5000, 200, 5000) == pytest.approx(0.5, abs=1e-6)
    assert probability_to_beat_binary(400, 5000, 200, 5000) > 0.999
    with pytest.raises(ValueError, match="control"):
        probability_to_beat_binary(1, 10, 11, 10)


# --- multiple metrics -------------------------------------------------------------------------


def test_holm_hand_computed() -> None:
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> max 0.06
    adjusted = adjust_p_values([0.01, 0.04, 0.03, 0.005], "holm")
    assert adjusted == pytest.approx((0.03, 0.06, 0.06, 0.02))
    assert adjust_p_values([0.5, 0.9], "holm") == pytest.approx((1.0, 1.0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bh_matches_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(size=15), rng.uniform(0, 0.01, size=5)])
    expected = stats.false_discovery_control(p, method="bh")
    assert adjust_p_values(list(p), "bh") == pytest.approx(tuple(expected), rel=1e-12)


@pytest.mark.parametrize(
    ("p_values", "method", "match"),
    [([0.1, 1.5], "bh", r"\[0, 1\]"), ([0.1], "bonferroni", "method")],
)
def test_adjust_p_values_rejects_invalid(p_values: list[float], method: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        adjust_p_values(p_values, method)  # type: ignore[arg-type]


def test_adjust_p_values_empty() -> None:
    assert adjust_p_values([], "holm") == ()


# --- sample-ratio mismatch --------------------------------------------------------------------


def test_srm_matches_scipy_chisquare() -> None:
    observed, shares = [1010, 960, 2030], [0.25, 0.25, 0.5]
    result = sample_ratio_mismatch(observed, shares)
    expected = stats.chisquare(observed, [1000.0, 1000.0, 2000.0])
    assert result.statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-12)
    assert result.expected_counts == pytest.approx((1000.0, 1000.0, 2000.0))
    assert result.observed_counts == (1010, 960, 2030)
    assert result.flagged is False
    # shares are normalised
    assert sample_ratio_mismatch(observed, [1, 1, 2]).p_value == pytest.approx(result.p_value)


def test_srm_fires_on_lost_rows_of_one_arm() -> None:
    rng = np.random.default_rng(23)
    arm_b = int(rng.binomial(20_000, 0.5))
    kept_b = int(rng.binomial(arm_b, 0.9))  # 10% of arm B's rows lost in logging
    result = sample_ratio_mismatch([20_000 - arm_b, kept_b], [0.5, 0.5])
    assert result.flagged
    assert result.p_value < 1e-10


def test_srm_clean_data_flags_at_about_alpha() -> None:
    rng = np.random.default_rng(29)
    reps = 4000
    arm_b = rng.binomial(20_000, 0.5, reps)
    results = [sample_ratio_mismatch([20_000 - int(b), int(b)], [0.5, 0.5]) for b in arm_b]
    rate_default = np.mean([r.flagged for r in results])  # alpha = 0.001
    rate_05 = np.mean([r.p_value < 0.05 for r in results])
    assert rate_default <= 0.003, rate_default
    assert 0.04 <= rate_05 <= 0.06, rate_05


def test_srm_with_propensities_of_an_adaptive_policy() -> None:
    rng = np.random.default_rng(31)
    decisions = 20_000
    # probabilities drift as a bandit learns: arm 0 goes from 1/3 to 0.7
    drift = np.linspace(0.0, 1.0, decisions)
    first = 1 / 3 + drift * (0.7 - 1 / 3)
    probabilities = np.column_stack([first, (1 - first) / 2, (1 - first) / 2])
    shares = expected_shares_from_propensities(probabilities)
    assert sum(shares) == pytest.approx(1.0)
    assert shares[0] == pytest.approx(probabilities[:, 0].mean())
    uniforms = rng.uniform(size=decisions)
    arms = (uniforms[:, None] > probabilities.cumsum(axis=1)).sum(axis=1)
    counts = np.bincount(arms, minlength=3)
    assert not sample_ratio_mismatch(list(counts), shares).flagged
    # testing against the design's uniform split instead would raise a false alarm
    assert sample_ratio_mismatch(list(counts), [1 / 3, 1 / 3, 1 / 3]).flagged
    # losing 10% of arm 2's rows is caught
    counts[2] = int(counts[2] * 0.9)
    assert sample_ratio_mismatch(list(counts), shares).flagged


@pytest.mark.parametrize(
    ("observed", "shares", "match"),
    [
        ([10], [1.0], "two groups"),
        ([10, 10], [0.5], "one share per group"),
        ([10, -1], [0.5, 0.5], "non-negative"),
        ([10, 10], [0.5, 0.0], "positive"),
        ([0, 0], [0.5, 0.5], "no units"),
    ],
)
def test_srm_rejects_invalid(observed: list[int], shares: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sample_ratio_mismatch(observed, shares)


@pytest.mark.parametrize(
    ("probabilities", "match"),
    [([0.5, 0.5], "decisions x arms"), ([[0.5, 0.6]], "sum to one"), ([[1.5, -0.5]], "non-neg")],
)
def test_expected_shares_rejects_invalid(probabilities: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        expected_shares_from_propensities(probabilities)


# --- customers as clusters -------------------------------------------------------------------


def _customer_world(
    rng: np.random.Generator, customers: int, mean: float
) -> tuple[np.ndarray, np.ndarray]:
    """Decisions of `customers` customers: 1-12 visits each, a customer effect shared by all
    of a customer's rewards (sd 1) plus noise (sd 0.5): visits are correlated within a
    customer, as repeat visits of one bank customer are."""
    visits = rng.integers(1, 13, size=customers)
    effect = rng.normal(0.0, 1.0, size=customers)
    owner = np.repeat(np.arange(customers), visits)
    values = mean + effect[owner] + rng.normal(0.0, 0.5, size=owner.size)
    return values, owner


def test_clustered_stats_reduce_to_the_ordinary_ones_with_one_row_per_customer() -> None:
    rng = np.random.default_rng(11)
    values = rng.normal(size=40)
    plain = SufficientStats.from_values(values)
    clustered = SufficientStats.from_values(values, clusters=np.arange(40))
    assert clustered.clusters == 40
    assert clustered.variance_of_mean == pytest.approx(plain.variance / plain.n, rel=1e-12)
    control_values = rng.normal(size=30) + 0.3
    control = SufficientStats.from_values(control_values)
    control_clustered = SufficientStats.from_values(control_values, clusters=np.arange(30))
    lift = absolute_lift(clustered, control_clustered)
    reference = absolute_lift(plain, control)
    assert lift.estimate == pytest.approx(reference.estimate)
    assert lift.standard_error == pytest.approx(reference.standard_error, rel=1e-12)


def test_clustered_variance_is_the_sandwich_of_customer_totals() -> None:
    rng = np.random.default_rng(12)
    values, owner = _customer_world(rng, 50, 0.0)
    stats_ = SufficientStats.from_values(values, clusters=owner)
    m = values.mean()
    totals = np.bincount(owner, weights=values - m)
    groups = np.unique(owner).size
    expected = groups / (groups - 1) * float(np.sum(totals**2)) / values.size**2
    assert stats_.variance_of_mean == pytest.approx(expected, rel=1e-10)
    # fields add over disjoint customers
    half = owner < 25
    left = SufficientStats.from_values(values[half], clusters=owner[half])
    right = SufficientStats.from_values(values[~half], clusters=owner[~half])
    combined = left.combine(right)
    assert combined.clusters == stats_.clusters
    assert combined.n == stats_.n
    assert combined.variance_of_mean == pytest.approx(stats_.variance_of_mean, rel=1e-10)


def test_clustered_lift_covers_where_per_decision_welch_does_not() -> None:
    """Tolerances fixed before running: 1,000 A-A experiments of 60 customers per group
    (about 390 decisions each). Per-decision Welch ignores the customer effect, so its 95%
    interval must cover the true difference (0) in at most 80% of them; the cluster-robust one
    in 92-98% (its df is the customers', so small-sample error stays small)."""
    rng = np.random.default_rng(13)
    naive = clustered = 0
    replicates = 1_000
    for _ in range(replicates):
        y_t, c_t = _customer_world(rng, 60, 0.0)
        y_c, c_c = _customer_world(rng, 60, 0.0)
        plain = absolute_lift(SufficientStats.from_values(y_t), SufficientStats.from_values(y_c))
        robust = absolute_lift(
            SufficientStats.from_values(y_t, clusters=c_t),
            SufficientStats.from_values(y_c, clusters=c_c),
        )
        naive += plain.lower <= 0.0 <= plain.upper
        clustered += robust.lower <= 0.0 <= robust.upper
        assert robust.method == "welch_clustered"
    assert naive / replicates <= 0.80
    assert 0.92 <= clustered / replicates <= 0.98
