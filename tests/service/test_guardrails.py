"""Guardrails: configuration, the sequential check, the trip, the baseline it serves, clearing.

Statistical checks are seeded with their tolerances fixed up front: decision ids and salts are
random, but which decisions get a complaint is decided per group in a fixed order, so the
counts each check sees are the same on every run.
"""

from __future__ import annotations

import copy
import json
import logging
import random
from datetime import timedelta
from typing import Any

import msgspec
import numpy as np
import pytest

from bandit_platform.demo import demo_config_bytes
from bandit_platform.domain.access import AppIdentity
from bandit_platform.domain.config import (
    ABArm,
    ExperimentConfig,
    Guardrail,
    TrafficSplit,
    decode_config,
    validate_config,
)
from bandit_platform.domain.decisions import DecisionReason, Group
from bandit_platform.domain.errors import Conflict, InvalidInput
from bandit_platform.evaluation.lift import SufficientStats, absolute_lift
from bandit_platform.service.guardrails import (
    CLEARED_ACTION,
    NO_HOLDOUT,
    TRIPPED_ACTION,
    GuardrailService,
    check_guardrails,
    evaluate_guardrail,
)
from bandit_platform.service.learner import Learner
from bandit_platform.service.platform import Platform
from tests.conftest import Demo, FakeClock
from tests.service.learning_support import (
    customers_in,
    decide,
    demo_variant,
    identity,
    learning,
    report,
    rows,
    short_reward,
    start,
)

COMPLAINT = Guardrail(metric="complaint", window_hours=1.0, max_increase=0.05, min_decisions=20)
HALF_AND_HALF = TrafficSplit(holdout=50, ab=0, bandit=50)

# --- configuration ----------------------------------------------------------------------------


def _document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = copy.deepcopy(json.loads(demo_config_bytes()))
    document.update(changes)
    return document


def _error(document: dict[str, Any]) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        validate_config(decode_config(json.dumps(document)))
    return caught.value


def test_the_demo_has_guardrails_and_they_round_trip() -> None:
    config = decode_config(demo_config_bytes())
    assert {g.metric for g in config.guardrails} == {"complaint", "opt_out"}
    assert msgspec.json.decode(msgspec.json.encode(config), type=ExperimentConfig) == config
    assert decode_config(json.dumps(_document(guardrails=[]))).guardrails == []


GOOD = {"metric": "complaint", "max_increase": 0.005}


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"guardrails": [{"metric": "complaint"}]}, "guardrails[0]", "max_increase, max_rate"),
        ({"guardrails": [GOOD, GOOD]}, "guardrails[1].metric", "duplicate"),
        (
            {
                "guardrails": [GOOD],
                "traffic": {"holdout": 0, "ab": 30, "bandit": 70},
            },
            "guardrails[0].max_increase",
            "holdout",
        ),
        ({"guardrails": [{**GOOD, "metric": "Complaint!"}]}, "guardrails[0].metric", "match"),
        ({"guardrails": [{**GOOD, "confidence": 1.0}]}, "guardrails[0].confidence", "<="),
        ({"guardrails": [{**GOOD, "confidence": 0.2}]}, "guardrails[0].confidence", ">="),
        ({"guardrails": [{**GOOD, "max_increase": -0.1}]}, "guardrails[0].max_increase", ">="),
        ({"guardrails": [{**GOOD, "max_rate": 2}]}, "guardrails[0].max_rate", "<="),
        ({"guardrails": [{**GOOD, "min_decisions": 1}]}, "guardrails[0].min_decisions", ">="),
        ({"guardrails": [{**GOOD, "window_hours": 0}]}, "guardrails[0].window_hours", ">"),
        ({"guardrails": [{**GOOD, "threshold": 1}]}, "guardrails[0].threshold", "unknown"),
        ({"guardrails": [{"max_rate": 0.1}]}, "guardrails[0].metric", "missing"),
        ({"guardrails": {"metric": "complaint"}}, "guardrails", "array"),
    ],
)
def test_invalid_guardrails_name_their_field(
    changes: dict[str, Any], field: str, fragment: str
) -> None:
    error = _error(_document(**changes))
    assert error.field == field, error.message
    assert fragment in error.message


