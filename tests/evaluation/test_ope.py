"""Off-policy estimators: exact small cases, scipy agreement, and seeded ground-truth statistics.

Tolerances, fixed before looking at results:

- Hand-computed cases agree to `rel=1e-12` (pure floating-point rounding).
- The synthetic world (below) has an exactly known target value V. Over R = 1,000 seeded
  replications of n = 2,000 decisions, the 95% normal intervals of IPS, SNIPS and DR must cover
  V in [0.93, 0.97] of replications. The Monte-Carlo standard error of a coverage near 0.95 is
  sqrt(0.95 * 0.05 / 1000) = 0.7 points, so the band is about +/- 3 standard errors (the brief's
  300 replications would give 1.3 points and a band of only +/- 1.6 SE; 1,000 replications
  still run in a few seconds because generation is vectorised).
- Bias of IPS and DR (good and bad reward models): |mean(V_hat - V)| <= 4 Monte-Carlo
  standard errors, sd(V_hat) / sqrt(R).
- DR with a good model (true means plus N(0, 0.02^2) noise) has a lower RMSE than IPS.
- Empirical-Bernstein intervals and the confidence sequence are conservative by construction:
  their (time-uniform, for the sequence) coverage must be at least 0.95.
- The overlap warnings fire on at most 1% of replications of the healthy synthetic world.
- Bootstrap (slow test, R = 200, B = 500): coverage in [0.90, 0.99] (MC SE 1.5 points; the
  percentile bootstrap's own error at n = 2,000 is small next to that).
- Empirical likelihood against a brute-force SLSQP solution of the primal (n = 12): value and
  interval ends agree to `abs=1e-6` (the primal solver's accuracy); Euclidean likelihood
  against the KKT solution of its quadratic program to `rel=1e-8`.
- Likelihood coverage (slow test, R = 300, n = 200, MC SE 1.3 points): Euclidean likelihood in
  [0.91, 0.99]; EL in [0.93, 0.995] (mildly conservative by its unobserved support).
- Cluster-robust intervals: one decision per cluster reproduces the ordinary interval to
  `rel=1e-12`; with 20 decisions per customer and intra-customer correlation 0.125 (design
  effect ~3.4) the clustered interval is over 1.4 times wider; over R = 500 replications of
  100 customers the ordinary interval covers at most 0.85 and the clustered one in
  [0.92, 0.98].
"""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError, dataclass
from typing import Any

import numpy as np
import pytest
from scipy import optimize, stats

from bandit_platform.evaluation import ope
from bandit_platform.evaluation.ope import Estimate

Z95 = float(stats.norm.ppf(0.975))

# -------------------------------------------------------------------------------------------
# exact small cases


R = np.array([1.0, 0.0, 1.0, 0.5])
P = np.array([0.5, 0.25, 0.2, 1.0])
T = np.array([1.0, 0.5, 0.0, 0.5])
W = T / P  # [2, 2, 0, 0.5]
Q_LOGGED = np.array([0.8, 0.1, 0.6, 0.5])
Q_TARGET = np.array([0.7, 0.2, 0.4, 0.5])


def test_ips_is_the_mean_of_weighted_rewards() -> None:
    estimate = ope.ips(R, P, T)
    assert estimate.name == "IPS"
    assert estimate.value == pytest.approx((2 * 1 + 2 * 0 + 0 * 1 + 0.5 * 0.5) / 4, rel=1e-12)
    assert estimate.n == 4
    assert estimate.max_weight == 2.0
    assert estimate.effective_sample_size == pytest.approx(4.5**2 / 8.25, rel=1e-12)


def test_clipped_ips_caps_the_weights() -> None:
    estimate = ope.ips(R, P, T, clip=1.0)
    assert estimate.value == pytest.approx((1 * 1 + 1 * 0 + 0 + 0.5 * 0.5) / 4, rel=1e-12)
    # diagnostics describe the raw weights, not the clipped ones
    assert estimate.max_weight == 2.0


def test_snips_is_the_weighted_mean_of_rewards() -> None:
    estimate = ope.snips(R, P, T)
    assert estimate.value == pytest.approx((2 * 1 + 0.5 * 0.5) / 4.5, rel=1e-12)


def test_dm_is_the_mean_of_the_model_value() -> None:
    assert ope.dm(R, P, T, Q_TARGET).value == pytest.approx(np.mean(Q_TARGET), rel=1e-12)


def test_dr_by_hand() -> None:
    expected = np.mean(Q_TARGET + W * (R - Q_LOGGED))
    assert ope.dr(R, P, T, Q_LOGGED, Q_TARGET).value == pytest.approx(expected, rel=1e-12)
    clipped = np.mean(Q_TARGET + np.minimum(W, 1.0) * (R - Q_LOGGED))
    assert ope.dr(R, P, T, Q_LOGGED, Q_TARGET, clip=1.0).value == pytest.approx(clipped, rel=1e-12)


def test_dr_with_a_zero_model_is_ips() -> None:
    zero = np.zeros_like(R)
    assert ope.dr(R, P, T, zero, zero).value == pytest.approx(ope.ips(R, P, T).value, rel=1e-12)


def test_sndr_by_hand() -> None:
    expected = np.mean(Q_TARGET) + np.sum(W * (R - Q_LOGGED)) / np.sum(W)
    assert ope.sndr(R, P, T, Q_LOGGED, Q_TARGET).value == pytest.approx(expected, rel=1e-12)


