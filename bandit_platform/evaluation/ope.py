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
deviation with ddof=1, normal quantile), `bootstrap` (percentile, B seeded resamples, vectorised)
and `bernstein` (empirical Bernstein with a known range; not for the self-normalised
estimators). `confidence_sequence` gives an anytime-valid sequence for the mean of `ips_terms`
or `dr_terms`, for monitoring as the decisions arrive.

Diagnostics are computed on the raw (unclipped) importance weights, because they describe the
overlap of the two policies rather than the estimator: effective sample size
(sum w)^2 / sum w^2 (Kong 1992; Owen 2013, section 9.3), the largest weight, and the mean weight
(1 in expectation when the logging policy covers the target policy). Numerical trouble is
returned as coded warnings in the result; invalid arguments raise `ValueError` naming the
argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats  # type: ignore[import-untyped]

FloatArray = npt.NDArray[np.float64]
IntervalMethod = Literal["normal", "bootstrap", "bernstein"]

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

#: Below this effective sample size the low-ESS warning is raised whatever n is.
MIN_EFFECTIVE_SAMPLE_SIZE: Final = 100.0
#: Default threshold on a single importance weight for the large-weight warning.
DEFAULT_MAX_WEIGHT_THRESHOLD: Final = 100.0
#: Bootstrap indices drawn per chunk (bounds memory at about 8 bytes times this).
_BOOTSTRAP_CHUNK: Final = 4_000_000


@dataclass(frozen=True)
class Estimate:
    """An off-policy estimate of a target policy's value, its interval and diagnostics.

    Attributes:
        name: estimator acronym (`IPS`, `SNIPS`, `DM`, `DR`, `SNDR`, `SwitchDR`).
        value: the point estimate (nan when undefined, e.g. SNIPS without overlap).
        lower: lower end of the two-sided 1 - alpha interval.
        upper: upper end of the interval.
        n: number of logged decisions.
        effective_sample_size: (sum w)^2 / sum w^2 of the raw importance weights.
        max_weight: largest raw importance weight.
        warnings: coded warnings (see the module's `Final` constants).
        interval_method: `normal`, `bootstrap` or `bernstein`.
    """

    name: str
    value: float
    lower: float
    upper: float
    n: int
    effective_sample_size: float
    max_weight: float
    warnings: tuple[str, ...]
    interval_method: IntervalMethod


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


def _normal_interval(terms: _Terms, value: float, alpha: float) -> tuple[float, float, bool]:
    psi = linearised_terms(terms.c, terms.a, terms.b)
    n = psi.shape[0]
    sd = float(np.std(psi, ddof=1)) if n > 1 else 0.0
    half = float(stats.norm.ppf(1.0 - alpha / 2.0)) * sd / math.sqrt(n)
    return value - half, value + half, sd == 0.0


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
) -> Estimate:
    ess, largest, warnings = _diagnostics(weights, max_weight_threshold)
    warnings.extend(extra_warnings)
    value = _value(terms)
    n = weights.shape[0]
    if math.isnan(value):
        lower = upper = math.nan
    elif interval == "normal":
        lower, upper, degenerate = _normal_interval(terms, value, alpha)
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
