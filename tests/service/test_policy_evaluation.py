"""Policies judged on the log: integrity of the logged probability vectors, off-policy values of
snapshots and other targets, and the promotion gate. Real database (SQLite and PostgreSQL),
real VW; every decision goes through `DecisionService`, every outcome through `OutcomeService`.

The world: two always-eligible offers; savers convert on the savings offer with probability
0.9 and on the travel card with 0.1, travellers the other way round (seeded). Uniform random
is worth 0.5, the best policy 0.9.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa

from bandit_platform.domain.access import AppIdentity
from bandit_platform.domain.config import (
    ABArm,
    EpsilonDecay,
    EpsilonGreedy,
    Explorer,
    IncumbentRule,
    TrafficSplit,
)
from bandit_platform.domain.decisions import Decision, DecisionReason
from bandit_platform.domain.errors import InvalidInput
from bandit_platform.policies.vw_adapter import ContextualBanditModel
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.learner import Learner
from bandit_platform.service.platform import Platform
from bandit_platform.service.policy_evaluation import (
    Candidate,
    CandidateSpec,
    IncumbentRulesPolicy,
    LoggingPolicy,
    PromotionRefused,
    SnapshotPolicy,
    UniformPolicy,
    check_integrity,
    evaluate_policies,
    policy_probabilities,
)
from bandit_platform.storage.database import create_engine
from bandit_platform.storage.tables import ModelSnapshotRow
from tests.conftest import Demo, FakeClock
from tests.service.learning_support import (
    Context,
    decide,
    experiment_id,
    identity,
    learning,
    report,
    rows,
    start,
    two_offer_world,
)

SAVER: Context = {"profile": {"life_stage": "retired", "income_band": "high"}}
TRAVELLER: Context = {"profile": {"life_stage": "young_professional", "income_band": "low"}}
BEST = {"saver": "high_yield_savings", "traveller": "premium_travel_card"}
#: The oracle as an incumbent rule list.
ORACLE_RULES = ABArm(
    kind="incumbent_rules",
    rules=[IncumbentRule(when="profile.life_stage == 'retired'", offer="high_yield_savings")],
    default_offer="premium_travel_card",
)


@pytest.fixture
def app(demo: Demo) -> AppIdentity:
    return identity(demo)


def play(
    platform: Platform,
    app: AppIdentity,
    clock: FakeClock,
    key: str,
    count: int,
    *,
    seed: int,
    prefix: str,
) -> list[Decision]:
    """`count` decisions and their conversions, then past the reward wait and one learner pass."""
    rng = random.Random(seed)
    decisions = []
    for index in range(count):
        kind = rng.choice(["saver", "traveller"])
        context = SAVER if kind == "saver" else TRAVELLER
        decision = decide(platform, app, f"{prefix}-{index}", context, experiment=key)
        converts = 0.9 if decision.offer == BEST[kind] else 0.1
        if decision.offer is not None and rng.random() < converts:
            report(platform, app, decision, "convert", clock.now)
        decisions.append(decision)
        clock.advance(seconds=1)
    clock.advance(hours=1, minutes=1)
    Learner(platform).run_once()
    return decisions


def snapshot_rows(platform: Platform, key: str) -> list[dict[str, Any]]:
    """The experiment's snapshots (typed columns, without their bytes), oldest first."""
    table = ModelSnapshotRow.__table__
    query = (
        sa.select(
            table.c.version,
            table.c.note,
            table.c.evidence,
            table.c.last_reward_id,
            table.c.examples_seen,
        )
        .where(table.c.experiment_id == experiment_id(platform, key))
        .order_by(table.c.version)
    )
    return rows(platform, query)


def audit_actions(platform: Platform, key: str) -> list[str]:
    return [entry["action"] for entry in ExperimentService(platform).audit_log(key)]


# --- integrity -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "explorer", [EpsilonGreedy(epsilon=0.2), EpsilonDecay(epsilon=0.3)], ids=["greedy", "decay"]
)
def test_logged_probabilities_are_recomputed_exactly_and_tampering_is_reported(
    demo: Demo, app: AppIdentity, clock: FakeClock, explorer: Explorer
) -> None:
    platform = demo.platform
    key = "integrity"
    start(
        platform,
        two_offer_world(
            key,
            explorer=explorer,
            traffic=TrafficSplit(holdout=10, ab=30, bandit=60),
            learning=learning(publish_every_examples=15),
        ),
    )
    decisions = play(platform, app, clock, key, 60, seed=1, prefix="a")
    decisions += play(platform, app, clock, key, 60, seed=2, prefix="b")
    reasons = Counter(d.reason for d in decisions)
    versions = {d.model_version for d in decisions if d.reason == DecisionReason.BANDIT}
    assert len(versions) >= 2, versions  # decisions under several snapshots
    assert reasons[DecisionReason.AB_UNIFORM] > 0
    assert reasons[DecisionReason.HOLDOUT] > 0

    clean = check_integrity(platform, key)
    assert clean.ok
    assert clean.sampled == len(decisions)
    assert clean.checked == reasons[DecisionReason.BANDIT] + reasons[DecisionReason.AB_UNIFORM]
    assert clean.max_difference == 0.0  # bit for bit: VW predicts deterministically
    assert clean.skipped == {"holdout": reasons[DecisionReason.HOLDOUT]}

    # Tamper with one bandit decision's logged vector.
    victim = next(d for d in reversed(decisions) if d.reason == DecisionReason.BANDIT)
    tampered = {arm: 1.0 / len(victim.probabilities) for arm in victim.probabilities}
    engine = create_engine(platform.settings.database_url, pool_size=1)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE decisions SET probabilities = :p WHERE id = :id").bindparams(
                    sa.bindparam("p", type_=sa.JSON)
                ),
                {"p": tampered, "id": victim.decision_id},
            )
    finally:
        engine.dispose()
    report_ = check_integrity(platform, key)
    assert (report_.checked, report_.mismatched) == (clean.checked, 1)
    assert report_.mismatched_ids == (victim.decision_id,)
    assert report_.max_difference == pytest.approx(
        max(abs(p - 0.5) for p in victim.probabilities.values())
    )
    assert not report_.ok
    # A sample of the newest decisions only.
    assert check_integrity(platform, key, limit=5).sampled == 5


