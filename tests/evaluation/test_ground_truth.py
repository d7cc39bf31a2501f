"""The evaluation layer's promises, checked against the simulated bank's exact ground truth.

Setup (`simulators.logged`): a pool of the situations of every visit of a seeded simulated
world (2,000 customers, 3 days), with, per situation and arm, the demo experiment's
eligibility, the exact expected reward `E[R | s, a]` and the exact law of the reward (demo
learning horizon: max of click 0.1, apply 0.5, convert 1.0 within 168 h, organic conversions
included). Each simulated experiment draws its contexts i.i.d. from the pool, so the estimand
of every estimator below is the POPULATION value `V(pi) = mean over the pool of
sum_a pi(a|s) E[R|s,a]`, known exactly (checked against `simulators.truth`), not the value
conditional on the contexts drawn.

Policies: the logging policy is epsilon-greedy (epsilon = 0.3, so every eligible arm has at
least the floor 0.3 / #eligible) around a non-personalised incumbent (the eligible arm with the
best pool-average reward); target policies are uniform over the eligible arms and the oracle
mixed with 30% uniform (importance weights up to about 31). The holdout shows `no_offer`; the
A-B group the platform's uniform A-B arm; the bandit group the logging policy.

Tolerances, fixed before running (the two revisions made after the first run are marked
REVISED, with the reason; no seed was changed):

- Exactness (pool vs `simulators.truth`, reward law vs expected reward): 1e-12 absolute.
- Reward law vs the simulator's own event sampler (`draw_outcomes`, `realised_rewards`), 200,000
  draws per situation and arm: every level's frequency within 4.5 binomial SEs.
- OPE: R = 1,000 replicates of n = 5,000 logged decisions; 95% normal intervals of IPS, SNIPS
  and DR (reward model: ridge per arm on 15 context features, penalty 100, 2-fold
  cross-fitted). Bias: |mean(V_hat) - V| <= 4 MC SEs.
  - Uniform target: coverage in [0.93, 0.97] (MC SE of a coverage near 0.95 is 0.7 points:
    the band is about +/- 2.9 SE).
  - Oracle mixed with uniform, REVISED: the first run missed the band's lower edge (IPS 0.931,
    SNIPS 0.932, DR 0.929 with misses 6% above and 1% below). The exact moments of one IPS
    term (`ips_term_moments`: skewness ~19, excess kurtosis ~390, from weights up to ~31 on
    rare rewards) put the normal interval's coverage at n = 5,000 at 0.934 to order 1/n
    (`edgeworth_coverage`), 0.942 at n = 10,000 and 0.946 at n = 20,000: the band is not a
    reliable promise at this n. Promised instead: coverage within 3 MC SEs of that prediction
    and at least 0.92. The band itself is checked at n = 20,000 (1,000 fresh replicates, same
    band [0.93, 0.97], fixed before that run), where the prediction is 0.946.
  - Ridge penalty, REVISED from 1 to 100 after the first run, where cross-fitted DR was
    noisier than IPS: the exact DR variance of a ridge model fitted on an independent seed
    is 1.02 (uniform) and 0.94 (oracle mixed) x IPS's at penalty 1, 0.96 and 0.91 at 100.
- DR vs IPS: with a good model (the exact E[R|s,a] times exp(0.2 z), z ~ N(0, 1) fixed per
  situation and arm) the exact per-decision variance ratio DR / IPS is computed from the pool
  (`dr_term_variance`, `ips_term_variance`): the rewards are rare (mean 0.05-0.08), so even a
  perfect model removes only the `q^2` part of `E[R^2]`: exact ratio 0.92 (uniform) and 0.85
  (oracle mixed). Promised: the measured MSE ratio (same 1,000 replicates) is below 1 and
  within 0.05 of the exact ratio, and each estimator's MSE is within 20% of its exact
  variance / n. REVISED: the first version also promised a ratio of at most 0.92 for both
  targets, a margin read off the oracle-mixed target's exact ratio alone; the uniform
  target's exact ratio is 0.916, so that margin had no room (measured 0.935).
- Lift: R = 1,000 experiments of 50,000 decisions split holdout / A-B / bandit 10 / 20 / 70;
  Welch 95% intervals of the absolute lift and delta-method 95% intervals of the relative lift
  (bandit vs holdout, A-B vs holdout) cover the exact lift in [0.93, 0.97] of experiments.
- A-A: R = 1,000 experiments of 20,000 decisions, two groups 50 / 50 with the same policy:
  the share with p < 0.05 is in [0.025, 0.075] (binomial SE 0.69 points: +/- 3.6 SE); each
  p-value agrees with `scipy.stats.ttest_ind(equal_var=False)` to rel 1e-8.
- SRM: on the 1,000 clean lift experiments the share flagged at alpha = 0.05 is in
  [0.025, 0.075] and at most 5 are flagged at the default alpha = 0.001 (P(>= 6 | 0.001) is
  6e-4); each statistic agrees with `scipy.stats.chisquare` to rel 1e-10. With 10% of the
  bandit group's logs dropped from the first 20,000 decisions of each experiment, the exact
  power at alpha = 0.001 is 0.9990 (noncentral chi-square, lambda = 45): at least 99% of the
  experiments are flagged.
- Arm-level SRM (added after the first run, tolerances fixed before its first run): the
  contexts are i.i.d. from the pool, so the arm counts of the OPE logs are exactly
  multinomial with shares `mean_i mu(a|s_i)` (`expected_shares_from_propensities` of the
  logging policy over the pool). Clean: over the 1,000 replicates of 5,000 decisions the share
  flagged at alpha = 0.05 is in [0.025, 0.075], statistics as scipy's to rel 1e-10. With 10%
  of the most-shown arm's logs dropped from 250 experiments of 20,000 decisions (4 replicates
  each), the share flagged at alpha = 0.001 is at least the exact power (noncentral
  chi-square on 12 degrees of freedom, about 0.94: weaker than the group-level check) minus
  3 binomial SEs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from bandit_platform.evaluation import ope
from bandit_platform.evaluation.lift import (
    SufficientStats,
    absolute_lift,
    expected_shares_from_propensities,
    relative_lift,
    sample_ratio_mismatch,
)
from simulators import logged
from simulators.logged import FloatArray, SituationPool
from simulators.response import draw_outcomes, realised_rewards, response_probabilities
from simulators.truth import (
    ab_uniform_distribution,
    arm_values,
    oracle_arm,
    policy_value,
    uniform_policy,
)

pytestmark = pytest.mark.slow

POOL_SEED = 20_261_130
EPSILON = 0.3
ORACLE_UNIFORM_WEIGHT = 0.3
OPE_REPLICATES = 1_000
OPE_DECISIONS = 5_000
#: The heavy-weight target's band check: where its Edgeworth coverage reaches 0.946.
LARGE_OPE_DECISIONS = 20_000
LIFT_REPLICATES = 1_000
LIFT_DECISIONS = 50_000
LIFT_SHARES = (0.1, 0.2, 0.7)  # holdout, A-B, bandit
SRM_DECISIONS = 20_000
AA_REPLICATES = 1_000
AA_DECISIONS = 20_000
COVERAGE_BAND = (0.93, 0.97)
RIDGE = 100.0
FLAG_BAND = (0.025, 0.075)


@pytest.fixture(scope="module")
def pool() -> SituationPool:
    return logged.build_pool(POOL_SEED, customers=2_000, days=3)


def _logging(pool: SituationPool) -> FloatArray:
    return logged.epsilon_greedy(pool, logged.incumbent_policy(pool), EPSILON)


def _targets(pool: SituationPool) -> dict[str, FloatArray]:
    uniform = logged.uniform_policy(pool)
    return {
        "uniform": uniform,
        "oracle_mixed": logged.mixture(logged.oracle_policy(pool), uniform, ORACLE_UNIFORM_WEIGHT),
    }


def _good_model(pool: SituationPool) -> FloatArray:
    noise = np.random.default_rng(POOL_SEED + 4).standard_normal(pool.expected.shape)
    result: FloatArray = pool.expected * np.exp(0.2 * noise)
    return result


# ---------------------------------------------------------------------------------------------
# the pool is the simulator's ground truth


def test_pool_agrees_with_the_simulator_truth(pool: SituationPool) -> None:
    horizon = pool.horizon
    rows = range(0, len(pool), max(1, len(pool) // 150))
    for i in rows:
        situation = pool.situations[i]
        exact = arm_values(situation, list(pool.arms), horizon)
        assert pool.expected[i] == pytest.approx([exact[a] for a in pool.arms], abs=1e-12)
        eligible = [a for a, ok in zip(pool.arms, pool.eligible[i], strict=True) if ok]
        best = oracle_arm(situation, eligible, horizon)
        assert logged.oracle_policy(pool)[i, pool.arm_index(best)] == 1.0
        ab = ab_uniform_distribution(eligible)
        assert logged.ab_uniform_policy(pool)[i] == pytest.approx(
            [ab.get(a, 0.0) for a in pool.arms], abs=1e-15
        )
    chosen = [pool.situations[i] for i in rows]
    by_situation = {id(s): pool.eligible[i] for i, s in enumerate(pool.situations)}

    def eligible_of(situation: object) -> list[str]:
        mask = by_situation[id(situation)]
        return [a for a, ok in zip(pool.arms, mask, strict=True) if ok]

    exact_value = policy_value(uniform_policy(eligible_of), chosen, horizon)
    uniform = logged.uniform_policy(pool)
    ours = float(np.mean([(uniform[i] * pool.expected[i]).sum() for i in rows]))
    assert ours == pytest.approx(exact_value, abs=1e-12)
    # Every eligible set has no_offer, so the holdout is well defined.
    assert np.all(pool.eligible[:, pool.arm_index("no_offer")])


def test_reward_law_has_the_exact_expected_reward(pool: SituationPool) -> None:
    assert np.all(np.diff(pool.tail, axis=2) <= 1e-15)
    mass = np.concatenate([1.0 - pool.tail[:, :, :1], -np.diff(pool.tail, axis=2)], axis=2)
    mass = np.concatenate([mass, pool.tail[:, :, -1:]], axis=2)
    assert np.all(mass >= -1e-15)
    values = np.concatenate([[pool.default_reward], pool.levels])
    assert np.abs((mass * values).sum(axis=2) - pool.expected).max() <= 1e-12


@pytest.mark.parametrize("arm", ["no_offer", "budgeting_tool/alerts", "high_yield_savings/rate"])
def test_reward_law_matches_the_event_sampler(pool: SituationPool, arm: str) -> None:
    j = pool.arm_index(arm)
    i = int(np.argmax(pool.expected[:, j]))  # the most responsive situation: every level occurs
    size = 200_000
    draws = draw_outcomes(
        np.random.default_rng(POOL_SEED + 1),
        response_probabilities(pool.situations[i], arm),
        size,
    )
    rewards = realised_rewards(draws, pool.horizon)
    for level, tail in zip(pool.levels, pool.tail[i, j], strict=True):
        frequency = float(np.mean(rewards >= level))
        se = math.sqrt(max(tail * (1.0 - tail), 1e-12) / size)
        assert abs(frequency - tail) <= 4.5 * se, (level, frequency, tail)


# ---------------------------------------------------------------------------------------------
# off-policy estimates


@dataclass(frozen=True)
class OpeRuns:
    """Estimates over the replicates, by (target, estimator): value, lower, upper."""

    truth: dict[str, float]
    value: dict[tuple[str, str], FloatArray]
    lower: dict[tuple[str, str], FloatArray]
    upper: dict[tuple[str, str], FloatArray]
    variance: dict[tuple[str, str], float]
    predicted_coverage: dict[str, float]
    arm_counts: npt.NDArray[np.int64]
    arm_shares: tuple[float, ...]


@pytest.fixture(scope="module")
def ope_runs(pool: SituationPool) -> OpeRuns:
    logging = _logging(pool)
    targets = _targets(pool)
    good = _good_model(pool)
    logs = logged.simulate(
        pool,
        [logging],
        (OPE_REPLICATES, OPE_DECISIONS),
        np.random.default_rng(POOL_SEED + 2),
    )
    names = ("IPS", "SNIPS", "DR", "DR_good")
    value = {(t, e): np.empty(OPE_REPLICATES) for t in targets for e in names}
    lower = {(t, e): np.empty(OPE_REPLICATES) for t in targets for e in names}
    upper = {(t, e): np.empty(OPE_REPLICATES) for t in targets for e in names}
    rows = np.arange(OPE_DECISIONS)
    for r in range(OPE_REPLICATES):
        context, arm = logs.context[r], logs.arm[r]
        reward, propensity = logs.reward[r], logs.propensity[r]
        fitted = logged.cross_fitted_ridge(pool, context, arm, reward, ridge=RIDGE)
        near = good[context]
        for t, policy in targets.items():
            at = policy[context]
            probability = at[rows, arm]
            estimates = {
                "IPS": ope.ips(reward, propensity, probability),
                "SNIPS": ope.snips(reward, propensity, probability),
                "DR": ope.dr(
                    reward, propensity, probability, fitted[rows, arm], (at * fitted).sum(axis=1)
                ),
                "DR_good": ope.dr(
                    reward, propensity, probability, near[rows, arm], (at * near).sum(axis=1)
                ),
            }
            for e, estimate in estimates.items():
                value[t, e][r] = estimate.value
                lower[t, e][r] = estimate.lower
                upper[t, e][r] = estimate.upper
    variance = {}
    predicted = {}
    for t, policy in targets.items():
        _, _, skewness, kurtosis = logged.ips_term_moments(pool, logging, policy)
        predicted[t] = edgeworth_coverage(skewness, kurtosis, OPE_DECISIONS)
        variance[t, "IPS"] = logged.ips_term_variance(pool, logging, policy)
        variance[t, "DR_good"] = logged.dr_term_variance(pool, logging, policy, good)
    return OpeRuns(
        truth={t: pool.value(p) for t, p in targets.items()},
        value=value,
        lower=lower,
        upper=upper,
        variance=variance,
        predicted_coverage=predicted,
        arm_counts=np.stack([np.bincount(row, minlength=len(pool.arms)) for row in logs.arm]),
        arm_shares=expected_shares_from_propensities(logging),
    )


def edgeworth_coverage(skewness: float, kurtosis: float, n: int, level: float = 0.95) -> float:
    """Two-sided coverage of the normal interval of a studentised mean, to order 1/n.

    `P(|T| <= z) = 2 Phi(z) - 1 + (2 / n) q2(z) phi(z)` with
    `q2(z) = z [k (z^2 - 3) / 12 - g^2 (z^4 + 2 z^2 - 3) / 18 - (z^2 + 3) / 4]`, `g` the
    skewness and `k` the excess kurtosis of one term (Hall, *The Bootstrap and Edgeworth
    Expansion*, 1992, section 2.6).
    """
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    q2 = z * (
        kurtosis * (z * z - 3.0) / 12.0
        - skewness**2 * (z**4 + 2.0 * z * z - 3.0) / 18.0
        - (z * z + 3.0) / 4.0
    )
    return level + 2.0 / n * q2 * float(stats.norm.pdf(z))


def _coverage(ope_runs: OpeRuns, target: str, estimator: str) -> float:
    truth = ope_runs.truth[target]
    key = (target, estimator)
    lower, upper, values = ope_runs.lower[key], ope_runs.upper[key], ope_runs.value[key]
    coverage = float(np.mean((lower <= truth) & (truth <= upper)))
    bias = float(np.mean(values) - truth)
    print(
        f"{target} {estimator}: V={truth:.5f} coverage={coverage:.3f} "
        f"(V below: {np.mean(truth < lower):.3f}, above: {np.mean(truth > upper):.3f}) "
        f"bias={bias:+.2e} sd={np.std(values, ddof=1):.2e} "
        f"predicted={ope_runs.predicted_coverage[target]:.3f}"
    )
    mc_se = float(np.std(values, ddof=1)) / math.sqrt(values.shape[0])
    assert abs(bias) <= 4.0 * mc_se
    return coverage


@pytest.mark.parametrize("estimator", ["IPS", "SNIPS", "DR"])
def test_ope_normal_intervals_cover_the_value_of_uniform(ope_runs: OpeRuns, estimator: str) -> None:
    coverage = _coverage(ope_runs, "uniform", estimator)
    assert COVERAGE_BAND[0] <= coverage <= COVERAGE_BAND[1]


@pytest.mark.parametrize("estimator", ["IPS", "SNIPS", "DR"])
def test_ope_coverage_for_heavy_weights_is_what_theory_predicts(
    ope_runs: OpeRuns, estimator: str
) -> None:
    coverage = _coverage(ope_runs, "oracle_mixed", estimator)
    predicted = ope_runs.predicted_coverage["oracle_mixed"]
    mc_se = math.sqrt(predicted * (1.0 - predicted) / OPE_REPLICATES)
    assert abs(coverage - predicted) <= 3.0 * mc_se
    assert coverage >= 0.92


@pytest.fixture(scope="module")
def large_ope_coverage(pool: SituationPool) -> dict[str, float]:
    """Coverage of the oracle-mixed target's intervals at n = 20,000, by estimator."""
    logging = _logging(pool)
    policy = _targets(pool)["oracle_mixed"]
    truth = pool.value(policy)
    rng = np.random.default_rng(POOL_SEED + 5)
    rows = np.arange(LARGE_OPE_DECISIONS)
    hits = {"IPS": 0, "SNIPS": 0, "DR": 0}
    chunk = 50
    for start in range(0, OPE_REPLICATES, chunk):
        # in chunks: the whole (1,000 x 20,000) log would hold about 640 MB at once
        size = min(chunk, OPE_REPLICATES - start)
        logs = logged.simulate(pool, [logging], (size, LARGE_OPE_DECISIONS), rng)
        for r in range(size):
            context, arm = logs.context[r], logs.arm[r]
            reward, propensity = logs.reward[r], logs.propensity[r]
            fitted = logged.cross_fitted_ridge(pool, context, arm, reward, ridge=RIDGE)
            at = policy[context]
            probability = at[rows, arm]
            estimates = {
                "IPS": ope.ips(reward, propensity, probability),
                "SNIPS": ope.snips(reward, propensity, probability),
                "DR": ope.dr(
                    reward, propensity, probability, fitted[rows, arm], (at * fitted).sum(axis=1)
                ),
            }
            for name, estimate in estimates.items():
                hits[name] += int(estimate.lower <= truth <= estimate.upper)
    coverage = {name: count / OPE_REPLICATES for name, count in hits.items()}
    print(f"oracle_mixed at n = {LARGE_OPE_DECISIONS}: coverage {coverage}")
    return coverage


