"""Research baselines that serve the bandit group through the platform's decision path.

Each baseline implements `bandit_platform.service.decisions.BanditPolicy`: it returns one
probability per eligible arm, and the platform does the rest exactly as for its VW model
(eligibility, caps, consent, the sticky split, validation and the probability floor, the
seeded draw, logging the propensity). Three baselines:

* `LinUCB`: disjoint LinUCB (Li, Chu, Langford and Schapire, "A contextual-bandit approach to
  personalized news article recommendation", WWW 2010, algorithm 1);
* `LinearThompson`: linear Thompson sampling (Agrawal and Goyal, "Thompson sampling for
  contextual bandits with linear payoffs", ICML 2013), with Monte-Carlo propensities;
* `Oracle`: the simulator's ground truth, for the best any policy could do.

The learners learn only from what the platform logged: after each learner pass the runner
calls `learn`, which reads the rewards closed since the baseline's cursor (reward ids, like
the VW learner's) for learnable bandit-group decisions, and updates on the context, the
chosen arm and its reward. They never see the simulator's truth.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt
from sqlmodel import col, select

from bandit_platform.domain.config import NO_OFFER, Arm, CompiledExperiment, RewardHorizon
from bandit_platform.domain.decisions import Group
from bandit_platform.features.context import ContextValue, FlatContext, ValidatedContext
from bandit_platform.service.platform import Platform
from bandit_platform.storage import repositories
from bandit_platform.storage.tables import DecisionRow, RewardRow
from simulators.response import DEFAULT_MODEL, ResponseModel, Situation, expected_reward

FloatArray = npt.NDArray[np.float64]

#: Default number of hashed feature slots (slot 0 is the bias).
DEFAULT_DIMENSION: Final = 256
#: Default exploration weight of LinUCB and posterior scale of Thompson sampling, for rewards
#: of the demo's scale (mostly 0, a click 0.1, an application 0.5, a conversion 1). Seeded
#: 1,500-decision runs did about equally well with alpha in 0.05-0.2 and v in 0.03-0.1.
DEFAULT_ALPHA: Final = 0.1
DEFAULT_V: Final = 0.05
#: Default ridge penalty (A = ridge * I + sum x x').
DEFAULT_RIDGE: Final = 1.0
#: Default number of posterior draws behind Thompson sampling's propensities.
DEFAULT_DRAWS: Final = 128
#: Scores this close to the best (relative) are ties, whose probability is split evenly.
TIE_TOLERANCE: Final = 1e-12
#: Rewards read from the ledger per query.
READ_BATCH: Final = 5000
#: Mixed into Thompson sampling's seed, so that its stream differs from other generators
#: seeded with the same run seed.
THOMPSON_STREAM: Final = 0x7453


@lru_cache(maxsize=65_536)
def _slot(token: str, buckets: int) -> int:
    # crc32 is stable across processes, unlike the salted built-in `hash`.
    return 1 + zlib.crc32(token.encode("utf-8")) % buckets


def signed_log1p(value: float) -> float:
    """`sign(v) * log(1 + |v|)`: keeps 0, order and sign; tames balances in the tens of
    thousands to the scale of the indicators."""
    return math.copysign(math.log1p(abs(value)), value)


@dataclass(frozen=True)
class FeatureMap:
    """A validated context as a fixed-size vector `x` (the hashing trick, with a bias).

    `x[0] = 1` (bias). Every other feature goes to slot `1 + crc32(token) mod (d - 1)`, added
    to what is already there (features whose tokens collide share a slot):

    * a number `v` of field `f`: token `f`, value `sign(v) log(1 + |v|)` (`signed_log1p`);
    * a boolean: token `f`, value 1 or 0;
    * a category `c`: token `f=c`, value 1 (one-hot);
    * a list of categories: token `f=c` for each distinct item, value 1.

    Fields are read in sorted order, so the vector is a pure function of the context.

    Attributes:
        dimension: the vector's size `d` (at least 2). The demo's context has 67 distinct
            tokens; at the default 256, 10 of them share a slot with another (3 at 1,024),
            which costs little for a ridge regression (offline, 256 and 1,024 slots fitted
            the true rewards equally well) and keeps the O(d^2) updates cheap.
    """

    dimension: int = DEFAULT_DIMENSION

    def __post_init__(self) -> None:
        if self.dimension < 2:
            raise ValueError(f"dimension must be at least 2 (got {self.dimension})")

    def vector(self, values: Mapping[str, ContextValue]) -> FloatArray:
        """The feature vector of a flat context (`ValidatedContext.values`)."""
        x = np.zeros(self.dimension, dtype=np.float64)
        x[0] = 1.0
        buckets = self.dimension - 1
        for name in sorted(values):
            value = values[name]
            if isinstance(value, bool):
                x[_slot(name, buckets)] += 1.0 if value else 0.0
            elif isinstance(value, int | float):
                x[_slot(name, buckets)] += signed_log1p(float(value))
            elif isinstance(value, str):
                x[_slot(f"{name}={value}", buckets)] += 1.0
            else:
                for item in sorted(set(value)):
                    x[_slot(f"{name}={item}", buckets)] += 1.0
        return x


def one_on_best(scores: Sequence[float] | FloatArray) -> list[float]:
    """Probability 1 on the highest score, split evenly among ties (within `TIE_TOLERANCE`,
    relative)."""
    array = np.asarray(scores, dtype=np.float64)
    best = float(array.max())
    winners = array >= best - TIE_TOLERANCE * max(1.0, abs(best))
    share = 1.0 / int(winners.sum())
    return [share if w else 0.0 for w in winners]


@dataclass(frozen=True)
class ClosedReward:
    """A learnable bandit decision with its closed reward, as the platform logged it."""

    reward_id: int
    context: FlatContext
    arm: str
    reward: float
    propensity: float


def closed_rewards(
    platform: Platform, experiment_key: str, after: int, limit: int = READ_BATCH
) -> list[ClosedReward]:
    """Rewards of the experiment's learning horizon with id > `after`, in the order they
    closed, for learnable decisions of the bandit group.

    Like the VW learner (`service.learner.logged_example`), only the context fields that the
    experiment's current configuration allows and does not protect are kept.

    Raises:
        KeyError: no experiment with this key.
    """
    with platform.read_session() as session:
        experiment = repositories.experiment_by_key(session, experiment_key)
        if experiment is None:
            raise KeyError(experiment_key)
        current = platform.compiled(experiment)
        statement = (
            select(RewardRow, DecisionRow)
            .join(DecisionRow, col(DecisionRow.id) == col(RewardRow.decision_id))
            .where(
                col(RewardRow.experiment_id) == experiment.id,
                col(RewardRow.horizon) == current.config.reward.name,
                col(RewardRow.learnable).is_(True),
                col(DecisionRow.group) == Group.BANDIT.value,
                col(RewardRow.id) > after,
            )
            .order_by(col(RewardRow.id))
            .limit(limit)
        )
        rows = session.exec(statement).all()
    allowed, protected = current.context_fields, current.protected
    result = []
    for reward, decision in rows:
        assert reward.id is not None
        arm = (
            NO_OFFER
            if decision.chosen_offer is None
            else f"{decision.chosen_offer}/{decision.chosen_variant}"
        )
        context = {
            name: value
            for name, value in decision.context.items()
            if name in allowed and name not in protected
        }
        result.append(ClosedReward(reward.id, context, arm, reward.reward, decision.propensity))
    return result


class DisjointRidge:
    """One ridge regression of the reward on `x` per arm key, updated online.

    For arm `a`, after examples `(x_i, r_i)` where `a` was chosen:
    `A_a = ridge * I + sum x_i x_i'`, `b_a = sum r_i x_i`, `theta_a = A_a^-1 b_a`.
    `A_a^-1` is kept directly and updated with the Sherman-Morrison formula,
    `(A + x x')^-1 = A^-1 - (A^-1 x)(A^-1 x)' / (1 + x' A^-1 x)`, in O(d^2) per example
    instead of O(d^3). Arms never chosen have `theta = 0` and `A^-1 = I / ridge`.

    Plain (unweighted) online regression on the chosen arm's reward: the logged propensity
    is read but not used.

    Attributes:
        features: the feature map.
        ridge: the ridge penalty (> 0).
        cursor: the last reward id learned from.
        examples: how many examples were learned.
    """

    def __init__(self, *, ridge: float = DEFAULT_RIDGE, features: FeatureMap | None = None) -> None:
        if not (math.isfinite(ridge) and ridge > 0.0):
            raise ValueError(f"ridge must be a positive number (got {ridge})")
        self.ridge = ridge
        self.features = features if features is not None else FeatureMap()
        self.cursor = 0
        self.examples = 0
        self._inverse: dict[str, FloatArray] = {}
        self._weighted: dict[str, FloatArray] = {}
        self._theta: dict[str, FloatArray] = {}

    def update(self, values: Mapping[str, ContextValue], arm: str, reward: float) -> None:
        """Learn that `arm`, shown in the context `values`, earned `reward`."""
        self.update_vector(self.features.vector(values), arm, reward)

    def update_vector(self, x: FloatArray, arm: str, reward: float) -> None:
        """Learn one example given its feature vector (Sherman-Morrison update of A^-1)."""
        inverse = self._inverse.get(arm)
        if inverse is None:
            inverse = np.eye(self.features.dimension) / self.ridge
            self._inverse[arm] = inverse
            self._weighted[arm] = np.zeros(self.features.dimension)
        u = inverse @ x
        # outer(u, u) is exactly symmetric, so A^-1 stays symmetric to the last bit.
        inverse -= np.outer(u, u) / (1.0 + float(x @ u))
        self._weighted[arm] += reward * x
        self._theta.pop(arm, None)
        self.examples += 1

    def inverse(self, arm: str) -> FloatArray:
        """A copy of `A_a^-1`."""
        found = self._inverse.get(arm)
        if found is None:
            return np.eye(self.features.dimension) / self.ridge
        return found.copy()

    def theta(self, arm: str) -> FloatArray:
        """The ridge estimate `theta_a = A_a^-1 b_a` (a copy)."""
        return self._theta_of(arm).copy()

    def _theta_of(self, arm: str) -> FloatArray:
        theta = self._theta.get(arm)
        if theta is None:
            inverse = self._inverse.get(arm)
            if inverse is None:
                return np.zeros(self.features.dimension)
            theta = inverse @ self._weighted[arm]
            self._theta[arm] = theta
        return theta

    def moments(self, x: FloatArray, arms: Sequence[str]) -> tuple[FloatArray, FloatArray]:
        """Per arm: the estimate `theta_a . x` and the width `x' A_a^-1 x`."""
        means = np.empty(len(arms))
        widths = np.empty(len(arms))
        prior_width = float(x @ x) / self.ridge
        for index, arm in enumerate(arms):
            inverse = self._inverse.get(arm)
            if inverse is None:
                means[index], widths[index] = 0.0, prior_width
            else:
                means[index] = float(self._theta_of(arm) @ x)
                widths[index] = max(float(x @ inverse @ x), 0.0)
        return means, widths

    def learn(self, platform: Platform, experiment_key: str) -> int:
        """Learn every reward closed since `cursor` (see `closed_rewards`); returns how many."""
        learned = 0
        while True:
            batch = closed_rewards(platform, experiment_key, self.cursor)
            for example in batch:
                self.update(example.context, example.arm, example.reward)
                self.cursor = example.reward_id
            learned += len(batch)
            if len(batch) < READ_BATCH:
                return learned


class LinUCB(DisjointRidge):
    """Disjoint LinUCB (Li et al. 2010, algorithm 1), deterministic.

    Score of arm `a` for context `x`: `theta_a . x + alpha * sqrt(x' A_a^-1 x)` (see
    `DisjointRidge`). Probability 1 on the highest score, split evenly among ties; the
    platform's probability floor then mixes in the only exploration that is random, so
    every logged propensity is positive.
    """

    def __init__(
        self,
        *,
        alpha: float = DEFAULT_ALPHA,
        ridge: float = DEFAULT_RIDGE,
        features: FeatureMap | None = None,
    ) -> None:
        if not (math.isfinite(alpha) and alpha >= 0.0):
            raise ValueError(f"alpha must be a non-negative number (got {alpha})")
        super().__init__(ridge=ridge, features=features)
        self.alpha = alpha
        self.name = "linucb"

    def scores(self, values: Mapping[str, ContextValue], arms: Sequence[str]) -> FloatArray:
        """The upper confidence bound of every arm."""
        means, widths = self.moments(self.features.vector(values), arms)
        result: FloatArray = means + self.alpha * np.sqrt(widths)
        return result

    def probabilities(
        self, compiled: CompiledExperiment, context: ValidatedContext, arms: Sequence[Arm]
    ) -> list[float]:
        """1 on the arm with the highest upper confidence bound (ties split evenly)."""
        return one_on_best(self.scores(context.values, [arm.key for arm in arms]))


class LinearThompson(DisjointRidge):
    """Linear Thompson sampling (Agrawal and Goyal 2013), with Monte-Carlo propensities.

    Posterior of arm `a`: `theta_a ~ N(theta_hat_a, v^2 A_a^-1)` (see `DisjointRidge`);
    Thompson sampling draws one `theta_a` per arm and shows the arm with the highest
    `theta_a . x`. Since the arms' posteriors are independent, `theta_a . x` is exactly
    `N(theta_hat_a . x, v^2 x' A_a^-1 x)`, so sampling that scalar per arm is the same as
    sampling `theta_a` (and O(d^2) instead of O(d^3) per arm).

    The platform logs the propensity of what it shows, so the choice must come from a known
    vector: `probabilities` estimates `P(a is the argmax)` by the share of `draws` joint
    posterior draws (from the policy's seeded generator) in which `a` wins, and the platform's
    seeded draw from that vector (after the floor) replaces Thompson's single draw. The
    logged propensity is therefore the exact probability of the choice made, and the policy
    is Thompson sampling up to a Monte-Carlo error of about `sqrt(p (1 - p) / draws)` per arm.
    The generator is seeded with `(seed, THOMPSON_STREAM)`; runs with the same seed and the
    same sequence of calls give the same vectors.
    """

    def __init__(
        self,
        *,
        v: float = DEFAULT_V,
        ridge: float = DEFAULT_RIDGE,
        draws: int = DEFAULT_DRAWS,
        seed: int = 0,
        features: FeatureMap | None = None,
    ) -> None:
        if not (math.isfinite(v) and v > 0.0):
            raise ValueError(f"v must be a positive number (got {v})")
        if draws < 1:
            raise ValueError(f"draws must be at least 1 (got {draws})")
        if seed < 0:
            raise ValueError(f"seed must be non-negative (got {seed})")
        super().__init__(ridge=ridge, features=features)
        self.v = v
        self.draws = draws
        self.seed = seed
        self.name = "thompson"
        self._rng = np.random.default_rng([seed, THOMPSON_STREAM])

    def probabilities(
        self, compiled: CompiledExperiment, context: ValidatedContext, arms: Sequence[Arm]
    ) -> list[float]:
        """Share of posterior draws in which each arm has the highest sampled reward."""
        return self.win_shares(context.values, [arm.key for arm in arms])

    def win_shares(self, values: Mapping[str, ContextValue], arms: Sequence[str]) -> list[float]:
        """`P(a is the argmax)` for every arm, estimated from `draws` posterior draws."""
        means, widths = self.moments(self.features.vector(values), arms)
        noise = self._rng.standard_normal((self.draws, len(arms)))
        samples = means + self.v * np.sqrt(widths) * noise
        wins = np.bincount(samples.argmax(axis=1), minlength=len(arms))
        return [float(w) / self.draws for w in wins]


class Oracle:
    """The best arm by the simulator's ground truth (not learnable by any real policy).

    Before each decision the runner sets `situation` (the customer, trigger, surface, time
    and earlier exposures). Probability 1 on the eligible arm with the highest exact
    `expected_reward(situation, arm, horizon)`, split evenly among ties. With the platform's
    floor `f` over `k` arms the arm shown is the best one with probability `1 - (k - 1) f`,
    so its expected regret per decision is `f * sum_a (best - value_a)`.

    It is greedy per decision: what showing an offer does to later visits (fatigue, caps) is
    not taken into account, like the runner's `oracle_expected_reward`.
    """

    def __init__(self, horizon: RewardHorizon, *, model: ResponseModel = DEFAULT_MODEL) -> None:
        self.horizon = horizon
        self.model = model
        self.situation: Situation | None = None
        self.name = "oracle"

    def probabilities(
        self, compiled: CompiledExperiment, context: ValidatedContext, arms: Sequence[Arm]
    ) -> list[float]:
        """1 on the truly best arm (ties split evenly).

        Raises:
            RuntimeError: `situation` was not set.
        """
        if self.situation is None:
            raise RuntimeError("the oracle needs the situation: set Oracle.situation first")
        situation = self.situation
        return one_on_best(
            [expected_reward(situation, arm, self.horizon, model=self.model) for arm in arms]
        )

    def learn(self, platform: Platform, experiment_key: str) -> int:
        """Nothing to learn: the oracle knows. Returns 0."""
        return 0


#: Every baseline the runner can serve.
Baseline = LinUCB | LinearThompson | Oracle
