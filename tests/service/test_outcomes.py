"""`OutcomeService`: idempotent storage, the attribution window and the time rules."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from bandit_platform.demo import DEMO_EXPERIMENT_KEY
from bandit_platform.domain.access import AppIdentity
from bandit_platform.domain.decisions import Decision
from bandit_platform.domain.errors import Conflict, InvalidInput, NotFound
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.decisions import DecisionRequest, DecisionService
from bandit_platform.service.outcomes import (
    UNKNOWN_DECISION_COUNTER,
    OutcomeRequest,
    OutcomeService,
)
from bandit_platform.service.outcomes import _fingerprint as outcome_fingerprint
from bandit_platform.service.platform import Platform
from bandit_platform.storage.database import create_engine
from bandit_platform.storage.tables import OutcomeRow
from tests.conftest import Demo, FakeClock

SKEW = timedelta(seconds=300)  # Settings.clock_skew_seconds
WINDOW = timedelta(hours=168)  # the demo's attribution window


@pytest.fixture
def app(demo: Demo) -> AppIdentity:
    identity = ApiKeyService(demo.platform).verify(demo.api_key)
    assert identity is not None
    return identity


@pytest.fixture
def outcomes(demo: Demo) -> OutcomeService:
    return OutcomeService(demo.platform)


@pytest.fixture
def decision(demo: Demo, app: AppIdentity) -> Decision:
    return DecisionService(demo.platform).decide(
        DecisionRequest(
            experiment=DEMO_EXPERIMENT_KEY,
            customer_id="customer-1",
            context={"profile": {"products_held": ["checking"]}, "cash_flow": {"balance": 900}},
            surface="home_feed",
            consent=True,
        ),
        app,
    )


def outcome(
    decision: Decision, at: datetime, *, event: str = "click", key: str = "k-1", value: float = 1.0
) -> OutcomeRequest:
    return OutcomeRequest(
        decision_id=decision.decision_id,
        event=event,
        value=value,
        occurred_at=at,
        idempotency_key=key,
    )


def stored_outcomes(platform: Platform) -> list[dict[str, object]]:
    """Outcome rows read through a NEW engine: only committed rows are visible."""
    engine = create_engine(platform.settings.database_url, pool_size=1)
    try:
        with engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(sa.select(OutcomeRow.__table__))]
    finally:
        engine.dispose()


def counter(platform: Platform, name: str) -> int:
    with platform.engine.connect() as connection:
        value = connection.execute(
            sa.text("SELECT value FROM counters WHERE name = :name"), {"name": name}
        ).scalar_one_or_none()
    return int(value or 0)


def test_outcome_is_stored_once_per_idempotency_key(
    demo: Demo, outcomes: OutcomeService, decision: Decision, app: AppIdentity, clock: FakeClock
) -> None:
    clock.advance(minutes=10)
    first = outcomes.record(outcome(decision, clock.now - timedelta(minutes=1)), app)
    assert first.replayed is False
    assert first.late is False
    assert first.decision_id == decision.decision_id
    assert first.received_at == clock.now

    clock.advance(minutes=5)
    again = outcomes.record(outcome(decision, clock.now - timedelta(minutes=6)), app)
    assert again.replayed is True
    assert again.outcome_id == first.outcome_id
    assert again.received_at == first.received_at

    (row,) = stored_outcomes(demo.platform)
    assert row["id"] == first.outcome_id
    assert row["event"] == "click"
    assert row["value"] == 1.0
    assert row["occurred_at"] == clock.now - timedelta(minutes=6)
    assert row["late"] is False

    with pytest.raises(InvalidInput) as error:
        outcomes.record(outcome(decision, clock.now, event="apply"), app)
    assert error.value.field == "idempotency_key"
    with pytest.raises(InvalidInput) as error:
        outcomes.record(outcome(decision, clock.now - timedelta(minutes=6), value=2.0), app)
    assert error.value.field == "idempotency_key"
    assert len(stored_outcomes(demo.platform)) == 1

    second = outcomes.record(outcome(decision, clock.now, event="convert", key="k-2"), app)
    assert second.outcome_id != first.outcome_id
    assert len(stored_outcomes(demo.platform)) == 2


def test_unknown_decision_is_rejected_and_counted(
    demo: Demo, outcomes: OutcomeService, decision: Decision, app: AppIdentity, clock: FakeClock
) -> None:
    missing = replace(outcome(decision, clock.now), decision_id="00000000-0000-0000-0000-0")
    assert counter(demo.platform, UNKNOWN_DECISION_COUNTER) == 0
    for expected in (1, 2):
        with pytest.raises(NotFound) as error:
            outcomes.record(missing, app)
        assert error.value.field == "decision_id"
        assert counter(demo.platform, UNKNOWN_DECISION_COUNTER) == expected
    assert stored_outcomes(demo.platform) == []


def test_another_apps_key_cannot_reward_the_decision(
    demo: Demo, outcomes: OutcomeService, decision: Decision, clock: FakeClock
) -> None:
    other = ApiKeyService(demo.platform).create("other-bank-app").identity
    with pytest.raises(NotFound):
        outcomes.record(outcome(decision, clock.now), other)
    assert stored_outcomes(demo.platform) == []
    assert counter(demo.platform, UNKNOWN_DECISION_COUNTER) == 1


def test_outcome_after_the_attribution_window_is_stored_late(
    demo: Demo, outcomes: OutcomeService, decision: Decision, app: AppIdentity, clock: FakeClock
) -> None:
    clock.advance(hours=200)
    inside = outcomes.record(outcome(decision, decision.created_at + WINDOW, key="in"), app)
    after = outcomes.record(
        outcome(decision, decision.created_at + WINDOW + timedelta(seconds=1), key="out"), app
    )
    assert inside.late is False
    assert after.late is True
    late = {row["idempotency_key"]: row["late"] for row in stored_outcomes(demo.platform)}
    assert late == {"in": False, "out": True}


def test_time_rules(
    demo: Demo, outcomes: OutcomeService, decision: Decision, app: AppIdentity, clock: FakeClock
) -> None:
    clock.advance(hours=1)
    too_early = decision.created_at - SKEW - timedelta(seconds=1)
    in_future = clock.now + SKEW + timedelta(seconds=1)
    naive = clock.now.replace(tzinfo=None)
    for at in (too_early, in_future, naive):
        with pytest.raises(InvalidInput) as error:
            outcomes.record(outcome(decision, at, key=f"bad-{at.isoformat()}"), app)
        assert error.value.field == "occurred_at", at
    assert stored_outcomes(demo.platform) == []

    # Within the tolerance either side, the outcome is accepted.
    early_ok = outcomes.record(outcome(decision, decision.created_at - SKEW, key="early"), app)
    future_ok = outcomes.record(outcome(decision, clock.now + SKEW, key="future"), app)
    assert early_ok.occurred_at == decision.created_at - SKEW
    assert future_ok.occurred_at == clock.now + SKEW
    assert len(stored_outcomes(demo.platform)) == 2


def test_events_must_be_configured(
    demo: Demo, outcomes: OutcomeService, decision: Decision, app: AppIdentity, clock: FakeClock
) -> None:
    with pytest.raises(InvalidInput) as error:
        outcomes.record(outcome(decision, clock.now, event="purchase"), app)
    assert error.value.field == "event"
    assert stored_outcomes(demo.platform) == []
    for event in ("impression", "dismiss", "click", "apply", "convert"):
        outcomes.record(outcome(decision, clock.now, event=event, key=event), app)
    assert len(stored_outcomes(demo.platform)) == 5


def test_a_concurrent_duplicate_waits_for_the_first_then_is_409_or_a_replay(
    db_url: str,
    demo: Demo,
    outcomes: OutcomeService,
    decision: Decision,
    app: AppIdentity,
    clock: FakeClock,
) -> None:
    """An outcome whose idempotency key another transaction is storing right now waits for
    it. On PostgreSQL both inserted: the second is refused with 409 (IETF Idempotency-Key,
    "a request with the same key is being processed"). SQLite's write lock makes the second
    start only after the first committed, so it is answered as the replay it then is."""
    clock.advance(minutes=10)
    request = outcome(decision, clock.now - timedelta(minutes=1))
    engine = create_engine(db_url, pool_size=1)
    try:
        with engine.connect() as other, ThreadPoolExecutor(1) as pool:
            first = other.begin()
            other.execute(
                sa.insert(OutcomeRow.__table__).values(  # type: ignore[attr-defined]
                    decision_id=decision.decision_id,
                    api_key_id=app.api_key_id,
                    event="click",
                    value=1.0,
                    occurred_at=request.occurred_at,
                    received_at=clock.now,
                    idempotency_key=request.idempotency_key,
                    request_hash=outcome_fingerprint(request),
                    late=False,
                )
            )
            second = pool.submit(outcomes.record, request, app)
            with pytest.raises(FutureTimeout):
                second.result(timeout=0.5)  # blocked behind the first transaction
            first.commit()
            if db_url.startswith("postgresql"):
                with pytest.raises(Conflict) as error:
                    second.result(timeout=60)
                assert error.value.field == "idempotency_key"
            else:
                assert second.result(timeout=60).replayed is True
    finally:
        engine.dispose()
    assert len(stored_outcomes(demo.platform)) == 1