@pytest.mark.parametrize("estimator", ["IPS", "SNIPS", "DR"])
def test_ope_normal_intervals_cover_the_value_of_oracle_mixed_at_20000(
    large_ope_coverage: dict[str, float], estimator: str
) -> None:
    assert COVERAGE_BAND[0] <= large_ope_coverage[estimator] <= COVERAGE_BAND[1]


@pytest.mark.parametrize("target", ["uniform", "oracle_mixed"])
def test_dr_with_a_good_model_has_lower_mse_than_ips(ope_runs: OpeRuns, target: str) -> None:
    truth = ope_runs.truth[target]
    mse = {e: float(np.mean((ope_runs.value[target, e] - truth) ** 2)) for e in ("IPS", "DR_good")}
    exact = {e: ope_runs.variance[target, e] / OPE_DECISIONS for e in mse}
    ratio, exact_ratio = mse["DR_good"] / mse["IPS"], exact["DR_good"] / exact["IPS"]
    print(f"{target}: mse={mse} exact={exact} ratio={ratio:.3f} exact ratio={exact_ratio:.3f}")
    assert ratio < 1.0
    assert abs(ratio - exact_ratio) <= 0.05
    for e in mse:
        assert mse[e] == pytest.approx(exact[e], rel=0.20)


# ---------------------------------------------------------------------------------------------
# lift, A-A and sample-ratio mismatch


