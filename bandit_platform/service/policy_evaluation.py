"""Policies judged on the logged decisions: integrity, off-policy values and the promotion gate.

Three uses of the decision log, all read-only here (publishing a promoted model is
`ExperimentService.promote_candidate`):

- **Integrity** (`check_integrity`). A logged propensity is only worth its name if it can be
  recomputed. For recent bandit decisions the snapshot they name is loaded and the probability
  vector recomputed exactly as the decision path computed it (VW's pmf over the logged arms,
  then the decision path's own `served_probabilities`: the epsilon-decay mix and
  `check_probabilities` with the floor of the decision's configuration version); uniform A-B
  decisions are recomputed with the A-B rule itself.
  VW's predictions are deterministic for a given model and example, so the vectors must
  agree to the last bit; the tolerance only absorbs a float printed and parsed by a database.
- **Off-policy values** (`policy_probabilities`, `evaluate_policies`). A target policy (a
  stored snapshot, a model in memory, uniform over the eligible arms, the incumbent rules, or
  the logging policy itself) is given a probability for every logged eligible arm of every
  learnable decision (bandit and uniform A-B, whose propensities are real) with a closed
  reward; IPS, SNIPS and DR follow from `evaluation.ope`.
- **The promotion gate** (`evaluate_candidate`). A candidate model trained offline on the
  rows the learner reads, up to a cutoff, and the incumbent (the newest snapshot that loads,
  the one served) are estimated on the same rows after the cutoff, which the candidate never
  saw. The candidate passes when its one-sided lower confidence bound is above the
  incumbent's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

import msgspec
import numpy as np
import sqlalchemy as sa
from sqlmodel import Session, col

from bandit_platform.domain.config import (
    NO_OFFER,
    Arm,
    CompiledExperiment,
    Explorer,
    Offer,
)
from bandit_platform.domain.decisions import DecisionReason
from bandit_platform.domain.errors import Conflict, InvalidInput, NotFound
from bandit_platform.evaluation.ope import Estimate, dr, ips, snips
from bandit_platform.features.context import ValidatedContext
from bandit_platform.policies.probabilities import served_probabilities
from bandit_platform.policies.vw_adapter import ContextualBanditModel, model_arguments
from bandit_platform.service.decisions import DecisionService
from bandit_platform.service.learner import apply_example, learnable_examples, logged_example
from bandit_platform.service.platform import Platform
from bandit_platform.storage import repositories
from bandit_platform.storage.tables import DecisionRow, ExperimentRow, RewardRow

#: Absolute difference above which a recomputed probability counts as a mismatch.
INTEGRITY_TOLERANCE: Final = 1e-6
#: Mismatched decision ids listed in an integrity report, at most.
MAX_LISTED_MISMATCHES: Final = 10
#: Fewest held-out rows the promotion gate accepts.
MIN_EVALUATION_ROWS: Final = 30
#: Estimators the promotion gate can use.
GateEstimator = Literal["snips", "ips", "dr"]
#: Examples read per query while training a candidate.
_BATCH: Final = 5000

Vector = dict[str, float]


# ---------------------------------------------------------------------------------------------
# target policies


@dataclass(frozen=True)
class SnapshotPolicy:
    """A stored model snapshot, served as the experiment's configuration serves it now."""

    version: int

    @property
    def name(self) -> str:
        """How reports name the policy."""
        return f"snapshot v{self.version}"


@dataclass(frozen=True)
class ModelPolicy:
    """A model in memory (e.g. a candidate trained offline) with the explorer it serves with."""

    name: str
    model: ContextualBanditModel
    explorer: Explorer
    examples_seen: int = 0


@dataclass(frozen=True)
class UniformPolicy:
    """Uniform over each decision's logged eligible arms (1/K each)."""

    name: str = "uniform"


@dataclass(frozen=True)
class IncumbentRulesPolicy:
    """The incumbent rule list (deterministic): the first matching rule's eligible offer, else
    the default offer, else no offer, exactly as the A-B group applies it."""

    name: str = "incumbent_rules"


@dataclass(frozen=True)
class LoggingPolicy:
    """The logged probabilities themselves (its IPS value is the logged mean reward)."""

    name: str = "logging"