def test_without_a_holdout_a_max_rate_is_required_and_enough() -> None:
    guardrails = [
        {"metric": "opt_out", "max_rate": 0.05},
        {"metric": "complaint", "max_increase": 0.005, "max_rate": 0.02},
    ]
    document = _document(guardrails=guardrails, traffic={"holdout": 0, "ab": 30, "bandit": 70})
    compiled = validate_config(decode_config(json.dumps(document)))
    complaint = compiled.config.guardrails[1]
    # Only max_rate is checked; the unused max_increase is flagged.
    verdict = evaluate_guardrail(complaint, (5000, 500), None)
    assert verdict.breached == "max_rate"
    assert verdict.warnings == (NO_HOLDOUT,)


# --- the statistics (pure) --------------------------------------------------------------------


def test_equal_rates_do_not_trip() -> None:
    verdict = evaluate_guardrail(COMPLAINT, (5000, 100), (5000, 100))
    assert verdict.ready
    assert verdict.breached is None
    assert verdict.increase is not None
    assert verdict.increase.estimate == 0.0
    assert verdict.increase.lower < 0.0 < verdict.increase.upper
    assert verdict.bandit.lower is not None
    assert verdict.bandit.upper is not None
    assert verdict.bandit.lower < 0.02 < verdict.bandit.upper


def test_nothing_trips_before_min_decisions() -> None:
    verdict = evaluate_guardrail(COMPLAINT, (19, 19), (19, 0))
    assert not verdict.ready
    assert verdict.breached is None


def test_a_clear_increase_trips_and_max_rate_trips_alone() -> None:
    assert evaluate_guardrail(COMPLAINT, (400, 120), (400, 8)).breached == "max_increase"
    rate_only = Guardrail(metric="opt_out", max_rate=0.05, min_decisions=100)
    assert evaluate_guardrail(rate_only, (2000, 300), None).breached == "max_rate"
    assert evaluate_guardrail(rate_only, (2000, 60), None).breached is None


def test_repeated_looks_at_equal_rates_rarely_trip() -> None:
    """A-A: 300 seeded replications, a look every 500 decisions per group up to 20,000, with
    the strictest threshold (max_increase 0: any increase). The always-valid interval must
    trip in at most 5% (1 - confidence) of the replications; repeated fixed-horizon Welch
    tests at the same looks trip far more often (over 10% here), which is why it is not used.
    """
    guardrail = Guardrail(metric="complaint", max_increase=0.0, min_decisions=200)
    sequential_trips = welch_trips = 0
    replications = 300
    for seed in range(replications):
        rng = np.random.default_rng(seed)
        bandit, holdout = rng.random(20_000) < 0.02, rng.random(20_000) < 0.02
        sequential = welch = False
        for n in range(500, 20_001, 500):
            b, h = int(bandit[:n].sum()), int(holdout[:n].sum())
            sequential = sequential or evaluate_guardrail(guardrail, (n, b), (n, h)).breached
            # One-sided 95% Welch bound: the lower end of the two-sided 90% interval.
            naive = absolute_lift(
                SufficientStats(n, b, b), SufficientStats(n, h, h), confidence=0.90
            )
            welch = welch or naive.lower > 0.0
        sequential_trips += bool(sequential)
        welch_trips += welch
    assert sequential_trips / replications <= 0.05
    assert welch_trips / replications > 0.10


# --- the check, the trip and the baseline (database) ------------------------------------------


def guarded(key: str, **changes: Any) -> ExperimentConfig:
    """The demo (incumbent rules in the A-B arm) split half holdout, half bandit, without caps,
    with a one-hour complaint guardrail that may trip after 20 decisions per group."""
    values: dict[str, Any] = {
        "traffic": HALF_AND_HALF,
        "frequency_caps": [],
        "guardrails": [COMPLAINT],
        "learning": learning(),
        "reward": short_reward(),
    }
    return demo_variant(key, **{**values, **changes})


def play(
    platform: Platform,
    app: AppIdentity,
    clock: FakeClock,
    key: str,
    prefix: str,
    rates: dict[Group, float],
    per_group: int = 40,
    seed: int = 7,
) -> None:
    """`per_group` decisions per group (new customers); each gets a complaint with the
    group's probability, drawn in a fixed order from `seed`."""
    rng = random.Random(seed)
    for group in (Group.BANDIT, Group.HOLDOUT):
        for customer in customers_in(platform, key, group, f"{prefix}-{group}", per_group):
            decision = decide(platform, app, customer, experiment=key)
            assert decision.group == group
            if rng.random() < rates[group]:
                report(platform, app, decision, "complaint", clock.now + timedelta(minutes=5))