@dataclass(frozen=True)
class Experiments:
    """Per experiment (rows) and group (columns: holdout, A-B, bandit): sufficient
    statistics of the reward, group sizes among the first `SRM_DECISIONS` decisions, and the
    exact value of each group's policy."""

    n: npt.NDArray[np.int64]
    total: FloatArray
    squares: FloatArray
    first_counts: npt.NDArray[np.int64]
    value: tuple[float, ...]


def _group_policies(pool: SituationPool) -> list[FloatArray]:
    return [
        logged.fixed_policy(pool, "no_offer"),
        logged.ab_uniform_policy(pool),
        _logging(pool),
    ]


@pytest.fixture(scope="module")
def experiments(pool: SituationPool) -> Experiments:
    policies = _group_policies(pool)
    k = len(policies)
    rng = np.random.default_rng(POOL_SEED + 3)
    n = np.zeros((LIFT_REPLICATES, k), dtype=np.int64)
    total = np.zeros((LIFT_REPLICATES, k))
    squares = np.zeros((LIFT_REPLICATES, k))
    first = np.zeros((LIFT_REPLICATES, k), dtype=np.int64)
    chunk = 40
    for start in range(0, LIFT_REPLICATES, chunk):
        size = min(chunk, LIFT_REPLICATES - start)
        group, reward = logged.simulate_rewards(
            pool, policies, (size, LIFT_DECISIONS), rng, shares=LIFT_SHARES
        )
        cell = (np.arange(size)[:, None] * k + group).ravel()
        n[start : start + size] = np.bincount(cell, minlength=size * k).reshape(size, k)
        total[start : start + size] = np.bincount(
            cell, weights=reward.ravel(), minlength=size * k
        ).reshape(size, k)
        squares[start : start + size] = np.bincount(
            cell, weights=np.square(reward).ravel(), minlength=size * k
        ).reshape(size, k)
        head = (np.arange(size)[:, None] * k + group[:, :SRM_DECISIONS]).ravel()
        first[start : start + size] = np.bincount(head, minlength=size * k).reshape(size, k)
    return Experiments(n, total, squares, first, tuple(pool.value(p) for p in policies))