def test_switch_dr_between_dm_and_dr() -> None:
    dr_value = ope.dr(R, P, T, Q_LOGGED, Q_TARGET).value
    assert ope.switch_dr(R, P, T, Q_LOGGED, Q_TARGET, tau=math.inf).value == pytest.approx(
        dr_value, rel=1e-12
    )
    # tau = 1: the two decisions with w = 2 fall back to the model, w = 0.5 keeps its residual
    expected = np.mean(Q_TARGET + np.where(W <= 1.0, W, 0.0) * (R - Q_LOGGED))
    assert ope.switch_dr(R, P, T, Q_LOGGED, Q_TARGET, tau=1.0).value == pytest.approx(
        expected, rel=1e-12
    )
    positive = np.array([0.5, 0.5, 0.5, 0.5])
    assert ope.switch_dr(R, P, positive, Q_LOGGED, Q_TARGET, tau=0.0).value == pytest.approx(
        np.mean(Q_TARGET), rel=1e-12
    )


def test_dr_with_a_perfect_model_is_exact_on_a_toy_problem() -> None:
    # Two contexts, two arms, deterministic rewards: the model is the truth.
    means = np.array([[0.2, 0.9], [0.6, 0.1]])
    target = np.array([[0.25, 0.75], [1.0, 0.0]])
    logging = np.array([[0.5, 0.5], [0.3, 0.7]])
    true_value = float(np.mean(np.sum(target * means, axis=1)))
    contexts = np.array([0, 0, 1, 1, 1, 0])
    actions = np.array([1, 0, 0, 1, 1, 1])
    rewards = means[contexts, actions]
    estimate = ope.dr(
        rewards,
        logging[contexts, actions],
        target[contexts, actions],
        means[contexts, actions],
        np.sum(target * means, axis=1)[contexts],
    )
    # each context appears equally often, so the context average is the true value exactly
    assert estimate.value == pytest.approx(true_value, rel=1e-12)
    assert estimate.lower < true_value < estimate.upper


def test_estimate_is_frozen() -> None:
    estimate = ope.ips(R, P, T)
    with pytest.raises(FrozenInstanceError):
        estimate.value = 0.0  # type: ignore[misc]


# -------------------------------------------------------------------------------------------
# intervals against scipy


def _sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.1, 1.0, n)
    t = rng.uniform(0.0, 1.0, n)
    r = rng.binomial(1, 0.3, n).astype(float)
    return r, p, t


def test_normal_interval_matches_scipy_norm_and_sem() -> None:
    r, p, t = _sample(500, 1)
    terms = t / p * r
    estimate = ope.ips(r, p, t, alpha=0.1)
    half = float(stats.norm.ppf(0.95)) * float(stats.sem(terms))
    assert estimate.lower == pytest.approx(np.mean(terms) - half, rel=1e-12)
    assert estimate.upper == pytest.approx(np.mean(terms) + half, rel=1e-12)
    assert estimate.interval_method == "normal"


def test_normal_interval_is_the_t_interval_with_z_for_t() -> None:
    r, p, t = _sample(500, 2)
    terms = t / p * r
    estimate = ope.ips(r, p, t)
    t_interval = stats.ttest_1samp(terms, 0.0).confidence_interval(confidence_level=0.95)
    ratio = Z95 / float(stats.t.ppf(0.975, df=len(terms) - 1))
    assert (estimate.upper - estimate.lower) == pytest.approx(
        (t_interval.high - t_interval.low) * ratio, rel=1e-12
    )
    assert (estimate.upper + estimate.lower) / 2 == pytest.approx(
        (t_interval.high + t_interval.low) / 2, rel=1e-12
    )


def test_dr_normal_interval_matches_scipy() -> None:
    r, p, t = _sample(400, 3)
    q_logged = np.full_like(r, 0.3)
    q_target = np.full_like(r, 0.25)
    terms = q_target + t / p * (r - q_logged)
    estimate = ope.dr(r, p, t, q_logged, q_target)
    half = Z95 * float(stats.sem(terms))
    assert (estimate.lower, estimate.upper) == pytest.approx(
        (np.mean(terms) - half, np.mean(terms) + half), rel=1e-12
    )


def test_snips_normal_interval_uses_the_delta_method() -> None:
    r, p, t = _sample(600, 4)
    w = t / p
    value = np.sum(w * r) / np.sum(w)
    psi = value + (w * r - value * w) / np.mean(w)
    half = Z95 * float(stats.sem(psi))
    estimate = ope.snips(r, p, t)
    assert (estimate.lower, estimate.upper) == pytest.approx(
        (value - half, value + half), rel=1e-12
    )


def test_sndr_normal_interval_uses_the_delta_method() -> None:
    r, p, t = _sample(600, 5)
    w = t / p
    q_logged = np.full_like(r, 0.2)
    q_target = np.linspace(0.1, 0.4, len(r))
    theta = np.sum(w * (r - q_logged)) / np.sum(w)
    psi = q_target + theta + (w * (r - q_logged) - theta * w) / np.mean(w)
    estimate = ope.sndr(r, p, t, q_logged, q_target)
    half = Z95 * float(stats.sem(psi))
    assert estimate.value == pytest.approx(np.mean(psi), rel=1e-12)
    assert (estimate.lower, estimate.upper) == pytest.approx(
        (estimate.value - half, estimate.value + half), rel=1e-12
    )


def test_bootstrap_is_seeded_and_close_to_normal() -> None:
    r, p, t = _sample(2000, 6)
    first = ope.snips(r, p, t, interval="bootstrap", n_bootstrap=400, seed=7)
    again = ope.snips(r, p, t, interval="bootstrap", n_bootstrap=400, seed=7)
    other = ope.snips(r, p, t, interval="bootstrap", n_bootstrap=400, seed=8)
    normal = ope.snips(r, p, t)
    assert first == again
    assert first != other
    assert first.interval_method == "bootstrap"
    assert first.lower < first.value < first.upper
    # at n = 2,000 the percentile and delta-method intervals agree to ~10% of their width
    width = normal.upper - normal.lower
    assert abs(first.lower - normal.lower) < 0.1 * width
    assert abs(first.upper - normal.upper) < 0.1 * width