TargetPolicy = SnapshotPolicy | ModelPolicy | UniformPolicy | IncumbentRulesPolicy | LoggingPolicy


@dataclass(frozen=True)
class LoggedRow:
    """A learnable decision with its closed reward at one horizon.

    Attributes:
        decision: the logged decision.
        reward_id: the reward's id (the learner's order).
        reward: the closed reward.
        arms: the logged eligible arm keys.
        chosen: index of the chosen arm in `arms`.
    """

    decision: DecisionRow
    reward_id: int
    reward: float
    arms: tuple[str, ...]
    chosen: int

    @property
    def chosen_arm(self) -> str:
        """The chosen arm's key."""
        return self.arms[self.chosen]


def _chosen_key(decision: DecisionRow) -> str:
    if decision.chosen_offer is None:
        return NO_OFFER
    return f"{decision.chosen_offer}/{decision.chosen_variant}"


def _experiment(session: Session, key: str) -> ExperimentRow:
    row = repositories.experiment_by_key(session, key)
    if row is None:
        raise NotFound(f"no experiment {key!r}", field="experiment")
    return row


def _horizon(platform: Platform, experiment: ExperimentRow, horizon: str | None) -> str:
    reward = platform.compiled(experiment).config.reward
    names = [h.name for h in reward.horizons()]
    if horizon is None:
        return names[0]
    if horizon not in names:
        raise InvalidInput(f"unknown reward horizon; expected one of {names}", field="horizon")
    return horizon


def _logged_rows(session: Session, experiment: ExperimentRow, horizon: str) -> list[LoggedRow]:
    """The learnable decisions with a closed reward at `horizon`, in reward-id order."""
    rows = session.execute(
        sa.select(RewardRow, DecisionRow)
        .join(DecisionRow, col(DecisionRow.id) == col(RewardRow.decision_id))
        .where(
            col(RewardRow.experiment_id) == experiment.id,
            col(RewardRow.horizon) == horizon,
            col(RewardRow.learnable).is_(True),
        )
        .order_by(col(RewardRow.id))
    ).all()
    result = []
    for reward, decision in rows:
        assert reward.id is not None
        arms = tuple(decision.eligible)
        chosen_key = _chosen_key(decision)
        if chosen_key not in arms or decision.propensity <= 0.0:
            continue
        result.append(LoggedRow(decision, reward.id, reward.reward, arms, arms.index(chosen_key)))
    return result


def logged_rows(
    platform: Platform, key: str, *, horizon: str | None = None
) -> tuple[str, list[LoggedRow]]:
    """The experiment's learnable decisions with a closed reward, in the learner's order.

    Args:
        platform: the worker's platform.
        key: the experiment's key.
        horizon: the reward horizon (default: the learning horizon).

    Returns:
        The horizon's name and the rows.

    Raises:
        NotFound: no such experiment.
        InvalidInput: an unknown horizon (field `horizon`).
    """
    with platform.read_session() as session:
        experiment = _experiment(session, key)
        name = _horizon(platform, experiment, horizon)
        return name, _logged_rows(session, experiment, name)


def served_vector(
    model: ContextualBanditModel,
    example_shared: Mapping[str, list[tuple[str, float]]],
    example_actions: Sequence[Mapping[str, list[tuple[str, float]]]],
    *,
    explorer: Explorer,
    examples_seen: int,
    floor: float,
) -> list[float]:
    """The probability vector the decision path serves from a model's prediction.

    VW's pmf over the example's actions, then `served_probabilities` (the epsilon-decay mix and
    `check_probabilities` with the floor), the function `DecisionService._bandit` serves with.
    `check_integrity` proves on the real log that the two agree.
    """
    raw = model.predict(dict(example_shared), [dict(a) for a in example_actions])
    checked = served_probabilities(raw, explorer=explorer, examples_seen=examples_seen, floor=floor)
    return list(checked.probabilities)


def _eligible_offers(compiled: CompiledExperiment, arms: Sequence[str]) -> list[Offer]:
    keys: list[str] = []
    for key in arms:
        if key != NO_OFFER:
            offer = key.split("/", 1)[0]
            if offer not in keys:
                keys.append(offer)
    return [compiled.offers[k] for k in keys]


