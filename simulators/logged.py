"""Fast logged bandit data from the simulated bank, with the exact value of every policy.

The per-situation ground truth (`simulators.response`) is exact but computed one situation at
a time. For statistics over many simulated experiments, a `SituationPool` computes it ONCE for
`N` situations of the simulated world (customers of a `World` on their visits, without
earlier exposures): for every arm `a` and situation `s_i`, whether the demo experiment's
eligibility rules allow the arm, the exact expected reward `E[R | s_i, a]` and the exact law
of the reward. Logged data are then drawn with numpy alone:

* context: a situation index `i ~ Uniform{0..N-1}` (i.i.d., with replacement);
* action: `a ~ mu(. | s_i)`, the logging policy, with its propensity `mu(a | s_i)` logged;
* reward: `R ~ law(s_i, a)`.

So the pool IS the context distribution, and the value of a policy `pi` (an `N x K` array of
probabilities over the pool's arms) is exactly

    V(pi) = (1 / N) sum_i sum_a pi(a | s_i) E[R | s_i, a],

the same quantity as `simulators.truth.policy_value` over the pool's situations. An estimator
computed on `n` logged decisions targets `V(pi)`, the expectation over the context
distribution, not the value conditional on the `n` contexts drawn.

Reward law. With `max` aggregation and positive event weights, the reward is the default
reward when no weighted event falls inside the window, and otherwise the largest weight
among the events that do. For each distinct weight `v`,

    P(R >= v) = E[R_v],   R_v the reward of the horizon with weight 1 on every event whose
                          weight is at least `v`, 0 default and `max` aggregation,

which `simulators.response.expected_reward_from` computes in closed form (organic conversions
included). These tail probabilities give the categorical law of `R` exactly. Other
aggregations are not supported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bandit_platform.demo import demo_config
from bandit_platform.domain.config import (
    CompiledExperiment,
    RewardHorizon,
    validate_config,
)
from simulators.population import PAGES
from simulators.response import (
    DEFAULT_MODEL,
    EVENT_VALUE,
    ResponseModel,
    Situation,
    arm_keys,
    expected_reward_from,
    response_probabilities,
)
from simulators.truth import eligible_arm_keys
from simulators.world import World

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Rows drawn per chunk when sampling actions (bounds memory at about 8 K bytes per row).
_CHUNK = 200_000


# ---------------------------------------------------------------------------------------------
# Reward law
# ---------------------------------------------------------------------------------------------


def reward_levels(horizon: RewardHorizon) -> FloatArray:
    """The distinct positive values an event can contribute, ascending.

    Raises:
        ValueError: unless the horizon aggregates with `max` and every weight is positive.
    """
    if horizon.aggregation != "max":
        raise ValueError(
            f"the exact reward law needs aggregation 'max', not {horizon.aggregation!r}"
        )
    weights = list(horizon.event_weights.values())
    if any(not (math.isfinite(w) and w > 0.0) for w in weights):
        raise ValueError("the exact reward law needs positive, finite event weights")
    return np.asarray(sorted({w * EVENT_VALUE for w in weights}), dtype=np.float64)


def _indicator_horizons(horizon: RewardHorizon, levels: FloatArray) -> list[RewardHorizon]:
    """For each level `v`, the horizon whose expected reward is `P(R >= v)`."""
    return [
        RewardHorizon(
            name=f"{horizon.name}-at-least-{index}",
            event_weights={
                event: 1.0
                for event, weight in horizon.event_weights.items()
                if weight * EVENT_VALUE >= level
            },
            attribution_window_hours=horizon.attribution_window_hours,
            reward_wait_hours=horizon.reward_wait_hours,
            default_reward=0.0,
            aggregation="max",
        )
        for index, level in enumerate(levels.tolist())
    ]


# ---------------------------------------------------------------------------------------------
# The pool
# ---------------------------------------------------------------------------------------------

#: Names of the columns of `SituationPool.features` (standardised over the pool).
FEATURE_NAMES: tuple[str, ...] = (
    "log_balance",
    "log_travel_spend",
    "log_revolving_balance",
    "overdrawn",
    "volatility",
    "credit_band",
    "income_band",
    *(f"viewed_{page}" for page in PAGES[:5]),
    "trigger_paycheck_deposit",
    "trigger_large_purchase",
    "trigger_low_balance",
)

_BANDS = {
    "poor": 0,
    "fair": 1,
    "good": 2,
    "very_good": 3,
    "excellent": 4,
    "low": 0,
    "lower_middle": 1,
    "middle": 2,
    "upper_middle": 3,
    "high": 4,
}


def _raw_features(situation: Situation) -> list[float]:
    customer = situation.customer
    cash, profile = customer.cash_flow, customer.profile
    pages = set(customer.behavior.pages_viewed_7d)
    return [
        math.log1p(max(cash.balance, 0.0)),
        math.log1p(cash.travel_spend_monthly),
        math.log1p(cash.revolving_balance),
        float(cash.days_overdrawn_90d > 0),
        cash.volatility,
        float(_BANDS[profile.credit_score_band]),
        float(_BANDS[profile.income_band]),
        *(float(page in pages) for page in PAGES[:5]),
        float(situation.trigger == "paycheck_deposit"),
        float(situation.trigger == "large_purchase"),
        float(situation.trigger == "low_balance"),
    ]


@dataclass(frozen=True, eq=False)
class SituationPool:
    """Situations with the exact law of the reward of every arm (`N` situations, `K` arms).

    Attributes:
        situations: the situations, in pool order.
        arms: arm keys (`offer/variant`, then `no_offer`), the columns of every array.
        eligible: `(N, K)`, whether the experiment may show the arm in the situation.
        expected: `(N, K)`, the exact `E[R | s, a]` (also for ineligible arms).
        levels: `(L,)`, the positive reward levels, ascending.
        tail: `(N, K, L)`, `P(R >= levels[l] | s, a)` (non-increasing in `l`).
        default_reward: the reward when no weighted event falls inside the window.
        features: `(N, F)`, observable context features (`FEATURE_NAMES`), standardised.
        horizon: the reward horizon.
        seed: the world's seed.
    """

    situations: tuple[Situation, ...]
    arms: tuple[str, ...]
    eligible: BoolArray
    expected: FloatArray
    levels: FloatArray
    tail: FloatArray
    default_reward: float
    features: FloatArray
    horizon: RewardHorizon
    seed: int

    def __len__(self) -> int:
        return len(self.situations)

    @property
    def second_moment(self) -> FloatArray:
        """`(N, K)`, the exact `E[R^2 | s, a]`."""
        return self._moment(2)

    def _moment(self, power: int) -> FloatArray:
        mass = self.tail - np.concatenate(
            [self.tail[:, :, 1:], np.zeros_like(self.tail[:, :, :1])], axis=2
        )
        none = 1.0 - self.tail[:, :, 0]
        result: FloatArray = none * self.default_reward**power + (mass * self.levels**power).sum(
            axis=2
        )
        return result

    def arm_index(self, arm: str) -> int:
        """The column of an arm key.

        Raises:
            ValueError: for an arm the pool does not have.
        """
        return self.arms.index(arm)

    def value(self, policy: FloatArray) -> float:
        """The exact value `V(pi) = mean_i sum_a pi(a | s_i) E[R | s_i, a]` of an `(N, K)` policy.

        Raises:
            ValueError: for a policy that is not a distribution over eligible arms.
        """
        check_policy(self, policy)
        return float(np.mean(np.sum(policy * self.expected, axis=1)))


def build_pool(
    seed: int,
    *,
    customers: int = 2000,
    days: int = 3,
    size: int | None = None,
    horizon: RewardHorizon | None = None,
    experiment: CompiledExperiment | None = None,
    model: ResponseModel = DEFAULT_MODEL,
) -> SituationPool:
    """The situations of every visit of a `World(customers, seed, days)`, with their truth.

    Args:
        seed: the world's seed (and of the subsample when `size` is given).
        customers: customers in the world.
        days: days of visits.
        size: keep this many visits, drawn without replacement; all when None.
        horizon: reward horizon (default: the demo experiment's learning horizon).
        experiment: eligibility rules (default: the demo experiment's).
        model: the response model.

    Raises:
        ValueError: for a horizon without an exact reward law (see `reward_levels`), or
            fewer visits than `size`.
    """
    config = demo_config()
    horizon = horizon or config.reward.learning_horizon()
    compiled = experiment or validate_config(config)
    levels = reward_levels(horizon)
    indicators = _indicator_horizons(horizon, levels)

    world = World(customers, seed, days)
    visits = list(world.visits())
    if size is not None:
        if size > len(visits):
            raise ValueError(f"size {size} exceeds the {len(visits)} visits of the world")
        keep = np.sort(np.random.default_rng(seed).choice(len(visits), size, replace=False))
        visits = [visits[i] for i in keep.tolist()]
    situations: list[Situation] = []
    for day in sorted({v.day for v in visits}):
        todays = [v for v in visits if v.day == day]
        ids = sorted({v.customer_id for v in todays})
        states = {c.customer_id: c for c in world.customer_states(day, ids)}
        situations.extend(world.situation(v, customer=states[v.customer_id]) for v in todays)

    arms = tuple(arm_keys())
    n, k = len(situations), len(arms)
    eligible = np.zeros((n, k), dtype=np.bool_)
    expected = np.zeros((n, k))
    tail = np.zeros((n, k, levels.shape[0]))
    column = {arm: j for j, arm in enumerate(arms)}
    for i, situation in enumerate(situations):
        for arm in eligible_arm_keys(situation, compiled):
            eligible[i, column[arm]] = True
        for j, arm in enumerate(arms):
            probabilities = response_probabilities(situation, arm, model=model)
            expected[i, j] = expected_reward_from(probabilities, horizon)
            for level, indicator in enumerate(indicators):
                tail[i, j, level] = expected_reward_from(probabilities, indicator)
    raw = np.asarray([_raw_features(s) for s in situations], dtype=np.float64)
    spread = raw.std(axis=0)
    features = (raw - raw.mean(axis=0)) / np.where(spread > 0.0, spread, 1.0)
    return SituationPool(
        situations=tuple(situations),
        arms=arms,
        eligible=eligible,
        expected=expected,
        levels=levels,
        tail=tail,
        default_reward=horizon.default_reward,
        features=features,
        horizon=horizon,
        seed=seed,
    )


# ---------------------------------------------------------------------------------------------
# Policies as (N, K) arrays
# ---------------------------------------------------------------------------------------------


def check_policy(pool: SituationPool, policy: FloatArray) -> None:
    """Check an `(N, K)` policy: finite, non-negative, rows summing to 1, eligible arms only.

    Raises:
        ValueError: naming what is wrong.
    """
    if policy.shape != pool.expected.shape:
        raise ValueError(f"policy has shape {policy.shape}, the pool {pool.expected.shape}")
    if not np.all(np.isfinite(policy)) or np.any(policy < 0.0):
        raise ValueError("policy probabilities must be finite and non-negative")
    if not np.allclose(policy.sum(axis=1), 1.0, rtol=0.0, atol=1e-9):
        raise ValueError("policy rows must sum to 1")
    if np.any(policy[~pool.eligible] > 0.0):
        raise ValueError("policy gives probability to an ineligible arm")


def uniform_policy(pool: SituationPool) -> FloatArray:
    """Uniform over each situation's eligible arms (`simulators.truth.uniform_policy`)."""
    counts = pool.eligible.sum(axis=1, keepdims=True)
    result: FloatArray = pool.eligible / counts
    return result


def fixed_policy(pool: SituationPool, arm: str) -> FloatArray:
    """Always `arm` (for example `no_offer`, the holdout).

    Raises:
        ValueError: when the arm is not eligible in every situation.
    """
    j = pool.arm_index(arm)
    if not np.all(pool.eligible[:, j]):
        raise ValueError(f"arm {arm!r} is not eligible in every situation")
    result = np.zeros(pool.expected.shape)
    result[:, j] = 1.0
    return result


def ab_uniform_policy(pool: SituationPool) -> FloatArray:
    """The platform's uniform A-B arm: uniform over the eligible offers (`no_offer` counts as
    one), then over each offer's eligible variants
    (`simulators.truth.ab_uniform_distribution`)."""
    offers = sorted({arm.split("/", 1)[0] for arm in pool.arms})
    offer_of = np.asarray([offers.index(arm.split("/", 1)[0]) for arm in pool.arms])
    member = (offer_of[:, None] == np.arange(len(offers))[None, :]).astype(np.float64)
    variants = pool.eligible.astype(np.float64) @ member
    offered = (variants > 0.0).sum(axis=1, keepdims=True)
    per_arm = variants[:, offer_of]
    result: FloatArray = np.where(pool.eligible, 1.0 / (offered * np.maximum(per_arm, 1.0)), 0.0)
    return result


def greedy_policy(pool: SituationPool, scores: FloatArray) -> FloatArray:
    """All mass on the eligible arm with the highest score (the first one on ties)."""
    masked = np.where(pool.eligible, scores, -np.inf)
    best = np.argmax(masked, axis=1)
    result = np.zeros(pool.expected.shape)
    result[np.arange(len(pool)), best] = 1.0
    return result


def oracle_policy(pool: SituationPool) -> FloatArray:
    """The oracle: the eligible arm with the highest exact expected reward
    (`simulators.truth.oracle_policy`)."""
    return greedy_policy(pool, pool.expected)


def incumbent_policy(pool: SituationPool) -> FloatArray:
    """One ranking for everyone: the eligible arm whose pool-average expected reward is highest.

    A non-personalised policy, as a rule-based incumbent would be.
    """
    average = pool.expected.mean(axis=0)
    return greedy_policy(pool, np.broadcast_to(average, pool.expected.shape))


def mixture(first: FloatArray, second: FloatArray, weight: float) -> FloatArray:
    """`(1 - weight) first + weight second` (for example the oracle mixed with uniform).

    Raises:
        ValueError: for a weight outside [0, 1].
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    result: FloatArray = (1.0 - weight) * first + weight * second
    return result


def epsilon_greedy(pool: SituationPool, greedy: FloatArray, epsilon: float) -> FloatArray:
    """`(1 - epsilon) greedy + epsilon uniform`: every eligible arm has at least the floor
    `epsilon / (number of eligible arms)`."""
    return mixture(greedy, uniform_policy(pool), epsilon)


# ---------------------------------------------------------------------------------------------
# Logged decisions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LoggedDecisions:
    """Logged decisions; every array has the shape asked for (for example replicates x n).

    Attributes:
        context: pool index of the decision's situation.
        group: index of the group (of the policies passed) that decided.
        arm: index of the arm shown (a column of the pool's arrays).
        propensity: the deciding policy's probability of the arm shown.
        reward: the realised reward.
    """

    context: IntArray
    group: IntArray
    arm: IntArray
    propensity: FloatArray
    reward: FloatArray


def _draw_arms(cumulative: FloatArray, rows: IntArray, uniforms: FloatArray) -> IntArray:
    arms = np.empty(rows.shape[0], dtype=np.int64)
    for start in range(0, rows.shape[0], _CHUNK):
        stop = start + _CHUNK
        arms[start:stop] = (uniforms[start:stop, None] >= cumulative[rows[start:stop]]).sum(axis=1)
    return arms


def simulate(
    pool: SituationPool,
    policies: Sequence[FloatArray],
    shape: int | tuple[int, ...],
    rng: np.random.Generator,
    *,
    shares: Sequence[float] | None = None,
) -> LoggedDecisions:
    """Draw logged decisions: context, group, action from the group's policy, reward.

    Each decision independently: `i ~ Uniform{0..N-1}`, group `g ~ Categorical(shares)`
    (group 0 when there is one policy), arm `a ~ policies[g](. | s_i)`, reward from the exact
    law (`u ~ U(0, 1)`, `R = levels[l]` for the largest `l` with `u < P(R >= levels[l])`, the
    default reward when there is none).

    Args:
        pool: the situations and their truth.
        policies: one `(N, K)` policy per group.
        shape: shape of the output arrays.
        rng: the random generator (the only source of randomness).
        shares: assignment probabilities of the groups (normalised); required with several
            policies.

    Raises:
        ValueError: for an invalid policy or shares.
    """
    if not policies:
        raise ValueError("at least one policy is needed")
    for policy in policies:
        check_policy(pool, policy)
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    total = math.prod(dims)
    n, k = pool.expected.shape
    context = rng.integers(0, n, size=total)
    group = _draw_groups(len(policies), total, rng, shares)
    stacked = np.concatenate(list(policies), axis=0)
    cumulative = np.cumsum(stacked, axis=1)
    # Exactly 1 from the last arm with positive probability on, so that u < 1 never lands on
    # a trailing zero-probability arm through rounding.
    positive = stacked > 0.0
    last = k - 1 - np.argmax(positive[:, ::-1], axis=1)
    cumulative[np.arange(k)[None, :] >= last[:, None]] = 1.0
    rows = group * n + context
    arm = _draw_arms(cumulative, rows, rng.random(total))
    propensity = stacked[rows, arm]
    tail = pool.tail[context, arm]
    level = (rng.random(total)[:, None] < tail).sum(axis=1)
    values = np.concatenate([[pool.default_reward], pool.levels])
    reward = values[level]
    return LoggedDecisions(
        context=context.reshape(dims),
        group=group.reshape(dims),
        arm=arm.reshape(dims),
        propensity=propensity.reshape(dims),
        reward=reward.reshape(dims),
    )


def reward_tail(pool: SituationPool, policy: FloatArray) -> FloatArray:
    """`(N, L)`, `P(R >= levels[l] | s_i)` when the arm is drawn from `policy`:
    `sum_a pi(a | s_i) P(R >= levels[l] | s_i, a)`."""
    check_policy(pool, policy)
    result: FloatArray = np.einsum("nk,nkl->nl", policy, pool.tail)
    return result


def simulate_rewards(
    pool: SituationPool,
    policies: Sequence[FloatArray],
    shape: int | tuple[int, ...],
    rng: np.random.Generator,
    *,
    shares: Sequence[float] | None = None,
) -> tuple[IntArray, FloatArray]:
    """Groups and rewards only, `(group, reward)`, each of the given shape.

    The same law as `simulate` with the arm summed out: given the context and the group,
    the reward follows `reward_tail` of the group's policy. For lift, A-A and sample-ratio
    checks, which never look at the arm, it is several times faster.

    Raises:
        ValueError: for an invalid policy or shares.
    """
    if not policies:
        raise ValueError("at least one policy is needed")
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    total = math.prod(dims)
    n = len(pool)
    tails = np.concatenate([reward_tail(pool, policy) for policy in policies], axis=0)
    context = rng.integers(0, n, size=total)
    group = _draw_groups(len(policies), total, rng, shares)
    level = (rng.random(total)[:, None] < tails[group * n + context]).sum(axis=1)
    values = np.concatenate([[pool.default_reward], pool.levels])
    return group.reshape(dims), values[level].reshape(dims)


def _draw_groups(
    count: int, total: int, rng: np.random.Generator, shares: Sequence[float] | None
) -> IntArray:
    if count == 1:
        return np.zeros(total, dtype=np.int64)
    if shares is None or len(shares) != count:
        raise ValueError("shares: one share per policy is needed")
    p = np.asarray(shares, dtype=np.float64)
    if not (np.all(np.isfinite(p)) and np.all(p > 0.0)):
        raise ValueError("shares must be positive and finite")
    groups: IntArray = rng.choice(count, size=total, p=p / p.sum()).astype(np.int64)
    return groups


# ---------------------------------------------------------------------------------------------
# Exact sampling variances (for study design and tests)
# ---------------------------------------------------------------------------------------------


def ips_term_variance(pool: SituationPool, logging: FloatArray, target: FloatArray) -> float:
    """Exact variance of one IPS term `w R`, `w = pi(a|s) / mu(a|s)`, under the pool's law.

    `E[(w R)^2] = mean_i sum_a pi(a|s_i)^2 / mu(a|s_i) E[R^2 | s_i, a]`, minus `V(pi)^2`.
    The IPS estimate on `n` decisions has variance this over `n`.
    """
    check_policy(pool, logging)
    check_policy(pool, target)
    ratio = np.divide(target**2, logging, out=np.zeros_like(target), where=logging > 0.0)
    second = float(np.mean(np.sum(ratio * pool.second_moment, axis=1)))
    return second - pool.value(target) ** 2


def ips_term_moments(
    pool: SituationPool, logging: FloatArray, target: FloatArray
) -> tuple[float, float, float, float]:
    """Exact mean, variance, skewness and excess kurtosis of one IPS term `w R`.

    The term's law is discrete: situation `i` with probability `1 / N`, arm `a` with
    `mu(a | s_i)`, reward level `v` with its exact probability; its mean is `V(pi)`. Heavy
    importance weights and rare rewards make the term very skewed, which is what limits the
    normal interval's coverage at moderate `n` (see Hall, *The Bootstrap and Edgeworth
    Expansion*, 1992, section 2.6, for the coverage of the studentised mean).
    """
    check_policy(pool, logging)
    check_policy(pool, target)
    w = np.divide(target, logging, out=np.zeros_like(target), where=logging > 0.0)
    values = np.concatenate([[pool.default_reward], pool.levels])
    mass = np.concatenate(
        [1.0 - pool.tail[:, :, :1], -np.diff(pool.tail, axis=2), pool.tail[:, :, -1:]], axis=2
    )
    probability = logging[:, :, None] * mass / len(pool)
    term = w[:, :, None] * values[None, None, :]
    mean = float((probability * term).sum())
    centred = term - mean
    variance = float((probability * centred**2).sum())
    skewness = float((probability * centred**3).sum()) / variance**1.5
    kurtosis = float((probability * centred**4).sum()) / variance**2 - 3.0
    return mean, variance, skewness, kurtosis


def dr_term_variance(
    pool: SituationPool, logging: FloatArray, target: FloatArray, model: FloatArray
) -> float:
    """Exact variance of one DR term `q_pi(s) + w (R - q(s, a))` for a fixed reward model.

    With `m = E[R | s, a]`, `m2 = E[R^2 | s, a]` and `q_pi(s) = sum_a pi(a|s) q(s, a)`:
    `E[term^2] = mean_i sum_a mu (q_pi^2 + 2 q_pi w (m - q) + w^2 (m2 - 2 m q + q^2))`,
    minus `V(pi)^2` (DR is unbiased for any fixed model). The DR estimate on `n` decisions
    with a model fitted elsewhere has variance this over `n`.
    """
    check_policy(pool, logging)
    check_policy(pool, target)
    m, m2 = pool.expected, pool.second_moment
    q_pi = np.sum(target * model, axis=1, keepdims=True)
    w = np.divide(target, logging, out=np.zeros_like(target), where=logging > 0.0)
    inner = q_pi**2 + 2.0 * q_pi * w * (m - model) + w**2 * (m2 - 2.0 * m * model + model**2)
    second = float(np.mean(np.sum(logging * inner, axis=1)))
    return second - pool.value(target) ** 2


# ---------------------------------------------------------------------------------------------
# A cross-fitted reward model
# ---------------------------------------------------------------------------------------------


def ridge_per_arm(
    features: FloatArray, arms: IntArray, rewards: FloatArray, n_arms: int, ridge: float
) -> FloatArray:
    """Coefficients `(K, F + 1)` of one ridge regression of the reward per arm.

    Per arm `a`, `beta_a = (X_a' X_a + ridge I)^-1 X_a' r_a` on the decisions that showed
    `a`, with an intercept column (penalised too, so an arm never shown predicts 0).
    """
    x = np.column_stack([np.ones(features.shape[0]), features])
    f = x.shape[1]
    order = np.argsort(arms, kind="stable")
    ends = np.cumsum(np.bincount(arms, minlength=n_arms))
    starts = np.concatenate([[0], ends[:-1]])
    x_sorted, r_sorted = x[order], rewards[order]
    gram = np.repeat(ridge * np.eye(f)[None], n_arms, axis=0)
    moments = np.zeros((n_arms, f))
    for arm, (start, end) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        block = x_sorted[start:end]
        # einsum without `optimize` stays out of BLAS, whose threads would only wait on each
        # other for matrices this small.
        gram[arm] += np.einsum("ni,nj->ij", block, block)
        moments[arm] = np.einsum("ni,n->i", block, r_sorted[start:end])
    solved = np.linalg.solve(gram, moments[:, :, None])[:, :, 0]
    return np.asarray(solved, dtype=np.float64)


def cross_fitted_ridge(
    pool: SituationPool,
    context: IntArray,
    arm: IntArray,
    reward: FloatArray,
    *,
    folds: int = 2,
    ridge: float = 1.0,
) -> FloatArray:
    """Out-of-fold predictions `(n, K)` of every arm's reward for n logged decisions.

    Decision `j` is in fold `j mod folds`; its predictions come from `ridge_per_arm` fitted on
    the other folds, so a prediction never uses the decision's own reward.
    """
    n = context.shape[0]
    fold = np.arange(n) % folds
    x_all = pool.features[context]
    design = np.column_stack([np.ones(n), x_all])
    k = len(pool.arms)
    predictions = np.empty((n, k))
    for held_out in range(folds):
        train = fold != held_out
        beta = ridge_per_arm(x_all[train], arm[train], reward[train], k, ridge)
        predictions[~train] = np.einsum("nf,kf->nk", design[~train], beta)
    return predictions