def test_bootstrap_chunks_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    r, p, t = _sample(300, 9)
    whole = ope.ips(r, p, t, interval="bootstrap", n_bootstrap=50, seed=3)
    monkeypatch.setattr(ope, "_BOOTSTRAP_CHUNK", 300 * 7)
    chunked = ope.ips(r, p, t, interval="bootstrap", n_bootstrap=50, seed=3)
    assert (chunked.lower, chunked.upper) == pytest.approx((whole.lower, whole.upper), rel=1e-12)


def test_bootstrap_drops_resamples_without_overlap() -> None:
    # one positive weight in 5 decisions: about a third of resamples miss it (0.8^5)
    t = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
    estimate = ope.snips(np.ones(5), np.full(5, 0.5), t, interval="bootstrap", n_bootstrap=200)
    assert estimate.value == 1.0
    assert estimate.lower == estimate.upper == 1.0
    assert ope.BOOTSTRAP_DEGENERATE in estimate.warnings


def test_per_decision_terms_average_to_the_estimates() -> None:
    assert np.mean(ope.ips_terms(R, P, T, clip=1.5)) == pytest.approx(
        ope.ips(R, P, T, clip=1.5).value, rel=1e-12
    )
    assert np.mean(ope.dr_terms(R, P, T, Q_LOGGED, Q_TARGET)) == pytest.approx(
        ope.dr(R, P, T, Q_LOGGED, Q_TARGET).value, rel=1e-12
    )
    with pytest.raises(ValueError, match="clip"):
        ope.ips_terms(R, P, T, clip=-1.0)


def test_bernstein_interval_by_hand() -> None:
    r, p, t = _sample(1000, 10)
    clip = 10.0
    terms = np.minimum(t / p, clip) * r
    estimate = ope.ips(r, p, t, clip=clip, interval="bernstein", reward_range=(0.0, 1.0))
    log_term = math.log(2.0 / 0.025)
    n = len(terms)
    half = math.sqrt(2 * np.var(terms, ddof=1) * log_term / n) + 7 * clip * log_term / (3 * (n - 1))
    assert estimate.lower == pytest.approx(max(0.0, np.mean(terms) - half), rel=1e-12)
    assert estimate.upper == pytest.approx(np.mean(terms) + half, rel=1e-12)
    assert ope.WEIGHT_BOUND_FROM_DATA not in estimate.warnings
    unclipped = ope.ips(r, p, t, interval="bernstein", reward_range=(0.0, 1.0))
    assert ope.WEIGHT_BOUND_FROM_DATA in unclipped.warnings


def test_bernstein_for_model_based_estimators() -> None:
    r, p, t = _sample(1000, 11)
    q = np.full_like(r, 0.3)
    for estimate in (
        ope.dm(r, p, t, q, interval="bernstein", reward_range=(0.0, 1.0)),
        ope.dr(r, p, t, q, q, clip=10.0, interval="bernstein", reward_range=(0.0, 1.0)),
        ope.switch_dr(r, p, t, q, q, tau=5.0, interval="bernstein", reward_range=(0.0, 1.0)),
    ):
        assert estimate.lower <= estimate.value <= estimate.upper
        assert ope.WEIGHT_BOUND_FROM_DATA not in estimate.warnings
    normal = ope.dr(r, p, t, q, q, clip=10.0)
    bernstein = ope.dr(r, p, t, q, q, clip=10.0, interval="bernstein", reward_range=(0.0, 1.0))
    assert bernstein.upper - bernstein.lower > normal.upper - normal.lower


def test_bernstein_is_refused_for_self_normalised_estimators() -> None:
    with pytest.raises(ValueError, match="bernstein"):
        ope.snips(R, P, T, interval="bernstein")  # type: ignore[arg-type]


# -------------------------------------------------------------------------------------------
# diagnostics and warnings