def _stats(experiments: Experiments, r: int, g: int) -> SufficientStats:
    return SufficientStats(
        int(experiments.n[r, g]), float(experiments.total[r, g]), float(experiments.squares[r, g])
    )


@pytest.mark.parametrize(("treatment", "label"), [(2, "bandit"), (1, "ab")])
def test_lift_intervals_cover_the_true_lift(
    experiments: Experiments, treatment: int, label: str
) -> None:
    holdout = experiments.value[0]
    true_absolute = experiments.value[treatment] - holdout
    true_relative = experiments.value[treatment] / holdout - 1.0
    absolute_hits = relative_hits = 0
    for r in range(LIFT_REPLICATES):
        t, c = _stats(experiments, r, treatment), _stats(experiments, r, 0)
        a, b = absolute_lift(t, c), relative_lift(t, c)
        absolute_hits += a.lower <= true_absolute <= a.upper
        relative_hits += b.lower <= true_relative <= b.upper
    absolute_coverage = absolute_hits / LIFT_REPLICATES
    relative_coverage = relative_hits / LIFT_REPLICATES
    print(
        f"{label} vs holdout: lift={true_absolute:.5f} ({true_relative:.3f} relative) "
        f"coverage absolute={absolute_coverage:.3f} relative={relative_coverage:.3f}"
    )
    assert COVERAGE_BAND[0] <= absolute_coverage <= COVERAGE_BAND[1]
    assert COVERAGE_BAND[0] <= relative_coverage <= COVERAGE_BAND[1]