def test_integrity_arguments_are_checked(demo: Demo) -> None:
    with pytest.raises(InvalidInput) as error:
        check_integrity(demo.platform, "banking-offers-demo", limit=0)
    assert error.value.field == "limit"
    empty = check_integrity(demo.platform, "banking-offers-demo")
    assert (empty.sampled, empty.checked, empty.ok) == (0, 0, True)


# --- off-policy values of snapshots and other targets ----------------------------------------


def test_the_logging_snapshot_is_worth_the_logged_mean_reward(
    demo: Demo, app: AppIdentity, clock: FakeClock
) -> None:
    platform = demo.platform
    key = "ope"
    start(
        platform,
        two_offer_world(
            key,
            explorer=EpsilonGreedy(epsilon=0.5),
            ab_arm=ORACLE_RULES,
            learning=learning(publish_every_examples=1_000_000),  # every decision under v1
        ),
    )
    decisions = play(platform, app, clock, key, 200, seed=3, prefix="o")
    assert {d.model_version for d in decisions} == {1}

    # The serving snapshot's recomputed vectors are the logged ones, exactly.
    logged = {d.decision_id: d.probabilities for d in decisions}
    recomputed = policy_probabilities(platform, key, SnapshotPolicy(1))
    assert len(recomputed) == len(decisions)
    assert all(vector == logged[decision_id] for decision_id, vector in recomputed)

    rewards = rows(
        platform,
        "SELECT reward FROM rewards WHERE experiment_id = :id",
        id=experiment_id(platform, key),
    )
    mean = sum(r["reward"] for r in rewards) / len(rewards)
    # 99.9% intervals: decision ids and salts are random, so the draws differ between runs.
    logging_, snapshot, uniform, rules = evaluate_policies(
        platform,
        key,
        [LoggingPolicy(), SnapshotPolicy(1), UniformPolicy(), IncumbentRulesPolicy()],
        confidence=0.999,
    )
    for evaluation in (logging_, snapshot):
        assert evaluation.n == len(decisions)
        assert evaluation.ips.value == pytest.approx(mean, abs=1e-12)
        assert evaluation.snips.value == pytest.approx(mean, abs=1e-12)
        assert evaluation.ips.max_weight == pytest.approx(1.0)
    assert snapshot.policy == "snapshot v1"
    # Uniform is worth 0.5 and the oracle rules 0.9: inside their intervals, and clearly apart
    # (about 0.035 and 0.03-0.07 standard errors).
    for evaluation, truth in ((uniform, 0.5), (rules, 0.9)):
        for estimate in (evaluation.ips, evaluation.snips, evaluation.dr):
            assert estimate.lower <= truth <= estimate.upper, (evaluation.policy, estimate)
    assert rules.snips.lower > uniform.snips.upper


def test_unknown_horizon_and_empty_logs_are_rejected(demo: Demo) -> None:
    with pytest.raises(InvalidInput) as error:
        evaluate_policies(demo.platform, "banking-offers-demo", [UniformPolicy()], horizon="x")
    assert error.value.field == "horizon"
    with pytest.raises(InvalidInput) as error:
        evaluate_policies(demo.platform, "banking-offers-demo", [UniformPolicy()])
    assert error.value.field == "horizon"