def _arm(key: str) -> Arm:
    if key == NO_OFFER:
        return Arm(None, None)
    offer, variant = key.split("/", 1)
    return Arm(offer, variant)


def _ab_vector(
    decisions: DecisionService,
    compiled: CompiledExperiment,
    context: Mapping[str, Any],
    arms: Sequence[str],
    *,
    rules: bool,
) -> Vector:
    """The A-B group's vector over the logged arms, computed by the decision path's own A-B
    step: uniform, or (with `rules`) the incumbent rule list, whatever the configured kind."""
    if rules and compiled.config.ab_arm.kind != "incumbent_rules":
        ab_arm = msgspec.structs.replace(compiled.config.ab_arm, kind="incumbent_rules")
        config = msgspec.structs.replace(compiled.config, ab_arm=ab_arm)
        compiled = dataclasses.replace(compiled, config=config, derived={})
    elif not rules and compiled.config.ab_arm.kind != "uniform":
        ab_arm = msgspec.structs.replace(compiled.config.ab_arm, kind="uniform")
        config = msgspec.structs.replace(compiled.config, ab_arm=ab_arm)
        compiled = dataclasses.replace(compiled, config=config, derived={})
    choice = decisions._ab(  # the decision path's A-B step, not a copy of it
        compiled,
        ValidatedContext(values=dict(context), dropped_protected=()),
        _eligible_offers(compiled, arms),
        [_arm(a) for a in arms],
    )
    vector: Vector = {}
    for arm, probability in zip(choice.arms, choice.probabilities, strict=True):
        vector[arm.key] = vector.get(arm.key, 0.0) + probability
    return vector


@dataclass
class _Loaded:
    model: ContextualBanditModel
    examples_seen: int


def _load_snapshot(session: Session, experiment_id: int, version: int) -> _Loaded | None:
    row = repositories.snapshot(session, experiment_id, version)
    if row is None or not repositories.snapshot_is_intact(row):
        return None
    try:
        model = ContextualBanditModel(row.arguments, model_data=row.data)
    except Exception:
        return None
    return _Loaded(model, row.examples_seen)


def _served_snapshot(session: Session, experiment_id: int) -> tuple[int, _Loaded] | None:
    """The newest snapshot that is intact and loads: the one the workers serve."""
    newest = repositories.latest_snapshot_version(session, experiment_id) or 0
    for version in range(newest, 0, -1):
        loaded = _load_snapshot(session, experiment_id, version)
        if loaded is not None:
            return version, loaded
    return None


def _target_vectors(
    platform: Platform,
    session: Session,
    experiment: ExperimentRow,
    rows: Sequence[LoggedRow],
    target: TargetPolicy,
) -> list[Vector]:
    """The target's probability of each arm, per row (arms outside the logged ones possible
    for the incumbent rules)."""
    assert experiment.id is not None
    current = platform.compiled(experiment)
    if isinstance(target, LoggingPolicy):
        return [{a: float(r.decision.probabilities.get(a, 0.0)) for a in r.arms} for r in rows]
    if isinstance(target, UniformPolicy):
        return [{a: 1.0 / len(r.arms) for a in r.arms} for r in rows]
    if isinstance(target, IncumbentRulesPolicy):
        decisions = DecisionService(platform)
        return [
            _ab_vector(
                decisions,
                platform.compiled_version(session, experiment.id, r.decision.experiment_version),
                r.decision.context,
                r.arms,
                rules=True,
            )
            for r in rows
        ]
    if isinstance(target, SnapshotPolicy):
        loaded = _load_snapshot(session, experiment.id, target.version)
        if loaded is None:
            raise NotFound(f"no intact, loadable model version {target.version}", field="version")
        model, explorer, seen = loaded.model, current.config.explorer, loaded.examples_seen
    else:
        model, explorer, seen = target.model, target.explorer, target.examples_seen
    vectors = []
    for r in rows:
        compiled = platform.compiled_version(session, experiment.id, r.decision.experiment_version)
        # The features the model sees now (the learner's example: the current allow-list and
        # protected attributes), over the offers of the configuration the decision was made in.
        example = logged_example(r.decision, r.reward_id, r.reward, compiled, current)
        if example is None:
            raise InvalidInput(f"decision {r.decision.id} cannot be rebuilt", field="experiment")
        probabilities = served_vector(
            model,
            example.shared,
            example.actions,
            explorer=explorer,
            examples_seen=seen,
            floor=current.config.probability_floor,
        )
        vectors.append(dict(zip(r.arms, probabilities, strict=True)))
    return vectors