def test_effective_sample_size() -> None:
    assert ope.effective_sample_size(np.ones(10)) == pytest.approx(10.0)
    assert ope.effective_sample_size(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert ope.effective_sample_size(np.zeros(3)) == 0.0


def test_healthy_data_has_no_warnings() -> None:
    n = 5000
    rng = np.random.default_rng(12)
    p = np.full(n, 0.5)
    t = rng.choice([0.25, 0.75], n)
    r = rng.binomial(1, 0.4, n).astype(float)
    assert ope.ips(r, p, t).warnings == ()


def test_low_ess_and_large_weight_warnings() -> None:
    n = 1000
    p = np.full(n, 0.5)
    p[0] = 0.001
    t = np.full(n, 0.001)
    t[0] = 1.0
    r = np.ones(n)
    estimate = ope.ips(r, p, t)
    assert ope.LOW_EFFECTIVE_SAMPLE_SIZE in estimate.warnings
    assert ope.LARGE_WEIGHT in estimate.warnings
    assert estimate.max_weight == pytest.approx(1000.0)


def test_mean_weight_far_from_one_warns() -> None:
    # the target puts most mass on actions the logging policy never took
    n = 2000
    estimate = ope.snips(np.ones(n), np.full(n, 0.5), np.full(n, 0.1))
    assert ope.MEAN_WEIGHT_FAR_FROM_ONE in estimate.warnings


def test_no_overlap_gives_nan_snips_and_a_warning() -> None:
    estimate = ope.snips(R, P, np.zeros_like(T))
    assert math.isnan(estimate.value)
    assert math.isnan(estimate.lower)
    assert ope.NO_OVERLAP in estimate.warnings
    assert ope.ips(R, P, np.zeros_like(T)).value == 0.0


def test_zero_variance_warns() -> None:
    estimate = ope.ips(np.ones(200), np.full(200, 0.5), np.full(200, 0.5))
    assert estimate.lower == estimate.upper == estimate.value == 1.0
    assert ope.ZERO_VARIANCE in estimate.warnings


# -------------------------------------------------------------------------------------------
# invalid inputs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rewards": [1.0, 0.0]}, "logged_propensities has length"),
        ({"logged_propensities": [0.5, 0.0, 0.5]}, "logged_propensities"),
        ({"logged_propensities": [0.5, 1.5, 0.5]}, "logged_propensities"),
        ({"target_probabilities": [0.5, -0.1, 0.5]}, "target_probabilities"),
        ({"target_probabilities": [0.5, 1.1, 0.5]}, "target_probabilities"),
        ({"rewards": [1.0, math.nan, 0.0]}, "rewards must be finite"),
        ({"rewards": [1.0, math.inf, 0.0]}, "rewards must be finite"),
        ({"rewards": [[1.0, 0.0, 1.0]]}, "rewards must be one-dimensional"),
        ({"rewards": [], "logged_propensities": [], "target_probabilities": []}, "empty"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"clip": 0.0}, "clip"),
        ({"n_bootstrap": 1}, "n_bootstrap"),
        ({"interval": "bernstein"}, "reward_range is required"),
        ({"interval": "bernstein", "reward_range": (1.0, 0.0)}, "reward_range"),
        ({"interval": "bernstein", "reward_range": (0.0, 0.5)}, "rewards must lie in"),
        ({"interval": "wald"}, "interval must be"),
    ],
)
def test_ips_rejects_invalid_arguments(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {
        "rewards": [1.0, 0.0, 1.0],
        "logged_propensities": [0.5, 0.5, 0.5],
        "target_probabilities": [0.5, 0.5, 0.5],
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ope.ips(**arguments)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reward_model_logged": [0.1, 0.2]}, "reward_model_logged has length"),
        ({"reward_model_target": [0.1, math.nan, 0.2]}, "reward_model_target must be finite"),
        (
            {"interval": "bernstein", "reward_range": (0.0, 1.0), "reward_model_logged": [2, 0, 0]},
            "reward_model_logged must lie in",
        ),
    ],
)
def test_dr_rejects_invalid_model_arguments(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {
        "rewards": [1.0, 0.0, 1.0],
        "logged_propensities": [0.5, 0.5, 0.5],
        "target_probabilities": [0.5, 0.5, 0.5],
        "reward_model_logged": [0.5, 0.5, 0.5],
        "reward_model_target": [0.5, 0.5, 0.5],
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ope.dr(**arguments)


def test_switch_dr_rejects_a_negative_tau() -> None:
    with pytest.raises(ValueError, match="tau"):
        ope.switch_dr(R, P, T, Q_LOGGED, Q_TARGET, tau=-1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"terms": []}, "empty"),
        ({"terms": [0.5, 2.0]}, "terms must lie in"),
        ({"alpha": 1.5}, "alpha"),
        ({"truncation": 1.0}, "truncation"),
        ({"term_range": (1.0, 1.0)}, "term_range"),
    ],
)
def test_confidence_sequence_rejects_invalid_arguments(
    kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {"terms": [0.5, 0.2], "term_range": (0.0, 1.0)}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ope.confidence_sequence(**arguments)


def test_confidence_sequence_is_nested_and_shrinks() -> None:
    rng = np.random.default_rng(13)
    terms = rng.binomial(1, 0.3, 5000) * 4.0
    sequence = ope.confidence_sequence(terms, term_range=(0.0, 4.0))
    assert sequence.lower.shape == sequence.upper.shape == (5000,)
    assert np.all(np.diff(sequence.lower) >= 0.0)
    assert np.all(np.diff(sequence.upper) <= 0.0)
    assert sequence.lower[0] >= 0.0
    assert sequence.upper[0] <= 4.0
    assert sequence.upper[-1] - sequence.lower[-1] < 0.25
    assert sequence.lower[-1] <= 1.2 <= sequence.upper[-1]


# -------------------------------------------------------------------------------------------
# ground truth: a seeded synthetic contextual bandit with an exactly known target value


CONTEXTS = 50
ARMS = 5
REPLICATIONS = 1000
N = 2000
EPSILON = 0.5
MODEL_NOISE = 0.02


@dataclass(frozen=True)
class World:
    """Context types drawn uniformly, Bernoulli rewards with known means per (context, arm).

    Logging: epsilon-greedy (epsilon = 0.5) around a fixed arbitrary arm per context, so the
    smallest propensity is 0.1 and weights reach 10. Target: softmax of the true means at
    temperature 0.1 (a different, better policy). V = mean_x sum_a pi(a|x) mu(x, a), exactly.
    """

    means: np.ndarray
    logging: np.ndarray
    target: np.ndarray
    good_model: np.ndarray
    bad_model: np.ndarray

    @property
    def true_value(self) -> float:
        return float(np.mean(np.sum(self.target * self.means, axis=1)))


def _world(seed: int) -> World:
    rng = np.random.default_rng(seed)
    means = rng.uniform(0.05, 0.6, size=(CONTEXTS, ARMS))
    favourite = rng.integers(0, ARMS, CONTEXTS)
    logging = np.full((CONTEXTS, ARMS), EPSILON / ARMS)
    logging[np.arange(CONTEXTS), favourite] += 1.0 - EPSILON
    scores = np.exp(means / 0.1)
    target = scores / scores.sum(axis=1, keepdims=True)
    good = np.clip(means + rng.normal(0.0, MODEL_NOISE, means.shape), 0.0, 1.0)
    bad = np.clip(1.0 - means + rng.normal(0.0, 0.1, means.shape), 0.0, 1.0)
    return World(means, logging, target, good, bad)


@dataclass(frozen=True)
class Logs:
    """R replications of n logged decisions, shape (R, n) each."""

    rewards: np.ndarray
    propensities: np.ndarray
    target_probabilities: np.ndarray
    good_logged: np.ndarray
    good_target: np.ndarray
    bad_logged: np.ndarray
    bad_target: np.ndarray


def _logs(world: World, replications: int, n: int, seed: int) -> Logs:
    rng = np.random.default_rng(seed)
    contexts = rng.integers(0, CONTEXTS, size=(replications, n))
    cumulative = np.cumsum(world.logging, axis=1)[contexts]
    actions = np.minimum(
        (rng.random((replications, n))[..., None] > cumulative).sum(axis=-1), ARMS - 1
    )
    rewards = (rng.random((replications, n)) < world.means[contexts, actions]).astype(float)
    good_target = np.sum(world.target * world.good_model, axis=1)
    bad_target = np.sum(world.target * world.bad_model, axis=1)
    return Logs(
        rewards=rewards,
        propensities=world.logging[contexts, actions],
        target_probabilities=world.target[contexts, actions],
        good_logged=world.good_model[contexts, actions],
        good_target=good_target[contexts],
        bad_logged=world.bad_model[contexts, actions],
        bad_target=bad_target[contexts],
    )


@dataclass(frozen=True)
class Study:
    true_value: float
    max_weight: float
    logs: Logs
    estimates: dict[str, list[Estimate]]


@pytest.fixture(scope="module")
def study() -> Study:
    world = _world(2026)
    logs = _logs(world, REPLICATIONS, N, seed=11)
    estimates: dict[str, list[Estimate]] = {
        "IPS": [],
        "SNIPS": [],
        "DR good": [],
        "DR bad": [],
        "IPS bernstein": [],
    }
    for i in range(REPLICATIONS):
        r, p, t = logs.rewards[i], logs.propensities[i], logs.target_probabilities[i]
        estimates["IPS"].append(ope.ips(r, p, t))
        estimates["SNIPS"].append(ope.snips(r, p, t))
        estimates["DR good"].append(ope.dr(r, p, t, logs.good_logged[i], logs.good_target[i]))
        estimates["DR bad"].append(ope.dr(r, p, t, logs.bad_logged[i], logs.bad_target[i]))
        estimates["IPS bernstein"].append(
            ope.ips(r, p, t, clip=ARMS / EPSILON, interval="bernstein", reward_range=(0, 1))
        )
    max_weight = float(np.max(world.target / world.logging))
    return Study(world.true_value, max_weight, logs, estimates)


def _coverage(estimates: list[Estimate], truth: float) -> float:
    return float(np.mean([e.lower <= truth <= e.upper for e in estimates]))


@pytest.mark.parametrize("name", ["IPS", "SNIPS", "DR good", "DR bad"])
def test_normal_interval_coverage(study: Study, name: str) -> None:
    coverage = _coverage(study.estimates[name], study.true_value)
    assert 0.93 <= coverage <= 0.97, f"{name}: coverage {coverage:.3f}"


def test_bernstein_interval_is_conservative(study: Study) -> None:
    # the clip 1 / (epsilon / K) = 10 is the largest possible weight, so it never binds
    assert _coverage(study.estimates["IPS bernstein"], study.true_value) >= 0.95


@pytest.mark.parametrize("name", ["IPS", "DR good", "DR bad"])
def test_unbiased(study: Study, name: str) -> None:
    errors = np.array([e.value for e in study.estimates[name]]) - study.true_value
    standard_error = float(np.std(errors, ddof=1)) / math.sqrt(len(errors))
    assert abs(float(np.mean(errors))) <= 4.0 * standard_error, f"{name}: {np.mean(errors):.5f}"


def test_healthy_world_rarely_warns(study: Study) -> None:
    # full support and ESS ~ 575 of 2,000: warnings here are false alarms; at most 1%
    warned = [bool(e.warnings) for e in study.estimates["IPS"]]
    assert np.mean(warned) <= 0.01


def test_dr_with_a_good_model_beats_ips(study: Study) -> None:
    def rmse(name: str) -> float:
        values = np.array([e.value for e in study.estimates[name]])
        return float(np.sqrt(np.mean((values - study.true_value) ** 2)))

    assert rmse("DR good") < rmse("IPS")


def test_confidence_sequence_is_time_uniform(study: Study) -> None:
    logs, truth = study.logs, study.true_value
    bound = study.max_weight
    covered_ips, covered_dr = [], []
    for i in range(REPLICATIONS // 2):
        r, p, t = logs.rewards[i], logs.propensities[i], logs.target_probabilities[i]
        ips_cs = ope.confidence_sequence(ope.ips_terms(r, p, t), term_range=(0.0, bound))
        covered_ips.append(bool(np.all((ips_cs.lower <= truth) & (truth <= ips_cs.upper))))
        dr_terms = ope.dr_terms(r, p, t, logs.good_logged[i], logs.good_target[i])
        dr_cs = ope.confidence_sequence(dr_terms, term_range=(-bound, 1.0 + bound))
        covered_dr.append(bool(np.all((dr_cs.lower <= truth) & (truth <= dr_cs.upper))))
    assert np.mean(covered_ips) >= 0.95
    assert np.mean(covered_dr) >= 0.95


@pytest.mark.slow
def test_bootstrap_coverage(study: Study) -> None:
    logs = study.logs
    replications = 200
    estimates = [
        ope.ips(
            logs.rewards[i],
            logs.propensities[i],
            logs.target_probabilities[i],
            interval="bootstrap",
            n_bootstrap=500,
            seed=i,
        )
        for i in range(replications)
    ]
    assert 0.90 <= _coverage(estimates, study.true_value) <= 0.99


# -------------------------------------------------------------------------------------------
# empirical likelihood and Euclidean likelihood


def _primal_el(
    r: np.ndarray, w: np.ndarray, bound: float, reward_range: tuple[float, float], alpha: float
) -> tuple[float, float, float]:
    """EL value and interval by brute force: SLSQP on the primal over the n + 3 probabilities.

    Unknowns: q_1..q_n on the decisions and masses on (w, r) = (0, *), (W, r_min), (W, r_max).
    """
    n = len(r)
    low, high = reward_range
    bounds = [(1e-12, 1.0)] * (n + 3)
    options = {"ftol": 1e-15, "maxiter": 2000}

    def loglik(x: np.ndarray) -> float:
        return float(np.sum(np.log(np.maximum(x[:n], 1e-300))))

    def value(x: np.ndarray) -> float:
        return float(np.dot(x[:n], w * r) + bound * (low * x[n + 1] + high * x[n + 2]))

    constraints: list[dict[str, Any]] = [
        {"type": "eq", "fun": lambda x: np.sum(x) - 1.0},
        {"type": "eq", "fun": lambda x: np.dot(x[:n], w) + bound * (x[n + 1] + x[n + 2]) - 1.0},
    ]
    start = np.full(n + 3, 1.0 / (n + 3))
    best = optimize.minimize(
        lambda x: -loglik(x),
        start,
        method="SLSQP",
        bounds=bounds,
        constraints=constraints,
        options=options,
    )
    q = best.x
    # the reward at w = W is not identified: the estimator takes the likelihood-weighted mean
    point = float(np.dot(q[:n], w * r) / np.dot(q[:n], w))
    level = -float(best.fun) - float(stats.chi2.ppf(1.0 - alpha, 1)) / 2.0
    region = [*constraints, {"type": "ineq", "fun": lambda x: loglik(x) - level}]
    lower = optimize.minimize(
        value, q, method="SLSQP", bounds=bounds, constraints=region, options=options
    )
    upper = optimize.minimize(
        lambda x: -value(x), q, method="SLSQP", bounds=bounds, constraints=region, options=options
    )
    return point, float(lower.fun), -float(upper.fun)


EL_CASES = {
    # weights on both sides of 1: an interior dual solution
    "interior": (np.array([0.0, 0.1, 0.7]), 4.0),
    # every weight below 1: the leftover mass sits at w = W
    "mass at W": (np.array([0.0, 0.1, 0.2]), 4.0),
    # every weight above 1: the leftover mass sits at w = 0
    "mass at 0": (np.array([0.5, 0.9]), 4.0),
}


@pytest.mark.parametrize("case", sorted(EL_CASES))
def test_empirical_likelihood_agrees_with_the_primal(case: str) -> None:
    choices, bound = EL_CASES[case]
    rng = np.random.default_rng(21)
    n = 12
    p = np.full(n, 0.25)
    t = rng.choice(choices, n)
    r = rng.binomial(1, 0.4, n).astype(float)
    r[:2] = [0.0, 1.0]
    estimate = ope.empirical_likelihood(r, p, t, reward_range=(0.0, 1.0), weight_bound=bound)
    point, lower, upper = _primal_el(r, t / p, bound, (0.0, 1.0), 0.05)
    assert estimate.name == "EL"
    assert estimate.interval_method == "empirical_likelihood"
    assert estimate.value == pytest.approx(point, abs=1e-6)
    assert estimate.lower == pytest.approx(lower, abs=1e-6)
    assert estimate.upper == pytest.approx(upper, abs=1e-6)
    assert 0.0 <= estimate.lower <= estimate.value <= estimate.upper <= 1.0


def test_empirical_likelihood_on_policy_is_the_mean_reward() -> None:
    rng = np.random.default_rng(22)
    r = rng.uniform(-1.0, 2.0, 50)
    p = np.full(50, 0.3)
    estimate = ope.empirical_likelihood(r, p, p, reward_range=(-1.0, 2.0), weight_bound=1.0)
    assert estimate.value == pytest.approx(np.mean(r), rel=1e-9)
    # at n = 50 the EL interval of a mean is close to the normal one (within 15% of its width)
    half = Z95 * float(stats.sem(r))
    assert estimate.lower == pytest.approx(np.mean(r) - half, abs=0.15 * half)
    assert estimate.upper == pytest.approx(np.mean(r) + half, abs=0.15 * half)
    assert ope.WEIGHT_BOUND_FROM_DATA not in estimate.warnings


def test_empirical_likelihood_stays_in_the_reward_range_with_heavy_tails() -> None:
    # 1% of decisions logged with propensity 0.001 and wanted by the target: weights of 1,000,
    # no clipping; IPS leaves the reward range by an order of magnitude, EL cannot.
    rng = np.random.default_rng(23)
    n = 300
    p = rng.choice([0.001, 0.5], n, p=[0.01, 0.99])
    p[0] = 0.001
    t = np.where(p < 0.01, 1.0, 0.3)
    r = rng.binomial(1, 0.5, n).astype(float) * 3.0 - 1.0  # rewards in {-1, 2}
    estimate = ope.empirical_likelihood(r, p, t, reward_range=(-1.0, 2.0))
    assert -1.0 <= estimate.lower <= estimate.value <= estimate.upper <= 2.0
    assert estimate.upper - estimate.lower < 3.0
    assert ope.WEIGHT_BOUND_FROM_DATA in estimate.warnings
    assert ope.LARGE_WEIGHT in estimate.warnings
    euclidean = ope.cressie_read(r, p, t, power=-2, reward_range=(-1.0, 2.0))
    assert -1.0 <= euclidean.lower <= euclidean.upper <= 2.0
    assert not -1.0 <= ope.ips(r, p, t).upper <= 2.0


def test_empirical_likelihood_without_a_feasible_distribution_is_nan() -> None:
    # every weight below 1 and the known bound 1: nothing has mean weight 1
    estimate = ope.empirical_likelihood(
        [1.0, 0.0], [0.5, 0.5], [0.25, 0.25], reward_range=(0.0, 1.0), weight_bound=1.0
    )
    assert math.isnan(estimate.value)
    assert math.isnan(estimate.lower)
    assert ope.EMPIRICAL_LIKELIHOOD_INFEASIBLE in estimate.warnings


def test_likelihood_estimators_without_overlap() -> None:
    # the target never takes a logged action: EL's value is not identified and its interval is
    # the whole reward range; Euclidean likelihood has no feasible q (equal weights 0)
    r, p, t = [1.0, 0.0, 1.0], [0.5, 0.5, 0.5], [0.0, 0.0, 0.0]
    estimate = ope.empirical_likelihood(r, p, t, reward_range=(0.0, 1.0), weight_bound=10.0)
    assert math.isnan(estimate.value)
    assert (estimate.lower, estimate.upper) == (0.0, 1.0)
    assert ope.NO_OVERLAP in estimate.warnings
    euclidean = ope.cressie_read(r, p, t, power=-2, reward_range=(0.0, 1.0))
    assert math.isnan(euclidean.value)
    assert ope.EMPIRICAL_LIKELIHOOD_INFEASIBLE in euclidean.warnings


def test_cressie_read_power_zero_is_empirical_likelihood() -> None:
    r, p, t = _sample(200, 24)
    expected = ope.empirical_likelihood(r, p, t, reward_range=(0.0, 1.0), weight_bound=10.0)
    assert (
        ope.cressie_read(r, p, t, power=0.0, reward_range=(0.0, 1.0), weight_bound=10.0) == expected
    )


def test_euclidean_likelihood_agrees_with_the_quadratic_program() -> None:
    rng = np.random.default_rng(25)
    n = 40
    p = rng.uniform(0.3, 1.0, n)
    t = rng.uniform(0.0, 1.0, n)
    r = rng.binomial(1, 0.5, n).astype(float)
    w = t / p
    estimate = ope.cressie_read(r, p, t, power=-2, reward_range=(0.0, 1.0))
    assert 0.0 < estimate.lower < estimate.upper < 1.0  # not cut by the reward range

    def divergence(rows: list[np.ndarray], targets: list[float]) -> tuple[float, np.ndarray]:
        # min sum (n q - 1)^2 subject to A q = b: solve the KKT system by brute force
        a = np.array(rows)
        m = a.shape[0]
        kkt = np.block([[2.0 * n * n * np.eye(n), a.T], [a, np.zeros((m, m))]])
        rhs = np.concatenate([np.full(n, 2.0 * n), targets])
        q = np.linalg.solve(kkt, rhs)[:n]
        return float(np.sum((n * q - 1.0) ** 2)), q

    best, q = divergence([np.ones(n), w], [1.0, 1.0])
    assert estimate.name == "EuL"
    assert estimate.value == pytest.approx(float(np.dot(q, w * r)), rel=1e-10)
    # the interval's ends are where the profiled divergence rises by chi2_1(0.95) = z^2
    for end in (estimate.lower, estimate.upper):
        profiled, _ = divergence([np.ones(n), w, w * r], [1.0, 1.0, end])
        assert profiled - best == pytest.approx(Z95**2, rel=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"reward_range": (1.0, 0.0)}, "reward_range"),
        ({"reward_range": (0.0, 0.5)}, "rewards must lie in"),
        ({"weight_bound": 1.5}, "weight_bound"),
        ({"weight_bound": math.inf}, "weight_bound"),
        ({"alpha": 0.0}, "alpha"),
        ({"rewards": [1.0, 0.0]}, "logged_propensities has length"),
        ({"target_probabilities": [0.5, 1.5, 0.5]}, "target_probabilities"),
        ({"power": 1.0}, "power"),
    ],
)
def test_likelihood_estimators_reject_invalid_arguments(
    kwargs: dict[str, Any], message: str
) -> None:
    arguments: dict[str, Any] = {
        "rewards": [1.0, 0.0, 1.0],
        "logged_propensities": [0.25, 0.5, 0.5],
        "target_probabilities": [0.5, 0.5, 0.5],
        "reward_range": (0.0, 1.0),
        "power": 0.0,
    }
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ope.cressie_read(**arguments)
    if "power" not in kwargs:
        del arguments["power"]
        with pytest.raises(ValueError, match=message):
            ope.empirical_likelihood(**arguments)