def test_a_a_split_flags_at_the_nominal_rate(pool: SituationPool) -> None:
    bandit = _logging(pool)
    group, reward = logged.simulate_rewards(
        pool,
        [bandit, bandit],
        (AA_REPLICATES, AA_DECISIONS),
        np.random.default_rng(POOL_SEED + 5),
        shares=(0.5, 0.5),
    )
    flagged = 0
    for r in range(AA_REPLICATES):
        first, second = reward[r][group[r] == 0], reward[r][group[r] == 1]
        lift = absolute_lift(
            SufficientStats.from_values(second), SufficientStats.from_values(first)
        )
        reference = stats.ttest_ind(second, first, equal_var=False)
        assert lift.p_value == pytest.approx(float(reference.pvalue), rel=1e-8)
        flagged += lift.p_value < 0.05
    rate = flagged / AA_REPLICATES
    print(f"A-A: p < 0.05 in {rate:.3f} of {AA_REPLICATES}")
    assert FLAG_BAND[0] <= rate <= FLAG_BAND[1]


def test_srm_flags_clean_data_at_the_nominal_rate(experiments: Experiments) -> None:
    expected = np.asarray(LIFT_SHARES)
    at_5 = at_default = 0
    for counts in experiments.n:
        result = sample_ratio_mismatch(counts.tolist(), LIFT_SHARES, alpha=0.05)
        reference = stats.chisquare(counts, counts.sum() * expected)
        assert result.statistic == pytest.approx(float(reference.statistic), rel=1e-10)
        assert result.p_value == pytest.approx(float(reference.pvalue), rel=1e-10)
        at_5 += result.flagged
        at_default += sample_ratio_mismatch(counts.tolist(), LIFT_SHARES).flagged
    print(f"SRM clean: {at_5 / LIFT_REPLICATES:.3f} at 0.05, {at_default} at 0.001")
    assert FLAG_BAND[0] <= at_5 / LIFT_REPLICATES <= FLAG_BAND[1]
    assert at_default <= 5