def policy_probabilities(
    platform: Platform, key: str, target: TargetPolicy, *, horizon: str | None = None
) -> list[tuple[str, Vector]]:
    """The target policy's probability of every logged eligible arm of every learnable decision
    with a closed reward at `horizon`, in the learner's order.

    Returns:
        (decision id, {arm key: probability}) per decision.

    Raises:
        NotFound: no such experiment or snapshot version.
        InvalidInput: an unknown horizon.
    """
    with platform.read_session() as session:
        experiment = _experiment(session, key)
        name = _horizon(platform, experiment, horizon)
        rows = _logged_rows(session, experiment, name)
        vectors = _target_vectors(platform, session, experiment, rows, target)
    return [(r.decision.id, v) for r, v in zip(rows, vectors, strict=True)]


# ---------------------------------------------------------------------------------------------
# off-policy values


@dataclass(frozen=True)
class PolicyEvaluation:
    """IPS, SNIPS and DR estimates of one target policy on the same logged rows.

    Attributes:
        policy: the target's name.
        horizon: the reward horizon evaluated.
        n: logged rows used.
        ips: inverse propensity scoring.
        snips: self-normalised IPS.
        dr: doubly robust, with a per-arm mean reward model cross-fitted over two folds.
    """

    policy: str
    horizon: str
    n: int
    ips: Estimate
    snips: Estimate
    dr: Estimate

    @property
    def warnings(self) -> tuple[str, ...]:
        """Every estimator's warnings, once each."""
        return tuple(dict.fromkeys(w for e in (self.ips, self.snips, self.dr) for w in e.warnings))


def _fold(decision_id: str) -> int:
    return hashlib.sha256(decision_id.encode()).digest()[0] & 1


@dataclass(frozen=True)
class _ArmMeans:
    """A reward model: the mean reward per arm, `default` for an arm never seen."""

    means: dict[str, float]
    default: float

    def __call__(self, arm: str) -> float:
        return self.means.get(arm, self.default)


def _reward_models(rows: Sequence[LoggedRow]) -> list[_ArmMeans]:
    """Per fold, the mean reward per chosen arm fitted on the OTHER fold (cross-fitting); an
    arm the other fold never chose gets the other fold's overall mean."""
    models: list[_ArmMeans] = []
    overall = float(np.mean([r.reward for r in rows])) if rows else 0.0
    for fold in (0, 1):
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        other = [r for r in rows if _fold(r.decision.id) != fold]
        for r in other:
            sums[r.chosen_arm] = sums.get(r.chosen_arm, 0.0) + r.reward
            counts[r.chosen_arm] = counts.get(r.chosen_arm, 0) + 1
        default = float(np.mean([r.reward for r in other])) if other else overall
        means = {arm: sums[arm] / counts[arm] for arm in sums}
        models.append(_ArmMeans(means, default))
    return models


def _estimates(
    rows: Sequence[LoggedRow], vectors: Sequence[Vector], alpha: float
) -> tuple[Estimate, Estimate, Estimate]:
    r = np.array([row.reward for row in rows], dtype=np.float64)
    p = np.array([row.decision.propensity for row in rows], dtype=np.float64)
    t = np.array(
        [
            min(1.0, max(0.0, v.get(row.chosen_arm, 0.0)))
            for row, v in zip(rows, vectors, strict=True)
        ],
        dtype=np.float64,
    )
    models = _reward_models(rows)
    q_logged = np.empty(len(rows))
    q_target = np.empty(len(rows))
    for i, (row, vector) in enumerate(zip(rows, vectors, strict=True)):
        q = models[_fold(row.decision.id)]
        q_logged[i] = q(row.chosen_arm)
        q_target[i] = sum(probability * q(arm) for arm, probability in vector.items())
    return (
        ips(r, p, t, alpha=alpha),
        snips(r, p, t, alpha=alpha),
        dr(r, p, t, q_logged, q_target, alpha=alpha),
    )


