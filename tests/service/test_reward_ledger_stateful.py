"""The reward ledger as a state machine: decisions, outcomes (new, replayed, conflicting, late,
early within the skew, refused), clock moves and reward joins in any order.

Through the real `DecisionService`, `OutcomeService` and `close_rewards` on a SQLite database
with a fake clock, checked against an independent model written here:

* a (decision, horizon) row exists exactly when a join ran after the horizon's wait had passed
  (none before, never two);
* its reward is the horizon's `sum` / `max` / `earliest` of `weight x value` over the outcomes
  stored by then inside `[decided_at - skew, decided_at + window]`, or the default reward;
* a replayed idempotency key is stored once, so it never counts twice; the same key with a
  different body is refused (422) and stores nothing;
* an outcome after the window is stored as `late`; one before the decision beyond the skew, or
  beyond the skew in the future, is refused;
* a closed row never changes: not when outcomes arrive later, not on a rerun of the join.

`tests/service/test_rewards.py` proves `horizon_reward` against its definition and the join's
crash safety; this machine explores interleavings of all of it.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bandit_platform.domain.access import AppIdentity, Scope
from bandit_platform.domain.config import RewardDefinition, RewardHorizon
from bandit_platform.domain.decisions import Decision
from bandit_platform.domain.errors import InvalidInput
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.outcomes import OutcomeRequest, OutcomeService
from bandit_platform.service.platform import Platform
from bandit_platform.service.rewards import close_rewards
from bandit_platform.settings import Settings
from bandit_platform.storage.tables import RewardRow
from tests.conftest import PSEUDONYM_KEY, FakeClock
from tests.service.learning_support import decide, demo_variant, start

EXPERIMENT = "ledger-machine"
SKEW = timedelta(seconds=300)
MICROSECOND = timedelta(microseconds=1)
#: Learn from the best of click / apply / convert within a day, closed after two; report
#: clicks within an hour (summed) and the first apply or conversion within three days.
REWARD = RewardDefinition(
    event_weights={"click": 0.1, "apply": 0.5, "convert": 1.0},
    attribution_window_hours=24.0,
    reward_wait_hours=48.0,
    default_reward=-0.01,
    aggregation="max",
    report_horizons=[
        RewardHorizon(name="clicks_1h", event_weights={"click": 1.0}, attribution_window_hours=1.0),
        RewardHorizon(
            name="first_3d",
            event_weights={"apply": 0.25, "convert": 1.0},
            attribution_window_hours=72.0,
            reward_wait_hours=96.0,
            default_reward=0.5,
            aggregation="earliest",
        ),
    ],
)
HORIZONS = REWARD.horizons()
PRIMARY_WINDOW = timedelta(hours=REWARD.attribution_window_hours)
#: Weighted events, events accepted without weight (always, and the demo's guardrail metric).
EVENTS = ("click", "apply", "convert", "impression", "complaint")
VALUES = st.sampled_from([1.0, 2.5, -1.0, 0.0, 4.0])
#: New outcomes of one decision: (event, value, where in the allowed span, from 0 to 1).
NEW_OUTCOMES = st.lists(
    st.tuples(st.sampled_from(EVENTS), VALUES, st.sampled_from([0.0, 0.25, 0.5, 1.0])),
    min_size=1,
    max_size=4,
)
#: Clock moves in minutes: small, around the one-hour horizon, and across the longer waits.
MOVES = st.sampled_from([1, 7, 59, 60, 61, 6 * 60, 24 * 60, 48 * 60, 96 * 60])


def _wait(horizon: RewardHorizon) -> timedelta:
    return timedelta(hours=horizon.reward_wait_hours or horizon.attribution_window_hours)


@dataclass(frozen=True)
class Outcome:
    """An outcome as the model keeps it (once per idempotency key)."""

    outcome_id: int
    request: OutcomeRequest


def expected_reward(
    horizon: RewardHorizon, decided_at: datetime, outcomes: list[Outcome]
) -> tuple[float, int]:
    """The reward definition, stated independently of the service's code."""
    start, end = decided_at - SKEW, decided_at + timedelta(hours=horizon.attribution_window_hours)
    counted = [
        o
        for o in outcomes
        if o.request.event in horizon.event_weights and start <= o.request.occurred_at <= end
    ]
    if not counted:
        return horizon.default_reward, 0
    weighted = {
        o.outcome_id: horizon.event_weights[o.request.event] * o.request.value for o in counted
    }
    if horizon.aggregation == "sum":
        return sum(weighted.values()), len(counted)
    if horizon.aggregation == "max":
        return max(weighted.values()), len(counted)
    first = min(counted, key=lambda o: (o.request.occurred_at, o.outcome_id))
    return weighted[first.outcome_id], len(counted)