def test_srm_fires_when_a_tenth_of_the_bandit_logs_are_dropped(
    experiments: Experiments,
) -> None:
    flagged = 0
    for counts in experiments.first_counts:
        kept = counts.copy()
        kept[2] -= round(0.1 * counts[2])
        result = sample_ratio_mismatch(kept.tolist(), LIFT_SHARES)
        reference = stats.chisquare(kept, kept.sum() * np.asarray(LIFT_SHARES))
        assert result.statistic == pytest.approx(float(reference.statistic), rel=1e-10)
        flagged += result.flagged
    rate = flagged / LIFT_REPLICATES
    print(f"SRM with 10% of the bandit logs dropped: flagged in {rate:.3f}")
    assert rate >= 0.99


def test_arm_level_srm_on_clean_bandit_logs_flags_at_the_nominal_rate(ope_runs: OpeRuns) -> None:
    shares = np.asarray(ope_runs.arm_shares)
    flagged = 0
    for counts in ope_runs.arm_counts:
        result = sample_ratio_mismatch(counts.tolist(), ope_runs.arm_shares, alpha=0.05)
        reference = stats.chisquare(counts, counts.sum() * shares)
        assert result.statistic == pytest.approx(float(reference.statistic), rel=1e-10)
        flagged += result.flagged
    rate = flagged / OPE_REPLICATES
    print(f"arm-level SRM clean: {rate:.3f} at 0.05")
    assert FLAG_BAND[0] <= rate <= FLAG_BAND[1]