def evaluate_policies(
    platform: Platform,
    key: str,
    targets: Sequence[TargetPolicy],
    *,
    horizon: str | None = None,
    confidence: float = 0.95,
) -> list[PolicyEvaluation]:
    """Off-policy values of each target on the learnable decisions with a closed reward.

    The rows are the bandit and uniform A-B decisions (their logged propensities are real);
    the intervals are two-sided normal intervals at `confidence`. DR's reward model is the
    mean reward per arm, cross-fitted over two folds of the decisions (fold = first bit of
    SHA-256 of the decision id): a row's model values come from the other fold's rows.

    Raises:
        NotFound: no such experiment or snapshot version.
        InvalidInput: an unknown horizon, a confidence outside (0, 1), or no row to evaluate.
    """
    if not 0.0 < confidence < 1.0:
        raise InvalidInput("must be between 0 and 1", field="confidence")
    with platform.read_session() as session:
        experiment = _experiment(session, key)
        name = _horizon(platform, experiment, horizon)
        rows = _logged_rows(session, experiment, name)
        if not rows:
            raise InvalidInput(
                "no learnable decision with a closed reward at this horizon yet", field="horizon"
            )
        result = []
        for target in targets:
            vectors = _target_vectors(platform, session, experiment, rows, target)
            estimates = _estimates(rows, vectors, 1.0 - confidence)
            result.append(PolicyEvaluation(target.name, name, len(rows), *estimates))
    return result


# ---------------------------------------------------------------------------------------------
# integrity of the logged probability vectors


