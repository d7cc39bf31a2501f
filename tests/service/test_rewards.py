"""The reward join: `horizon_reward` (pure) and `close_rewards` into the `rewards` ledger.

The ledger invariants proved here, on SQLite and PostgreSQL: a horizon's reward closes only
once its wait time has passed; every decision gets exactly one row per horizon (report horizons
included), whatever its group; a batch is written whole or not at all, and a rerun after a crash
completes the ledger without writing anything twice; an outcome that arrives after its reward
closed changes nothing.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit_platform.domain.config import RewardDefinition, RewardHorizon
from bandit_platform.domain.decisions import Decision, DecisionReason, Group
from bandit_platform.service.platform import Platform
from bandit_platform.service.rewards import (
    WATERMARK_MARGIN,
    OutcomeEvent,
    Watermarks,
    close_rewards,
    horizon_reward,
)
from bandit_platform.storage.tables import RewardRow
from tests.conftest import Demo, FakeClock
from tests.service.learning_support import (
    ALL_BANDIT,
    DEMO,
    RULE_ONE,
    decide,
    demo_variant,
    identity,
    learning,
    report,
    rows,
    start,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SKEW = timedelta(minutes=5)
WEIGHTS = {"click": 0.1, "apply": 0.5, "convert": 1.0}


def horizon(aggregation: str = "sum", **changes: Any) -> RewardHorizon:
    values: dict[str, Any] = {
        "name": "h",
        "event_weights": WEIGHTS,
        "attribution_window_hours": 24.0,
        "default_reward": -0.25,
        "aggregation": aggregation,
    }
    return RewardHorizon(**{**values, **changes})


def event(name: str, after: timedelta, value: float = 1.0, outcome_id: int = 0) -> OutcomeEvent:
    return OutcomeEvent(name, value, T0 + after, outcome_id)


MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
WINDOW_END = timedelta(hours=24)
MICROSECOND = timedelta(microseconds=1)
CLICK_APPLY_CONVERT = [
    event("convert", 3 * HOUR, 2.0, outcome_id=3),
    event("click", MINUTE, outcome_id=1),
    event("apply", HOUR, outcome_id=2),
]

# name: (horizon, outcomes, skew, expected reward, expected count)
HORIZON_CASES: dict[str, tuple[RewardHorizon, list[OutcomeEvent], timedelta, float, int]] = {
    "sum adds weight x value": (horizon("sum"), CLICK_APPLY_CONVERT, SKEW, 0.1 + 0.5 + 2.0, 3),
    "max takes the largest": (horizon("max"), CLICK_APPLY_CONVERT, SKEW, 2.0, 3),
    "earliest takes the first to occur, not the first listed": (
        horizon("earliest"),
        CLICK_APPLY_CONVERT,
        SKEW,
        0.1,
        3,
    ),
    "earliest breaks a tie by outcome id": (
        horizon("earliest"),
        [event("convert", HOUR, outcome_id=9), event("apply", HOUR, outcome_id=4)],
        SKEW,
        0.5,
        2,
    ),
    "value scales the weight": (horizon("sum"), [event("apply", HOUR, 3.0)], SKEW, 1.5, 1),
    "max of negative contributions": (
        horizon("max", event_weights={"dismiss": -1.0, "click": -0.2}),
        [event("dismiss", MINUTE), event("click", HOUR)],
        SKEW,
        -0.2,
        2,
    ),
    "none: the default applies with count 0": (horizon("sum"), [], SKEW, -0.25, 0),
    "an event without weight does not count": (
        horizon("sum"),
        [event("impression", MINUTE), event("dismiss", HOUR)],
        SKEW,
        -0.25,
        0,
    ),
    "at the end of the window: counted": (
        horizon("sum"),
        [event("convert", WINDOW_END)],
        SKEW,
        1.0,
        1,
    ),
    "just after the window: the default": (
        horizon("sum"),
        [event("convert", WINDOW_END + MICROSECOND)],
        SKEW,
        -0.25,
        0,
    ),
    "long after the window: the default": (
        horizon("max"),
        [event("convert", 48 * HOUR)],
        SKEW,
        -0.25,
        0,
    ),
    "within the skew before the decision: counted": (
        horizon("sum"),
        [event("click", -SKEW)],
        SKEW,
        0.1,
        1,
    ),
    "beyond the skew before the decision: the default": (
        horizon("sum"),
        [event("click", -SKEW - MICROSECOND)],
        SKEW,
        -0.25,
        0,
    ),
    "before the decision without skew: the default": (
        horizon("sum"),
        [event("click", -MINUTE)],
        timedelta(0),
        -0.25,
        0,
    ),
    "inside and outside mixed: only inside counts": (
        horizon("sum"),
        [event("click", -HOUR), event("apply", 2 * HOUR), event("convert", 25 * HOUR)],
        SKEW,
        0.5,
        1,
    ),
}


@pytest.mark.parametrize("case", list(HORIZON_CASES))
def test_horizon_reward(case: str) -> None:
    spec, outcomes, skew, expected, count = HORIZON_CASES[case]
    reward, counted = horizon_reward(spec, T0, outcomes, skew)
    assert reward == pytest.approx(expected, abs=1e-12)
    assert counted == count


def _oracle(
    spec: RewardHorizon, outcomes: list[OutcomeEvent], skew: timedelta
) -> tuple[float, int]:
    """An independent restatement of the documented rule, one branch per aggregation."""
    start, end = T0 - skew, T0 + timedelta(hours=spec.attribution_window_hours)
    inside = [o for o in outcomes if o.event in spec.event_weights and start <= o.occurred_at]
    inside = [o for o in inside if o.occurred_at <= end]
    if not inside:
        return spec.default_reward, 0
    values = {o.outcome_id: spec.event_weights[o.event] * o.value for o in inside}
    if spec.aggregation == "sum":
        return sum(values.values()), len(inside)
    if spec.aggregation == "max":
        return max(values.values()), len(inside)
    first = min(inside, key=lambda o: (o.occurred_at, o.outcome_id))
    return values[first.outcome_id], len(inside)


@settings(max_examples=200, deadline=None)
@given(
    aggregation=st.sampled_from(["sum", "max", "earliest"]),
    window_hours=st.sampled_from([1.0, 24.0, 168.0]),
    skew_minutes=st.integers(0, 10),
    draws=st.lists(
        st.tuples(
            st.sampled_from(["click", "apply", "convert", "impression"]),
            st.integers(-30, 200 * 60),  # minutes after the decision
            st.floats(-5, 5, allow_nan=False),
        ),
        max_size=8,
    ),
)
def test_horizon_reward_matches_its_definition(
    aggregation: str,
    window_hours: float,
    skew_minutes: int,
    draws: list[tuple[str, int, float]],
) -> None:
    spec = horizon(aggregation, attribution_window_hours=window_hours)
    outcomes = [
        OutcomeEvent(name, value, T0 + timedelta(minutes=minutes), outcome_id)
        for outcome_id, (name, minutes, value) in enumerate(draws)
    ]
    random.Random(len(draws)).shuffle(outcomes)  # the input order must not matter
    skew = timedelta(minutes=skew_minutes)
    reward, count = horizon_reward(spec, T0, outcomes, skew)
    expected, expected_count = _oracle(spec, outcomes, skew)
    assert count == expected_count
    assert reward == pytest.approx(expected, rel=1e-12, abs=1e-12)


# --- the join into the ledger -----------------------------------------------------------------

#: Learn from "applied within a day" (wait two days); report "clicked within an hour" and
#: "converted within 30 days".
THREE_HORIZONS = RewardDefinition(
    event_weights=WEIGHTS,
    attribution_window_hours=24.0,
    reward_wait_hours=48.0,
    default_reward=-0.01,
    aggregation="max",
    report_horizons=[
        RewardHorizon(name="clicked_1h", event_weights={"click": 1.0}, attribution_window_hours=1),
        RewardHorizon(
            name="converted_30d",
            event_weights={"convert": 1.0},
            attribution_window_hours=720,
            aggregation="earliest",
        ),
    ],
)
HORIZONS = ("primary", "clicked_1h", "converted_30d")


def ledger(platform: Platform) -> dict[tuple[str, str], dict[str, Any]]:
    """The rewards ledger by (decision, horizon); fails if a pair appears twice."""
    found = rows(platform, sa.select(RewardRow.__table__))
    pairs = Counter((r["decision_id"], r["horizon"]) for r in found)
    assert max(pairs.values(), default=1) == 1, [p for p, n in pairs.items() if n > 1]
    return {(r["decision_id"], r["horizon"]): r for r in found}


def closed_horizons(platform: Platform) -> Counter[str]:
    return Counter(horizon for _, horizon in ledger(platform))


def test_rewards_close_per_horizon_once_for_every_decision(demo: Demo, clock: FakeClock) -> None:
    platform = demo.platform
    app = identity(demo)
    join = demo_variant("rewards-join", reward=THREE_HORIZONS, frequency_caps=[])
    fallback = demo_variant(
        "rewards-fallback",
        reward=THREE_HORIZONS,
        traffic=ALL_BANDIT,
        learning=learning(model_deadline_ms=1e-6),
    )
    start(platform, join)
    start(platform, fallback)

    decisions: list[Decision] = []
    decisions += [decide(platform, app, f"c-{i}", experiment=join.key) for i in range(40)]
    decisions += [
        decide(platform, app, f"n-{i}", experiment=join.key, consent=False) for i in range(8)
    ]
    decisions += [decide(platform, app, f"f-{i}", experiment=fallback.key) for i in range(6)]
    reasons = Counter(d.reason for d in decisions)
    for reason in (
        DecisionReason.HOLDOUT,
        DecisionReason.AB_RULE,
        DecisionReason.BANDIT,
        DecisionReason.NO_CONSENT,
        DecisionReason.MODEL_FALLBACK,
    ):
        assert reasons[reason] > 0, reasons
    clicked, applied, converted = decisions[0], decisions[1], decisions[2]

    clock.advance(minutes=10)
    report(platform, app, clicked, "click", clock.now)
    report(platform, app, applied, "click", clock.now)
    assert close_rewards(platform) == 0
    clock.advance(minutes=49, seconds=59)  # 1 s before the click horizon's wait ends
    assert close_rewards(platform) == 0
    assert ledger(platform) == {}

    clock.advance(seconds=1)  # one hour after the decisions: only clicked_1h closes
    assert close_rewards(platform) == len(decisions)
    assert closed_horizons(platform) == {"clicked_1h": len(decisions)}

    clock.advance(hours=1)  # 2 h
    report(platform, app, applied, "apply", clock.now)
    clock.advance(hours=3)  # 5 h
    report(platform, app, converted, "convert", clock.now, value=2.0)
    clock.advance(hours=25)  # 30 h: late for "primary" (24 h), inside "converted_30d"
    report(platform, app, applied, "convert", clock.now)
    clock.advance(hours=17, minutes=59, seconds=59)  # 1 s before the primary wait of 48 h
    assert close_rewards(platform) == 0
    clock.advance(seconds=1)
    assert close_rewards(platform) == len(decisions)
    assert closed_horizons(platform) == {h: len(decisions) for h in HORIZONS[:2]}

    clock.advance(hours=720 - 48)
    assert close_rewards(platform) == len(decisions)
    assert close_rewards(platform) == 0  # a second run writes nothing new
    clock.advance(hours=1000)
    assert close_rewards(platform) == 0

    closed = ledger(platform)
    assert len(closed) == 3 * len(decisions)
    expected = {
        (clicked.decision_id, "clicked_1h"): (1.0, "outcomes", 1),
        (clicked.decision_id, "primary"): (0.1, "outcomes", 1),
        (clicked.decision_id, "converted_30d"): (0.0, "default", 0),
        (applied.decision_id, "clicked_1h"): (1.0, "outcomes", 1),
        (applied.decision_id, "primary"): (0.5, "outcomes", 2),
        (applied.decision_id, "converted_30d"): (1.0, "outcomes", 1),
        (converted.decision_id, "clicked_1h"): (0.0, "default", 0),
        (converted.decision_id, "primary"): (2.0, "outcomes", 1),
        (converted.decision_id, "converted_30d"): (2.0, "outcomes", 1),
    }
    for pair, (reward, source, count) in expected.items():
        row = closed[pair]
        assert (row["reward"], row["source"], row["outcome_count"]) == (
            pytest.approx(reward),
            source,
            count,
        ), pair
    # Every other decision got its horizon's default reward, exactly once.
    defaults = {"primary": -0.01, "clicked_1h": 0.0, "converted_30d": 0.0}
    by_decision = {d.decision_id: d for d in decisions}
    for (decision_id, name), row in closed.items():
        if (decision_id, name) not in expected:
            assert (row["reward"], row["source"], row["outcome_count"]) == (
                defaults[name],
                "default",
                0,
            )
        decision = by_decision[decision_id]
        assert row["learnable"] is decision.learnable
        learnable = decision.reason in (DecisionReason.BANDIT, DecisionReason.AB_UNIFORM)
        assert row["learnable"] is learnable, (decision.group, decision.reason)
        assert row["closed_at"] > decision.created_at
    not_learnable = [
        d
        for d in decisions
        if d.group == Group.HOLDOUT
        or d.reason in (DecisionReason.NO_CONSENT, DecisionReason.MODEL_FALLBACK)
    ]
    assert not_learnable
    assert not any(closed[(d.decision_id, h)]["learnable"] for d in not_learnable for h in HORIZONS)


def test_an_outcome_after_the_reward_closed_changes_nothing(demo: Demo, clock: FakeClock) -> None:
    platform, app = demo.platform, identity(demo)
    decision = decide(platform, app, "late-reporter", RULE_ONE)
    clock.advance(hours=168)  # the demo's wait time
    assert close_rewards(platform) == 1
    (before,) = ledger(platform).values()
    assert (before["reward"], before["source"]) == (0.0, "default")

    # Inside the attribution window, but reported after the reward closed.
    report(platform, app, decision, "convert", decision.created_at + timedelta(hours=2))
    clock.advance(hours=1)
    assert close_rewards(platform) == 0
    (after,) = ledger(platform).values()
    assert after == before


class SimulatedCrash(Exception):
    """Raised from the database layer to stand for the process dying mid-transaction."""


@pytest.fixture
def crash_on_reward_insert(demo: Demo) -> Iterator[dict[str, int]]:
    """Raise `SimulatedCrash` right after the Nth INSERT into `rewards` ran, before its commit.

    Set `plan["at"]` to N (0 disables it); `plan["seen"]` counts the inserts.
    """
    plan = {"at": 0, "seen": 0}

    def after_execute(*args: Any) -> None:
        statement: str = args[2]
        if statement.lstrip().upper().startswith("INSERT INTO REWARDS"):
            plan["seen"] += 1
            if plan["seen"] == plan["at"]:
                raise SimulatedCrash(f"crash after reward insert {plan['seen']}")

    engine = demo.platform.engine
    sa.event.listen(engine, "after_cursor_execute", after_execute)
    yield plan
    sa.event.remove(engine, "after_cursor_execute", after_execute)


@pytest.mark.parametrize("crash_at", [1, 2, 4])
def test_a_crash_half_way_leaves_whole_batches_and_a_rerun_completes(
    demo: Demo, clock: FakeClock, crash_on_reward_insert: dict[str, int], crash_at: int
) -> None:
    platform, app = demo.platform, identity(demo)
    decisions = [decide(platform, app, f"crash-{i}") for i in range(10)]
    report(platform, app, decisions[0], "convert", clock.now)
    clock.advance(hours=168)

    crash_on_reward_insert["at"] = crash_at
    with pytest.raises(SimulatedCrash):
        close_rewards(platform, batch_size=3)  # batches of 3, 3, 3, 1
    # The batches before the crash are written whole; the one that crashed not at all.
    assert len(ledger(platform)) == 3 * (crash_at - 1)

    crash_on_reward_insert["at"] = 0
    assert close_rewards(platform, batch_size=3) == 10 - 3 * (crash_at - 1)
    closed = ledger(platform)
    assert set(closed) == {(d.decision_id, "primary") for d in decisions}
    assert closed[(decisions[0].decision_id, "primary")]["reward"] == 1.0
    assert sum(r["source"] == "default" for r in closed.values()) == 9  # once per decision
    assert close_rewards(platform, batch_size=3) == 0
    assert len(ledger(platform)) == 10


def test_rewards_of_a_decision_close_in_order_of_decision_time(
    demo: Demo, clock: FakeClock
) -> None:
    """A batch takes the oldest decisions first, so a small batch size still closes all."""
    platform, app = demo.platform, identity(demo)
    early = [decide(platform, app, f"early-{i}") for i in range(4)]
    clock.advance(hours=2)
    late = [decide(platform, app, f"late-{i}") for i in range(3)]
    clock.advance(hours=167)  # the early decisions' wait has passed, not the late ones'
    assert close_rewards(platform, batch_size=2) == 4
    assert {d for d, _ in ledger(platform)} == {d.decision_id for d in early}
    clock.advance(hours=1)
    assert close_rewards(platform, batch_size=2) == 3
    assert {d for d, _ in ledger(platform)} == {d.decision_id for d in early + late}
    ids = [r["id"] for r in rows(platform, "SELECT id FROM rewards ORDER BY id")]
    assert len(ids) == len(set(ids)) == 7
    assert DEMO.reward.report_horizons == []


def test_with_watermarks_a_pass_reads_only_decisions_since_the_last_cutoff_and_margin(
    demo: Demo, clock: FakeClock
) -> None:
    """The learner's passes keep watermarks: each reads only decisions made after the last
    cutoff minus `WATERMARK_MARGIN` and the skew, so a pass costs what is new, not the whole
    log; a decision that committed late but inside the margin is still closed."""
    platform, app = demo.platform, identity(demo)
    wait = timedelta(hours=168)  # the demo's one horizon, `primary`
    skew = timedelta(seconds=platform.settings.clock_skew_seconds)
    watermarks: Watermarks = {}
    early = decide(platform, app, "early", RULE_ONE)
    clock.advance(hours=169)
    assert close_rewards(platform, watermarks=watermarks) == 1
    (mark,) = watermarks.values()
    assert mark == clock.now - wait - WATERMARK_MARGIN - skew

    def decided_at(when: datetime, customer: str) -> Decision:
        now = clock.now
        clock.now = when
        try:
            return decide(platform, app, customer, RULE_ONE)
        finally:
            clock.now = now

    # Two decisions whose transactions "committed late", after the pass read the log: one made
    # inside the margin before the cutoff, one made before the watermark.
    inside = decided_at(mark + timedelta(minutes=10), "inside-the-margin")
    before = decided_at(mark - timedelta(minutes=10), "before-the-watermark")
    clock.advance(minutes=1)
    assert close_rewards(platform, watermarks=watermarks) == 1
    closed = {decision_id for decision_id, _ in ledger(platform)}
    assert closed == {early.decision_id, inside.decision_id}
    # Only a pass without watermarks (a restarted learner's first) reads the whole log again.
    assert close_rewards(platform) == 1
    assert before.decision_id in {decision_id for decision_id, _ in ledger(platform)}
