"""Off-policy evaluation: the value of a target policy estimated from logged decisions.

Every estimator takes numpy arrays over the n logged decisions:

- `rewards` r_i, the reward observed for the logged action;
- `logged_propensities` p_i = mu(a_i|x_i), the probability the logging policy gave the logged
  action (in (0, 1]);
- `target_probabilities` pi(a_i|x_i), the probability the target policy gives the logged action
  (in [0, 1]);
- for the model-based estimators, `reward_model_logged` qhat(x_i, a_i) and
  `reward_model_target` sum_a pi(a|x_i) qhat(x_i, a), the reward model's value of the target
  policy at x_i.

The importance weight is w_i = pi(a_i|x_i) / p_i. Each estimator is written as

    V = mean(c) + mean(a) / mean(b)

with per-decision terms c_i, a_i, b_i (b_i = 1 and c_i = 0 where not needed), so that one code
path computes the value, the linearised (delta-method) terms c_i + theta + (a_i - theta b_i) /
mean(b) with theta = mean(a) / mean(b) for the normal interval, and the percentile bootstrap.

Intervals (two-sided, level 1 - alpha): `normal` (CLT on the linearised terms, sample standard
deviation with ddof=1, normal quantile; with `clusters`, the cluster-robust variance, because
decisions of one customer are not independent), `bootstrap` (percentile, B seeded resamples,
vectorised) and `bernstein` (empirical Bernstein with a known range; not for the
self-normalised estimators). `empirical_likelihood` and `cressie_read` give likelihood-based
estimates whose profile-likelihood intervals stay within the known reward range.
`confidence_sequence` gives an anytime-valid sequence for the mean of `ips_terms` or
`dr_terms`, for monitoring as the decisions arrive.

Diagnostics are computed on the raw (unclipped) importance weights, because they describe the
overlap of the two policies rather than the estimator: effective sample size
(sum w)^2 / sum w^2 (Kong 1992; Owen 2013, section 9.3), the largest weight, and the mean weight
(1 in expectation when the logging policy covers the target policy). Numerical trouble is
returned as coded warnings in the result; invalid arguments raise `ValueError` naming the
argument.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float64]
IntervalMethod = Literal["normal", "bootstrap", "bernstein"]
#: Intervals of the likelihood estimators (`empirical_likelihood`, `cressie_read`).
LikelihoodMethod = Literal["empirical_likelihood", "euclidean_likelihood"]

#: Warning code: effective sample size below 1% of n or below `MIN_EFFECTIVE_SAMPLE_SIZE`.
LOW_EFFECTIVE_SAMPLE_SIZE: Final = "low_effective_sample_size"
#: Warning code: some importance weight exceeds the `max_weight_threshold` argument.
LARGE_WEIGHT: Final = "large_weight"
#: Warning code: the mean importance weight is far from 1 (support deficiency or bad propensities).
MEAN_WEIGHT_FAR_FROM_ONE: Final = "mean_weight_far_from_one"
#: Warning code: every importance weight is zero (the target never takes a logged action).
NO_OVERLAP: Final = "no_overlap"
#: Warning code: the per-decision terms have zero variance (the interval is a point).
ZERO_VARIANCE: Final = "zero_variance"
#: Warning code: the empirical-Bernstein range used the largest observed weight as its bound.
WEIGHT_BOUND_FROM_DATA: Final = "weight_bound_from_data"
#: Warning code: some bootstrap resamples had no overlap and were left out.
BOOTSTRAP_DEGENERATE: Final = "bootstrap_degenerate_resamples"
#: Warning code: no distribution on the known support has mean weight 1 (e.g. every weight
#: below 1 with a weight bound of 1, or, for Euclidean likelihood, equal weights other than 1).
EMPIRICAL_LIKELIHOOD_INFEASIBLE: Final = "empirical_likelihood_infeasible"

#: Below this effective sample size the low-ESS warning is raised whatever n is.
MIN_EFFECTIVE_SAMPLE_SIZE: Final = 100.0
#: Default threshold on a single importance weight for the large-weight warning.
DEFAULT_MAX_WEIGHT_THRESHOLD: Final = 100.0
#: Bootstrap indices drawn per chunk (bounds memory at about 8 bytes times this).
_BOOTSTRAP_CHUNK: Final = 4_000_000
#: Bound on the empirical-likelihood dual multipliers; a value needing larger ones is far
#: outside any interval.
_MULTIPLIER_CAP: Final = 1e8


@dataclass(frozen=True)
class Estimate:
    """An off-policy estimate of a target policy's value, its interval and diagnostics.

    Attributes:
        name: estimator acronym (`IPS`, `SNIPS`, `DM`, `DR`, `SNDR`, `SwitchDR`, `EL`, `EuL`).
        value: the point estimate (nan when undefined, e.g. SNIPS without overlap).
        lower: lower end of the two-sided 1 - alpha interval.
        upper: upper end of the interval.
        n: number of logged decisions.
        effective_sample_size: (sum w)^2 / sum w^2 of the raw importance weights.
        max_weight: largest raw importance weight.
        warnings: coded warnings (see the module's `Final` constants).
        interval_method: `normal`, `bootstrap` or `bernstein`; `empirical_likelihood` or
            `euclidean_likelihood` for the likelihood estimators.
    """

    name: str
    value: float
    lower: float
    upper: float
    n: int
    effective_sample_size: float
    max_weight: float
    warnings: tuple[str, ...]
    interval_method: IntervalMethod | LikelihoodMethod


@dataclass(frozen=True)
class _Terms:
    """Per-decision terms of V = mean(c) + mean(a) / mean(b)."""

    c: FloatArray
    a: FloatArray
    b: FloatArray
    self_normalised: bool


# ---------------------------------------------------------------------------------------------
# validation


def _as_vector(name: str, values: npt.ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


def _validate(
    rewards: npt.ArrayLike,
    logged_propensities: npt.ArrayLike,
    target_probabilities: npt.ArrayLike,
    **models: npt.ArrayLike,
) -> tuple[FloatArray, FloatArray, FloatArray, dict[str, FloatArray]]:
    r = _as_vector("rewards", rewards)
    p = _as_vector("logged_propensities", logged_propensities)
    t = _as_vector("target_probabilities", target_probabilities)
    arrays = {name: _as_vector(name, values) for name, values in models.items()}
    n = r.shape[0]
    if n == 0:
        raise ValueError("rewards must not be empty")
    for name, array in {"logged_propensities": p, "target_probabilities": t, **arrays}.items():
        if array.shape[0] != n:
            raise ValueError(f"{name} has length {array.shape[0]}, rewards has length {n}")
    if np.any((p <= 0.0) | (p > 1.0)):
        raise ValueError("logged_propensities must lie in (0, 1]")
    if np.any((t < 0.0) | (t > 1.0)):
        raise ValueError("target_probabilities must lie in [0, 1]")
    return r, p, t, arrays


def _check_clip(clip: float | None) -> None:
    if clip is not None and not clip > 0.0:
        raise ValueError(f"clip must be positive, got {clip}")


def _check_options(alpha: float, clip: float | None, n_bootstrap: int) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    _check_clip(clip)
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be at least 2, got {n_bootstrap}")


def _check_reward_range(
    reward_range: tuple[float, float] | None, **arrays: FloatArray
) -> tuple[float, float]:
    if reward_range is None:
        raise ValueError("reward_range is required for interval='bernstein'")
    low, high = float(reward_range[0]), float(reward_range[1])
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"reward_range must be finite with low < high, got {reward_range}")
    for name, array in arrays.items():
        if np.any((array < low) | (array > high)):
            raise ValueError(f"{name} must lie in reward_range {reward_range}")
    return low, high


def _cluster_codes(
    clusters: npt.ArrayLike | None, n: int, interval: str
) -> npt.NDArray[np.intp] | None:
    """Cluster ids (any comparable values, e.g. customer keys) as indices 0..G-1."""
    if clusters is None:
        return None
    if interval != "normal":
        raise ValueError(f"clusters is only used with interval='normal', got {interval!r}")
    ids = np.asarray(clusters)
    if ids.ndim != 1:
        raise ValueError(f"clusters must be one-dimensional, got shape {ids.shape}")
    if ids.shape[0] != n:
        raise ValueError(f"clusters has length {ids.shape[0]}, rewards has length {n}")
    try:
        _, codes = np.unique(ids, return_inverse=True)
    except TypeError as error:
        raise ValueError(f"clusters must be comparable ids without nulls: {error}") from error
    if int(np.max(codes)) + 1 < 2:
        raise ValueError("clusters must contain at least two distinct ids")
    return np.asarray(codes, dtype=np.intp).reshape(-1)


# ---------------------------------------------------------------------------------------------
# diagnostics


def effective_sample_size(weights: npt.ArrayLike) -> float:
    """Kish's effective sample size of importance weights, (sum w)^2 / sum w^2.

    Equals n when all weights are equal and 1 when one weight dominates; 0 when all are zero.
    Reference: Kong (1992); Owen, *Monte Carlo theory, methods and examples* (2013), 9.3.
    """
    w = np.asarray(weights, dtype=np.float64)
    squares = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / squares if squares > 0.0 else 0.0


def _diagnostics(
    weights: FloatArray, max_weight_threshold: float
) -> tuple[float, float, list[str]]:
    n = weights.shape[0]
    ess = effective_sample_size(weights)
    largest = float(np.max(weights))
    warnings: list[str] = []
    if largest == 0.0:
        warnings.append(NO_OVERLAP)
    if ess < 0.01 * n or ess < MIN_EFFECTIVE_SAMPLE_SIZE:
        warnings.append(LOW_EFFECTIVE_SAMPLE_SIZE)
    if largest > max_weight_threshold:
        warnings.append(LARGE_WEIGHT)
    mean = float(np.mean(weights))
    spread = float(np.std(weights, ddof=1)) / math.sqrt(n) if n > 1 else 0.0
    # E[w] = 1 under full support: flag a mean more than 0.1 and 4 standard errors away (the
    # weights are skewed, so 3 standard errors false-alarm more often than the normal 0.3%).
    if abs(mean - 1.0) > max(0.1, 4.0 * spread):
        warnings.append(MEAN_WEIGHT_FAR_FROM_ONE)
    return ess, largest, warnings


# ---------------------------------------------------------------------------------------------
# intervals


def _value(terms: _Terms) -> float:
    mean_b = float(np.mean(terms.b))
    if mean_b == 0.0:
        return math.nan
    return float(np.mean(terms.c)) + float(np.mean(terms.a)) / mean_b


def linearised_terms(c: FloatArray, a: FloatArray, b: FloatArray) -> FloatArray:
    """Per-decision influence terms of V = mean(c) + mean(a) / mean(b) (delta method).

    psi_i = c_i + theta + (a_i - theta b_i) / mean(b) with theta = mean(a) / mean(b);
    mean(psi) = V, and sd(psi) / sqrt(n) is the delta-method standard error of V. For b = 1 the
    terms are c_i + a_i, the plain per-decision terms.
    """
    mean_b = float(np.mean(b))
    theta = float(np.mean(a)) / mean_b
    return np.asarray(c + theta + (a - theta * b) / mean_b, dtype=np.float64)


def cluster_robust_variance(terms: FloatArray, clusters: npt.NDArray[np.intp]) -> float:
    """Cluster-robust (sandwich) variance of the mean of per-decision terms.

    var = G / (G - 1) * sum_g (sum_{i in g} (t_i - mean(t)))^2 / n^2, with G clusters (e.g. the
    customers) and `clusters` the cluster index 0..G-1 of each term. Terms may be correlated
    within a cluster but clusters are independent. With one term per cluster it equals the
    ordinary var(t, ddof=1) / n exactly. Reference: Liang & Zeger, "Longitudinal data analysis
    using generalized linear models", Biometrika 1986; Cameron & Miller, "A practitioner's guide
    to cluster-robust inference", J. Human Resources 2015 (the G / (G - 1) correction).
    """
    n = terms.shape[0]
    groups = int(np.max(clusters)) + 1
    if groups < 2:
        return math.nan
    sums = np.bincount(clusters, weights=terms - float(np.mean(terms)), minlength=groups)
    return float(groups / (groups - 1) * float(np.sum(sums * sums)) / (n * n))


def _normal_interval(
    terms: _Terms, value: float, alpha: float, clusters: npt.NDArray[np.intp] | None = None
) -> tuple[float, float, bool]:
    psi = linearised_terms(terms.c, terms.a, terms.b)
    n = psi.shape[0]
    if clusters is None:
        sd = float(np.std(psi, ddof=1)) if n > 1 else 0.0
        standard_error = sd / math.sqrt(n)
    else:
        standard_error = math.sqrt(cluster_robust_variance(psi, clusters))
    half = float(stats.norm.ppf(1.0 - alpha / 2.0)) * standard_error
    return value - half, value + half, standard_error == 0.0


def _bootstrap_interval(
    terms: _Terms, alpha: float, n_bootstrap: int, seed: int
) -> tuple[float, float, bool]:
    rng = np.random.default_rng(seed)
    n = terms.a.shape[0]
    draws = np.empty(n_bootstrap, dtype=np.float64)
    chunk = max(1, _BOOTSTRAP_CHUNK // n)
    for start in range(0, n_bootstrap, chunk):
        size = min(chunk, n_bootstrap - start)
        index = rng.integers(0, n, size=(size, n))
        mean_c = terms.c[index].mean(axis=1)
        mean_a = terms.a[index].mean(axis=1)
        mean_b = terms.b[index].mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            draws[start : start + size] = mean_c + mean_a / mean_b
    finite = draws[np.isfinite(draws)]
    if finite.shape[0] < 2:
        return math.nan, math.nan, True
    lower, upper = np.quantile(finite, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lower), float(upper), finite.shape[0] < n_bootstrap


def empirical_bernstein_half_width(
    terms: FloatArray, term_range: tuple[float, float], delta: float
) -> float:
    """One-sided empirical-Bernstein deviation bound for the mean of bounded i.i.d. terms.

    With probability at least 1 - delta, E[X] <= mean(X) + sqrt(2 V_n log(2/delta) / n)
    + 7 R log(2/delta) / (3 (n - 1)), where V_n is the sample variance (ddof=1) and R the width
    of the known range. Reference: Maurer & Pontil, "Empirical Bernstein bounds and sample
    variance penalization", COLT 2009, Theorem 4 (stated there for [0, 1]; rescaled by R).
    """
    n = int(terms.shape[0])
    if n < 2:
        return math.inf
    width = float(term_range[1]) - float(term_range[0])
    log_term = math.log(2.0 / delta)
    variance = float(np.var(terms, ddof=1))
    return math.sqrt(2.0 * variance * log_term / n) + 7.0 * width * log_term / (3.0 * (n - 1))


def _bernstein_interval(
    terms: _Terms, value: float, alpha: float, term_range: tuple[float, float]
) -> tuple[float, float, bool]:
    plain = terms.c + terms.a
    # Each side at alpha / 2 (union bound); the mean of bounded terms lies in their range.
    half = empirical_bernstein_half_width(plain, term_range, alpha / 2.0)
    lower = max(value - half, term_range[0])
    upper = min(value + half, term_range[1])
    return lower, upper, bool(np.all(plain == plain[0]))


def _estimate(
    name: str,
    terms: _Terms,
    weights: FloatArray,
    *,
    interval: IntervalMethod,
    alpha: float,
    n_bootstrap: int,
    seed: int,
    max_weight_threshold: float,
    term_range: tuple[float, float] | None = None,
    extra_warnings: tuple[str, ...] = (),
    clusters: npt.ArrayLike | None = None,
) -> Estimate:
    codes = _cluster_codes(clusters, weights.shape[0], interval)
    ess, largest, warnings = _diagnostics(weights, max_weight_threshold)
    warnings.extend(extra_warnings)
    value = _value(terms)
    n = weights.shape[0]
    if math.isnan(value):
        lower = upper = math.nan
    elif interval == "normal":
        lower, upper, degenerate = _normal_interval(terms, value, alpha, codes)
        if degenerate:
            warnings.append(ZERO_VARIANCE)
    elif interval == "bootstrap":
        lower, upper, degenerate = _bootstrap_interval(terms, alpha, n_bootstrap, seed)
        if degenerate:
            warnings.append(BOOTSTRAP_DEGENERATE)
    elif interval == "bernstein":
        if terms.self_normalised:
            raise ValueError(f"interval='bernstein' is not available for {name}")
        assert term_range is not None
        lower, upper, degenerate = _bernstein_interval(terms, value, alpha, term_range)
        if degenerate:
            warnings.append(ZERO_VARIANCE)
    else:
        raise ValueError(f"interval must be 'normal', 'bootstrap' or 'bernstein', got {interval!r}")
    return Estimate(
        name=name,
        value=value,
        lower=lower,
        upper=upper,
        n=n,
        effective_sample_size=ess,
        max_weight=largest,
        warnings=tuple(dict.fromkeys(warnings)),
        interval_method=interval,
    )


def _weight_bound(weights: FloatArray, cap: float | None) -> tuple[float, tuple[str, ...]]:
    """Upper bound on the weights used by the estimator, for the empirical-Bernstein range."""
    if cap is not None and math.isfinite(cap):
        return cap, ()
    # Without a cap no a-priori bound is known here: the largest observed weight stands in.
    return float(np.max(weights)), (WEIGHT_BOUND_FROM_DATA,)


def _dr_range(low: float, high: float, bound: float) -> tuple[float, float]:
    # c + w (r - q) with c, q, r in [low, high] and w in [0, bound].
    width = high - low
    return low - bound * width, high + bound * width


# ---------------------------------------------------------------------------------------------
# per-decision terms


def ips_terms(
    rewards: npt.ArrayLike,
    logged_propensities: npt.ArrayLike,
    target_probabilities: npt.ArrayLike,
    *,
    clip: float | None = None,
) -> FloatArray:
    """Per-decision IPS terms min(w_i, M) r_i, whose mean is the IPS estimate."""
    _check_clip(clip)
    r, p, t, _ = _validate(rewards, logged_propensities, target_probabilities)
    w = t / p
    return np.asarray((w if clip is None else np.minimum(w, clip)) * r, dtype=np.float64)


def dr_terms(
    rewards: npt.ArrayLike,
    logged_propensities: npt.ArrayLike,
    target_probabilities: npt.ArrayLike,
    reward_model_logged: npt.ArrayLike,
    reward_model_target: npt.ArrayLike,
    *,
    clip: float | None = None,
) -> FloatArray:
    """Per-decision DR terms qhat_pi(x_i) + min(w_i, M) (r_i - qhat(x_i, a_i))."""
    _check_clip(clip)
    r, p, t, models = _validate(
        rewards,
        logged_propensities,
        target_probabilities,
        reward_model_logged=reward_model_logged,
        reward_model_target=reward_model_target,
    )
    w = t / p
    if clip is not None:
        w = np.minimum(w, clip)
    q_logged, q_target = models["reward_model_logged"], models["reward_model_target"]
    return np.asarray(q_target + w * (r - q_logged), dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# estimators


def ips(
    rewards: npt.ArrayLike,
    logged_propensities: npt.ArrayLike,
    target_probabilities: npt.ArrayLike,
    *,
    clip: float | None = None,
    interval: IntervalMethod = "normal",
    alpha: float = 0.05,
    reward_range: tuple[float, float] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    max_weight_threshold: float = DEFAULT_MAX_WEIGHT_THRESHOLD,
    clusters: npt.ArrayLike | None = None,
) -> Estimate:
    """Inverse propensity scoring (importance sampling), optionally with clipped weights.

    V_IPS = (1/n) sum_i min(w_i, M) r_i, with w_i = pi(a_i|x_i) / p_i and M = `clip` (no
    clipping when None). Unbiased without clipping when p_i > 0 wherever pi is; clipping trades
    a downward bias (for non-negative rewards) for variance.
    References: Horvitz & Thompson (1952); Bottou et al., "Counterfactual reasoning and learning
    systems", JMLR 2013 (clipping).

    Args:
        rewards: r_i.
        logged_propensities: p_i, in (0, 1].
        target_probabilities: pi(a_i|x_i), in [0, 1].
        clip: weight cap M, or None.
        interval: `normal` (CLT), `bootstrap` (percentile) or `bernstein` (empirical Bernstein,
            needs `reward_range`; the weight bound is `clip`, else the largest observed weight
            with the `weight_bound_from_data` warning).
        alpha: one minus the interval's confidence level.
        reward_range: known (low, high) bounds of the rewards, for `bernstein`.
        n_bootstrap: bootstrap resamples B.
        seed: seed of the bootstrap's numpy Generator.
        max_weight_threshold: weights above it raise the `large_weight` warning.
        clusters: cluster id per decision (e.g. the customer key) for the cluster-robust
            variance of the normal interval (`cluster_robust_variance`); None for i.i.d.
            decisions.
    """
    _check_options(alpha, clip, n_bootstrap)
    r, p, t, _ = _validate(rewards, logged_propensities, target_probabilities)
    raw = t / p
    w = raw if clip is None else np.minimum(raw, clip)
    zeros, ones = np.zeros_like(r), np.ones_like(r)
    term_range: tuple[float, float] | None = None
    extra: tuple[str, ...] = ()
    if interval == "bernstein":
        low, high = _check_reward_range(reward_range, rewards=r)
        bound, extra = _weight_bound(w, clip)
        term_range = (min(0.0, bound * low), max(0.0, bound * high))
    return _estimate(
        "IPS",
        _Terms(zeros, w * r, ones, self_normalised=False),
        raw,
        interval=interval,
        alpha=alpha,
        n_bootstrap=n_bootstrap,
        seed=seed,
        max_weight_threshold=max_weight_threshold,
        term_range=term_range,
        extra_warnings=extra,
        clusters=clusters,
    )


def snips(
    rewards: npt.ArrayLike,
    logged_propensities: npt.ArrayLike,
    target_probabilities: npt.ArrayLike,
    *,
    interval: Literal["normal", "bootstrap"] = "normal",
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed: int = 0,
    max_weight_threshold: float = DEFAULT_MAX_WEIGHT_THRESHOLD,
    clusters: npt.ArrayLike | None = None,
) -> Estimate:
    """Self-normalised inverse propensity scoring.

    V_SNIPS = sum_i w_i r_i / sum_i w_i. Biased (O(1/n)) but consistent, bounded by the reward
    range, and usually of lower variance than IPS. The normal interval uses the delta-method
    terms (w_i r_i - V w_i) / mean(w). The value is nan (with `no_overlap`) when all w_i = 0.
    Reference: Swaminathan & Joachims, "The self-normalized estimator for counterfactual
    learning", NeurIPS 2015.

    Args:
        rewards: r_i.
        logged_propensities: p_i, in (0, 1].
        target_probabilities: pi(a_i|x_i), in [0, 1].
        interval: `normal` (delta method) or `bootstrap` (percentile).
        alpha: one minus the interval's confidence level.
        n_bootstrap: bootstrap resamples B.
        seed: seed of the bootstrap's numpy Generator.
        max_weight_threshold: weights above it raise the `large_weight` warning.
        clusters: cluster id per decision (e.g. the customer key) for the cluster-robust
            variance of the normal interval (`cluster_robust_variance`); None for i.i.d.
            decisions.
    """
    _check_options(alpha, None, n_bootstrap)
    r, p, t, _ = _validate(rewards, logged_propensities, target_probabilities)
    w = t / p
    return _estimate(
        "SNIPS",
        _Terms(np.zeros_like(r), w * r, w, self_normalised=True),
        w,
        interval=interval,
        alpha=alpha,
        n_bootstrap=n_bootstrap,
        seed=seed,
        max_weight_threshold=max_weight_threshold,
        clusters=clusters,
    )


def dm(
    rewards: npt.ArrayLike,
    logged_propensities: npt.ArrayLike,
    target_probabilities: npt.ArrayLike,
    reward_model_target: npt.ArrayLike,
    *,
    interval: IntervalMethod = "normal",
    alpha: float = 0.05,
    reward_range: tuple[float, float] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    max_weight_threshold: float = DEFAULT_MAX_WEIGHT_THRESHOLD,
    clusters: npt.ArrayLike | None = None,
) -> Estimate:
    """Direct method: the reward model's value of the target policy, averaged over contexts.

    V_DM = (1/n) sum_i sum_a pi(a|x_i) qhat(x_i, a). Low variance, biased by the model's error;
    its interval reflects sampling of contexts only, not the model's error. Rewards and
    propensities are used for validation and the overlap diagnostics only.
    Reference: Dudik, Langford & Li, "Doubly robust policy evaluation and learning", ICML 2011.

    Args:
        rewards: r_i.
        logged_propensities: p_i, in (0, 1].
        target_probabilities: pi(a_i|x_i), in [0, 1].
        reward_model_target: sum_a pi(a|x_i) qhat(x_i, a).
        interval: `normal`, `bootstrap` or `bernstein` (range = `reward_range`).
        alpha: one minus the interval's confidence level.
        reward_range: known (low, high) bounds of rewards and model values, for `bernstein`.
        n_bootstrap: bootstrap resamples B.
        seed: seed of the bootstrap's numpy Generator.
        max_weight_threshold: weights above it raise the `large_weight` warning.
        clusters: cluster id per decision (e.g. the customer key) for the cluster-robust
            variance of the normal interval (`cluster_robust_variance`); None for i.i.d.
            decisions.
    """
    _check_options(alpha, None, n_bootstrap)
    r, p, t, models = _validate(
        rewards, logged_propensities, target_probabilities, reward_model_target=reward_model_target
    )
    q_target = models["reward_model_target"]
    term_range = None
    if interval == "bernstein":
        term_range = _check_reward_range(reward_range, reward_model_target=q_target)
    return _estimate(
        "DM",
        _Terms(np.zeros_like(r), q_target, np.ones_like(r), self_normalised=False),
        t / p,
        interval=interval,
        alpha=alpha,
        n_bootstrap=n_bootstrap,
        seed=seed,
        max_weight_threshold=max_weight_threshold,
        term_range=term_range,
        clusters=clusters,
    )


def _model_based(
    name: str,
    rewards: npt.ArrayLike,
    logged_propensities: npt.ArrayLike,
    target_probabilities: npt.ArrayLike,
    reward_model_logged: npt.ArrayLike,
    reward_model_target: npt.ArrayLike,
    *,
    clip: float | None,
    tau: float | None,
    self_normalised: bool,
    interval: IntervalMethod,
    alpha: float,
    reward_range: tuple[float, float] | None,
    n_bootstrap: int,
    seed: int,
    max_weight_threshold: float,
    clusters: npt.ArrayLike | None,
) -> Estimate:
    _check_options(alpha, clip, n_bootstrap)
    r, p, t, models = _validate(
        rewards,
        logged_propensities,
        target_probabilities,
        reward_model_logged=reward_model_logged,
        reward_model_target=reward_model_target,
    )
    q_logged, q_target = models["reward_model_logged"], models["reward_model_target"]
    raw = t / p
    w = raw if clip is None else np.minimum(raw, clip)
    if tau is not None:
        w = np.where(raw <= tau, w, 0.0)
    term_range: tuple[float, float] | None = None
    extra: tuple[str, ...] = ()
    if interval == "bernstein" and not self_normalised:
        low, high = _check_reward_range(
            reward_range, rewards=r, reward_model_logged=q_logged, reward_model_target=q_target
        )
        caps = [cap for cap in (clip, tau) if cap is not None]
        bound, extra = _weight_bound(w, min(caps) if caps else None)
        term_range = _dr_range(low, high, bound)
    residual = w * (r - q_logged)
    terms = _Terms(q_target, residual, w if self_normalised else np.ones_like(r), self_normalised)
    return _estimate(
        name,
        terms,
        raw,
        interval=interval,
        alpha=alpha,
        n_bootstrap=n_bootstrap,
        seed=seed,
        max_weight_threshold=max_weight_threshold,
        term_range=term_range,
        extra_warnings=extra,
        clusters=clusters,
    )


def dr(
    rewards: npt.ArrayLike,
    logged_propensities: npt.ArrayLike,
    target_probabilities: npt.ArrayLike,
    reward_model_logged: npt.ArrayLike,
    reward_model_target: npt.ArrayLike,
    *,
    clip: float | None = None,
    interval: IntervalMethod = "normal",
    alpha: float = 0.05,
    reward_range: tuple[float, float] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    max_weight_threshold: float = DEFAULT_MAX_WEIGHT_THRESHOLD,
    clusters: npt.ArrayLike | None = None,
) -> Estimate:
    """Doubly robust estimator: the direct method corrected by importance-weighted residuals.

    V_DR = (1/n) sum_i [ qhat_pi(x_i) + min(w_i, M) (r_i - qhat(x_i, a_i)) ], with
    qhat_pi(x_i) = sum_a pi(a|x_i) qhat(x_i, a). Unbiased (without clipping) if either the
    propensities or the reward model are correct; its variance shrinks with the model's error.
    Reference: Dudik, Langford & Li, "Doubly robust policy evaluation and learning", ICML 2011.

    Args:
        rewards: r_i.
        logged_propensities: p_i, in (0, 1].
        target_probabilities: pi(a_i|x_i), in [0, 1].
        reward_model_logged: qhat(x_i, a_i).
        reward_model_target: sum_a pi(a|x_i) qhat(x_i, a).
        clip: weight cap M, or None.
        interval: `normal`, `bootstrap` or `bernstein` (range from `reward_range` and the weight
            bound: `clip`, else the largest observed weight).
        alpha: one minus the interval's confidence level.
        reward_range: known (low, high) bounds of rewards and model values, for `bernstein`.
        n_bootstrap: bootstrap resamples B.
        seed: seed of the bootstrap's numpy Generator.
        max_weight_threshold: weights above it raise the `large_weight` warning.
        clusters: cluster id per decision (e.g. the customer key) for the cluster-robust
            variance of the normal interval (`cluster_robust_variance`); None for i.i.d.
            decisions.
    """
    return _model_based(
        "DR",
        rewards,
        logged_propensities,
        target_probabilities,
        reward_model_logged,
        reward_model_target,
        clip=clip,
        tau=None,
        self_normalised=False,
        interval=interval,
        alpha=alpha,
        reward_range=reward_range,
        n_bootstrap=n_bootstrap,
        seed=seed,
        max_weight_threshold=max_weight_threshold,
        clusters=clusters,
    )


def sndr(
    rewards: npt.ArrayLike,
    logged_propensities: npt.ArrayLike,
    target_probabilities: npt.ArrayLike,
    reward_model_logged: npt.ArrayLike,
    reward_model_target: npt.ArrayLike,
    *,
    interval: Literal["normal", "bootstrap"] = "normal",
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    seed: int = 0,
    max_weight_threshold: float = DEFAULT_MAX_WEIGHT_THRESHOLD,
    clusters: npt.ArrayLike | None = None,
) -> Estimate:
    """Self-normalised doubly robust estimator.

    V_SNDR = (1/n) sum_i qhat_pi(x_i) + sum_i w_i (r_i - qhat(x_i, a_i)) / sum_i w_i. The
    normal interval uses the delta-method terms qhat_pi(x_i) + (w_i (r_i - qhat(x_i, a_i))
    - theta w_i) / mean(w), theta the self-normalised residual mean.
    References: Dudik, Langford & Li (ICML 2011); Kallus & Uehara, "Intrinsically efficient,
    stable, and bounded off-policy evaluation", NeurIPS 2019; Saito et al., Open Bandit Pipeline
    (2021), `SelfNormalizedDoublyRobust`.

    Args:
        rewards: r_i.
        logged_propensities: p_i, in (0, 1].
        target_probabilities: pi(a_i|x_i), in [0, 1].
        reward_model_logged: qhat(x_i, a_i).
        reward_model_target: sum_a pi(a|x_i) qhat(x_i, a).
        interval: `normal` (delta method) or `bootstrap` (percentile).
        alpha: one minus the interval's confidence level.
        n_bootstrap: bootstrap resamples B.
        seed: seed of the bootstrap's numpy Generator.
        max_weight_threshold: weights above it raise the `large_weight` warning.
        clusters: cluster id per decision (e.g. the customer key) for the cluster-robust
            variance of the normal interval (`cluster_robust_variance`); None for i.i.d.
            decisions.
    """
    return _model_based(
        "SNDR",
        rewards,
        logged_propensities,
        target_probabilities,
        reward_model_logged,
        reward_model_target,
        clip=None,
        tau=None,
        self_normalised=True,
        interval=interval,
        alpha=alpha,
        reward_range=None,
        n_bootstrap=n_bootstrap,
        seed=seed,
        max_weight_threshold=max_weight_threshold,
        clusters=clusters,
    )


def switch_dr(
    rewards: npt.ArrayLike,
    logged_propensities: npt.ArrayLike,
    target_probabilities: npt.ArrayLike,
    reward_model_logged: npt.ArrayLike,
    reward_model_target: npt.ArrayLike,
    *,
    tau: float,
    interval: IntervalMethod = "normal",
    alpha: float = 0.05,
    reward_range: tuple[float, float] | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
    max_weight_threshold: float = DEFAULT_MAX_WEIGHT_THRESHOLD,
    clusters: npt.ArrayLike | None = None,
) -> Estimate:
    """Switch doubly robust estimator: DR where the weight is at most tau, DM elsewhere.

    V_SwitchDR = (1/n) sum_i [ qhat_pi(x_i) + w_i (r_i - qhat(x_i, a_i)) 1{w_i <= tau} ].
    tau = inf gives DR, tau = 0 gives DM (for positive weights). This is the logged-action form
    of Wang, Agarwal & Dudik, "Optimal and adaptive off-policy evaluation in contextual
    bandits", ICML 2017 (as in Open Bandit Pipeline's `SwitchDoublyRobust`): the paper switches
    per action over all actions; with only the logged action's weight, the importance term is
    dropped where w_i > tau and the model carries those decisions.

    Args:
        rewards: r_i.
        logged_propensities: p_i, in (0, 1].
        target_probabilities: pi(a_i|x_i), in [0, 1].
        reward_model_logged: qhat(x_i, a_i).
        reward_model_target: sum_a pi(a|x_i) qhat(x_i, a).
        tau: switching threshold on the weight, >= 0.
        interval: `normal`, `bootstrap` or `bernstein` (weight bound tau).
        alpha: one minus the interval's confidence level.
        reward_range: known (low, high) bounds of rewards and model values, for `bernstein`.
        n_bootstrap: bootstrap resamples B.
        seed: seed of the bootstrap's numpy Generator.
        max_weight_threshold: weights above it raise the `large_weight` warning.
        clusters: cluster id per decision (e.g. the customer key) for the cluster-robust
            variance of the normal interval (`cluster_robust_variance`); None for i.i.d.
            decisions.
    """
    if not (tau >= 0.0):
        raise ValueError(f"tau must be non-negative, got {tau}")
    return _model_based(
        "SwitchDR",
        rewards,
        logged_propensities,
        target_probabilities,
        reward_model_logged,
        reward_model_target,
        clip=None,
        tau=tau,
        self_normalised=False,
        interval=interval,
        alpha=alpha,
        reward_range=reward_range,
        n_bootstrap=n_bootstrap,
        seed=seed,
        max_weight_threshold=max_weight_threshold,
        clusters=clusters,
    )


# ---------------------------------------------------------------------------------------------
# empirical likelihood and the Cressie-Read family


def _dual_slope(a: FloatArray, beta: float) -> float:
    """d/dbeta of sum_i log(1 + beta a_i), decreasing in beta (infinite at a domain edge)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = float(np.sum(a / (1.0 + beta * a)))
    return slope if not math.isnan(slope) else -math.inf


def _pseudo_log(z: FloatArray, floor: float) -> tuple[FloatArray, FloatArray]:
    """log z for z >= floor, its second-order Taylor expansion at `floor` below (and gradient).

    The expansion keeps the dual objective finite and concave everywhere, so a generic optimiser
    may step outside the log's domain; it does not move the maximiser, where every z_i >= 1/n
    because each probability 1 / (n z_i) is at most 1. Reference: Owen, "Self-concordance for
    empirical likelihood", Canadian J. Statistics 2013.
    """
    safe = np.maximum(z, floor)
    low = z < floor
    x = (z - floor) / floor
    value = np.where(low, math.log(floor) + x - 0.5 * x * x, np.log(safe))
    slope = np.where(low, (1.0 - x) / floor, 1.0 / safe)
    return np.asarray(value, dtype=np.float64), np.asarray(slope, dtype=np.float64)


@dataclass(frozen=True)
class _LikelihoodProblem:
    """The sample and the known support of (w, w r) of the empirical-likelihood problems."""

    a: FloatArray  # w_i - 1
    y: FloatArray  # w_i r_i
    bound: float  # known upper bound on the weights
    reward_low: float
    reward_high: float

    def vertices(self, v: float) -> tuple[FloatArray, FloatArray]:
        """(w - 1, w r - v) at the corners of the support of (w, w r): the points (0, 0),
        (bound, bound r_min) and (bound, bound r_max), where no decision need be observed."""
        a = np.array([-1.0, self.bound - 1.0, self.bound - 1.0])
        y = np.array([0.0, self.bound * self.reward_low, self.bound * self.reward_high]) - v
        return a, y

    def best(self) -> tuple[float, float]:
        """beta maximising sum_i log(1 + beta (w_i - 1)) on its feasible range, and the max.

        The range keeps 1 + beta (w - 1) >= 0 on all of [0, bound]: beta in
        [-1 / (bound - 1), 1]. At an end of the range the leftover probability sits on w = 0
        (beta = 1) or w = bound (beta = -1 / (bound - 1)).
        """
        a = self.a
        high = 1.0
        low = -1.0 / (self.bound - 1.0)
        if not np.any(a != 0.0):
            beta = 0.0
        elif _dual_slope(a, high) >= 0.0:
            beta = high
        elif _dual_slope(a, low) <= 0.0:
            beta = low
        else:
            # arctan keeps the slope finite at the ends, where it may be infinite
            beta = float(
                optimize.brentq(
                    lambda b: math.atan(_dual_slope(a, b)), low, high, xtol=1e-14, rtol=1e-14
                )
            )
        with np.errstate(divide="ignore"):
            total = float(np.sum(np.log1p(beta * a)))
        return beta, total

    def profile(self, v: float, start: tuple[float, float]) -> tuple[float, tuple[float, float]]:
        """max over (beta, gamma) of sum_i log(1 + beta (w_i - 1) + gamma (w_i r_i - v)).

        The maximum is over the multipliers that keep 1 + beta (w - 1) + gamma (w r - v) >= 0 on
        the whole support (linear, so checked at its corners); minus it is the log empirical
        likelihood ratio of the value v (relative to the uniform n^-n). Solved by SLSQP on the
        pseudo-log objective; large when v is barely reachable. Returns the maximum and the
        maximising (beta, gamma).
        """
        n = self.a.shape[0]
        corner_a, corner_y = self.vertices(v)
        g = self.y - v

        def objective(x: FloatArray) -> tuple[float, FloatArray]:
            z = 1.0 + x[0] * self.a + x[1] * g
            value, slope = _pseudo_log(z, 1.0 / n)
            gradient = np.array([np.dot(slope, self.a), np.dot(slope, g)])
            return -float(np.sum(value)), -gradient

        constraint = {
            "type": "ineq",
            "fun": lambda x: 1.0 + x[0] * corner_a + x[1] * corner_y,
            "jac": lambda x: np.column_stack((corner_a, corner_y)),
        }
        result = optimize.minimize(
            objective,
            np.asarray(start, dtype=np.float64),
            jac=True,
            method="SLSQP",
            constraints=[constraint],
            bounds=[(-_MULTIPLIER_CAP, _MULTIPLIER_CAP)] * 2,
            options={"ftol": 1e-13, "maxiter": 500},
        )
        return -float(result.fun), (float(result.x[0]), float(result.x[1]))


def _el_inputs(
    rewards: npt.ArrayLike,
    logged_propensities: npt.ArrayLike,
    target_probabilities: npt.ArrayLike,
    reward_range: tuple[float, float],
    weight_bound: float | None,
    alpha: float,
) -> tuple[FloatArray, FloatArray, tuple[float, float], float, tuple[str, ...]]:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    r, p, t, _ = _validate(rewards, logged_propensities, target_probabilities)
    low, high = _check_reward_range(reward_range, rewards=r)
    w = t / p
    largest = float(np.max(w))
    if weight_bound is None:
        return r, w, (low, high), largest, (WEIGHT_BOUND_FROM_DATA,)
    if not (math.isfinite(weight_bound) and weight_bound >= largest):
        raise ValueError(
            f"weight_bound must be finite and at least the largest weight {largest}, "
            f"got {weight_bound}"
        )
    return r, w, (low, high), float(weight_bound), ()


def _el_estimate(
    name: str,
    value: float,
    interval: tuple[float, float],
    weights: FloatArray,
    max_weight_threshold: float,
    extra: tuple[str, ...],
    method: LikelihoodMethod,
) -> Estimate:
    ess, largest, warnings = _diagnostics(weights, max_weight_threshold)
    warnings.extend(extra)
    return Estimate(
        name=name,
        value=value,
        lower=interval[0],
        upper=interval[1],
        n=int(weights.shape[0]),
        effective_sample_size=ess,
        max_weight=largest,
        warnings=tuple(dict.fromkeys(warnings)),
        interval_method=method,
    )


def empirical_likelihood(
    rewards: npt.ArrayLike,
    logged_propensities: npt.ArrayLike,
    target_probabilities: npt.ArrayLike,
    *,
    reward_range: tuple[float, float],
    weight_bound: float | None = None,
    alpha: float = 0.05,
    max_weight_threshold: float = DEFAULT_MAX_WEIGHT_THRESHOLD,
) -> Estimate:
    """Empirical-likelihood (EL) estimate and profile-likelihood interval of the value.

    The data are treated as draws from an unknown distribution Q of (w, r) on
    [0, W] x [r_min, r_max] (W = `weight_bound` > 1); the only assumption is E_Q[w] = 1, which holds
    when the logging policy covers the target. The estimate is V = E_Q[w r] under the
    nonparametric maximum-likelihood Q. Its dual is one-dimensional: with a_i = w_i - 1,

        beta* = argmax_{beta in [-1/(W-1), 1]} sum_i log(1 + beta a_i),
        q_i = 1 / (n (1 + beta* a_i)),

    and Q puts q_i on each decision and the rest, 1 - sum q_i, on w = 0 (beta* = 1) or w = W
    (beta* = -1/(W-1)). The reward at w = W is not identified; it is taken as the Q-weighted
    mean reward, so V = sum q_i w_i r_i / sum q_i w_i (a self-normalised estimate with
    likelihood weights; sum q_i w_i = 1 unless mass sits at W).

    The interval is {v : 2 (l* - l(v)) <= chi2_1(1 - alpha)}, with l(v) the log EL of the
    distributions that also satisfy E_Q[w r] = v (profile likelihood calibrated by the
    empirical-likelihood Wilks theorem, Owen 2001, chapters 2-3, without Bartlett correction)
    and l* its maximum over v. l(v) comes from
    a two-dimensional concave dual over (beta, gamma),
    max sum_i log(1 + beta (w_i - 1) + gamma (w_i r_i - v)), solved numerically. Because Q may
    put mass on the unobserved corners (0, *), (W, r_min), (W, r_max), the interval always lies
    in [r_min, r_max], also with heavy-tailed weights and without clipping.

    References: Karampatziakis, Langford & Mineiro, "Empirical likelihood for contextual
    bandits", NeurIPS 2020; Owen, *Empirical Likelihood* (2001).

    Args:
        rewards: r_i, within `reward_range`.
        logged_propensities: p_i, in (0, 1].
        target_probabilities: pi(a_i|x_i), in [0, 1].
        reward_range: known (r_min, r_max) bounds of the rewards.
        weight_bound: known upper bound W on the weights (e.g. 1 / the smallest propensity the
            logging policy can give); None uses the largest observed weight (with the
            `weight_bound_from_data` warning).
        alpha: one minus the interval's confidence level.
        max_weight_threshold: weights above it raise the `large_weight` warning.
    """
    r, w, (low, high), bound, extra = _el_inputs(
        rewards, logged_propensities, target_probabilities, reward_range, weight_bound, alpha
    )
    n = w.shape[0]
    if bound <= 1.0 and np.any(w != 1.0):
        # every weight is below 1, so no distribution on [0, W] has mean weight 1
        nan = (math.nan, math.nan)
        return _el_estimate(
            "EL",
            math.nan,
            nan,
            w,
            max_weight_threshold,
            (*extra, EMPIRICAL_LIKELIHOOD_INFEASIBLE),
            "empirical_likelihood",
        )
    # W = 1 means every weight is 1; any W > 1 admits the same distributions for the value.
    problem = _LikelihoodProblem(w - 1.0, w * r, bound if bound > 1.0 else 2.0, low, high)
    beta, best = problem.best()
    q = 1.0 / (n * (1.0 + beta * problem.a))
    mass = float(np.sum(q * w))
    if mass == 0.0:
        # no decision the target would take: the value is not identified, and every reward in
        # the range is as likely as any other (the `no_overlap` warning says why)
        return _el_estimate(
            "EL", math.nan, (low, high), w, max_weight_threshold, extra, "empirical_likelihood"
        )
    value = min(max(float(np.sum(q * w * r)) / mass, low), high)
    critical = float(stats.chi2.ppf(1.0 - alpha, df=1))

    def excess(v: float) -> float:
        # each dual starts from the point estimate's (beta*, 0), so the result is path-free
        return 2.0 * (problem.profile(v, (beta, 0.0))[0] - best) - critical

    lower = low if excess(low) <= 0.0 else _root(excess, low, value)
    upper = high if excess(high) <= 0.0 else _root(excess, value, high)
    return _el_estimate(
        "EL",
        value,
        (lower, upper),
        w,
        max_weight_threshold,
        extra,
        "empirical_likelihood",
    )


def _root(function: Callable[[float], float], low: float, high: float) -> float:
    """Root of a function that changes sign once on [low, high] (the end nearer the sign
    change when rounding makes both ends agree)."""
    f_low, f_high = function(low), function(high)
    if f_low * f_high > 0.0:
        return low if abs(f_low) < abs(f_high) else high
    return float(optimize.brentq(function, low, high, xtol=1e-9 * (high - low)))


def cressie_read(
    rewards: npt.ArrayLike,
    logged_propensities: npt.ArrayLike,
    target_probabilities: npt.ArrayLike,
    *,
    power: float,
    reward_range: tuple[float, float],
    weight_bound: float | None = None,
    alpha: float = 0.05,
    max_weight_threshold: float = DEFAULT_MAX_WEIGHT_THRESHOLD,
) -> Estimate:
    """Cressie-Read (power-divergence) likelihood estimate and interval of the value.

    The estimate minimises the Cressie-Read divergence
    CR_lambda(q) = 2 / (lambda (lambda + 1)) sum_i ((n q_i)^(-lambda) - 1) of probabilities q_i
    on the decisions from the uniform 1/n, subject to sum q_i = 1 and sum q_i w_i = 1; the
    interval is {v : CR*(v) - CR* <= chi2_1(1 - alpha)} (Baggerly 1998: every member is
    chi-square calibrated). Implemented members (`power` = lambda):

    - lambda = 0, empirical likelihood: `empirical_likelihood` (name `EL`).
    - lambda = -2, Euclidean likelihood (name `EuL`), in closed form: with y_i = w_i r_i,
      S the covariance (divisor n) of (w, y) and b = S_wy / S_ww,
      V = mean(y) - b (mean(w) - 1) (the regression, or control-variate, estimator with the
      known E[w] = 1), and the interval V +/- z_{1-alpha/2} sqrt((S_yy - b S_wy) / n),
      intersected with [r_min, r_max]. Its q_i = (1 - (w_i - mean(w)) (mean(w) - 1) / S_ww) / n
      may be negative (no support constraint), so unlike EL the value may leave the reward
      range.

    Other powers raise ValueError. References: Cressie & Read, "Multinomial goodness-of-fit
    tests", JRSS-B 1984; Baggerly, "Empirical likelihood as a goodness-of-fit measure",
    Biometrika 1998; Owen, *Empirical Likelihood* (2001), 3.15 (Euclidean likelihood);
    Karampatziakis, Langford & Mineiro (NeurIPS 2020) for lambda = 0.

    Args:
        rewards: r_i, within `reward_range`.
        logged_propensities: p_i, in (0, 1].
        target_probabilities: pi(a_i|x_i), in [0, 1].
        power: the Cressie-Read lambda, 0 or -2.
        reward_range: known (r_min, r_max) bounds of the rewards.
        weight_bound: known upper bound on the weights (lambda = 0 only, see
            `empirical_likelihood`).
        alpha: one minus the interval's confidence level.
        max_weight_threshold: weights above it raise the `large_weight` warning.
    """
    if power == 0.0:
        return empirical_likelihood(
            rewards,
            logged_propensities,
            target_probabilities,
            reward_range=reward_range,
            weight_bound=weight_bound,
            alpha=alpha,
            max_weight_threshold=max_weight_threshold,
        )
    if power != -2.0:
        raise ValueError(f"power must be 0 (empirical) or -2 (Euclidean likelihood), got {power}")
    r, w, (low, high), _, _ = _el_inputs(
        rewards, logged_propensities, target_probabilities, reward_range, weight_bound, alpha
    )
    n = w.shape[0]
    y = w * r
    w_centred = w - float(np.mean(w))
    y_centred = y - float(np.mean(y))
    s_ww = float(np.mean(w_centred * w_centred))
    s_wy = float(np.mean(w_centred * y_centred))
    s_yy = float(np.mean(y_centred * y_centred))
    if s_ww == 0.0 and float(np.mean(w)) != 1.0:
        # equal weights other than 1: no q with sum q_i = 1 has mean weight 1
        return _el_estimate(
            "EuL",
            math.nan,
            (math.nan, math.nan),
            w,
            max_weight_threshold,
            (EMPIRICAL_LIKELIHOOD_INFEASIBLE,),
            "euclidean_likelihood",
        )
    warnings: tuple[str, ...] = ()
    # With all weights 1 the constraint E[w] = 1 carries no information (slope undefined).
    slope = s_wy / s_ww if s_ww > 0.0 else 0.0
    value = float(np.mean(y)) - slope * (float(np.mean(w)) - 1.0)
    residual = max(s_yy - slope * s_wy, 0.0)
    if residual == 0.0:
        warnings = (ZERO_VARIANCE,)
    half = float(stats.norm.ppf(1.0 - alpha / 2.0)) * math.sqrt(residual / n)
    interval = (min(max(value - half, low), high), max(min(value + half, high), low))
    return _el_estimate(
        "EuL", value, interval, w, max_weight_threshold, warnings, "euclidean_likelihood"
    )


# ---------------------------------------------------------------------------------------------
# anytime-valid confidence sequence


@dataclass(frozen=True)
class ConfidenceSequence:
    """Running bounds of a time-uniform confidence sequence.

    Attributes:
        lower: lower[t] bounds the mean after the first t + 1 terms.
        upper: upper[t], likewise.
    """

    lower: FloatArray
    upper: FloatArray


def confidence_sequence(
    terms: npt.ArrayLike,
    alpha: float = 0.05,
    *,
    term_range: tuple[float, float],
    truncation: float = 0.5,
) -> ConfidenceSequence:
    """Anytime-valid confidence sequence for the mean of i.i.d. bounded terms (PrPl-EB).

    With probability at least 1 - alpha, simultaneously for every t, the common mean m of the
    terms lies in [lower[t], upper[t]]; so the sequence may be monitored continuously and
    stopped at any (data-dependent) time. Use it with `ips_terms` or `dr_terms`; `term_range`
    must bound the terms (e.g. [0, M] for clipped IPS with rewards in [0, 1]).

    The terms are rescaled to X_i in [0, 1]. With the predictable quantities
    mu_t = (1/2 + sum_{i<=t} X_i) / (t + 1), sigma2_t = (1/4 + sum_{i<=t} (X_i - mu_i)^2) / (t + 1),
    lambda_t = min(sqrt(2 log(2/alpha) / (sigma2_{t-1} t log(1 + t))), truncation),
    v_t = 4 (X_t - mu_{t-1})^2 and psi_E(l) = (-log(1 - l) - l) / 4, the interval at t is

        sum lambda_i X_i / sum lambda_i
            +/- (log(2/alpha) + sum v_i psi_E(lambda_i)) / sum lambda_i

    (sums over i <= t), then intersected with all earlier intervals and with [0, 1] (still
    valid, being time-uniform), and mapped back to `term_range`.
    Reference: Waudby-Smith & Ramdas, "Estimating means of bounded random variables by
    betting", JRSS-B 2024, Theorem 2 (predictable plug-in empirical Bernstein CS).

    Args:
        terms: per-decision terms in arrival order.
        alpha: one minus the (time-uniform) confidence level.
        term_range: known (low, high) bounds of the terms.
        truncation: cap c on lambda_t, in (0, 1) (1/2 or 3/4 in the reference).
    """
    x_raw = _as_vector("terms", terms)
    if x_raw.shape[0] == 0:
        raise ValueError("terms must not be empty")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if not 0.0 < truncation < 1.0:
        raise ValueError(f"truncation must be in (0, 1), got {truncation}")
    low, high = float(term_range[0]), float(term_range[1])
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"term_range must be finite with low < high, got {term_range}")
    if np.any((x_raw < low) | (x_raw > high)):
        raise ValueError(f"terms must lie in term_range {term_range}")
    width = high - low
    x = (x_raw - low) / width
    n = x.shape[0]
    t = np.arange(1, n + 1, dtype=np.float64)
    mu = (0.5 + np.cumsum(x)) / (t + 1.0)
    sigma2 = (0.25 + np.cumsum((x - mu) ** 2)) / (t + 1.0)
    # predictable: the values after t - 1 terms (the priors 1/2 and 1/4 at t = 1)
    mu_prev = np.concatenate(([0.5], mu[:-1]))
    sigma2_prev = np.concatenate(([0.25], sigma2[:-1]))
    log_term = math.log(2.0 / alpha)
    lam = np.minimum(np.sqrt(2.0 * log_term / (sigma2_prev * t * np.log1p(t))), truncation)
    v = 4.0 * (x - mu_prev) ** 2
    psi = (-np.log1p(-lam) - lam) / 4.0
    sum_lam = np.cumsum(lam)
    centre = np.cumsum(lam * x) / sum_lam
    margin = (log_term + np.cumsum(v * psi)) / sum_lam
    lower = np.maximum.accumulate(np.clip(centre - margin, 0.0, 1.0))
    upper = np.minimum.accumulate(np.clip(centre + margin, 0.0, 1.0))
    return ConfidenceSequence(
        lower=np.asarray(low + width * lower, dtype=np.float64),
        upper=np.asarray(low + width * upper, dtype=np.float64),
    )