LIKELIHOOD_ARMS_MEANS = np.array([0.1, 0.3, 0.5, 0.2])
LIKELIHOOD_LOGGING = np.array([0.4, 0.3, 0.2, 0.1])
LIKELIHOOD_TARGET = np.array([0.1, 0.2, 0.6, 0.1])


@pytest.mark.slow
def test_likelihood_interval_coverage() -> None:
    # R = 300 replications of n = 200: MC standard error of a 0.95 coverage is 1.3 points.
    # Euclidean likelihood: [0.91, 0.99] (+/- 3 SE). EL: [0.93, 0.995], because the unobserved
    # support at (0, *) and (W, r) makes it mildly conservative (Karampatziakis et al. 2020).
    truth = float(LIKELIHOOD_TARGET @ LIKELIHOOD_ARMS_MEANS)
    bound = float(np.max(LIKELIHOOD_TARGET / LIKELIHOOD_LOGGING))
    rng = np.random.default_rng(26)
    covered: dict[str, list[bool]] = {"EL": [], "EuL": []}
    for _ in range(300):
        actions = rng.choice(4, 200, p=LIKELIHOOD_LOGGING)
        r = (rng.random(200) < LIKELIHOOD_ARMS_MEANS[actions]).astype(float)
        p, t = LIKELIHOOD_LOGGING[actions], LIKELIHOOD_TARGET[actions]
        for estimate in (
            ope.empirical_likelihood(r, p, t, reward_range=(0.0, 1.0), weight_bound=bound),
            ope.cressie_read(r, p, t, power=-2, reward_range=(0.0, 1.0)),
        ):
            covered[estimate.name].append(estimate.lower <= truth <= estimate.upper)
    assert 0.93 <= np.mean(covered["EL"]) <= 0.995
    assert 0.91 <= np.mean(covered["EuL"]) <= 0.99