@dataclass(frozen=True)
class IntegrityReport:
    """Whether recent logged probability vectors can be recomputed.

    Attributes:
        sampled: recent decisions looked at.
        checked: decisions whose vector was recomputed (bandit decisions with a model version,
            uniform A-B decisions).
        mismatched: checked decisions whose vector (or propensity) differs by more than
            `tolerance` from the recomputed one, or whose arms differ.
        max_difference: largest absolute difference over every checked arm.
        tolerance: the absolute tolerance.
        mismatched_ids: up to ten mismatched decision ids, newest first.
        unverifiable: bandit decisions whose snapshot is missing, corrupt or does not load.
        skipped: decisions not recomputed, by reason (holdout, rules, fallback, apprentice...:
            a single choice with probability 1, or a research policy without a model version;
            `context_erased`: a consent withdrawal erased the context it was scored on).
    """

    sampled: int
    checked: int
    mismatched: int
    max_difference: float
    tolerance: float
    mismatched_ids: tuple[str, ...]
    unverifiable: int
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No mismatch and nothing unverifiable."""
        return self.mismatched == 0 and self.unverifiable == 0


def _difference(logged: Mapping[str, float], recomputed: Mapping[str, float]) -> float:
    if set(logged) != set(recomputed):
        return math.inf
    return max(abs(float(logged[a]) - recomputed[a]) for a in recomputed)


#: Why a decision whose context a consent withdrawal erased is not recomputed.
ERASED = "context_erased"


def check_integrity(
    platform: Platform,
    key: str,
    *,
    limit: int = 1000,
    tolerance: float = INTEGRITY_TOLERANCE,
) -> IntegrityReport:
    """Recompute the probability vectors of the experiment's `limit` most recent decisions.

    A bandit decision is recomputed from the snapshot it names, with the context it logged and
    the offers, explorer and floor of the configuration version it was made under; a uniform
    A-B decision with the A-B step of the decision path. The logged propensity must also equal
    the vector's entry for the chosen arm. Other decisions (a single choice with probability
    1: holdout, incumbent rules, apprentice, fallback, no consent...) are counted as skipped.

    Raises:
        NotFound: no such experiment.
        InvalidInput: `limit` or `tolerance` out of range (field named).
    """
    if not 1 <= limit <= 100_000:
        raise InvalidInput("must be between 1 and 100000", field="limit")
    if not 0.0 <= tolerance < 1.0:
        raise InvalidInput("must be in [0, 1)", field="tolerance")
    decisions = DecisionService(platform)
    checked = mismatched = unverifiable = 0
    largest = 0.0
    ids: list[str] = []
    skipped: dict[str, int] = {}
    with platform.read_session() as session:
        experiment = _experiment(session, key)
        assert experiment.id is not None
        recent = (
            session.execute(
                sa.select(DecisionRow)
                .where(col(DecisionRow.experiment_id) == experiment.id)
                .order_by(col(DecisionRow.created_at).desc(), col(DecisionRow.id).desc())
                .limit(limit)
            )
            .scalars()
            .all()
        )
        snapshots: dict[int, _Loaded | None] = {}
        for decision in recent:
            if decision.context_erased_at is not None:
                # A consent withdrawal erased the context it was scored on.
                skipped[ERASED] = skipped.get(ERASED, 0) + 1
                continue
            compiled = platform.compiled_version(
                session, experiment.id, decision.experiment_version
            )
            arms = list(decision.eligible)
            recomputed: Vector
            if decision.reason == DecisionReason.BANDIT and decision.model_version is not None:
                version = decision.model_version
                if version not in snapshots:
                    snapshots[version] = _load_snapshot(session, experiment.id, version)
                loaded = snapshots[version]
                example = logged_example(decision, 0, 0.0, compiled, compiled)
                if loaded is None or example is None:
                    unverifiable += 1
                    continue
                probabilities = served_vector(
                    loaded.model,
                    example.shared,
                    example.actions,
                    explorer=compiled.config.explorer,
                    examples_seen=loaded.examples_seen,
                    floor=compiled.config.probability_floor,
                )
                recomputed = dict(zip(arms, probabilities, strict=True))
            elif decision.reason == DecisionReason.AB_UNIFORM:
                try:
                    recomputed = _ab_vector(
                        decisions, compiled, decision.context, arms, rules=False
                    )
                except KeyError:
                    unverifiable += 1
                    continue
            else:
                reason = decision.reason
                if decision.reason == DecisionReason.BANDIT:
                    reason = "bandit_without_model_version"
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            checked += 1
            difference = _difference(decision.probabilities, recomputed)
            chosen = recomputed.get(_chosen_key(decision), math.nan)
            difference = max(difference, abs(decision.propensity - chosen))
            if math.isnan(difference):
                difference = math.inf
            largest = max(largest, difference)
            if difference > tolerance:
                mismatched += 1
                if len(ids) < MAX_LISTED_MISMATCHES:
                    ids.append(decision.id)
    return IntegrityReport(
        sampled=len(recent),
        checked=checked,
        mismatched=mismatched,
        max_difference=largest,
        tolerance=tolerance,
        mismatched_ids=tuple(ids),
        unverifiable=unverifiable,
        skipped=skipped,
    )


# ---------------------------------------------------------------------------------------------
# candidates and the promotion gate


class PromotionRefused(Conflict):
    """The candidate's lower confidence bound does not beat the incumbent's; `evidence` says
    by how much."""

    def __init__(self, message: str, *, evidence: dict[str, Any]) -> None:
        super().__init__(message, field="candidate")
        self.evidence = evidence


@dataclass(frozen=True)
class CandidateSpec:
    """How to train a candidate and how to judge it.

    Attributes:
        explorer: the candidate's explorer (None: the configured one).
        holdout_fraction: the share of the newest rows (in the learner's order) held out for
            evaluation, when `cutoff` is None.
        cutoff: rows of decisions made before it train the candidate, the rest evaluate it.
        confidence: the one-sided confidence of the lower bounds compared.
        estimator: `snips` (default), `ips` or `dr`, each with its normal interval.
    """

    explorer: Explorer | None = None
    holdout_fraction: float = 0.3
    cutoff: datetime | None = None
    confidence: float = 0.95
    estimator: GateEstimator = "snips"

    def validate(self) -> None:
        """Raises InvalidInput naming the field that is out of range."""
        if not 0.0 < self.holdout_fraction < 1.0:
            raise InvalidInput("must be between 0 and 1", field="holdout_fraction")
        if not 0.5 <= self.confidence < 1.0:
            raise InvalidInput("must be in [0.5, 1)", field="confidence")
        if self.estimator not in ("snips", "ips", "dr"):
            raise InvalidInput("must be snips, ips or dr", field="estimator")
        if self.cutoff is not None and self.cutoff.tzinfo is None:
            raise InvalidInput("must carry a timezone (e.g. Z)", field="cutoff")


@dataclass
class Candidate:
    """A model that may replace the served one.

    Attributes:
        model: the VW model (its arguments must be `model_arguments(explorer)`).
        explorer: the explorer it is served with.
        examples_seen: examples it learned.
        last_reward_id: the learner's cursor after it (the last reward it learned from).
        note: how it was made.
    """

    model: ContextualBanditModel
    explorer: Explorer
    examples_seen: int
    last_reward_id: int
    note: str


@dataclass(frozen=True)
class CandidateEvaluation:
    """The promotion gate's verdict on a candidate against the incumbent.

    Attributes:
        candidate: the candidate evaluated.
        promote: whether the candidate's lower bound is above the incumbent's.
        evidence: what is stored with a promoted version (JSON-ready).
        incumbent_version: the snapshot compared with (the newest that loads).
        newest_version: the newest snapshot version when evaluated.
        config_version: the experiment's configuration version when evaluated.
    """

    candidate: Candidate
    promote: bool
    evidence: dict[str, Any]
    incumbent_version: int
    newest_version: int
    config_version: int


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _summary(estimate: Estimate) -> dict[str, Any]:
    return {
        "value": _finite(estimate.value),
        "lower": _finite(estimate.lower),
        "upper": _finite(estimate.upper),
        "n": estimate.n,
        "ess": _finite(estimate.effective_sample_size),
        "max_weight": _finite(estimate.max_weight),
        "warnings": list(estimate.warnings),
    }


def _gate_estimate(
    estimator: GateEstimator, rows: Sequence[LoggedRow], vectors: Sequence[Vector], alpha: float
) -> Estimate:
    ips_, snips_, dr_ = _estimates(rows, vectors, alpha)
    return {"ips": ips_, "snips": snips_, "dr": dr_}[estimator]


def train_candidate(
    platform: Platform,
    session: Session,
    experiment: ExperimentRow,
    explorer: Explorer,
    *,
    through_reward_id: int,
) -> Candidate:
    """A model for `explorer` trained, as the learner would, on every example with a reward id
    up to `through_reward_id` (apprentice decisions as imitation lessons)."""
    model = ContextualBanditModel(model_arguments(explorer))
    learned, cursor, done = 0, 0, False
    while not done:
        examples = learnable_examples(platform, session, experiment, cursor, _BATCH)
        done = len(examples) < _BATCH
        for example in examples:
            if example.reward_id > through_reward_id:
                done = True
                break
            if example.chosen >= 0:
                apply_example(model, example)
                learned += 1
            cursor = example.reward_id
    tag = explorer.__struct_config__.tag
    return Candidate(
        model,
        explorer,
        learned,
        cursor,
        f"candidate ({tag}) trained offline on {learned} logged decisions",
    )


def evaluate_candidate(
    platform: Platform,
    key: str,
    spec: CandidateSpec,
    *,
    candidate: Candidate | None = None,
    actor: str,
) -> CandidateEvaluation:
    """Train a candidate on the log up to a cutoff and judge it against the served model.

    The rows are the learnable decisions with a closed reward at the learning horizon, in the
    learner's order (reward id). The first ones (decided before `spec.cutoff`, or all but the
    newest `holdout_fraction`) train the candidate (unless one is given); the later ones
    evaluate both the candidate and the incumbent, the newest snapshot that loads (the one
    served), each served with the configured floor. Each gets the estimator's two-sided
    normal interval at level 1 - 2(1 - confidence), whose lower end is the one-sided lower
    bound at `confidence`. The candidate passes when

        candidate.lower > incumbent.lower

    (both finite). The incumbent has usually learned from the evaluation rows too, which can
    only flatter it: the gate errs on the side of keeping it.

    Raises:
        NotFound: no such experiment, or no snapshot to compare with.
        InvalidInput: a spec field out of range, or too few rows on either side of the cutoff.
    """
    spec.validate()
    with platform.read_session() as session:
        experiment = _experiment(session, key)
        assert experiment.id is not None
        current = platform.compiled(experiment)
        horizon = current.config.reward.name
        rows = _logged_rows(session, experiment, horizon)
        if spec.cutoff is not None:
            cutoff = spec.cutoff
            before = [i for i, r in enumerate(rows) if r.decision.created_at < cutoff]
            train = rows[: before[-1] + 1] if before else []
            where = "cutoff"
        else:
            train = rows[: math.ceil(len(rows) * (1.0 - spec.holdout_fraction))]
            where = "holdout_fraction"
        through = train[-1].reward_id if train else 0
        held_out = [r for r in rows if r.reward_id > through]
        if len(held_out) < MIN_EVALUATION_ROWS:
            raise InvalidInput(
                f"{len(held_out)} logged decisions with a closed reward after the cutoff; at "
                f"least {MIN_EVALUATION_ROWS} are needed",
                field=where,
            )
        if candidate is None:
            if not train:
                raise InvalidInput("no logged decision before the cutoff to train on", field=where)
            explorer = spec.explorer or current.config.explorer
            candidate = train_candidate(
                platform, session, experiment, explorer, through_reward_id=through
            )
        served = _served_snapshot(session, experiment.id)
        if served is None:
            raise NotFound("the experiment has no model snapshot that loads", field="experiment")
        version, incumbent = served
        alpha = 2.0 * (1.0 - spec.confidence)
        incumbent_target = ModelPolicy(
            f"snapshot v{version}",
            incumbent.model,
            current.config.explorer,
            incumbent.examples_seen,
        )
        candidate_target = ModelPolicy(
            "candidate", candidate.model, candidate.explorer, candidate.examples_seen
        )
        estimates = {
            name: _gate_estimate(
                spec.estimator,
                held_out,
                _target_vectors(platform, session, experiment, held_out, target),
                alpha,
            )
            for name, target in (("candidate", candidate_target), ("incumbent", incumbent_target))
        }
        config_version = experiment.version
        newest = repositories.latest_snapshot_version(session, experiment.id) or 0
    ours, theirs = estimates["candidate"], estimates["incumbent"]
    promote = (
        math.isfinite(ours.lower) and math.isfinite(theirs.lower) and ours.lower > theirs.lower
    )
    evidence: dict[str, Any] = {
        "estimator": spec.estimator.upper(),
        "interval": "normal, one-sided lower bound",
        "confidence": spec.confidence,
        "rule": "candidate.lower > incumbent.lower",
        "horizon": horizon,
        "n": len(held_out),
        "rows": {"train": len(train), "evaluation": len(held_out)},
        "cutoff": {
            "reward_id": through,
            "decided_at": train[-1].decision.created_at.isoformat() if train else None,
            "requested": spec.cutoff.isoformat() if spec.cutoff is not None else None,
            "holdout_fraction": None if spec.cutoff is not None else spec.holdout_fraction,
        },
        "candidate": {
            **_summary(ours),
            "explorer": msgspec.to_builtins(candidate.explorer),
            "examples_seen": candidate.examples_seen,
            "note": candidate.note,
        },
        "incumbent": {**_summary(theirs), "version": version},
        "promoted": promote,
        "decided_at": platform.clock().isoformat(),
        "actor": actor,
    }
    return CandidateEvaluation(candidate, promote, evidence, version, newest, config_version)


def standard_targets(
    platform: Platform, key: str, versions: Sequence[int] = ()
) -> list[TargetPolicy]:
    """The targets a report shows: the logging policy, uniform random, the incumbent rules and
    the snapshots `versions` (default: the one served, the newest that loads).

    Raises:
        NotFound: no such experiment.
    """
    with platform.read_session() as session:
        experiment = _experiment(session, key)
        assert experiment.id is not None
        if not versions:
            served = _served_snapshot(session, experiment.id)
            versions = [served[0]] if served is not None else []
    targets: list[TargetPolicy] = [LoggingPolicy(), UniformPolicy(), IncumbentRulesPolicy()]
    return targets + [SnapshotPolicy(v) for v in versions]