class LedgerMachine(RuleBasedStateMachine):
    #: A migrated SQLite file to copy, and where the copies go (set by the test).
    template: Path
    workdir: Path

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        path = self.workdir / f"{uuid.uuid4().hex}.db"
        shutil.copy(self.template, path)
        self.platform = Platform(
            Settings(database_url=f"sqlite:///{path}", pseudonym_key=PSEUDONYM_KEY),
            clock=self.clock,
        )
        self.outcomes = OutcomeService(self.platform)
        self.decisions: list[Decision] = []
        #: Stored outcomes by idempotency key, and per decision.
        self.by_key: dict[str, Outcome] = {}
        self.by_decision: dict[str, list[Outcome]] = {}
        #: The ledger as the model expects it: (decision, horizon) -> (reward, count, source).
        self.closed: dict[tuple[str, str], tuple[float, int, str]] = {}
        self.keys = itertools.count()

    @initialize()
    def set_up(self) -> None:
        start(self.platform, demo_variant(EXPERIMENT, reward=REWARD, frequency_caps=[]))
        found = ApiKeyService(self.platform).verify(
            ApiKeyService(self.platform).create("ledger", scopes=set(Scope)).secret
        )
        assert found is not None
        self.app: AppIdentity = found
        for customer in range(2):
            self.decide(customer)

    def teardown(self) -> None:
        """Close every reward at the end, so that each outcome stored is judged by a join."""
        try:
            if hasattr(self, "app"):
                self.clock.advance(hours=200)
                self.join()
                self.ledger_matches_the_model()
        finally:
            self.platform.close()

    # --- decisions and the clock ----------------------------------------------------------

    @precondition(lambda self: len(self.decisions) < 6)
    @rule(customer=st.integers(0, 3))
    def decide(self, customer: int) -> None:
        decision = decide(self.platform, self.app, f"ledger-{customer}", experiment=EXPERIMENT)
        assert decision.created_at == self.clock.now
        self.decisions.append(decision)
        self.by_decision[decision.decision_id] = []

    @rule(minutes=MOVES)
    def advance(self, minutes: int) -> None:
        self.clock.advance(minutes=minutes)

    @precondition(lambda self: self.decisions)
    @rule(data=st.data(), nudge=st.sampled_from([-MICROSECOND, timedelta(0), MICROSECOND]))
    def advance_to_a_wait_boundary(self, data: st.DataObject, nudge: timedelta) -> None:
        """Move the clock to exactly when a horizon's wait ends for a decision (or 1 us off)."""
        decision = data.draw(st.sampled_from(self.decisions), label="decision")
        horizon = data.draw(st.sampled_from(HORIZONS), label="horizon")
        target = decision.created_at + _wait(horizon) + nudge
        if target > self.clock.now:
            self.clock.now = target

    # --- outcomes -------------------------------------------------------------------------

    def _record(self, request: OutcomeRequest) -> Any:
        return self.outcomes.record(request, self.app)

    def _store(self, decision: Decision, event: str, value: float, at: datetime) -> None:
        request = OutcomeRequest(
            decision_id=decision.decision_id,
            event=event,
            value=value,
            occurred_at=at,
            idempotency_key=f"key-{next(self.keys)}",
        )
        receipt = self._record(request)
        assert not receipt.replayed
        assert receipt.late is (at > decision.created_at + PRIMARY_WINDOW)
        assert receipt.occurred_at == at
        outcome = Outcome(receipt.outcome_id, request)
        self.by_key[request.idempotency_key] = outcome
        self.by_decision[decision.decision_id].append(outcome)

    def _store_all(self, data: st.DataObject, where: Callable[[Decision, float], datetime]) -> None:
        decision = data.draw(st.sampled_from(self.decisions), label="decision")
        for event, value, fraction in data.draw(NEW_OUTCOMES, label="outcomes"):
            self._store(decision, event, value, where(decision, fraction))

    @precondition(lambda self: self.decisions)
    @rule(data=st.data())
    def outcomes_before_the_decision(self, data: st.DataObject) -> None:
        """Up to the clock-skew tolerance before the decision (both ends included)."""
        self._store_all(data, lambda d, fraction: d.created_at - SKEW * fraction)

    @precondition(lambda self: self.decisions)
    @rule(data=st.data())
    def outcomes_since_the_decision(self, data: st.DataObject) -> None:
        """Between the decision and now."""
        now = self.clock.now
        self._store_all(data, lambda d, fraction: d.created_at + (now - d.created_at) * fraction)

    @precondition(lambda self: self.decisions)
    @rule(data=st.data())
    def outcomes_ahead_of_the_clock(self, data: st.DataObject) -> None:
        """Up to the clock-skew tolerance after now (a client's clock ahead of the server's)."""
        now = self.clock.now
        self._store_all(data, lambda d, fraction: now + SKEW * fraction)

    @precondition(lambda self: self.decisions)
    @rule(
        data=st.data(),
        event=st.sampled_from(EVENTS[:3]),
        value=VALUES,
        nudge=st.sampled_from([-MICROSECOND, timedelta(0), MICROSECOND]),
    )
    def outcome_at_a_window_edge(
        self, data: st.DataObject, event: str, value: float, nudge: timedelta
    ) -> None:
        """Exactly at the end of a horizon's attribution window, or 1 us either side."""
        decision = data.draw(st.sampled_from(self.decisions), label="decision")
        horizon = data.draw(st.sampled_from(HORIZONS), label="horizon")
        at = decision.created_at + timedelta(hours=horizon.attribution_window_hours) + nudge
        if at <= self.clock.now + SKEW:
            self._store(decision, event, value, at)

    @precondition(
        lambda self: any(
            self.clock.now + SKEW > d.created_at + PRIMARY_WINDOW for d in self.decisions
        )
    )
    @rule(data=st.data(), event=st.sampled_from(EVENTS), value=VALUES)
    def late_outcome(self, data: st.DataObject, event: str, value: float) -> None:
        """After the attribution window of the learning horizon: stored, marked late."""
        old = [d for d in self.decisions if self.clock.now + SKEW > d.created_at + PRIMARY_WINDOW]
        decision = data.draw(st.sampled_from(old), label="decision")
        low = decision.created_at + PRIMARY_WINDOW + MICROSECOND
        high = self.clock.now + SKEW
        fraction = data.draw(st.sampled_from([0.0, 0.5, 1.0]), label="fraction")
        self._store(decision, event, value, low + (high - low) * fraction)

    @precondition(lambda self: self.by_key)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """The same idempotency key with the same body: the stored answer, nothing new."""
        key = data.draw(st.sampled_from(sorted(self.by_key)), label="key")
        stored = self.by_key[key]
        receipt = self._record(stored.request)
        assert receipt.replayed
        assert receipt.outcome_id == stored.outcome_id

    @precondition(lambda self: self.by_key)
    @rule(data=st.data(), change=st.sampled_from(["value", "event", "occurred_at"]))
    def reuse_key(self, data: st.DataObject, change: str) -> None:
        """The same idempotency key with a different body: refused, nothing stored."""
        key = data.draw(st.sampled_from(sorted(self.by_key)), label="key")
        request = self.by_key[key].request
        changed = {
            "value": {"value": request.value + 1.0},
            "event": {"event": "convert" if request.event != "convert" else "click"},
            "occurred_at": {"occurred_at": request.occurred_at - MICROSECOND},
        }[change]
        with pytest.raises(InvalidInput) as refused:
            self._record(dataclasses.replace(request, **changed))
        assert refused.value.field == "idempotency_key"
        assert refused.value.status_hint == 422

    @precondition(lambda self: self.decisions)
    @rule(
        data=st.data(),
        side=st.sampled_from(["before the decision", "in the future"]),
        beyond=st.sampled_from([MICROSECOND, timedelta(minutes=1), timedelta(days=30)]),
    )
    def refused_time(self, data: st.DataObject, side: str, beyond: timedelta) -> None:
        """Beyond the skew before the decision or after now: refused, nothing stored."""
        decision = data.draw(st.sampled_from(self.decisions), label="decision")
        if side == "before the decision":
            at = decision.created_at - SKEW - beyond
        else:
            at = self.clock.now + SKEW + beyond
        request = OutcomeRequest(
            decision.decision_id, "convert", 1.0, at, f"refused-{uuid.uuid4()}"
        )
        with pytest.raises(InvalidInput) as refused:
            self._record(request)
        assert refused.value.field == "occurred_at"

    # --- the join -------------------------------------------------------------------------

    def _due(self) -> set[tuple[str, str]]:
        now = self.clock.now
        return {
            (d.decision_id, h.name)
            for d in self.decisions
            for h in HORIZONS
            if d.created_at + _wait(h) <= now
        }

    @precondition(lambda self: self.decisions)
    @rule()
    def join(self) -> None:
        due = self._due()
        new = due - set(self.closed)
        by_id = {d.decision_id: d for d in self.decisions}
        horizons = {h.name: h for h in HORIZONS}
        for decision_id, name in new:
            reward, count = expected_reward(
                horizons[name], by_id[decision_id].created_at, self.by_decision[decision_id]
            )
            self.closed[(decision_id, name)] = (reward, count, "outcomes" if count else "default")
        assert close_rewards(self.platform) == len(new)
        before = self._ledger()
        assert set(before) == due
        assert close_rewards(self.platform) == 0  # a rerun writes nothing...
        assert self._ledger() == before  # ...and changes nothing

    def _ledger(self) -> dict[tuple[str, str], dict[str, Any]]:
        with self.platform.session() as session:
            found = [dict(r._mapping) for r in session.execute(sa.select(RewardRow.__table__))]
        pairs = [(r["decision_id"], r["horizon"]) for r in found]
        assert len(pairs) == len(set(pairs)), "two ledger rows for one (decision, horizon)"
        return dict(zip(pairs, found, strict=True))

    @invariant()
    def ledger_matches_the_model(self) -> None:
        if not hasattr(self, "app"):
            return
        ledger = self._ledger()
        assert set(ledger) == set(self.closed)
        for pair, (reward, count, source) in self.closed.items():
            row = ledger[pair]
            assert row["reward"] == pytest.approx(reward, rel=1e-12, abs=1e-12), pair
            assert (row["outcome_count"], row["source"]) == (count, source), pair


@pytest.mark.slow
def test_reward_ledger_state_machine(sqlite_template: Path, tmp_path: Path) -> None:
    LedgerMachine.template = sqlite_template
    LedgerMachine.workdir = tmp_path
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=40,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