# -------------------------------------------------------------------------------------------
# cluster-robust intervals


def test_cluster_robust_variance_by_hand() -> None:
    terms = np.array([1.0, 3.0, 2.0, 6.0, 0.0])
    clusters = np.array([0, 0, 1, 1, 2])
    centred = terms - terms.mean()
    sums = [centred[:2].sum(), centred[2:4].sum(), centred[4]]
    expected = 3 / 2 * sum(s * s for s in sums) / 25
    assert ope.cluster_robust_variance(terms, clusters) == pytest.approx(expected, rel=1e-12)


ESTIMATORS: dict[str, Any] = {
    "IPS": lambda r, p, t, q, **kw: ope.ips(r, p, t, **kw),
    "SNIPS": lambda r, p, t, q, **kw: ope.snips(r, p, t, **kw),
    "DM": lambda r, p, t, q, **kw: ope.dm(r, p, t, q, **kw),
    "DR": lambda r, p, t, q, **kw: ope.dr(r, p, t, q, q, **kw),
    "SNDR": lambda r, p, t, q, **kw: ope.sndr(r, p, t, q, q, **kw),
    "SwitchDR": lambda r, p, t, q, **kw: ope.switch_dr(r, p, t, q, q, tau=5.0, **kw),
}


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_one_decision_per_cluster_is_the_ordinary_interval(name: str) -> None:
    # G = n: the G / (G - 1) factor turns the divisor n^2 into n (n - 1), the ddof=1 variance
    r, p, t = _sample(300, 27)
    q = np.linspace(0.1, 0.5, 300)
    ordinary = ESTIMATORS[name](r, p, t, q)
    clustered = ESTIMATORS[name](r, p, t, q, clusters=[f"customer-{i}" for i in range(300)])
    assert clustered.value == ordinary.value
    assert (clustered.lower, clustered.upper) == pytest.approx(
        (ordinary.lower, ordinary.upper), rel=1e-12
    )


