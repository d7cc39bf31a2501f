"""Causal lift from sufficient statistics, and the sample-ratio mismatch check.

Everything here starts from aggregates a database can compute in one pass (COUNT, SUM, SUM of
squares, and for CUPED the cross moments), so a report never has to load unit-level rows.
Numerical trouble that is not the caller's fault (zero variance) is returned as a warning in
the result, not raised; invalid arguments raise `ValueError` naming the argument.

Sums of squares lose precision when the mean is large compared with the spread (the variance
is a difference of two large numbers); metrics here are rewards and conversions, where that does
not bite, and a negative variance from rounding is clipped to zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import integrate, stats  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float64]
AdjustMethod = Literal["holm", "bh"]

#: Warning code when the standard error of a lift is zero (no interval, no p-value).
ZERO_VARIANCE: Final = "zero_variance"
#: Warning code when the control mean is so close to zero that the ratio is unstable.
NEAR_ZERO_CONTROL: Final = "near_zero_control_mean"


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _check_group(name: str, n: int) -> None:
    if n < 2:
        raise ValueError(f"{name}: at least 2 units are needed, got n={n}")


@dataclass(frozen=True)
class SufficientStats:
    """Count, sum and sum of squares of a metric over the units of one group, and optionally
    the same by cluster (customer).

    What SQL aggregates as `COUNT(y), SUM(y), SUM(y * y)`; two disjoint groups combine by
    adding fields.

    Decisions of one customer are correlated (the same person's needs drive every visit), and
    customers, not decisions, are assigned to groups. With the cluster fields, the variance of
    the mean is the cluster-robust (sandwich) one, with `s_c` and `n_c` the sum and count of
    cluster `c` and `m` the mean:

        Var(mean) = G / (G - 1) * sum_c (s_c - n_c m)^2 / n^2
                  = G / (G - 1) * (S2 - 2 m X + m^2 N2) / n^2,

    `S2 = sum_c s_c^2`, `X = sum_c n_c s_c`, `N2 = sum_c n_c^2`: again sums that SQL aggregates
    (over a per-customer subquery). With one unit per cluster it equals `s^2 / n`.

    Reference: Liang & Zeger (1986), Biometrika 73; Cameron & Miller (2015), "A practitioner's
    guide to cluster-robust inference", J. Human Resources 50.

    Attributes:
        n: number of units.
        total: sum of the metric.
        total_squares: sum of the squared metric.
        clusters: number of clusters G (None: units are independent).
        cluster_total_squares: `S2`, sum over clusters of the squared cluster sum.
        cluster_cross: `X`, sum over clusters of cluster size times cluster sum.
        cluster_size_squares: `N2`, sum over clusters of the squared cluster size.
    """

    n: int
    total: float
    total_squares: float
    clusters: int | None = None
    cluster_total_squares: float = 0.0
    cluster_cross: float = 0.0
    cluster_size_squares: float = 0.0

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")
        if not (math.isfinite(self.total) and math.isfinite(self.total_squares)):
            raise ValueError("total and total_squares must be finite")
        if self.total_squares < 0.0:
            raise ValueError(f"total_squares must be >= 0, got {self.total_squares}")
        if self.clusters is not None:
            if not 0 <= self.clusters <= self.n:
                raise ValueError(f"clusters must be in [0, n], got {self.clusters}")
            sums = (self.cluster_total_squares, self.cluster_cross, self.cluster_size_squares)
            if not all(math.isfinite(v) for v in sums) or self.cluster_size_squares < 0.0:
                raise ValueError("cluster sums must be finite, cluster_size_squares >= 0")

    @classmethod
    def from_values(
        cls, values: npt.ArrayLike, clusters: npt.ArrayLike | None = None
    ) -> SufficientStats:
        """Aggregate a one-dimensional array of unit-level values (and their cluster ids)."""
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1:
            raise ValueError(f"values must be one-dimensional, got shape {array.shape}")
        if clusters is None:
            return cls(int(array.size), float(array.sum()), float(np.square(array).sum()))
        ids = np.asarray(clusters)
        if ids.shape != array.shape:
            raise ValueError("clusters: one cluster id per value is needed")
        _, index = np.unique(ids, return_inverse=True)
        sums = np.bincount(index, weights=array)
        sizes = np.bincount(index).astype(np.float64)
        return cls(
            int(array.size),
            float(array.sum()),
            float(np.square(array).sum()),
            int(sums.size),
            float(np.square(sums).sum()),
            float((sizes * sums).sum()),
            float(np.square(sizes).sum()),
        )

    def combine(self, other: SufficientStats) -> SufficientStats:
        """The statistics of the union of two disjoint groups (fields add; clusters must be
        disjoint too, as customers of different groups are)."""
        clustered = self.clusters is not None and other.clusters is not None
        return SufficientStats(
            self.n + other.n,
            self.total + other.total,
            self.total_squares + other.total_squares,
            (self.clusters or 0) + (other.clusters or 0) if clustered else None,
            self.cluster_total_squares + other.cluster_total_squares if clustered else 0.0,
            self.cluster_cross + other.cluster_cross if clustered else 0.0,
            self.cluster_size_squares + other.cluster_size_squares if clustered else 0.0,
        )

    @property
    def mean(self) -> float:
        """Sample mean `total / n` (NaN when n = 0)."""
        return self.total / self.n if self.n > 0 else math.nan

    @property
    def variance(self) -> float:
        """Unbiased sample variance `(total_squares - total^2 / n) / (n - 1)` (NaN when n < 2)."""
        if self.n < 2:
            return math.nan
        return max(self.total_squares - self.total * self.total / self.n, 0.0) / (self.n - 1)

    @property
    def variance_of_mean(self) -> float:
        """Variance of the mean: cluster-robust with clusters, else `variance / n` (NaN when
        fewer than 2 units or clusters)."""
        if self.clusters is None:
            return self.variance / self.n if self.n >= 2 else math.nan
        g = self.clusters
        if g < 2 or self.n < 2:
            return math.nan
        m = self.mean
        spread = (
            self.cluster_total_squares
            - 2.0 * m * self.cluster_cross
            + m * m * self.cluster_size_squares
        )
        return g / (g - 1) * max(spread, 0.0) / (self.n * self.n)

    @property
    def units(self) -> int:
        """The independent units: clusters when there are any, else the rows."""
        return self.n if self.clusters is None else self.clusters

    @property
    def degrees_of_freedom(self) -> int:
        """Units minus one, or clusters minus one with clusters."""
        return self.units - 1


@dataclass(frozen=True)
class Lift:
    """An estimated lift with its interval and test.

    Attributes:
        estimate: point estimate (difference of means, or relative change).
        lower: lower end of the interval.
        upper: upper end of the interval.
        p_value: two-sided p-value of "no lift" (NaN when the standard error is zero).
        df: degrees of freedom of the reference distribution (`inf` for normal ones).
        method: how it was computed (`welch`, `delta`, `cuped-welch`, `msprt`).
        standard_error: standard error of `estimate`.
        statistic: `estimate / standard_error` (NaN when the standard error is zero).
        confidence: nominal coverage of the interval.
        warnings: coded warnings (`zero_variance`, `near_zero_control_mean`).
    """

    estimate: float
    lower: float
    upper: float
    p_value: float
    df: float
    method: str
    standard_error: float
    statistic: float
    confidence: float
    warnings: tuple[str, ...] = ()


def _welch(
    mean_t: float,
    var_t: float,
    n_t: int,
    mean_c: float,
    var_c: float,
    n_c: int,
    confidence: float,
    method: str,
    *,
    variances_of_means: tuple[float, float] | None = None,
) -> Lift:
    """Welch's interval; `variances_of_means` replaces `var / n` (e.g. cluster-robust ones),
    with `n_t`, `n_c` then the units whose count minus one are the degrees of freedom."""
    estimate = mean_t - mean_c
    a, b = variances_of_means or (var_t / n_t, var_c / n_c)
    se2 = a + b
    if se2 <= 0.0:
        return Lift(
            estimate,
            estimate,
            estimate,
            math.nan,
            math.nan,
            method,
            0.0,
            math.nan,
            confidence,
            (ZERO_VARIANCE,),
        )
    df = se2 * se2 / (a * a / (n_t - 1) + b * b / (n_c - 1))
    se = math.sqrt(se2)
    statistic = estimate / se
    p_value = float(2.0 * stats.t.sf(abs(statistic), df))
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df)) * se
    return Lift(
        estimate, estimate - half, estimate + half, p_value, df, method, se, statistic, confidence
    )


def absolute_lift(
    treatment: SufficientStats, control: SufficientStats, confidence: float = 0.95
) -> Lift:
    """Difference of means with Welch's interval.

    `d = ybar_t - ybar_c`, `se^2 = s_t^2 / n_t + s_c^2 / n_c`, Welch-Satterthwaite degrees of
    freedom `df = se^4 / ((s_t^2/n_t)^2/(n_t-1) + (s_c^2/n_c)^2/(n_c-1))`, interval
    `d +- t_{df, (1+confidence)/2} * se`, p-value `2 * P(T_df > |d / se|)`.
    Same numbers as `scipy.stats.ttest_ind(treatment, control, equal_var=False)`.

    When both groups carry clusters (customers), `s^2 / n` becomes each mean's cluster-robust
    variance (see `SufficientStats`) and `n - 1` the clusters minus one (method
    `welch_clustered`): decisions of one customer are not independent.

    References: Welch (1947), "The generalization of Student's problem when several different
    population variances are involved", Biometrika 34; Satterthwaite (1946), Biometrics 2.
    """
    _check_confidence(confidence)
    _check_group("treatment", treatment.n)
    _check_group("control", control.n)
    if treatment.clusters is not None and control.clusters is not None:
        _check_group("treatment clusters", treatment.clusters)
        _check_group("control clusters", control.clusters)
        return _welch(
            treatment.mean,
            treatment.variance,
            treatment.clusters,
            control.mean,
            control.variance,
            control.clusters,
            confidence,
            "welch_clustered",
            variances_of_means=(treatment.variance_of_mean, control.variance_of_mean),
        )
    return _welch(
        treatment.mean,
        treatment.variance,
        treatment.n,
        control.mean,
        control.variance,
        control.n,
        confidence,
        "welch",
    )


def relative_lift(
    treatment: SufficientStats, control: SufficientStats, confidence: float = 0.95
) -> Lift:
    """Relative change `r = ybar_t / ybar_c - 1` with the delta-method interval.

    First-order Taylor expansion of the ratio of two independent means:
    `Var(r) ~= s_t^2 / (n_t ybar_c^2) + ybar_t^2 s_c^2 / (n_c ybar_c^4)`; interval
    `r +- z_{(1+confidence)/2} * sqrt(Var(r))`, p-value from the same normal statistic
    (`df = inf`). A warning is attached when the control mean is within two of its standard
    errors of zero (the approximation is then poor). With clusters on both groups, the
    variances of the means are the cluster-robust ones (method `delta_clustered`).

    References: Kohavi, Tang, Xu (2020), "Trustworthy Online Controlled Experiments", ch. 18;
    Deng, Knoblich, Lu (2018), "Applying the Delta Method in Metric Analytics", KDD.

    Raises:
        ValueError: when the control mean is 0 (the ratio is undefined).
    """
    _check_confidence(confidence)
    _check_group("treatment", treatment.n)
    _check_group("control", control.n)
    mean_t, mean_c = treatment.mean, control.mean
    if mean_c == 0.0:
        raise ValueError("control: the mean is 0, so a relative lift is undefined")
    estimate = mean_t / mean_c - 1.0
    # the cluster-robust variances of the means when both groups carry clusters
    clustered = treatment.clusters is not None and control.clusters is not None
    method = "delta_clustered" if clustered else "delta"
    if clustered:
        _check_group("treatment clusters", treatment.clusters or 0)
        _check_group("control clusters", control.clusters or 0)
        var_t, var_c = treatment.variance_of_mean, control.variance_of_mean
    else:
        var_t, var_c = treatment.variance / treatment.n, control.variance / control.n
    se2 = var_t / mean_c**2 + mean_t**2 * var_c / mean_c**4
    warnings = (NEAR_ZERO_CONTROL,) if abs(mean_c) < 2.0 * math.sqrt(var_c) else ()
    if se2 <= 0.0:
        return Lift(
            estimate,
            estimate,
            estimate,
            math.nan,
            math.inf,
            method,
            0.0,
            math.nan,
            confidence,
            (*warnings, ZERO_VARIANCE),
        )
    se = math.sqrt(se2)
    statistic = estimate / se
    half = float(stats.norm.ppf(0.5 + confidence / 2.0)) * se
    p_value = float(2.0 * stats.norm.sf(abs(statistic)))
    return Lift(
        estimate,
        estimate - half,
        estimate + half,
        p_value,
        math.inf,
        method,
        se,
        statistic,
        confidence,
        warnings,
    )


@dataclass(frozen=True)
class CupedStats:
    """Sufficient statistics of a metric `y` and its pre-period covariate `x` in one group.

    What SQL aggregates as `COUNT(*), SUM(y), SUM(y*y), SUM(x), SUM(x*x), SUM(x*y)`.

    Attributes:
        n: number of units.
        sum_y: sum of the metric.
        sum_y2: sum of the squared metric.
        sum_x: sum of the covariate.
        sum_x2: sum of the squared covariate.
        sum_xy: sum of the products of metric and covariate.
    """

    n: int
    sum_y: float
    sum_y2: float
    sum_x: float
    sum_x2: float
    sum_xy: float

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")
        fields = (self.sum_y, self.sum_y2, self.sum_x, self.sum_x2, self.sum_xy)
        if not all(math.isfinite(value) for value in fields):
            raise ValueError("every sum must be finite")
        if self.sum_y2 < 0.0 or self.sum_x2 < 0.0:
            raise ValueError("sum_y2 and sum_x2 must be >= 0")

    @classmethod
    def from_values(cls, y: npt.ArrayLike, x: npt.ArrayLike) -> CupedStats:
        """Aggregate unit-level metric `y` and covariate `x` (one-dimensional, same length)."""
        ya = np.asarray(y, dtype=np.float64)
        xa = np.asarray(x, dtype=np.float64)
        if ya.ndim != 1 or ya.shape != xa.shape:
            raise ValueError(
                f"y and x must be one-dimensional of one length: {ya.shape}, {xa.shape}"
            )
        return cls(
            int(ya.size),
            float(ya.sum()),
            float(np.square(ya).sum()),
            float(xa.sum()),
            float(np.square(xa).sum()),
            float((xa * ya).sum()),
        )

    def combine(self, other: CupedStats) -> CupedStats:
        """The statistics of the union of two disjoint groups (fields add)."""
        return CupedStats(
            self.n + other.n,
            self.sum_y + other.sum_y,
            self.sum_y2 + other.sum_y2,
            self.sum_x + other.sum_x,
            self.sum_x2 + other.sum_x2,
            self.sum_xy + other.sum_xy,
        )

    @property
    def y(self) -> SufficientStats:
        """The metric alone."""
        return SufficientStats(self.n, self.sum_y, self.sum_y2)

    @property
    def x(self) -> SufficientStats:
        """The covariate alone."""
        return SufficientStats(self.n, self.sum_x, self.sum_x2)

    @property
    def comoment(self) -> float:
        """Centred cross moment `sum_xy - sum_x sum_y / n` (n times the biased covariance)."""
        return self.sum_xy - self.sum_x * self.sum_y / self.n if self.n > 0 else math.nan

    @property
    def covariance(self) -> float:
        """Unbiased sample covariance of `x` and `y` (NaN when n < 2)."""
        return self.comoment / (self.n - 1) if self.n >= 2 else math.nan


@dataclass(frozen=True)
class CupedLift:
    """A CUPED-adjusted absolute lift and what the adjustment did.

    Attributes:
        lift: the adjusted difference of means with Welch's interval.
        unadjusted: the plain Welch lift of the same metric, for comparison.
        theta: the regression coefficient used, pooled within groups.
        correlation: pooled within-group correlation `rho` of metric and covariate.
        variance_reduction: `1 - rho^2`, the expected ratio of adjusted to plain variance.
        observed_variance_ratio: `lift.standard_error^2 / unadjusted.standard_error^2`.
    """

    lift: Lift
    unadjusted: Lift
    theta: float
    correlation: float
    variance_reduction: float
    observed_variance_ratio: float


def cuped_lift(treatment: CupedStats, control: CupedStats, confidence: float = 0.95) -> CupedLift:
    """Absolute lift adjusted with a pre-period covariate (CUPED).

    Each unit's metric becomes `y - theta (x - xbar)`, with one `theta` for both groups, pooled
    within groups: `theta = (C_t + C_c) / (Sxx_t + Sxx_c)`, where `C` is the centred cross moment
    and `Sxx` the centred sum of squares of `x` (pooling within groups keeps a treatment effect
    on `y` out of `theta`). The adjusted difference is
    `(ybar_t - ybar_c) - theta (xbar_t - xbar_c)`, unbiased because the covariate is measured
    before assignment, and the adjusted group variance is
    `s_y^2 - 2 theta s_xy + theta^2 s_x^2`; the interval is Welch's on those variances. The
    variance falls by the factor `1 - rho^2` (rho the correlation of `x` and `y`). Estimating
    `theta` adds O(1/n) to the variance, which is ignored, as in the paper.

    Reference: Deng, Xu, Kohavi, Walker (2013), "Improving the Sensitivity of Online Controlled
    Experiments by Utilizing Pre-Experiment Data", WSDM.
    """
    _check_confidence(confidence)
    _check_group("treatment", treatment.n)
    _check_group("control", control.n)
    unadjusted = absolute_lift(treatment.y, control.y, confidence)
    sxx = (treatment.x.variance * (treatment.n - 1)) + (control.x.variance * (control.n - 1))
    syy = (treatment.y.variance * (treatment.n - 1)) + (control.y.variance * (control.n - 1))
    sxy = treatment.comoment + control.comoment
    theta = sxy / sxx if sxx > 0.0 else 0.0
    correlation = sxy / math.sqrt(sxx * syy) if sxx > 0.0 and syy > 0.0 else 0.0
    correlation = min(max(correlation, -1.0), 1.0)

    def adjusted_variance(group: CupedStats) -> float:
        value = group.y.variance - 2.0 * theta * group.covariance + theta**2 * group.x.variance
        return max(value, 0.0)

    lift = _welch(
        treatment.y.mean - theta * treatment.x.mean,
        adjusted_variance(treatment),
        treatment.n,
        control.y.mean - theta * control.x.mean,
        adjusted_variance(control),
        control.n,
        confidence,
        "cuped-welch",
    )
    ratio = (
        lift.standard_error**2 / unadjusted.standard_error**2
        if unadjusted.standard_error > 0.0
        else math.nan
    )
    return CupedLift(lift, unadjusted, theta, correlation, 1.0 - correlation**2, ratio)


def sequential_absolute_lift(
    treatment: SufficientStats,
    control: SufficientStats,
    mixing_variance: float,
    confidence: float = 0.95,
) -> Lift:
    """Always-valid interval for the difference of means (mSPRT / normal-mixture sequence).

    With `d = ybar_t - ybar_c`, `V = s_t^2 / n_t + s_c^2 / n_c` and a normal mixing
    distribution `N(0, tau^2)` over the effect (`tau^2 = mixing_variance`, on the squared scale
    of the metric difference; put it near the square of the effects you care about), the
    mixture likelihood ratio of "no effect" is
    `Lambda = sqrt(V / (V + tau^2)) exp(tau^2 d^2 / (2 V (V + tau^2)))`, and
    `alpha = 1 - confidence`. The interval
    `d +- sqrt(V (V + tau^2) / tau^2 * log((V + tau^2) / (V alpha^2)))` and the p-value
    `min(1, 1 / Lambda)` are valid at any stopping time: the probability that the interval
    misses the true difference at *any* look is at most `alpha` (Ville's inequality on the
    mixture martingale), so the experiment may be watched continuously and stopped whenever.
    For the guarantee across looks, report the running intersection of the intervals and the
    running minimum of the p-values. Validity is exact for normal data with known variances and
    asymptotic when the variances are estimated, as here.

    References: Johari, Koomen, Pekelis, Walsh (2017), "Peeking at A/B Tests: Why it matters,
    and what to do about it", KDD; Howard, Ramdas, McAuliffe, Sekhon (2021), "Time-uniform,
    nonparametric, nonasymptotic confidence sequences", Annals of Statistics 49 (the
    normal-mixture boundary).
    """
    _check_confidence(confidence)
    _check_group("treatment", treatment.n)
    _check_group("control", control.n)
    if not (math.isfinite(mixing_variance) and mixing_variance > 0.0):
        raise ValueError(f"mixing_variance must be positive and finite, got {mixing_variance}")
    estimate = treatment.mean - control.mean
    v = treatment.variance_of_mean + control.variance_of_mean
    if v <= 0.0:
        return Lift(
            estimate,
            estimate,
            estimate,
            math.nan,
            math.inf,
            "msprt",
            0.0,
            math.nan,
            confidence,
            (ZERO_VARIANCE,),
        )
    alpha = 1.0 - confidence
    tau2 = mixing_variance
    half = math.sqrt(v * (v + tau2) / tau2 * math.log((v + tau2) / (v * alpha * alpha)))
    log_lambda = 0.5 * math.log(v / (v + tau2)) + tau2 * estimate**2 / (2.0 * v * (v + tau2))
    p_value = 1.0 if log_lambda <= 0.0 else math.exp(-log_lambda)
    se = math.sqrt(v)
    return Lift(
        estimate,
        estimate - half,
        estimate + half,
        p_value,
        math.inf,
        "msprt",
        se,
        estimate / se,
        confidence,
    )


def probability_to_beat(treatment: SufficientStats, control: SufficientStats) -> float:
    """Posterior probability that the treatment mean exceeds the control mean.

    With flat priors and the normal approximation of each mean,
    `mu_t - mu_c | data ~ N(ybar_t - ybar_c, s_t^2/n_t + s_c^2/n_c)`, so
    `P(mu_t > mu_c) = Phi((ybar_t - ybar_c) / se)` (0.5 when there is no difference and no
    variance).

    Reference: Gelman et al. (2013), "Bayesian Data Analysis", 3rd ed., sec. 3.2 (normal model
    with a noninformative prior); GrowthBook's gbstats uses the same approximation.
    """
    _check_group("treatment", treatment.n)
    _check_group("control", control.n)
    difference = treatment.mean - control.mean
    se2 = treatment.variance_of_mean + control.variance_of_mean
    if se2 <= 0.0:
        return 0.5 if difference == 0.0 else float(difference > 0.0)
    return float(stats.norm.cdf(difference / math.sqrt(se2)))


def probability_to_beat_binary(
    successes_t: int,
    n_t: int,
    successes_c: int,
    n_c: int,
    prior_alpha: float = 1.0,
    prior_beta: float = 1.0,
) -> float:
    """Posterior `P(p_t > p_c)` for two conversion rates with Beta-Binomial models.

    Each rate has posterior `Beta(prior_alpha + successes, prior_beta + n - successes)`, the two
    independent, so `P(p_t > p_c) = integral_0^1 f_t(p) F_c(p) dp` with `f_t` the treatment
    density and `F_c` the control distribution function. The integral is computed with
    `scipy.integrate.quad` over the central `1 - 2e-12` mass of the treatment posterior (the
    rest contributes less than 1e-12), which keeps quadrature accurate when the posterior is
    narrow.

    Reference: Gelman et al. (2013), "Bayesian Data Analysis", 3rd ed., sec. 2.4; Evan Miller
    (2015), "Formulas for Bayesian A/B Testing" (closed form for integer parameters).
    """
    for name, successes, n in (("treatment", successes_t, n_t), ("control", successes_c, n_c)):
        if n < 0 or not 0 <= successes <= n:
            raise ValueError(f"{name}: need 0 <= successes <= n, got {successes} of {n}")
    if not (prior_alpha > 0.0 and prior_beta > 0.0):
        raise ValueError("prior_alpha and prior_beta must be positive")
    post_t = stats.beta(prior_alpha + successes_t, prior_beta + n_t - successes_t)
    post_c = stats.beta(prior_alpha + successes_c, prior_beta + n_c - successes_c)
    lower, upper = float(post_t.ppf(1e-12)), float(post_t.isf(1e-12))

    def integrand(p: float) -> float:
        return float(post_t.pdf(p) * post_c.cdf(p))

    value, _ = integrate.quad(integrand, lower, upper, limit=200)
    return float(min(max(value, 0.0), 1.0))


def adjust_p_values(p_values: Sequence[float], method: AdjustMethod) -> tuple[float, ...]:
    """Adjusted p-values for several metrics tested at once, in the input order.

    With the p-values sorted ascending `p_(1) <= ... <= p_(m)`:

    - `holm` (family-wise error rate): `q_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))`.
      Reference: Holm (1979), "A simple sequentially rejective multiple test procedure",
      Scandinavian Journal of Statistics 6.
    - `bh` (false discovery rate): `q_(i) = min_{j >= i} min(1, m p_(j) / j)`.
      Reference: Benjamini, Hochberg (1995), "Controlling the false discovery rate", JRSS B 57.

    Reject the hypotheses whose adjusted p-value is at or below the chosen level.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError("p_values must be a flat sequence")
    if p.size == 0:
        return ()
    if not np.all((p >= 0.0) & (p <= 1.0)):
        raise ValueError("p_values must all be in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    ranks = np.arange(1, m + 1, dtype=np.float64)
    sorted_p = p[order]
    if method == "holm":
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - ranks + 1.0) * sorted_p))
    elif method == "bh":
        adjusted = np.minimum.accumulate(np.minimum(1.0, m * sorted_p / ranks)[::-1])[::-1]
    else:
        raise ValueError(f"method must be 'holm' or 'bh', got {method!r}")
    result = np.empty(m, dtype=np.float64)
    result[order] = adjusted
    return tuple(float(value) for value in result)