def test_arm_level_srm_fires_when_a_tenth_of_the_top_arm_logs_are_dropped(
    ope_runs: OpeRuns,
) -> None:
    shares = np.asarray(ope_runs.arm_shares)
    top = int(np.argmax(shares))
    per = SRM_DECISIONS // OPE_DECISIONS
    experiments = ope_runs.arm_counts.reshape(-1, per, shares.shape[0]).sum(axis=1)
    kept = experiments.copy()
    kept[:, top] -= np.round(0.1 * experiments[:, top]).astype(np.int64)
    flagged = sum(sample_ratio_mismatch(row.tolist(), ope_runs.arm_shares).flagged for row in kept)
    # Exact power of the chi-square test at the expected counts (noncentral chi-square).
    design = SRM_DECISIONS * shares
    design[top] *= 0.9
    expected = design.sum() * shares
    noncentrality = float(((design - expected) ** 2 / expected).sum())
    df = shares.shape[0] - 1
    power = float(stats.ncx2.sf(stats.chi2.isf(0.001, df), df, noncentrality))
    rate = flagged / experiments.shape[0]
    se = math.sqrt(power * (1.0 - power) / experiments.shape[0])
    print(f"arm-level SRM, 10% of the top arm dropped: {rate:.3f} flagged, power {power:.3f}")
    assert rate >= power - 3.0 * se