def bandit_decision(platform: Platform, app: AppIdentity, key: str, prefix: str) -> Any:
    (customer,) = customers_in(platform, key, Group.BANDIT, prefix, 1)
    return decide(platform, app, customer, experiment=key)


def audit_actions(platform: Platform) -> list[dict[str, Any]]:
    return rows(
        platform,
        "SELECT action, actor, details FROM audit_log WHERE action LIKE 'guardrail.%' ORDER BY id",
    )


def test_equal_rates_over_growing_data_never_trip(
    demo: Demo, platform: Platform, clock: FakeClock
) -> None:
    start(platform, guarded("aa"))
    app = identity(demo)
    for look in range(4):
        play(platform, app, clock, "aa", f"look{look}", {Group.BANDIT: 0.2, Group.HOLDOUT: 0.2})
        clock.advance(hours=2)
        assert check_guardrails(platform) == []
    status = GuardrailService(platform).report("aa").verdicts[0]
    assert (status.bandit.n, status.holdout.n if status.holdout else 0) == (160, 160)
    assert status.ready
    assert status.breached is None
    assert bandit_decision(platform, app, "aa", "after").reason == DecisionReason.BANDIT
    assert audit_actions(platform) == []


def test_a_clearly_higher_complaint_rate_trips_and_serves_the_baseline(
    demo: Demo, platform: Platform, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    start(platform, guarded("harm"))
    app = identity(demo)
    before = bandit_decision(platform, app, "harm", "before")
    assert before.reason == DecisionReason.BANDIT
    assert before.learnable

    play(platform, app, clock, "harm", "c", {Group.BANDIT: 0.6, Group.HOLDOUT: 0.0})
    assert check_guardrails(platform) == []  # no decision's window has passed yet
    clock.advance(hours=2)
    with caplog.at_level(logging.WARNING, logger="bandit_platform.service.guardrails"):
        report_ = Learner(platform).run_once()
    assert report_.guardrails_tripped == {"harm": "complaint"}
    (message,) = [r.getMessage() for r in caplog.records if "tripped" in r.getMessage()]
    assert "harm" in message
    assert "complaint" in message
    assert "c-bandit" not in message

    (trip_row,) = rows(platform, "SELECT guardrail_trip FROM experiments WHERE key = 'harm'")
    trip = trip_row["guardrail_trip"]
    trip = json.loads(trip) if isinstance(trip, str) else trip
    assert trip["metric"] == "complaint"
    assert trip["baseline"] == "incumbent_rules"
    assert trip["threshold"] == {"kind": "max_increase", "value": 0.05}
    assert trip["n"] == {"bandit": 41, "holdout": 40}  # with the decision "before"
    assert trip["rates"]["holdout"] == 0.0
    assert trip["rates"]["bandit"] > 0.4
    assert trip["interval"]["lower"] > 0.05
    assert trip["interval"]["method"] == "msprt"
    (audited,) = audit_actions(platform)
    assert (audited["action"], audited["actor"]) == (TRIPPED_ACTION, "guardrails")

    # The bandit group gets the incumbent rules (RULE_ONE matches rule 1), not learnable.
    after = bandit_decision(platform, app, "harm", "after")
    assert after.group == Group.BANDIT
    assert after.reason == DecisionReason.GUARDRAIL_BASELINE
    assert (after.offer, after.propensity, after.learnable) == ("high_yield_savings", 1.0, False)
    assert "guardrail 'complaint' tripped" in after.explanation
    assert "incumbent rule 1" in after.explanation
    # Holdout is untouched; a second check writes nothing more.
    (holdout_customer,) = customers_in(platform, "harm", Group.HOLDOUT, "h-after", 1)
    assert decide(platform, app, holdout_customer, experiment="harm").reason == "holdout"
    assert check_guardrails(platform) == []
    assert len(audit_actions(platform)) == 1


def test_without_incumbent_rules_the_baseline_is_no_offer(
    demo: Demo, platform: Platform, clock: FakeClock
) -> None:
    start(platform, guarded("plain", ab_arm=ABArm()))
    app = identity(demo)
    play(platform, app, clock, "plain", "c", {Group.BANDIT: 0.6, Group.HOLDOUT: 0.0})
    clock.advance(hours=2)
    (trip,) = check_guardrails(platform)
    assert trip.details["baseline"] == "no_offer"
    after = bandit_decision(platform, app, "plain", "after")
    assert (after.group, after.reason) == (Group.BANDIT, DecisionReason.GUARDRAIL_BASELINE)
    assert (after.offer, after.propensity, after.learnable) == (None, 1.0, False)


def test_every_worker_switches_and_clearing_restores_the_bandit(
    demo: Demo, platform: Platform, clock: FakeClock
) -> None:
    start(platform, guarded("two"))
    app = identity(demo)
    other = Platform(platform.settings, clock=clock)  # a second worker on the same database
    try:
        # The other worker has served (and cached) the experiment before the trip.
        assert bandit_decision(other, app, "two", "warm").reason == DecisionReason.BANDIT
        play(platform, app, clock, "two", "c", {Group.BANDIT: 0.6, Group.HOLDOUT: 0.0})
        clock.advance(hours=2)
        assert len(check_guardrails(platform)) == 1
        served = bandit_decision(other, app, "two", "other")
        assert served.reason == DecisionReason.GUARDRAIL_BASELINE

        service = GuardrailService(platform)
        with pytest.raises(InvalidInput) as empty:
            service.clear("two", "   ", actor="ops")
        assert empty.value.field == "comment"
        cleared = service.clear("two", "complaint spike traced to a copy error", actor="ops")
        assert cleared.trip is None
        assert cleared.since == clock.now
        # Counting restarts at the clearing: the old evidence does not trip it again.
        assert cleared.verdicts[0].bandit.n == 0
        with pytest.raises(Conflict):
            service.clear("two", "again", actor="ops")
        for worker in (platform, other):
            assert bandit_decision(worker, app, "two", "again").reason == DecisionReason.BANDIT
        clock.advance(hours=2)
        assert check_guardrails(platform) == []
        actions = [(a["action"], a["actor"]) for a in audit_actions(platform)]
        assert actions == [(TRIPPED_ACTION, "guardrails"), (CLEARED_ACTION, "ops")]
        details = audit_actions(platform)[1]["details"]
        details = json.loads(details) if isinstance(details, str) else details
        assert details["comment"] == "complaint spike traced to a copy error"
    finally:
        other.close()


def test_guardrail_events_are_accepted_without_a_reward_weight(
    demo: Demo, platform: Platform, clock: FakeClock
) -> None:
    start(platform, guarded("events"))
    start(platform, guarded("unguarded", guardrails=[]))
    app = identity(demo)
    decision = bandit_decision(platform, app, "events", "e")
    report(platform, app, decision, "complaint", clock.now)
    plain = bandit_decision(platform, app, "unguarded", "u")
    with pytest.raises(InvalidInput) as caught:
        report(platform, app, plain, "complaint", clock.now)
    assert caught.value.field == "event"
    # The complaint earns no reward: the decision's reward is the default.
    clock.advance(hours=2)
    Learner(platform).run_once()
    (reward,) = rows(
        platform,
        "SELECT reward, source FROM rewards WHERE decision_id = :id",
        id=decision.decision_id,
    )
    assert (reward["reward"], reward["source"]) == (0.0, "default")


def test_the_learner_checks_the_guardrails_at_most_once_a_minute(
    demo: Demo, platform: Platform, clock: FakeClock
) -> None:
    start(platform, guarded("cadence"))
    app = identity(demo)
    learner = Learner(platform)
    play(platform, app, clock, "cadence", "c", {Group.BANDIT: 0.6, Group.HOLDOUT: 0.0})
    clock.advance(minutes=59, seconds=59)
    assert learner.run_once().guardrails_tripped == {}  # the windows have not passed
    clock.advance(seconds=30)
    assert learner.run_once().guardrails_tripped == {}  # they have, but it checked just now
    clock.advance(seconds=31)
    assert learner.run_once().guardrails_tripped == {"cadence": "complaint"}