@dataclass(frozen=True)
class SampleRatioMismatch:
    """A chi-square goodness-of-fit test of the observed group sizes.

    Attributes:
        statistic: Pearson's chi-square statistic.
        p_value: its p-value with `k - 1` degrees of freedom.
        flagged: `p_value < alpha`: assignment or logging is probably broken, and the lift
            should not be trusted.
        observed_counts: the group sizes tested.
        expected_counts: `total * share` per group.
        alpha: the threshold used.
    """

    statistic: float
    p_value: float
    flagged: bool
    observed_counts: tuple[int, ...]
    expected_counts: tuple[float, ...]
    alpha: float


def sample_ratio_mismatch(
    observed_counts: Sequence[int], expected_shares: Sequence[float], alpha: float = 0.001
) -> SampleRatioMismatch:
    """Test whether the group sizes match the designed (or logged) assignment shares.

    `expected_i = N * share_i` (shares are normalised to sum to one), statistic
    `sum_i (observed_i - expected_i)^2 / expected_i`, compared with chi-square on `k - 1`
    degrees of freedom (`scipy.stats.chisquare`). The default `alpha = 0.001` is strict because
    the check runs on every experiment, often repeatedly.

    Reference: Fabijan et al. (2019), "Diagnosing Sample Ratio Mismatch in Online Controlled
    Experiments", KDD; Kohavi, Tang, Xu (2020), ch. 21.
    """
    observed = np.asarray(observed_counts, dtype=np.float64)
    shares = np.asarray(expected_shares, dtype=np.float64)
    if observed.ndim != 1 or observed.size < 2:
        raise ValueError("observed_counts: at least two groups are needed")
    if shares.shape != observed.shape:
        raise ValueError("expected_shares: one share per group is needed")
    if np.any(observed < 0) or np.any(observed != np.round(observed)):
        raise ValueError("observed_counts: counts must be non-negative integers")
    if not (np.all(np.isfinite(shares)) and np.all(shares > 0.0)):
        raise ValueError("expected_shares: shares must be positive and finite")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    total = observed.sum()
    if total <= 0:
        raise ValueError("observed_counts: no units at all")
    expected = total * shares / shares.sum()
    result = stats.chisquare(observed, expected)
    p_value = float(result.pvalue)
    return SampleRatioMismatch(
        float(result.statistic),
        p_value,
        p_value < alpha,
        tuple(int(count) for count in observed),
        tuple(float(value) for value in expected),
        alpha,
    )


def expected_shares_from_propensities(probabilities: npt.ArrayLike) -> tuple[float, ...]:
    """Expected share of each arm when assignment is adaptive (a bandit).

    Given the full logged probability vector of every decision (`n_decisions x n_arms`), the
    expected count of arm `a` is `sum_i pi_i(a)`, so its share is that sum over the number of
    decisions; in SQL, `SUM(p_a) / COUNT(*)` per arm. Pass the result to
    `sample_ratio_mismatch` with the observed count of each arm.

    Reference: Fabijan et al. (2019) (SRM); the expectation is that of a sum of independent
    Bernoulli draws with the logged probabilities.
    """
    array = np.asarray(probabilities, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] < 2:
        raise ValueError("probabilities: need a (decisions x arms) array, at least two arms")
    if not (np.all(np.isfinite(array)) and np.all(array >= 0.0)):
        raise ValueError("probabilities: entries must be finite and non-negative")
    sums = array.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=1e-6):
        raise ValueError("probabilities: every row must sum to one")
    return tuple(float(value) for value in array.mean(axis=0))