def _clustered_log(
    rng: np.random.Generator, customers: int, per_customer: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Customers with their own click propensity u ~ U(0.1, 0.7), shared by all their
    decisions (intra-customer correlation 0.125), uniform logging over 4 arms that shift the
    mean by ARM_SHIFT."""
    u = rng.uniform(0.1, 0.7, customers)
    cluster = np.repeat(np.arange(customers), per_customer)
    actions = rng.integers(0, 4, customers * per_customer)
    r = (rng.random(cluster.shape[0]) < u[cluster] + ARM_SHIFT[actions]).astype(float)
    return r, np.full(r.shape[0], 0.25), CLUSTER_TARGET[actions], cluster


ARM_SHIFT = np.array([-0.1, 0.0, 0.05, 0.1])
CLUSTER_TARGET = np.array([0.1, 0.2, 0.3, 0.4])
#: E[u] + sum_a pi(a) shift(a)
CLUSTER_TRUTH = 0.4 + float(CLUSTER_TARGET @ ARM_SHIFT)


def test_clustered_interval_widens_with_correlated_customers() -> None:
    rng = np.random.default_rng(28)
    r, p, t, cluster = _clustered_log(rng, 200, 20)
    ordinary = ope.ips(r, p, t)
    clustered = ope.ips(r, p, t, clusters=cluster)
    # design effect 1 + (m - 1) rho = 1 + 19 * 0.125 ~ 3.4 on the variance: ~1.8 on the width
    assert clustered.upper - clustered.lower > 1.4 * (ordinary.upper - ordinary.lower)
    with pytest.raises(ValueError, match="clusters is only used"):
        ope.ips(r, p, t, clusters=cluster, interval="bootstrap")
    with pytest.raises(ValueError, match="clusters has length"):
        ope.ips(r, p, t, clusters=cluster[:-1])
    with pytest.raises(ValueError, match="two distinct"):
        ope.ips(r, p, t, clusters=np.zeros_like(cluster))


def test_clustered_interval_covers_where_the_ordinary_one_does_not() -> None:
    # R = 500 replications of 100 customers x 20 decisions. Tolerances fixed up front: the
    # i.i.d. interval is too narrow by ~1.8x (expected coverage ~0.7) and must cover at most
    # 0.85; the clustered one must cover in [0.92, 0.98] (MC SE 1 point; with G = 100 the
    # sandwich is close to unbiased).
    rng = np.random.default_rng(29)
    ordinary: list[bool] = []
    clustered: list[bool] = []
    for _ in range(500):
        r, p, t, cluster = _clustered_log(rng, 100, 20)
        for result, estimate in (
            (ordinary, ope.ips(r, p, t)),
            (clustered, ope.ips(r, p, t, clusters=cluster)),
        ):
            result.append(estimate.lower <= CLUSTER_TRUTH <= estimate.upper)
    assert np.mean(ordinary) <= 0.85
    assert 0.92 <= np.mean(clustered) <= 0.98