# --- the promotion gate ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_clearly_better_candidate_is_promoted_with_its_evidence_and_served_next(
    demo: Demo, app: AppIdentity, clock: FakeClock
) -> None:
    platform = demo.platform
    key = "promote"
    start(
        platform,
        two_offer_world(
            key,
            explorer=EpsilonGreedy(epsilon=0.5),
            learning=learning(publish_every_examples=1_000_000),  # the served model stays cold
        ),
    )
    play(platform, app, clock, key, 240, seed=4, prefix="p")
    experiments = ExperimentService(platform)
    spec = CandidateSpec(explorer=EpsilonGreedy(epsilon=0.05), holdout_fraction=0.4)

    dry = experiments.promote_candidate(key, spec, "analyst", dry_run=True)
    assert (dry["promoted"], dry["would_promote"], dry["version"]) == (False, True, None)
    assert len(snapshot_rows(platform, key)) == 1

    result = experiments.promote_candidate(key, spec, "analyst")
    assert (result["promoted"], result["version"]) == (True, 2)
    evidence = result["evidence"]
    assert evidence["candidate"]["lower"] > evidence["incumbent"]["lower"]
    # Worth about 0.9 and 0.5, standard errors about 0.04 and 0.05.
    assert evidence["candidate"]["value"] - evidence["incumbent"]["value"] > 0.2
    assert evidence["incumbent"]["version"] == 1
    assert evidence["rows"] == {"train": 144, "evaluation": 96}
    assert evidence["n"] == 96
    assert evidence["estimator"] == "SNIPS"
    assert evidence["actor"] == "analyst"
    assert evidence["candidate"]["explorer"] == {"kind": "epsilon_greedy", "epsilon": 0.05}

    v1, v2 = snapshot_rows(platform, key)
    assert v2["evidence"] == evidence
    assert v2["last_reward_id"] == evidence["cutoff"]["reward_id"]  # the learner resumes there
    assert v2["examples_seen"] == 144
    assert v1["evidence"] is None
    listed = experiments.models(key)
    assert listed[0]["evidence"] == evidence
    assert listed[1]["evidence"] is None
    actions = audit_actions(platform, key)
    assert actions[:2] == ["model.promoted", "experiment.update"]
    view = experiments.get(key)
    assert view.config["explorer"] == {"kind": "epsilon_greedy", "epsilon": 0.05}

    # Served next, and the learner continues from it with the held-out rewards.
    decision = decide(platform, app, "after-promotion", SAVER, experiment=key)
    assert decision.model_version == 2
    assert decision.offer == "high_yield_savings" or decision.propensity < 0.5
    learned = Learner(platform).run_once()
    assert learned.examples_learned == {key: 96}


def test_a_clearly_worse_candidate_is_refused_and_nothing_is_published(
    demo: Demo, app: AppIdentity, clock: FakeClock
) -> None:
    platform = demo.platform
    key = "refuse"
    start(
        platform,
        two_offer_world(
            key,
            explorer=EpsilonGreedy(epsilon=0.2),
            learning=learning(publish_every_examples=40),
        ),
    )
    play(platform, app, clock, key, 240, seed=5, prefix="r")
    before = snapshot_rows(platform, key)
    experiments = ExperimentService(platform)
    version_before = experiments.get(key).version

    # Uniform random (epsilon 1) against a model that has learned the two segments.
    spec = CandidateSpec(explorer=EpsilonGreedy(epsilon=1.0))
    with pytest.raises(PromotionRefused) as refused:
        experiments.promote_candidate(key, spec, "analyst")
    evidence = refused.value.evidence
    assert refused.value.status_hint == 409
    assert refused.value.field == "candidate"
    assert evidence["promoted"] is False
    # Worth about 0.5 and 0.85, standard errors about 0.06.
    assert evidence["incumbent"]["value"] - evidence["candidate"]["value"] > 0.1
    assert evidence["incumbent"]["version"] == before[-1]["version"]
    assert snapshot_rows(platform, key) == before
    assert experiments.get(key).version == version_before
    audit = ExperimentService(platform).audit_log(key)
    assert audit[0]["action"] == "model.promotion_refused"
    assert audit[0]["details"]["candidate"]["value"] == evidence["candidate"]["value"]

    # A candidate given as snapshot bytes: the cold model v1 is no better than uniform.
    table = ModelSnapshotRow.__table__
    (cold,) = rows(
        platform,
        sa.select(table.c.arguments, table.c.data).where(
            table.c.experiment_id == experiment_id(platform, key), table.c.version == 1
        ),
    )
    given = Candidate(
        ContextualBanditModel(cold["arguments"], model_data=cold["data"]),
        EpsilonGreedy(epsilon=0.2),
        examples_seen=0,
        last_reward_id=0,
        note="the cold model again",
    )
    with pytest.raises(PromotionRefused) as refused:
        experiments.promote_candidate(key, CandidateSpec(), "analyst", candidate=given)
    assert refused.value.evidence["rows"]["evaluation"] == 72  # the same split: 30% held out
    assert refused.value.evidence["candidate"]["note"] == "the cold model again"
    assert snapshot_rows(platform, key) == before


def test_candidate_spec_fields_and_too_few_rows_are_named(demo: Demo) -> None:
    experiments = ExperimentService(demo.platform)
    for spec, field in (
        (CandidateSpec(holdout_fraction=1.0), "holdout_fraction"),
        (CandidateSpec(confidence=0.2), "confidence"),
        (CandidateSpec(), "holdout_fraction"),  # no logged decision at all yet
    ):
        with pytest.raises(InvalidInput) as error:
            experiments.promote_candidate("banking-offers-demo", spec, "analyst")
        assert error.value.field == field
    assert "model.promotion_refused" not in audit_actions(demo.platform, "banking-offers-demo")
